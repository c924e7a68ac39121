#!/usr/bin/env python3
"""Draws a posed character to a PNG: shaded mesh and skeleton, frames side by side.

    python tools/render.py --gltf test/assets/gltf/Fox/Fox.glb --animation Walk --frames 4 --out fox.png
    python tools/render.py --gltf test/assets/gltf_morph/MorphStressTest/MorphStressTest.glb --animation TheWave
    python tools/render.py --urdf test/assets/urdf/pytorch_kinematics/kuka_iiwa.urdf --out kuka.png
    python tools/render.py --out synthetic.png          # the built-in character

Morph targets are drawn with the animation's weights; a URDF robot sweeps
every joint from its lower toward its upper limit over the frames (z up).
"""

import argparse

import torch

import momentum_ops  # noqa: F401  (loads the ops)
from momentum_ops.io import gltf_animations, load_gltf, load_gltf_blend_weights, load_gltf_motion, load_urdf
from momentum_ops.render import render_character
from momentum_ops.synthetic import humanoid_character, random_motion


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gltf", help="a .glb/.gltf file (default: the built-in synthetic character)")
    parser.add_argument("--urdf", help="a URDF robot instead")
    parser.add_argument("--animation", default="0", help="index or name; 'rest' for the rest pose")
    parser.add_argument("--frames", type=int, default=4, help="frames to draw, spread over the animation")
    parser.add_argument("--out", default="character.png")
    parser.add_argument("--no-skeleton", action="store_true")
    parser.add_argument("--azimuth", type=float, default=-70.0, help="view direction in degrees (-90: from the front)")
    args = parser.parse_args()

    weights, up = None, "y"
    if args.urdf:
        character = load_urdf(args.urdf)
        low = character.parameter_min.clamp(min=-2.0)
        high = character.parameter_max.clamp(max=2.0)
        u = torch.linspace(0.2, 0.8, max(args.frames, 2))[:, None]
        theta = low + u * (high - low)
        motion = character.model_parameters_to_joint_parameters(theta).reshape(theta.shape[0], -1, 7)
        up = "z"
    elif args.gltf:
        character = load_gltf(args.gltf)
        names = gltf_animations(args.gltf)
        animation = None if args.animation == "rest" or not names else (
            int(args.animation) if args.animation.isdigit() else args.animation)
        motion = load_gltf_motion(args.gltf, character, animation=animation)
        if character.num_blend_shapes:
            weights = load_gltf_blend_weights(args.gltf, character, animation=animation)
    else:
        character = humanoid_character(24, rings=6, segments=10)
        motion = random_motion(60, character.num_joints, amplitude=0.25)
    # Evenly spread, first frame included, last left out: a looping clip ends where it starts.
    count = min(args.frames, motion.shape[0])
    picks = torch.arange(count) * motion.shape[0] // count
    path = render_character(args.out, character, motion[picks], titles=[f"frame {int(i)}" for i in picks],
                            skeleton=not args.no_skeleton, azimuth=args.azimuth,
                            blend_weights=None if weights is None else weights[picks], up=up)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
