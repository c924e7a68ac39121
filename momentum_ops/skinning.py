"""Linear blend skinning: the op's Python API, its autograd formula and fake kernels.

For vertex ``v`` with rest position ``x`` and influences ``(j_k, w_k)``::

    x' = sum_k w_k * (M(state[j_k]) @ inverse_bind_pose[j_k]) @ [x; 1]

with ``M(state) = [[s R(q), t], [0, 1]]``. Weights are used as given (not
renormalised); a zero weight is an unused slot.
"""

from __future__ import annotations

import torch

from . import _checks
from . import _torch_kinematics as _reference

_ops = torch.ops.momentum


def skin_points(
    skeleton_state: torch.Tensor,
    inverse_bind_pose: torch.Tensor,
    rest_points: torch.Tensor,
    skin_indices: torch.Tensor,
    skin_weights: torch.Tensor,
) -> torch.Tensor:
    """Linear blend skinning of points by a posed skeleton.

    Args:
        skeleton_state: ``[..., J, 8]`` global joint transforms
            ``(tx, ty, tz, qx, qy, qz, qw, s)``, float32 or float64.
        inverse_bind_pose: ``[J, 4, 4]`` affine matrices (last row ``0 0 0 1``,
            which is not read): the inverse of each joint's global matrix at the
            bind pose.
        rest_points: ``[V, 3]``, or ``[..., V, 3]`` with the batch dims of
            ``skeleton_state`` for per-item rest shapes (e.g. blend shapes).
        skin_indices: ``[V, K]`` int32 or int64 joint indices in ``[0, J)``.
        skin_weights: ``[V, K]`` weights, used as given.

    Returns:
        ``[..., V, 3]`` skinned points.

    Differentiable with respect to ``skeleton_state``, ``rest_points`` and
    ``skin_weights`` (reverse mode by the backward kernel; forward mode and
    the double backward through a pure-PyTorch form). On a GPU the indices are checked with one small device
    reduction and a copy to the host (a synchronisation) except inside a CUDA
    graph capture, where vertices with a bad index come out NaN instead.
    """
    where = "skin_points"
    for name, value in (("skeleton_state", skeleton_state), ("inverse_bind_pose", inverse_bind_pose),
                        ("rest_points", rest_points), ("skin_weights", skin_weights)):
        _checks.tensor(value, name, where)
    skin_indices = _checks.index_tensor(skin_indices, "skin_indices", where)
    return _ops.skin_points(skeleton_state, inverse_bind_pose, rest_points, skin_indices, skin_weights)


def skin_blended_points(
    skeleton_state: torch.Tensor,
    inverse_bind_pose: torch.Tensor,
    rest_points: torch.Tensor,
    blend_shapes: torch.Tensor,
    blend_weights: torch.Tensor,
    skin_indices: torch.Tensor,
    skin_weights: torch.Tensor,
) -> torch.Tensor:
    """Blend shapes and linear blend skinning in one op: each item's rest
    points are ``rest_points + sum_s blend_weights[..., s] * blend_shapes[s]``,
    then skinned as in :func:`skin_points`.

    The blend happens per vertex inside the kernel, so the ``[..., V, 3]``
    blended shapes are never written to memory.

    Args:
        skeleton_state: ``[..., J, 8]``.
        inverse_bind_pose: ``[J, 4, 4]``.
        rest_points: ``[V, 3]``.
        blend_shapes: ``[S, V, 3]`` vertex offsets (``S`` may be 0).
        blend_weights: ``[..., S]`` with the batch dims of ``skeleton_state``.
        skin_indices, skin_weights: ``[V, K]`` as in :func:`skin_points`.

    Returns:
        ``[..., V, 3]`` skinned points.

    Differentiable with respect to ``skeleton_state``, ``rest_points``,
    ``blend_shapes``, ``blend_weights`` and ``skin_weights``.
    """
    where = "skin_blended_points"
    for name, value in (("skeleton_state", skeleton_state), ("inverse_bind_pose", inverse_bind_pose),
                        ("rest_points", rest_points), ("blend_shapes", blend_shapes),
                        ("blend_weights", blend_weights), ("skin_weights", skin_weights)):
        _checks.tensor(value, name, where)
    skin_indices = _checks.index_tensor(skin_indices, "skin_indices", where)
    return _ops.skin_blended_points(skeleton_state, inverse_bind_pose, rest_points, blend_shapes, blend_weights,
                                    skin_indices, skin_weights)


