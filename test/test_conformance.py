"""One conformance table for every op, backward ops included.

Each row names an op and makes sample inputs for a batch size. Every row gets,
on every device: ``torch.library.opcheck``; ``torch.compile(fullgraph=True,
dynamic=True)`` over three batch sizes without a recompile; ``torch.export``
with a dynamic batch dimension, run at another batch size; TorchScript (a
generated module scripted, saved, loaded and run); and the CUDA kernels
against the CPU kernels. A new op gets all of these by adding one row.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from typing import Callable, List, Optional, Sequence

import pytest
import torch

import momentum_ops  # noqa: F401  (registers the ops)
from conftest import DEVICES, HAS_CUDA
from reference import (
    random_inverse_bind_pose,
    random_joint_parameters,
    random_skeleton,
    random_skin,
    random_states,
    random_unit_quaternions,
)

ops = torch.ops.momentum
BACKEND = "inductor"
JOINTS = 5
PARAMS = 7 * JOINTS


@dataclasses.dataclass
class Row:
    name: str
    make: Callable[[int, torch.Generator], List]  # batch size, generator -> the op's arguments (CPU, float64)
    batched: Sequence[int]  # arguments whose dim 0 is the batch
    grad: Sequence[int] = ()  # arguments opcheck differentiates with respect to
    # CUDA against CPU in float32: the outputs compared and the tolerance. A
    # float32 solve's iterates part ways at rounding level after a few
    # iterations, so the solver compares its solution and energy loosely.
    float32_outputs: Optional[Sequence[int]] = None
    float32_tolerance: float = 2e-3

    @property
    def op(self):
        return getattr(ops, self.name).default


def fk_args(batch, g):
    parents, offsets, pre = random_skeleton(JOINTS, g, roots=2)
    return [random_joint_parameters((batch,), JOINTS, g), parents, offsets, pre]


def fk_backward_args(batch, g):
    jp, parents, offsets, pre = fk_args(batch, g)
    state = ops.joint_parameters_to_skeleton_state(jp, parents, offsets, pre)
    return [torch.randn(state.shape, generator=g, dtype=torch.float64), jp, parents, offsets, pre, state]


def skin_args(batch, g):
    indices, weights = random_skin(11, JOINTS, 3, g)
    return [random_states((batch,), JOINTS, g), random_inverse_bind_pose(JOINTS, g),
            torch.randn(11, 3, generator=g, dtype=torch.float64), indices, weights]


def skin_backward_args(batch, g):
    args = skin_args(batch, g)
    return [torch.randn(batch, 11, 3, generator=g, dtype=torch.float64)] + args


def blended_args(batch, g):
    state, ibp, rest, indices, weights = skin_args(batch, g)
    shapes = torch.randn(4, 11, 3, generator=g, dtype=torch.float64)
    return [state, ibp, rest, shapes, torch.randn(batch, 4, generator=g, dtype=torch.float64), indices, weights]


def blended_backward_args(batch, g):
    return [torch.randn(batch, 11, 3, generator=g, dtype=torch.float64)] + blended_args(batch, g)


def sparse_transform():
    """COO entries of a [7J, P] transform: the identity, a duplicate entry
    (duplicates add up) and a parameter that drives three rows."""
    rows = list(range(PARAMS)) + [0, 10, 20]
    columns = list(range(PARAMS)) + [0, 3, 3]
    values = [1.0] * PARAMS + [0.5, 0.5, -0.25]
    return torch.tensor(rows), torch.tensor(columns), torch.tensor(values, dtype=torch.float64)


def ik_model(g):
    parents, offsets, pre = random_skeleton(JOINTS, g, roots=1)
    lower = torch.full((PARAMS,), -1.0, dtype=torch.float64)
    return (parents, offsets, pre, *sparse_transform(), lower, -lower, torch.ones(PARAMS, dtype=torch.bool))


def ik_problem(batch, g):
    """(parameters, targets, weights, orientation targets/weights, reference, regularisation weight)."""
    theta = 0.2 * torch.randn(batch, PARAMS, generator=g, dtype=torch.float64)
    targets = torch.randn(batch, JOINTS, 3, generator=g, dtype=torch.float64)
    weights = torch.rand(batch, JOINTS, generator=g, dtype=torch.float64) + 0.5
    orientation = random_unit_quaternions(batch, g).reshape(batch, 1, 4)
    orientation_weights = torch.ones(batch, 1, dtype=torch.float64)
    reference = torch.zeros(batch, PARAMS, dtype=torch.float64)
    return theta, targets, weights, orientation, orientation_weights, reference


def ik_args(batch, g):
    parents, offsets, pre, rows, columns, values, pmin, pmax, active = ik_model(g)
    theta, targets, weights, orientation, orientation_weights, reference = ik_problem(batch, g)
    joints = torch.arange(JOINTS)
    return [theta, parents, offsets, pre, rows, columns, values, pmin, pmax, active,
            joints, torch.zeros(JOINTS, 3, dtype=torch.float64), targets, weights,
            torch.tensor([JOINTS - 1]), torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=torch.float64), orientation,
            orientation_weights, 0.5, reference, torch.full((PARAMS,), 1e-3, dtype=torch.float64), 5, 1e-12, 1e-3]


def ik_backward_args(batch, g):
    args = ik_args(batch, g)
    solution = ops.ik_solve(*args)[0]
    return [torch.randn(batch, PARAMS, generator=g, dtype=torch.float64), solution] + args[1:21]


def residual_args(batch, g):
    parents, offsets, pre, rows, columns, values = ik_model(g)[:6]
    theta, targets = ik_problem(batch, g)[:2]
    return [theta, parents, offsets, pre, rows, columns, values, torch.arange(JOINTS),
            torch.randn(JOINTS, 3, generator=g, dtype=torch.float64), targets]


TABLE = [
    Row("joint_parameters_to_skeleton_state", fk_args, batched=[0], grad=[0, 2]),
    Row("joint_parameters_to_skeleton_state_backward", fk_backward_args, batched=[0, 1, 5], grad=[0, 1, 3]),
    Row("skin_points", skin_args, batched=[0], grad=[0, 2, 4]),
    Row("skin_points_backward", skin_backward_args, batched=[0, 1], grad=[0, 1, 3, 5]),
    Row("skin_blended_points", blended_args, batched=[0, 4], grad=[0, 2, 3, 4, 6]),
    Row("skin_blended_points_backward", blended_backward_args, batched=[0, 1, 5], grad=[0, 1, 3, 4, 5, 7]),
    Row("ik_solve", ik_args, batched=[0, 12, 13, 16, 17, 19], grad=[12, 13, 16, 17, 19], float32_outputs=[0, 2],
        float32_tolerance=2e-2),
    Row("ik_solve_backward", ik_backward_args, batched=[0, 1, 13, 14, 17, 18, 20]),
    Row("position_residuals_and_jacobian", residual_args, batched=[0, 9]),
]
IDS = [row.name for row in TABLE]


def test_the_table_covers_every_op():
    registered = {name for name in dir(ops) if not name.startswith("_") and hasattr(getattr(ops, name), "default")}
    assert registered == {row.name for row in TABLE}


def on(device, args, grad=()):
    """Floating tensors on `device`; index tensors stay on the CPU, where the
    ops read them without a sync (skin indices: see skin_indices_on_device)."""
    out = []
    for i, a in enumerate(args):
        if isinstance(a, torch.Tensor) and a.is_floating_point():
            a = a.to(device)
            if i in grad:
                a = a.detach().requires_grad_()
        out.append(a)
    return out


def skin_indices_on_device(row, device, args):
    """skin_indices live on the device of the skeleton state."""
    positions = {"skin_points": 3, "skin_points_backward": 4, "skin_blended_points": 5,
                 "skin_blended_points_backward": 6}
    if row.name in positions:
        args[positions[row.name]] = args[positions[row.name]].to(device)
    return args


def sample(row, device, batch, generator, grad=()):
    return skin_indices_on_device(row, device, on(device, row.make(batch, generator), grad))


def assert_same(a, b, tol=1e-9):
    if isinstance(a, (tuple, list)):
        for x, y in zip(a, b):
            assert_same(x, y, tol)
        return
    torch.testing.assert_close(a, b, atol=tol, rtol=tol, equal_nan=True)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("row", TABLE, ids=IDS)
def test_opcheck(row, device, generator):
    args = sample(row, device, 3, generator, grad=row.grad)
    torch.library.opcheck(row.op, tuple(args))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("row", TABLE, ids=IDS)
def test_compile_dynamic_batch_without_recompiles(row, device, generator):
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    counter = CompileCounterWithBackend(BACKEND)
    first = sample(row, device, 6, generator)
    # Scalar options are constants of the program (as in the Python wrappers); tensors are its inputs.
    scalars = {i: a for i, a in enumerate(first) if not isinstance(a, torch.Tensor)}

    def call(*tensors):
        args, it = [], iter(tensors)
        for i in range(len(first)):
            args.append(scalars[i] if i in scalars else next(it))
        return row.op(*args)

    compiled = torch.compile(call, backend=counter, fullgraph=True, dynamic=True)
    frames = []
    for batch in (6, 9, 13):
        args = first if batch == 6 else sample(row, device, batch, generator)
        for i in row.batched:
            torch._dynamo.mark_dynamic(args[i], 0)
        tensors = [a for i, a in enumerate(args) if i not in scalars]
        assert_same(compiled(*tensors), row.op(*args))
        frames.append(counter.frame_count)
    # The first batch size may take two compiles (as in test_ik's compile
    # test); a new batch size must not add one.
    assert 1 <= frames[0] <= 2 and frames[-1] == frames[0], f"{row.name}: compiles after each batch size: {frames}"


def module_for(row, args, path):
    """A generated nn.Module calling the op: batched tensors are its inputs,
    the rest buffers or typed attributes, so that it scripts and exports."""
    schema = row.op._schema
    lines = ["import torch", "", "", "class OpModule(torch.nn.Module):", "    def __init__(self, constants):",
             "        super().__init__()"]
    call = []
    for i, (argument, value) in enumerate(zip(schema.arguments, args)):
        if i in row.batched:
            call.append(f"a{i}")
        elif isinstance(value, torch.Tensor):
            lines.append(f"        self.register_buffer('c{i}', constants[{i}])")
            call.append(f"self.c{i}")
        else:
            lines.append(f"        self.c{i}: {type(value).__name__} = constants[{i}]")
            call.append(f"self.c{i}")
    inputs = ", ".join(f"a{i}: torch.Tensor" for i in row.batched)
    lines += ["", f"    def forward(self, {inputs}):", f"        return torch.ops.momentum.{row.name}({', '.join(call)})"]
    path.write_text("\n".join(lines) + "\n")
    spec = importlib.util.spec_from_file_location(f"generated_{row.name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.OpModule({i: a for i, a in enumerate(args) if i not in row.batched})


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("row", TABLE, ids=IDS)
def test_export_dynamic_batch(row, device, generator, tmp_path):
    from torch.export import Dim, export

    args = sample(row, device, 4, generator)
    module = module_for(row, args, tmp_path / "op_module.py")
    batch = Dim("batch", min=1, max=4096)
    inputs = tuple(args[i] for i in row.batched)
    program = export(module, inputs, dynamic_shapes=tuple({0: batch} for _ in inputs))
    other = sample(row, device, 7, generator)
    inputs_other = tuple(other[i] for i in row.batched)
    # The program holds the first sample's constants (skeleton, options): the
    # eager reference runs the new batch on them too.
    mixed = list(args)
    for i in row.batched:
        mixed[i] = other[i]
    assert_same(program.module()(*inputs_other), row.op(*mixed))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("row", TABLE, ids=IDS)
def test_torchscript(row, device, generator, tmp_path):
    args = sample(row, device, 3, generator)
    scripted = torch.jit.script(module_for(row, args, tmp_path / "op_module.py"))
    scripted.save(str(tmp_path / "op.pt"))
    loaded = torch.jit.load(str(tmp_path / "op.pt"), map_location=device)
    assert_same(loaded(*[args[i] for i in row.batched]), row.op(*args))


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU and a CUDA build")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("row", TABLE, ids=IDS)
def test_cuda_matches_cpu(row, dtype, generator):
    raw = row.make(5, generator)
    raw = [a.to(dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in raw]
    cpu = row.op(*skin_indices_on_device(row, "cpu", on("cpu", raw)))
    cuda = row.op(*skin_indices_on_device(row, "cuda", on("cuda", raw)))
    cuda = [c.cpu() for c in cuda] if isinstance(cuda, (tuple, list)) else cuda.cpu()
    if dtype == torch.float64:
        assert_same(cuda, cpu, 1e-9)
    else:
        if row.float32_outputs is not None:
            cuda, cpu = [cuda[i] for i in row.float32_outputs], [cpu[i] for i in row.float32_outputs]
        assert_same(cuda, cpu, row.float32_tolerance)
