"""``python -m momentum_ops.demo [--gltf PATH] [--urdf PATH] [--morph PATH] [--device cuda]``:
loads a character (by default a synthetic humanoid the package builds
itself), plays its animation through forward kinematics and skinning, prints
timings, draws a few frames to a PNG, and fits the character back to its own
animation's joint positions with noise added, frame by frame with inverse
kinematics. Then a URDF robot arm (its joints swept, its end link steered to
targets by IK) and a morph-target animation (blend shapes and skinning in one
op), each drawn to a PNG of its own. Without paths, the robot and the morph
file come from the repository's test assets when they are there, else are
built here."""

from __future__ import annotations

import argparse
import os
import tempfile
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


_ASSETS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "test", "assets")
_ROBOT = """<robot name="demo_arm">
  <link name="base"><visual><geometry><cylinder radius="0.08" length="0.1"/></geometry></visual></link>
  <link name="upper"><visual><origin xyz="0 0 0.2"/><geometry><box size="0.06 0.06 0.4"/></geometry></visual></link>
  <link name="lower"><visual><origin xyz="0 0 0.15"/><geometry><box size="0.05 0.05 0.3"/></geometry></visual></link>
  <link name="hand"><visual><geometry><sphere radius="0.04"/></geometry></visual></link>
  <joint name="yaw" type="continuous"><parent link="base"/><child link="upper"/>
    <origin xyz="0 0 0.05"/><axis xyz="0 0 1"/></joint>
  <joint name="shoulder" type="revolute"><parent link="upper"/><child link="lower"/>
    <origin xyz="0 0 0.4"/><axis xyz="0 1 1"/><limit lower="-2" upper="2" effort="1" velocity="1"/></joint>
  <joint name="elbow" type="revolute"><parent link="lower"/><child link="hand"/>
    <origin xyz="0 0 0.3" rpy="0.3 0 0"/><axis xyz="0 1 0"/><limit lower="-2.5" upper="2.5" effort="1" velocity="1"/></joint>
</robot>
"""


def robot(args, device):
    """A URDF arm: FK over a sweep of its joints, IK to reach targets with its end link."""
    from momentum_ops.io import load_urdf
    from momentum_ops.render import render_character

    path = args.urdf or os.path.join(_ASSETS, "urdf", "pytorch_kinematics", "kuka_iiwa.urdf")
    with tempfile.TemporaryDirectory() as folder:
        if args.urdf is None and not os.path.exists(path):
            path = os.path.join(folder, "demo_arm.urdf")
            with open(path, "w") as f:
                f.write(_ROBOT)
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # visual mesh files are not loaded
            character = load_urdf(path)
    character = character.to(device)
    low, high = character.parameter_min.clamp(min=-2.0), character.parameter_max.clamp(max=2.0)
    theta = low + torch.rand(args.batch, character.num_parameters, device=device) * (high - low)
    end = character.num_joints - 1

    def fk():
        return character.joint_parameters_to_skeleton_state(character.model_parameters_to_joint_parameters(theta))

    ms = _time(fk, device)
    targets = fk()[:, end: end + 1, :3]
    start = (theta + 0.3 * torch.randn_like(theta)).clamp(low, high)
    result = momentum_ops.solve_ik(character, start, position_joints=torch.tensor([end]), position_targets=targets,
                                   max_iterations=30)
    reached = character.joint_parameters_to_skeleton_state(
        character.model_parameters_to_joint_parameters(result.model_parameters))[:, end, :3]
    miss = (reached - targets[:, 0]).norm(dim=-1)
    print(f"robot: {os.path.basename(path)}: {character.num_parameters} DOF, {character.num_joints} links; "
          f"FK of {args.batch} configurations {ms:.3f} ms; IK to {args.batch} end-link targets: median miss "
          f"{float(miss.median()):.2e} m, {float((miss < 1e-4).float().mean()):.1%} within 0.1 mm")
    sweep = low.cpu() + torch.linspace(0.2, 0.8, 4)[:, None] * (high - low).cpu()
    motion = character.cpu().model_parameters_to_joint_parameters(sweep).reshape(4, -1, 7)
    out = os.path.splitext(args.out)[0] + "_robot.png"
    render_character(out, character.cpu(), motion, titles=[f"sweep {i}" for i in range(4)], up="z")
    print(f"drew the robot's joint sweep to {out}")


def morph(args, device):
    """A morph-target animation: blend weights from the file, blend + skinning in one op."""
    from momentum_ops.io import gltf_animations, load_gltf, load_gltf_blend_weights, load_gltf_motion, save_gltf
    from momentum_ops.render import render_character

    path = args.morph or os.path.join(_ASSETS, "gltf_morph", "MorphStressTest", "MorphStressTest.glb")
    with tempfile.TemporaryDirectory() as folder:
        if args.morph is None and not os.path.exists(path):
            # A synthetic humanoid with two blend shapes and an animation of their weights.
            base = humanoid_character(12, rings=6, segments=10)
            rest = base.rest_vertices
            shapes = torch.stack([0.15 * rest * (rest[:, 1:2] > rest[:, 1].median()), torch.roll(rest, 1, 1) * 0.1])
            base = momentum_ops.Character(base.joint_names, base.parents, base.offsets, base.pre_rotations,
                                          rest_vertices=rest, faces=base.faces, skin_indices=base.skin_indices,
                                          skin_weights=base.skin_weights, blend_shapes=shapes,
                                          blend_shape_names=["bulk", "twist"])
            frames = torch.linspace(0, 1, 30)
            path = os.path.join(folder, "morph_demo.glb")
            save_gltf(path, base, random_motion(30, base.num_joints, amplitude=0.2), fps=30,
                      blend_weights=torch.stack([torch.sin(6 * frames), frames], 1))
        character = load_gltf(path)
        names = gltf_animations(path)
        animation = names[1] if len(names) > 1 else 0
        motion = load_gltf_motion(path, character, animation=animation)
        weights = load_gltf_blend_weights(path, character, animation=animation)
    character = character.to(device)
    posed = character.skin(character.joint_parameters_to_skeleton_state(motion.to(device)), weights.to(device))
    ms = _time(lambda: character.skin(character.joint_parameters_to_skeleton_state(motion.to(device)),
                                      weights.to(device)), device)
    print(f"morph targets: {os.path.basename(path)} animation {animation!r}: {character.num_blend_shapes} blend "
          f"shapes {character.blend_shape_names[:4]}..., {character.num_vertices} vertices, {motion.shape[0]} "
          f"frames blended and skinned in one call: {ms:.3f} ms; posed span "
          f"{[round(e, 3) for e in (posed.amax((0, 1)) - posed.amin((0, 1))).tolist()]}")
    picks = torch.linspace(0, motion.shape[0] - 1, 4).round().long()
    out = os.path.splitext(args.out)[0] + "_morph.png"
    render_character(out, character.cpu(), motion[picks], titles=[f"frame {int(i)}" for i in picks],
                     blend_weights=weights[picks], azimuth=-60)
    print(f"drew frames {picks.tolist()} to {out}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gltf", help="a .glb/.gltf character (default: a built-in synthetic one)")
    parser.add_argument("--urdf", help="a URDF robot (default: kuka_iiwa from the test assets, else a built-in arm)")
    parser.add_argument("--morph", help="a glTF with morph targets (default: MorphStressTest, else a built-in one)")
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

    robot(args, device)
    morph(args, device)


if __name__ == "__main__":
    main()
