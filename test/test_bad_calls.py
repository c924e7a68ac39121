"""Every bad call gets a clear error naming the argument: None for a tensor,
meta tensors outside fake mode, index tensors that hold floats, integer and
scalar options out of range, arguments checked in an order that blames the
right one, and autograd modes an op does not implement. Where an autograd
mode is implemented (forward mode and the double backward of FK and
skinning), it is checked against finite differences."""

import math

import pytest
import torch

import momentum_ops
from reference import random_joint_parameters, random_skeleton
from test_conformance import TABLE, Row, skin_indices_on_device

ops = torch.ops.momentum
ROW = {row.name: row for row in TABLE}


def schema_names(row: Row):
    return [a.name for a in row.op._schema.arguments]


def tensor_arguments(row: Row):
    args = row.make(2, torch.Generator().manual_seed(0))
    return [(i, name) for i, (name, a) in enumerate(zip(schema_names(row), args)) if isinstance(a, torch.Tensor)]


NONE_CASES = [(row, i, name) for row in TABLE for i, name in tensor_arguments(row)]


@pytest.mark.parametrize("row,index,name", NONE_CASES,
                         ids=[f"{row.name}-{name}" for row, _, name in NONE_CASES])
def test_none_for_a_tensor_names_the_argument(row, index, name):
    args = row.make(2, torch.Generator().manual_seed(0))
    args[index] = None
    with pytest.raises(RuntimeError, match=rf"{row.name}: {name} is None; a tensor is required"):
        row.op(*args)


META_CASES = [(row, i, name) for row in TABLE for i, name in tensor_arguments(row) if i > 0]


@pytest.mark.parametrize("row,index,name", META_CASES,
                         ids=[f"{row.name}-{name}" for row, _, name in META_CASES])
def test_a_meta_tensor_beside_cpu_tensors_is_refused(row, index, name):
    """The fake kernels run for meta tensors outside fake mode: they must
    refuse a mix of devices instead of returning uninitialised CPU memory."""
    args = row.make(2, torch.Generator().manual_seed(0))
    args[index] = args[index].to("meta")
    with pytest.raises(RuntimeError, match=rf"{row.name}: ({name} is on meta|.* but {name} is on meta)"):
        row.op(*args)


@pytest.mark.parametrize("row", TABLE, ids=[row.name for row in TABLE])
def test_all_meta_gives_meta_shapes(row):
    """Only meta tensors (index tensors on the CPU) is shape inference, as for torch's own ops."""
    args = row.make(2, torch.Generator().manual_seed(0))
    meta = [a.to("meta") if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args]
    meta = skin_indices_on_device(row, "meta", meta)
    expected = row.op(*args)
    got = row.op(*meta)
    for e, g in zip(expected if isinstance(expected, tuple) else (expected,),
                    got if isinstance(got, tuple) else (got,)):
        assert g.device.type == "meta" and g.shape == e.shape and g.dtype == e.dtype


# ------------------------------------------------------------ Python entry points
@pytest.fixture
def character():
    parents, offsets, pre = random_skeleton(4, torch.Generator().manual_seed(1), roots=1)
    return momentum_ops.Character([f"j{i}" for i in range(4)], parents, offsets, pre)


def test_python_entry_points_name_a_none(character):
    parents, offsets, pre = character.parents, character.offsets, character.pre_rotations
    state = character.rest_skeleton_state()[None]
    cases = [
        (lambda: momentum_ops.joint_parameters_to_skeleton_state(None, parents, offsets, pre),
         "joint_parameters_to_skeleton_state: joint_parameters must be a tensor, got None"),
        (lambda: momentum_ops.joint_parameters_to_skeleton_state(torch.zeros(4, 7), None, offsets, pre),
         "joint_parameters_to_skeleton_state: parents must be an integer tensor, got None"),
        (lambda: momentum_ops.joint_parameters_to_skeleton_state(torch.zeros(4, 7), parents, None, pre),
         "joint_parameters_to_skeleton_state: offsets is None"),
        (lambda: momentum_ops.model_parameters_to_joint_parameters(None, character.parameter_transform),
         "model_parameters must be a tensor, got None"),
        (lambda: momentum_ops.skin_points(state, None, torch.zeros(2, 3), torch.zeros(2, 1, dtype=torch.long),
                                          torch.ones(2, 1)), "skin_points: inverse_bind_pose must be a tensor"),
        (lambda: momentum_ops.skin_points(state, character.inverse_bind_pose, torch.zeros(2, 3), None,
                                          torch.ones(2, 1)), "skin_points: skin_indices must be an integer tensor"),
        (lambda: momentum_ops.solve_ik(character, None), "solve_ik: model_parameters_init must be a tensor, got None"),
        (lambda: momentum_ops.position_residuals_and_jacobian(character, None, torch.tensor([1]), torch.zeros(1, 3),
                                                              torch.zeros(1, 3)),
         "position_residuals_and_jacobian: model_parameters must be a tensor, got None"),
        (lambda: character(None), "Character: model_parameters must be a tensor, got None"),
        (lambda: character.skin(None), "Character.skin: skeleton_state must be a tensor, got None"),
        (lambda: character.joint_parameters_to_skeleton_state(None), "joint_parameters must be a tensor, got None"),
        (lambda: momentum_ops.Character(["a"], None, torch.zeros(1, 3), torch.tensor([[0, 0, 0, 1.0]])),
         "Character: parents must be given"),
    ]
    for call, match in cases:
        with pytest.raises((ValueError, RuntimeError), match=match):
            call()


