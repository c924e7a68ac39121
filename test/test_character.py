"""The Character module and the skeleton-state / quaternion helpers."""

import os

import numpy as np
import pytest
import torch

import momentum_ops
from conftest import DEVICES, HAS_CUDA
from momentum_ops import quaternion, skel_state
from momentum_ops.io import load_gltf, load_gltf_motion
from reference import (
    forward_kinematics,
    quat_to_matrix,
    random_states,
    random_unit_quaternions,
    rot_x,
    rot_y,
    rot_z,
    skin_points,
    state_matrices,
)
from scripting import run_in_cpp, run_in_fresh_python

ASSETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "gltf")
FOX = os.path.join(ASSETS, "Fox", "Fox.glb")


@pytest.fixture
def fox():
    return load_gltf(FOX, dtype=torch.float64)


def test_forward_is_fk_then_skinning(fox, generator):
    mp = 0.3 * torch.randn(2, fox.num_parameters, generator=generator, dtype=torch.float64)
    vertices = fox(mp)
    jp = (mp @ fox.parameter_transform.T).reshape(2, fox.num_joints, 7)
    t, r, s = forward_kinematics(jp, fox.parents, fox.offsets, fox.pre_rotations)
    state = np.concatenate([t, quaternion.from_matrix(torch.from_numpy(r)).numpy(), s[..., None]], axis=-1)
    expected = skin_points(torch.from_numpy(state), fox.inverse_bind_pose, fox.rest_vertices, fox.skin_indices, fox.skin_weights)
    np.testing.assert_allclose(vertices.detach().numpy(), expected, atol=1e-10, rtol=0)


def test_parameter_transform_and_limits(generator):
    names = ["root", "arm"]
    parents = torch.tensor([-1, 0])
    offsets = torch.tensor([[0.0, 0, 0], [1.0, 0, 0]])
    pre = torch.tensor([[0.0, 0, 0, 1]] * 2)
    transform = torch.zeros(14, 2)
    transform[0, 0] = 1.0  # root tx
    transform[7 + 5, 1] = 1.0  # arm rz
    character = momentum_ops.Character(
        names, parents, offsets, pre, parameter_transform=transform, parameter_names=["move", "bend"],
        parameter_min=torch.tensor([-1.0, -0.5]), parameter_max=torch.tensor([1.0, 0.5]),
    )
    jp = character.model_parameters_to_joint_parameters(torch.tensor([0.5, np.pi / 2]))
    state = character.joint_parameters_to_skeleton_state(jp)
    torch.testing.assert_close(state[1, :3], torch.tensor([1.5, 0.0, 0.0]))
    torch.testing.assert_close(quaternion.rotate(state[1, 3:7], torch.tensor([1.0, 0, 0])), torch.tensor([0.0, 1.0, 0.0]), atol=1e-6, rtol=0)
    assert character.parameter_names == ["move", "bend"]


@pytest.mark.parametrize(
    "change,match",
    [
        (dict(parents=torch.tensor([-1, 2, 1])), r"parents\[1\] = 2"),
        (dict(offsets=torch.zeros(3, 2)), r"offsets must have shape \[3, 3\]"),
        (dict(offsets=torch.tensor([[0.0, 0, 0], [1, float("nan"), 0], [0, 0, 0]])), "offsets has NaN"),
        (dict(pre_rotations=torch.ones(3, 4)), "unit quaternions"),
        (dict(parameter_transform=torch.zeros(20, 2)), r"parameter_transform must have shape \[21, P\]"),
        (dict(parameter_min=torch.zeros(21), parameter_max=-torch.ones(21)), "must not exceed"),
        (dict(rest_vertices=torch.zeros(4, 3), skin_indices=torch.full((4, 1), 3), skin_weights=torch.ones(4, 1)), r"skin_indices must be joint indices in \[0, 3\)"),
        (dict(rest_vertices=torch.zeros(4, 3), faces=torch.tensor([[0, 1, 4]])), "faces must index the 4 vertices"),
        (dict(inverse_bind_pose=torch.zeros(3, 3, 3)), r"inverse_bind_pose must have shape \[3, 4, 4\]"),
    ],
)
def test_construction_is_validated(change, match):
    args = dict(joint_names=["a", "b", "c"], parents=torch.tensor([-1, 0, 1]), offsets=torch.zeros(3, 3),
                pre_rotations=torch.tensor([[0.0, 0, 0, 1]] * 3))
    args.update(change)
    with pytest.raises(ValueError, match=match):
        momentum_ops.Character(**args)


