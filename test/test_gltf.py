"""glTF characters and animations against the independent spec reference."""

import base64
import copy
import glob
import json
import os
import struct

import numpy as np
import pytest
import torch

import gltf_reference as ref
import momentum_ops
from momentum_ops.io import GltfError, gltf_animations, load_gltf, load_gltf_motion, save_gltf

ASSETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "gltf")
FILES = sorted(glob.glob(os.path.join(ASSETS, "**", "*.gl[bt]*"), recursive=True))
SIMPLE_SKIN = os.path.join(ASSETS, "SimpleSkin", "SimpleSkin.gltf")


def file_id(path):
    return os.path.relpath(path, ASSETS)


def posed_vertices(character, joint_parameters):
    return character.skin(character.joint_parameters_to_skeleton_state(joint_parameters))


def tolerance(vertices):
    diagonal = np.linalg.norm(vertices.max(axis=0) - vertices.min(axis=0))
    return 1e-5 * diagonal


def test_every_asset_is_found():
    names = {os.path.basename(f) for f in FILES}
    assert {"CesiumMan.glb", "Fox.glb", "RecursiveSkeletons.glb", "RiggedFigure.glb", "RiggedSimple.glb",
            "SimpleSkin.gltf", "sort_joints.glb", "skeleton_non_joint_root.glb", "blender_simple_armature.glb",
            "model_with_motion.glb"} <= names
    assert len(FILES) == 11


@pytest.mark.parametrize("path", FILES, ids=file_id)
def test_rest_pose_reproduces_the_file(path):
    character = load_gltf(path, dtype=torch.float64)
    reference = ref.skinned_vertices(ref.Gltf(path))
    assert character.num_vertices == len(reference)
    rest = load_gltf_motion(path, character, animation=None)
    assert rest.shape == (1, character.num_joints, 7)
    vertices = posed_vertices(character, rest)[0].numpy()
    np.testing.assert_allclose(vertices, reference, atol=tolerance(reference), rtol=0)


@pytest.mark.parametrize("path", [f for f in FILES if ref.Gltf(f).json.get("animations")], ids=file_id)
def test_every_animation_at_its_keyframes(path):
    g = ref.Gltf(path)
    character = load_gltf(path, dtype=torch.float64)
    names = gltf_animations(path)
    for index in range(len(g.json["animations"])):
        times = ref.keyframe_times(g, index)
        by_index = load_gltf_motion(path, character, animation=index)
        assert by_index.shape == (len(times), character.num_joints, 7)
        torch.testing.assert_close(load_gltf_motion(path, character, animation=names[index]), by_index)
        vertices = posed_vertices(character, by_index).numpy()
        for f, t in enumerate(times):
            expected = ref.skinned_vertices(g, index, t)
            np.testing.assert_allclose(vertices[f], expected, atol=tolerance(expected), rtol=0,
                                       err_msg=f"animation {index} at t={t}")


def test_sampling_between_keyframes(tmp_path):
    path = os.path.join(ASSETS, "Fox", "Fox.glb")
    g = ref.Gltf(path)
    character = load_gltf(path, dtype=torch.float64)
    times = [-0.5, 0.013, 0.4567, 1.0, 100.0]  # before, between, after the keys
    motion = load_gltf_motion(path, character, animation="Walk", times=times)
    vertices = posed_vertices(character, motion).numpy()
    for f, t in enumerate(times):
        expected = ref.skinned_vertices(g, 1, t)
        np.testing.assert_allclose(vertices[f], expected, atol=tolerance(expected), rtol=0)


def test_external_and_embedded_buffers_agree():
    embedded = load_gltf(SIMPLE_SKIN, dtype=torch.float64)
    external = load_gltf(os.path.join(ASSETS, "SimpleSkin", "glTF", "SimpleSkin.gltf"), dtype=torch.float64)
    for name, a in embedded.state_dict().items():
        torch.testing.assert_close(external.state_dict()[name], a)