@pytest.mark.parametrize("field,value,match", [
    ("parents", [-1.0, 0.7], r"Character: parents must hold integers \(int32 or int64\), got torch.float32"),
    ("parents", [-1, True], "parents must hold integers"),
    ("faces", [[0.0, 1.0, 0.5]], r"Character: faces must hold integers"),
    ("skin_indices", [[0.0], [1.5], [0.0]], r"Character: skin_indices must hold integers"),
])
def test_float_indices_are_refused_not_truncated(field, value, match):
    args = dict(joint_names=["a", "b"], parents=[-1, 0], offsets=torch.zeros(2, 3),
                pre_rotations=torch.tensor([[0, 0, 0, 1.0]] * 2), rest_vertices=torch.zeros(3, 3),
                skin_weights=torch.ones(3, 1))
    args[field] = value
    if field == "parents" and value[1] is True:
        args[field] = torch.tensor([False, True])
    with pytest.raises(ValueError, match=match):
        momentum_ops.Character(**args)


def test_float_index_arguments_of_ops_are_refused(character):
    jp = torch.zeros(2, 4, 7, dtype=torch.float64)
    with pytest.raises(ValueError, match="parents must hold integers"):
        momentum_ops.joint_parameters_to_skeleton_state(jp, character.parents.float(), character.offsets,
                                                        character.pre_rotations)
    with pytest.raises(RuntimeError, match="parents must be int32 or int64, got float32"):
        ops.joint_parameters_to_skeleton_state(jp, character.parents.float(), character.offsets,
                                               character.pre_rotations)
    state = character.rest_skeleton_state()
    with pytest.raises(ValueError, match="skin_indices must hold integers"):
        momentum_ops.skin_points(state, character.inverse_bind_pose, torch.zeros(2, 3, dtype=torch.float64),
                                 torch.zeros(2, 1), torch.ones(2, 1, dtype=torch.float64))
    with pytest.raises(ValueError, match="position_joints must hold integers"):
        momentum_ops.solve_ik(character, torch.zeros(1, 28, dtype=torch.float64), position_joints=torch.tensor([1.0]),
                              position_targets=torch.zeros(1, 1, 3, dtype=torch.float64))


# ------------------------------------------------------------------ options
def ik_call(character, **options):
    return momentum_ops.solve_ik(character, torch.zeros(1, character.num_parameters, dtype=torch.float64),
                                 position_joints=torch.tensor([3]),
                                 position_targets=torch.ones(1, 1, 3, dtype=torch.float64), **options)


@pytest.mark.parametrize("options,match", [
    (dict(max_iterations=2 ** 31), r"max_iterations must be in \[0, 2147483647\], got 2147483648"),
    (dict(max_iterations=-1), r"max_iterations must be in \[0, 2147483647\], got -1"),
    (dict(max_iterations=2.9), "max_iterations must be an integer, got 2.9"),
    (dict(max_iterations=True), "max_iterations must be an integer, got True"),
    (dict(max_iterations="5"), "max_iterations must be an integer"),
    (dict(limit_weight=math.inf), "limit_weight must be a finite number >= 0, got inf"),
    (dict(limit_weight=math.nan), "limit_weight must be a finite number >= 0, got nan"),
    (dict(limit_weight=-1.0), "limit_weight must be a finite number >= 0"),
    (dict(tolerance=math.nan), "tolerance must be a finite number >= 0, got nan"),
    (dict(tolerance=math.inf), "tolerance must be a finite number"),
    (dict(damping=math.inf), "damping must be a finite number > 0, got inf"),
    (dict(damping=0.0), "damping must be a finite number > 0"),
    (dict(damping="x"), "damping must be a number, got 'x'"),
])
def test_solve_ik_options(character, options, match):
    with pytest.raises(ValueError, match=match):
        ik_call(character, **options)


