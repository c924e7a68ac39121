"""Momentum's FB_momentum glTF extension: parameter transform, limits, joint
offsets and model-parameter motion, checked against the file's JSON read
here (with the units rule written out) and against the file's own glTF
animation, which Momentum wrote from the same poses."""

import json
import os
import struct

import numpy as np
import pytest
import torch

import gltf_reference as ref
import momentum_ops
from momentum_ops import quaternion
from momentum_ops.io import GltfError, load_gltf, load_gltf_model_motion, load_gltf_motion, save_gltf

HERE = os.path.dirname(os.path.abspath(__file__))
MOMENTUM_FILE = os.path.join(HERE, "assets", "gltf", "momentum", "model_with_motion.glb")
CHANNELS = ["tx", "ty", "tz", "rx", "ry", "rz", "sc"]


def read_glb_json(path):
    data = open(path, "rb").read()
    length = struct.unpack_from("<I", data, 12)[0]
    return json.loads(data[20:20 + length])


def write_glb(path, doc, source=MOMENTUM_FILE):
    """The source GLB with its JSON chunk replaced by `doc` (same binary chunk)."""
    data = open(source, "rb").read()
    length = struct.unpack_from("<I", data, 12)[0]
    rest = data[20 + length:]
    text = json.dumps(doc).encode()
    text += b" " * (-len(text) % 4)
    header = struct.pack("<III", 0x46546C67, 2, 12 + 8 + len(text) + len(rest))
    open(path, "wb").write(header + struct.pack("<II", len(text), 0x4E4F534A) + text + rest)
    return path


def expected_transform(doc, joint_names):
    """The extension's transform with the units rule: a parameter that drives
    only translations is a length (its values are converted, not its
    coefficients); any other parameter's translation coefficients are / 100."""
    ext = doc["extensions"]["FB_momentum"]["transform"]
    names = ext["parameters"]
    T = np.zeros((7 * len(joint_names), len(names)))
    for joint, channels in ext["joints"].items():
        for channel, terms in channels.items():
            for parameter, coefficient in terms.items():
                T[7 * joint_names.index(joint) + CHANNELS.index(channel), names.index(parameter)] = coefficient
    for p in range(len(names)):
        rows = np.nonzero(T[:, p])[0] % 7
        if len(rows) and not (rows < 3).all():
            T[np.nonzero(T[:, p])[0][rows < 3], p] /= 100
    return names, T


def test_transform_limits_and_offsets_come_from_the_extension():
    doc = read_glb_json(MOMENTUM_FILE)
    character = load_gltf(MOMENTUM_FILE, dtype=torch.float64)
    names, T = expected_transform(doc, character.joint_names)
    assert character.parameter_names == names
    np.testing.assert_array_equal(character.parameter_transform.numpy(), T)
    # The one minmax limit, on root_tx (a length): centimetres -> metres.
    (limit,) = doc["extensions"]["FB_momentum"]["parameterLimits"]
    p = names.index(limit["parameter"])
    assert character.parameter_min[p].item() == pytest.approx(limit["limits"][0][0] / 100, rel=1e-12)
    assert character.parameter_max[p].item() == pytest.approx(limit["limits"][0][1] / 100, rel=1e-12)
    others = [i for i in range(len(names)) if i != p]
    assert torch.isinf(character.parameter_min[others]).all() and torch.isinf(character.parameter_max[others]).all()
    # Joint offsets: the file's motion.offsets by joint name, translations / 100.
    g = ref.Gltf(MOMENTUM_FILE)
    motion = doc["extensions"]["FB_momentum"]["motion"]
    raw = g.accessor(motion["offsets"]).reshape(-1, 7)
    expected = np.zeros((character.num_joints, 7))
    for i, name in enumerate(motion["jointNames"]):
        expected[character.joint_names.index(name)] = raw[i]
    expected[:, :3] /= 100
    np.testing.assert_allclose(character.joint_parameter_offsets.reshape(-1, 7).numpy(), expected, rtol=0, atol=0)


