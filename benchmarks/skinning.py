"""Linear blend skinning: momentum_ops against dense LBS in PyTorch (per-joint
matrices blended by a [V, J] weight matrix, as smplx does) and sparse LBS in
PyTorch (per-influence transforms summed with index_add), all from skeleton
states, with autograd for the backward.

    python benchmarks/skinning.py [--device cpu cuda] [--vertices 3000 10000 20000]
                                  [--influences 4 8] [--batch 1 256 4096] [--joints 55]
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Rotating, copy_bandwidth, device_name, measure, print_table  # noqa: E402

import momentum_ops  # noqa: E402
from momentum_ops import skel_state  # noqa: E402


def skinning_matrices(state, ibp):
    """[B, J, 3, 4] = (M(state) @ IBP)[:3] with plain torch ops."""
    return (skel_state.to_matrix(state) @ ibp)[..., :3, :]


def dense_lbs(state, ibp, rest, dense_weights):
    a = skinning_matrices(state, ibp).flatten(-2)  # [B, J, 12]
    per_vertex = torch.matmul(dense_weights, a).unflatten(-1, (3, 4))  # [B, V, 3, 4]
    return (per_vertex[..., :3] @ rest[..., None])[..., 0] + per_vertex[..., 3]


def sparse_lbs(state, ibp, rest, pair_joint, pair_vertex, pair_weight):
    a = skinning_matrices(state, ibp)[:, pair_joint]  # [B, V*K, 3, 4]
    x = rest[pair_vertex]
    moved = (a[..., :3] @ x[..., None])[..., 0] + a[..., 3]
    out = torch.zeros(state.shape[0], rest.shape[0], 3, dtype=state.dtype, device=state.device)
    return out.index_add(1, pair_vertex, pair_weight[:, None] * moved)


def run(device, vertices_list, influences_list, batches, joints, dtype, max_seconds):
    rows, skipped = [], []
    bandwidth = copy_bandwidth(device) if device == "cuda" else None
    e = torch.finfo(dtype).bits // 8
    g = torch.Generator().manual_seed(0)
    ibp = (torch.eye(4, dtype=torch.float64) + 0.1 * torch.randn(joints, 4, 4, generator=g, dtype=torch.float64))
    ibp[:, 3] = torch.tensor([0.0, 0, 0, 1], dtype=torch.float64)
    ibp = ibp.to(device, dtype)
    for V in vertices_list:
        rest = torch.randn(V, 3, generator=g).to(device, dtype)
        for K in influences_list:
            idx = torch.randint(0, joints, (V, K), generator=g).to(device)
            w = torch.rand(V, K, generator=g)
            w = (w / w.sum(-1, keepdim=True)).to(device, dtype)
            dense = torch.zeros(V, joints, dtype=dtype, device=device).index_put_(
                (torch.arange(V, device=device)[:, None].expand(V, K), idx), w, accumulate=True)
            pair_vertex = torch.arange(V, device=device).repeat_interleave(K)
            pair_joint, pair_weight = idx.flatten(), w.flatten()
            for B in batches:
                if device == "cpu" and B * V > 256 * 20000:
                    skipped.append(f"V={V} K={K} batch={B}")
                    continue

                def make():
                    q = torch.nn.functional.normalize(torch.randn(B, joints, 4, device=device, dtype=dtype), dim=-1)
                    t = torch.randn(B, joints, 3, device=device, dtype=dtype)
                    s = torch.ones(B, joints, 1, device=device, dtype=dtype)
                    return torch.cat([t, q, s], -1)

                states = Rotating(make, B * joints * 8 * e, device)
                grad = torch.randn(B, V, 3, device=device, dtype=dtype)
                impls = {
                    "momentum_ops": lambda s: momentum_ops.skin_points(s, ibp, rest, idx, w),
                    "dense": lambda s: dense_lbs(s, ibp, rest, dense),
                    "sparse": lambda s: sparse_lbs(s, ibp, rest, pair_joint, pair_vertex, pair_weight),
                }
                # The peers' intermediates ([B, V, 12] and [B, V*K, 12]) and their
                # gradients must fit in memory (on the GPU: 60 GB).
                budget = 60e9 if device == "cuda" else 8e9
                if B * V * 12 * e * 4 > budget:
                    impls.pop("dense")
                if B * V * K * 12 * e * 4 > budget:
                    impls.pop("sparse")
                check = states.next()
                reference = impls["momentum_ops"](check)
                for name in ("dense", "sparse"):
                    if name in impls:
                        torch.testing.assert_close(impls[name](check), reference, atol=1e-3, rtol=1e-3)
                for mode in ("fwd", "fwd+bwd"):
                    times = {}
                    for name, fn in impls.items():
                        if mode == "fwd":
                            step = lambda fn=fn: fn(states.next())  # noqa: E731
                        else:
                            def step(fn=fn):
                                s = states.next().requires_grad_()
                                fn(s).backward(grad)
                                s.requires_grad_(False)
                        times[name] = measure(step, device, max_seconds)
                    nan = float("nan")
                    peers = [times.get("dense", nan), times.get("sparse", nan)]
                    best = min([t for t in peers if t == t], default=nan)
                    row = [device, V, K, B, mode, times["momentum_ops"], *peers, best / times["momentum_ops"]]
                    if bandwidth:
                        fwd_bytes = e * (B * joints * 8 + B * V * 3 + V * (3 + K)) + idx.element_size() * V * K
                        bwd_bytes = e * (B * V * 3 + 2 * B * joints * 8 + V * (3 + K)) + idx.element_size() * V * K
                        moved = fwd_bytes + (bwd_bytes if mode == "fwd+bwd" else 0)
                        row += [moved / (times["momentum_ops"] * 1e-3) / bandwidth]
                    rows.append(row)
                    print("  ", row, flush=True)
    columns = ["device", "V", "K", "batch", "pass", "momentum_ops ms", "dense LBS ms", "sparse LBS ms", "speedup vs best"]
    if bandwidth:
        columns.append("of copy bw")
    title = f"Skinning, {dtype}, J={joints}, {device_name(device)}"
    if bandwidth:
        title += f"; copy bandwidth {bandwidth / 1e9:.0f} GB/s (read+write)"
    print_table(title, columns, rows)
    print("nan: a peer left out where its intermediates would not fit in memory.")
    if skipped:
        print("not run on the CPU (the peers take minutes or tens of GB): " + ", ".join(skipped))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", nargs="+", default=["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    parser.add_argument("--vertices", nargs="+", type=int, default=[3000, 10000, 20000])
    parser.add_argument("--influences", nargs="+", type=int, default=[4, 8])
    parser.add_argument("--batch", nargs="+", type=int, default=[1, 256, 4096])
    parser.add_argument("--joints", type=int, default=55)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--max-seconds", type=float, default=0.5)
    args = parser.parse_args()
    for device in args.device:
        run(device, args.vertices, args.influences, args.batch, args.joints, getattr(torch, args.dtype), args.max_seconds)


if __name__ == "__main__":
    main()