def _check_fake_devices(op, skeleton_state, others, skin_indices):
    _checks.same_device(op, "skeleton_state", skeleton_state, others, {})
    _checks.same_device(op, "skeleton_state", skeleton_state, {"skin_indices": skin_indices})


@torch.library.register_fake("momentum::skin_points")
def _skin_fake(skeleton_state, inverse_bind_pose, rest_points, skin_indices, skin_weights):
    # Shape checks happen in the kernels: a check here would add guards (see fk.py).
    torch._check(skeleton_state.dim() >= 2, lambda: "skeleton_state must have shape [..., J, 8]")
    torch._check(rest_points.dim() >= 2, lambda: "rest_points must have shape [V, 3] or [..., V, 3]")
    _check_fake_devices("skin_points", skeleton_state, {"inverse_bind_pose": inverse_bind_pose,
                                                        "rest_points": rest_points, "skin_weights": skin_weights},
                        skin_indices)
    return skeleton_state.new_empty((*skeleton_state.shape[:-2], rest_points.shape[-2], 3))


@torch.library.register_fake("momentum::skin_points_backward")
def _skin_backward_fake(grad_points, skeleton_state, inverse_bind_pose, rest_points, skin_indices, skin_weights):
    _check_fake_devices("skin_points_backward", skeleton_state,
                        {"grad_points": grad_points, "inverse_bind_pose": inverse_bind_pose,
                         "rest_points": rest_points, "skin_weights": skin_weights}, skin_indices)
    return (
        skeleton_state.new_empty(skeleton_state.shape),
        rest_points.new_empty(rest_points.shape),
        skin_weights.new_empty(skin_weights.shape),
    )


def _skin_setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _skin_backward(ctx, grad_points):
    skeleton_state, inverse_bind_pose, rest_points, skin_indices, skin_weights = ctx.saved_tensors
    grad_state, grad_rest, grad_weights = _ops.skin_points_backward(
        grad_points, skeleton_state, inverse_bind_pose, rest_points, skin_indices, skin_weights
    )
    needs = ctx.needs_input_grad
    return (
        grad_state if needs[0] else None,
        None,
        grad_rest if needs[2] else None,
        None,
        grad_weights if needs[4] else None,
    )


_checks.register_autograd("skin_points", _skin_backward, _skin_setup_context, forward_ad=_reference.skin_points)


# The backward op's own derivative (second derivatives of skinning), through
# the pure-PyTorch skinning.
def _skin_double_backward(ctx, grad_grad_state, grad_grad_rest, grad_grad_weights):
    grad_points, state, ibp, rest, indices, weights = ctx.saved_tensors
    with torch.enable_grad():
        leaves = [x.detach().requires_grad_() for x in (grad_points, state, rest, weights)]
        outputs = _reference.skin_backward(leaves[0], leaves[1], ibp, leaves[2], indices, leaves[3])
        cotangents = [g if g is not None else torch.zeros_like(o) for g, o in
                      zip((grad_grad_state, grad_grad_rest, grad_grad_weights), outputs)]
        grads = torch.autograd.grad(outputs, leaves, cotangents, allow_unused=True)
    needs = ctx.needs_input_grad
    return (grads[0] if needs[0] else None, grads[1] if needs[1] else None, None,
            grads[2] if needs[3] else None, None, grads[3] if needs[5] else None)


_checks.register_autograd("skin_points_backward", _skin_double_backward, _skin_setup_context,
                          forward_ad=_reference.skin_backward)


# ------------------------------------------------------------ blended points
@torch.library.register_fake("momentum::skin_blended_points")
def _blended_fake(skeleton_state, inverse_bind_pose, rest_points, blend_shapes, blend_weights, skin_indices,
                  skin_weights):
    torch._check(skeleton_state.dim() >= 2, lambda: "skeleton_state must have shape [..., J, 8]")
    torch._check(rest_points.dim() == 2, lambda: "rest_points must have shape [V, 3]")
    _check_fake_devices("skin_blended_points", skeleton_state,
                        {"inverse_bind_pose": inverse_bind_pose, "rest_points": rest_points,
                         "blend_shapes": blend_shapes, "blend_weights": blend_weights,
                         "skin_weights": skin_weights}, skin_indices)
    return skeleton_state.new_empty((*skeleton_state.shape[:-2], rest_points.shape[-2], 3))