@pytest.mark.parametrize("position,value,match", [
    (21, 2 ** 31, r"ik_solve: max_iterations must be in \[0, 2147483647\], got 2147483648"),
    (21, -3, "max_iterations must be in"),
    (18, math.inf, "ik_solve: limit_weight must be a finite number >= 0, got inf"),
    (18, math.nan, "limit_weight must be a finite number"),
    (22, math.nan, "ik_solve: tolerance must be a finite number >= 0, got nan"),
    (23, math.inf, "ik_solve: damping must be a finite number > 0, got inf"),
])
def test_raw_ik_op_options(position, value, match):
    args = ROW['ik_solve'].make(2, torch.Generator().manual_seed(0))
    args[position] = value
    with pytest.raises(RuntimeError, match=match):
        ops.ik_solve(*args)


def test_arguments_are_blamed_in_order():
    """The skeleton is checked first, then model_parameters (which set P), then the transform against both."""
    args = ROW['ik_solve'].make(2, torch.Generator().manual_seed(0))
    wide = list(args)
    wide[0] = torch.zeros(2, args[0].shape[1] - 1, dtype=torch.float64)
    with pytest.raises(RuntimeError, match=r"ik_solve: transform_columns\[34\] = 34 is out of range; model parameters "
                                           r"are in \[0, 34\) \(P from model_parameters\)"):
        ops.ik_solve(*wide)
    flat = list(args)
    flat[2] = args[2].reshape(-1)
    with pytest.raises(RuntimeError, match=r"ik_solve: offsets must have shape \[J, 3\], got \[15\]"):
        ops.ik_solve(*flat)
    residual = ROW['position_residuals_and_jacobian'].make(2, torch.Generator().manual_seed(0))
    residual[2] = residual[2].reshape(-1)
    with pytest.raises(RuntimeError, match=r"position_residuals_and_jacobian: offsets must have shape \[J, 3\]"):
        ops.position_residuals_and_jacobian(*residual)
    backward = ROW['ik_solve_backward'].make(2, torch.Generator().manual_seed(0))
    backward[1] = backward[1][:, :30]
    with pytest.raises(RuntimeError, match=r"ik_solve_backward: transform_columns\[30\] = 30 is out of range"):
        ops.ik_solve_backward(*backward)


@pytest.mark.parametrize("op", ["ik_solve", "ik_solve_backward", "position_residuals_and_jacobian"])
@pytest.mark.parametrize("edit,match", [
    (lambda a: a.update(transform_rows=torch.tensor([0] * 37 + [35])),
     r"transform_rows\[37\] = 35 is out of range; joint parameter rows are in \[0, 35\) \(7 per joint\)"),
    (lambda a: a.update(transform_rows=a["transform_rows"] - 1), r"transform_rows\[0\] = -1 is out of range"),
    (lambda a: a.update(transform_columns=a["transform_columns"] * 2),
     r"transform_columns\[18\] = 36 is out of range; model parameters are in \[0, 35\)"),
    (lambda a: a.update(transform_columns=a["transform_columns"][:-1]),
     r"transform_columns must have shape \[nnz\] with nnz from transform_rows, got \[37\]"),
    (lambda a: a.update(transform_values=a["transform_values"][:5]), r"transform_values must have shape \[nnz\]"),
    (lambda a: a.update(transform_values=a["transform_values"].float()), "transform_values"),
    (lambda a: a.update(transform_rows=a["transform_rows"].double()),
     "transform_rows must be int32 or int64, got float64"),
    (lambda a: a.update(transform_rows=a["transform_rows"].reshape(2, 19)),
     r"transform_rows must have shape \[nnz\], got \[2, 19\]"),
    (lambda a: a.update(transform_columns=None), "transform_columns is None"),
])
def test_raw_ik_ops_check_the_sparse_transform(op, edit, match):
    row = ROW[op]
    names = list(torch.ops.momentum.__getattr__(op).default._schema.arguments)
    args = row.make(2, torch.Generator().manual_seed(0))
    named = {a.name: v for a, v in zip(names, args)}
    edit(named)
    with pytest.raises(RuntimeError, match=f"{op}: " + match):
        getattr(ops, op)(*named.values())


