"""Independent float64 references, written from CONVENTIONS.md with rotation
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
