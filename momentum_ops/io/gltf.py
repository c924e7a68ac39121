"""glTF 2.0 characters and animations: ``load_gltf``, ``load_gltf_motion`` and
``save_gltf``.

A glTF node's rest transform (T, R, uniform S) becomes the joint's skeleton:
``offset = T``, ``pre_rotation = R``; the rest scale is not part of the
skeleton but of the rest pose's joint parameters (``s = log2 S``). An animated
node's (T, R, S) at time t becomes joint parameters
``(T - offset, euler_xyz(conj(R_rest) ⊗ R), log2 S)``, so that forward
kinematics reproduces the node's local transform exactly.
"""

from __future__ import annotations

import base64
import json
import math
import os
import urllib.parse
import warnings
from typing import List, Optional, Sequence, Union

import numpy as np
import torch

from .. import quaternion
from ..character import Character

_COMPONENT_TYPES = {
    5120: np.int8,
    5121: np.uint8,
    5122: np.int16,
    5123: np.uint16,
    5125: np.uint32,
    5126: np.float32,
}
_COMPONENT_COUNT = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT2": 4, "MAT3": 9, "MAT4": 16}
# Relative anisotropy of a node's scale that is still float noise.
SCALE_TOLERANCE = 1e-3


class GltfError(ValueError):
    """A glTF file that momentum_ops cannot represent faithfully."""


def _gltf_library():
    try:
        import pygltflib
    except ImportError as error:  # pragma: no cover - exercised only without the extra
        raise ImportError("momentum_ops.io needs pygltflib: pip install pygltflib") from error
    return pygltflib


# --------------------------------------------------------------------- reading
class _File:
    """A parsed glTF with its buffers resolved (GLB chunk, data URIs or files)."""

    def __init__(self, path: str):
        pygltflib = _gltf_library()
        self.path = os.fspath(path)
        if not os.path.exists(self.path):
            raise FileNotFoundError(self.path)
        self.gltf = pygltflib.GLTF2().load(self.path)
        if self.gltf is None:
            raise GltfError(f"{self.path}: not a glTF 2.0 file")
        self.base_dir = os.path.dirname(os.path.abspath(self.path))
        self._buffers = {}
        self.nodes = self.gltf.nodes or []
        self.parent_of = {}
        for index, node in enumerate(self.nodes):
            for child in node.children or []:
                self.parent_of[child] = index

    def buffer(self, index: int) -> bytes:
        if index not in self._buffers:
            buffer = self.gltf.buffers[index]
            if buffer.uri is None:
                data = self.gltf.binary_blob()
            elif buffer.uri.startswith("data:"):
                data = base64.b64decode(buffer.uri.split(",", 1)[1])
            else:
                with open(os.path.join(self.base_dir, urllib.parse.unquote(buffer.uri)), "rb") as f:
                    data = f.read()
            if data is None or len(data) < buffer.byteLength:
                raise GltfError(f"{self.path}: buffer {index} is shorter than its byteLength")
            self._buffers[index] = data
        return self._buffers[index]

    def accessor(self, index: int) -> np.ndarray:
        """An accessor's elements as an array [count, components] (matrices as
        [count, 4, 4] row-major); normalized integers become floats."""
        accessor = self.gltf.accessors[index]
        dtype = np.dtype(_COMPONENT_TYPES[accessor.componentType]).newbyteorder("<")
        width = _COMPONENT_COUNT[accessor.type]
        if accessor.bufferView is None:
            values = np.zeros((accessor.count, width), dtype=dtype)
        else:
            values = self._view_elements(accessor.bufferView, accessor.byteOffset or 0, accessor.count, dtype, width)
        if accessor.sparse is not None and accessor.sparse.count:
            sparse = accessor.sparse
            idx_dtype = np.dtype(_COMPONENT_TYPES[sparse.indices.componentType]).newbyteorder("<")
            rows = self._view_elements(sparse.indices.bufferView, sparse.indices.byteOffset or 0, sparse.count, idx_dtype, 1)
            new = self._view_elements(sparse.values.bufferView, sparse.values.byteOffset or 0, sparse.count, dtype, width)
            values = values.copy()
            values[rows[:, 0].astype(np.int64)] = new
        if accessor.normalized:
            values = _normalized_to_float(values)
        if accessor.type == "MAT4":
            values = values.reshape(-1, 4, 4).transpose(0, 2, 1)  # glTF stores columns
        return values

    def _view_elements(self, view_index, offset, count, dtype, width):
        view = self.gltf.bufferViews[view_index]
        data = self.buffer(view.buffer)
        stride = view.byteStride or dtype.itemsize * width
        start = (view.byteOffset or 0) + offset
        return np.ndarray((count, width), dtype=dtype, buffer=data, offset=start, strides=(stride, dtype.itemsize)).copy()

    def node_name(self, index: int) -> str:
        return self.nodes[index].name or f"node_{index}"

    def rest_trs(self, index: int):
        """The node's own (T [3], R [4] xyzw, uniform S) in float64."""
        node = self.nodes[index]
        if node.matrix is not None and any(v != e for v, e in zip(node.matrix, np.eye(4).flatten())):
            return _decompose(np.asarray(node.matrix, dtype=np.float64).reshape(4, 4).T, self.node_name(index))
        t = np.asarray(node.translation if node.translation is not None else [0, 0, 0], dtype=np.float64)
        r = np.asarray(node.rotation if node.rotation is not None else [0, 0, 0, 1], dtype=np.float64)
        s = np.asarray(node.scale if node.scale is not None else [1, 1, 1], dtype=np.float64)
        return t, r / np.linalg.norm(r), _uniform_scale(s, f"node {self.node_name(index)!r}")


