"""Forward kinematics against the float64 reference in reference.py."""

import numpy as np
import pytest
import torch

import momentum_ops
from conftest import DEVICES, DTYPES, HAS_CUDA
from reference import (
    forward_kinematics,
    quat_to_matrix,
    random_joint_parameters,
    random_skeleton,
)

fk_op = torch.ops.momentum.joint_parameters_to_skeleton_state


def assert_matches_reference(state, jp, parents, offsets, pre_rotations, dtype):
    t_ref, r_ref, s_ref = forward_kinematics(jp, parents, offsets, pre_rotations)
    state = state.detach().cpu().double().numpy()
    # float32 error grows with chain depth and with the size of translations.
    tol = 1e-10 if dtype == torch.float64 else 4e-5 * (1 + np.abs(t_ref).max(initial=0))
    np.testing.assert_allclose(state[..., 0:3], t_ref, atol=tol, rtol=0)
    np.testing.assert_allclose(quat_to_matrix(state[..., 3:7]), r_ref, atol=tol, rtol=0)
    np.testing.assert_allclose(state[..., 7], s_ref, atol=tol, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(state[..., 3:7], axis=-1), 1, atol=tol)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("joints,roots,chain", [(1, 1, False), (7, 2, False), (60, 3, False), (300, 4, False), (300, 1, True)])
def test_matches_reference(device, dtype, joints, roots, chain, generator):
    parents, offsets, pre = random_skeleton(joints, generator, roots=roots, dtype=dtype, chain=chain)
    if chain:  # a 300-deep chain: keep it from spiralling far from the origin
        offsets = offsets * 0.1
    jp = random_joint_parameters((5,), joints, generator, dtype=dtype)
    state = momentum_ops.joint_parameters_to_skeleton_state(
        jp.to(device), parents, offsets.to(device), pre.to(device)
    )
    assert state.shape == (5, joints, 8) and state.dtype == dtype and state.device.type == device
    assert_matches_reference(state, jp, parents, offsets, pre, dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "batch_shape", [(), (1,), (3, 2), (2, 1, 3), (0,), (4, 0)], ids=lambda s: "batch" + "x".join(map(str, s))
)
def test_batch_shapes(device, batch_shape, generator):
    parents, offsets, pre = random_skeleton(9, generator, roots=2)
    jp = random_joint_parameters(batch_shape, 9, generator)
    state = fk_op(jp.to(device), parents, offsets.to(device), pre.to(device))
    assert state.shape == batch_shape + (9, 8)
    if state.numel():
        assert_matches_reference(state, jp, parents, offsets, pre, torch.float64)


