"""Forward kinematics: the op's Python API, its autograd formula and fake kernels.

Conventions (Momentum's): joint parameters are ``(tx, ty, tz, rx, ry, rz, s)``
per joint, angles in radians, ``s`` a log2 scale. A skeleton state is
``(tx, ty, tz, qx, qy, qz, qw, s)`` per joint: the global translation, the
global rotation as a unit quaternion in xyzw order, and the global (not log)
uniform scale. For joint ``j`` with parent ``p``::

    t_local = offsets[j] + (tx, ty, tz)
    q_local = pre_rotations[j] * qz(rz) * qy(ry) * qx(rx)
    s_local = 2 ** s
    t = t_p + s_p * R(q_p) t_local,  q = q_p * q_local,  s = s_p * s_local
"""

from __future__ import annotations

import torch

from . import _checks, quaternion, skel_state
from . import parameter_transform as _transform
from . import _torch_kinematics as _reference

_ops = torch.ops.momentum
_FK = "joint_parameters_to_skeleton_state"


def _as_joint_parameters(joint_parameters: torch.Tensor, joints: int) -> torch.Tensor:
    """Accepts ``[..., J, 7]`` or the flat ``[..., J*7]``; returns ``[..., J, 7]``."""
    shape = joint_parameters.shape
    if len(shape) >= 2 and shape[-1] == 7 and shape[-2] == joints:
        return joint_parameters
    if len(shape) >= 1 and shape[-1] == 7 * joints:
        return joint_parameters.unflatten(-1, (joints, 7))
    raise ValueError(
        f"joint_parameters must have shape [..., J, 7] or [..., J*7] with J = {joints} "
        f"(the length of parents), got {list(shape)}"
    )


def joint_parameters_to_skeleton_state(
    joint_parameters: torch.Tensor,
    parents: torch.Tensor,
    offsets: torch.Tensor,
    pre_rotations: torch.Tensor,
) -> torch.Tensor:
    """Forward kinematics: joint parameters to global joint transforms.

    Args:
        joint_parameters: ``[..., J, 7]`` or ``[..., J*7]``, float32 or float64,
            ``(tx, ty, tz, rx, ry, rz, log2 scale)`` per joint. Any number of
            batch dimensions, including none.
        parents: ``[J]`` int64 or int32, ``-1`` for a root, otherwise an earlier
            joint (``parents[j] < j``). Keep it on the CPU: on a GPU it is
            copied to the host for validation, which synchronises.
        offsets: ``[J, 3]``, each joint's translation in its parent's frame.
        pre_rotations: ``[J, 4]``, each joint's fixed rotation, xyzw; normalised
            where it is used (docs/conventions.md).

    Returns:
        Skeleton state ``[..., J, 8]``: ``(tx, ty, tz, qx, qy, qz, qw, s)``.

    Differentiable with respect to ``joint_parameters`` and ``offsets``
    (reverse mode by the backward kernel; forward mode and the double
    backward through a pure-PyTorch form); ``pre_rotations`` gets no gradient
    (it is a fixed part of the skeleton).
    """
    parents = _checks.index_tensor(parents, "parents", _FK)
    jp = _as_joint_parameters(_checks.tensor(joint_parameters, "joint_parameters", _FK), parents.shape[0])
    return _ops.joint_parameters_to_skeleton_state(jp, parents, offsets, pre_rotations)