def test_joints_are_parents_first_with_node_names():
    path = os.path.join(ASSETS, "momentum", "sort_joints.glb")
    character = load_gltf(path)
    g = ref.Gltf(path)
    parents = character.parents.tolist()
    assert all(p < j for j, p in enumerate(parents))
    skin_joints = set(g.json["skins"][0]["joints"])
    # The file lists children before their parents, and has several root joints.
    assert any(child < parent for child, parent in g.parent.items() if child in skin_joints)
    assert sum(g.parent.get(j) not in skin_joints for j in skin_joints) >= 3
    names = {n.get("name") for n in g.nodes}
    assert set(character.joint_names) <= names
    # A joint's parent in the character is its node's parent in the file.
    index = {n.get("name"): i for i, n in enumerate(g.nodes)}
    for j, p in enumerate(parents):
        node_parent = g.parent.get(index[character.joint_names[j]])
        assert (p < 0 and node_parent is None) or g.nodes[node_parent].get("name") == character.joint_names[p]


def test_non_joint_root_and_shared_skin():
    path = os.path.join(ASSETS, "momentum", "skeleton_non_joint_root.glb")
    character = load_gltf(path)
    g = ref.Gltf(path)
    joints = {j for s in g.json["skins"] for j in s["joints"]}
    assert character.num_joints == len(joints) + 1  # plus the non-joint root
    assert character.parents.tolist().count(-1) == 1


def test_default_parameters_are_the_joint_parameters():
    character = load_gltf(os.path.join(ASSETS, "RiggedSimple", "RiggedSimple.glb"))
    J = character.num_joints
    assert character.num_parameters == 7 * J
    torch.testing.assert_close(character.parameter_transform, torch.eye(7 * J))
    assert character.parameter_names[:7] == [f"{character.joint_names[0]}_{p}" for p in ("tx", "ty", "tz", "rx", "ry", "rz", "sc")]
    assert torch.isinf(character.parameter_min).all() and torch.isinf(character.parameter_max).all()


@pytest.mark.parametrize("path", FILES, ids=file_id)
@pytest.mark.parametrize("extension", [".glb", ".gltf"])
def test_save_and_load_round_trip(path, extension, tmp_path, generator):
    character = load_gltf(path, dtype=torch.float64)
    if gltf_animations(path):
        motion = load_gltf_motion(path, character, animation=0)[:6]
    else:
        rest = load_gltf_motion(path, character, animation=None)
        motion = rest + 0.2 * torch.randn(4, *rest.shape[1:], generator=generator, dtype=torch.float64)
        motion[..., 6] = rest[..., 6]
    out = str(tmp_path / f"saved{extension}")
    save_gltf(out, character, motion, fps=24)
    reloaded = load_gltf(out, dtype=torch.float64)
    reloaded_motion = load_gltf_motion(out, reloaded, animation=0)
    assert reloaded_motion.shape == motion.shape
    expected = posed_vertices(character, motion).numpy()
    got = posed_vertices(reloaded, reloaded_motion).numpy()
    np.testing.assert_allclose(got, expected, atol=tolerance(expected[0]) * 10, rtol=0)
    # Any glTF reader sees the same: the reference reads the saved file.
    g = ref.Gltf(out)
    for f in (0, len(motion) - 1):
        np.testing.assert_allclose(ref.skinned_vertices(g, 0, f / 24), expected[f], atol=tolerance(expected[f]) * 10, rtol=0)


# ------------------------------------------------------ edited copies of a file
def edited_simple_skin(tmp_path, edit, name="edited.gltf"):
    doc = json.load(open(SIMPLE_SKIN))
    edit(doc)
    path = str(tmp_path / name)
    json.dump(doc, open(path, "w"))
    return path


def add_buffer(doc, floats, accessor_type, count):
    """Appends a data-URI buffer of float32 values and an accessor over it."""
    data = struct.pack("<%df" % len(floats), *floats)
    doc["buffers"].append({"byteLength": len(data),
                           "uri": "data:application/octet-stream;base64," + base64.b64encode(data).decode()})
    doc["bufferViews"].append({"buffer": len(doc["buffers"]) - 1, "byteOffset": 0, "byteLength": len(data)})
    accessor = {"bufferView": len(doc["bufferViews"]) - 1, "componentType": 5126, "count": count, "type": accessor_type}
    if accessor_type == "SCALAR":
        accessor["min"], accessor["max"] = [min(floats)], [max(floats)]
    doc["accessors"].append(accessor)
    return len(doc["accessors"]) - 1