@pytest.mark.parametrize("device", DEVICES)
def test_flat_layout_and_parents_on_device(device, generator):
    parents, offsets, pre = random_skeleton(11, generator, roots=2)
    jp = random_joint_parameters((4,), 11, generator)
    flat = jp.reshape(4, 77).to(device)
    out = momentum_ops.joint_parameters_to_skeleton_state(flat, parents.to(device), offsets.to(device), pre.to(device))
    assert out.shape == (4, 11, 8)
    assert_matches_reference(out, jp, parents, offsets, pre, torch.float64)
    out32 = momentum_ops.joint_parameters_to_skeleton_state(
        flat, parents.to(torch.int32), offsets.to(device), pre.to(device)
    )
    torch.testing.assert_close(out32, out, rtol=0, atol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_non_contiguous_inputs(device, dtype, generator):
    parents, offsets, pre = random_skeleton(13, generator, roots=2, dtype=dtype)
    jp = random_joint_parameters((6, 3), 13, generator, dtype=dtype)
    # Batch dims transposed, joints strided, skeleton tensors strided too.
    jp_nc = jp.to(device).transpose(0, 1).contiguous().transpose(0, 1)
    offsets_nc = torch.stack([offsets, offsets], dim=-1).flatten(1).to(device)[:, ::2]
    pre_nc = pre.to(device).t().contiguous().t()
    assert not jp_nc.is_contiguous() and not offsets_nc.is_contiguous() and not pre_nc.is_contiguous()
    state = fk_op(jp_nc, parents, offsets_nc, pre_nc)
    assert_matches_reference(state, jp, parents, offsets, pre, dtype)


@pytest.mark.parametrize("device", DEVICES)
def test_nan_stays_in_its_batch_item(device, generator):
    parents, offsets, pre = random_skeleton(10, generator, roots=2)
    jp = random_joint_parameters((4,), 10, generator)
    jp[2, 3, 4] = float("nan")
    state = fk_op(jp.to(device), parents, offsets.to(device), pre.to(device)).cpu()
    assert torch.isfinite(state[[0, 1, 3]]).all()
    assert torch.isnan(state[2]).any()
    assert_matches_reference(state[[0, 1, 3]], jp[[0, 1, 3]], parents, offsets, pre, torch.float64)


# ------------------------------------------------------------------ gradients
@pytest.mark.parametrize("device", DEVICES)
def test_gradcheck(device, generator):
    parents, offsets, pre = random_skeleton(12, generator, roots=3)
    jp = random_joint_parameters((2,), 12, generator).to(device).requires_grad_()
    offsets = offsets.to(device).requires_grad_()
    pre = pre.to(device)
    assert torch.autograd.gradcheck(
        lambda a, b: fk_op(a, parents, b, pre), (jp, offsets), eps=1e-6, atol=1e-7
    )


@pytest.mark.parametrize("device", DEVICES)
def test_gradient_matches_finite_differences_of_reference(device, generator):
    """The backward against central differences of the independent reference,
    for a loss that touches every output (quaternions through matrices)."""
    J = 8
    parents, offsets, pre = random_skeleton(J, generator, roots=2)
    jp = random_joint_parameters((), J, generator)
    weights_t = torch.randn(J, 3, generator=generator, dtype=torch.float64).numpy()
    weights_r = torch.randn(J, 3, 3, generator=generator, dtype=torch.float64).numpy()
    weights_s = torch.randn(J, generator=generator, dtype=torch.float64).numpy()

    def loss_ref(params):
        t, r, s = forward_kinematics(params, parents, offsets, pre)
        return (t * weights_t).sum() + (r * weights_r).sum() + (s * weights_s).sum()

    x = jp.to(device).detach().requires_grad_()
    state = fk_op(x, parents, offsets.to(device), pre.to(device))
    rot = _quat_to_matrix_torch(state[..., 3:7])
    loss = (
        (state[..., :3] * torch.as_tensor(weights_t, device=device)).sum()
        + (rot * torch.as_tensor(weights_r, device=device)).sum()
        + (state[..., 7] * torch.as_tensor(weights_s, device=device)).sum()
    )
    (grad,) = torch.autograd.grad(loss, x)
    numeric = torch.zeros_like(jp)
    h = 1e-6
    for j in range(J):
        for k in range(7):
            plus, minus = jp.clone(), jp.clone()
            plus[j, k] += h
            minus[j, k] -= h
            numeric[j, k] = (loss_ref(plus) - loss_ref(minus)) / (2 * h)
    torch.testing.assert_close(grad.cpu(), numeric, atol=1e-6, rtol=1e-6)


def _quat_to_matrix_torch(q):
    x, y, z, w = q.unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
            2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
            2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).unflatten(-1, (3, 3))


