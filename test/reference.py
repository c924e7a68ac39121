"""Independent float64 references, written from docs/conventions.md with rotation
matrices (the library uses quaternions), as plain loops over joints."""

from __future__ import annotations

import math

import numpy as np
import torch


def rot_x(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def rot_y(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def rot_z(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def quat_to_matrix(q):
    """xyzw unit quaternion(s) [..., 4] -> rotation matrices [..., 3, 3] (numpy float64)."""
    q = np.asarray(q, dtype=np.float64)
    x, y, z, w = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    m = np.empty(q.shape[:-1] + (3, 3))
    m[..., 0, 0] = 1 - 2 * (y * y + z * z)
    m[..., 0, 1] = 2 * (x * y - z * w)
    m[..., 0, 2] = 2 * (x * z + y * w)
    m[..., 1, 0] = 2 * (x * y + z * w)
    m[..., 1, 1] = 1 - 2 * (x * x + z * z)
    m[..., 1, 2] = 2 * (y * z - x * w)
    m[..., 2, 0] = 2 * (x * z - y * w)
    m[..., 2, 1] = 2 * (y * z + x * w)
    m[..., 2, 2] = 1 - 2 * (x * x + y * y)
    return m


def forward_kinematics(joint_parameters, parents, offsets, pre_rotations):
    """joint_parameters [..., J, 7] -> (translations [..., J, 3], rotations
    [..., J, 3, 3], scales [..., J]) as float64 numpy arrays."""
    jp = np.asarray(torch.as_tensor(joint_parameters).detach().cpu().double())
    parents = [int(p) for p in torch.as_tensor(parents).cpu()]
    offsets = np.asarray(torch.as_tensor(offsets).detach().cpu().double())
    pre = quat_to_matrix(np.asarray(torch.as_tensor(pre_rotations).detach().cpu().double()))
    batch_shape = jp.shape[:-2]
    J = len(parents)
    flat = jp.reshape(-1, J, 7)
    t_out = np.zeros((flat.shape[0], J, 3))
    r_out = np.zeros((flat.shape[0], J, 3, 3))
    s_out = np.zeros((flat.shape[0], J))
    for b in range(flat.shape[0]):
        for j in range(J):
            tx, ty, tz, rx, ry, rz, s = flat[b, j]
            t_local = offsets[j] + np.array([tx, ty, tz])
            r_local = pre[j] @ rot_z(rz) @ rot_y(ry) @ rot_x(rx)
            s_local = 2.0**s
            p = parents[j]
            if p < 0:
                t, r, sc = t_local, r_local, s_local
            else:
                t = t_out[b, p] + s_out[b, p] * r_out[b, p] @ t_local
                r = r_out[b, p] @ r_local
                sc = s_out[b, p] * s_local
            t_out[b, j], r_out[b, j], s_out[b, j] = t, r, sc
    return (
        t_out.reshape(batch_shape + (J, 3)),
        r_out.reshape(batch_shape + (J, 3, 3)),
        s_out.reshape(batch_shape + (J,)),
    )


def random_unit_quaternions(n, generator, dtype=torch.float64):
    q = torch.randn(n, 4, generator=generator, dtype=torch.float64)
    return torch.nn.functional.normalize(q, dim=-1).to(dtype)


def random_skeleton(joints, generator, roots=3, dtype=torch.float64, chain=False):
    """A random forest: `roots` roots, every other joint's parent drawn among
    the earlier joints (or the previous joint when `chain`)."""
    parents = []
    for j in range(joints):
        if j < roots:
            parents.append(-1)
        elif chain:
            parents.append(j - 1)
        else:
            parents.append(int(torch.randint(0, j, (1,), generator=generator)))
    offsets = torch.randn(joints, 3, generator=generator, dtype=torch.float64)
    pre_rotations = random_unit_quaternions(joints, generator)
    return (
        torch.tensor(parents, dtype=torch.int64),
        offsets.to(dtype),
        pre_rotations.to(dtype),
    )


def random_joint_parameters(batch_shape, joints, generator, dtype=torch.float64, scale=0.3):
    jp = torch.randn(*batch_shape, joints, 7, generator=generator, dtype=torch.float64)
    jp[..., 3:6] *= 1.5  # angles of a few radians either way
    jp[..., 6] = (torch.rand(*batch_shape, joints, generator=generator, dtype=torch.float64) - 0.5) * 2 * scale
    return jp.to(dtype)


def state_matrices(state):
    """Skeleton states [..., 8] -> 4x4 matrices [..., 4, 4] (numpy float64)."""
    state = np.asarray(torch.as_tensor(state).detach().cpu().double())
    m = np.zeros(state.shape[:-1] + (4, 4))
    m[..., :3, :3] = state[..., 7, None, None] * quat_to_matrix(state[..., 3:7])
    m[..., :3, 3] = state[..., :3]
    m[..., 3, 3] = 1
    return m


def skin_points(skeleton_state, inverse_bind_pose, rest_points, skin_indices, skin_weights):
    """Linear blend skinning, vertex by vertex, influence by influence."""
    mats = state_matrices(skeleton_state)  # [..., J, 4, 4]
    ibp = np.asarray(torch.as_tensor(inverse_bind_pose).detach().cpu().double())
    rest = np.asarray(torch.as_tensor(rest_points).detach().cpu().double())
    idx = np.asarray(torch.as_tensor(skin_indices).cpu())
    w = np.asarray(torch.as_tensor(skin_weights).detach().cpu().double())
    batch_shape = mats.shape[:-3]
    J, V = mats.shape[-3], idx.shape[0]
    flat_mats = mats.reshape(-1, J, 4, 4)
    flat_rest = rest.reshape(-1, V, 3) if rest.ndim > 2 else None
    out = np.zeros((flat_mats.shape[0], V, 3))
    for b in range(flat_mats.shape[0]):
        points = flat_rest[b] if flat_rest is not None else rest
        for v in range(V):
            x = np.append(points[v], 1.0)
            for k in range(idx.shape[1]):
                out[b, v] += w[v, k] * (flat_mats[b, idx[v, k]] @ ibp[idx[v, k]] @ x)[:3]
    return out.reshape(batch_shape + (V, 3))


def random_states(batch_shape, joints, generator, dtype=torch.float64):
    """Random skeleton states: unit quaternions, translations, scales in [0.5, 2]."""
    n = int(np.prod(batch_shape)) * joints if batch_shape else joints
    t = torch.randn(n, 3, generator=generator, dtype=torch.float64)
    q = random_unit_quaternions(n, generator)
    s = 2 ** (torch.rand(n, 1, generator=generator, dtype=torch.float64) * 2 - 1)
    return torch.cat([t, q, s], dim=-1).reshape(*batch_shape, joints, 8).to(dtype)


def random_inverse_bind_pose(joints, generator, dtype=torch.float64):
    """Random affine 4x4 matrices (last row 0 0 0 1)."""
    m = torch.randn(joints, 4, 4, generator=generator, dtype=torch.float64) * 0.5
    m[:, :3, :3] += torch.eye(3, dtype=torch.float64)
    m[:, 3] = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64)
    return m.to(dtype)


def random_skin(vertices, joints, influences, generator, dtype=torch.float64, index_dtype=torch.int64):
    indices = torch.randint(0, joints, (vertices, influences), generator=generator).to(index_dtype)
    weights = torch.rand(vertices, influences, generator=generator, dtype=torch.float64)
    weights[:, -1] *= (torch.rand(vertices, generator=generator) > 0.3).double()  # some unused slots
    return indices, weights.to(dtype)