def test_model_motion_matches_the_file_animation():
    """Every frame: the joints' local translation and rotation from the
    model motion (transform, units, offsets) equal the glTF animation
    Momentum wrote for the same poses. Momentum writes no scale channel, so
    the scale is checked against the raw poses instead."""
    doc = read_glb_json(MOMENTUM_FILE)
    character = load_gltf(MOMENTUM_FILE, dtype=torch.float64)
    poses, fps = load_gltf_model_motion(MOMENTUM_FILE, character)
    motion = doc["extensions"]["FB_momentum"]["motion"]
    assert fps == doc["extensions"]["FB_momentum"]["fps"]
    assert poses.shape == (motion["nframes"], character.num_parameters)
    g = ref.Gltf(MOMENTUM_FILE)
    raw = g.accessor(motion["poses"]).reshape(motion["nframes"], -1)
    names, T = expected_transform(doc, character.joint_names)
    lengths = [all(r % 7 < 3 for r in np.nonzero(T[:, p])[0]) and T[:, p].any() for p in range(len(names))]
    for i, name in enumerate(motion["parameterNames"]):
        p = character.parameter_names.index(name)
        np.testing.assert_allclose(poses[:, p].numpy(), raw[:, i] / (100 if lengths[p] else 1), rtol=1e-12)

    joint_parameters = character.model_parameters_to_joint_parameters(poses).reshape(-1, character.num_joints, 7)
    local = momentum_ops.joint_parameters_to_local_skeleton_state(
        joint_parameters, character.offsets, character.pre_rotations)
    times = ref.keyframe_times(g, 0)  # f / fps, stored as float32
    np.testing.assert_allclose(times, np.arange(motion["nframes"]) / fps, rtol=1e-6)
    for f, t in enumerate(times):
        matrices = ref.node_matrices(g, 0, t)
        for j, name in enumerate(character.joint_names):
            node = next(n for n, x in enumerate(g.nodes) if x.get("name") == name)
            np.testing.assert_allclose(local[f, j, :3].numpy(), matrices[node][:3, 3], atol=1e-7)
            rotation = quaternion.to_matrix(local[f, j, 3:7]).numpy()
            np.testing.assert_allclose(rotation, matrices[node][:3, :3], atol=2e-6)
    offsets = character.joint_parameter_offsets.reshape(-1, 7)
    scale_global = raw[:, motion["parameterNames"].index("scale_global")]
    np.testing.assert_allclose(joint_parameters[:, 0, 6].numpy(), scale_global + offsets[0, 6].item(), rtol=1e-12)


