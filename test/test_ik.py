"""Inverse kinematics: recovery on real characters, agreement with SciPy, the
residual/Jacobian op against finite differences, the implicit-function
gradients against finite differences of the whole solve, and devices."""

import collections
import os

import numpy as np
import pytest
import torch

import momentum_ops
from conftest import DEVICES, HAS_CUDA
from momentum_ops.io import load_gltf
from reference import forward_kinematics, quat_to_matrix, random_skeleton
from scripting import run_in_cpp, run_in_fresh_python

ASSETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "gltf")


def character_of(name, dtype=torch.float64):
    path = {"CesiumMan": "CesiumMan/CesiumMan.glb", "Fox": "Fox/Fox.glb", "sort_joints": "momentum/sort_joints.glb",
            "RiggedFigure": "RiggedFigure/RiggedFigure.glb", "RiggedSimple": "RiggedSimple/RiggedSimple.glb"}[name]
    return load_gltf(os.path.join(ASSETS, path), dtype=dtype)


def rotations_and_root_translation(character):
    active = torch.zeros(character.num_parameters, dtype=torch.bool)
    for j in range(character.num_joints):
        active[7 * j + 3: 7 * j + 6] = True
    active[0:3] = True
    return active


def joint_positions(character, theta):
    jp = character.model_parameters_to_joint_parameters(theta)
    return character.joint_parameters_to_skeleton_state(jp)[..., :3]


def character_size(character):
    rest = joint_positions(character, torch.zeros(character.num_parameters, dtype=character.offsets.dtype))
    return float((rest.max(0).values - rest.min(0).values).norm())


def random_poses(character, active, count, generator, scale=0.5):
    theta = torch.zeros(count, character.num_parameters, dtype=character.offsets.dtype)
    theta[:, active] = (torch.rand(count, int(active.sum()), generator=generator, dtype=torch.float64) * 2 - 1).to(theta.dtype) * scale
    return theta


# -------------------------------------------------------------------- recovery
@pytest.mark.parametrize("name,count", [("CesiumMan", 200), ("Fox", 200), ("sort_joints", 4)])
def test_recovery_from_the_zero_pose(name, count, generator, capsys):
    character = character_of(name)
    active = rotations_and_root_translation(character)
    truth = random_poses(character, active, count, generator)
    targets = joint_positions(character, truth)
    J = character.num_joints
    result = momentum_ops.solve_ik(
        character, torch.zeros_like(truth), position_joints=torch.arange(J), position_targets=targets,
        active_parameters=active, max_iterations=100,
    )
    rms = (joint_positions(character, result.model_parameters) - targets).square().sum(-1).mean(-1).sqrt()
    size = character_size(character)
    solved = rms < 1e-6 * size
    histogram = collections.Counter(result.iterations.tolist())
    with capsys.disabled():
        print(f"\n{name}: {int(solved.sum())}/{count} recovered (RMS < 1e-6 x size {size:.3g}); "
              f"iterations: {dict(sorted(histogram.items()))}; worst RMS {float(rms.max()):.3g}")
    assert solved.double().mean() >= 0.99, f"only {int(solved.sum())}/{count} problems recovered"
    assert torch.isfinite(result.error).all()
    # Inactive parameters stay where they started.
    assert (result.model_parameters[:, ~active] == 0).all()