@pytest.mark.parametrize("interpolation", ["STEP", "CUBICSPLINE", "LINEAR"])
def test_interpolation_modes(tmp_path, interpolation):
    times = [0.0, 0.5, 1.25, 2.0]
    angles = [0.0, 0.9, -0.4, 1.3]

    def quat(a):
        return [0.0, 0.0, np.sin(a / 2), np.cos(a / 2)]

    def edit(doc):
        values = []
        for i, a in enumerate(angles):
            if interpolation == "CUBICSPLINE":
                values += [0.1 * i, -0.05, 0.2, 0.0] + quat(a) + [0.0, 0.15, -0.1 * i, 0.05]
            else:
                values += quat(a)
        translations = [v for i in range(4) for v in (0.1 * i, 1.0 + 0.2 * (i % 2), 0.0)]
        if interpolation == "CUBICSPLINE":
            translations = [v for i in range(4) for v in (0.3, 0.0, -0.2, 0.1 * i, 1.0, 0.05 * i, -0.1, 0.2, 0.0)]
        time_acc = add_buffer(doc, times, "SCALAR", 4)
        rot_acc = add_buffer(doc, values, "VEC4", len(values) // 4)
        tr_acc = add_buffer(doc, translations, "VEC3", len(translations) // 3)
        doc["animations"][0]["samplers"] = [
            {"input": time_acc, "output": rot_acc, "interpolation": interpolation},
            {"input": time_acc, "output": tr_acc, "interpolation": interpolation},
        ]
        doc["animations"][0]["channels"] = [
            {"sampler": 0, "target": {"node": 2, "path": "rotation"}},
            {"sampler": 1, "target": {"node": 2, "path": "translation"}},
        ]

    path = edited_simple_skin(tmp_path, edit)
    g = ref.Gltf(path)
    character = load_gltf(path, dtype=torch.float64)
    sample_times = [0.0, 0.2, 0.5, 0.8, 1.25, 1.7, 2.0]
    vertices = posed_vertices(character, load_gltf_motion(path, character, 0, times=sample_times)).numpy()
    for f, t in enumerate(sample_times):
        expected = ref.skinned_vertices(g, 0, t)
        np.testing.assert_allclose(vertices[f], expected, atol=1e-9, rtol=0, err_msg=f"t={t}")


def test_non_uniform_scale_is_refused(tmp_path):
    path = edited_simple_skin(tmp_path, lambda doc: doc["nodes"][2].update(scale=[1.0, 2.0, 1.0]))
    with pytest.raises(GltfError, match=r"non-uniform scale \[1.0, 2.0, 1.0\]"):
        load_gltf(path)
    # float noise is accepted, and the uniform part lives in the joint parameters
    path = edited_simple_skin(tmp_path, lambda doc: doc["nodes"][2].update(scale=[1.5, 1.5000001, 1.4999999]), "noise.gltf")
    character = load_gltf(path, dtype=torch.float64)
    rest = load_gltf_motion(path, character, None)
    assert abs(rest[0, 1, 6].item() - np.log2(1.5)) < 1e-6
    expected = ref.skinned_vertices(ref.Gltf(path))
    np.testing.assert_allclose(posed_vertices(character, rest)[0].numpy(), expected, atol=tolerance(expected), rtol=0)


def test_animated_non_uniform_scale_is_refused(tmp_path):
    def edit(doc):
        t = add_buffer(doc, [0.0, 1.0], "SCALAR", 2)
        s = add_buffer(doc, [1, 1, 1, 1, 3, 1], "VEC3", 2)
        doc["animations"][0]["samplers"].append({"input": t, "output": s})
        doc["animations"][0]["channels"].append({"sampler": len(doc["animations"][0]["samplers"]) - 1,
                                                  "target": {"node": 2, "path": "scale"}})

    path = edited_simple_skin(tmp_path, edit)
    character = load_gltf(path)
    with pytest.raises(GltfError, match="non-uniform scale"):
        load_gltf_motion(path, character, 0)


def test_joint_bound_by_two_skins_with_different_binds_is_refused(tmp_path):
    def edit(doc):
        skin = copy.deepcopy(doc["skins"][0])
        ibm = ref.Gltf(SIMPLE_SKIN).accessor(skin["inverseBindMatrices"]).copy()
        ibm[1, 0, 3] += 0.5
        skin["inverseBindMatrices"] = add_buffer(doc, list(ibm.transpose(0, 2, 1).reshape(-1)), "MAT4", len(ibm))
        doc["skins"].append(skin)
        doc["nodes"].append({"mesh": 0, "skin": 1})
        doc["scenes"][0]["nodes"].append(len(doc["nodes"]) - 1)

    path = edited_simple_skin(tmp_path, edit)
    with pytest.raises(GltfError, match="bound by skins 0 and 1 with different inverse bind matrices"):
        load_gltf(path)


def test_morph_targets_of_a_skinned_mesh_are_blend_shapes(tmp_path):
    """A morph target on a skinned mesh: morphed first, then skinned (the
    spec's order), with the mesh's default weight."""
    def edit(doc):
        count = doc["accessors"][doc["meshes"][0]["primitives"][0]["attributes"]["POSITION"]]["count"]
        offsets = [0.1 * ((i % 7) - 3) for i in range(3 * count)]
        doc["meshes"][0]["primitives"][0]["targets"] = [{"POSITION": add_buffer(doc, offsets, "VEC3", count)}]
        doc["meshes"][0]["weights"] = [0.7]

    path = edited_simple_skin(tmp_path, edit)
    character = load_gltf(path, dtype=torch.float64)
    assert character.num_blend_shapes == 1
    weights = momentum_ops.io.load_gltf_blend_weights(path, character, animation=None)
    assert weights.tolist() == [[0.7]]
    g = ref.Gltf(path)
    rest = load_gltf_motion(path, character, None)
    np.testing.assert_allclose(character.skin(character.joint_parameters_to_skeleton_state(rest), weights)[0].numpy(),
                               ref.posed_vertices(g), atol=1e-9)
    times = ref.keyframe_times(g, 0)
    motion = load_gltf_motion(path, character, 0)
    posed = character.skin(character.joint_parameters_to_skeleton_state(motion),
                           momentum_ops.io.load_gltf_blend_weights(path, character, 0)).numpy()
    for f, t in enumerate(times):
        np.testing.assert_allclose(posed[f], ref.posed_vertices(g, 0, t), atol=1e-6)


def test_errors_name_what_is_wrong(tmp_path):
    character = load_gltf(SIMPLE_SKIN)
    with pytest.raises(FileNotFoundError):
        load_gltf(str(tmp_path / "missing.glb"))
    with pytest.raises(KeyError, match="no animation 'dance'"):
        load_gltf_motion(SIMPLE_SKIN, character, "dance")
    with pytest.raises(IndexError, match="animation 3 out of range"):
        load_gltf_motion(SIMPLE_SKIN, character, 3)
    other = load_gltf(os.path.join(ASSETS, "RiggedSimple", "RiggedSimple.glb"))
    with pytest.raises(ValueError, match="do not match the character"):
        load_gltf_motion(SIMPLE_SKIN, other, 0)
    nothing = edited_simple_skin(tmp_path, lambda doc: (doc.pop("skins"), doc["nodes"][0].pop("skin"),
                                                        doc["nodes"][0].pop("mesh")), "nothing.gltf")
    with pytest.raises(GltfError, match="no skin and no mesh"):
        load_gltf(nothing)
    with pytest.raises(ValueError, match="fps must be a finite number > 0, got 0"):
        save_gltf(str(tmp_path / "x.glb"), character, torch.zeros(2, 2, 7), fps=0)