@pytest.mark.parametrize("extension", [".glb", ".gltf"])
def test_load_save_load_keeps_everything(tmp_path, extension):
    character = load_gltf(MOMENTUM_FILE, dtype=torch.float64)
    poses, fps = load_gltf_model_motion(MOMENTUM_FILE, character)
    out = str(tmp_path / f"saved{extension}")
    save_gltf(out, character, model_motion=poses, fps=fps)
    again = load_gltf(out, dtype=torch.float64)
    again_poses, again_fps = load_gltf_model_motion(out, again)
    assert again.parameter_names == character.parameter_names and again_fps == fps
    for name in ("parameter_transform", "parameter_min", "parameter_max"):
        torch.testing.assert_close(getattr(again, name), getattr(character, name), rtol=1e-6, atol=0)
    torch.testing.assert_close(again.joint_parameter_offsets, character.joint_parameter_offsets, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(again_poses, poses, rtol=1e-6, atol=1e-9)
    # The saved glTF animation is what the model motion poses (any viewer).
    expected = character.joint_parameters_to_skeleton_state(character.model_parameters_to_joint_parameters(poses))
    got = again.joint_parameters_to_skeleton_state(load_gltf_motion(out, again))
    torch.testing.assert_close(got[..., :3], expected[..., :3], atol=1e-6, rtol=0)


def test_units_of_a_mixed_parameter_and_one_sided_limits(tmp_path):
    """A parameter that drives a translation and a rotation keeps its value;
    the file stores its translation coefficient in centimetres. A length
    parameter's limit and values are stored in centimetres."""
    parents = torch.tensor([-1, 0])
    offsets = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.1, 0.0]], dtype=torch.float64)
    pre = torch.tensor([[0.0, 0.0, 0.0, 1.0]] * 2, dtype=torch.float64)
    transform = torch.zeros(14, 3, dtype=torch.float64)
    transform[0, 0] = 1.0  # root tx <- "slide" (a length, metres)
    transform[7 + 1, 1] = 0.02  # joint ty <- "bend" (also drives rotation), 2 cm per radian
    transform[7 + 3, 1] = 1.0
    transform[7 + 5, 2] = -0.5  # joint rz <- "twist"
    character = momentum_ops.Character(
        ["root", "arm"], parents, offsets, pre, parameter_transform=transform,
        parameter_names=["slide", "bend", "twist"],
        parameter_min=torch.tensor([-0.25, -1.0, float("-inf")], dtype=torch.float64),
        parameter_max=torch.tensor([float("inf"), 2.0, float("inf")], dtype=torch.float64),
        joint_parameter_offsets=torch.tensor([0.01, 0, 0, 0, 0, 0.1, 0, 0, 0, 0, 0, 0, 0, 0.2], dtype=torch.float64))
    poses = torch.tensor([[0.1, 0.3, -0.2], [0.2, -0.1, 0.4]], dtype=torch.float64)
    path = str(tmp_path / "mixed.glb")
    save_gltf(path, character, model_motion=poses, fps=24)
    ext = read_glb_json(path)["extensions"]["FB_momentum"]
    assert ext["transform"]["joints"]["arm"]["ty"]["bend"] == pytest.approx(2.0)  # centimetres per radian
    assert ext["transform"]["joints"]["root"]["tx"]["slide"] == 1.0
    limits = {x["parameter"]: x["limits"][0] for x in ext["parameterLimits"]}
    assert limits["slide"][0] == pytest.approx(-25.0) and limits["slide"][1] >= 3.4e38
    assert limits["bend"] == [-1.0, 2.0] and "twist" not in limits
    g = ref.Gltf(path)
    stored = g.accessor(ext["motion"]["poses"]).reshape(2, 3)
    np.testing.assert_allclose(stored, poses.numpy() * [100, 1, 1], rtol=1e-6)
    stored_offsets = g.accessor(ext["motion"]["offsets"]).reshape(2, 7)
    assert stored_offsets[0, 0] == pytest.approx(1.0) and stored_offsets[0, 5] == pytest.approx(0.1)
    again = load_gltf(path, dtype=torch.float64)
    torch.testing.assert_close(again.parameter_transform, transform, rtol=1e-7, atol=0)
    torch.testing.assert_close(again.parameter_min, character.parameter_min, rtol=1e-7, atol=0)
    torch.testing.assert_close(again.parameter_max, character.parameter_max, rtol=1e-7, atol=0)
    torch.testing.assert_close(load_gltf_model_motion(path, again)[0], poses, rtol=1e-6, atol=1e-9)


def test_other_limit_types_are_left_out_with_a_warning(tmp_path):
    doc = read_glb_json(MOMENTUM_FILE)
    doc["extensions"]["FB_momentum"]["parameterLimits"] += [
        {"type": "minmax_joint", "jointIndex": "joint1", "jointParameter": 3, "limits": [[-1, 1]], "weight": 1.0},
        {"type": "ellipsoid", "weight": 1.0}, {"type": "ellipsoid", "weight": 2.0},
    ]
    path = write_glb(str(tmp_path / "limits.glb"), doc)
    with pytest.warns(UserWarning, match=r"left out \(2 'ellipsoid', 1 'minmax_joint'\)"):
        character = load_gltf(path)
    assert torch.isfinite(character.parameter_min).sum() == 1


def edit_extension(tmp_path, edit):
    doc = read_glb_json(MOMENTUM_FILE)
    edit(doc["extensions"]["FB_momentum"])
    return write_glb(str(tmp_path / "edited.glb"), doc)