@pytest.mark.parametrize("device", DEVICES)
def test_gradients_float32_match_float64(device, generator):
    parents, offsets, pre = random_skeleton(40, generator, roots=2)
    jp = random_joint_parameters((16,), 40, generator)
    grad_out = torch.randn(16, 40, 8, generator=generator, dtype=torch.float64)
    grads = {}
    for dtype in DTYPES:
        x = jp.to(device, dtype).detach().requires_grad_()
        o = offsets.to(device, dtype).detach().requires_grad_()
        fk_op(x, parents, o, pre.to(device, dtype)).backward(grad_out.to(device, dtype))
        grads[dtype] = (x.grad.double().cpu(), o.grad.double().cpu())
    for g32, g64 in zip(grads[torch.float32], grads[torch.float64]):
        scale = g64.abs().max()
        torch.testing.assert_close(g32, g64, atol=2e-5 * scale, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device, generator):
    parents, offsets, pre = random_skeleton(10, generator, roots=2)
    jp = random_joint_parameters((3,), 10, generator).to(device).requires_grad_()
    offsets = offsets.to(device).requires_grad_()
    torch.library.opcheck(fk_op.default, (jp, parents, offsets, pre.to(device)))
    state = fk_op(jp, parents, offsets, pre.to(device)).detach()
    torch.library.opcheck(
        torch.ops.momentum.joint_parameters_to_skeleton_state_backward.default,
        (torch.randn_like(state), jp.detach(), parents, offsets.detach(), pre.to(device), state),
    )


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU and a CUDA build")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("joints,batch", [(24, 1), (100, 333), (300, 4100), (2500, 3)])
def test_cuda_matches_cpu(dtype, joints, batch, generator):
    """Forward and backward on the GPU against the CPU kernels, including a
    skeleton too large for the inline topology (2500 > 2048 joints)."""
    parents, offsets, pre = random_skeleton(joints, generator, roots=3, dtype=dtype)
    jp = random_joint_parameters((batch,), joints, generator, dtype=dtype)
    grad_out = torch.randn(batch, joints, 8, generator=generator, dtype=dtype)
    results = {}
    for device in ("cpu", "cuda"):
        x = jp.to(device).detach().requires_grad_()
        o = offsets.to(device).detach().requires_grad_()
        state = fk_op(x, parents, o, pre.to(device))
        state.backward(grad_out.to(device))
        results[device] = [state.detach().cpu(), x.grad.cpu(), o.grad.cpu()]
    tol = 1e-9 if dtype == torch.float64 else 1e-3
    for a, b in zip(results["cpu"], results["cuda"]):
        scale = float(a.abs().max()) + 1
        torch.testing.assert_close(b, a, atol=tol * scale, rtol=0)


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU and a CUDA build")
def test_cuda_runs_on_current_stream_and_graph(generator):
    parents, offsets, pre = random_skeleton(30, generator, roots=2, dtype=torch.float32)
    jp = random_joint_parameters((257,), 30, generator, dtype=torch.float32).cuda()
    offsets, pre = offsets.cuda(), pre.cuda()
    expected = fk_op(jp, parents, offsets, pre)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        on_stream = fk_op(jp, parents, offsets, pre)
    stream.synchronize()
    torch.testing.assert_close(on_stream, expected, rtol=0, atol=0)
    # With parents on the CPU the op makes no host sync, so it can be captured.
    graph = torch.cuda.CUDAGraph()
    static_in = jp.clone()
    with torch.cuda.graph(graph):
        static_out = fk_op(static_in, parents, offsets, pre)
    static_in.copy_(jp * 0.5)
    graph.replay()
    torch.testing.assert_close(static_out, fk_op(jp * 0.5, parents, offsets, pre), rtol=0, atol=0)


# ----------------------------------------------------------- parameter transform
def test_model_parameters_to_joint_parameters(generator):
    transform = torch.randn(5 * 7, 4, generator=generator, dtype=torch.float64)
    mp = torch.randn(2, 3, 4, generator=generator, dtype=torch.float64)
    jp = momentum_ops.model_parameters_to_joint_parameters(mp, transform)
    assert jp.shape == (2, 3, 35)
    expected = np.einsum("ij,abj->abi", transform.numpy(), mp.numpy())
    np.testing.assert_allclose(jp.numpy(), expected, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="model_parameters"):
        momentum_ops.model_parameters_to_joint_parameters(mp[..., :3], transform)
    with pytest.raises(ValueError, match="parameter_transform"):
        momentum_ops.model_parameters_to_joint_parameters(mp, transform[:34])
    with pytest.raises(ValueError, match="dtype"):
        momentum_ops.model_parameters_to_joint_parameters(mp.float(), transform)