def _normalized_to_float(values: np.ndarray) -> np.ndarray:
    kind = values.dtype
    if kind == np.uint8:
        return values.astype(np.float64) / 255.0
    if kind == np.uint16:
        return values.astype(np.float64) / 65535.0
    if kind == np.int8:
        return np.maximum(values.astype(np.float64) / 127.0, -1.0)
    if kind == np.int16:
        return np.maximum(values.astype(np.float64) / 32767.0, -1.0)
    return values.astype(np.float64)


def _uniform_scale(scale: np.ndarray, what: str) -> float:
    scale = np.asarray(scale, dtype=np.float64)
    if (scale <= 0).any():
        raise GltfError(f"{what} has a zero or negative scale {scale.tolist()}, which a joint cannot represent")
    if (scale.max() - scale.min()) > SCALE_TOLERANCE * scale.max():
        raise GltfError(
            f"{what} has a non-uniform scale {scale.tolist()}; momentum_ops joints carry one uniform scale "
            f"(anisotropy up to {SCALE_TOLERANCE:g} is accepted as float noise)"
        )
    return float(np.exp(np.log(scale).mean()))


def _decompose(matrix: np.ndarray, name: str):
    """A node matrix into (T, R xyzw, uniform S); shear and reflection are refused."""
    linear = matrix[:3, :3]
    scales = np.linalg.norm(linear, axis=0)
    s = _uniform_scale(scales, f"node {name!r}")
    rotation = linear / s
    if np.abs(rotation.T @ rotation - np.eye(3)).max() > SCALE_TOLERANCE or np.linalg.det(rotation) < 0:
        raise GltfError(f"node {name!r} has a matrix with shear or reflection, which a joint cannot represent")
    q = quaternion.from_matrix(torch.from_numpy(rotation)).numpy()
    return matrix[:3, 3].copy(), q / np.linalg.norm(q), s