@pytest.mark.parametrize("edit,message", [
    (lambda e: e["transform"]["joints"].update(ghost={"rx": {"root_rx": 1.0}}), r"no joint of the skeleton is named 'ghost'"),
    (lambda e: e["transform"]["joints"]["root"].update(qx={"root_rx": 1.0}), r"unknown channel 'qx'"),
    (lambda e: e["transform"]["joints"]["root"].update(rx={"nope": 1.0}), r"names parameter 'nope'"),
    (lambda e: e["transform"]["joints"]["root"].update(rx={"root_rx": "1"}), r"must be a finite number"),
    (lambda e: e["transform"]["joints"]["root"].update(rx={"root_rx": True}), r"must be a finite number"),
    (lambda e: e["transform"].update(parameters=["a", "a"]), r"names 'a' twice"),
    (lambda e: e["transform"].pop("joints"), r"needs 'parameters' and 'joints'"),
    (lambda e: e.update(transform=[1]), r"transform must be an object"),
    (lambda e: e["parameterLimits"][0].update(limits=[[1, -1]]), r"min exceeds max"),
    (lambda e: e["parameterLimits"][0].update(limits="x"), r"must hold two numbers"),
    (lambda e: e["parameterLimits"][0].update(parameter="nope"), r"is not a parameter of the transform"),
    (lambda e: e.update(parameterLimits={}), r"parameterLimits must be an array of objects"),
    (lambda e: e["motion"].update(offsets=0), r"used as FB_momentum motion"),
    (lambda e: e["motion"].update(jointNames=["root"]), r"offsets has 21 values; 1 joints need 7"),
])
def test_malformed_extension_is_refused(tmp_path, edit, message):
    path = edit_extension(tmp_path, edit)
    with pytest.raises(GltfError, match=message):
        load_gltf(path)


@pytest.mark.parametrize("edit,message", [
    (lambda e: e["motion"].update(nframes=6), r"poses has 50 values; 6 frames of 10 parameters need 60"),
    (lambda e: e["motion"].update(nframes=-1), r"nframes = -1 must be an integer"),
    (lambda e: e.update(fps=0), r"fps = 0.0 must be > 0"),
    (lambda e: e.update(fps="x"), r"fps = 'x' must be a finite number"),
    (lambda e: e.pop("motion"), r"has no extensions.FB_momentum.motion"),
])
def test_malformed_motion_is_refused(tmp_path, edit, message):
    path = edit_extension(tmp_path, edit)
    character = load_gltf(path)
    with pytest.raises(GltfError, match=message):
        load_gltf_model_motion(path, character)


def test_motion_onto_a_character_without_the_offsets(tmp_path):
    """Offsets on joint parameters no model parameter drives cannot be
    folded into model parameters: refused. Where the transform drives every
    joint parameter (identity), they are folded exactly."""
    character = load_gltf(MOMENTUM_FILE, dtype=torch.float64)
    plain = momentum_ops.Character(character.joint_names, character.parents, character.offsets,
                                   character.pre_rotations, parameter_transform=character.parameter_transform,
                                   parameter_names=character.parameter_names)
    with pytest.raises(GltfError, match="differ from the character's joint_parameter_offsets"):
        load_gltf_model_motion(MOMENTUM_FILE, plain)
    # A full transform: the file's transform plus one parameter per joint parameter.
    J = character.num_joints
    full = momentum_ops.Character(
        character.joint_names, character.parents, character.offsets, character.pre_rotations,
        parameter_transform=torch.cat([character.parameter_transform, torch.eye(7 * J, dtype=torch.float64)], 1),
        parameter_names=character.parameter_names + [f"extra_{i}" for i in range(7 * J)])
    poses, _ = load_gltf_model_motion(MOMENTUM_FILE, full)
    expected_poses, _ = load_gltf_model_motion(MOMENTUM_FILE, character)
    torch.testing.assert_close(full.model_parameters_to_joint_parameters(poses),
                               character.model_parameters_to_joint_parameters(expected_poses), atol=1e-12, rtol=0)


def test_unknown_motion_parameters_are_dropped_with_a_warning(tmp_path):
    path = edit_extension(tmp_path, lambda e: e["motion"]["parameterNames"].__setitem__(9, "tail_rx"))
    character = load_gltf(path, dtype=torch.float64)
    with pytest.warns(UserWarning, match=r"\['tail_rx'\] are not parameters of the character"):
        poses, _ = load_gltf_model_motion(path, character)
    assert (poses[:, character.parameter_names.index("joint2_rx")] == 0).all()


