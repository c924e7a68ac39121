"""Malformed and hostile glTF files, generated from the test assets.

Every case must raise GltfError naming the object and what is wrong; none may
crash, hang, read a file outside the model's folder, or raise anything else.
An audit hook watches every file the loaders open.
"""

import json
import os
import shutil
import struct
import sys

import numpy as np
import pytest
import torch

from momentum_ops.io import GltfError, gltf_animations, load_gltf, load_gltf_motion

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import fuzz_gltf  # noqa: E402  (split_glb / join_glb / the harness)

ASSETS = os.path.join(ROOT, "test", "assets", "gltf")
EXTERNAL = os.path.join(ASSETS, "SimpleSkin", "glTF")  # SimpleSkin with four external .bin buffers
CESIUM = os.path.join(ASSETS, "CesiumMan", "CesiumMan.glb")

# ------------------------------------------------------------- opened files
_WATCH = {"folder": None, "outside": []}


def _audit(event, args):
    if event == "open" and _WATCH["folder"] and args and isinstance(args[0], (str, bytes)):
        real = os.path.realpath(os.fsdecode(args[0]))
        if os.path.commonpath([_WATCH["folder"], real]) != _WATCH["folder"] and not real.endswith(".py") \
                and "__pycache__" not in real and not real.startswith(sys.prefix):
            _WATCH["outside"].append(real)


sys.addaudithook(_audit)


def load_everything(path):
    """Every loader on one file, watching what they open; returns what was opened outside its folder."""
    _WATCH["folder"], _WATCH["outside"] = os.path.realpath(os.path.dirname(path)), []
    try:
        character = load_gltf(path, dtype=torch.float64)
        for index in range(len(gltf_animations(path))):
            load_gltf_motion(path, character, index)
        load_gltf_motion(path, character, None)
    finally:
        _WATCH["folder"] = None
    return _WATCH["outside"]


def expect_error(path, match):
    _WATCH["folder"], _WATCH["outside"] = os.path.realpath(os.path.dirname(path)), []
    try:
        with pytest.raises(GltfError, match=match) as info:
            character = load_gltf(path, dtype=torch.float64)
            for index in range(len(gltf_animations(path))):
                load_gltf_motion(path, character, index)
    finally:
        _WATCH["folder"] = None
    assert _WATCH["outside"] == [], f"opened outside the model folder: {_WATCH['outside']}"
    assert os.path.basename(path) in str(info.value)  # the error names the file
    return str(info.value)


# ------------------------------------------------------------------ builders
@pytest.fixture
def model(tmp_path):
    """tmp/model/ holding SimpleSkin with external buffers, a secret file beside
    the folder, and traps inside it (a FIFO, links that lead out, a folder)."""
    folder = tmp_path / "model"
    shutil.copytree(EXTERNAL, folder)
    (tmp_path / "secret.bin").write_bytes(b"\x01" * 4096)
    os.symlink(tmp_path / "secret.bin", folder / "link_out.bin")
    os.symlink("/dev/zero", folder / "zero_link.bin")
    os.mkfifo(folder / "fifo.bin")
    (folder / "folder").mkdir()
    return folder


def edited(folder, edit, name="SimpleSkin.gltf"):
    doc = json.load(open(os.path.join(EXTERNAL, "SimpleSkin.gltf")))
    edit(doc)
    path = folder / name
    path.write_text(json.dumps(doc))
    return str(path)


def patch(folder, buffer_file, offset, fmt, *values):
    data = bytearray((folder / buffer_file).read_bytes())
    struct.pack_into(fmt, data, offset, *values)
    (folder / buffer_file).write_bytes(bytes(data))
    return str(folder / "SimpleSkin.gltf")


def edited_glb(tmp_path, edit, source=CESIUM):
    doc, binary = fuzz_gltf.split_glb(open(source, "rb").read())
    edit(doc)
    path = tmp_path / "edited.glb"
    path.write_bytes(fuzz_gltf.join_glb(doc, binary))
    return str(path)


def test_the_unedited_copy_loads(model):
    assert load_everything(str(model / "SimpleSkin.gltf")) == []


