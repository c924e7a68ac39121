"""URDF robots against the plain 4x4 chain of urdf_reference.py (written from
the spec), and against pytorch-kinematics where it is installed."""

import glob
import os
import warnings

import numpy as np
import pytest
import torch

import momentum_ops
import urdf_reference as ref
from momentum_ops import quaternion
from momentum_ops.io import UrdfError, load_urdf

HERE = os.path.dirname(os.path.abspath(__file__))
ASSETS = os.path.join(HERE, "assets", "urdf", "pytorch_kinematics")
FILES = sorted(glob.glob(os.path.join(ASSETS, "*.urdf")))
KUKA = os.path.join(ASSETS, "kuka_iiwa.urdf")


def load(path, dtype=torch.float64):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mesh files not loaded
        return load_urdf(path, dtype=dtype)


def state_matrices(state):
    state = state.double()
    out = torch.zeros(*state.shape[:-1], 4, 4, dtype=torch.float64)
    out[..., :3, :3] = state[..., 7:8, None] * quaternion.to_matrix(state[..., 3:7])
    out[..., :3, 3] = state[..., :3]
    out[..., 3, 3] = 1
    return out.numpy()


def link_frames(character, theta):
    jp = character.model_parameters_to_joint_parameters(theta)
    return state_matrices(character.joint_parameters_to_skeleton_state(jp))


def random_configurations(character, count, generator):
    low = character.parameter_min.clamp(min=-3.0)
    high = character.parameter_max.clamp(max=3.0)
    u = torch.rand(count, character.num_parameters, generator=generator, dtype=torch.float64)
    return low + u * (high - low)


def assert_frames_match(path, character, theta, atol=1e-12):
    robot = ref.Urdf(path)
    frames = link_frames(character, theta)
    assert set(robot.links) <= set(character.joint_names)
    for b in range(theta.shape[0]):
        q = dict(zip(character.parameter_names, theta[b].tolist()))
        expected = robot.frames(q)
        for link, matrix in expected.items():
            np.testing.assert_allclose(frames[b, character.joint_names.index(link)], matrix, atol=atol, rtol=0,
                                       err_msg=f"{os.path.basename(path)} link {link} configuration {b}")


def test_every_asset_is_found():
    assert {os.path.basename(f) for f in FILES} == {
        "joint_limit_robot.urdf", "joint_no_limit_robot.urdf", "kuka_iiwa.urdf", "prismatic_robot.urdf",
        "simple_y_arm.urdf", "ur5.urdf", "wx250s.urdf"}


@pytest.mark.parametrize("path", FILES, ids=os.path.basename)
def test_link_frames_match_the_spec_chain(path, generator):
    character = load(path)
    robot = ref.Urdf(path)
    assert character.parameter_names == robot.movable
    assert_frames_match(path, character, torch.zeros(1, character.num_parameters, dtype=torch.float64))
    assert_frames_match(path, character, random_configurations(character, 6, generator))


@pytest.mark.parametrize("path", FILES, ids=os.path.basename)
def test_limits_come_from_the_limit_elements(path):
    character = load(path)
    robot = ref.Urdf(path)
    by_name = {j["name"]: j for j in robot.joints}
    for p, name in enumerate(character.parameter_names):
        joint = by_name[name]
        limit = joint["limit"]
        low, high = character.parameter_min[p].item(), character.parameter_max[p].item()
        if joint["type"] == "continuous" or limit is None or (limit.get("lower") is None and limit.get("upper") is None):
            assert low == -np.inf and high == np.inf
        else:
            assert low == float(limit.get("lower", 0)) and high == float(limit.get("upper", 0))


def test_float32_agrees(generator):
    character64 = load(KUKA)
    character32 = load(KUKA, torch.float32)
    theta = random_configurations(character64, 8, generator)
    np.testing.assert_allclose(link_frames(character32, theta.float()), link_frames(character64, theta), atol=2e-6)