def test_ik_scratch_memory_limit_is_named():
    """A solve whose normal equations would not fit says so, with the size, before allocating."""
    P = 20000
    parents, offsets, pre = torch.tensor([-1]), torch.zeros(1, 3), torch.tensor([[0, 0, 0, 1.0]])
    rows, columns, values = torch.zeros(P, dtype=torch.long), torch.arange(P), torch.ones(P)
    args = [torch.zeros(1, P), parents, offsets, pre, rows, columns, values, torch.full((P,), -math.inf),
            torch.full((P,), math.inf), torch.ones(P, dtype=torch.bool), torch.tensor([0]), torch.zeros(1, 3),
            torch.zeros(1, 1, 3), torch.ones(1, 1), torch.zeros(0, dtype=torch.long), torch.zeros(0, 4),
            torch.zeros(1, 0, 4), torch.zeros(1, 0), 0.0, torch.zeros(1, P), torch.zeros(P), 3, 1e-6, 1e-3]
    with pytest.raises(RuntimeError, match=r"ik_solve: the solver's scratch memory would be [\d.]+ MiB per problem "
                                           r"\(20000 active parameters, 1 joints.*over the limit of 1024 MiB"):
        ops.ik_solve(*args)


def test_ik_backward_is_nan_when_every_factorisation_fails():
    args = ROW['ik_solve_backward'].make(2, torch.Generator().manual_seed(0))
    args[1] = torch.full_like(args[1], math.nan)  # a non-finite solution: H cannot be factorised
    grads = ops.ik_solve_backward(*args)
    for g in grads:
        if g.numel():
            assert torch.isnan(g).all(), "a failed factorisation must give NaN, not a stale step"


# ------------------------------------------------------------ autograd modes
def fk_problem(generator):
    parents, offsets, pre = random_skeleton(6, generator, roots=2)
    jp = random_joint_parameters((3,), 6, generator)
    return jp, parents, offsets, pre


def test_fk_forward_mode_matches_finite_differences(generator):
    jp, parents, offsets, pre = fk_problem(generator)
    direction = torch.randn(jp.shape, generator=generator, dtype=torch.float64)
    direction_offsets = torch.randn(offsets.shape, generator=generator, dtype=torch.float64)

    def f(a, o):
        return momentum_ops.joint_parameters_to_skeleton_state(a, parents, o, pre)

    primal, tangent = torch.func.jvp(f, (jp, offsets), (direction, direction_offsets))
    h = 1e-6
    expected = (f(jp + h * direction, offsets + h * direction_offsets)
                - f(jp - h * direction, offsets - h * direction_offsets)) / (2 * h)
    torch.testing.assert_close(primal, f(jp, offsets), rtol=0, atol=0)
    torch.testing.assert_close(tangent, expected, rtol=1e-6, atol=1e-7)
    import torch.autograd.forward_ad as fwAD

    with fwAD.dual_level():
        out = f(fwAD.make_dual(jp, direction), fwAD.make_dual(offsets, direction_offsets))
        torch.testing.assert_close(fwAD.unpack_dual(out).tangent, tangent)
    jacobian = torch.func.jacfwd(lambda a: f(a, offsets))(jp[0])
    assert jacobian.shape == (6, 8, 6, 7)


def test_skinning_forward_mode_matches_finite_differences(generator):
    from test_skinning import make_problem

    state, ibp, rest, indices, weights = make_problem(generator)
    ds, dr, dw = (torch.randn(x.shape, generator=generator, dtype=torch.float64) for x in (state, rest, weights))

    def f(s, r, w):
        return momentum_ops.skin_points(s, ibp, r, indices, w)

    _, tangent = torch.func.jvp(f, (state, rest, weights), (ds, dr, dw))
    h = 1e-6
    expected = (f(state + h * ds, rest + h * dr, weights + h * dw) - f(state - h * ds, rest - h * dr,
                                                                       weights - h * dw)) / (2 * h)
    torch.testing.assert_close(tangent, expected, rtol=1e-6, atol=1e-7)