# --------------------------------------------------------------- URIs
ESCAPES = [
    ("../secret.bin", "points outside the file's folder"),
    ("%2e%2e/secret.bin", "points outside the file's folder"),
    ("%2E%2E%2Fsecret.bin", "points outside the file's folder"),
    ("..%2fsecret.bin", "points outside the file's folder"),
    ("sub/../../secret.bin", "points outside the file's folder"),
    ("folder/../../secret.bin", "points outside the file's folder"),
    ("link_out.bin", "points outside the file's folder"),
    ("zero_link.bin", "points outside the file's folder"),
    ("/etc/passwd", "is an absolute path"),
    ("/dev/zero", "is an absolute path"),
    ("%2Fetc%2Fpasswd", "is an absolute path"),
    ("file:///etc/passwd", "has a scheme"),
    ("http://example.invalid/x.bin", "has a scheme"),
    ("C:/Windows/x.bin", "has a scheme"),
    ("fifo.bin", "is not a regular file"),
    ("folder", "is not a regular file"),
    (".", "points outside the file's folder"),
    ("a%00b.bin", "contains a NUL character"),
    ("%ff.bin", "percent-encoding that is not UTF-8"),
    ("missing.bin", "no such file"),
    ("data:application/octet-stream,AAAA", "a data URI must be base64"),
    ("data:application/octet-stream;base64,@@@@", "not valid base64"),
    ("data:application/octet-stream;base64,AAAA", r"byteLength is \d+ but only 3 bytes back it"),
]


@pytest.mark.parametrize("uri,match", ESCAPES, ids=[u for u, _ in ESCAPES])
def test_buffer_uris_stay_inside_the_folder(model, uri, match):
    path = edited(model, lambda doc: doc["buffers"][1].update(uri=uri))
    message = expect_error(path, match)
    assert "buffers[1]" in message


def test_absolute_path_to_a_real_file_is_refused(model, tmp_path):
    path = edited(model, lambda doc: doc["buffers"][0].update(uri=str(tmp_path / "secret.bin")))
    expect_error(path, r"buffers\[0\]\.uri: URI .* is an absolute path")


def test_a_symlinked_folder_inside_that_leads_out_is_refused(model, tmp_path):
    (tmp_path / "outside").mkdir()
    shutil.copy(model / "skinningData.bin", tmp_path / "outside" / "skinningData.bin")
    os.symlink(tmp_path / "outside", model / "linked")
    path = edited(model, lambda doc: doc["buffers"][1].update(uri="linked/skinningData.bin"))
    expect_error(path, "points outside the file's folder")


def test_a_relative_path_that_stays_inside_is_read(model):
    (model / "sub").mkdir()
    shutil.move(model / "skinningData.bin", model / "sub" / "skinning data.bin")
    path = edited(model, lambda doc: doc["buffers"][1].update(uri="sub/../sub/skinning%20data.bin"))
    assert load_everything(path) == []


@pytest.mark.parametrize("uri,match", [("../secret.png", "outside the file's folder"),
                                       ("/etc/passwd", "absolute path"),
                                       ("data:image/png,xyz", "must be base64")])
def test_image_uris_are_checked_too(model, uri, match):
    path = edited(model, lambda doc: doc.update(images=[{"uri": uri}]))
    assert "images[0].uri" in expect_error(path, match)


@pytest.mark.parametrize("target", ["fifo.bin", "folder", "zero_link.bin"])
def test_the_main_file_must_be_a_regular_file(model, target):
    with pytest.raises(GltfError, match="is not a regular file"):
        load_gltf(str(model / target))


def test_devices_are_refused_without_reading():
    with pytest.raises(GltfError, match="is not a regular file"):
        load_gltf("/dev/zero")


def test_a_missing_main_file_is_file_not_found(model):
    with pytest.raises(FileNotFoundError):
        load_gltf(str(model / "nothing.gltf"))


# ---------------------------------------------------- container and JSON
def write(folder, name, data):
    path = folder / name
    path.write_bytes(data)
    return str(path)


def glb(json_bytes, chunk_type=0x4E4F534A, version=2, length_delta=0):
    body = struct.pack("<II", len(json_bytes), chunk_type) + json_bytes
    return struct.pack("<4sII", b"glTF", version, 12 + len(body) + length_delta) + body


