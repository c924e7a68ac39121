"""Inverse FK, local skeleton states and vertex normals against independent
float64 references (reference.py's matrices, a per-triangle loop)."""

import numpy as np
import pytest
import torch

import momentum_ops
from conftest import DEVICES
from reference import forward_kinematics, quat_to_matrix, random_joint_parameters, random_skeleton, rot_x, rot_y, rot_z


def test_local_states_are_each_joints_own_transform(generator):
    parents, offsets, pre = random_skeleton(7, generator, roots=2)
    jp = random_joint_parameters((3,), 7, generator)
    local = momentum_ops.joint_parameters_to_local_skeleton_state(jp, offsets, pre).numpy()
    pre_m = quat_to_matrix(pre.numpy())
    for b in range(3):
        for j in range(7):
            tx, ty, tz, rx, ry, rz, s = jp[b, j].tolist()
            np.testing.assert_allclose(local[b, j, :3], offsets[j].numpy() + [tx, ty, tz], atol=1e-12)
            np.testing.assert_allclose(quat_to_matrix(local[b, j, 3:7]), pre_m[j] @ rot_z(rz) @ rot_y(ry) @ rot_x(rx),
                                       atol=1e-12)
            np.testing.assert_allclose(local[b, j, 7], 2.0 ** s, rtol=1e-12)
    # The flat layout works too.
    torch.testing.assert_close(momentum_ops.joint_parameters_to_local_skeleton_state(jp.flatten(-2), offsets, pre),
                               torch.from_numpy(local))


@pytest.mark.parametrize("device", DEVICES)
def test_inverse_fk_recovers_the_parameters(device, generator):
    """For Euler angles in the principal range (|ry| < pi/2), inverse FK
    returns the very parameters; for any others, FK of its result is the state."""
    parents, offsets, pre = random_skeleton(9, generator, roots=2)
    jp = random_joint_parameters((4,), 9, generator, scale=0.6)
    jp[..., 3:6] = jp[..., 3:6].clamp(-1.4, 1.4)
    to = lambda *xs: [x.to(device) for x in xs]  # noqa: E731
    jp, offsets_d, pre_d = to(jp, offsets, pre)
    state = momentum_ops.joint_parameters_to_skeleton_state(jp, parents, offsets_d, pre_d)
    recovered = momentum_ops.skeleton_state_to_joint_parameters(state, parents, offsets_d, pre_d)
    torch.testing.assert_close(recovered, jp, atol=1e-10, rtol=0)

    wild = random_joint_parameters((4,), 9, generator, scale=3.0).to(device)  # angles beyond the principal range
    state = momentum_ops.joint_parameters_to_skeleton_state(wild, parents, offsets_d, pre_d)
    again = momentum_ops.joint_parameters_to_skeleton_state(
        momentum_ops.skeleton_state_to_joint_parameters(state, parents, offsets_d, pre_d), parents, offsets_d, pre_d)
    t_ref, r_ref, s_ref = forward_kinematics(wild.cpu(), parents, offsets, pre)
    np.testing.assert_allclose(again[..., :3].cpu().numpy(), t_ref, atol=1e-9)
    np.testing.assert_allclose(quat_to_matrix(again[..., 3:7].cpu().numpy()), r_ref, atol=1e-9)
    np.testing.assert_allclose(again[..., 7].cpu().numpy(), s_ref, rtol=1e-9)


def test_inverse_fk_is_differentiable(generator):
    parents, offsets, pre = random_skeleton(5, generator, roots=1)
    jp = random_joint_parameters((2,), 5, generator)
    state = momentum_ops.joint_parameters_to_skeleton_state(jp, parents, offsets, pre).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda s: momentum_ops.skeleton_state_to_joint_parameters(s, parents, offsets, pre), (state,))


def test_inverse_fk_bad_calls(generator):
    parents, offsets, pre = random_skeleton(4, generator, roots=1)
    state = torch.zeros(2, 4, 8, dtype=torch.float64)
    f = momentum_ops.skeleton_state_to_joint_parameters
    with pytest.raises(ValueError, match="skeleton_state must be a tensor, got None"):
        f(None, parents, offsets, pre)
    with pytest.raises(ValueError, match=r"skeleton_state must have shape \[\.\.\., 4, 8\], got \[2, 4, 7\]"):
        f(state[..., :7], parents, offsets, pre)
    with pytest.raises(ValueError, match="parents must hold integers"):
        f(state, parents.float(), offsets, pre)
    with pytest.raises(ValueError, match=r"parents\[1\] = 7 is not -1"):
        f(state, torch.tensor([-1, 7, 0, 0]), offsets, pre)
    with pytest.raises(ValueError, match="offsets is torch.float32"):
        f(state, parents, offsets.float(), pre)


def reference_normals(vertices, faces):
    normals = np.zeros_like(vertices)
    for a, b, c in faces:
        n = np.cross(vertices[b] - vertices[a], vertices[c] - vertices[a])  # |n| = 2 * area
        for v in (a, b, c):
            normals[v] += n
    lengths = np.linalg.norm(normals, axis=1, keepdims=True)
    return np.where(lengths > 0, normals / np.where(lengths > 0, lengths, 1), 0)


@pytest.mark.parametrize("device", DEVICES)
def test_vertex_normals(device, generator):
    path = "test/assets/gltf/Fox/Fox.glb"
    import os

    fox = momentum_ops.io.load_gltf(os.path.join(os.path.dirname(__file__), "..", path), dtype=torch.float64)
    vertices = fox.rest_vertices + 0.01 * torch.randn(fox.rest_vertices.shape, generator=generator,
                                                      dtype=torch.float64)
    faces = fox.faces
    got = momentum_ops.compute_vertex_normals(torch.stack([vertices, 2 * vertices]).to(device), faces.to(device))
    expected = reference_normals(vertices.numpy(), faces.numpy())
    np.testing.assert_allclose(got[0].cpu().numpy(), expected, atol=1e-10)
    np.testing.assert_allclose(got[1].cpu().numpy(), expected, atol=1e-10)  # scaling keeps the directions
    # A vertex in no triangle gets zero; a flat square's normals point along +z.
    square = torch.tensor([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [5, 5, 5]], dtype=torch.float64)
    normals = momentum_ops.compute_vertex_normals(square, torch.tensor([[0, 1, 2], [0, 2, 3]]))
    torch.testing.assert_close(normals[:4], torch.tensor([[0.0, 0, 1]] * 4, dtype=torch.float64))
    torch.testing.assert_close(normals[4], torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="faces must index the 5 vertices"):
        momentum_ops.compute_vertex_normals(square, torch.tensor([[0, 1, 5]]))
    with pytest.raises(ValueError, match="faces must hold integers"):
        momentum_ops.compute_vertex_normals(square, torch.tensor([[0.0, 1.0, 2.0]]))


def test_vertex_normals_are_differentiable(generator):
    vertices = torch.randn(6, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    faces = torch.tensor([[0, 1, 2], [2, 1, 3], [3, 4, 5], [0, 2, 5]])
    assert torch.autograd.gradcheck(lambda v: momentum_ops.compute_vertex_normals(v, faces), (vertices,))