# ------------------------------------------------------------------- skeleton
def _joint_nodes(file: _File) -> List[int]:
    """Every joint of every skin plus their ancestors, parents first: a
    depth-first walk from the root nodes (in node order), children in order."""
    skins = file.gltf.skins or []
    if not skins:
        raise GltfError(f"{file.path}: no skins; momentum_ops.io.load_gltf reads skinned characters")
    needed = set()
    for skin in skins:
        for joint in skin.joints:
            node = joint
            while node is not None and node not in needed:
                needed.add(node)
                node = file.parent_of.get(node)
    order = []
    stack = [n for n in sorted(needed, reverse=True) if file.parent_of.get(n) not in needed]
    while stack:
        node = stack.pop()
        order.append(node)
        children = [c for c in (file.nodes[node].children or []) if c in needed]
        stack.extend(reversed(children))
    return order


def _skeleton(file: _File):
    nodes = _joint_nodes(file)
    index_of = {node: i for i, node in enumerate(nodes)}
    parents = [index_of.get(file.parent_of.get(node), -1) for node in nodes]
    trs = [file.rest_trs(node) for node in nodes]
    return nodes, index_of, parents, trs


def _local_matrices(trs) -> np.ndarray:
    out = np.zeros((len(trs), 4, 4))
    for i, (t, r, s) in enumerate(trs):
        out[i, :3, :3] = s * quaternion.to_matrix(torch.from_numpy(np.asarray(r))).numpy()
        out[i, :3, 3] = t
        out[i, 3, 3] = 1
    return out


def _inverse_bind_pose(file: _File, nodes, index_of, parents, trs) -> np.ndarray:
    """From the skins; joints no skin binds (ancestors) get their rest pose's."""
    local = _local_matrices(trs)
    world = np.zeros_like(local)
    for i, p in enumerate(parents):
        world[i] = local[i] if p < 0 else world[p] @ local[i]
    ibp = np.linalg.inv(world)
    bound = {}
    for skin_index, skin in enumerate(file.gltf.skins):
        if skin.inverseBindMatrices is None:
            matrices = np.repeat(np.eye(4)[None], len(skin.joints), axis=0)
        else:
            matrices = file.accessor(skin.inverseBindMatrices).astype(np.float64)
        for joint, matrix in zip(skin.joints, matrices):
            i = index_of[joint]
            if i in bound:
                other, previous = bound[i]
                scale = max(np.abs(previous).max(), 1.0)
                if np.abs(previous - matrix).max() > 1e-5 * scale:
                    raise GltfError(
                        f"{file.path}: joint {file.node_name(joint)!r} is bound by skins {other} and "
                        f"{skin_index} with different inverse bind matrices; one joint has one bind pose"
                    )
                continue
            bound[i] = (skin_index, matrix)
            ibp[i] = matrix
    return ibp