CONTAINERS = [
    ("text.gltf", b"hello", "its JSON does not parse"),
    ("array.gltf", b"[1, 2]", "the JSON is not an object"),
    ("latin1.gltf", b'{"asset": {"version": "2.0"}, "x": "\xff"}', "its JSON does not parse"),
    ("nan.gltf", b'{"asset": {"version": "2.0"}, "nodes": [{"translation": [NaN, 0, 0]}]}', "does not parse"),
    ("deep.gltf", b"[" * 200000 + b"]" * 200000, "does not parse"),
    ("version1.gltf", b'{"asset": {"version": "1.0"}}', r"asset.version is '1.0'"),
    ("noasset.gltf", b'{"nodes": []}', "asset.version is None"),
    ("draco.gltf", b'{"asset": {"version": "2.0"}, "extensionsRequired": ["KHR_draco_mesh_compression"]}',
     "requires extensions momentum_ops does not read"),
    ("nodes.gltf", b'{"asset": {"version": "2.0"}, "nodes": {"a": 1}}', "nodes must be an array"),
    ("nodeint.gltf", b'{"asset": {"version": "2.0"}, "nodes": [3]}', r"nodes\[0\] must be an object"),
    ("short.glb", b"glTF\x02\x00\x00\x00", "the GLB header needs 12 bytes"),
    ("v1.glb", glb(b'{"asset":{"version":"2.0"}}', version=1), "GLB version 1"),
    ("long.glb", glb(b'{"asset":{"version":"2.0"}}', length_delta=100), "declares .* bytes but the file has"),
    ("bin_first.glb", glb(b'{"asset":{"version":"2.0"}}', chunk_type=0x004E4942), "first GLB chunk must be the JSON"),
    ("chunk_past.glb", b"glTF" + struct.pack("<II", 2, 40) + struct.pack("<II", 1000, 0x4E4F534A) + b"{}" * 10,
     "runs past the declared length"),
    ("noskin.gltf", b'{"asset": {"version": "2.0"}, "nodes": [{}]}', "no skin and no mesh"),
]


@pytest.mark.parametrize("name,data,match", CONTAINERS, ids=[c[0] for c in CONTAINERS])
def test_bad_containers_and_json(tmp_path, name, data, match):
    expect_error(write(tmp_path, name, data), match)


@pytest.mark.parametrize("fraction", [0.0005, 0.002, 0.01, 0.05, 0.1, 0.2, 0.35, 0.5, 0.65, 0.8, 0.9, 0.97, 0.999])
def test_truncated_glb(tmp_path, fraction):
    data = open(CESIUM, "rb").read()
    expect_error(write(tmp_path, "truncated.glb", data[: int(len(data) * fraction)]), ".")


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9, 0.999])
def test_truncated_buffer_file(model, fraction):
    data = (model / "skinAnimation.bin").read_bytes()
    (model / "skinAnimation.bin").write_bytes(data[: int(len(data) * fraction)])
    expect_error(str(model / "SimpleSkin.gltf"), r"buffers\[3\]\.byteLength is 240 but only \d+ bytes back it")


def test_buffer_without_uri_needs_a_glb_chunk(model):
    path = edited(model, lambda doc: doc["buffers"][0].pop("uri"))
    expect_error(path, r"buffers\[0\] has no uri and the file has no GLB binary chunk")


# ----------------------------------------------- accessors, views, buffers
def accessor_edit(index, **fields):
    return lambda doc: doc["accessors"][index].update(fields)


def view_edit(index, **fields):
    return lambda doc: doc["bufferViews"][index].update(fields)


