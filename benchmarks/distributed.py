"""Data-parallel fitting and training with torch.distributed, started with torchrun:

    torchrun --nproc-per-node N benchmarks/distributed.py [--backend nccl] [--batch 65536]
    torchrun --nproc-per-node 2 benchmarks/distributed.py --backend gloo --device cpu --check

(a) batch fitting: one large IK batch (the synthetic 24-joint humanoid, every
    joint's position a target) is sharded over the ranks, each rank solves its
    shard on its own device, and the solutions are gathered on every rank;
(b) training: a small network predicts the IK targets (keypoints) from
    features; the loss solves IK to them (the gradient reaches the network
    through the solver's implicit backward), poses the skinned mesh (FK and
    skinning) and compares it with the ground truth; DistributedDataParallel
    all-reduces the gradients.

Each rank uses the GPU of its LOCAL_RANK (cuda) or the CPU. Rank 0 prints
throughput (problems/s, training items/s) with the world size, and, with
--baseline-ms, the scaling efficiency against a one-process run of the same
total batch. --check compares both parts against a single-process run of the
full batch computed on rank 0 (sharded solutions equal the unsharded ones;
DDP gradients equal the full batch's gradients) and exits non-zero if they
differ: the test suite runs that with gloo on the CPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import torch.distributed as dist

import momentum_ops  # noqa: E402  (the installed package, or the one PYTHONPATH names)
from momentum_ops.synthetic import humanoid_character  # noqa: E402

FEATURES = 32


def problem(batch: int, dtype: torch.dtype, seed: int = 0):
    """The full batch, the same on every rank: a character, random poses,
    their joint positions (IK targets) and posed vertices (training truth)."""
    character = humanoid_character(24, rings=4, segments=8, dtype=dtype)
    g = torch.Generator().manual_seed(seed)
    P = character.num_parameters
    truth = torch.zeros(batch, P, dtype=dtype)
    rotations = [7 * j + r for j in range(character.num_joints) for r in (3, 4, 5)]
    truth[:, rotations] = 0.3 * torch.randn(batch, len(rotations), generator=g, dtype=dtype)
    state = character.joint_parameters_to_skeleton_state(character.model_parameters_to_joint_parameters(truth))
    targets = state[..., :3]
    vertices = character.skin(state)
    features = torch.randn(batch, FEATURES, generator=g, dtype=dtype)
    active = torch.zeros(P, dtype=torch.bool)
    active[rotations] = True
    return character, targets, vertices, features, active


def shard(x: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """Rank's contiguous share of dim 0 (sizes differ by at most one)."""
    return x.tensor_split(world)[rank]


def gather(x: torch.Tensor, world: int, total: int) -> torch.Tensor:
    """All ranks' shards of dim 0, concatenated in rank order on every rank."""
    sizes = [len(s) for s in torch.empty(total).tensor_split(world)]
    padded = torch.zeros((max(sizes), *x.shape[1:]), dtype=x.dtype, device=x.device)
    padded[: len(x)] = x
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([p[:n] for p, n in zip(parts, sizes)])


def solve(character, targets, active, iterations):
    init = torch.zeros(targets.shape[0], character.num_parameters, dtype=targets.dtype, device=targets.device)
    return momentum_ops.solve_ik(character, init, position_joints=torch.arange(character.num_joints),
                                 position_targets=targets, active_parameters=active, max_iterations=iterations,
                                 tolerance=0.0)


class KeypointNet(torch.nn.Module):
    """Features -> IK targets: a residual correction of the rest skeleton's joints."""

    def __init__(self, rest_joints: torch.Tensor, dtype: torch.dtype):
        super().__init__()
        g = torch.Generator().manual_seed(1)
        J = rest_joints.shape[0]
        self.layer = torch.nn.Linear(FEATURES, J * 3, dtype=dtype)
        with torch.no_grad():
            self.layer.weight.copy_(0.01 * torch.randn(J * 3, FEATURES, generator=g, dtype=dtype))
            self.layer.bias.zero_()
        self.register_buffer("rest_joints", rest_joints)

    def forward(self, features):
        return self.rest_joints + self.layer(features).unflatten(-1, (-1, 3))


