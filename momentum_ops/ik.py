"""Inverse kinematics: a batched Levenberg-Marquardt solver as one op, its
implicit-function backward, and the residual/Jacobian building block.

``solve_ik`` minimises, per problem, over the active model parameters::

    E = sum_c w_c |p_c - target_c|^2 + sum_o w_o |R_o - R_target_o|_F^2
      + limit_weight * sum_p limit_p^2 + sum_p w_reg_p (theta_p - ref_p)^2

(CONVENTIONS.md, Inverse kinematics). All iterations run inside one op call;
on a GPU there is no host synchronisation per iteration. The solution is
differentiable with respect to the targets, the constraint weights and the
regularisation reference, by the implicit function theorem with the
Gauss-Newton Hessian ``H = J^T W J`` (exact where the residuals vanish), damped
as ``H + mu diag(H)`` with ``mu`` starting at 1e-10 (float64) or 1e-6
(float32) and raised while the factorisation fails (a singular H is damped,
not projected).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch

_ops = torch.ops.momentum


class IKResult(NamedTuple):
    model_parameters: torch.Tensor  # [..., P]
    iterations: torch.Tensor  # [...] int32: Jacobian evaluations taken
    error: torch.Tensor  # [...] final energy E; NaN where the inputs gave a non-finite energy


def _index(t, name, device="cpu"):
    t = torch.as_tensor(t, device=device)
    if t.dtype not in (torch.int32, torch.int64) or t.dim() != 1:
        raise ValueError(f"{name} must be a 1-D int32/int64 tensor of joint indices, got {t.dtype} {list(t.shape)}")
    return t


def solve_ik(
    character,
    model_parameters_init: torch.Tensor,
    *,
    position_joints: Optional[torch.Tensor] = None,
    position_offsets: Optional[torch.Tensor] = None,
    position_targets: Optional[torch.Tensor] = None,
    position_weights: Optional[torch.Tensor] = None,
    orientation_joints: Optional[torch.Tensor] = None,
    orientation_offsets: Optional[torch.Tensor] = None,
    orientation_targets: Optional[torch.Tensor] = None,
    orientation_weights: Optional[torch.Tensor] = None,
    limit_weight: float = 0.0,
    regularization_target: Optional[torch.Tensor] = None,
    regularization_weight: Optional[torch.Tensor] = None,
    active_parameters: Optional[torch.Tensor] = None,
    max_iterations: int = 20,
    tolerance: Optional[float] = None,
    damping: float = 1e-3,
) -> IKResult:
    """Solves a batch of IK problems for `character` from `model_parameters_init` ``[..., P]``.

    Args (C position constraints, Co orientation constraints; ``...`` are the
    batch dims, which every per-problem argument may broadcast to):
        position_joints: ``[C]`` joint of each position constraint.
        position_offsets: ``[C, 3]`` the point in the joint's frame (default 0).
        position_targets: ``[..., C, 3]`` world targets.
        position_weights: ``[..., C]`` or ``[C]`` (default 1).
        orientation_joints: ``[Co]``.
        orientation_offsets: ``[Co, 4]`` xyzw rotation after the joint's (default identity).
        orientation_targets: ``[..., Co, 4]`` unit quaternions, xyzw.
        orientation_weights: ``[..., Co]`` or ``[Co]`` (default 1).
        limit_weight: weight of the character's parameter limits (0: off).
        regularization_target: ``[..., P]`` (default: the initial parameters).
        regularization_weight: ``[P]`` (default 0: off).
        active_parameters: ``[P]`` bool; the others stay at their initial value
            (default: all). Keep it on the CPU (it is read on the host).
        max_iterations: per problem; tolerance: stop on a relative decrease of
            E below it (default 1e-12 in float64, 1e-6 in float32); damping:
            the initial Levenberg-Marquardt damping (relative to diag(H)).

    Returns:
        IKResult(model_parameters, iterations, error).
    """
    init = torch.as_tensor(model_parameters_init)
    transform = character.parameter_transform
    P = transform.shape[1]
    if init.dim() < 1 or init.shape[-1] != P:
        raise ValueError(f"model_parameters_init must have shape [..., P] with P = {P}, got {list(init.shape)}")
    if init.dtype != transform.dtype or init.device != transform.device:
        raise ValueError(
            f"model_parameters_init is {init.dtype} on {init.device} but the character is "
            f"{transform.dtype} on {transform.device}"
        )
    dtype, device = init.dtype, init.device

    def constraints(joints, offsets, targets, weights, width, kind):
        if joints is None:
            if targets is not None:
                raise ValueError(f"{kind}_targets given without {kind}_joints")
            joints = torch.zeros(0, dtype=torch.int64)
        joints = _index(joints, f"{kind}_joints", character.parents.device)
        count = joints.shape[0]
        if offsets is None:
            offsets = torch.zeros(count, width, dtype=dtype, device=device)
            if width == 4:
                offsets[:, 3] = 1
        offsets = torch.as_tensor(offsets, dtype=dtype, device=device)
        if offsets.shape != (count, width):
            raise ValueError(f"{kind}_offsets must have shape [{count}, {width}], got {list(offsets.shape)}")
        if targets is None:
            if count:
                raise ValueError(f"{kind}_targets are needed for the {count} {kind} constraints")
            targets = torch.zeros(count, width, dtype=dtype, device=device)
        targets = torch.as_tensor(targets, dtype=dtype, device=device)
        if targets.dim() < 2 or targets.shape[-2:] != (count, width):
            raise ValueError(f"{kind}_targets must have shape [..., {count}, {width}], got {list(targets.shape)}")
        if weights is None:
            weights = torch.ones(count, dtype=dtype, device=device)
        weights = torch.as_tensor(weights, dtype=dtype, device=device)
        if weights.dim() < 1 or weights.shape[-1] != count:
            raise ValueError(f"{kind}_weights must have shape [..., {count}] or [{count}], got {list(weights.shape)}")
        return joints, offsets, targets, weights

    pj, po, pt, pw = constraints(position_joints, position_offsets, position_targets, position_weights, 3, "position")
    oj, oo, ot, ow = constraints(orientation_joints, orientation_offsets, orientation_targets, orientation_weights, 4, "orientation")
    if regularization_target is None:
        regularization_target = init.detach()
    regularization_target = torch.as_tensor(regularization_target, dtype=dtype, device=device)
    if regularization_target.dim() < 1 or regularization_target.shape[-1] != P:
        raise ValueError(f"regularization_target must have shape [..., {P}], got {list(regularization_target.shape)}")
    if regularization_weight is None:
        regularization_weight = torch.zeros(P, dtype=dtype, device=device)
    regularization_weight = torch.as_tensor(regularization_weight, dtype=dtype, device=device)
    if regularization_weight.shape != (P,):
        raise ValueError(f"regularization_weight must have shape [{P}], got {list(regularization_weight.shape)}")
    if active_parameters is None:
        active_parameters = torch.ones(P, dtype=torch.bool)
    active_parameters = torch.as_tensor(active_parameters)
    if active_parameters.dtype != torch.bool or active_parameters.shape != (P,):
        raise ValueError(f"active_parameters must be a bool tensor of shape [{P}], got "
                         f"{active_parameters.dtype} {list(active_parameters.shape)}")
    if tolerance is None:
        tolerance = 1e-12 if dtype == torch.float64 else 1e-6

    try:
        batch = torch.broadcast_shapes(
            init.shape[:-1], pt.shape[:-2], pw.shape[:-1], ot.shape[:-2], ow.shape[:-1],
            regularization_target.shape[:-1],
        )
    except RuntimeError as error:
        raise ValueError(f"the batch dims of the per-problem arguments do not broadcast: {error}") from None
    C, Co = pj.shape[0], oj.shape[0]
    solution, iterations, error = _ops.ik_solve(
        init.expand(*batch, P), character.parents, character.offsets, character.pre_rotations, transform,
        character.parameter_min, character.parameter_max, active_parameters,
        pj, po, pt.expand(*batch, C, 3), pw.expand(*batch, C),
        oj, oo, ot.expand(*batch, Co, 4), ow.expand(*batch, Co),
        float(limit_weight), regularization_target.expand(*batch, P), regularization_weight,
        int(max_iterations), float(tolerance), float(damping),
    )
    return IKResult(solution, iterations, error)


def position_residuals_and_jacobian(
    character,
    model_parameters: torch.Tensor,
    position_joints: torch.Tensor,
    position_offsets: torch.Tensor,
    position_targets: torch.Tensor,
):
    """Residuals ``p_c - target_c`` ``[..., C, 3]`` and their Jacobian with
    respect to the model parameters ``[..., C*3, P]`` (rows constraint-major),
    from the same kernels the solver uses, to build other solvers on."""
    return _ops.position_residuals_and_jacobian(
        model_parameters, character.parents, character.offsets, character.pre_rotations,
        character.parameter_transform, _index(position_joints, "position_joints", character.parents.device),
        position_offsets, position_targets,
    )


# ---------------------------------------------------------------- fake kernels
@torch.library.register_fake("momentum::ik_solve")
def _ik_fake(model_parameters, *args):
    batch = model_parameters.shape[:-1]
    return (
        model_parameters.new_empty(model_parameters.shape),
        model_parameters.new_empty(batch, dtype=torch.int32),
        model_parameters.new_empty(batch),
    )


@torch.library.register_fake("momentum::ik_solve_backward")
def _ik_backward_fake(grad, solution, parents, offsets, pre_rotations, transform, pmin, pmax, active,
                      pj, po, pt, pw, oj, oo, ot, ow, limit_weight, rt, rw):
    return (pt.new_empty(pt.shape), pw.new_empty(pw.shape), ot.new_empty(ot.shape), ow.new_empty(ow.shape),
            rt.new_empty(rt.shape))


@torch.library.register_fake("momentum::position_residuals_and_jacobian")
def _residuals_fake(model_parameters, parents, offsets, pre_rotations, transform, joints, position_offsets, targets):
    batch = model_parameters.shape[:-1]
    C = joints.shape[0]
    return (model_parameters.new_empty((*batch, C, 3)),
            model_parameters.new_empty((*batch, C * 3, model_parameters.shape[-1])))


# -------------------------------------------------------------------- autograd
# Inputs: 0 model_parameters, 1 parents, 2 offsets, 3 pre_rotations,
# 4 parameter_transform, 5 parameter_min, 6 parameter_max, 7 active_parameters,
# 8 position_joints, 9 position_offsets, 10 position_targets, 11 position_weights,
# 12 orientation_joints, 13 orientation_offsets, 14 orientation_targets,
# 15 orientation_weights, 16 limit_weight, 17 regularization_target,
# 18 regularization_weight, 19 max_iterations, 20 tolerance, 21 damping.
_DIFFERENTIABLE = {10: 0, 11: 1, 14: 2, 15: 3, 17: 4}


def _ik_setup_context(ctx, inputs, output):
    solution, iterations, error = output
    ctx.mark_non_differentiable(iterations, error)
    tensors = [inputs[i] for i in range(1, 19) if i != 16]
    ctx.limit_weight = inputs[16]
    ctx.save_for_backward(solution, *tensors)


def _ik_backward(ctx, grad_solution, grad_iterations, grad_error):
    solution, *rest = ctx.saved_tensors
    (parents, offsets, pre_rotations, transform, pmin, pmax, active, pj, po, pt, pw, oj, oo, ot, ow, rt, rw) = rest
    if grad_solution is None:
        return (None,) * 22
    grads = _ops.ik_solve_backward(
        grad_solution, solution, parents, offsets, pre_rotations, transform, pmin, pmax, active,
        pj, po, pt, pw, oj, oo, ot, ow, ctx.limit_weight, rt, rw,
    )
    result = [None] * 22
    for index, position in _DIFFERENTIABLE.items():
        if ctx.needs_input_grad[index]:
            result[index] = grads[position]
    return tuple(result)


torch.library.register_autograd("momentum::ik_solve", _ik_backward, setup_context=_ik_setup_context)