def test_ik_and_jacobian_with_joint_parameter_offsets(generator):
    """IK on the Momentum character (which carries joint offsets) recovers
    poses whose joint positions the offsets move, and the residual Jacobian
    matches central differences of the character's FK."""
    character = load_gltf(MOMENTUM_FILE, dtype=torch.float64)
    assert character.has_joint_parameter_offsets
    poses, _ = load_gltf_model_motion(MOMENTUM_FILE, character)
    truth = poses[1:3].clone()
    truth[:, 0] = 0.0  # inside the root_tx limits

    def positions(theta):
        return character.joint_parameters_to_skeleton_state(character.model_parameters_to_joint_parameters(theta))[..., :3]

    targets = positions(truth)
    joints = torch.arange(character.num_joints)
    result = momentum_ops.solve_ik(character, truth + 0.05 * torch.randn(truth.shape, generator=generator,
                                                                          dtype=torch.float64),
                                   position_joints=joints, position_targets=targets, max_iterations=50)
    assert result.model_parameters.shape == truth.shape
    torch.testing.assert_close(positions(result.model_parameters), targets, atol=1e-8, rtol=0)

    offsets = torch.zeros(character.num_joints, 3, dtype=torch.float64)
    residuals, jacobian = momentum_ops.position_residuals_and_jacobian(character, truth, joints, offsets, targets)
    assert jacobian.shape == (2, 3 * character.num_joints, character.num_parameters)
    h = 1e-6
    for p in range(character.num_parameters):
        step = torch.zeros(character.num_parameters, dtype=torch.float64)
        step[p] = h
        fd = ((positions(truth + step) - positions(truth - step)) / (2 * h)).reshape(2, -1)
        torch.testing.assert_close(jacobian[..., p], fd, atol=1e-7, rtol=0)


PYMOMENTUM = os.path.join(HERE, "assets", "pymomentum", "model_with_motion.npz")


def test_agrees_with_pymomentum():
    """What pymomentum (Momentum's own bindings, tools/pymomentum_reference.py)
    reads from the same file, in centimetres, against what momentum_ops reads
    in metres: transform, limits, motion, offsets, and every frame's skeleton
    state."""
    theirs = np.load(PYMOMENTUM)
    character = load_gltf(MOMENTUM_FILE, dtype=torch.float64)
    poses, fps = load_gltf_model_motion(MOMENTUM_FILE, character)
    assert character.parameter_names == theirs["parameter_names"].tolist()
    assert character.joint_names == theirs["joint_names"].tolist()
    assert fps == float(theirs["fps"])
    T = theirs["transform"].copy()  # [7J, P], centimetres
    on_translation = (T.reshape(-1, 7, T.shape[1])[:, :3] != 0).any(axis=(0, 1))
    on_other = (T.reshape(-1, 7, T.shape[1])[:, 3:] != 0).any(axis=(0, 1))
    lengths = on_translation & ~on_other
    rows = (np.arange(T.shape[0]) % 7) < 3
    T[np.ix_(rows, ~lengths)] /= 100
    np.testing.assert_allclose(character.parameter_transform.numpy(), T, rtol=1e-7, atol=0)
    scale = np.where(lengths, 100.0, 1.0)
    low, high = theirs["model_parameter_limits"]
    low = np.where(low <= -3.4e38, -np.inf, low / scale)
    high = np.where(high >= 3.4e38, np.inf, high / scale)
    np.testing.assert_allclose(character.parameter_min.numpy(), low, rtol=1e-7)
    np.testing.assert_allclose(character.parameter_max.numpy(), high, rtol=1e-7)
    np.testing.assert_allclose(poses.numpy(), theirs["motion"] / scale, rtol=1e-6, atol=1e-9)
    offsets = theirs["offsets"].reshape(-1, 7).astype(np.float64)
    offsets[:, :3] /= 100
    np.testing.assert_allclose(character.joint_parameter_offsets.reshape(-1, 7).numpy(), offsets, rtol=1e-6, atol=1e-9)
    states = character.joint_parameters_to_skeleton_state(character.model_parameters_to_joint_parameters(poses))
    expected = theirs["skeleton_states"].copy()
    expected[..., :3] /= 100
    got = states.numpy()
    sign = np.sign((got[..., 3:7] * expected[..., 3:7]).sum(-1, keepdims=True))  # q and -q are one rotation
    got[..., 3:7] *= sign
    np.testing.assert_allclose(got, expected, atol=2e-6, rtol=0)