def test_module_behaviour(fox, tmp_path):
    f32 = load_gltf(FOX).to(torch.float32)
    assert f32.offsets.dtype == torch.float32 and f32.parents.dtype == torch.int64
    state = fox.state_dict()
    assert {"parents", "offsets", "pre_rotations", "transform_index", "transform_values", "inverse_bind_pose", "rest_vertices",
            "faces", "skin_indices", "skin_weights", "parameter_min", "parameter_max"} <= set(state)
    clone = load_gltf(FOX, dtype=torch.float64)
    clone.load_state_dict(state)
    mp = torch.zeros(1, fox.num_parameters, dtype=torch.float64)
    torch.testing.assert_close(clone(mp), fox(mp))


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU and a CUDA build")
def test_to_cuda_keeps_parents_on_cpu(fox, generator):
    mp = 0.2 * torch.randn(3, fox.num_parameters, generator=generator, dtype=torch.float64)
    expected = fox(mp)
    gpu = load_gltf(FOX, dtype=torch.float64).to("cuda")
    assert gpu.offsets.is_cuda and gpu.skin_indices.is_cuda and not gpu.parents.is_cuda
    torch.testing.assert_close(gpu(mp.cuda()).cpu(), expected, atol=1e-9, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
def test_scripted_character_in_python_and_cpp(device, tmp_path, cpp_runner, generator):
    character = load_gltf(os.path.join(ASSETS, "RiggedFigure", "RiggedFigure.glb"), dtype=torch.float64)
    example = 0.2 * torch.randn(2, character.num_parameters, generator=generator, dtype=torch.float64)
    character.register_buffer("example_input", example)
    scripted = torch.jit.script(character)
    path = str(tmp_path / "character.pt")
    scripted.save(path)
    expected = character(example)
    torch.testing.assert_close(scripted(example), expected)
    torch.testing.assert_close(run_in_fresh_python(path, str(tmp_path / "out.pt"), device), expected, atol=1e-10, rtol=0)
    torch.testing.assert_close(run_in_cpp(cpp_runner, path, str(tmp_path / "out.bin"), expected.shape, device), expected, atol=1e-10, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_compiled_character_dynamic_batch(device, generator):
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    character = load_gltf(os.path.join(ASSETS, "RiggedSimple", "RiggedSimple.glb")).to(device)
    counter = CompileCounterWithBackend("inductor")
    compiled = torch.compile(character, backend=counter, fullgraph=True, dynamic=True)
    for batch in (5, 2, 13):
        mp = 0.3 * torch.randn(batch, character.num_parameters, generator=generator).to(device)
        torch.testing.assert_close(compiled(mp), character(mp), atol=1e-5, rtol=1e-5)
    assert counter.frame_count == 1


def test_posed_vertices_are_differentiable(fox, generator):
    mp = (0.2 * torch.randn(1, fox.num_parameters, generator=generator, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: fox(x)[:, ::97], (mp,), eps=1e-6, atol=1e-6)


# ----------------------------------------------------------------- helpers
def test_euler_convention_matches_fk(generator):
    angles = torch.randn(20, 3, generator=generator, dtype=torch.float64) * 2
    q = quaternion.from_euler_xyz(angles)
    for a, m in zip(angles.numpy(), quat_to_matrix(q.numpy())):
        np.testing.assert_allclose(m, rot_z(a[2]) @ rot_y(a[1]) @ rot_x(a[0]), atol=1e-12)
    back = quaternion.from_euler_xyz(quaternion.to_euler_xyz(q))
    np.testing.assert_allclose(quat_to_matrix(back.numpy()), quat_to_matrix(q.numpy()), atol=1e-12)


def test_quaternion_helpers(generator):
    a, b = random_unit_quaternions(10, generator), random_unit_quaternions(10, generator)
    v = torch.randn(10, 3, generator=generator, dtype=torch.float64)
    ma, mb = quat_to_matrix(a.numpy()), quat_to_matrix(b.numpy())
    np.testing.assert_allclose(quat_to_matrix(quaternion.multiply(a, b).numpy()), ma @ mb, atol=1e-12)
    np.testing.assert_allclose(quaternion.rotate(a, v).numpy(), np.einsum("nij,nj->ni", ma, v.numpy()), atol=1e-12)
    np.testing.assert_allclose(quaternion.to_matrix(a).numpy(), ma, atol=1e-12)
    np.testing.assert_allclose(quat_to_matrix(quaternion.from_matrix(torch.from_numpy(ma)).numpy()), ma, atol=1e-12)
    np.testing.assert_allclose(quat_to_matrix(quaternion.conjugate(a).numpy()), ma.transpose(0, 2, 1), atol=1e-12)
    mid = quaternion.slerp(a, b, torch.full((10,), 0.5, dtype=torch.float64))
    d_a = np.abs((mid * a).sum(-1).numpy())
    d_b = np.abs((mid * b).sum(-1).numpy())
    np.testing.assert_allclose(d_a, d_b, atol=1e-12)  # equidistant


def test_skel_state_helpers(generator):
    a, b = random_states((6,), 1, generator)[:, 0], random_states((6,), 1, generator)[:, 0]
    ma, mb = state_matrices(a), state_matrices(b)
    np.testing.assert_allclose(state_matrices(skel_state.multiply(a, b)), ma @ mb, atol=1e-12)
    np.testing.assert_allclose(state_matrices(skel_state.inverse(a)), np.linalg.inv(ma), atol=1e-12)
    np.testing.assert_allclose(skel_state.to_matrix(a).numpy(), ma, atol=1e-12)
    np.testing.assert_allclose(state_matrices(skel_state.from_matrix(torch.from_numpy(ma))), ma, atol=1e-12)
    p = torch.randn(6, 3, generator=generator, dtype=torch.float64)
    expected = np.einsum("nij,nj->ni", ma, np.concatenate([p.numpy(), np.ones((6, 1))], 1))[:, :3]
    np.testing.assert_allclose(skel_state.transform_points(a, p).numpy(), expected, atol=1e-12)
    ident = skel_state.identity((6,), dtype=torch.float64)
    torch.testing.assert_close(skel_state.multiply(ident, a), a)
    sheared = torch.from_numpy(ma.copy())
    sheared[:, 0, 1] += 0.5
    with pytest.raises(ValueError, match="not a similarity transform"):
        skel_state.from_matrix(sheared)
    # differentiable
    x = a.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda s: skel_state.transform_points(skel_state.inverse(s), p), (x,))