# ----------------------------------------------------------------------- mesh
def _triangles(mode: int, indices: np.ndarray) -> np.ndarray:
    if mode == 4:
        return indices[: len(indices) // 3 * 3].reshape(-1, 3)
    if mode == 5:  # strip: alternate winding
        tris = [(indices[i], indices[i + 1], indices[i + 2]) if i % 2 == 0 else (indices[i + 1], indices[i], indices[i + 2])
                for i in range(len(indices) - 2)]
        return np.asarray(tris, dtype=np.int64).reshape(-1, 3)
    if mode == 6:  # fan
        tris = [(indices[0], indices[i], indices[i + 1]) for i in range(1, len(indices) - 1)]
        return np.asarray(tris, dtype=np.int64).reshape(-1, 3)
    return np.zeros((0, 3), dtype=np.int64)  # points and lines have no faces


def _mesh(file: _File, index_of):
    positions, indices, weights, faces = [], [], [], []
    warned = False
    count = 0
    for node_index, node in enumerate(file.nodes):
        if node.mesh is None or node.skin is None:
            continue
        skin_joints = file.gltf.skins[node.skin].joints
        to_character = np.asarray([index_of[j] for j in skin_joints], dtype=np.int64)
        for primitive in file.gltf.meshes[node.mesh].primitives:
            if primitive.targets and not warned:
                warnings.warn(f"{file.path}: morph targets are ignored", stacklevel=3)
                warned = True
            attributes = primitive.attributes
            if attributes.POSITION is None:
                continue
            points = file.accessor(attributes.POSITION).astype(np.float64)
            sets = []
            n = 0
            while getattr(attributes, f"JOINTS_{n}", None) is not None:
                weight_accessor = getattr(attributes, f"WEIGHTS_{n}", None)
                if weight_accessor is None:
                    raise GltfError(f"{file.path}: JOINTS_{n} without WEIGHTS_{n} in mesh {node.mesh}")
                sets.append((file.accessor(getattr(attributes, f"JOINTS_{n}")), file.accessor(weight_accessor)))
                n += 1
            if not sets:
                raise GltfError(f"{file.path}: node {file.node_name(node_index)!r} has a skin but its mesh has no JOINTS_0")
            joints = np.concatenate([j for j, _ in sets], axis=1).astype(np.int64)
            joint_weights = np.concatenate([w for _, w in sets], axis=1).astype(np.float64)
            if (joints >= len(to_character)).any():
                raise GltfError(f"{file.path}: JOINTS_n index beyond skin {node.skin}'s {len(to_character)} joints")
            positions.append(points)
            indices.append(to_character[joints])
            weights.append(joint_weights)
            if primitive.indices is not None:
                tri = file.accessor(primitive.indices)[:, 0].astype(np.int64)
            else:
                tri = np.arange(len(points), dtype=np.int64)
            faces.append(_triangles(primitive.mode if primitive.mode is not None else 4, tri) + count)
            count += len(points)
    if not positions:
        raise GltfError(f"{file.path}: no skinned mesh node")
    k = max(i.shape[1] for i in indices)
    pad = lambda a, fill: np.pad(a, ((0, 0), (0, k - a.shape[1])), constant_values=fill)  # noqa: E731
    return (
        np.concatenate(positions),
        np.concatenate([f for f in faces]) if faces else np.zeros((0, 3), np.int64),
        np.concatenate([pad(i, 0) for i in indices]),
        np.concatenate([pad(w, 0.0) for w in weights]),
    )


def load_gltf(path: Union[str, os.PathLike], dtype: torch.dtype = torch.float32) -> Character:
    """Reads a skinned character from a ``.glb`` or ``.gltf`` file.

    Vertices: every skinned mesh node in node order, each primitive in order;
    the mesh node's own transform is ignored (as the glTF spec says). Joints:
    every joint of every skin plus the non-joint ancestors that place them,
    parents first; ``joint_names`` are the node names. Every joint parameter
    is a model parameter (``P = 7J``, identity transform).

    Raises GltfError (a ValueError) for what the model cannot represent:
    non-uniform scale, shear or reflection, or a joint bound by two skins with
    different inverse bind matrices. Morph targets are ignored with a warning.
    """
    file = _File(path)
    nodes, index_of, parents, trs = _skeleton(file)
    ibp = _inverse_bind_pose(file, nodes, index_of, parents, trs)
    vertices, faces, skin_indices, skin_weights = _mesh(file, index_of)
    return Character(
        joint_names=[file.node_name(n) for n in nodes],
        parents=torch.tensor(parents, dtype=torch.int64),
        offsets=torch.tensor(np.stack([t for t, _, _ in trs]), dtype=dtype),
        pre_rotations=torch.tensor(np.stack([r for _, r, _ in trs]), dtype=dtype),
        inverse_bind_pose=torch.tensor(ibp, dtype=dtype),
        rest_vertices=torch.tensor(vertices, dtype=dtype),
        faces=torch.tensor(faces, dtype=torch.int64),
        skin_indices=torch.tensor(skin_indices, dtype=torch.int64),
        skin_weights=torch.tensor(skin_weights, dtype=dtype),
    )


# ------------------------------------------------------------------ animation
def gltf_animations(path: Union[str, os.PathLike]) -> List[str]:
    """The names of a file's animations (``animation_<i>`` for unnamed ones)."""
    file = _File(path)
    return [a.name or f"animation_{i}" for i, a in enumerate(file.gltf.animations or [])]


def _find_animation(file: _File, animation):
    animations = file.gltf.animations or []
    names = [a.name or f"animation_{i}" for i, a in enumerate(animations)]
    if isinstance(animation, str):
        if animation not in names:
            raise KeyError(f"{file.path}: no animation {animation!r}; it has {names}")
        return animations[names.index(animation)]
    if not 0 <= animation < len(animations):
        raise IndexError(f"{file.path}: animation {animation} out of range; it has {len(animations)}: {names}")
    return animations[animation]


def _sample(times: np.ndarray, keys: np.ndarray, values: np.ndarray, interpolation: str, rotation: bool) -> np.ndarray:
    """Samples one channel at `times` as the glTF spec says; holds the first
    and last values outside the keyframes."""
    n = len(keys)
    if interpolation == "CUBICSPLINE":
        in_tangents, points, out_tangents = values[0::3], values[1::3], values[2::3]
    else:
        points = values
    out = np.zeros((len(times), points.shape[1]))
    for f, t in enumerate(times):
        if n == 1 or t <= keys[0]:
            out[f] = points[0]
            continue
        if t >= keys[-1]:
            out[f] = points[-1]
            continue
        k = int(np.searchsorted(keys, t, side="right") - 1)
        dt = keys[k + 1] - keys[k]
        u = (t - keys[k]) / dt
        if interpolation == "STEP":
            out[f] = points[k]
        elif interpolation == "CUBICSPLINE":
            u2, u3 = u * u, u * u * u
            out[f] = ((2 * u3 - 3 * u2 + 1) * points[k] + dt * (u3 - 2 * u2 + u) * out_tangents[k]
                      + (-2 * u3 + 3 * u2) * points[k + 1] + dt * (u3 - u2) * in_tangents[k + 1])
        elif rotation:
            out[f] = quaternion.slerp(
                torch.from_numpy(points[k]), torch.from_numpy(points[k + 1]), torch.tensor(u, dtype=torch.float64)
            ).numpy()
        else:
            out[f] = (1 - u) * points[k] + u * points[k + 1]
    if rotation:
        out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def load_gltf_motion(
    path: Union[str, os.PathLike],
    character: Character,
    animation: Optional[Union[int, str]] = 0,
    times: Optional[Sequence[float]] = None,
) -> torch.Tensor:
    """Samples an animation of the file as the character's joint parameters.

    Args:
        path: the glTF file the character was loaded from.
        character: from ``load_gltf(path)`` (its joints must match the file's).
        animation: index or name; ``None`` gives the file's rest pose (the
            nodes' own transforms) as one frame, rest scales included.
        times: seconds; default: the animation's keyframe times (all channels).

    Returns:
        Joint parameters ``[F, J, 7]`` in the character's dtype.
    """
    file = _File(path)
    nodes, index_of, parents, trs = _skeleton(file)
    names = [file.node_name(n) for n in nodes]
    if names != list(character.joint_names):
        raise ValueError(f"{file.path}: its joints do not match the character's ({len(names)} vs {character.num_joints})")
    if animation is None:
        frames_t = np.asarray([t for t, _, _ in trs])[None]
        frames_r = np.asarray([r for _, r, _ in trs])[None]
        frames_s = np.asarray([[s] * 3 for _, _, s in trs])[None]
    else:
        anim = _find_animation(file, animation)
        channels = []
        for channel in anim.channels:
            sampler = anim.samplers[channel.sampler]
            keys = file.accessor(sampler.input)[:, 0].astype(np.float64)
            channels.append((channel.target, keys, file.accessor(sampler.output).astype(np.float64),
                             sampler.interpolation or "LINEAR"))
        if times is None:
            times = np.unique(np.concatenate([keys for _, keys, _, _ in channels])) if channels else np.zeros(1)
        times = np.asarray(times, dtype=np.float64).reshape(-1)
        F = len(times)
        frames_t = np.repeat(np.asarray([t for t, _, _ in trs])[None], F, axis=0)
        frames_r = np.repeat(np.asarray([r for _, r, _ in trs])[None], F, axis=0)
        frames_s = np.repeat(np.asarray([[s] * 3 for _, _, s in trs])[None], F, axis=0)
        for target, keys, values, interpolation in channels:
            if target.node not in index_of or target.path not in ("translation", "rotation", "scale"):
                continue  # the mesh node, cameras, morph weights: not part of the character
            j = index_of[target.node]
            sampled = _sample(times, keys, values, interpolation, target.path == "rotation")
            {"translation": frames_t, "rotation": frames_r, "scale": frames_s}[target.path][:, j] = sampled
    F, J = frames_t.shape[:2]
    scales = np.zeros((F, J))
    for f in range(F):
        for j in range(J):
            scales[f, j] = _uniform_scale(frames_s[f, j], f"node {names[j]!r} at frame {f}")
    offsets = character.offsets.detach().cpu().double()
    pre = character.pre_rotations.detach().cpu().double()
    rotation = torch.from_numpy(frames_r)
    euler = quaternion.to_euler_xyz(quaternion.multiply(quaternion.conjugate(pre).expand_as(rotation), rotation))
    jp = torch.cat(
        [torch.from_numpy(frames_t) - offsets, euler, torch.from_numpy(np.log2(scales))[..., None]], dim=-1
    )
    return jp.to(character.offsets.dtype)


# -------------------------------------------------------------------- writing
class _Writer:
    """Accumulates accessors in one binary buffer, 4-byte aligned."""

    def __init__(self, pygltflib):
        self.lib = pygltflib
        self.blob = bytearray()
        self.views, self.accessors = [], []

    def add(self, array: np.ndarray, kind: str, component: int, target=None, min_max=False) -> int:
        array = np.ascontiguousarray(array)
        while len(self.blob) % 4:
            self.blob.append(0)
        self.views.append(self.lib.BufferView(buffer=0, byteOffset=len(self.blob), byteLength=array.nbytes, target=target))
        self.blob.extend(array.tobytes())
        flat = array.reshape(array.shape[0], -1)
        accessor = self.lib.Accessor(bufferView=len(self.views) - 1, componentType=component,
                                     count=int(array.shape[0]), type=kind)
        if min_max:
            accessor.min = flat.min(axis=0).tolist()
            accessor.max = flat.max(axis=0).tolist()
        self.accessors.append(accessor)
        return len(self.accessors) - 1


def save_gltf(path: Union[str, os.PathLike], character: Character, motion: torch.Tensor, fps: float = 30.0) -> None:
    """Writes the character and a motion (joint parameters ``[F, J, 7]`` or
    ``[F, J*7]``) as a glTF any viewer can play: one node per joint (rest
    translation = offset, rest rotation = pre-rotation), one skinned mesh, one
    LINEAR animation at ``fps``. ``.glb`` writes one binary file; any other
    extension writes ``.gltf`` JSON with the buffer embedded as a data URI.
    """
    pygltflib = _gltf_library()
    path = os.fspath(path)
    J = character.num_joints
    motion = torch.as_tensor(motion).detach().cpu().double().reshape(-1, J, 7)
    F = motion.shape[0]
    if F < 1:
        raise ValueError("save_gltf: the motion needs at least one frame")
    if not fps > 0:
        raise ValueError(f"save_gltf: fps must be positive, got {fps}")
    if not bool(torch.isfinite(motion).all()):
        raise ValueError("save_gltf: the motion has NaN or infinite values")
    offsets = character.offsets.detach().cpu().double()
    pre = character.pre_rotations.detach().cpu().double()
    parents = character.parents.tolist()
    writer = _Writer(pygltflib)

    vertices = character.rest_vertices.detach().cpu().float().numpy()
    indices = character.skin_indices.cpu().numpy()
    weights = character.skin_weights.detach().cpu().float().numpy()
    k = indices.shape[1]
    sets = max(1, math.ceil(k / 4))
    indices = np.pad(indices, ((0, 0), (0, 4 * sets - k)))
    weights = np.pad(weights, ((0, 0), (0, 4 * sets - k)))
    joint_type, joint_component = (np.uint16, 5123) if J < 65536 else (np.uint32, 5125)
    attributes = pygltflib.Attributes(POSITION=writer.add(vertices, "VEC3", 5126, 34962, min_max=True))
    for n in range(sets):
        setattr(attributes, f"JOINTS_{n}", writer.add(indices[:, 4 * n: 4 * n + 4].astype(joint_type), "VEC4", joint_component, 34962))
        setattr(attributes, f"WEIGHTS_{n}", writer.add(weights[:, 4 * n: 4 * n + 4], "VEC4", 5126, 34962))
    primitive = pygltflib.Primitive(attributes=attributes, mode=4)
    if character.faces.shape[0]:
        primitive.indices = writer.add(character.faces.cpu().numpy().astype(np.uint32).reshape(-1, 1), "SCALAR", 5125, 34963)
    ibp = character.inverse_bind_pose.detach().cpu().float().numpy().transpose(0, 2, 1)  # column-major
    skin = pygltflib.Skin(joints=list(range(J)), inverseBindMatrices=writer.add(ibp.reshape(J, 16), "MAT4", 5126))

    nodes = []
    for j, name in enumerate(character.joint_names):
        children = [c for c in range(J) if parents[c] == j]
        nodes.append(pygltflib.Node(name=name, translation=offsets[j].tolist(), rotation=pre[j].tolist(),
                                    children=children or None))
    nodes.append(pygltflib.Node(name="mesh", mesh=0, skin=0))

    times = (np.arange(F, dtype=np.float32) / np.float32(fps)).reshape(-1, 1)
    time_accessor = writer.add(times, "SCALAR", 5126, min_max=True)
    translation = offsets[None] + motion[..., :3]
    rotation = quaternion.multiply(pre.expand(F, J, 4), quaternion.from_euler_xyz(motion[..., 3:6]))
    # Keep consecutive keys on one hemisphere so viewers' slerp takes the short way.
    for f in range(1, F):
        flip = (rotation[f] * rotation[f - 1]).sum(-1) < 0
        rotation[f, flip] = -rotation[f, flip]
    scale = torch.exp2(motion[..., 6:7]).expand(F, J, 3)
    samplers, channels = [], []
    for j in range(J):
        for target, values, kind in (("translation", translation, "VEC3"), ("rotation", rotation, "VEC4"),
                                     ("scale", scale, "VEC3")):
            output = writer.add(values[:, j].float().numpy(), kind, 5126)
            samplers.append(pygltflib.AnimationSampler(input=time_accessor, output=output, interpolation="LINEAR"))
            channels.append(pygltflib.AnimationChannel(sampler=len(samplers) - 1,
                                                       target=pygltflib.AnimationChannelTarget(node=j, path=target)))

    gltf = pygltflib.GLTF2(
        asset=pygltflib.Asset(generator="momentum_ops", version="2.0"),
        scene=0,
        scenes=[pygltflib.Scene(nodes=[j for j in range(J) if parents[j] < 0] + [J])],
        nodes=nodes,
        meshes=[pygltflib.Mesh(primitives=[primitive])],
        skins=[skin],
        animations=[pygltflib.Animation(name="motion", samplers=samplers, channels=channels)],
        accessors=writer.accessors,
        bufferViews=writer.views,
        buffers=[pygltflib.Buffer(byteLength=len(writer.blob))],
    )
    if path.lower().endswith(".glb"):
        gltf.set_binary_blob(bytes(writer.blob))
        gltf.save_binary(path)
    else:
        gltf.buffers[0].uri = "data:application/octet-stream;base64," + base64.b64encode(bytes(writer.blob)).decode()
        with open(path, "w") as f:
            json.dump(json.loads(gltf.to_json()), f)