LAYOUT = [
    ("count_huge", accessor_edit(1, count=10 ** 9), r"accessors\[1\]: 1000000000 elements .* need \d+ bytes"),
    ("count_2e53", accessor_edit(1, count=2 ** 60), r"accessors\[1\]\.count = \d+ must be an integer"),
    ("count_negative", accessor_edit(1, count=-1), r"accessors\[1\]\.count = -1 must be an integer"),
    ("count_zero", accessor_edit(1, count=0), r"accessors\[1\]\.count = 0 must be an integer in \[1"),
    ("count_float", accessor_edit(1, count=10.0), r"accessors\[1\]\.count = 10.0 must be an integer"),
    ("count_string", accessor_edit(1, count="10"), r"accessors\[1\]\.count = '10' must be an integer"),
    ("count_one_more", accessor_edit(1, count=11), r"accessors\[1\]: 11 elements .* need 132 bytes, but "
                                                   r"bufferViews\[1\] has 120"),
    ("offset_huge", accessor_edit(6, byteOffset=10 ** 12), r"accessors\[6\]: .* from byteOffset 1000000000000"),
    ("offset_misaligned", accessor_edit(3, byteOffset=161), r"accessors\[3\]: data at byte 161 is not aligned"),
    ("view_index", accessor_edit(1, bufferView=99), r"accessors\[1\]\.bufferView = 99 is not an index into "
                                                    r"bufferViews \(which has 5\)"),
    ("view_index_negative", accessor_edit(1, bufferView=-1), r"accessors\[1\]\.bufferView = -1 is not an index"),
    ("view_index_bool", accessor_edit(1, bufferView=True), r"accessors\[1\]\.bufferView = True is not an index"),
    ("component_for_joints", accessor_edit(2, componentType=5126),
     r"accessors\[2\] \(used as JOINTS .*componentType 5126; the spec allows \['UNSIGNED_BYTE', 'UNSIGNED_SHORT'\]"),
    ("component_unknown", accessor_edit(1, componentType=5130), r"accessors\[1\] .* componentType 5130"),
    ("component_as_object", accessor_edit(1, componentType={"a": 1}), r"accessors\[1\] .* componentType \{"),
    ("type_for_position", accessor_edit(1, type="VEC2"), r"accessors\[1\] \(used as POSITION .* type 'VEC2'"),
    ("type_as_list", accessor_edit(1, type=["VEC3"]), r"accessors\[1\] \(used as POSITION .* type \['VEC3'\]"),
    ("type_for_ibm", accessor_edit(4, type="MAT3"), r"accessors\[4\] \(used as inverseBindMatrices"),
    ("normalized_float", accessor_edit(1, normalized=True), r"accessors\[1\] \(used as POSITION\) must not be "
                                                            "normalized"),
    ("normalized_not_bool", accessor_edit(1, normalized=1), r"accessors\[1\]\.normalized must be true or false"),
    ("weights_unnormalized_int", accessor_edit(3, componentType=5121),
     r"accessors\[3\] \(used as WEIGHTS\) has integer components, which the spec allows only normalized"),
    ("unbacked_huge", lambda doc: doc["accessors"][1].pop("bufferView") and doc["accessors"][1].update(count=10 ** 8),
     r"accessors\[1\] has no bufferView but declares 100000000 elements"),
    ("view_offset", view_edit(1, byteOffset=10 ** 10), r"bufferViews\[1\]: byteOffset 10000000000 \+ byteLength 120 "
                                                       r"exceeds the 168 bytes of buffers\[0\]"),
    ("view_length", view_edit(4, byteLength=241), r"bufferViews\[4\]: byteOffset 0 \+ byteLength 241 exceeds"),
    ("view_length_zero", view_edit(4, byteLength=0), r"bufferViews\[4\]\.byteLength = 0 must be an integer in \[1"),
    ("view_buffer", view_edit(0, buffer=7), r"bufferViews\[0\]\.buffer = 7 is not an index into buffers"),
    ("stride_odd", view_edit(2, byteStride=6), r"bufferViews\[2\]\.byteStride = 6 must be a multiple of 4"),
    ("stride_small", view_edit(2, byteStride=4), r"byteStride 4 is smaller than one element \(8 bytes\)"),
    ("stride_huge", view_edit(2, byteStride=1024), r"bufferViews\[2\]\.byteStride = 1024 must be an integer in "
                                                   r"\[4, 252\]"),
    ("buffer_length_huge", lambda doc: doc["buffers"][2].update(byteLength=10 ** 15),
     r"buffers\[2\]\.byteLength is 1000000000000000 but only 128 bytes back it"),
    ("buffer_length_negative", lambda doc: doc["buffers"][2].update(byteLength=-5),
     r"buffers\[2\]\.byteLength = -5 must be an integer"),
    ("buffer_uri_number", lambda doc: doc["buffers"][2].update(uri=5), r"buffers\[2\]\.uri must be a string"),
    ("sparse_decreasing", lambda doc: add_sparse(doc, [3, 1]), r"accessors\[1\]\.sparse\.indices must be strictly "
                                                               "increasing"),
    ("sparse_beyond", lambda doc: add_sparse(doc, [1, 10]), r"strictly increasing and below count 10"),
    ("sparse_count", lambda doc: add_sparse(doc, [1, 2], count=11), r"accessors\[1\]\.sparse\.count = 11 must be"),
]


