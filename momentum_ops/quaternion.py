"""Quaternion helpers (xyzw, as everywhere in momentum_ops), differentiable.

Thin wrappers over `roma <https://github.com/naver/roma>`_ (xyzw too), named
for this library's conventions. Joint Euler angles ``(rx, ry, rz)`` rotate a
vector about x first, then y, then z, all fixed axes: ``R = Rz Ry Rx``
(roma's extrinsic ``"xyz"``).
"""

from __future__ import annotations

import roma
import torch


def multiply(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product ``a ⊗ b`` (apply ``b``, then ``a``), ``[..., 4]``."""
    return roma.quat_product(a, b)


def conjugate(q: torch.Tensor) -> torch.Tensor:
    """The inverse of a unit quaternion."""
    return roma.quat_conjugation(q)


def normalize(q: torch.Tensor) -> torch.Tensor:
    return roma.quat_normalize(q)


def rotate(q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``R(q) v`` for unit quaternions ``[..., 4]`` and vectors ``[..., 3]``."""
    return roma.quat_action(q, v, is_normalized=True)


def to_matrix(q: torch.Tensor) -> torch.Tensor:
    """Unit quaternions ``[..., 4]`` to rotation matrices ``[..., 3, 3]``."""
    return roma.unitquat_to_rotmat(q)


def from_matrix(m: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``[..., 3, 3]`` to unit quaternions ``[..., 4]``."""
    return roma.rotmat_to_unitquat(m)


def from_euler_xyz(angles: torch.Tensor) -> torch.Tensor:
    """Joint Euler angles ``[..., 3]`` (rx, ry, rz) to ``qz(rz) ⊗ qy(ry) ⊗ qx(rx)``."""
    return roma.euler_to_unitquat("xyz", angles)


def to_euler_xyz(q: torch.Tensor) -> torch.Tensor:
    """Unit quaternions to joint Euler angles ``[..., 3]`` with
    ``from_euler_xyz(to_euler_xyz(q)) == ±q``; ry in ``[-pi/2, pi/2]``."""
    return roma.unitquat_to_euler("xyz", q)


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between unit quaternions ``a`` and ``b``
    (``[..., 4]``) at fractions ``t`` (``[...]``, broadcast), along the shorter arc."""
    dot = (a * b).sum(-1, keepdim=True)
    b = torch.where(dot < 0, -b, b)
    dot = dot.abs().clamp(max=1.0)
    t = t[..., None] if t.dim() == a.dim() - 1 else t
    theta = torch.acos(dot)
    sin_theta = torch.sin(theta)
    small = sin_theta < 1e-6
    safe = torch.where(small, torch.ones_like(sin_theta), sin_theta)
    wa = torch.where(small, 1 - t, torch.sin((1 - t) * theta) / safe)
    wb = torch.where(small, t, torch.sin(t * theta) / safe)
    return torch.nn.functional.normalize(wa * a + wb * b, dim=-1)
