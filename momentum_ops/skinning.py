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