def add_sparse(doc, rows, count=None):
    """A sparse substitution on POSITION (accessor 1) with the given rows, data in a data URI."""
    import base64

    data = struct.pack(f"<{len(rows)}H", *rows) + b"\0" * (-2 * len(rows) % 4) + b"\0" * 12 * len(rows)
    doc["buffers"].append({"byteLength": len(data), "uri": "data:application/octet-stream;base64,"
                           + base64.b64encode(data).decode()})
    b = len(doc["buffers"]) - 1
    index_bytes = 2 * len(rows) + (-2 * len(rows) % 4)
    doc["bufferViews"] += [{"buffer": b, "byteLength": index_bytes},
                           {"buffer": b, "byteOffset": index_bytes, "byteLength": 12 * len(rows)}]
    v = len(doc["bufferViews"]) - 2
    doc["accessors"][1]["sparse"] = {"count": count or len(rows), "indices": {"bufferView": v, "componentType": 5123},
                                     "values": {"bufferView": v + 1}}


@pytest.mark.parametrize("name,edit,match", LAYOUT, ids=[c[0] for c in LAYOUT])
def test_every_read_is_checked_against_its_buffer(model, name, edit, match):
    expect_error(edited(model, edit), match)


def test_a_valid_sparse_accessor_substitutes_its_rows(model):
    def edit(doc):
        add_sparse(doc, [1, 4])

    character = load_gltf(edited(model, edit), dtype=torch.float64)
    reference = load_gltf(str(model / "SimpleSkin.gltf"), dtype=torch.float64)
    expected = reference.rest_vertices.clone()
    expected[[1, 4]] = 0.0
    torch.testing.assert_close(character.rest_vertices, expected)


# ------------------------------------------------------------- structure
def add_child(parent, child):
    return lambda doc: doc["nodes"][parent].setdefault("children", []).append(child)


