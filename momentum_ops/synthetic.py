"""Built-in synthetic skeletons, for the demo, benchmarks and tests that need
a plausible character without a file."""

from __future__ import annotations

import math

import torch


def humanoid_skeleton(joints: int = 24, seed: int = 0, dtype=torch.float32):
    """A humanoid-shaped tree of `joints` joints (at least 6).

    A root, a spine, a neck and head, two arms and two legs as chains; joints
    beyond the first 24 become fingers and face joints hung off the hands and
    head, in chains of up to four, as in hand- and face-rigged characters.

    Returns (names, parents [J] int64, offsets [J, 3], pre_rotations [J, 4]).
    """
    if joints < 6:
        raise ValueError(f"humanoid_skeleton needs at least 6 joints, got {joints}")
    g = torch.Generator().manual_seed(seed)
    names: list[str] = []
    parents: list[int] = []
    offsets: list[tuple[float, float, float]] = []

    def add(name, parent, offset):
        names.append(name)
        parents.append(parent)
        offsets.append(offset)
        return len(names) - 1

    # Body: 24 joints laid out like SMPL's (y up, metres).
    body = [
        ("pelvis", -1, (0.0, 0.9, 0.0)),
        ("left_hip", 0, (0.09, -0.08, 0.0)), ("right_hip", 0, (-0.09, -0.08, 0.0)),
        ("spine1", 0, (0.0, 0.11, 0.0)),
        ("left_knee", 1, (0.0, -0.38, 0.0)), ("right_knee", 2, (0.0, -0.38, 0.0)),
        ("spine2", 3, (0.0, 0.13, 0.0)),
        ("left_ankle", 4, (0.0, -0.4, 0.0)), ("right_ankle", 5, (0.0, -0.4, 0.0)),
        ("spine3", 6, (0.0, 0.05, 0.0)),
        ("left_foot", 7, (0.0, -0.05, 0.12)), ("right_foot", 8, (0.0, -0.05, 0.12)),
        ("neck", 9, (0.0, 0.21, 0.0)),
        ("left_collar", 9, (0.07, 0.12, 0.0)), ("right_collar", 9, (-0.07, 0.12, 0.0)),
        ("head", 12, (0.0, 0.07, 0.05)),
        ("left_shoulder", 13, (0.1, 0.03, 0.0)), ("right_shoulder", 14, (-0.1, 0.03, 0.0)),
        ("left_elbow", 16, (0.26, 0.0, 0.0)), ("right_elbow", 17, (-0.26, 0.0, 0.0)),
        ("left_wrist", 18, (0.25, 0.0, 0.0)), ("right_wrist", 19, (-0.25, 0.0, 0.0)),
        ("left_hand", 20, (0.08, 0.0, 0.0)), ("right_hand", 21, (-0.08, 0.0, 0.0)),
    ]
    for name, parent, offset in body[: min(joints, len(body))]:
        add(name, parent, offset)
    # Extra joints: chains of up to 4 off the hands (fingers) and the head (face).
    anchors = [("left_hand", 1.0), ("right_hand", -1.0), ("head", 0.0)]
    chain = 0
    while len(names) < joints:
        anchor_name, side = anchors[chain % len(anchors)]
        parent = names.index(anchor_name) if anchor_name in names else len(names) - 1
        for link in range(min(4, joints - len(names))):
            jitter = (torch.rand(3, generator=g) - 0.5) * 0.02
            if side:
                offset = (side * 0.03 + float(jitter[0]), float(jitter[1]), 0.02 * (chain % 5 - 2) + float(jitter[2]))
            else:
                offset = (0.02 * math.sin(chain) + float(jitter[0]), 0.01 + float(jitter[1]), 0.03 + float(jitter[2]))
            parent = add(f"{anchor_name}_chain{chain}_{link}", parent, offset)
        chain += 1

    J = len(names)
    # Small fixed pre-rotations, as rigs exported from DCC tools have.
    axis_angle = (torch.rand(J, 3, generator=g) - 0.5) * 0.4
    angle = axis_angle.norm(dim=-1, keepdim=True)
    axis = axis_angle / angle.clamp_min(1e-12)
    pre_rotations = torch.cat([axis * torch.sin(angle / 2), torch.cos(angle / 2)], dim=-1)
    return (
        names,
        torch.tensor(parents, dtype=torch.int64),
        torch.tensor(offsets, dtype=torch.float64).to(dtype),
        pre_rotations.to(dtype),
    )


