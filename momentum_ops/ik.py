"""Inverse kinematics: a batched Levenberg-Marquardt solver as one op, its
implicit-function backward, and the residual/Jacobian building block.

``solve_ik`` minimises, per problem, over the active model parameters::

    E = sum_c w_c |p_c - target_c|^2 + sum_o w_o |R_o - R_target_o|_F^2
      + limit_weight * sum_p limit_p^2 + sum_p w_reg_p (theta_p - ref_p)^2

(docs/conventions.md, Inverse kinematics). All iterations run inside one op call;
on a GPU there is no host synchronisation per iteration. The solution is
differentiable with respect to the targets, the constraint weights and the
regularisation reference, by the implicit function theorem with the exact
Hessian of E at the solution (Gauss-Newton plus the residuals times their
second derivatives), damped as ``H + mu diag(|H|)`` with ``mu`` starting at
1e-10 (float64) or 1e-6 (float32) and raised while the factorisation fails
(an indefinite H is damped, not projected).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from . import _checks

_ops = torch.ops.momentum
# The largest max_iterations the op takes (it counts in int32).
MAX_ITERATIONS = 2 ** 31 - 1


class IKResult(NamedTuple):
    model_parameters: torch.Tensor  # [..., P]
    iterations: torch.Tensor  # [...] int32: Jacobian evaluations taken
    error: torch.Tensor  # [...] final energy E; NaN where the inputs gave a non-finite energy


def _index(t, name, where, device="cpu"):
    t = _checks.index_tensor(t, name, where, device=device)
    if t.dim() != 1:
        raise ValueError(f"{where}: {name} must be a 1-D tensor of joint indices, got shape {list(t.shape)}")
    return t


def _floating(value, name, where, dtype, device):
    """A floating argument in the call's dtype and device; None and
    non-numeric values are refused with the argument's name."""
    if value is None:
        raise ValueError(f"{where}: {name} must be a tensor, got None")
    try:
        t = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as error:
        raise ValueError(f"{where}: {name} must be a tensor of numbers: {error}") from None
    if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
        raise ValueError(f"{where}: {name} must hold real numbers, got {t.dtype}")
    if isinstance(value, torch.Tensor) and value.device != torch.device(device) and value.device.type != "cpu":
        raise ValueError(f"{where}: {name} is on {value.device} but the call is on {device}")
    return t.to(dtype=dtype, device=device)


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
    where = "solve_ik"
    values = character.transform_values
    P = character.num_parameters
    init = _checks.tensor(model_parameters_init, "model_parameters_init", where)
    if init.dim() < 1 or init.shape[-1] != P:
        raise ValueError(f"{where}: model_parameters_init must have shape [..., P] with P = {P} (the character's "
                         f"parameters), got {list(init.shape)}")
    if init.dtype != values.dtype or init.device != values.device:
        raise ValueError(
            f"{where}: model_parameters_init is {init.dtype} on {init.device} but the character is "
            f"{values.dtype} on {values.device}"
        )
    dtype, device = init.dtype, init.device
    max_iterations = _checks.integer_option(max_iterations, "max_iterations", where, 0, MAX_ITERATIONS)
    limit_weight = _checks.finite_option(limit_weight, "limit_weight", where)
    damping = _checks.finite_option(damping, "damping", where, strict=True)
    if tolerance is None:
        tolerance = 1e-12 if dtype == torch.float64 else 1e-6
    tolerance = _checks.finite_option(tolerance, "tolerance", where)

    def constraints(joints, offsets, targets, weights, width, kind):
        if joints is None:
            if targets is not None:
                raise ValueError(f"{where}: {kind}_targets given without {kind}_joints")
            joints = torch.zeros(0, dtype=torch.int64)
        joints = _index(joints, f"{kind}_joints", where, character.parents.device)
        count = joints.shape[0]
        if offsets is None:
            offsets = torch.zeros(count, width, dtype=dtype, device=device)
            if width == 4:
                offsets[:, 3] = 1
        offsets = _floating(offsets, f"{kind}_offsets", where, dtype, device)
        if offsets.shape != (count, width):
            raise ValueError(f"{where}: {kind}_offsets must have shape [{count}, {width}] (one per {kind} joint), "
                             f"got {list(offsets.shape)}")
        if targets is None:
            if count:
                raise ValueError(f"{where}: {kind}_targets are needed for the {count} {kind} constraints")
            targets = torch.zeros(count, width, dtype=dtype, device=device)
        targets = _floating(targets, f"{kind}_targets", where, dtype, device)
        if targets.dim() < 2 or targets.shape[-2:] != (count, width):
            raise ValueError(f"{where}: {kind}_targets must have shape [..., {count}, {width}], "
                             f"got {list(targets.shape)}")
        if weights is None:
            weights = torch.ones(count, dtype=dtype, device=device)
        weights = _floating(weights, f"{kind}_weights", where, dtype, device)
        if weights.dim() < 1 or weights.shape[-1] != count:
            raise ValueError(f"{where}: {kind}_weights must have shape [..., {count}] or [{count}], "
                             f"got {list(weights.shape)}")
        return joints, offsets, targets, weights

    pj, po, pt, pw = constraints(position_joints, position_offsets, position_targets, position_weights, 3, "position")
    oj, oo, ot, ow = constraints(orientation_joints, orientation_offsets, orientation_targets, orientation_weights, 4, "orientation")
    if regularization_target is None:
        regularization_target = init.detach()
    regularization_target = _floating(regularization_target, "regularization_target", where, dtype, device)
    if regularization_target.dim() < 1 or regularization_target.shape[-1] != P:
        raise ValueError(f"{where}: regularization_target must have shape [..., {P}], "
                         f"got {list(regularization_target.shape)}")
    if regularization_weight is None:
        regularization_weight = torch.zeros(P, dtype=dtype, device=device)
    regularization_weight = _floating(regularization_weight, "regularization_weight", where, dtype, device)
    if regularization_weight.shape != (P,):
        raise ValueError(f"{where}: regularization_weight must have shape [{P}], "
                         f"got {list(regularization_weight.shape)}")
    if active_parameters is None:
        active_parameters = torch.ones(P, dtype=torch.bool)
    active_parameters = torch.as_tensor(active_parameters)
    if active_parameters.dtype != torch.bool or active_parameters.shape != (P,):
        raise ValueError(f"{where}: active_parameters must be a bool tensor of shape [{P}], got "
                         f"{active_parameters.dtype} {list(active_parameters.shape)}")

    try:
        batch = torch.broadcast_shapes(
            init.shape[:-1], pt.shape[:-2], pw.shape[:-1], ot.shape[:-2], ow.shape[:-1],
            regularization_target.shape[:-1],
        )
    except RuntimeError as error:
        raise ValueError(f"{where}: the batch dims of the per-problem arguments do not broadcast: {error}") from None
    C, Co = pj.shape[0], oj.shape[0]
    init = init.expand(*batch, P)
    regularization_target = regularization_target.expand(*batch, P)
    pmin, pmax = character.parameter_min, character.parameter_max
    index, values = character.transform_index, character.transform_values
    if character.has_joint_parameter_offsets:
        # transform @ theta + offsets = [transform | offsets] @ [theta; 1], the
        # last parameter held at 1 (inactive), so the kernels see a plain transform.
        index, values, init, regularization_target, regularization_weight, pmin, pmax, active_parameters = \
            _with_offset_parameter(character, init, regularization_target, regularization_weight, active_parameters)
    solution, iterations, error = _ops.ik_solve(
        init, character.parents, character.offsets, character.pre_rotations, index[0], index[1], values,
        pmin, pmax, active_parameters,
        pj, po, pt.expand(*batch, C, 3), pw.expand(*batch, C),
        oj, oo, ot.expand(*batch, Co, 4), ow.expand(*batch, Co),
        limit_weight, regularization_target, regularization_weight,
        max_iterations, tolerance, damping,
    )
    return IKResult(solution[..., :P], iterations, error)