STRUCTURE = [
    ("cycle", add_child(2, 1), r"nodes\[1\] is part of a cycle in the node hierarchy"),
    ("self_child", add_child(0, 0), r"nodes\[0\] is part of a cycle"),
    ("two_parents", add_child(0, 2), r"nodes\[2\] is a child of both nodes\[0\] and nodes\[1\]"),
    ("duplicate_child", add_child(1, 2), r"nodes\[1\]\.children lists nodes\[2\] twice"),
    ("child_out_of_range", add_child(1, 3), r"nodes\[1\]\.children\[1\] = 3 is not an index into nodes"),
    ("child_negative", add_child(1, -1), r"nodes\[1\]\.children\[1\] = -1 is not an index"),
    ("children_not_list", lambda doc: doc["nodes"][1].update(children=2), r"nodes\[1\]\.children must be an array"),
    ("mesh_index", lambda doc: doc["nodes"][0].update(mesh=4), r"nodes\[0\]\.mesh = 4 is not an index into meshes"),
    ("skin_without_mesh", lambda doc: doc["nodes"][0].pop("mesh"), r"nodes\[0\] has a skin but no mesh"),
    ("name_not_string", lambda doc: doc["nodes"][2].update(name=5), r"nodes\[2\]\.name must be a string"),
    ("joint_duplicate", lambda doc: doc["skins"][0].update(joints=[1, 2, 2]), r"skins\[0\]\.joints lists nodes\[2\] "
                                                                             "twice"),
    ("joint_missing", lambda doc: doc["skins"][0].update(joints=[1, 9]), r"skins\[0\]\.joints\[1\] = 9 is not an "
                                                                        "index into nodes"),
    ("joints_empty", lambda doc: doc["skins"][0].update(joints=[]), r"skins\[0\]\.joints is empty"),
    ("ibm_too_few", lambda doc: doc["skins"][0].update(joints=[1, 2, 0]),
     r"skins\[0\]\.inverseBindMatrices has 2 matrices for 3 joints"),
    ("rotation_zero", lambda doc: doc["nodes"][2].update(rotation=[0, 0, 0, 0]), r"nodes\[2\]\.rotation .* is not a "
                                                                                 "unit quaternion"),
    ("rotation_scaled", lambda doc: doc["nodes"][2].update(rotation=[0, 0, 0, 2]), "not a unit quaternion"),
    ("translation_text", lambda doc: doc["nodes"][2].update(translation=["a", 0, 0]),
     r"nodes\[2\]\.translation must be an array of 3 numbers"),
    ("translation_short", lambda doc: doc["nodes"][2].update(translation=[0, 0]), "array of 3 numbers"),
    ("matrix_and_trs", lambda doc: doc["nodes"][2].update(matrix=[2, 0, 0, 0, 0, 2, 0, 0, 0, 0, 2, 0, 0, 0, 0, 1]),
     r"nodes\[2\] has both a matrix and translation/rotation/scale"),
    ("matrix_projective", lambda doc: (doc["nodes"][2].pop("translation"), doc["nodes"][2].pop("rotation"),
                                       doc["nodes"][2].update(matrix=[1, 0, 0, 1, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1])),
     r"nodes\[2\]\.matrix is not affine"),
    ("primitives_empty", lambda doc: doc["meshes"][0].update(primitives=[]), r"meshes\[0\]\.primitives must be a "
                                                                             "non-empty array"),
    ("mode_unknown", lambda doc: doc["meshes"][0]["primitives"][0].update(mode=9),
     r"meshes\[0\]\.primitives\[0\]\.mode = 9 must be an integer in \[0, 6\]"),
    ("triangles_not_multiple_of_3", accessor_edit(0, count=23), r"a TRIANGLES primitive has 23 indices"),
    ("weights_count", accessor_edit(3, count=9), r"WEIGHTS_0 has 9 elements but POSITION has 10"),
    ("joints_without_weights", lambda doc: doc["meshes"][0]["primitives"][0]["attributes"].pop("WEIGHTS_0"),
     "JOINTS_0 without WEIGHTS_0"),
    ("no_joints", lambda doc: doc["meshes"][0]["primitives"][0]["attributes"].pop("JOINTS_0"), "has no JOINTS_0"),
]


@pytest.mark.parametrize("name,edit,match", STRUCTURE, ids=[c[0] for c in STRUCTURE])
def test_the_structure_is_checked(model, name, edit, match):
    expect_error(edited(model, edit), match)


# Binary edits of the data itself (SimpleSkin's external buffers).
DATA = [
    ("ibm_nan", "inverseBindMatrices.bin", 0, "<f", float("nan"), r"skins\[0\]\.inverseBindMatrices has values that "
                                                                  "are not finite"),
    ("ibm_not_affine", "inverseBindMatrices.bin", 3 * 4, "<f", 0.5, r"skins\[0\]\.inverseBindMatrices: the matrix of "
                                                                    r"joint 0 is not affine"),
    ("position_inf", "skinGeometry.bin", 48, "<f", float("inf"), "POSITION has values that are not finite"),
    ("weight_negative", "skinningData.bin", 160, "<f", -0.5, "WEIGHTS_0 has negative or non-finite weights"),
    ("weight_nan", "skinningData.bin", 164, "<f", float("nan"), "WEIGHTS_0 has negative or non-finite weights"),
    ("joint_beyond_skin", "skinningData.bin", 0, "<H", 2, r"a JOINTS_n index is beyond the 2 joints of skins\[0\]"),
    ("index_beyond_vertices", "skinGeometry.bin", 0, "<H", 10, r"indices has an index beyond its 10 vertices"),
    ("times_decreasing", "skinAnimation.bin", 8, "<f", 0.1, r"animations\[0\]\.samplers\[0\]\.input: keyframe times "
                                                            "must be strictly increasing"),
    ("times_repeated", "skinAnimation.bin", 4, "<f", 0.0, "strictly increasing"),
    ("time_nan", "skinAnimation.bin", 4, "<f", float("nan"), r"samplers\[0\]\.input has values that are not finite"),
    ("rotation_key_zero", "skinAnimation.bin", 48 + 16, "<4f", 0.0, 0.0, 0.0, 0.0, r"samplers\[0\]\.output has a zero "
                                                                                   "rotation quaternion"),
    ("rotation_key_inf", "skinAnimation.bin", 48, "<f", float("-inf"), r"samplers\[0\]\.output has values that are "
                                                                       "not finite"),
]


