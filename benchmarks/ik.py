"""Inverse kinematics: solves per second against batch size, momentum_ops against
a pure-PyTorch batched Levenberg-Marquardt (torch.func.jacrev Jacobians,
torch.linalg.cholesky solves), 10 iterations each, on the same problems.

    python benchmarks/ik.py [--device cpu cuda] [--batch 1 16 256 4096 65536]

Characters: CesiumMan (glTF, 21 joints: 19 skinned plus 2 placing nodes),
the synthetic 24-joint humanoid (SMPL's layout) and a 100-joint synthetic
humanoid with fingers and face joints. Problems: every joint's position as a
target, from a random pose (+-0.5 rad on every rotation, root translation),
solved from the zero pose over the rotations and the root translation.

On the GPU the table also gives the fraction of the measured copy bandwidth
that the solve's own bytes (each problem's inputs read once, its outputs
written once) reach: it stays tiny, because a solve iterates on data held in
shared memory and registers; IK is bound by arithmetic and by the sequential
steps of each iteration, not by memory.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import copy_bandwidth, device_name, measure, print_table  # noqa: E402
from fk import TorchLevelFK  # noqa: E402

import momentum_ops  # noqa: E402
from momentum_ops.synthetic import humanoid_skeleton  # noqa: E402

ITERATIONS = 10
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def characters(dtype):
    from momentum_ops.io import load_gltf

    out = {"CesiumMan (J=21)": load_gltf(os.path.join(ROOT, "test", "assets", "gltf", "CesiumMan", "CesiumMan.glb"), dtype)}
    for joints in (24, 100):
        names, parents, offsets, pre = humanoid_skeleton(joints, dtype=dtype)
        out[f"humanoid (J={joints})"] = momentum_ops.Character(names, parents, offsets, pre)
    return out


def problem(character, batch, device, generator):
    J, P = character.num_joints, character.num_parameters
    active = torch.zeros(P, dtype=torch.bool)
    for j in range(J):
        active[7 * j + 3: 7 * j + 6] = True
    active[0:3] = True
    truth = torch.zeros(batch, P, dtype=character.offsets.dtype)
    truth[:, active] = (torch.rand(batch, int(active.sum()), generator=generator) * 2 - 1).to(truth.dtype) * 0.5
    c = character.to(device)
    truth = truth.to(device)
    targets = c.joint_parameters_to_skeleton_state(c.model_parameters_to_joint_parameters(truth))[..., :3]
    return c, active, targets


class TorchLM:
    """Batched Levenberg-Marquardt in plain PyTorch: residuals through a
    level-parallel FK, Jacobians by torch.func.jacrev under vmap, damped
    normal equations solved by Cholesky, per-problem accept/reject."""

    def __init__(self, character, active, targets):
        self.fk = TorchLevelFK(character.parents, character.offsets, character.pre_rotations)
        # The inactive parameters stay 0, so only the active columns matter.
        self.transform = character.parameter_transform[:, active.to(targets.device)]
        self.active = active.to(targets.device)
        self.targets = targets
        self.J = character.num_joints

    def residuals(self, theta_active, targets):
        jp = (self.transform @ theta_active).reshape(self.J, 7)
        return (self.fk(jp)[:, :3] - targets).reshape(-1)

    def solve(self, iterations=ITERATIONS, damping=1e-3):
        batch = self.targets.shape[0]
        n = int(self.active.sum())
        x = torch.zeros(batch, n, dtype=self.targets.dtype, device=self.targets.device)
        lam = torch.full((batch, 1), damping, dtype=x.dtype, device=x.device)
        residual = torch.func.vmap(self.residuals)
        jacobian = torch.func.vmap(torch.func.jacrev(self.residuals))
        r = residual(x, self.targets)
        energy = (r * r).sum(-1)
        eye = torch.eye(n, dtype=x.dtype, device=x.device)
        for _ in range(iterations):
            jac = jacobian(x, self.targets)
            hessian = jac.transpose(1, 2) @ jac
            gradient = (jac.transpose(1, 2) @ r[..., None])[..., 0]
            diagonal = torch.diagonal(hessian, dim1=1, dim2=2)
            floor = 1e-9 * diagonal.amax(-1, keepdim=True)
            damped = hessian + (lam * torch.maximum(diagonal, floor))[..., None] * eye
            factor, _ = torch.linalg.cholesky_ex(damped)
            step = -torch.cholesky_solve(gradient[..., None], factor)[..., 0]
            trial_r = residual(x + step, self.targets)
            trial_energy = (trial_r * trial_r).sum(-1)
            better = trial_energy < energy
            x = torch.where(better[:, None], x + step, x)
            r = torch.where(better[:, None], trial_r, r)
            energy = torch.where(better, trial_energy, energy)
            lam = torch.where(better[:, None], lam / 10, lam * 10)
        return x, energy


def solve_bytes(batch, P, C, element_size):
    """Bytes a solve moves at least: per problem the initial parameters, the
    regularisation reference and the targets read, the solution, the error and
    the iteration count (int32) written."""
    return batch * (element_size * (3 * P + 3 * C + 1) + 4)


def run(device, batches, dtype, max_seconds):
    rows = []
    bandwidth = copy_bandwidth(device) if device == "cuda" else None
    generator = torch.Generator().manual_seed(0)
    for name, character in characters(dtype).items():
        for batch in batches:
            work = batch * character.num_joints
            if (device == "cpu" and work > 4096 * 25) or work > 65536 * 25:
                continue  # minutes per call
            c, active, targets = problem(character, batch, device, generator)
            P = c.num_parameters
            init = torch.zeros(batch, P, dtype=dtype, device=device)
            joints = torch.arange(c.num_joints)

            def ours():
                return momentum_ops.solve_ik(c, init, position_joints=joints, position_targets=targets,
                                             active_parameters=active, max_iterations=ITERATIONS, tolerance=0.0)

            peer = TorchLM(c, active, targets)
            result = ours()
            peer_energy = peer.solve()[1] if batch <= 4096 else torch.full((1,), float("nan"))
            t_ours = measure(ours, device, max_seconds, min_reps=1)
            peer_big = (device == "cpu" and work > 256 * 25) or batch > 4096
            t_peer = float("nan") if peer_big else measure(peer.solve, device, max_seconds, min_reps=1)
            rows.append([device, name, int(active.sum()), batch, t_ours, batch / t_ours * 1e3,
                         batch / t_peer * 1e3 if t_peer == t_peer else float("nan"),
                         t_peer / t_ours if t_peer == t_peer else float("nan"),
                         float(result.error.median()), float(peer_energy.median())])
            if bandwidth:
                moved = solve_bytes(batch, P, c.num_joints, init.element_size())
                rows[-1].append(moved / (t_ours * 1e-3) / bandwidth)
            print("  ", rows[-1], flush=True)
    columns = ["device", "character", "active P", "batch", "momentum_ops ms", "solves/s", "torch LM solves/s",
               "speedup", "median E ours", "median E torch"]
    title = f"IK, {ITERATIONS} iterations, {dtype}, {device_name(device)}"
    if bandwidth:
        columns.append("of copy bw")
        title += f"; copy bandwidth {bandwidth / 1e9:.0f} GB/s (read+write)"
    print_table(title, columns, rows)
    print("torch LM left out (nan) above 4096 problems (its Jacobians alone take minutes and tens of GB); "
          "the 100-joint character stops at 4096 problems, the CPU at 4096 problems of 25 joints.")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", nargs="+", default=["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    parser.add_argument("--batch", nargs="+", type=int, default=[1, 16, 256, 4096, 65536])
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--max-seconds", type=float, default=1.0)
    args = parser.parse_args()
    for device in args.device:
        run(device, args.batch, getattr(torch, args.dtype), args.max_seconds)


if __name__ == "__main__":
    main()