def _with_offset_parameter(character, init, regularization_target, regularization_weight, active_parameters):
    """The problem with one more model parameter, constant 1, whose transform
    column is the character's joint_parameter_offsets."""
    index, values = _offset_column(character)

    def append(x, value):
        return torch.cat([x, torch.full((*x.shape[:-1], 1), value, dtype=x.dtype, device=x.device)], dim=-1)

    return (index, values, append(init, 1.0), append(regularization_target, 1.0), append(regularization_weight, 0.0),
            append(character.parameter_min, float("-inf")), append(character.parameter_max, float("inf")),
            append(active_parameters, False))


def _offset_column(character):
    """The transform's entries with one more column, P, holding every joint
    parameter's offset (zeros included: finding the nonzero ones would
    synchronise with the device)."""
    offsets = character.joint_parameter_offsets
    rows = torch.arange(offsets.shape[0], dtype=torch.int64)
    column = torch.stack([rows, torch.full_like(rows, character.num_parameters)])
    return (torch.cat([character.transform_index, column], dim=1),
            torch.cat([character.transform_values, offsets]))


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
    where = "position_residuals_and_jacobian"
    _checks.tensor(model_parameters, "model_parameters", where)
    _checks.tensor(position_offsets, "position_offsets", where)
    _checks.tensor(position_targets, "position_targets", where)
    index, values = character.transform_index, character.transform_values
    P = character.num_parameters
    if character.has_joint_parameter_offsets and model_parameters.dim() >= 1 and model_parameters.shape[-1] == P:
        index, values = _offset_column(character)
        ones = torch.ones((*model_parameters.shape[:-1], 1), dtype=model_parameters.dtype,
                          device=model_parameters.device)
        model_parameters = torch.cat([model_parameters, ones], dim=-1)
    residuals, jacobian = _ops.position_residuals_and_jacobian(
        model_parameters, character.parents, character.offsets, character.pre_rotations,
        index[0], index[1], values, _index(position_joints, "position_joints", where, character.parents.device),
        position_offsets, position_targets,
    )
    return residuals, jacobian[..., :P]


