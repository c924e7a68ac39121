#!/usr/bin/env python3
"""Writes what pymomentum (Momentum's own Python bindings) reads from a
Momentum glTF file, as an .npz the tests compare momentum_ops against:
the parameter transform, names and model-parameter limits, the motion and
its joint offsets, fps, and the skeleton state of every frame, all in
Momentum's centimetres.

pymomentum-cpu needs Python 3.12 and torch 2.8, so it runs in a virtualenv of
its own (not this project's):

    python3.12 -m venv /tmp/pymvenv
    /tmp/pymvenv/bin/pip install pymomentum-cpu "torch==2.8.*"
    /tmp/pymvenv/bin/python tools/pymomentum_reference.py \\
        test/assets/gltf/momentum/model_with_motion.glb test/assets/pymomentum/model_with_motion.npz
"""

import argparse
import importlib.metadata

import numpy as np


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("gltf")
    parser.add_argument("out")
    args = parser.parse_args()
    import pymomentum.geometry as geometry

    character, motion, offsets, fps = geometry.Character.load_gltf_with_motion(args.gltf)
    transform = character.parameter_transform
    motion = np.asarray(motion, dtype=np.float32)
    # Momentum poses a frame with transform @ motion + offsets (CharacterParameters.offsets).
    joint_parameters = transform.apply(motion) + np.asarray(offsets, dtype=np.float32)[None]
    states = geometry.joint_parameters_to_skeleton_state(character, np.ascontiguousarray(joint_parameters))
    np.savez(
        args.out,
        pymomentum_version=np.asarray(importlib.metadata.version("pymomentum-cpu")),
        joint_names=np.asarray(character.skeleton.joint_names),
        parameter_names=np.asarray(transform.names),
        transform=np.asarray(transform.transform, dtype=np.float64),
        model_parameter_limits=np.asarray(character.model_parameter_limits, dtype=np.float64),
        motion=motion,
        offsets=np.asarray(offsets, dtype=np.float32),
        fps=np.asarray(fps),
        skeleton_states=np.asarray(states, dtype=np.float64),
    )
    print(f"wrote {args.out}: {motion.shape[0]} frames, {len(transform.names)} parameters, "
          f"{character.skeleton.size} joints")


if __name__ == "__main__":
    main()
