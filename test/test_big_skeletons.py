"""The sparse parameter transform, and big skeletons that stay linear in memory.

The transform's forms (dense, COO, CSR) are checked against a dense float64
product written out here; the big-skeleton cases run
``benchmarks/big_skeletons.py``'s child in a fresh process, so that its peak
memory is its own, and check what it reports against the float64 reference
forward kinematics and the IK targets.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import momentum_ops
from momentum_ops.io import load_gltf
from reference import forward_kinematics, random_skeleton

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "big_skeletons.py")
RECURSIVE = os.path.join(ROOT, "test", "assets", "gltf", "RecursiveSkeletons", "RecursiveSkeletons.glb")
# Under AddressSanitizer (tools/sanitize.sh preloads it) resident memory includes its shadow.
SANITIZED = "asan" in os.environ.get("LD_PRELOAD", "")


def _script():
    spec = importlib.util.spec_from_file_location("big_skeletons", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def a_transform(joints, parameters, generator):
    """A dense [7J, P] transform with a few nonzeros per column, and a parameter
    shared by several joints."""
    dense = torch.zeros(7 * joints, parameters, dtype=torch.float64)
    rows = torch.randint(0, 7 * joints, (3 * parameters,), generator=generator)
    columns = torch.arange(3 * parameters) % parameters
    dense[rows, columns] = torch.randn(3 * parameters, generator=generator, dtype=torch.float64)
    dense[3::7, 0] = 0.5
    return dense


@pytest.mark.parametrize("form", ["dense", "coo", "csr", "csc", "coo_with_duplicates"])
def test_every_form_of_the_transform_gives_the_same_character(form, generator):
    J, P = 6, 9
    names = [f"j{i}" for i in range(J)]
    parents, offsets, pre = random_skeleton(J, generator, roots=1)
    dense = a_transform(J, P, generator)
    if form == "dense":
        given = dense
    elif form == "coo":
        given = dense.to_sparse()
    elif form == "csr":
        given = dense.to_sparse_csr()
    elif form == "csc":
        given = dense.to_sparse_csc()
    else:  # each entry split in two halves: duplicates add up
        index = torch.nonzero(dense).t()
        values = dense[index[0], index[1]]
        given = torch.sparse_coo_tensor(torch.cat([index, index], 1), torch.cat([values / 2, values / 2]), dense.shape,
                                        check_invariants=True)
    character = momentum_ops.Character(names, parents, offsets, pre, parameter_transform=given)
    assert character.num_parameters == P
    assert torch.equal(character.parameter_transform, dense)
    assert torch.equal(character.parameter_transform_sparse.to_dense(), dense)
    assert character.transform_values.numel() == int((dense != 0).sum())
    theta = torch.randn(4, P, generator=generator, dtype=torch.float64)
    expected = theta.numpy() @ dense.numpy().T
    np.testing.assert_allclose(character.model_parameters_to_joint_parameters(theta).numpy(), expected,
                               rtol=1e-13, atol=1e-13)
    # The free function takes the same forms.
    function = momentum_ops.model_parameters_to_joint_parameters(theta, given)
    np.testing.assert_allclose(function.numpy(), expected, rtol=1e-13, atol=1e-13)


def test_sparse_product_gradients_match_finite_differences(generator):
    J, P = 4, 5
    dense = a_transform(J, P, generator)
    index = torch.nonzero(dense).t()
    values = dense[index[0], index[1]].clone().requires_grad_()
    theta = torch.randn(3, P, generator=generator, dtype=torch.float64, requires_grad=True)

    def product(theta, values):
        sparse = torch.sparse_coo_tensor(index, values, dense.shape)
        return momentum_ops.model_parameters_to_joint_parameters(theta, sparse)

    assert torch.autograd.gradcheck(lambda th: product(th, values.detach()), (theta,))
    character = momentum_ops.Character([f"j{i}" for i in range(J)], *random_skeleton(J, generator, roots=1),
                                       parameter_transform=dense)
    assert torch.autograd.gradcheck(character.model_parameters_to_joint_parameters, (theta,))


def test_transform_errors_name_the_argument(generator):
    parents, offsets, pre = random_skeleton(3, generator, roots=1)
    names = ["a", "b", "c"]
    bad = torch.eye(21, dtype=torch.float64)
    bad[0, 0] = float("nan")
    cases = [
        (bad, "parameter_transform has NaN or infinite values"),
        (bad.to_sparse(), "parameter_transform has NaN or infinite values"),
        (torch.eye(20), r"parameter_transform must have shape \[21, P\]"),
        (torch.eye(21, dtype=torch.int64), "parameter_transform must be floating point"),
        (torch.sparse_coo_tensor(torch.tensor([[0], [0]]), torch.ones(1, 2), (21, 3, 2)),
         r"parameter_transform must have shape \[21, P\]"),
    ]
    for transform, match in cases:
        with pytest.raises(ValueError, match=match):
            momentum_ops.Character(names, parents, offsets, pre, parameter_transform=transform)


def run_child(path, batch=2, constraints=24, iterations=40):
    return _script().run_case(path, "cpu", batch, constraints, iterations)


@pytest.mark.slow
def test_a_generated_5000_joint_tree_loads_poses_and_solves_in_linear_memory(tmp_path, generator):
    path = str(tmp_path / "humanoid_5000.glb")
    subprocess.run([sys.executable, SCRIPT, "--generate", path, "--generate-joints", "5000"], check=True)
    figures = run_child(path)
    assert figures["joints"] == 5000 and figures["parameters"] == 35000 and figures["entries"] == 35000
    if not SANITIZED:
        assert figures["peak_bytes"] < 1.5e9, f"peak memory {figures['peak_bytes'] / 2**20:.0f} MiB"
    assert figures["vertices_finite"]
    assert figures["max_miss"] < 1e-9 * (1 + figures["initial_error"]), figures
    # The loaded tree poses as the float64 reference FK says.
    character = load_gltf(path, dtype=torch.float64)
    joint_parameters = 0.2 * torch.randn(5000, 7, generator=generator, dtype=torch.float64)
    joint_parameters[:, 6] = 0.1 * joint_parameters[:, 6]
    state = character.joint_parameters_to_skeleton_state(joint_parameters)
    translations, _, scales = forward_kinematics(joint_parameters, character.parents, character.offsets,
                                                 character.pre_rotations)
    np.testing.assert_allclose(state[:, :3].numpy(), translations, atol=1e-10)
    np.testing.assert_allclose(state[:, 7].numpy(), scales, rtol=1e-12)


@pytest.mark.slow
def test_recursive_skeletons_solves_over_a_subset_in_bounded_memory():
    figures = run_child(RECURSIVE, batch=1, constraints=12, iterations=40)
    assert figures["joints"] == 840 and figures["entries"] == 5880
    if not SANITIZED:
        assert figures["peak_bytes"] < 1.5e9
    assert figures["max_miss"] < 1e-9 * (1 + figures["initial_error"]), figures


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU and a CUDA build")
def test_cuda_solves_a_big_skeleton_and_its_jacobian_matches_the_cpu(generator):
    """RecursiveSkeletons' index arrays (35k words) exceed what the IK kernels
    take by value, so this runs the path that reads them from device memory."""
    character = load_gltf(RECURSIVE, dtype=torch.float64)
    P = character.num_parameters
    joints = torch.tensor([100, 400, 839])
    active = torch.zeros(P, dtype=torch.bool)
    for j in joints.tolist():
        while j >= 0:
            active[7 * j + 3: 7 * j + 6] = True
            j = int(character.parents[j])
    truth = torch.zeros(2, P, dtype=torch.float64)
    truth[:, active] = 0.05 * torch.randn(2, int(active.sum()), generator=generator, dtype=torch.float64)
    state = character.joint_parameters_to_skeleton_state(character.model_parameters_to_joint_parameters(truth))
    targets = state[:, joints, :3]
    offsets = torch.zeros(3, 3, dtype=torch.float64)
    cpu = momentum_ops.position_residuals_and_jacobian(character, truth, joints, offsets, targets + 1)
    gpu_character = character.to("cuda")
    gpu = momentum_ops.position_residuals_and_jacobian(gpu_character, truth.cuda(), joints, offsets.cuda(),
                                                       targets.cuda() + 1)
    torch.testing.assert_close(gpu[0].cpu(), cpu[0], atol=1e-9, rtol=0)
    torch.testing.assert_close(gpu[1].cpu(), cpu[1], atol=1e-9, rtol=1e-9)
    result = momentum_ops.solve_ik(gpu_character, torch.zeros(2, P, dtype=torch.float64, device="cuda"),
                                   position_joints=joints, position_targets=targets.cuda(),
                                   active_parameters=active, max_iterations=50)
    reached = gpu_character.joint_parameters_to_skeleton_state(
        gpu_character.model_parameters_to_joint_parameters(result.model_parameters))[:, joints, :3]
    assert float((reached.cpu() - targets).norm(dim=-1).max()) < 1e-9 * float(targets.norm(dim=-1).max())


def test_a_loaded_state_dict_and_learnt_values_reach_the_joint_parameters(generator):
    """The dense copy of a small transform follows load_state_dict, and values
    that require grad are used (and get their gradient) through the entries."""
    J, P = 5, 7
    parents, offsets, pre = random_skeleton(J, generator, roots=1)
    dense = a_transform(J, P, generator)
    character = momentum_ops.Character([f"j{i}" for i in range(J)], parents, offsets, pre, parameter_transform=dense)
    theta = torch.randn(2, P, generator=generator, dtype=torch.float64)
    state = character.state_dict()
    state["transform_values"] = 2 * state["transform_values"]
    character.load_state_dict(state)
    np.testing.assert_allclose(character.model_parameters_to_joint_parameters(theta).numpy(),
                               theta.numpy() @ (2 * dense).numpy().T, rtol=1e-13, atol=1e-13)
    character.transform_values.requires_grad_()
    joint_parameters = character.model_parameters_to_joint_parameters(theta)
    (grad,) = torch.autograd.grad(joint_parameters.sum(), character.transform_values)
    rows, columns = character.transform_index
    # d/d value_e of sum_b sum_r (T theta_b)_r = sum_b theta_b[column_e]
    np.testing.assert_allclose(grad.numpy(), theta.sum(0)[columns].numpy(), rtol=1e-13)