# ---------------------------------------------------------------- fake kernels
# The ops' inputs by name (the schemas in csrc/ik/ik.cpp), so that the fake
# kernels and the autograd formulas read them by name, not by position.
_IK_SOLVE_INPUTS = (
    "model_parameters", "parents", "offsets", "pre_rotations", "transform_rows", "transform_columns",
    "transform_values", "parameter_min", "parameter_max", "active_parameters", "position_joints",
    "position_offsets", "position_targets", "position_weights", "orientation_joints", "orientation_offsets",
    "orientation_targets", "orientation_weights", "limit_weight", "regularization_target",
    "regularization_weight", "max_iterations", "tolerance", "damping")
# ik_solve_backward takes (grad_model_parameters, solution) and then these.
_IK_MODEL_INPUTS = _IK_SOLVE_INPUTS[1:-3]
_IK_BACKWARD_INPUTS = ("grad_model_parameters", "solution") + _IK_MODEL_INPUTS
_RESIDUAL_INPUTS = ("model_parameters", "parents", "offsets", "pre_rotations", "transform_rows",
                    "transform_columns", "transform_values", "position_joints", "position_offsets",
                    "position_targets")
# The index tensors: on the CPU or the call's device, not of its dtype.
_IK_INDEX = ("parents", "transform_rows", "transform_columns", "active_parameters", "position_joints",
             "orientation_joints")
_SCALARS = ("limit_weight", "max_iterations", "tolerance", "damping")


def _check_fake_ik(op, named, reference_name):
    tensors = {k: v for k, v in named.items() if k not in _SCALARS and k != reference_name}
    floating = {k: v for k, v in tensors.items() if k not in _IK_INDEX}
    index = {k: v for k, v in tensors.items() if k in _IK_INDEX}
    _checks.same_device(op, reference_name, named[reference_name], floating, index)


@torch.library.register_fake("momentum::ik_solve")
def _ik_fake(*inputs):
    named = dict(zip(_IK_SOLVE_INPUTS, inputs))
    _check_fake_ik("ik_solve", named, "model_parameters")
    model_parameters = named["model_parameters"]
    batch = model_parameters.shape[:-1]
    return (
        model_parameters.new_empty(model_parameters.shape),
        model_parameters.new_empty(batch, dtype=torch.int32),
        model_parameters.new_empty(batch),
    )


