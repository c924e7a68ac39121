"""An independent glTF 2.0 skinning reference, written straight from the spec
with json, struct and numpy only (no pygltflib, no momentum_ops):

    node matrix = T * R * S (or the node's matrix)
    global = parent's global * node matrix
    joint matrix = global(joint) * inverse bind matrix
    vertex = sum_k weight_k * joint matrix(joint_k) * position
    (the skinned mesh node's own transform is ignored)

Animations are sampled per the spec's interpolation modes (LINEAR with slerp
for rotations, STEP, CUBICSPLINE)."""

from __future__ import annotations

import base64
import json
import math
import os
import struct
import urllib.parse

import numpy as np

COMPONENTS = {5120: "b", 5121: "B", 5122: "h", 5123: "H", 5125: "I", 5126: "f"}
WIDTH = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT4": 16}


class Gltf:
    def __init__(self, path):
        self.path = path
        raw = open(path, "rb").read()
        self.glb_bin = None
        if raw[:4] == b"glTF":
            _, _, length = struct.unpack_from("<III", raw, 0)
            offset = 12
            while offset < length:
                chunk_length, chunk_type = struct.unpack_from("<II", raw, offset)
                chunk = raw[offset + 8: offset + 8 + chunk_length]
                if chunk_type == 0x4E4F534A:
                    self.json = json.loads(chunk.decode("utf-8"))
                elif chunk_type == 0x004E4942:
                    self.glb_bin = chunk
                offset += 8 + chunk_length
        else:
            self.json = json.loads(raw.decode("utf-8"))
        self.buffers = [self._load_buffer(b) for b in self.json.get("buffers", [])]
        self.nodes = self.json.get("nodes", [])
        self.parent = {}
        for i, node in enumerate(self.nodes):
            for c in node.get("children", []):
                self.parent[c] = i

    def _load_buffer(self, buffer):
        uri = buffer.get("uri")
        if uri is None:
            return self.glb_bin
        if uri.startswith("data:"):
            return base64.b64decode(uri.split(",", 1)[1])
        return open(os.path.join(os.path.dirname(self.path), urllib.parse.unquote(uri)), "rb").read()

    def accessor(self, index):
        if not hasattr(self, "_cache"):
            self._cache = {}
        if index not in self._cache:
            self._cache[index] = self._read_accessor(index)
        return self._cache[index]

    def _read_accessor(self, index):
        a = self.json["accessors"][index]
        fmt = COMPONENTS[a["componentType"]]
        size = struct.calcsize(fmt)
        width = WIDTH[a["type"]]
        out = np.zeros((a["count"], width))
        if "bufferView" in a:
            view = self.json["bufferViews"][a["bufferView"]]
            data = self.buffers[view["buffer"]]
            stride = view.get("byteStride", size * width)
            base = view.get("byteOffset", 0) + a.get("byteOffset", 0)
            for i in range(a["count"]):
                out[i] = struct.unpack_from("<" + fmt * width, data, base + i * stride)
        if a.get("normalized"):
            out = {"B": out / 255.0, "H": out / 65535.0, "b": np.maximum(out / 127.0, -1),
                   "h": np.maximum(out / 32767.0, -1)}.get(fmt, out)
        if a["type"] == "MAT4":
            out = out.reshape(-1, 4, 4).transpose(0, 2, 1)
        return out


def quat_matrix(q):
    x, y, z, w = q / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def trs_matrix(t, r, s):
    m = np.eye(4)
    m[:3, :3] = quat_matrix(np.asarray(r, float)) @ np.diag(s)
    m[:3, 3] = t
    return m


def slerp(a, b, u):
    d = float(np.dot(a, b))
    if d < 0:
        b, d = -b, -d
    if d > 0.9995:
        r = a + u * (b - a)
        return r / np.linalg.norm(r)
    theta = math.acos(min(d, 1.0))
    return (math.sin((1 - u) * theta) * a + math.sin(u * theta) * b) / math.sin(theta)


def sample(g, sampler, t, path, width=None):
    """One channel at time t; `width` morph weights per keyframe for weights."""
    keys = g.accessor(sampler["input"])[:, 0]
    values = g.accessor(sampler["output"])
    if width is not None:
        values = values.reshape(-1, width)
    mode = sampler.get("interpolation", "LINEAR")
    if mode == "CUBICSPLINE":
        a, v, b = values[0::3], values[1::3], values[2::3]
    else:
        v = values
    if t <= keys[0]:
        r = v[0]
    elif t >= keys[-1]:
        r = v[-1]
    else:
        k = max(i for i in range(len(keys)) if keys[i] <= t)
        td = keys[k + 1] - keys[k]
        u = (t - keys[k]) / td
        if mode == "STEP":
            r = v[k]
        elif mode == "CUBICSPLINE":
            r = ((2 * u**3 - 3 * u**2 + 1) * v[k] + td * (u**3 - 2 * u**2 + u) * b[k]
                 + (-2 * u**3 + 3 * u**2) * v[k + 1] + td * (u**3 - u**2) * a[k + 1])
        elif path == "rotation":
            r = slerp(v[k], v[k + 1], u)
        else:
            r = (1 - u) * v[k] + u * v[k + 1]
    if path == "rotation":
        r = r / np.linalg.norm(r)
    return r


