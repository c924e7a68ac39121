"""Forward kinematics: momentum_ops against a pure-PyTorch level-parallel FK
(the way pytorch_kinematics and smplx-style code do it), both with autograd.

    python benchmarks/fk.py [--device cpu cuda] [--joints 24 100 300]
                            [--batch 1 256 4096 65536] [--dtype float32]

Prints, per size: the median time of each, the speedup, and on the GPU the
fraction of the measured copy bandwidth that the op's own bytes reach.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Rotating, copy_bandwidth, device_name, measure, print_table  # noqa: E402

import momentum_ops  # noqa: E402
from momentum_ops.synthetic import humanoid_skeleton  # noqa: E402


# ------------------------------------------------------------ the baseline
def _qmul(a, b):
    ax, ay, az, aw = a.unbind(-1)
    bx, by, bz, bw = b.unbind(-1)
    return torch.stack(
        [
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
            aw * bw - ax * bx - ay * by - az * bz,
        ],
        dim=-1,
    )


def _qrot(q, v):
    u, w = q[..., :3], q[..., 3:]
    uv = torch.cross(u, v, dim=-1)
    return v + 2 * (w * uv + torch.cross(u, uv, dim=-1))


def _axis_quat(angle, axis):
    half = angle / 2
    zeros = torch.zeros_like(half)
    parts = [zeros, zeros, zeros]
    parts[axis] = torch.sin(half)
    return torch.stack(parts + [torch.cos(half)], dim=-1)


class TorchLevelFK:
    """FK in plain PyTorch ops: local transforms for all joints at once, then one
    vectorised step per tree level (all joints of a depth together)."""

    def __init__(self, parents, offsets, pre_rotations):
        depth = []
        for p in parents.tolist():
            depth.append(0 if p < 0 else depth[p] + 1)
        depth = torch.tensor(depth)
        self.levels = [
            torch.nonzero(depth == d).flatten().to(offsets.device) for d in range(int(depth.max()) + 1)
        ]
        self.parents = parents.to(offsets.device)
        self.offsets, self.pre_rotations = offsets, pre_rotations

    def __call__(self, jp):
        t_local = self.offsets + jp[..., :3]
        q_local = _qmul(
            _qmul(_qmul(self.pre_rotations, _axis_quat(jp[..., 5], 2)), _axis_quat(jp[..., 4], 1)),
            _axis_quat(jp[..., 3], 0),
        )
        s_local = torch.exp2(jp[..., 6:7])
        t, q, s = t_local, q_local, s_local
        for idx in self.levels[1:]:
            par = self.parents[idx]
            tp, qp, sp = t[..., par, :], q[..., par, :], s[..., par, :]
            t = t.index_copy(-2, idx, tp + sp * _qrot(qp, t_local[..., idx, :]))
            q = q.index_copy(-2, idx, _qmul(qp, q_local[..., idx, :]))
            s = s.index_copy(-2, idx, sp * s_local[..., idx, :])
        return torch.cat([t, q, s], dim=-1)


# ------------------------------------------------------------ the benchmark
def run(device, joints_list, batches, dtype, max_seconds):
    rows, skipped = [], []
    bandwidth = copy_bandwidth(device) if device == "cuda" else None
    esize = torch.finfo(dtype).bits // 8
    for joints in joints_list:
        _, parents, offsets, pre = humanoid_skeleton(joints, dtype=dtype)
        offsets, pre = offsets.to(device), pre.to(device)
        baseline = TorchLevelFK(parents, offsets, pre)
        for batch in batches:
            if device == "cpu" and batch * joints > 4096 * 300 * 4:
                skipped.append(f"J={joints} batch={batch}")  # the baseline takes minutes
                continue
            elements = batch * joints
            inputs = Rotating(
                lambda: torch.randn(batch, joints, 7, device=device, dtype=dtype) * 0.3,
                elements * 7 * esize, device,
            )
            grad = torch.randn(batch, joints, 8, device=device, dtype=dtype)

            def ours():
                return momentum_ops.joint_parameters_to_skeleton_state(inputs.next(), parents, offsets, pre)

            def ours_backward():
                x = inputs.next().requires_grad_()
                momentum_ops.joint_parameters_to_skeleton_state(x, parents, offsets, pre).backward(grad)
                x.requires_grad_(False)

            def theirs():
                return baseline(inputs.next())

            def theirs_backward():
                x = inputs.next().requires_grad_()
                baseline(x).backward(grad)
                x.requires_grad_(False)

            # Check both compute the same thing before timing them.
            x = inputs.next()
            torch.testing.assert_close(
                baseline(x), momentum_ops.joint_parameters_to_skeleton_state(x, parents, offsets, pre),
                atol=1e-4 if dtype == torch.float32 else 1e-10, rtol=1e-4,
            )
            for mode, fn, peer, elems in (
                ("fwd", ours, theirs, 15),  # read 7, write 8 per joint
                # + read grad 8, state 8, params 7, write grads 7, offsets' sum 3
                ("fwd+bwd", ours_backward, theirs_backward, 15 + 33),
            ):
                t_ours = measure(fn, device, max_seconds)
                t_peer = measure(peer, device, max_seconds)
                row = [device, joints, batch, mode, t_ours, t_peer, t_peer / t_ours]
                if bandwidth:
                    gbps = elements * elems * esize / (t_ours * 1e-3)
                    row += [gbps / 1e9, gbps / bandwidth]
                rows.append(row)
                print("  ", row, flush=True)
    columns = ["device", "J", "batch", "pass", "momentum_ops ms", "torch level-FK ms", "speedup"]
    if bandwidth:
        columns += ["GB/s", "of copy bw"]
    title = f"FK, {dtype}, {device_name(device)}"
    if bandwidth:
        title += f"; copy bandwidth {bandwidth / 1e9:.0f} GB/s (read+write)"
    print_table(title, columns, rows)
    if skipped:
        print("not run on the CPU (the baseline would take minutes): " + ", ".join(skipped))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", nargs="+", default=["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    parser.add_argument("--joints", nargs="+", type=int, default=[24, 100, 300])
    parser.add_argument("--batch", nargs="+", type=int, default=[1, 256, 4096, 65536])
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--max-seconds", type=float, default=1.0, help="time budget per measurement")
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    for device in args.device:
        run(device, args.joints, args.batch, dtype, args.max_seconds)


if __name__ == "__main__":
    main()