def test_fk_double_backward_gradgradcheck(generator):
    parents, offsets, pre = random_skeleton(5, generator, roots=2)
    jp = random_joint_parameters((2,), 5, generator).requires_grad_()
    offsets = offsets.clone().requires_grad_()

    def f(a, o):
        return momentum_ops.joint_parameters_to_skeleton_state(a, parents, o, pre)

    assert torch.autograd.gradgradcheck(f, (jp, offsets))
    # A gradient penalty: d/djp |d(loss)/djp|^2.
    loss = (f(jp, offsets)[..., :3] ** 2).sum()
    (grad,) = torch.autograd.grad(loss, jp, create_graph=True)
    penalty = (grad ** 2).sum()
    (second,) = torch.autograd.grad(penalty, jp)
    assert torch.isfinite(second).all() and second.abs().sum() > 0


def test_skinning_double_backward_gradgradcheck(generator):
    from test_skinning import make_problem

    state, ibp, rest, indices, weights = make_problem(generator, (2,), joints=4, vertices=6, influences=3)
    inputs = tuple(x.clone().requires_grad_() for x in (state, rest, weights))
    assert torch.autograd.gradgradcheck(lambda s, r, w: momentum_ops.skin_points(s, ibp, r, indices, w), inputs)


def test_ik_refuses_forward_mode_and_double_backward():
    args = ROW['ik_solve'].make(2, torch.Generator().manual_seed(0))
    targets = args[12]

    def solve(t):
        call = list(args)
        call[12] = t
        return ops.ik_solve(*call)[0]

    with pytest.raises(RuntimeError, match=r"momentum::ik_solve does not support forward-mode AD"):
        torch.func.jvp(solve, (targets,), (torch.ones_like(targets),))
    t = targets.clone().requires_grad_()
    (grad,) = torch.autograd.grad(solve(t).sum(), t, create_graph=True)
    with pytest.raises(RuntimeError, match=r"momentum::ik_solve_backward is not differentiable"):
        torch.autograd.grad(grad.sum(), t)


def test_residuals_autograd(generator):
    args = ROW['position_residuals_and_jacobian'].make(2, torch.Generator().manual_seed(0))
    theta = args[0].clone().requires_grad_()
    targets = args[9].clone().requires_grad_()

    def residuals(th, tg):
        call = list(args)
        call[0], call[9] = th, tg
        return ops.position_residuals_and_jacobian(*call)[0]

    assert torch.autograd.gradcheck(residuals, (theta, targets))
    with pytest.raises(RuntimeError, match="its jacobian output is not differentiable"):
        call = list(args)
        call[0] = theta
        ops.position_residuals_and_jacobian(*call)[1].sum().backward()
    with pytest.raises(RuntimeError, match=r"no gradient with respect to \['offsets'\]"):
        call = list(args)
        call[2] = args[2].clone().requires_grad_()
        ops.position_residuals_and_jacobian(*call)[0].sum().backward()
    with pytest.raises(RuntimeError, match="position_residuals_and_jacobian does not support forward-mode AD"):
        torch.func.jvp(lambda th: residuals(th, args[7]), (args[0],), (torch.ones_like(args[0]),))


# ------------------------------------------------------------ pre-rotations
def test_pre_rotations_are_normalised_in_both_passes(generator):
    """A pre-rotation of any non-zero length acts as its unit quaternion, in
    the forward and in the gradients (checked by finite differences)."""
    parents, offsets, pre = random_skeleton(5, generator, roots=1)
    scaled = pre * torch.tensor([0.5, 2.0, 1.0, 3.0, 0.9], dtype=torch.float64)[:, None]
    jp = random_joint_parameters((2,), 5, generator).requires_grad_()
    torch.testing.assert_close(ops.joint_parameters_to_skeleton_state(jp, parents, offsets, scaled),
                               ops.joint_parameters_to_skeleton_state(jp, parents, offsets, pre))
    assert torch.autograd.gradcheck(lambda a: ops.joint_parameters_to_skeleton_state(a, parents, offsets, scaled),
                                    (jp,))
    zero = pre.clone()
    zero[2] = 0
    state = ops.joint_parameters_to_skeleton_state(jp.detach(), parents, offsets, zero)
    assert torch.isnan(state[:, 2, 3:7]).all() and torch.isfinite(state[:, :2]).all()