# ----------------------------------------------------------------------- SciPy
def build_limited_character(generator):
    base = character_of("RiggedFigure")
    P = base.num_parameters
    pmin = torch.full((P,), -float("inf"), dtype=torch.float64)
    pmax = torch.full((P,), float("inf"), dtype=torch.float64)
    limited = torch.randperm(P, generator=generator)[: P // 3]
    pmin[limited] = -0.2
    pmax[limited] = 0.25
    return momentum_ops.Character(
        base.joint_names, base.parents, base.offsets, base.pre_rotations, parameter_min=pmin, parameter_max=pmax,
        inverse_bind_pose=base.inverse_bind_pose,
    )


def reference_residuals(character, theta, active, full_init, problem):
    """The residual vector f with E = sum f^2, from the float64 reference FK."""
    full = full_init.copy()
    full[active] = theta
    T = character.parameter_transform.numpy()
    J = character.num_joints
    jp = (T @ full).reshape(J, 7)
    t, r, s = forward_kinematics(torch.from_numpy(jp), character.parents, character.offsets, character.pre_rotations)
    f = []
    for c, j in enumerate(problem["position_joints"]):
        p = t[j] + s[j] * r[j] @ problem["position_offsets"][c]
        f.append(np.sqrt(problem["position_weights"][c]) * (p - problem["position_targets"][c]))
    for o, j in enumerate(problem["orientation_joints"]):
        rot = r[j] @ quat_to_matrix(problem["orientation_offsets"][o])
        f.append(np.sqrt(problem["orientation_weights"][o]) * (rot - quat_to_matrix(problem["orientation_targets"][o])).ravel())
    pmin, pmax = character.parameter_min.numpy(), character.parameter_max.numpy()
    limit = np.maximum(0, pmin - full) + np.maximum(0, full - pmax)
    f.append(np.sqrt(problem["limit_weight"]) * limit)
    f.append(np.sqrt(problem["regularization_weight"]) * (full - problem["regularization_target"]))
    return np.concatenate([np.ravel(x) for x in f])


def test_final_objective_matches_scipy(generator):
    from scipy.optimize import least_squares

    character = build_limited_character(generator)
    J, P = character.num_joints, character.num_parameters
    active = rotations_and_root_translation(character)
    truth = random_poses(character, active, 3, generator, scale=0.4)
    position_joints = torch.arange(2, J)
    targets = joint_positions(character, truth)[:, position_joints]
    targets = targets + 0.02 * torch.randn(targets.shape, generator=generator, dtype=torch.float64)
    orientation_joints = torch.tensor([5, 12])
    state = character.joint_parameters_to_skeleton_state(character.model_parameters_to_joint_parameters(truth))
    orientation_targets = torch.nn.functional.normalize(
        state[:, orientation_joints, 3:7] + 0.05 * torch.randn(3, 2, 4, generator=generator, dtype=torch.float64), dim=-1)
    weights = 0.5 + torch.rand(len(position_joints), generator=generator, dtype=torch.float64)
    reg_weight = torch.full((P,), 1e-2, dtype=torch.float64)
    reg_target = 0.1 * torch.randn(P, generator=generator, dtype=torch.float64)
    result = momentum_ops.solve_ik(
        character, torch.zeros(3, P, dtype=torch.float64), position_joints=position_joints, position_targets=targets,
        position_weights=weights, orientation_joints=orientation_joints, orientation_targets=orientation_targets,
        orientation_weights=torch.tensor([0.3, 0.7], dtype=torch.float64), limit_weight=10.0,
        regularization_target=reg_target, regularization_weight=reg_weight, active_parameters=active,
        max_iterations=200, tolerance=1e-15,
    )
    for b in range(3):
        problem = dict(
            position_joints=position_joints.tolist(), position_offsets=np.zeros((len(position_joints), 3)),
            position_targets=targets[b].numpy(), position_weights=weights.numpy(),
            orientation_joints=orientation_joints.tolist(), orientation_offsets=np.array([[0, 0, 0, 1.0]] * 2),
            orientation_targets=orientation_targets[b].numpy(), orientation_weights=np.array([0.3, 0.7]),
            limit_weight=10.0, regularization_target=reg_target.numpy(), regularization_weight=reg_weight.numpy(),
        )
        full_init = np.zeros(P)
        fit = least_squares(
            lambda x: reference_residuals(character, x, active.numpy(), full_init, problem), np.zeros(int(active.sum())),
            method="trf", jac="3-point", ftol=1e-15, xtol=1e-15, gtol=1e-15, max_nfev=5000,
        )
        scipy_energy = 2 * fit.cost
        ours = float(result.error[b])
        assert abs(ours - scipy_energy) <= 1e-6 * scipy_energy, (b, ours, scipy_energy)
        # and our reported energy is the energy of our parameters
        f = reference_residuals(character, result.model_parameters[b, active].numpy(), active.numpy(), full_init, problem)
        assert abs(float(f @ f) - ours) <= 1e-9 * ours


# ---------------------------------------------------------- residuals/Jacobian
@pytest.mark.parametrize("device", DEVICES)
def test_residuals_and_jacobian_against_finite_differences(device, generator):
    J, P = 9, 12
    parents, offsets, pre = random_skeleton(J, generator, roots=2)
    transform = torch.randn(7 * J, P, generator=generator, dtype=torch.float64) * (
        torch.rand(7 * J, P, generator=generator) < 0.3).double()
    character = momentum_ops.Character([f"j{i}" for i in range(J)], parents, offsets, pre, parameter_transform=transform)
    joints = torch.tensor([8, 3, 5, 0])
    local = torch.randn(4, 3, generator=generator, dtype=torch.float64)
    theta = 0.3 * torch.randn(2, P, generator=generator, dtype=torch.float64)
    targets = torch.randn(2, 4, 3, generator=generator, dtype=torch.float64)
    character = character.to(device)
    residuals, jacobian = momentum_ops.position_residuals_and_jacobian(
        character, theta.to(device), joints, local.to(device), targets.to(device))
    assert residuals.shape == (2, 4, 3) and jacobian.shape == (2, 12, P)

    def reference(th):
        jp = (transform @ th).reshape(J, 7)
        t, r, s = forward_kinematics(jp, parents, offsets, pre)
        return np.stack([t[j] + s[j] * r[j] @ local[c].numpy() for c, j in enumerate(joints.tolist())])

    h = 1e-6
    for b in range(2):
        np.testing.assert_allclose(residuals[b].cpu().numpy(), reference(theta[b]) - targets[b].numpy(), atol=1e-12)
        for p in range(P):
            plus, minus = theta[b].clone(), theta[b].clone()
            plus[p] += h
            minus[p] -= h
            column = (reference(plus) - reference(minus)).reshape(-1) / (2 * h)
            np.testing.assert_allclose(jacobian[b, :, p].cpu().numpy(), column, atol=1e-7, rtol=1e-6)


# --------------------------------------------------------- implicit gradients
def gradient_problem(generator, device="cpu", noise=1e-4, regularization=1e-3):
    """A small, well-posed problem: targets reached by a true pose, then
    perturbed by `noise`, and a regularisation pull away from the truth."""
    character = character_of("RiggedSimple").to(device)
    J, P = character.num_joints, character.num_parameters
    active = rotations_and_root_translation(character)
    # Joint 1 (a non-joint node at joint 0's origin) would rotate together with
    # joint 0: a direction only the regularisation pins down. Freeze it.
    active[7 + 3: 7 + 6] = False
    truth = random_poses(character, active, 2, generator, scale=0.4).to(device)
    state = character.joint_parameters_to_skeleton_state(character.model_parameters_to_joint_parameters(truth))
    jitter = lambda *shape: noise * torch.randn(*shape, generator=generator, dtype=torch.float64).to(device)  # noqa: E731
    inputs = dict(
        position_targets=state[..., :3] + jitter(2, J, 3),
        position_weights=(1 + torch.rand(2, J, generator=generator, dtype=torch.float64)).to(device),
        orientation_targets=torch.nn.functional.normalize(state[:, [2, 3], 3:7] + jitter(2, 2, 4), dim=-1),
        orientation_weights=torch.tensor([[0.5, 2.0], [1.0, 1.5]], dtype=torch.float64, device=device),
        regularization_target=truth + jitter(2, P),
    )
    fixed = dict(position_joints=torch.arange(J), orientation_joints=torch.tensor([2, 3]),
                 regularization_weight=torch.full((P,), regularization, dtype=torch.float64, device=device),
                 active_parameters=active, max_iterations=500, tolerance=0.0)
    return character, truth, inputs, fixed


# Reachable targets (zero residual) and small residuals left at the optimum.
# (Finite differences of the weights take a longer step: a solve that accepts
# steps by lowering E pins the parameters down only to about
# sqrt(eps * E / curvature), and the weights move them little.)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("noise,rtol", [(0.0, 1e-4), (1e-4, 2e-2)], ids=["reachable", "residual"])
def test_implicit_gradients_match_finite_differences_of_the_solve(device, noise, rtol, generator):
    character, truth, inputs, fixed = gradient_problem(generator, device, noise)
    P = character.num_parameters
    direction = torch.randn(2, P, generator=generator, dtype=torch.float64).to(device)
    init = truth.clone()
    init[:, fixed["active_parameters"].to(device)] += 0.05

    def loss(**overrides):
        result = momentum_ops.solve_ik(character, init, **fixed, **dict(inputs, **overrides))
        return (result.model_parameters * direction).sum()

    leaves = {k: v.clone().requires_grad_() for k, v in inputs.items()}
    loss(**leaves).backward()
    for name, value in inputs.items():
        h = 1e-2 if name.endswith("weights") else (1e-6 if noise == 0 else 1e-5)
        analytic = leaves[name].grad.reshape(-1)
        scale = float(analytic.abs().max()) + 1e-12
        flat = value.reshape(-1)
        for i in torch.randperm(flat.numel(), generator=generator)[:10].tolist():
            plus, minus = flat.clone(), flat.clone()
            plus[i] += h
            minus[i] -= h
            numeric = float(loss(**{name: plus.reshape(value.shape)}) - loss(**{name: minus.reshape(value.shape)})) / (2 * h)
            assert abs(float(analytic[i]) - numeric) <= rtol * scale + 1e-6, (name, i, float(analytic[i]), numeric)


# With targets 5% of the character's size off (residuals left at the
# optimum), the backward uses the exact Hessian (Gauss-Newton plus the
# residuals times their second derivatives), so the gradient matches finite
# differences of the solve to 1e-5 relative (the Gauss-Newton Hessian alone
# was off by 2-8% here). Four-point central differences, so that their own
# error is far below that.
@pytest.mark.parametrize("device", DEVICES)
def test_exact_gradients_with_noisy_targets(device, generator):
    character, truth, inputs, fixed = gradient_problem(generator, device, 0.0)
    size = float(inputs["position_targets"].norm(dim=-1).max())
    noise = lambda *shape: torch.randn(*shape, generator=generator, dtype=torch.float64).to(device)  # noqa: E731
    inputs["position_targets"] = inputs["position_targets"] + 0.05 * size * noise(*inputs["position_targets"].shape)
    inputs["orientation_targets"] = torch.nn.functional.normalize(
        inputs["orientation_targets"] + 0.05 * noise(*inputs["orientation_targets"].shape), dim=-1)
    P = character.num_parameters
    direction = noise(2, P)
    init = truth.clone()
    init[:, fixed["active_parameters"].to(device)] += 0.05

    def loss(**overrides):
        result = momentum_ops.solve_ik(character, init, **fixed, **dict(inputs, **overrides))
        return float((result.model_parameters * direction).sum())

    leaves = {k: v.clone().requires_grad_() for k, v in inputs.items()}
    result = momentum_ops.solve_ik(character, init, **fixed, **leaves)
    (result.model_parameters * direction).sum().backward()
    for name, value in inputs.items():
        h = 3e-3 * size if name == "position_targets" else 3e-2 if name.endswith("weights") else 3e-3
        analytic = leaves[name].grad.reshape(-1)
        scale = float(analytic.abs().max())
        flat = value.reshape(-1)
        for i in torch.randperm(flat.numel(), generator=generator)[:6].tolist():
            def at(step):
                moved = flat.clone()
                moved[i] += step
                return loss(**{name: moved.reshape(value.shape)})
            numeric = (8 * (at(h) - at(-h)) - (at(2 * h) - at(-2 * h))) / (12 * h)
            assert abs(float(analytic[i]) - numeric) <= 1e-5 * scale, (name, i, float(analytic[i]), numeric)


# ------------------------------------------------------------ per-problem NaN
@pytest.mark.parametrize("device", DEVICES)
def test_non_finite_problems_are_reported_not_spread(device, generator):
    character = character_of("RiggedFigure").to(device)
    J, P = character.num_joints, character.num_parameters
    active = rotations_and_root_translation(character)
    truth = random_poses(character, active, 4, generator).to(device)
    targets = joint_positions(character, truth).clone()
    targets[1, 3, 0] = float("nan")
    init = torch.zeros(4, P, dtype=torch.float64, device=device)
    init[2, 5] = float("inf")
    result = momentum_ops.solve_ik(character, init, position_joints=torch.arange(J), position_targets=targets,
                                   active_parameters=active, max_iterations=50)
    assert torch.isnan(result.error[[1, 2]]).all() and (result.iterations[[1, 2]] == 0).all()
    torch.testing.assert_close(result.model_parameters[1], init[1])
    assert torch.isfinite(result.error[[0, 3]]).all() and (result.error[[0, 3]] < 1e-20).all()


# -------------------------------------------------------------------- inputs
def test_bad_input_is_named(generator):
    character = character_of("RiggedSimple")
    J, P = character.num_joints, character.num_parameters
    init = torch.zeros(2, P, dtype=torch.float64)
    targets = torch.zeros(2, J, 3, dtype=torch.float64)
    ok = dict(position_joints=torch.arange(J), position_targets=targets)
    cases = [
        (dict(model_parameters_init=init[:, :5]), ValueError, "model_parameters_init must have shape"),
        (dict(model_parameters_init=init.float()), ValueError, "model_parameters_init is torch.float32"),
        (dict(position_targets=targets[..., :2]), ValueError, "position_targets must have shape"),
        (dict(position_weights=torch.ones(3, dtype=torch.float64)), ValueError, "position_weights must have shape"),
        (dict(position_joints=torch.tensor([0.0, 1.0])), ValueError, r"position_joints must hold integers \(int32 or int64\), got torch.float32"),
        (dict(position_joints=torch.tensor([[0, 1]])), ValueError, "position_joints must be a 1-D tensor"),
        (dict(position_joints=torch.tensor([0, 1, 2, 9]), position_targets=targets), RuntimeError, r"position_joints\[3\] = 9 is out of range"),
        (dict(active_parameters=torch.ones(P)), ValueError, "active_parameters must be a bool tensor"),
        (dict(regularization_weight=torch.ones(3, dtype=torch.float64)), ValueError, "regularization_weight must have shape"),
        (dict(position_targets=torch.zeros(3, J, 3, dtype=torch.float64)), ValueError, "do not broadcast"),
        (dict(damping=0.0), ValueError, "damping must be a finite number > 0"),
        (dict(max_iterations=-1), ValueError, r"max_iterations must be in \[0, 2147483647\], got -1"),
        (dict(orientation_joints=torch.tensor([1])), ValueError, "orientation_targets are needed"),
    ]
    for change, error, match in cases:
        args = dict(ok, model_parameters_init=init)
        args.update(change)
        init_arg = args.pop("model_parameters_init")
        with pytest.raises(error, match=match):
            momentum_ops.solve_ik(character, init_arg, **args)


def test_frozen_parameters_and_warm_start(generator):
    character = character_of("RiggedFigure")
    J, P = character.num_joints, character.num_parameters
    active = rotations_and_root_translation(character)
    truth = random_poses(character, active, 3, generator)
    targets = joint_positions(character, truth)
    frozen = active.clone()
    frozen[3:6] = False  # the root's rotation stays at its initial value
    init = truth.clone()
    init[:, frozen] = 0
    result = momentum_ops.solve_ik(character, init, position_joints=torch.arange(J), position_targets=targets,
                                   active_parameters=frozen, max_iterations=100)
    torch.testing.assert_close(result.model_parameters[:, 3:6], truth[:, 3:6], rtol=0, atol=0)
    assert (result.error < 1e-20).all()
    # Warm-started from the answer, a solve stops after one (negligible) step.
    again = momentum_ops.solve_ik(character, result.model_parameters, position_joints=torch.arange(J),
                                  position_targets=targets, active_parameters=frozen)
    assert (again.iterations <= 1).all()


@pytest.mark.parametrize("device", DEVICES)
def test_compile_fullgraph_dynamic_batch(device, generator):
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    character = character_of("RiggedSimple").to(device)
    J, P = character.num_joints, character.num_parameters
    active = rotations_and_root_translation(character)
    truth = random_poses(character, active, 12, generator).to(device)
    targets = joint_positions(character, truth)

    def fit(targets):
        result = momentum_ops.solve_ik(character, torch.zeros(targets.shape[0], P, dtype=targets.dtype, device=targets.device),
                                       position_joints=torch.arange(J), position_targets=targets,
                                       active_parameters=active, max_iterations=30)
        return joint_positions(character, result.model_parameters)

    counter = CompileCounterWithBackend("inductor")
    compiled = torch.compile(fit, fullgraph=True, dynamic=True, backend=counter)
    frames = []
    for batch in (5, 9, 12):
        torch.testing.assert_close(compiled(targets[:batch].clone()), targets[:batch], rtol=0, atol=1e-7)
        frames.append(counter.frame_count)
    assert frames[0] >= 1 and frames[-1] == frames[0], f"new batch sizes recompiled: frames {frames}"


class PositionFit(torch.nn.Module):
    """Fits model parameters to joint-position targets with the raw op, as a
    user would script or export it: the character's tensors are buffers."""

    def __init__(self, character, active, example_targets):
        super().__init__()
        c = character
        dtype = c.offsets.dtype
        J = c.num_joints
        for name in ("parents", "offsets", "pre_rotations", "transform_index", "transform_values", "parameter_min",
                     "parameter_max"):
            self.register_buffer(name, getattr(c, name).clone())
        self.register_buffer("active", active.clone())
        self.register_buffer("joints", torch.arange(J))
        self.register_buffer("position_offsets", torch.zeros(J, 3, dtype=dtype))
        self.register_buffer("weights", torch.ones(J, dtype=dtype))
        self.register_buffer("orientation_joints", torch.zeros(0, dtype=torch.int64))
        self.register_buffer("orientation_offsets", torch.zeros(0, 4, dtype=dtype))
        self.register_buffer("regularization_weight", torch.zeros(c.num_parameters, dtype=dtype))
        self.register_buffer("example_input", example_targets.clone())

    def forward(self, targets: torch.Tensor) -> torch.Tensor:
        batch = targets.shape[0]
        P = self.parameter_min.shape[0]
        init = torch.zeros(batch, P, dtype=targets.dtype, device=targets.device)
        no_orientations = torch.zeros(batch, 0, 4, dtype=targets.dtype, device=targets.device)
        solution, iterations, error = torch.ops.momentum.ik_solve(
            init, self.parents, self.offsets, self.pre_rotations, self.transform_index[0], self.transform_index[1],
            self.transform_values,
            self.parameter_min, self.parameter_max, self.active,
            self.joints, self.position_offsets, targets, self.weights.expand(batch, -1),
            self.orientation_joints, self.orientation_offsets, no_orientations, no_orientations[..., 0],
            0.0, init, self.regularization_weight, 60, 1e-12, 1e-3,
        )
        return solution


def assert_fits(character, solution, targets):
    """The solution's joints reach the targets, by the float64 reference FK."""
    T = character.parameter_transform.cpu()
    for theta, target in zip(solution.cpu(), targets.cpu()):
        jp = (T @ theta).reshape(-1, 7)
        t, _, _ = forward_kinematics(jp, character.parents, character.offsets.cpu(), character.pre_rotations.cpu())
        assert float((torch.as_tensor(t) - target).norm(dim=-1).max()) < 1e-6 * character_size(character)


def fit_problem(generator, count):
    character = character_of("RiggedSimple")
    active = rotations_and_root_translation(character)
    truth = random_poses(character, active, count, generator)
    return character, active, joint_positions(character, truth)


@pytest.mark.parametrize("device", DEVICES)
def test_export_dynamic_batch(device, generator):
    character, active, targets = fit_problem(generator, 5)
    module = PositionFit(character, active, targets[:2]).to(device)
    exported = torch.export.export(module, (targets[:2].to(device),),
                                   dynamic_shapes={"targets": {0: torch.export.Dim("batch")}})
    solution = exported.module()(targets.to(device))
    assert solution.shape == (5, character.num_parameters)
    assert_fits(character, solution, targets)


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
def test_torchscript_python_and_cpp(device, generator, tmp_path, cpp_runner):
    character, active, targets = fit_problem(generator, 3)
    scripted = torch.jit.script(PositionFit(character, active, targets))
    path = str(tmp_path / "fit.pt")
    scripted.save(path)
    from_python = run_in_fresh_python(path, str(tmp_path / "out.pt"), device)
    assert_fits(character, from_python, targets)
    from_cpp = run_in_cpp(cpp_runner, path, str(tmp_path / "out.bin"), from_python.shape, device)
    assert_fits(character, from_cpp, targets)


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device, generator):
    character, truth, inputs, fixed = gradient_problem(generator, device)
    c = character
    args = (
        torch.zeros(2, c.num_parameters, dtype=torch.float64, device=device), c.parents, c.offsets, c.pre_rotations,
        c.transform_index[0], c.transform_index[1], c.transform_values, c.parameter_min, c.parameter_max,
        fixed["active_parameters"],
        fixed["position_joints"], torch.zeros(c.num_joints, 3, dtype=torch.float64, device=device),
        inputs["position_targets"].requires_grad_(), inputs["position_weights"],
        fixed["orientation_joints"], torch.tensor([[0, 0, 0, 1.0]] * 2, dtype=torch.float64, device=device),
        inputs["orientation_targets"], inputs["orientation_weights"], 0.0, inputs["regularization_target"],
        fixed["regularization_weight"], 20, 1e-12, 1e-3,
    )
    torch.library.opcheck(torch.ops.momentum.ik_solve.default, args)


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU and a CUDA build")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", ["CesiumMan", "Fox"])
def test_cuda_agrees_with_cpu(name, dtype, generator):
    character = character_of(name, dtype)
    J, P = character.num_joints, character.num_parameters
    active = rotations_and_root_translation(character)
    truth = random_poses(character, active, 300, generator)
    targets = joint_positions(character, truth)
    targets = targets + 0.01 * torch.randn(targets.shape, generator=generator, dtype=targets.dtype)
    kwargs = dict(position_joints=torch.arange(J), active_parameters=active, max_iterations=15,
                  regularization_weight=torch.full((P,), 1e-3, dtype=dtype))
    cpu = momentum_ops.solve_ik(character, torch.zeros_like(truth), position_targets=targets, **kwargs)
    gpu_character = character_of(name, dtype).to("cuda")
    kwargs["regularization_weight"] = kwargs["regularization_weight"].cuda()
    gpu = momentum_ops.solve_ik(gpu_character, torch.zeros_like(truth).cuda(), position_targets=targets.cuda(), **kwargs)
    # Rounding differs between the devices, so a problem may stop an iteration
    # earlier on one: compare what the solves reach.
    size = character_size(character)
    positions = [joint_positions(character, r.model_parameters.cpu()) for r in (cpu, gpu)]
    distance = (positions[0] - positions[1]).norm(dim=-1).amax(-1)
    limit = (1e-6 if dtype == torch.float64 else 1e-3) * size
    assert float(distance.median()) < limit and (distance < 100 * limit).double().mean() > 0.98
    torch.testing.assert_close(gpu.error.cpu().median(), cpu.error.median(), rtol=0.05, atol=1e-6 * size * size)
    assert (gpu.iterations.cpu() - cpu.iterations).abs().double().mean() < 2


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU and a CUDA build")
def test_cuda_graph_capture_of_a_solve(generator):
    character = character_of("RiggedFigure").to("cuda")
    J, P = character.num_joints, character.num_parameters
    active = rotations_and_root_translation(character)
    truth = random_poses(character, active, 64, generator).cuda()
    targets = joint_positions(character, truth)
    static_targets = targets.clone()
    init = torch.zeros(64, P, dtype=torch.float64, device="cuda")
    solve = lambda: momentum_ops.solve_ik(character, init, position_joints=torch.arange(J),  # noqa: E731
                                          position_targets=static_targets, active_parameters=active, max_iterations=40)
    expected = solve()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = solve()
    graph.replay()
    torch.testing.assert_close(captured.model_parameters, expected.model_parameters)
    static_targets.copy_(joint_positions(character, truth * 0.5))
    graph.replay()
    torch.cuda.synchronize()
    assert (captured.error < 1e-20).all()


