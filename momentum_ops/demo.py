"""``python -m momentum_ops.demo [--gltf PATH] [--device cuda]``: loads a
character (by default a synthetic humanoid the package builds itself), plays
its animation through forward kinematics and skinning, prints timings, draws
a few frames to a PNG, and fits the character back to its own animation's
joint positions with noise added, frame by frame with inverse kinematics."""

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


def fit(character, motion, noise):
    """IK: recover each frame's pose from noisy joint positions, warm-started
    from the previous frame's solution and regularised toward it."""
    J, P = character.num_joints, character.num_parameters
    device, dtype = character.offsets.device, character.offsets.dtype
    # The model parameters of the animation (the identity transform of a loaded
    # character makes them the joint parameters).
    truth = torch.linalg.lstsq(character.parameter_transform.cpu().double(),
                               motion.reshape(motion.shape[0], -1).T.cpu().double()).solution.T.to(device, dtype)
    clean = character.joint_parameters_to_skeleton_state(character.model_parameters_to_joint_parameters(truth))[..., :3]
    size = float((clean.reshape(-1, 3).amax(0) - clean.reshape(-1, 3).amin(0)).norm())
    generator = torch.Generator().manual_seed(0)
    noisy = clean + noise * size * torch.randn(clean.shape, generator=generator, dtype=dtype).to(device)
    active = torch.zeros(P, dtype=torch.bool)
    for j in range(J):
        active[7 * j + 3: 7 * j + 6] = True
    active[:3] = True
    joints = torch.arange(J)
    regularization = torch.full((P,), 1e-4 * size * size, dtype=dtype, device=device)
    solution = truth[:1].clone()
    solution[:, active] = 0
    fitted = []

    def solve_all():
        nonlocal solution
        fitted.clear()
        current = solution
        for f in range(motion.shape[0]):
            result = momentum_ops.solve_ik(
                character, current, position_joints=joints, position_targets=noisy[f: f + 1],
                regularization_target=current, regularization_weight=regularization,
                active_parameters=active, max_iterations=20,
            )
            current = result.model_parameters
            fitted.append(current)
        return fitted

    ms = _time(solve_all, device, reps=1)
    fitted_positions = character.joint_parameters_to_skeleton_state(
        character.model_parameters_to_joint_parameters(torch.cat(fitted)))[..., :3]
    error = (fitted_positions - clean).norm(dim=-1).mean()
    noise_level = (noisy - clean).norm(dim=-1).mean()
    print(f"IK fit, frame by frame with warm starts ({motion.shape[0]} frames, noise {noise:.1%} of the size): "
          f"mean joint error {float(error):.4g} against the clean animation (the noise itself: "
          f"{float(noise_level):.4g}), {motion.shape[0] / ms * 1e3:,.0f} frames/s")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gltf", help="a .glb/.gltf character (default: a built-in synthetic one)")
    parser.add_argument("--animation", default=None, help="animation index or name (default: the first)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--batch", type=int, default=4096, help="frames per call in the throughput test")
    parser.add_argument("--out", default="momentum_ops_demo.png", help="where to draw a few frames")
    parser.add_argument("--noise", type=float, default=0.01, help="IK fit: noise, as a fraction of the size")
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

    fit(character, motion, args.noise)

    picks = torch.linspace(0, motion.shape[0] - 1, min(4, motion.shape[0])).round().long()
    from momentum_ops.render import render_character

    path = render_character(args.out, character.cpu(), motion[picks].cpu(),
                            titles=[f"frame {int(i)}" for i in picks])
    extent = (vertices.amax(dim=(0, 1)) - vertices.amin(dim=(0, 1))).tolist()
    print(f"posed vertices span {[round(e, 3) for e in extent]}; drew frames {picks.tolist()} to {path}")


if __name__ == "__main__":
    main()