def random_motion(frames: int, joints: int, seed: int = 0, dtype=torch.float32, amplitude: float = 0.4):
    """Smooth joint parameters [frames, J, 7]: sinusoids on every rotation,
    a root drifting forward, no scale."""
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(0, 2 * math.pi, frames, dtype=torch.float64)[:, None, None]
    phase = torch.rand(1, joints, 3, generator=g, dtype=torch.float64) * 2 * math.pi
    freq = 1 + torch.randint(0, 3, (1, joints, 3), generator=g).double()
    jp = torch.zeros(frames, joints, 7, dtype=torch.float64)
    jp[..., 3:6] = amplitude * torch.sin(freq * t + phase)
    jp[:, 0, 2] = torch.linspace(0, 1, frames, dtype=torch.float64)
    return jp.to(dtype)


def humanoid_character(joints: int = 24, rings: int = 4, segments: int = 8, seed: int = 0, dtype=torch.float32):
    """A Character: `humanoid_skeleton` with a tube of `rings` x `segments`
    vertices around every bone, skinned to the bone's two joints (the parent
    fully at its end, half-and-half at the child's end). About
    (J - 1) * rings * segments vertices."""
    from . import skel_state
    from .character import Character

    names, parents, offsets, pre = humanoid_skeleton(joints, seed=seed, dtype=torch.float64)
    zeros = torch.zeros(len(names), 7, dtype=torch.float64)
    rest = torch.ops.momentum.joint_parameters_to_skeleton_state(zeros, parents, offsets, pre)
    positions = rest[:, :3]
    vertices, faces, indices, weights = [], [], [], []
    count = 0  # vertices so far
    angle = torch.arange(segments, dtype=torch.float64) * (2 * math.pi / segments)
    for j, p in enumerate(parents.tolist()):
        if p < 0:
            continue
        start, end = positions[p], positions[j]
        axis = end - start
        length = float(axis.norm())
        if length < 1e-9:
            continue
        axis = axis / length
        helper = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
        if abs(float(axis @ helper)) > 0.9:
            helper = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
        u = torch.linalg.cross(axis, helper)
        u = u / u.norm()
        v = torch.linalg.cross(axis, u)
        radius = min(0.05, 0.3 * length)
        first = count
        count += rings * segments
        for r in range(rings):
            t = r / max(rings - 1, 1)
            centre = start + t * (end - start)
            ring = centre + radius * (torch.cos(angle)[:, None] * u + torch.sin(angle)[:, None] * v)
            vertices.append(ring)
            indices.append(torch.tensor([[p, j]] * segments))
            weights.append(torch.tensor([[1 - 0.5 * t, 0.5 * t]] * segments, dtype=torch.float64))
        for r in range(rings - 1):
            for s in range(segments):
                a = first + r * segments + s
                b = first + r * segments + (s + 1) % segments
                faces += [[a, b, a + segments], [b, b + segments, a + segments]]
    return Character(
        joint_names=names,
        parents=parents,
        offsets=offsets.to(dtype),
        pre_rotations=pre.to(dtype),
        inverse_bind_pose=torch.linalg.inv(skel_state.to_matrix(rest)).to(dtype),
        rest_vertices=torch.cat(vertices).to(dtype),
        faces=torch.tensor(faces, dtype=torch.int64),
        skin_indices=torch.cat(indices),
        skin_weights=torch.cat(weights).to(dtype),
    )
