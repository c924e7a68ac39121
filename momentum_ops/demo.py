"""``python -m momentum_ops.demo [--gltf PATH] [--device cuda]``: loads a
character (by default a synthetic humanoid the package builds itself), plays
its animation through forward kinematics and skinning, prints timings, and
draws a few frames to a PNG."""

from __future__ import annotations

import argparse
import time

import torch

import momentum_ops
from momentum_ops.synthetic import humanoid_character, random_motion


def _time(fn, device, reps=10):
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / reps * 1e3


def load(args):
    if args.gltf:
        from momentum_ops.io import gltf_animations, load_gltf, load_gltf_motion

        character = load_gltf(args.gltf)
        animations = gltf_animations(args.gltf)
        animation = args.animation if args.animation is not None else (0 if animations else None)
        if isinstance(animation, str) and animation.isdigit():
            animation = int(animation)
        motion = load_gltf_motion(args.gltf, character, animation=animation)
        source = f"{args.gltf} ({'rest pose' if animation is None else f'animation {animation!r}'})"
    else:
        character = humanoid_character(24, rings=6, segments=10)
        motion = random_motion(120, character.num_joints, amplitude=0.25)
        source = "built-in synthetic humanoid (momentum_ops.synthetic)"
    return character, motion, source


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gltf", help="a .glb/.gltf character (default: a built-in synthetic one)")
    parser.add_argument("--animation", default=None, help="animation index or name (default: the first)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--batch", type=int, default=4096, help="frames per call in the throughput test")
    parser.add_argument("--out", default="momentum_ops_demo.png", help="where to draw a few frames")
    args = parser.parse_args(argv)
    device = torch.device(args.device)

    character, motion, source = load(args)
    print(f"momentum_ops {momentum_ops.__version__}, torch {torch.__version__}, device {device}")
    print(f"character: {source}: {character.num_joints} joints, {character.num_vertices} vertices, "
          f"{character.skin_indices.shape[1]} influences; motion: {motion.shape[0]} frames")
    character = character.to(device)
    motion = motion.to(device)

    def play(jp):
        return character.skin(character.joint_parameters_to_skeleton_state(jp))

    vertices = play(motion)
    ms = _time(lambda: play(motion), device)
    print(f"play the animation (FK + skinning, {motion.shape[0]} frames in one call): {ms:.3f} ms, "
          f"{motion.shape[0] / ms * 1e3:,.0f} frames/s")

    repeats = -(-args.batch // motion.shape[0])
    batch = motion.repeat(repeats, 1, 1)[: args.batch]
    ms_fk = _time(lambda: character.joint_parameters_to_skeleton_state(batch), device)
    state = character.joint_parameters_to_skeleton_state(batch)
    ms_skin = _time(lambda: character.skin(state), device)

    def forward_backward():
        x = batch.detach().requires_grad_()
        play(x).square().sum().backward()

    ms_both = _time(forward_backward, device, reps=3)
    print(f"batch of {batch.shape[0]} frames: FK {ms_fk:.3f} ms, skinning {ms_skin:.3f} ms, "
          f"FK + skinning forward and backward {ms_both:.3f} ms")

    picks = torch.linspace(0, motion.shape[0] - 1, min(4, motion.shape[0])).round().long()
    from momentum_ops.render import render_character

    path = render_character(args.out, character.cpu(), motion[picks].cpu(),
                            titles=[f"frame {int(i)}" for i in picks])
    extent = (vertices.amax(dim=(0, 1)) - vertices.amin(dim=(0, 1))).tolist()
    print(f"posed vertices span {[round(e, 3) for e in extent]}; drew frames {picks.tolist()} to {path}")


if __name__ == "__main__":
    main()