def model_parameters_to_joint_parameters(
    model_parameters: torch.Tensor, parameter_transform: torch.Tensor
) -> torch.Tensor:
    """Joint parameters from model parameters: ``parameter_transform @ model_parameters``.

    Args:
        model_parameters: ``[..., P]``.
        parameter_transform: ``[J*7, P]``, rows joint-major (joint 0's seven
            parameters first); dense, or a sparse COO/CSR/CSC tensor (then
            applied entry by entry, memory linear in its nonzeros; see
            ``momentum_ops.parameter_transform``).

    Returns:
        Joint parameters ``[..., J*7]`` (flat, as Momentum returns them;
        ``joint_parameters_to_skeleton_state`` takes this layout as is).
        Differentiable in both arguments (for a sparse transform, in its values).
    """
    where = "model_parameters_to_joint_parameters"
    _checks.tensor(model_parameters, "model_parameters", where)
    _checks.tensor(parameter_transform, "parameter_transform", where)
    if parameter_transform.dim() != 2 or parameter_transform.shape[0] % 7 != 0:
        raise ValueError(
            f"parameter_transform must have shape [J*7, P], got {list(parameter_transform.shape)}"
        )
    if model_parameters.dim() < 1 or model_parameters.shape[-1] != parameter_transform.shape[1]:
        raise ValueError(
            f"model_parameters must have shape [..., P] with P = {parameter_transform.shape[1]} "
            f"(the columns of parameter_transform), got {list(model_parameters.shape)}"
        )
    if model_parameters.dtype != parameter_transform.dtype:
        raise ValueError(
            f"model_parameters is {model_parameters.dtype} but parameter_transform is "
            f"{parameter_transform.dtype}; they must share one dtype"
        )
    if model_parameters.device != parameter_transform.device:
        raise ValueError(
            f"model_parameters is on {model_parameters.device} but parameter_transform is on "
            f"{parameter_transform.device}"
        )
    if parameter_transform.layout != torch.strided:
        index, values = _transform.entries(parameter_transform, parameter_transform.shape[0] // 7, where)
        return _transform.apply(model_parameters, index.to(model_parameters.device), values,
                                parameter_transform.shape[0])
    return torch.matmul(model_parameters, parameter_transform.transpose(0, 1))


def _check_skeleton(where, joint_parameters_or_state, width, name, offsets, pre_rotations):
    _checks.tensor(joint_parameters_or_state, name, where)
    _checks.tensor(offsets, "offsets", where)
    _checks.tensor(pre_rotations, "pre_rotations", where)
    J = offsets.shape[0] if offsets.dim() == 2 else -1
    if offsets.dim() != 2 or offsets.shape[1] != 3:
        raise ValueError(f"{where}: offsets must have shape [J, 3], got {list(offsets.shape)}")
    if tuple(pre_rotations.shape) != (J, 4):
        raise ValueError(f"{where}: pre_rotations must have shape [{J}, 4] (xyzw), got {list(pre_rotations.shape)}")
    x = joint_parameters_or_state
    if x.dim() < 2 or tuple(x.shape[-2:]) != (J, width):
        raise ValueError(f"{where}: {name} must have shape [..., {J}, {width}], got {list(x.shape)}")
    for other, label in ((offsets, "offsets"), (pre_rotations, "pre_rotations")):
        if other.dtype != x.dtype or other.device != x.device:
            raise ValueError(f"{where}: {label} is {other.dtype} on {other.device} but {name} is {x.dtype} on "
                             f"{x.device}")


def joint_parameters_to_local_skeleton_state(
    joint_parameters: torch.Tensor, offsets: torch.Tensor, pre_rotations: torch.Tensor
) -> torch.Tensor:
    """Each joint's transform relative to its parent, ``[..., J, 8]``:
    ``(offset + (tx, ty, tz), q_pre ⊗ qz ⊗ qy ⊗ qx, 2^s)`` (docs/conventions.md).
    Composing them along the parents gives ``joint_parameters_to_skeleton_state``.
    Pure PyTorch, differentiable, any device."""
    where = "joint_parameters_to_local_skeleton_state"
    jp = _checks.tensor(joint_parameters, "joint_parameters", where)
    if offsets is not None and isinstance(offsets, torch.Tensor) and offsets.dim() == 2:
        jp = _as_joint_parameters(jp, offsets.shape[0])
    _check_skeleton(where, jp, 7, "joint_parameters", offsets, pre_rotations)
    t, q, s = _reference.local_transforms(jp, offsets, pre_rotations)
    return torch.cat([t, q, s[..., None]], dim=-1)


def skeleton_state_to_joint_parameters(
    skeleton_state: torch.Tensor, parents: torch.Tensor, offsets: torch.Tensor, pre_rotations: torch.Tensor
) -> torch.Tensor:
    """Inverse FK: the joint parameters ``[..., J, 7]`` whose forward
    kinematics is ``skeleton_state`` ``[..., J, 8]``.

    Per joint, the local transform ``inverse(parent state) ∘ state`` gives
    ``t - offset``, the XYZ Euler angles of ``conj(q_pre) ⊗ q_local`` (``ry``
    in ``[-pi/2, pi/2]``; another Euler triple of the same rotation where FK's
    was outside that range) and ``log2`` of the local scale. For any state FK
    can produce, FK of the result gives the state back (the quaternion up to
    sign). Pure PyTorch, differentiable (away from the Euler singularity
    ``ry = ±pi/2``), any device."""
    where = "skeleton_state_to_joint_parameters"
    parents = _checks.index_tensor(parents, "parents", where)
    _check_skeleton(where, skeleton_state, 8, "skeleton_state", offsets, pre_rotations)
    J = offsets.shape[0]
    if tuple(parents.shape) != (J,):
        raise ValueError(f"{where}: parents must have shape [{J}], got {list(parents.shape)}")
    parent_list = parents.tolist()
    for j, p in enumerate(parent_list):
        if not -1 <= p < J or p == j:
            raise ValueError(f"{where}: parents[{j}] = {p} is not -1 or another joint's index")
    state = skeleton_state
    has_parent = (parents >= 0).to(state.device)
    index = torch.where(has_parent, parents.to(state.device), torch.zeros_like(has_parent, dtype=torch.int64))
    identity = skel_state.identity(dtype=state.dtype, device=state.device)
    parent_state = torch.where(has_parent[:, None], state.index_select(-2, index), identity)
    local = skel_state.multiply(skel_state.inverse(parent_state), state)
    pre = pre_rotations / torch.linalg.vector_norm(pre_rotations, dim=-1, keepdim=True)
    rotation = quaternion.multiply(quaternion.conjugate(pre).expand_as(local[..., 3:7]), local[..., 3:7])
    return torch.cat([local[..., :3] - offsets, quaternion.to_euler_xyz(rotation), torch.log2(local[..., 7:8])],
                     dim=-1)


# ---------------------------------------------------------------- fake kernels
# The kernels validate every argument at run time. The fake kernels check only
# what they need: a size check here would guard on that size, and dynamo's
# duck sizing shares one symbol among equal sizes, so e.g. a batch of 3 would
# get specialised with offsets.shape[1] == 3.
def _check_fake(joint_parameters):
    torch._check(
        joint_parameters.dim() >= 2,
        lambda: f"joint_parameters must have shape [..., J, 7], got {list(joint_parameters.shape)}",
    )


@torch.library.register_fake("momentum::joint_parameters_to_skeleton_state")
def _fk_fake(joint_parameters, parents, offsets, pre_rotations):
    _check_fake(joint_parameters)
    _checks.same_device(_FK, "joint_parameters", joint_parameters,
                        {"offsets": offsets, "pre_rotations": pre_rotations}, {"parents": parents})
    return joint_parameters.new_empty((*joint_parameters.shape[:-1], 8))


@torch.library.register_fake("momentum::joint_parameters_to_skeleton_state_backward")
def _fk_backward_fake(grad_skeleton_state, joint_parameters, parents, offsets, pre_rotations, skeleton_state):
    _check_fake(joint_parameters)
    _checks.same_device(_FK + "_backward", "joint_parameters", joint_parameters,
                        {"grad_skeleton_state": grad_skeleton_state, "offsets": offsets,
                         "pre_rotations": pre_rotations, "skeleton_state": skeleton_state}, {"parents": parents})
    return joint_parameters.new_empty(joint_parameters.shape), offsets.new_empty(offsets.shape)


# -------------------------------------------------------------------- autograd
def _fk_setup_context(ctx, inputs, output):
    joint_parameters, parents, offsets, pre_rotations = inputs
    ctx.save_for_backward(joint_parameters, parents, offsets, pre_rotations, output)


def _fk_backward(ctx, grad_skeleton_state):
    joint_parameters, parents, offsets, pre_rotations, skeleton_state = ctx.saved_tensors
    grad_joint_parameters, grad_offsets = _ops.joint_parameters_to_skeleton_state_backward(
        grad_skeleton_state, joint_parameters, parents, offsets, pre_rotations, skeleton_state
    )
    return (
        grad_joint_parameters if ctx.needs_input_grad[0] else None,
        None,
        grad_offsets if ctx.needs_input_grad[2] else None,
        None,
    )


def _fk_forward_ad(joint_parameters, parents, offsets, pre_rotations):
    return _reference.joint_parameters_to_skeleton_state(joint_parameters, parents, offsets, pre_rotations)


_checks.register_autograd(_FK, _fk_backward, _fk_setup_context, forward_ad=_fk_forward_ad)


# The backward op's own derivative (FK's second derivatives), for gradient
# penalties: the vector-Jacobian product of the pure-PyTorch FK, differentiated.
def _fk_backward_setup_context(ctx, inputs, output):
    grad_skeleton_state, joint_parameters, parents, offsets, pre_rotations, skeleton_state = inputs
    ctx.save_for_backward(grad_skeleton_state, joint_parameters, parents, offsets, pre_rotations, skeleton_state)


def _fk_double_backward(ctx, grad_grad_joint_parameters, grad_grad_offsets):
    grad_state, jp, parents, offsets, pre, state = ctx.saved_tensors
    with torch.enable_grad():
        leaves = [x.detach().requires_grad_() for x in (grad_state, jp, offsets)]
        outputs = _reference.fk_backward(leaves[0], leaves[1], parents, leaves[2], pre, state)
        cotangents = [g if g is not None else torch.zeros_like(o) for g, o in
                      zip((grad_grad_joint_parameters, grad_grad_offsets), outputs)]
        grads = torch.autograd.grad(outputs, leaves, cotangents, allow_unused=True)
    needs = ctx.needs_input_grad
    return (grads[0] if needs[0] else None, grads[1] if needs[1] else None, None,
            grads[2] if needs[3] else None, None, None)


_checks.register_autograd(_FK + "_backward", _fk_double_backward, _fk_backward_setup_context,
                          forward_ad=_reference.fk_backward)