@pytest.mark.parametrize("name", ["Fox", "CesiumMan"])
def test_float32_stops_once_the_error_stops_improving(name, generator):
    """With noisy targets a float32 solve stops within a few iterations of
    reaching the float64 optimum (its energy within 1e-5), and its solution,
    evaluated in float64, is as good as float32 noise allows."""
    c64 = character_of(name)
    active = rotations_and_root_translation(c64)
    truth = random_poses(c64, active, 32, generator)
    targets = joint_positions(c64, truth)
    size = float(targets.norm(dim=-1).max())
    targets = targets + 0.03 * size * torch.randn(targets.shape, generator=generator, dtype=torch.float64)
    J = c64.num_joints
    kw = dict(position_joints=torch.arange(J), active_parameters=active)
    optimum = momentum_ops.solve_ik(c64, torch.zeros(32, c64.num_parameters, dtype=torch.float64),
                                    position_targets=targets, max_iterations=200, **kw).error
    c32 = character_of(name, torch.float32)
    init = torch.zeros(32, c32.num_parameters)
    result = momentum_ops.solve_ik(c32, init, position_targets=targets.float(), max_iterations=200, **kw)
    # The first iteration count whose float32 solution is within 1e-5 of the optimum (by float64 energy).
    first = torch.full((32,), 10 ** 6)
    for k in range(60, -1, -1):
        theta = momentum_ops.solve_ik(c32, init, position_targets=targets.float(), max_iterations=k, **kw)
        energy = ((joint_positions(c64, theta.model_parameters.double()) - targets) ** 2).sum((-1, -2))
        first = torch.where(energy <= optimum * (1 + 1e-5), torch.full_like(first, k), first)
    energy = ((joint_positions(c64, result.model_parameters.double()) - targets) ** 2).sum((-1, -2))
    gap = (energy - optimum) / optimum
    late = (result.iterations.long() - first > 2).float().mean()
    print(f"{name}: iterations median {float(result.iterations.float().median())}, {float(late):.0%} stop more than "
          f"2 iterations after reaching the optimum; energy gap median {float(gap.median()):.1e} max {float(gap.max()):.1e}")
    assert float(late) <= 0.4
    assert float(gap.median()) <= 1e-5 and float(gap.max()) <= 2e-4
