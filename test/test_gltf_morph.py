"""glTF morph targets as blend shapes, meshes without a skin, and
load_gltf_blend_weights, against the independent spec reference
(gltf_reference.py: morph, then skin or move with the node)."""

import base64
import glob
import json
import os
import struct

import numpy as np
import pytest
import torch

import gltf_reference as ref
from momentum_ops.io import (
    GltfError,
    gltf_animations,
    load_gltf,
    load_gltf_blend_weights,
    load_gltf_motion,
    save_gltf,
)

HERE = os.path.dirname(os.path.abspath(__file__))
MORPH_FILES = sorted(glob.glob(os.path.join(HERE, "assets", "gltf_morph", "*", "*.gl[bt]*")))
SIMPLE_MORPH = os.path.join(HERE, "assets", "gltf_morph", "SimpleMorph", "SimpleMorph.gltf")
SKINNED = os.path.join(HERE, "assets", "gltf", "CesiumMan", "CesiumMan.glb")


def file_id(path):
    return os.path.basename(path)


def posed(character, joint_parameters, blend_weights):
    state = character.joint_parameters_to_skeleton_state(joint_parameters)
    return character.skin(state, blend_weights)


def tolerance(vertices):
    return 1e-5 * max(1.0, float(np.linalg.norm(vertices.max(axis=0) - vertices.min(axis=0))))


def test_every_morph_asset_is_found():
    assert {os.path.basename(f) for f in MORPH_FILES} == {"SimpleMorph.gltf", "AnimatedMorphCube.glb",
                                                          "MorphStressTest.glb"}


@pytest.mark.parametrize("path", MORPH_FILES, ids=file_id)
def test_blend_shapes_and_names_from_the_file(path):
    g = ref.Gltf(path)
    character = load_gltf(path, dtype=torch.float64)
    mesh_nodes = [n for n, node in enumerate(g.nodes) if "mesh" in node]
    meshes = [g.json["meshes"][g.nodes[n]["mesh"]] for n in mesh_nodes]
    counts = [len(m["primitives"][0].get("targets", [])) for m in meshes]
    assert character.num_blend_shapes == sum(counts)
    names = (meshes[0].get("extras") or {}).get("targetNames")
    assert character.blend_shape_names == (names or [f"target_{i}" for i in range(counts[0])])
    # The rigid mesh node is a joint; its vertices are bound to it alone.
    assert all(g.nodes[n].get("name", f"node_{n}") in character.joint_names for n in mesh_nodes)
    assert bool((character.skin_weights.sum(-1) == 1).all())


@pytest.mark.parametrize("path", MORPH_FILES, ids=file_id)
def test_default_weights_reproduce_the_rest_of_the_file(path):
    g = ref.Gltf(path)
    character = load_gltf(path, dtype=torch.float64)
    weights = load_gltf_blend_weights(path, character, animation=None)
    expected = np.concatenate([ref.morph_weights(g, n) for n, node in enumerate(g.nodes) if "mesh" in node])
    np.testing.assert_allclose(weights[0].numpy(), expected, rtol=0, atol=0)
    vertices = posed(character, load_gltf_motion(path, character, animation=None), weights)[0].numpy()
    reference = ref.posed_vertices(g)
    np.testing.assert_allclose(vertices, reference, atol=tolerance(reference), rtol=0)


@pytest.mark.parametrize("path", MORPH_FILES, ids=file_id)
def test_every_keyframe_of_every_animation(path):
    g = ref.Gltf(path)
    character = load_gltf(path, dtype=torch.float64)
    names = gltf_animations(path)
    assert names
    for index in range(len(g.json["animations"])):
        times = ref.keyframe_times(g, index)
        weights = load_gltf_blend_weights(path, character, animation=index)
        assert weights.shape == (len(times), character.num_blend_shapes)
        torch.testing.assert_close(load_gltf_blend_weights(path, character, animation=names[index]), weights)
        motion = load_gltf_motion(path, character, animation=index)
        vertices = posed(character, motion, weights).numpy()
        mesh_nodes = [n for n, node in enumerate(g.nodes) if "mesh" in node]
        for f, t in enumerate(times):
            expected_weights = np.concatenate([ref.morph_weights(g, n, index, t) for n in mesh_nodes])
            np.testing.assert_allclose(weights[f].numpy(), expected_weights, atol=1e-12, rtol=0)
            expected = ref.posed_vertices(g, index, t)
            np.testing.assert_allclose(vertices[f], expected, atol=tolerance(expected), rtol=0,
                                       err_msg=f"animation {index} at t={t}")