def training_loss(model, character, features, vertices, active, iterations):
    """Mean over the items of the squared vertex error after IK to the predicted keypoints."""
    keypoints = model(features)
    solution = solve(character, keypoints, active, iterations).model_parameters
    posed = character(solution)
    return ((posed - vertices) ** 2).sum(dim=(-1, -2)).mean()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="nccl", choices=["nccl", "gloo"])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--batch", type=int, default=65536, help="IK problems in all (part a)")
    parser.add_argument("--train-batch", type=int, default=4096, help="training items per step in all (part b)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--check", action="store_true", help="compare with a single-process run; exit 1 if different")
    parser.add_argument("--baseline-ms", type=float, nargs=2, metavar=("FIT_MS", "STEP_MS"),
                        help="one process's times for the same totals, for the scaling efficiency")
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)

    dist.init_process_group(args.backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    if args.device == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    log = print if rank == 0 else (lambda *a, **k: None)
    failures = []

    # ---------------------------------------------------------------- (a)
    character, targets, vertices, features, active = problem(args.batch, dtype)
    local = character.to(device)
    my_targets = shard(targets, rank, world).to(device)

    def fit():
        result = solve(local, my_targets, active, args.iterations)
        return gather(result.model_parameters, world, args.batch)

    fit()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    dist.barrier()
    start = time.perf_counter()
    solutions = fit()
    if device.type == "cuda":
        torch.cuda.synchronize()
    dist.barrier()
    fit_ms = (time.perf_counter() - start) * 1e3
    log(f"(a) batch fitting: {args.batch} problems on {world} x {device.type}: {fit_ms:.1f} ms, "
        f"{args.batch / fit_ms * 1e3:,.0f} solves/s ({args.batch / fit_ms * 1e3 / world:,.0f} per process)")
    if args.check and rank == 0:
        alone = solve(character, targets, active, args.iterations).model_parameters
        difference = float((solutions.cpu() - alone).abs().max())
        log(f"    sharded against one process: max |difference| {difference:.3g}")
        if not difference <= (1e-12 if dtype == torch.float64 else 1e-5):
            failures.append(f"sharded IK solutions differ from one process's by {difference:.3g}")

    # ---------------------------------------------------------------- (b)
    _, _, train_vertices, train_features, _ = problem(args.train_batch, dtype, seed=2)
    _, rest_targets, _, _, _ = problem(1, dtype)
    model = KeypointNet(rest_targets[0], dtype).to(device)
    ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=1e-3)
    my_features = shard(train_features, rank, world).to(device)
    my_vertices = shard(train_vertices, rank, world).to(device)
    if args.check and args.train_batch % world:
        failures.append("--check needs --train-batch divisible by the world size (DDP averages equal shards)")

    def step():
        optimizer.zero_grad()
        loss = training_loss(ddp, local, my_features, my_vertices, active, args.iterations)
        loss.backward()
        return loss

    if args.check:
        step()  # gradients of the initial weights, all-reduced over the ranks
        ddp_grads = [p.grad.detach().cpu().clone() for p in model.parameters()]
        if rank == 0:
            reference = KeypointNet(rest_targets[0], dtype)
            loss = training_loss(reference, character, train_features, train_vertices, active, args.iterations)
            full_grads = torch.autograd.grad(loss, list(reference.parameters()))
            difference = max(float((a - b).abs().max() / (b.abs().max() + 1e-30)) for a, b in zip(ddp_grads, full_grads))
            log(f"(b) DDP gradients against the full batch's in one process: max relative difference {difference:.3g}")
            if not difference <= (1e-10 if dtype == torch.float64 else 1e-4):
                failures.append(f"DDP gradients differ from the full batch's by {difference:.3g} (relative)")
            if not all(bool(g.abs().max() > 0) for g in full_grads):
                failures.append("a network parameter got no gradient through IK and skinning")
        optimizer.zero_grad()
    step()
    optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    dist.barrier()
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    dist.barrier()
    step_ms = (time.perf_counter() - start) * 1e3 / args.steps
    log(f"(b) DDP training: {args.train_batch} items per step on {world} x {device.type}: {step_ms:.1f} ms per step, "
        f"{args.train_batch / step_ms * 1e3:,.0f} items/s; loss {float(loss.detach()):.4g}")
    if args.baseline_ms:
        fit_efficiency = args.baseline_ms[0] / (fit_ms * world)
        step_efficiency = args.baseline_ms[1] / (step_ms * world)
        log(f"scaling efficiency against one process: fitting {fit_efficiency:.0%}, training {step_efficiency:.0%}")
    log(f"| processes | device | fit ms | solves/s | step ms | items/s |\n|---|---|---|---|---|---|\n"
        f"| {world} | {device.type} | {fit_ms:.1f} | {args.batch / fit_ms * 1e3:,.0f} | {step_ms:.1f} | "
        f"{args.train_batch / step_ms * 1e3:,.0f} |")

    status = torch.tensor([len(failures)], dtype=torch.int64, device=device if args.backend == "nccl" else "cpu")
    dist.all_reduce(status)
    for failure in failures:
        print(f"rank {rank}: CHECK FAILED: {failure}", file=sys.stderr)
    dist.destroy_process_group()
    return 1 if int(status) else 0


if __name__ == "__main__":
    sys.exit(main())