@pytest.mark.parametrize("name,file,offset,fmt,values", [c[:4] + (c[4:-1],) for c in DATA], ids=[c[0] for c in DATA])
def test_the_data_is_checked(model, name, file, offset, fmt, values):
    match = next(c[-1] for c in DATA if c[0] == name)
    expect_error(patch(model, file, offset, fmt, *values), match)


# ------------------------------------------------------------- animations
def sampler_edit(**fields):
    return lambda doc: doc["animations"][0]["samplers"][0].update(fields)


def channel_edit(**fields):
    return lambda doc: doc["animations"][0]["channels"][0].update(fields)


ANIMATIONS = [
    ("interpolation_unknown", sampler_edit(interpolation="QUADRATIC"),
     r"animations\[0\]\.samplers\[0\]\.interpolation = 'QUADRATIC'; the spec allows LINEAR, STEP, CUBICSPLINE"),
    ("interpolation_lowercase", sampler_edit(interpolation="linear"), "interpolation = 'linear'"),
    ("cubic_count", sampler_edit(interpolation="CUBICSPLINE"),
     r"samplers\[0\]\.output has 12 elements; CUBICSPLINE with 12 keyframes needs 36"),
    ("output_count", accessor_edit(6, count=11), r"samplers\[0\]\.output has 11 elements; LINEAR with 12 keyframes "
                                                 "needs 12"),
    ("input_type", accessor_edit(5, type="VEC2"), r"accessors\[5\] \(used as input"),
    ("output_type", accessor_edit(6, type="VEC3"), r"accessors\[6\] \(used as rotation"),
    ("output_unnormalized_int", accessor_edit(6, componentType=5122),
     r"accessors\[6\] \(used as rotation\) has integer components, which the spec allows only normalized"),
    ("sampler_index", channel_edit(sampler=3), r"animations\[0\]\.channels\[0\]\.sampler = 3 is not an index"),
    ("target_path", channel_edit(target={"node": 2, "path": "skew"}), r"channels\[0\]\.target\.path = 'skew'"),
    ("target_node", channel_edit(target={"node": 30, "path": "rotation"}), r"channels\[0\]\.target\.node = 30 is not "
                                                                           "an index into nodes"),
    ("samplers_not_list", lambda doc: doc["animations"][0].update(samplers={"x": 1}), r"animations\[0\]\.samplers "
                                                                                     "must be an array"),
    ("input_missing", lambda doc: doc["animations"][0]["samplers"][0].pop("input"), r"samplers\[0\]\.input = None is "
                                                                                    "not an index into accessors"),
]


@pytest.mark.parametrize("name,edit,match", ANIMATIONS, ids=[c[0] for c in ANIMATIONS])
def test_animations_are_checked(model, name, edit, match):
    expect_error(edited(model, edit), match)


def test_times_must_be_finite(model):
    path = str(model / "SimpleSkin.gltf")
    character = load_gltf(path)
    with pytest.raises(ValueError, match="times must be finite"):
        load_gltf_motion(path, character, 0, times=[0.0, float("nan")])