def add_buffer(doc, floats, accessor_type, count):
    data = struct.pack("<%df" % len(floats), *floats)
    doc["buffers"].append({"byteLength": len(data),
                           "uri": "data:application/octet-stream;base64," + base64.b64encode(data).decode()})
    doc["bufferViews"].append({"buffer": len(doc["buffers"]) - 1, "byteLength": len(data)})
    accessor = {"bufferView": len(doc["bufferViews"]) - 1, "componentType": 5126, "count": count,
                "type": accessor_type}
    if accessor_type == "SCALAR" and floats:
        accessor["min"], accessor["max"] = [min(floats)], [max(floats)]
    doc["accessors"].append(accessor)
    return len(doc["accessors"]) - 1


def edited_simple_morph(tmp_path, edit, name="edited.gltf"):
    doc = json.load(open(SIMPLE_MORPH))
    edit(doc)
    path = str(tmp_path / name)
    json.dump(doc, open(path, "w"))
    return path


@pytest.mark.parametrize("interpolation", ["STEP", "CUBICSPLINE", "LINEAR"])
def test_weights_interpolation_between_keyframes(tmp_path, interpolation):
    """A weights channel in each mode, sampled between and beyond its keys,
    against the reference's per-time sampling; the node also moves."""
    keys = [0.0, 0.5, 1.5, 2.0]
    rng = np.random.default_rng(3)
    points = rng.uniform(-1, 2, size=(4, 2))
    if interpolation == "CUBICSPLINE":
        tangents = rng.normal(size=(4, 2, 2))
        values = np.stack([tangents[:, 0], points, tangents[:, 1]], axis=1).reshape(-1)
    else:
        values = points.reshape(-1)

    def edit(doc):
        animation = doc["animations"][0]
        output = add_buffer(doc, values.tolist(), "SCALAR", len(values))
        animation["samplers"][0] = {"input": add_buffer(doc, keys, "SCALAR", 4), "output": output,
                                    "interpolation": interpolation}
        translation = add_buffer(doc, [0, 0, 0, 1, 2, 3, -1, 0, 1, 0, 0, 0], "VEC3", 4)
        animation["samplers"].append({"input": animation["samplers"][0]["input"], "output": translation})
        animation["channels"].append({"sampler": 1, "target": {"node": 0, "path": "translation"}})

    path = edited_simple_morph(tmp_path, edit)
    character = load_gltf(path, dtype=torch.float64)
    times = [-0.5, 0.0, 0.2, 0.5, 0.9, 1.5, 1.7, 2.0, 3.0]
    weights = load_gltf_blend_weights(path, character, times=times)
    motion = load_gltf_motion(path, character, times=times)
    vertices = posed(character, motion, weights).numpy()
    g = ref.Gltf(path)
    for f, t in enumerate(times):
        np.testing.assert_allclose(weights[f].numpy(), ref.morph_weights(g, 0, 0, t), atol=1e-12, rtol=0)
        np.testing.assert_allclose(vertices[f], ref.posed_vertices(g, 0, t), atol=1e-9, rtol=0)


def test_node_weights_override_mesh_weights(tmp_path):
    path = edited_simple_morph(tmp_path, lambda doc: doc["nodes"][0].update(weights=[0.25, -1.0]))
    character = load_gltf(path, dtype=torch.float64)
    assert load_gltf_blend_weights(path, character, animation=None).tolist() == [[0.25, -1.0]]


