"""FK and skinning written in plain PyTorch operations, for the derivatives
the compiled kernels do not compute: forward-mode AD (jvp) and the double
backward (gradients of gradients, as in gradient penalties).

They follow docs/conventions.md term for term, with the same quaternion
products as csrc/common/math.h, so that their derivatives are those of the
compiled ops. Plain PyTorch is slower than the kernels; these forms run only
when such derivatives are asked for.
"""

from __future__ import annotations

import torch


def _quat_multiply(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    ax, ay, az, aw = a.unbind(-1)
    bx, by, bz, bw = b.unbind(-1)
    return torch.stack([
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
        aw * bw - ax * bx - ay * by - az * bz,
    ], dim=-1)


def _quat_rotate(q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    u, w = q[..., :3], q[..., 3:]
    uv = torch.cross(u, v, dim=-1)
    return v + 2 * (w * uv + torch.cross(u, uv, dim=-1))


def _quat_rows(q: torch.Tensor) -> torch.Tensor:
    """R(q) [..., 3, 3] by the polynomial of math.h's quat_to_rows (not normalised)."""
    x, y, z, w = q.unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
        2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
        2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
    ], dim=-1).unflatten(-1, (3, 3))


def _elementary(angle: torch.Tensor, axis: int) -> torch.Tensor:
    half = 0.5 * angle
    zero = torch.zeros_like(half)
    parts = [zero, zero, zero, torch.cos(half)]
    parts[axis] = torch.sin(half)
    return torch.stack(parts, dim=-1)


def local_transforms(joint_parameters, offsets, pre_rotations):
    """Each joint's (t [..., J, 3], q [..., J, 4], s [..., J]) relative to its parent."""
    jp = joint_parameters
    pre = pre_rotations / torch.linalg.vector_norm(pre_rotations, dim=-1, keepdim=True)
    pre = pre.expand(*jp.shape[:-1], 4)
    q = _quat_multiply(_quat_multiply(_quat_multiply(pre, _elementary(jp[..., 5], 2)), _elementary(jp[..., 4], 1)),
                       _elementary(jp[..., 3], 0))
    return offsets + jp[..., :3], q, torch.exp2(jp[..., 6])


def joint_parameters_to_skeleton_state(joint_parameters, parents, offsets, pre_rotations):
    """[..., J, 7] -> [..., J, 8] by pointer jumping: after step k every joint
    holds the composition of its 2^k nearest ancestors' local transforms and
    its own, so ceil(log2 J) steps reach the roots. The steps depend on J
    alone, not on the values of `parents`, so the function traces (fake
    tensors, torch.compile) without data-dependent shapes."""
    jp = joint_parameters
    t, q, s = local_transforms(jp, offsets, pre_rotations)
    joints = jp.shape[-2]
    ancestor = parents.to(device=jp.device, dtype=torch.int64)
    own = torch.arange(joints, device=jp.device)
    steps = max(1, (joints - 1).bit_length())
    for _ in range(steps):
        has = ancestor >= 0
        index = torch.where(has, ancestor, own)
        tp, qp, sp = t.index_select(-2, index), q.index_select(-2, index), s.index_select(-1, index)
        t = torch.where(has[:, None], tp + sp[..., None] * _quat_rotate(qp, t), t)
        q = torch.where(has[:, None], _quat_multiply(qp, q), q)
        s = torch.where(has, sp * s, s)
        ancestor = torch.where(has, ancestor.index_select(0, index), ancestor)
    return torch.cat([t, q, s[..., None]], dim=-1)


def skin_points(skeleton_state, inverse_bind_pose, rest_points, skin_indices, skin_weights):
    """Linear blend skinning [..., V, 3] (the inverse bind pose's last row is not read)."""
    t, q, s = skeleton_state[..., :3], skeleton_state[..., 3:7], skeleton_state[..., 7:]
    scaled = s[..., None] * _quat_rows(q)  # [..., J, 3, 3]
    matrices = scaled @ inverse_bind_pose[:, :3, :]  # [..., J, 3, 4]
    matrices = torch.cat([matrices[..., :3], matrices[..., 3:] + t[..., None]], dim=-1)
    gathered = matrices.index_select(-3, skin_indices.reshape(-1).to(torch.int64))
    gathered = gathered.unflatten(-3, tuple(skin_indices.shape))  # [..., V, K, 3, 4]
    ones = torch.ones_like(rest_points[..., :1])
    homogeneous = torch.cat([rest_points, ones], dim=-1)  # [..., V, 4]
    moved = (gathered[..., :3] * homogeneous[..., None, None, :3]).sum(-1) + gathered[..., 3]
    return (skin_weights[..., None] * moved).sum(-2)


def blend_points(rest_points, blend_shapes, blend_weights):
    """rest + sum_s w[..., s] * shapes[s]: [V, 3] -> [..., V, 3]."""
    return rest_points + torch.einsum("...s,svc->...vc", blend_weights, blend_shapes)


def skin_blended_points(skeleton_state, inverse_bind_pose, rest_points, blend_shapes, blend_weights,
                        skin_indices, skin_weights):
    """Skinning of blended rest points (materialised here; the op does not)."""
    points = blend_points(rest_points, blend_shapes, blend_weights)
    return skin_points(skeleton_state, inverse_bind_pose, points, skin_indices, skin_weights)


def fk_backward(grad_skeleton_state, joint_parameters, parents, offsets, pre_rotations, skeleton_state):
    """The FK backward op's value, differentiably: the vector-Jacobian product
    of the FK above (the given skeleton_state is its forward, recomputed here)."""
    with torch.enable_grad():
        jp = joint_parameters if joint_parameters.requires_grad else joint_parameters.detach().requires_grad_()
        off = offsets if offsets.requires_grad else offsets.detach().requires_grad_()
        state = joint_parameters_to_skeleton_state(jp, parents, off, pre_rotations)
        grad_jp, grad_offsets = torch.autograd.grad(state, (jp, off), grad_skeleton_state, create_graph=True)
    return grad_jp, grad_offsets


def skin_backward(grad_points, skeleton_state, inverse_bind_pose, rest_points, skin_indices, skin_weights):
    """The skinning backward op's value, differentiably."""
    with torch.enable_grad():
        inputs = [x if x.requires_grad else x.detach().requires_grad_() for x in (skeleton_state, rest_points,
                                                                                  skin_weights)]
        points = skin_points(inputs[0], inverse_bind_pose, inputs[1], skin_indices, inputs[2])
        return torch.autograd.grad(points, inputs, grad_points, create_graph=True)


def skin_blended_backward(grad_points, skeleton_state, inverse_bind_pose, rest_points, blend_shapes,
                          blend_weights, skin_indices, skin_weights):
    """The blended skinning backward op's value, differentiably: gradients of
    the state, of the blended points [..., V, 3] and of the skin weights."""
    points = blend_points(rest_points, blend_shapes, blend_weights)
    return skin_backward(grad_points, skeleton_state, inverse_bind_pose, points, skin_indices, skin_weights)