@torch.library.register_fake("momentum::skin_blended_points_backward")
def _blended_backward_fake(grad_points, skeleton_state, inverse_bind_pose, rest_points, blend_shapes,
                           blend_weights, skin_indices, skin_weights):
    _check_fake_devices("skin_blended_points_backward", skeleton_state,
                        {"grad_points": grad_points, "inverse_bind_pose": inverse_bind_pose,
                         "rest_points": rest_points, "blend_shapes": blend_shapes, "blend_weights": blend_weights,
                         "skin_weights": skin_weights}, skin_indices)
    return (
        skeleton_state.new_empty(skeleton_state.shape),
        grad_points.new_empty(grad_points.shape),
        skin_weights.new_empty(skin_weights.shape),
    )


def _blend_gradients(grad_blended, blend_shapes, blend_weights, needs):
    """The gradient of the blended points [..., V, 3] taken on to the rest
    points, the blend shapes and the blend weights (matrix products)."""
    batch = grad_blended.shape[:-2]
    flat = grad_blended.reshape(-1, grad_blended.shape[-2] * 3)  # [B, 3V]
    shapes = blend_shapes.reshape(blend_shapes.shape[0], -1)  # [S, 3V]
    grad_rest = flat.sum(0).reshape(grad_blended.shape[-2:]) if needs[0] else None
    grad_shapes = (blend_weights.reshape(-1, shapes.shape[0]).t() @ flat).reshape(blend_shapes.shape) \
        if needs[1] else None
    grad_weights = (flat @ shapes.t()).reshape(*batch, shapes.shape[0]) if needs[2] else None
    return grad_rest, grad_shapes, grad_weights


def _blended_backward(ctx, grad_points):
    state, ibp, rest, shapes, blend_weights, skin_indices, skin_weights = ctx.saved_tensors
    grad_state, grad_blended, grad_skin_weights = _ops.skin_blended_points_backward(
        grad_points, state, ibp, rest, shapes, blend_weights, skin_indices, skin_weights)
    needs = ctx.needs_input_grad
    grad_rest, grad_shapes, grad_blend_weights = _blend_gradients(grad_blended, shapes, blend_weights,
                                                                  (needs[2], needs[3], needs[4]))
    return (grad_state if needs[0] else None, None, grad_rest, grad_shapes, grad_blend_weights, None,
            grad_skin_weights if needs[6] else None)


_checks.register_autograd("skin_blended_points", _blended_backward, _skin_setup_context,
                          forward_ad=_reference.skin_blended_points)


def _blended_double_backward(ctx, grad_grad_state, grad_grad_blended, grad_grad_weights):
    grad_points, state, ibp, rest, shapes, blend_weights, indices, skin_weights = ctx.saved_tensors
    with torch.enable_grad():
        leaves = [x.detach().requires_grad_() for x in (grad_points, state, rest, shapes, blend_weights,
                                                         skin_weights)]
        outputs = _reference.skin_blended_backward(leaves[0], leaves[1], ibp, leaves[2], leaves[3], leaves[4],
                                                   indices, leaves[5])
        cotangents = [g if g is not None else torch.zeros_like(o) for g, o in
                      zip((grad_grad_state, grad_grad_blended, grad_grad_weights), outputs)]
        grads = torch.autograd.grad(outputs, leaves, cotangents, allow_unused=True)
    needs = ctx.needs_input_grad
    picked = [grads[i] if needs[n] else None for i, n in zip(range(6), (0, 1, 3, 4, 5, 7))]
    return (picked[0], picked[1], None, picked[2], picked[3], picked[4], None, picked[5])


_checks.register_autograd("skin_blended_points_backward", _blended_double_backward, _skin_setup_context,
                          forward_ad=_reference.skin_blended_backward)