def test_a_million_keyframes_sample_in_linear_time(model):
    """No per-frame Python: 10^6 keyframes load and sample in seconds (a guard
    against quadratic or per-frame cost, with a generous bound for slow CI)."""
    import time

    n = 1_000_000
    times = np.arange(n, dtype=np.float32) / np.float32(1000)
    angles = np.linspace(0, 3, n)
    rotations = np.zeros((n, 4), np.float32)
    rotations[:, 2], rotations[:, 3] = np.sin(angles / 2), np.cos(angles / 2)
    (model / "long.bin").write_bytes(times.tobytes() + rotations.tobytes())

    def edit(doc):
        doc["buffers"].append({"uri": "long.bin", "byteLength": n * 20})
        doc["bufferViews"] += [{"buffer": 4, "byteLength": n * 4}, {"buffer": 4, "byteOffset": n * 4,
                                                                    "byteLength": n * 16}]
        doc["accessors"] += [{"bufferView": 5, "componentType": 5126, "count": n, "type": "SCALAR"},
                             {"bufferView": 6, "componentType": 5126, "count": n, "type": "VEC4"}]
        doc["animations"][0]["samplers"][0].update(input=7, output=8)

    path = edited(model, edit)
    start = time.perf_counter()
    character = load_gltf(path, dtype=torch.float64)
    motion = load_gltf_motion(path, character, 0)
    elapsed = time.perf_counter() - start
    assert motion.shape == (n, 2, 7)
    # Joint 1 turns about z by the keyed angle (its rest rotation is identity).
    picks = [0, 1, n // 3, n - 1]
    np.testing.assert_allclose(motion[picks, 1, 5].numpy(), angles[picks], atol=1e-6)
    assert elapsed < 60, f"{elapsed:.1f} s for 10^6 keyframes"


# ---------------------------------------------------- fuzzing's findings
def test_fuzz_findings_replayed(model):
    """Cases the fuzz harness found (each raised TypeError before the fix)."""
    expect_error(edited(model, accessor_edit(5, type=["SCALAR"])), r"accessors\[5\] \(used as input")
    expect_error(edited(model, accessor_edit(1, componentType=[5126])), r"accessors\[1\] \(used as POSITION")
    expect_error(edited(model, sampler_edit(interpolation=["LINEAR"])), r"interpolation = \['LINEAR'\]")
    expect_error(edited(model, channel_edit(target={"node": 2, "path": {"a": 1}})), r"target\.path = \{'a': 1\}")


def test_fuzz_harness_runs_clean_for_a_few_seconds(tmp_path):
    import subprocess

    result = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "fuzz_gltf.py"), "--seconds", "8",
                             "--seed", "7", "--out", str(tmp_path / "failures")], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 failures" in result.stdout


def test_data_that_overflows_the_dtype_is_a_gltf_error(model):
    """A translation of 1e39 is finite in float64 but not in float32: the
    file's error, not an escaping ValueError of the Character."""
    path = edited(model, lambda doc: doc["nodes"][2].update(translation=[1e39, 0, 0]))
    with pytest.raises(GltfError, match="does not make a valid character: Character: offsets has NaN or "
                                        "infinite values"):
        load_gltf(path, dtype=torch.float32)


@pytest.mark.parametrize("motion,fps,match", [
    (None, 30, r"give motion \(joint parameters\) or model_motion \(model parameters\)"),
    ([[0.0] * 14], 30, "motion must be a tensor"),
    (torch.zeros(3, 7, 2), 30, r"motion must have shape \[F, 2, 7\] or \[F, 14\] .* got \[3, 7, 2\]"),
    (torch.zeros(42), 30, r"motion must have shape \[F, 2, 7\] or \[F, 14\]"),
    (torch.zeros(0, 2, 7), 30, "the motion needs at least one frame"),
    (torch.zeros(2, 2, 7, dtype=torch.int64), 30, "motion must be floating point"),
    (torch.full((2, 2, 7), float("nan")), 30, "the motion has NaN or infinite values"),
    (torch.zeros(2, 2, 7), float("inf"), "fps must be a finite number > 0, got inf"),
    (torch.zeros(2, 2, 7), -1, "fps must be a finite number > 0, got -1"),
    (torch.zeros(2, 2, 7), "30", "fps must be a finite number > 0, got '30'"),
])
def test_save_gltf_names_a_bad_argument(model, tmp_path, motion, fps, match):
    from momentum_ops.io import save_gltf

    character = load_gltf(str(model / "SimpleSkin.gltf"))
    with pytest.raises(ValueError, match=match):
        save_gltf(str(tmp_path / "out.glb"), character, motion, fps=fps)


@pytest.mark.parametrize("kind", ["nodes", "meshes", "skins", "accessors", "animations"])
def test_a_null_top_level_array_is_refused(model, kind):
    """A top-level array given as null is refused like any other non-array (a
    reader that remembers which arrays it checked must not take null for one;
    found by the fuzzer)."""
    expect_error(edited(model, lambda doc: doc.update({kind: None})), f"{kind} must be an array")
