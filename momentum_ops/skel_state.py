"""Skeleton-state helpers: a state is ``[..., 8]`` = ``(t, q xyzw, s)``, the
similarity transform ``x -> t + s R(q) x``. Pure torch, differentiable."""

from __future__ import annotations

import torch

from . import quaternion


def split(state: torch.Tensor):
    """``(t [..., 3], q [..., 4], s [..., 1])``."""
    return state[..., :3], state[..., 3:7], state[..., 7:8]


def join(t: torch.Tensor, q: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return torch.cat([t, q, s], dim=-1)


def identity(shape=(), dtype=None, device=None) -> torch.Tensor:
    state = torch.zeros(*shape, 8, dtype=dtype, device=device)
    state[..., 6] = 1
    state[..., 7] = 1
    return state


def multiply(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a ∘ b``: apply ``b``, then ``a`` (as matrices, ``M(a) @ M(b)``)."""
    ta, qa, sa = split(a)
    tb, qb, sb = split(b)
    return join(ta + sa * quaternion.rotate(qa, tb), quaternion.multiply(qa, qb), sa * sb)


def inverse(state: torch.Tensor) -> torch.Tensor:
    t, q, s = split(state)
    q_inv = quaternion.conjugate(q)
    s_inv = 1 / s
    return join(-s_inv * quaternion.rotate(q_inv, t), q_inv, s_inv)


def transform_points(state: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """``t + s R(q) x`` for states ``[..., 8]`` and points ``[..., 3]`` (broadcast)."""
    t, q, s = split(state)
    return t + s * quaternion.rotate(q, points)


def to_matrix(state: torch.Tensor) -> torch.Tensor:
    """``[..., 4, 4]`` = ``[[s R, t], [0, 0, 0, 1]]``."""
    t, q, s = split(state)
    top = torch.cat([s[..., None] * quaternion.to_matrix(q), t[..., None]], dim=-1)
    bottom = torch.zeros(*state.shape[:-1], 1, 4, dtype=state.dtype, device=state.device)
    bottom[..., 0, 3] = 1
    return torch.cat([top, bottom], dim=-2)


def from_matrix(matrix: torch.Tensor, atol: float = 1e-4) -> torch.Tensor:
    """Inverse of ``to_matrix`` for similarity matrices ``[..., 4, 4]``.

    Raises ValueError if a matrix has a non-uniform scale, a shear or a
    reflection (beyond ``atol``, relative to its scale).
    """
    linear = matrix[..., :3, :3]
    scale = torch.linalg.det(linear).abs().pow(1 / 3)
    rotation = linear / scale[..., None, None]
    identity = torch.eye(3, dtype=matrix.dtype, device=matrix.device)
    error = (rotation.transpose(-1, -2) @ rotation - identity).abs().amax(dim=(-1, -2))
    if bool((error > atol).any()) or bool((torch.linalg.det(linear) <= 0).any()):
        raise ValueError(
            "from_matrix: a matrix is not a similarity transform (uniform scale times a rotation); "
            f"largest deviation {float(error.max()):.3g}"
        )
    return join(matrix[..., :3, 3], quaternion.from_matrix(rotation), scale[..., None])
