"""The fused blend-shape + skinning op against the float64 reference: the
blend written out as a plain sum over shapes, then the vertex-by-vertex
skinning of reference.py."""

import numpy as np
import pytest
import torch

import momentum_ops
from conftest import DEVICES, DTYPES, HAS_CUDA
from reference import random_inverse_bind_pose, random_skin, random_states, skin_points as reference_skin

op = torch.ops.momentum.skin_blended_points
backward_op = torch.ops.momentum.skin_blended_points_backward


def make_problem(generator, batch_shape=(3,), joints=7, vertices=40, influences=4, shapes=5,
                 dtype=torch.float64, index_dtype=torch.int64):
    state = random_states(batch_shape, joints, generator, dtype)
    ibp = random_inverse_bind_pose(joints, generator, dtype)
    rest = torch.randn(vertices, 3, generator=generator, dtype=torch.float64).to(dtype)
    blend_shapes = (0.3 * torch.randn(shapes, vertices, 3, generator=generator, dtype=torch.float64)).to(dtype)
    blend_weights = torch.randn(*batch_shape, shapes, generator=generator, dtype=torch.float64).to(dtype)
    indices, weights = random_skin(vertices, joints, influences, generator, dtype, index_dtype)
    return state, ibp, rest, blend_shapes, blend_weights, indices, weights


def reference(state, ibp, rest, blend_shapes, blend_weights, indices, weights):
    """Blend each item's rest points one shape at a time, then skin them."""
    rest = rest.detach().double().numpy()
    shapes = blend_shapes.detach().double().numpy()
    w = blend_weights.detach().double().numpy()
    batch_shape = w.shape[:-1]
    flat = w.reshape(int(np.prod(batch_shape, dtype=np.int64)), shapes.shape[0])
    blended = np.empty((flat.shape[0],) + rest.shape)
    for b in range(flat.shape[0]):
        blended[b] = rest
        for s in range(shapes.shape[0]):
            blended[b] += flat[b, s] * shapes[s]
    blended = torch.from_numpy(blended.reshape(batch_shape + rest.shape))
    return reference_skin(state, ibp, blended, indices, weights)


def to(device, *tensors):
    return [t.to(device) for t in tensors]