def test_mesh_under_a_moving_parent_moves_rigidly(tmp_path):
    """A mesh node without a skin whose parent is animated: both become
    joints, and the vertices follow the parent's motion and the node's rest
    transform (rotation and scale)."""
    def edit(doc):
        doc["nodes"][0].update(rotation=[0.0, 0.0, 0.3826834, 0.9238795], scale=[2.0, 2.0, 2.0],
                               translation=[0.5, 0.0, 0.0])
        doc["nodes"].append({"name": "parent", "children": [0], "translation": [0, 1, 0]})
        doc["scenes"][0]["nodes"] = [1]
        rotation = add_buffer(doc, [0, 0, 0, 1, 0.7071068, 0, 0, 0.7071068], "VEC4", 2)
        keys = add_buffer(doc, [0.0, 1.0], "SCALAR", 2)
        doc["animations"][0]["samplers"].append({"input": keys, "output": rotation})
        doc["animations"][0]["channels"].append({"sampler": 1, "target": {"node": 1, "path": "rotation"}})

    path = edited_simple_morph(tmp_path, edit)
    character = load_gltf(path, dtype=torch.float64)
    assert character.joint_names == ["parent", "node_0"]
    g = ref.Gltf(path)
    times = [0.0, 0.5, 1.0, 2.0]
    vertices = posed(character, load_gltf_motion(path, character, times=times),
                     load_gltf_blend_weights(path, character, times=times)).numpy()
    for f, t in enumerate(times):
        np.testing.assert_allclose(vertices[f], ref.posed_vertices(g, 0, t), atol=1e-6, rtol=0)


def test_skinned_mesh_with_morph_targets_written_and_read(tmp_path, generator):
    """A skinned character with blend shapes, saved with save_gltf (morph
    targets and a weights channel), read back by the reference: every frame
    matches the character posed with the same weights; load_gltf reads the
    same blend shapes, names and weights back."""
    base = load_gltf(SKINNED, dtype=torch.float64)
    V = base.num_vertices
    shapes = 0.05 * torch.randn(3, V, 3, generator=generator, dtype=torch.float64)
    names = ["smile", "brow", "jaw"]
    character = type(base)(base.joint_names, base.parents, base.offsets, base.pre_rotations,
                           inverse_bind_pose=base.inverse_bind_pose, rest_vertices=base.rest_vertices,
                           faces=base.faces, skin_indices=base.skin_indices, skin_weights=base.skin_weights,
                           blend_shapes=shapes, blend_shape_names=names)
    motion = load_gltf_motion(SKINNED, base, animation=0)[:5]
    weights = torch.rand(5, 3, generator=generator, dtype=torch.float64) * 2 - 0.5
    path = str(tmp_path / "morph_skin.glb")
    save_gltf(path, character, motion, fps=10, blend_weights=weights)

    expected = posed(character, motion, weights).numpy()
    g = ref.Gltf(path)
    for f in range(5):
        np.testing.assert_allclose(ref.posed_vertices(g, 0, f / 10), expected[f], atol=tolerance(expected[f]) * 10,
                                   rtol=0)
    reloaded = load_gltf(path, dtype=torch.float64)
    assert reloaded.blend_shape_names == names
    torch.testing.assert_close(reloaded.blend_shapes, shapes, atol=1e-6, rtol=0)
    reloaded_weights = load_gltf_blend_weights(path, reloaded)
    torch.testing.assert_close(reloaded_weights, weights, atol=1e-6, rtol=0)
    got = posed(reloaded, load_gltf_motion(path, reloaded), reloaded_weights).numpy()
    np.testing.assert_allclose(got, expected, atol=tolerance(expected[0]) * 10, rtol=0)


def test_gradients_reach_blend_weights_through_the_character(generator):
    character = load_gltf(MORPH_FILES[1], dtype=torch.float64)  # MorphStressTest
    weights = torch.rand(2, character.num_blend_shapes, generator=generator, dtype=torch.float64,
                         requires_grad=True)
    theta = torch.zeros(2, character.num_parameters, dtype=torch.float64, requires_grad=True)
    vertices = character(theta, weights)
    target = torch.randn(vertices.shape, generator=generator, dtype=torch.float64)
    grad_w, grad_theta = torch.autograd.grad(((vertices - target) ** 2).sum(), (weights, theta))
    # The rigid node: posed = R(node) (rest + sum_s w_s D_s) + t, so the
    # weight gradient is 2 sum_v (posed - target) . R D_s; at the rest pose R
    # is the node's own rotation, which the loader bound into the rest points.
    offsets = character.blend_shapes  # already placed by the node's bind pose
    expected = 2 * torch.einsum("bvc,svc->bs", vertices.detach() - target, offsets)
    torch.testing.assert_close(grad_w, expected, atol=1e-9, rtol=1e-9)
    assert grad_theta.abs().sum() > 0


