"""Linear blend skinning against the float64 reference in reference.py."""

import numpy as np
import pytest
import torch

import momentum_ops
from conftest import DEVICES, DTYPES, HAS_CUDA
from reference import (
    random_inverse_bind_pose,
    random_skin,
    random_states,
    skin_points as reference_skin,
)
from scripting import run_in_cpp, run_in_fresh_python

skin_op = torch.ops.momentum.skin_points
skin_backward_op = torch.ops.momentum.skin_points_backward


def make_problem(generator, batch_shape=(3,), joints=7, vertices=40, influences=4, dtype=torch.float64,
                 index_dtype=torch.int64, batched_points=False):
    state = random_states(batch_shape, joints, generator, dtype)
    ibp = random_inverse_bind_pose(joints, generator, dtype)
    shape = (*batch_shape, vertices, 3) if batched_points else (vertices, 3)
    rest = torch.randn(*shape, generator=generator, dtype=torch.float64).to(dtype)
    indices, weights = random_skin(vertices, joints, influences, generator, dtype, index_dtype)
    return state, ibp, rest, indices, weights


def to(device, *tensors):
    return [t.to(device) for t in tensors]


def assert_matches(points, inputs, dtype):
    expected = reference_skin(*inputs)
    tol = 1e-11 if dtype == torch.float64 else 2e-5 * (1 + np.abs(expected).max(initial=0))
    np.testing.assert_allclose(points.detach().cpu().double().numpy(), expected, atol=tol, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("index_dtype", [torch.int64, torch.int32])
@pytest.mark.parametrize("influences", [1, 4, 8, 11])
@pytest.mark.parametrize("batched_points", [False, True], ids=["shared_rest", "per_item_rest"])
def test_matches_reference(device, dtype, index_dtype, influences, batched_points, generator):
    inputs = make_problem(generator, (2, 3), 9, 50, influences, dtype, index_dtype, batched_points)
    points = skin_op(*to(device, *inputs))
    assert points.shape == (2, 3, 50, 3) and points.dtype == dtype
    assert_matches(points, inputs, dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("batch_shape", [(), (1,), (0,), (2, 0, 3), (4, 1, 2)], ids=lambda s: "batch" + "x".join(map(str, s)))
def test_batch_shapes(device, batch_shape, generator):
    for batched in (False, True):
        inputs = make_problem(generator, batch_shape, 5, 17, 4, batched_points=batched)
        points = momentum_ops.skin_points(*to(device, *inputs))
        assert points.shape == (*batch_shape, 17, 3)
        if points.numel():
            assert_matches(points, inputs, torch.float64)


@pytest.mark.parametrize("device", DEVICES)
def test_non_contiguous(device, generator):
    state, ibp, rest, idx, w = make_problem(generator, (4, 2), 6, 30, 4, batched_points=True)
    state_nc = state.to(device).transpose(0, 1).contiguous().transpose(0, 1)
    ibp_nc = ibp.to(device).transpose(1, 2).contiguous().transpose(1, 2)
    rest_nc = rest.to(device).transpose(0, 1).contiguous().transpose(0, 1)
    idx_nc = idx.to(device).t().contiguous().t()
    w_nc = w.to(device).t().contiguous().t()
    assert not any(t.is_contiguous() for t in (state_nc, ibp_nc, rest_nc, idx_nc, w_nc))
    assert_matches(skin_op(state_nc, ibp_nc, rest_nc, idx_nc, w_nc), (state, ibp, rest, idx, w), torch.float64)


@pytest.mark.parametrize("device", DEVICES)
def test_rest_pose_gives_rest_points(device, generator):
    """With states equal to the inverse of the inverse bind pose (the bind
    pose) and weights summing to one, skinning returns the rest points."""
    parents = torch.tensor([-1, 0, 1, 1, 0])
    offsets = torch.randn(5, 3, generator=generator, dtype=torch.float64)
    pre = torch.nn.functional.normalize(torch.randn(5, 4, generator=generator, dtype=torch.float64), dim=-1)
    character = momentum_ops.Character([f"j{i}" for i in range(5)], parents, offsets, pre)
    rest = torch.randn(30, 3, generator=generator, dtype=torch.float64)
    idx, w = random_skin(30, 5, 3, generator)
    w = w / w.sum(-1, keepdim=True)
    state = character.rest_skeleton_state()
    points = skin_op(*to(device, state, character.inverse_bind_pose, rest, idx, w))
    torch.testing.assert_close(points.cpu(), rest, atol=1e-12, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("batched_points", [False, True], ids=["shared_rest", "per_item_rest"])
@pytest.mark.parametrize("influences", [3, 10])
def test_gradcheck(device, batched_points, influences, generator):
    state, ibp, rest, idx, w = to(device, *make_problem(generator, (2,), 4, 6, influences, batched_points=batched_points))
    state.requires_grad_()
    rest.requires_grad_()
    w.requires_grad_()
    assert torch.autograd.gradcheck(lambda s, r, ww: skin_op(s, ibp, r, idx, ww), (state, rest, w))


@pytest.mark.parametrize("device", DEVICES)
def test_gradients_float32_match_float64(device, generator):
    inputs = make_problem(generator, (64,), 30, 500, 4)
    grad_out = torch.randn(64, 500, 3, generator=generator, dtype=torch.float64)
    grads = {}
    for dtype in DTYPES:
        state, ibp, rest, idx, w = [t.to(device, dtype) if t.is_floating_point() else t.to(device) for t in inputs]
        for t in (state, rest, w):
            t.requires_grad_()
        skin_op(state, ibp, rest, idx, w).backward(grad_out.to(device, dtype))
        grads[dtype] = [t.grad.double().cpu() for t in (state, rest, w)]
    for g32, g64 in zip(grads[torch.float32], grads[torch.float64]):
        torch.testing.assert_close(g32, g64, atol=2e-5 * float(g64.abs().max()), rtol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device, generator):
    state, ibp, rest, idx, w = to(device, *make_problem(generator, (3,), 5, 20, 4))
    torch.library.opcheck(skin_op.default, (state.requires_grad_(), ibp, rest.requires_grad_(), idx, w.requires_grad_()))
    grad = torch.randn(3, 20, 3, dtype=torch.float64, device=device)
    torch.library.opcheck(skin_backward_op.default, (grad, state.detach(), ibp, rest.detach(), idx, w.detach()))


@pytest.mark.parametrize("device", DEVICES)
def test_compile_dynamic(device, generator):
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    _, ibp, rest, idx, w = to(device, *make_problem(generator, (1,), 6, 25, 4))

    def posed_area(state):
        return skin_op(state, ibp, rest, idx, w).square().sum(-1)

    counter = CompileCounterWithBackend("inductor")
    compiled = torch.compile(posed_area, backend=counter, fullgraph=True, dynamic=True)
    for batch in (5, 2, 9, 33):
        state = random_states((batch,), 6, generator).to(device)
        a, b = state.clone().requires_grad_(), state.clone().requires_grad_()
        expected, got = posed_area(a), compiled(b)
        torch.testing.assert_close(got, expected)
        expected.sum().backward()
        got.sum().backward()
        torch.testing.assert_close(b.grad, a.grad)
    assert counter.frame_count == 1


class Skinning(torch.nn.Module):
    def __init__(self, ibp, rest, idx, w, example):
        super().__init__()
        for name, t in (("ibp", ibp), ("rest", rest), ("idx", idx), ("w", w), ("example_input", example)):
            self.register_buffer(name, t)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return torch.ops.momentum.skin_points(state, self.ibp, self.rest, self.idx, self.w)


@pytest.mark.parametrize("device", DEVICES)
def test_export(device, generator):
    state, ibp, rest, idx, w = make_problem(generator, (4,), 6, 25, 4)
    module = Skinning(ibp, rest, idx, w, state).to(device)
    exported = torch.export.export(module, (state.to(device),), dynamic_shapes={"state": {0: torch.export.Dim("batch")}})
    other = random_states((7,), 6, generator).to(device)
    torch.testing.assert_close(exported.module()(other), module(other), rtol=0, atol=0)


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
def test_torchscript_python_and_cpp(device, generator, tmp_path, cpp_runner):
    state, ibp, rest, idx, w = make_problem(generator, (2,), 6, 25, 4)
    scripted = torch.jit.script(Skinning(ibp, rest, idx, w, state))
    path = str(tmp_path / "skin.pt")
    scripted.save(path)
    expected = skin_op(state, ibp, rest, idx, w)
    torch.testing.assert_close(run_in_fresh_python(path, str(tmp_path / "out.pt"), device), expected, rtol=0, atol=1e-12)
    from_cpp = run_in_cpp(cpp_runner, path, str(tmp_path / "out.bin"), expected.shape, device)
    torch.testing.assert_close(from_cpp, expected, rtol=0, atol=1e-12)


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("device", DEVICES)
def test_bad_input(device, generator):
    state, ibp, rest, idx, w = to(device, *make_problem(generator, (2,), 5, 10, 4))
    cases = [
        ((state[..., :7], ibp, rest, idx, w), r"skeleton_state must have shape \[\.\.\., J, 8\]"),
        ((state.int(), ibp, rest, idx, w), "skeleton_state must be float32 or float64, got int32"),
        ((state, ibp[:4], rest, idx, w), r"inverse_bind_pose must have shape \[J, 4, 4\]"),
        ((state, ibp[:, :3], rest, idx, w), r"inverse_bind_pose must have shape \[J, 4, 4\]"),
        ((state, ibp.float(), rest, idx, w), "inverse_bind_pose is float32 but skeleton_state is float64"),
        ((state, ibp, rest[:, :2], idx, w), r"rest_points must have shape \[V, 3\] or \[\.\.\., V, 3\]"),
        ((state, ibp, rest.float(), idx, w), "rest_points is float32 but skeleton_state is float64"),
        ((state, ibp, rest.expand(3, 10, 3), idx, w), "rest_points has batch dims"),
        ((state, ibp, rest, idx[:9], w), r"skin_indices must have shape \[V, K\] with V = 10"),
        ((state, ibp, rest, idx.double(), w), "skin_indices must be int32 or int64, got float64"),
        ((state, ibp, rest, idx[:, :0], w[:, :0]), "at least one influence"),
        ((state, ibp, rest, idx, w[:, :3]), r"skin_weights must have shape \[V, K\]"),
        ((state, ibp, rest, idx, w.float()), "skin_weights is float32 but skeleton_state is float64"),
    ]
    for args, match in cases:
        with pytest.raises(RuntimeError, match=match):
            skin_op(*args)
    for bad in (5, -1, 100):
        bad_idx = idx.clone()
        bad_idx[7, 2] = bad
        with pytest.raises(RuntimeError, match=rf"skin_indices\[7, 2\] = {bad} is out of range; .* \[0, 5\)"):
            skin_op(state, ibp, rest, bad_idx, w)
        grad = torch.ones(2, 10, 3, dtype=torch.float64, device=device)
        with pytest.raises(RuntimeError, match=r"skin_indices\[7, 2\]"):
            skin_backward_op(grad, state, ibp, rest, bad_idx, w)
    with pytest.raises(RuntimeError, match=r"grad_points must have shape"):
        skin_backward_op(torch.ones(2, 9, 3, dtype=torch.float64, device=device), state, ibp, rest, idx, w)


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU and a CUDA build")
def test_wrong_devices(generator):
    state, ibp, rest, idx, w = make_problem(generator, (2,), 5, 10, 4)
    cuda = lambda *ts: [t.cuda() for t in ts]  # noqa: E731
    with pytest.raises(RuntimeError, match="inverse_bind_pose is on cpu but skeleton_state is on cuda:0"):
        skin_op(state.cuda(), ibp, *cuda(rest, idx, w))
    with pytest.raises(RuntimeError, match="skin_indices is on cpu but skeleton_state is on cuda:0"):
        skin_op(*cuda(state, ibp, rest), idx, w.cuda())
    with pytest.raises(RuntimeError, match="rest_points is on cuda:0 but skeleton_state is on cpu"):
        skin_op(state, ibp, rest.cuda(), idx, w)


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU and a CUDA build")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "batch,joints,vertices,influences,batched",
    [(1, 24, 3000, 4, False), (300, 100, 2000, 8, False), (17, 300, 5000, 4, True), (5, 1500, 800, 12, False)],
)
def test_cuda_matches_cpu(dtype, batch, joints, vertices, influences, batched, generator):
    """Forward and all three gradients; 1500 joints exceed the shared-memory
    accumulator of the backward kernel for float64 and take the global path."""
    inputs = make_problem(generator, (batch,), joints, vertices, influences, dtype, batched_points=batched)
    grad_out = torch.randn(batch, vertices, 3, generator=generator, dtype=dtype)
    results = {}
    for device in ("cpu", "cuda"):
        state, ibp, rest, idx, w = [t.to(device).detach() for t in inputs]
        for t in (state, rest, w):
            t.requires_grad_()
        points = skin_op(state, ibp, rest, idx, w)
        points.backward(grad_out.to(device))
        results[device] = [points.detach().cpu()] + [t.grad.cpu() for t in (state, rest, w)]
    tol = 1e-9 if dtype == torch.float64 else 1e-4
    for a, b in zip(results["cpu"], results["cuda"]):
        torch.testing.assert_close(b, a, atol=tol * (float(a.abs().max()) + 1), rtol=0)


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU and a CUDA build")
def test_cuda_graph_capture_skips_the_host_check(generator):
    state, ibp, rest, idx, w = [t.cuda() for t in make_problem(generator, (8,), 6, 300, 4, dtype=torch.float32)]
    expected = skin_op(state, ibp, rest, idx, w)
    graph = torch.cuda.CUDAGraph()
    static_state = state.clone()
    with torch.cuda.graph(graph):
        out = skin_op(static_state, ibp, rest, idx, w)
    graph.replay()
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    # A bad index captured in a graph cannot raise; the kernels never read
    # out of range, and the affected vertex is NaN.
    bad_idx = idx.clone()
    bad_idx[3, 1] = 1000
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = skin_op(static_state, ibp, rest, bad_idx, w)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.isnan(out[:, 3]).all() and torch.isfinite(out[:, [0, 1, 2, 4]]).all()