ROBOT = """<?xml version="1.0"?>
<robot name="test">
  <link name="base"/>
  <link name="a"/>
  <link name="b"/>
  <link name="c"/>
  <link name="d"/>
  <link name="e"/>
  <link name="f"/>
  <link name="g"/>
  <joint name="oblique" type="revolute">
    <parent link="base"/><child link="a"/>
    <origin xyz="0.1 -0.2 0.3" rpy="0.3 -0.7 1.1"/>
    <axis xyz="1 2 3"/>
    <limit lower="-1.5" upper="2.0" effort="1" velocity="1"/>
  </joint>
  <joint name="negative" type="continuous">
    <parent link="a"/><child link="b"/>
    <origin xyz="0 0.5 0" rpy="0.2 0.1 -0.4"/>
    <axis xyz="0 0 -1"/>
  </joint>
  <joint name="slide" type="prismatic">
    <parent link="b"/><child link="c"/>
    <origin xyz="0.2 0 0.1" rpy="-0.5 0.4 0.3"/>
    <axis xyz="0.6 -0.8 0"/>
    <limit lower="-0.1" upper="0.4" effort="1" velocity="1"/>
  </joint>
  <joint name="branch" type="revolute">
    <parent link="a"/><child link="d"/>
    <origin xyz="-0.3 0 0" rpy="0 1.5707963267948966 0"/>
    <axis xyz="0 1 0"/>
    <limit lower="-1" upper="1" effort="1" velocity="1"/>
  </joint>
  <joint name="follower" type="revolute">
    <parent link="d"/><child link="e"/>
    <origin xyz="0 0 0.2"/>
    <axis xyz="-1 1 0"/>
    <limit lower="-3" upper="3" effort="1" velocity="1"/>
    <mimic joint="branch" multiplier="-2.5" offset="0.3"/>
  </joint>
  <joint name="slide_follower" type="prismatic">
    <parent link="e"/><child link="f"/>
    <origin xyz="0.1 0.1 0" rpy="1 0 0"/>
    <axis xyz="0 0 1"/>
    <limit lower="-1" upper="1" effort="1" velocity="1"/>
    <mimic joint="slide" multiplier="0.5" offset="-0.05"/>
  </joint>
  <joint name="tool" type="fixed">
    <parent link="c"/><child link="g"/>
    <origin xyz="0 0 0.25" rpy="0.1 0.2 0.3"/>
  </joint>
</robot>
"""