def test_bad_blend_weights(tmp_path):
    character = load_gltf(SIMPLE_MORPH)
    theta = torch.zeros(1, character.num_parameters)
    with pytest.raises(ValueError, match=r"blend_weights must have shape \[..., 2\]"):
        character(theta, torch.zeros(1, 3))
    with pytest.raises(ValueError, match="times must be finite"):
        load_gltf_blend_weights(SIMPLE_MORPH, character, times=[float("nan")])
    other = load_gltf(MORPH_FILES[1])  # MorphStressTest: 8 shapes
    with pytest.raises(ValueError, match="morph targets do not match"):
        load_gltf_blend_weights(SIMPLE_MORPH, other)
    with pytest.raises(ValueError, match=r"blend_weights must have shape \[1, 2\]"):
        save_gltf(str(tmp_path / "x.glb"), character, torch.zeros(1, 1, 7), blend_weights=torch.zeros(2, 2))


@pytest.mark.parametrize("edit,message", [
    (lambda d: d["meshes"][0]["primitives"][0]["targets"].pop(), None),
    (lambda d: d["meshes"][0].update(weights=[0.5]), r"meshes\[0\]\.weights must be an array of 2 numbers"),
    (lambda d: d["nodes"][0].update(weights=[0.5, "x"]), r"nodes\[0\]\.weights must be an array of 2 numbers"),
    (lambda d: d["meshes"][0]["primitives"][0].update(targets={"POSITION": 1}), r"targets must be an array"),
    (lambda d: d["meshes"][0]["primitives"][0]["targets"][0].update(POSITION=0), None),
])
def test_malformed_morph_targets(tmp_path, edit, message):
    path = edited_simple_morph(tmp_path, edit)
    with pytest.raises(GltfError, match=message or ""):
        character = load_gltf(path)
        load_gltf_blend_weights(path, character)


def test_a_million_targets_of_one_accessor_is_refused_not_allocated(tmp_path, pretend_memory):
    """A few bytes of JSON per target can name a huge number of morph targets
    (all the same accessor): the blend shapes they would take are checked
    against the machine's memory (pretended here to be 1 MiB) before they
    are allocated; the same for the frames of blend weights."""
    pretend_memory(1 << 20)

    def edit(doc):
        primitive = doc["meshes"][0]["primitives"][0]
        primitive["targets"] = [primitive["targets"][0]] * 100000
        doc["meshes"][0]["weights"] = [0.0] * 100000
        doc.pop("animations")

    path = edited_simple_morph(tmp_path, edit)
    with pytest.raises(GltfError, match=r"100000 morph targets of 3 vertices would take 6\.9 MiB, more than half of "
                                        r"this machine's 1\.0 MiB of memory"):
        load_gltf(path)


def test_frames_of_blend_weights_are_checked_before_they_are_allocated(tmp_path, pretend_memory):
    pretend_memory(16 << 20)

    def edit(doc):
        primitive = doc["meshes"][0]["primitives"][0]
        primitive["targets"] = [primitive["targets"][0]] * 100000
        doc["meshes"][0]["weights"] = [0.0] * 100000
        doc["animations"][0]["channels"] = []

    path = edited_simple_morph(tmp_path, edit)
    character = load_gltf(path)  # 100000 targets of 3 vertices: 6.9 MiB, within the pretended 16 MiB
    with pytest.raises(GltfError, match=r"100 frames of 100000 blend weights would take 76\.3 MiB"):
        load_gltf_blend_weights(path, character, times=np.arange(100) / 10)