@torch.library.register_fake("momentum::ik_solve_backward")
def _ik_backward_fake(*inputs):
    named = dict(zip(_IK_BACKWARD_INPUTS, inputs))
    _check_fake_ik("ik_solve_backward", named, "solution")
    return tuple(named[name].new_empty(named[name].shape) for name in _IK_GRADIENTS)


@torch.library.register_fake("momentum::position_residuals_and_jacobian")
def _residuals_fake(*inputs):
    named = dict(zip(_RESIDUAL_INPUTS, inputs))
    _check_fake_ik("position_residuals_and_jacobian", named, "model_parameters")
    model_parameters = named["model_parameters"]
    batch = model_parameters.shape[:-1]
    C = named["position_joints"].shape[0]
    return (model_parameters.new_empty((*batch, C, 3)),
            model_parameters.new_empty((*batch, C * 3, model_parameters.shape[-1])))


# -------------------------------------------------------------------- autograd
# ik_solve_backward's outputs, in order: the gradients of these inputs.
_IK_GRADIENTS = ("position_targets", "position_weights", "orientation_targets", "orientation_weights",
                 "regularization_target")


def _ik_setup_context(ctx, inputs, output):
    solution, iterations, error = output
    ctx.mark_non_differentiable(iterations, error)
    named = dict(zip(_IK_SOLVE_INPUTS, inputs))
    ctx.limit_weight = named["limit_weight"]
    ctx.save_for_backward(solution, *(named[name] for name in _IK_MODEL_INPUTS if name != "limit_weight"))


def _ik_backward(ctx, grad_solution, grad_iterations, grad_error):
    solution, *saved = ctx.saved_tensors
    result = [None] * len(_IK_SOLVE_INPUTS)
    if grad_solution is None:
        return tuple(result)
    named = dict(zip((name for name in _IK_MODEL_INPUTS if name != "limit_weight"), saved))
    named["limit_weight"] = ctx.limit_weight
    grads = _ops.ik_solve_backward(grad_solution, solution, *(named[name] for name in _IK_MODEL_INPUTS))
    for name, grad in zip(_IK_GRADIENTS, grads):
        position = _IK_SOLVE_INPUTS.index(name)
        if ctx.needs_input_grad[position]:
            result[position] = grad
    return tuple(result)


_checks.register_autograd("ik_solve", _ik_backward, _ik_setup_context)
_checks.register_autograd("ik_solve_backward", _checks.unsupported_backward("momentum::ik_solve_backward"),
                          _checks.no_context)


# Residuals: d/dtheta through the Jacobian the op returns, d/dtarget = -1.
# The Jacobian output itself and the skeleton inputs get no gradient: asking
# for one raises instead of giving zeros.
def _residuals_setup_context(ctx, inputs, output):
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(output[1])


def _residuals_backward(ctx, grad_residuals, grad_jacobian):
    (jacobian,) = ctx.saved_tensors
    if grad_jacobian is not None:
        raise RuntimeError("position_residuals_and_jacobian: its jacobian output is not differentiable "
                           "(second derivatives are not implemented); detach it")
    needs = dict(zip(_RESIDUAL_INPUTS, ctx.needs_input_grad))
    unsupported = [name for name, needed in needs.items()
                   if needed and name not in ("model_parameters", "position_targets")]
    if unsupported:
        raise RuntimeError(f"position_residuals_and_jacobian: no gradient with respect to {unsupported}; "
                           "gradients reach model_parameters and position_targets only")
    grads = dict.fromkeys(_RESIDUAL_INPUTS)
    if grad_residuals is not None:
        flat = grad_residuals.flatten(-2).unsqueeze(-2)  # [..., 1, 3C]
        if needs["model_parameters"]:
            grads["model_parameters"] = (flat @ jacobian).squeeze(-2)
        if needs["position_targets"]:
            grads["position_targets"] = -grad_residuals
    return tuple(grads[name] for name in _RESIDUAL_INPUTS)


_checks.register_autograd("position_residuals_and_jacobian", _residuals_backward, _residuals_setup_context)
