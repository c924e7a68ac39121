"""FK under torch.compile, torch.export and TorchScript (Python and C++)."""

import pytest
import torch

import momentum_ops
from conftest import DEVICES
from reference import random_joint_parameters, random_skeleton
from scripting import run_in_cpp, run_in_fresh_python

fk_op = torch.ops.momentum.joint_parameters_to_skeleton_state


class ForwardKinematics(torch.nn.Module):
    def __init__(self, parents, offsets, pre_rotations, example_input):
        super().__init__()
        self.register_buffer("parents", parents)
        self.register_buffer("offsets", offsets)
        self.register_buffer("pre_rotations", pre_rotations)
        self.register_buffer("example_input", example_input)

    def forward(self, joint_parameters: torch.Tensor) -> torch.Tensor:
        return torch.ops.momentum.joint_parameters_to_skeleton_state(
            joint_parameters, self.parents, self.offsets, self.pre_rotations
        )


@pytest.mark.parametrize("device", DEVICES)
def test_compile_dynamic_batch_without_recompiling(device, generator):
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    parents, offsets, pre = random_skeleton(15, generator, roots=2)
    offsets, pre = offsets.to(device), pre.to(device)

    def loss(jp, offsets):
        state = fk_op(jp, parents, offsets, pre)
        return (state[..., :3] ** 2).sum(-1) + state[..., 6]

    counter = CompileCounterWithBackend("inductor")
    compiled = torch.compile(loss, backend=counter, fullgraph=True, dynamic=True)
    # The first size differs from every skeleton size: dynamo's duck sizing would
    # otherwise tie the batch symbol to e.g. offsets.shape[1] == 3 (see README).
    for batch in (5, 3, 7, 17, 64):
        jp = random_joint_parameters((batch,), 15, generator).to(device)
        x_eager, o_eager = jp.clone().requires_grad_(), offsets.clone().requires_grad_()
        x_comp, o_comp = jp.clone().requires_grad_(), offsets.clone().requires_grad_()
        expected = loss(x_eager, o_eager)
        got = compiled(x_comp, o_comp)
        torch.testing.assert_close(got, expected)
        expected.sum().backward()
        got.sum().backward()
        torch.testing.assert_close(x_comp.grad, x_eager.grad)
        torch.testing.assert_close(o_comp.grad, o_eager.grad)
    assert counter.frame_count == 1, f"recompiled: {counter.frame_count} frames for 5 batch sizes"


@pytest.mark.parametrize("device", DEVICES)
def test_export_dynamic_batch(device, generator):
    parents, offsets, pre = random_skeleton(9, generator, roots=2)
    example = random_joint_parameters((4,), 9, generator)
    module = ForwardKinematics(parents, offsets, pre, example).to(device)
    batch = torch.export.Dim("batch")
    exported = torch.export.export(
        module, (example.to(device),), dynamic_shapes={"joint_parameters": {0: batch}}
    )
    other = random_joint_parameters((11,), 9, generator).to(device)
    torch.testing.assert_close(exported.module()(other), module(other), rtol=0, atol=0)


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
def test_torchscript_saved_and_loaded_in_python_and_cpp(device, generator, tmp_path, cpp_runner):
    parents, offsets, pre = random_skeleton(20, generator, roots=2)
    example = random_joint_parameters((3, 2), 20, generator)
    module = ForwardKinematics(parents, offsets, pre, example)
    scripted = torch.jit.script(module)
    path = str(tmp_path / "fk.pt")
    scripted.save(path)
    expected = momentum_ops.joint_parameters_to_skeleton_state(example, parents, offsets, pre)

    from_python = run_in_fresh_python(path, str(tmp_path / "py_out.pt"), device)
    torch.testing.assert_close(from_python, expected, rtol=0, atol=1e-12)
    from_cpp = run_in_cpp(cpp_runner, path, str(tmp_path / "cpp_out.bin"), expected.shape, device)
    torch.testing.assert_close(from_cpp, expected, rtol=0, atol=1e-12)