def assert_matches(points, inputs, dtype):
    expected = reference(*inputs)
    tol = 1e-11 if dtype == torch.float64 else 3e-5 * (1 + np.abs(expected).max(initial=0))
    np.testing.assert_allclose(points.detach().cpu().double().numpy(), expected, atol=tol, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("index_dtype", [torch.int64, torch.int32])
@pytest.mark.parametrize("shapes", [0, 1, 7])
@pytest.mark.parametrize("influences", [1, 4, 11])
def test_matches_reference(device, dtype, index_dtype, shapes, influences, generator):
    inputs = make_problem(generator, (2, 3), 9, 50, influences, shapes, dtype, index_dtype)
    points = momentum_ops.skin_blended_points(*to(device, *inputs))
    assert points.shape == (2, 3, 50, 3) and points.dtype == dtype
    assert_matches(points, inputs, dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("batch_shape", [(), (1,), (0,), (2, 0, 3), (4, 1, 2)],
                         ids=lambda s: "batch" + "x".join(map(str, s)))
def test_batch_shapes(device, batch_shape, generator):
    inputs = make_problem(generator, batch_shape, 5, 17, 4, 3)
    points = op(*to(device, *inputs))
    assert points.shape == (*batch_shape, 17, 3)
    if points.numel():
        assert_matches(points, inputs, torch.float64)


@pytest.mark.parametrize("device", DEVICES)
def test_zero_weights_give_plain_skinning(device, generator):
    state, ibp, rest, shapes, weights, indices, skin_weights = to(device, *make_problem(generator))
    plain = torch.ops.momentum.skin_points(state, ibp, rest, indices, skin_weights)
    blended = op(state, ibp, rest, shapes, torch.zeros_like(weights), indices, skin_weights)
    assert torch.equal(plain, blended)


@pytest.mark.parametrize("device", DEVICES)
def test_non_contiguous(device, generator):
    state, ibp, rest, shapes, w, idx, sw = make_problem(generator, (4, 2), 6, 30, 4, 3)
    args = to(device, state, ibp, rest, shapes, w, idx, sw)
    strided = [args[0].transpose(0, 1).contiguous().transpose(0, 1), args[1].transpose(1, 2).contiguous().transpose(1, 2),
               args[2].t().contiguous().t(), args[3].transpose(0, 1).contiguous().transpose(0, 1),
               args[4].transpose(0, 1).contiguous().transpose(0, 1), args[5].t().contiguous().t(),
               args[6].t().contiguous().t()]
    assert not any(t.is_contiguous() for t in strided)
    assert_matches(op(*strided), (state, ibp, rest, shapes, w, idx, sw), torch.float64)


@pytest.mark.parametrize("device", DEVICES)
def test_gradcheck(device, generator):
    state, ibp, rest, shapes, w, idx, sw = to(device, *make_problem(generator, (2,), 4, 6, 3, 3))
    leaves = [x.clone().requires_grad_() for x in (state, rest, shapes, w, sw)]
    # CUDA accumulates with float64 atomics: equal up to summation order.
    tol = 1e-12 if device == "cuda" else 0.0
    assert torch.autograd.gradcheck(lambda s, r, bs, bw, k: op(s, ibp, r, bs, bw, idx, k), leaves, nondet_tol=tol)
    assert torch.autograd.gradgradcheck(lambda s, r, bs, bw, k: op(s, ibp, r, bs, bw, idx, k), leaves,
                                        nondet_tol=tol)


@pytest.mark.parametrize("device", DEVICES)
def test_gradients_match_finite_differences_of_the_reference(device, generator):
    """Gradients of a loss against central differences of the reference,
    for blend weights and blend shapes (what fitting differentiates)."""
    inputs = make_problem(generator, (2,), 5, 12, 3, 4)
    state, ibp, rest, shapes, w, idx, sw = inputs
    target = torch.randn(2, 12, 3, generator=generator, dtype=torch.float64)

    def loss_of(ww, ss):
        return float(((torch.from_numpy(reference(state, ibp, rest, ss, ww, idx, sw)) - target) ** 2).sum())

    leaves = [x.to(device).clone().requires_grad_() for x in (w, shapes)]
    dev = to(device, state, ibp, rest, idx, sw)
    loss = ((op(dev[0], dev[1], dev[2], leaves[1], leaves[0], dev[3], dev[4]) - target.to(device)) ** 2).sum()
    grad_w, grad_shapes = torch.autograd.grad(loss, leaves)
    h = 1e-6
    for b, s in [(0, 0), (1, 3), (0, 2)]:
        plus, minus = w.clone(), w.clone()
        plus[b, s] += h
        minus[b, s] -= h
        fd = (loss_of(plus, shapes) - loss_of(minus, shapes)) / (2 * h)
        assert abs(grad_w[b, s].item() - fd) < 1e-6 * (1 + abs(fd))
    for s, v, c in [(0, 0, 0), (3, 11, 2), (1, 5, 1)]:
        plus, minus = shapes.clone(), shapes.clone()
        plus[s, v, c] += h
        minus[s, v, c] -= h
        fd = (loss_of(w, plus) - loss_of(w, minus)) / (2 * h)
        assert abs(grad_shapes[s, v, c].item() - fd) < 1e-6 * (1 + abs(fd))


@pytest.mark.parametrize("device", DEVICES)
def test_backward_op_returns_the_blended_point_gradient(device, generator):
    """The backward op's middle output is dL/d(blended rest points) per item:
    the same as skin_points_backward given the blended points."""
    state, ibp, rest, shapes, w, idx, sw = make_problem(generator, (3,), 5, 20, 4, 2)
    blended = rest + torch.einsum("bs,svc->bvc", w, shapes)
    grad = torch.randn(3, 20, 3, generator=generator, dtype=torch.float64)
    ours = backward_op(*to(device, grad, state, ibp, rest, shapes, w, idx, sw))
    plain = torch.ops.momentum.skin_points_backward(*to(device, grad, state, ibp, blended, idx, sw))
    for a, b in zip(ours, plain):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
def test_bad_input(device, generator):
    state, ibp, rest, shapes, w, idx, sw = to(device, *make_problem(generator))
    cases = [
        ((state, ibp, rest, shapes[:, :-1], w, idx, sw), r"blend_shapes must have shape \[S, V, 3\]"),
        ((state, ibp, rest, shapes[0], w, idx, sw), r"blend_shapes must have shape"),
        ((state, ibp, rest, shapes, w[:, :-1], idx, sw), r"blend_weights must have shape"),
        ((state, ibp, rest, shapes, w[:2], idx, sw), r"blend_weights must have shape"),
        ((state, ibp, rest, shapes.float(), w, idx, sw), r"blend_shapes"),
        ((state, ibp, rest, shapes, w.float(), idx, sw), r"blend_weights"),
        ((state, ibp, rest.expand(3, -1, -1), shapes, w, idx, sw), r"rest_points must have shape \[V, 3\]"),
    ]
    for args, message in cases:
        with pytest.raises(RuntimeError, match=message):
            op(*args)
    with pytest.raises(ValueError, match="blend_weights must be a tensor, got None"):
        momentum_ops.skin_blended_points(state, ibp, rest, shapes, None, idx, sw)


@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("joints,vertices,influences,shapes", [(7, 3000, 4, 10), (300, 500, 8, 3), (2500, 700, 9, 2)])
def test_cuda_matches_cpu(dtype, joints, vertices, influences, shapes, generator):
    """Forward and every gradient, CUDA against CPU; 2500 joints take the
    global-memory path (matrices do not fit in shared memory)."""
    inputs = make_problem(generator, (6,), joints, vertices, influences, shapes, dtype)
    grad = torch.randn(6, vertices, 3, generator=generator, dtype=torch.float64).to(dtype)
    tol = 1e-10 if dtype == torch.float64 else 1e-3
    cpu = op(*inputs)
    cuda = op(*to("cuda", *inputs))
    torch.testing.assert_close(cuda.cpu(), cpu, rtol=tol, atol=tol)
    cpu_grads = backward_op(grad, *inputs)
    cuda_grads = backward_op(*to("cuda", grad, *inputs))
    for a, b in zip(cuda_grads, cpu_grads):
        scale = 1 + float(b.abs().max())
        torch.testing.assert_close(a.cpu(), b, rtol=tol, atol=tol * scale)


@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
def test_cuda_graph_and_side_stream(generator):
    inputs = to("cuda", *make_problem(generator, (4,), 6, 300, 4, 3))
    expected = op(*inputs)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        on_stream = op(*inputs)
    torch.cuda.current_stream().wait_stream(stream)
    torch.testing.assert_close(on_stream, expected, rtol=0, atol=0)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = op(*inputs)
    graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(captured, expected, rtol=0, atol=0)