def node_matrices(g, animation=None, t=0.0):
    """Local matrix of every node at time t (rest when animation is None)."""
    trs = []
    for node in g.nodes:
        if "matrix" in node:
            trs.append(("matrix", np.asarray(node["matrix"], float).reshape(4, 4).T))
        else:
            trs.append((np.asarray(node.get("translation", [0, 0, 0]), float),
                        np.asarray(node.get("rotation", [0, 0, 0, 1]), float),
                        np.asarray(node.get("scale", [1, 1, 1]), float)))
    if animation is not None:
        anim = g.json["animations"][animation]
        trs = [list(x) if not isinstance(x[0], str) else x for x in trs]
        for channel in anim["channels"]:
            target = channel["target"]
            path = target["path"]
            if path not in ("translation", "rotation", "scale") or "node" not in target:
                continue
            value = sample(g, anim["samplers"][channel["sampler"]], t, path)
            trs[target["node"]][("translation", "rotation", "scale").index(path)] = value
    return [x[1] if isinstance(x[0], str) else trs_matrix(*x) for x in trs]


def world_matrices(g, local):
    world = {}

    def get(i):
        if i not in world:
            world[i] = local[i] if i not in g.parent else get(g.parent[i]) @ local[i]
        return world[i]

    return [get(i) for i in range(len(g.nodes))]


def skinned_vertices(g, animation=None, t=0.0):
    """World-space vertices of every skinned mesh node (node order, primitive order)."""
    world = world_matrices(g, node_matrices(g, animation, t))
    out = []
    for node in g.nodes:
        if "mesh" not in node or "skin" not in node:
            continue
        skin = g.json["skins"][node["skin"]]
        ibm = (g.accessor(skin["inverseBindMatrices"]) if "inverseBindMatrices" in skin
               else np.repeat(np.eye(4)[None], len(skin["joints"]), 0))
        joint_matrices = [world[j] @ ibm[i] for i, j in enumerate(skin["joints"])]
        for prim in g.json["meshes"][node["mesh"]]["primitives"]:
            attrs = prim["attributes"]
            pos = g.accessor(attrs["POSITION"])
            joints, weights = [], []
            n = 0
            while f"JOINTS_{n}" in attrs:
                joints.append(g.accessor(attrs[f"JOINTS_{n}"]))
                weights.append(g.accessor(attrs[f"WEIGHTS_{n}"]))
                n += 1
            joints, weights = np.concatenate(joints, 1).astype(int), np.concatenate(weights, 1)
            skin_matrix = np.einsum("vk,vkij->vij", weights, np.asarray(joint_matrices)[joints])
            homogeneous = np.concatenate([pos, np.ones((len(pos), 1))], axis=1)
            out.append(np.einsum("vij,vj->vi", skin_matrix, homogeneous)[:, :3])
    return np.concatenate(out)


def morph_weights(g, node_index, animation=None, t=0.0):
    """A mesh node's morph weights at time t: its weights channel if the
    animation has one, else node.weights, else mesh.weights, else zeros."""
    node = g.nodes[node_index]
    mesh = g.json["meshes"][node["mesh"]]
    count = len(mesh["primitives"][0].get("targets", []))
    weights = np.asarray(node.get("weights", mesh.get("weights", [0.0] * count)), float)
    if animation is not None:
        anim = g.json["animations"][animation]
        for channel in anim["channels"]:
            if channel["target"].get("node") == node_index and channel["target"]["path"] == "weights":
                weights = sample(g, anim["samplers"][channel["sampler"]], t, "weights", width=count)
    return weights


def posed_vertices(g, animation=None, t=0.0):
    """World-space vertices of every mesh node at time t (node order,
    primitive order): morphed positions (POSITION + sum_i w_i * target_i),
    then skinned, or moved by the node's world matrix when there is no skin."""
    world = world_matrices(g, node_matrices(g, animation, t))
    out = []
    for n, node in enumerate(g.nodes):
        if "mesh" not in node:
            continue
        weights = morph_weights(g, n, animation, t)
        if "skin" in node:
            skin = g.json["skins"][node["skin"]]
            ibm = (g.accessor(skin["inverseBindMatrices"]) if "inverseBindMatrices" in skin
                   else np.repeat(np.eye(4)[None], len(skin["joints"]), 0))
            joint_matrices = np.asarray([world[j] @ ibm[i] for i, j in enumerate(skin["joints"])])
        for prim in g.json["meshes"][node["mesh"]]["primitives"]:
            attrs = prim["attributes"]
            pos = g.accessor(attrs["POSITION"]).copy()
            for i, target in enumerate(prim.get("targets", [])):
                if "POSITION" in target:
                    pos += weights[i] * g.accessor(target["POSITION"])
            homogeneous = np.concatenate([pos, np.ones((len(pos), 1))], axis=1)
            if "skin" in node:
                joints, jweights = [], []
                k = 0
                while f"JOINTS_{k}" in attrs:
                    joints.append(g.accessor(attrs[f"JOINTS_{k}"]))
                    jweights.append(g.accessor(attrs[f"WEIGHTS_{k}"]))
                    k += 1
                joints, jweights = np.concatenate(joints, 1).astype(int), np.concatenate(jweights, 1)
                matrices = np.einsum("vk,vkij->vij", jweights, joint_matrices[joints])
                out.append(np.einsum("vij,vj->vi", matrices, homogeneous)[:, :3])
            else:
                out.append((homogeneous @ world[n].T)[:, :3])
    return np.concatenate(out)


def keyframe_times(g, animation):
    anim = g.json["animations"][animation]
    return np.unique(np.concatenate([g.accessor(s["input"])[:, 0] for s in anim["samplers"]]))