def write(tmp_path, text, name="robot.urdf"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_oblique_negative_prismatic_branching_and_mimic(tmp_path, generator):
    path = write(tmp_path, ROBOT)
    character = load(path)
    assert character.parameter_names == ["oblique", "negative", "slide", "branch"]
    assert "oblique:axis" in character.joint_names and "follower:axis" in character.joint_names
    assert "negative:axis" not in character.joint_names  # an axis-aligned joint needs no helper
    assert character.has_joint_parameter_offsets  # the mimic offsets
    theta = random_configurations(character, 10, generator)
    assert_frames_match(path, character, theta)
    assert character.parameter_min.tolist()[:4] == [-1.5, float("-inf"), -0.1, -1.0]


def test_visual_primitives_move_with_their_link(tmp_path, generator):
    text = ROBOT.replace('<link name="c"/>', """<link name="c"><visual>
        <origin xyz="0.05 0 0" rpy="0 0 0.5"/><geometry><box size="0.1 0.2 0.3"/></geometry></visual></link>""")
    text = text.replace('<link name="e"/>', """<link name="e"><visual><geometry><sphere radius="0.05"/></geometry>
        </visual><visual><geometry><cylinder radius="0.02" length="0.3"/></geometry></visual></link>""")
    text = text.replace('<link name="g"/>', """<link name="g"><visual><geometry><mesh filename="/etc/passwd"/>
        </geometry></visual></link>""")
    path = write(tmp_path, text)
    with pytest.warns(UserWarning, match="1 visual mesh files are not loaded"):
        character = load_urdf(path, dtype=torch.float64)
    box = np.array([[x, y, z] for x in (-0.05, 0.05) for y in (-0.1, 0.1) for z in (-0.15, 0.15)])
    rotation = ref.rpy_matrix(0, 0, 0.5)
    local_box = box @ rotation.T + [0.05, 0, 0]
    robot = ref.Urdf(path)
    theta = random_configurations(character, 3, generator)
    posed = character(theta).numpy()
    c = character.joint_names.index("c")
    box_vertices = (character.skin_indices[:, 0] == c).numpy()
    assert box_vertices.sum() == 8
    for b in range(3):
        frame = robot.frames(dict(zip(character.parameter_names, theta[b].tolist())))["c"]
        expected = local_box @ frame[:3, :3].T + frame[:3, 3]
        got = posed[b][box_vertices]
        # The same 8 corners, whatever order trimesh lists them in.
        distances = np.linalg.norm(got[:, None] - expected[None], axis=-1)
        assert distances.min(axis=1).max() < 1e-12 and distances.min(axis=0).max() < 1e-12
    e = character.joint_names.index("e")
    assert (character.skin_indices[:, 0] == e).sum() > 8  # the sphere and the cylinder


def test_ik_reaches_kuka_targets(generator):
    character = load(KUKA)
    truth = random_configurations(character, 16, generator)
    joints = torch.tensor([character.num_joints - 1, 4])
    frames = link_frames(character, truth)
    targets = torch.from_numpy(frames[:, joints.numpy()][..., :3, 3])
    init = (truth + 0.2 * torch.randn(truth.shape, generator=generator, dtype=torch.float64))
    init = init.clamp(character.parameter_min, character.parameter_max)
    result = momentum_ops.solve_ik(character, init, position_joints=joints, position_targets=targets,
                                   max_iterations=100)
    reached = torch.from_numpy(link_frames(character, result.model_parameters)[:, joints.numpy()][..., :3, 3])
    assert (reached - targets).norm(dim=-1).max() < 1e-6


def test_position_jacobian_matches_finite_differences_of_the_reference(tmp_path, generator):
    path = write(tmp_path, ROBOT)
    character = load(path)
    robot = ref.Urdf(path)
    theta = random_configurations(character, 2, generator)
    links = ["g", "f", "b"]
    joints = torch.tensor([character.joint_names.index(link) for link in links])
    offsets = torch.tensor([[0.1, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, -0.2, 0.1]], dtype=torch.float64)

    def points(q):
        frames = robot.frames(dict(zip(character.parameter_names, q.tolist())))
        return np.concatenate([frames[link][:3, :3] @ o + frames[link][:3, 3] for link, o in zip(links, offsets.numpy())])

    _, jacobian = momentum_ops.position_residuals_and_jacobian(character, theta, joints, offsets,
                                                               torch.zeros(2, 3, 3, dtype=torch.float64))
    h = 1e-6
    for b in range(2):
        for p in range(character.num_parameters):
            step = torch.zeros(character.num_parameters, dtype=torch.float64)
            step[p] = h
            fd = (points(theta[b] + step) - points(theta[b] - step)) / (2 * h)
            np.testing.assert_allclose(jacobian[b, :, p].numpy(), fd, atol=1e-8)


def test_matches_pytorch_kinematics(generator):
    pk = pytest.importorskip("pytorch_kinematics")
    character = load(KUKA)
    chain = pk.build_serial_chain_from_urdf(open(KUKA, "rb").read(), "lbr_iiwa_link_7")
    chain = chain.to(dtype=torch.float64)
    theta = random_configurations(character, 5, generator)
    expected = chain.forward_kinematics(theta).get_matrix().numpy()
    got = link_frames(character, theta)[:, character.joint_names.index("lbr_iiwa_link_7")]
    # pytorch-kinematics parses the origins into float32 before .to(float64): agreement at its rounding.
    np.testing.assert_allclose(got, expected, atol=1e-6)


@pytest.mark.parametrize("text,message", [
    ('<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa">]><robot name="x"><link name="a"/></robot>', "DOCTYPE"),
    ("<robot name='x'><link name='a'></robot>", "not well-formed XML"),
    ("<model name='x'/>", r"root element is <model>"),
    ("<robot name='x'/>", "the robot has no link"),
    ("<robot name='x'><link name='a'/><link name='a'/></robot>", "two links are named 'a'"),
    ("<robot name='x'><link name='a'/><link name='b'/></robot>", "found 2 root links"),
    ("<robot name='x'><link name='a'/><link name='b'/><joint name='j' type='fixed'><parent link='a'/>"
     "<child link='zz'/></joint></robot>", "names child link 'zz', which does not exist"),
    ("<robot name='x'><link name='a'/><link name='b'/><link name='c'/>"
     "<joint name='j' type='fixed'><parent link='a'/><child link='b'/></joint>"
     "<joint name='k' type='fixed'><parent link='c'/><child link='b'/></joint></robot>", "is the child of joints"),
    ("<robot name='x'><link name='a'/><link name='b'/><link name='c'/>"
     "<joint name='j' type='fixed'><parent link='b'/><child link='c'/></joint>"
     "<joint name='k' type='fixed'><parent link='c'/><child link='b'/></joint></robot>", "a cycle"),
    ("<robot name='x'><link name='a'/><link name='b'/><joint name='j' type='floating'><parent link='a'/>"
     "<child link='b'/></joint></robot>", "is floating"),
    ("<robot name='x'><link name='a'/><link name='b'/><joint name='j' type='planar'><parent link='a'/>"
     "<child link='b'/><axis xyz='0 0 1'/></joint></robot>", "is planar"),
    ("<robot name='x'><link name='a'/><link name='b'/><joint name='j' type='revolute'><parent link='a'/>"
     "<child link='b'/><axis xyz='0 0 0'/><limit lower='0' upper='1' effort='1' velocity='1'/></joint></robot>",
     "zero or malformed axis"),
    ("<robot name='x'><link name='a'/><link name='b'/><joint name='j' type='revolute'><parent link='a'/>"
     "<child link='b'/><origin xyz='nan 0 0'/><limit lower='0' upper='1' effort='1' velocity='1'/></joint></robot>",
     "origin has values that are not finite"),
    ("<robot name='x'><link name='a'/><link name='b'/><joint name='j' type='revolute'><parent link='a'/>"
     "<child link='b'/><limit lower='2' upper='1' effort='1' velocity='1'/></joint></robot>", "lower=2.0 > upper=1.0"),
    ("<robot name='x'><link name='a'/><link name='b'/><link name='c'/>"
     "<joint name='j' type='revolute'><parent link='a'/><child link='b'/><mimic joint='k'/>"
     "<limit lower='0' upper='1' effort='1' velocity='1'/></joint>"
     "<joint name='k' type='revolute'><parent link='b'/><child link='c'/><mimic joint='j'/>"
     "<limit lower='0' upper='1' effort='1' velocity='1'/></joint></robot>", "mimic cycle"),
    ("<robot name='x'><link name='a'/><link name='b'/><joint name='j' type='revolute'><parent link='a'/>"
     "<child link='b'/><mimic joint='ghost'/><limit lower='0' upper='1' effort='1' velocity='1'/></joint></robot>",
     "mimics 'ghost', which is not a movable joint"),
])
def test_malformed_files_are_refused(tmp_path, text, message):
    with pytest.raises(UrdfError, match=message):
        load_urdf(write(tmp_path, text))


def test_files_that_are_not_regular_or_missing(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_urdf(str(tmp_path / "missing.urdf"))
    with pytest.raises(UrdfError, match="not a regular file"):
        load_urdf("/dev/zero")
    with pytest.raises(ValueError, match="dtype must be"):
        load_urdf(KUKA, dtype=torch.int32)


def test_a_long_robot_loads_with_a_sparse_transform(tmp_path, pretend_memory):
    """A 4000-link chain loads on a machine pretended to have 1 GiB: the
    transform is stored as its 3999 entries, not as a dense [28000, 3999]
    matrix (0.8 GiB); asking for the dense form is refused with its size."""
    pretend_memory(1 << 30)
    n = 4000
    links = "".join(f'<link name="l{i}"/>' for i in range(n))
    joints = "".join(f'<joint name="j{i}" type="revolute"><parent link="l{i}"/><child link="l{i + 1}"/>'
                     f'<axis xyz="0 1 0"/><limit lower="-1" upper="1" effort="1" velocity="1"/></joint>'
                     for i in range(n - 1))
    robot = load_urdf(write(tmp_path, f'<robot name="chain">{links}{joints}</robot>'), dtype=torch.float64)
    assert robot.num_joints == n and robot.num_parameters == n - 1
    assert robot.transform_values.shape == (n - 1,)
    # Joint i+1 turns about y by theta_i: the entries are exactly those rows.
    assert robot.transform_index[0].tolist() == [7 * (i + 1) + 4 for i in range(n - 1)]
    assert robot.transform_index[1].tolist() == list(range(n - 1))
    theta = torch.linspace(-1, 1, n - 1, dtype=torch.float64)
    joint_parameters = robot.model_parameters_to_joint_parameters(theta).reshape(n, 7)
    assert torch.equal(joint_parameters[1:, 4], theta) and not joint_parameters[:, [0, 1, 2, 3, 5, 6]].any()
    with pytest.raises(ValueError, match=r"Character.parameter_transform: a dense parameter transform \[28000, 3999\] "
                                         r"would take 854\.3 MiB, more than half of this machine's 1\.0 GiB"):
        robot.parameter_transform
    big = momentum_ops.Character([f"j{i}" for i in range(9000)], torch.arange(-1, 8999), torch.zeros(9000, 3),
                                 torch.tensor([[0.0, 0.0, 0.0, 1.0]]).repeat(9000, 1))
    assert big.num_parameters == 63000 and big.transform_values.shape == (63000,)
