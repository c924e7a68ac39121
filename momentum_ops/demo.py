"""``python -m momentum_ops.demo``: forward kinematics on a built-in synthetic
character, timed on the CPU and, when there is one, the GPU."""

from __future__ import annotations

import argparse
import time

import torch

import momentum_ops
from momentum_ops.synthetic import humanoid_skeleton, random_motion


def _time(fn, device, reps=20):
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / reps * 1e3


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="cpu or cuda (default: both where available)")
    parser.add_argument("--joints", type=int, default=100)
    parser.add_argument("--frames", type=int, default=4096)
    args = parser.parse_args(argv)
    devices = [args.device] if args.device else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

    names, parents, offsets, pre = humanoid_skeleton(args.joints)
    motion = random_motion(args.frames, len(names))
    print(f"momentum_ops {momentum_ops.__version__}, torch {torch.__version__}")
    print(f"synthetic character: {len(names)} joints; motion: {args.frames} frames")
    for device in devices:
        jp = motion.to(device)
        off, rot = offsets.to(device), pre.to(device)

        def forward():
            return momentum_ops.joint_parameters_to_skeleton_state(jp, parents, off, rot)

        def forward_backward():
            x = jp.detach().requires_grad_()
            state = momentum_ops.joint_parameters_to_skeleton_state(x, parents, off, rot)
            state[..., :3].square().sum().backward()

        state = forward()
        head = names.index("head")
        print(f"[{device}] head position, frame 0: {[round(v, 4) for v in state[0, head, :3].tolist()]}")
        ms = _time(forward, device)
        print(f"[{device}] FK forward: {ms:.3f} ms for {args.frames} frames "
              f"({args.frames / ms * 1e3:,.0f} frames/s)")
        ms = _time(forward_backward, device)
        print(f"[{device}] FK forward+backward: {ms:.3f} ms")


if __name__ == "__main__":
    main()
