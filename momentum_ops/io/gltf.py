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
import warnings
from typing import List, Optional, Sequence, Union

import numpy as np
import torch

from .. import _checks, quaternion
from ..character import Character
from . import _momentum_extension as momentum_extension
from ._gltf_document import ANIMATION_PATHS, INTERPOLATIONS, GltfDocument, GltfError, sample_channel

# Relative anisotropy of a node's scale that is still float noise.
SCALE_TOLERANCE = 1e-3
# How far an inverse bind matrix's last row may be from (0, 0, 0, 1).
AFFINE_TOLERANCE = 1e-5


def _gltf_library():
    try:
        import pygltflib
    except ImportError as error:  # pragma: no cover - exercised only without the extra
        raise ImportError("momentum_ops.io.save_gltf needs pygltflib: pip install pygltflib") from error
    return pygltflib


def _uniform_scale(scale: np.ndarray, what: str, file: Optional[GltfDocument] = None) -> np.ndarray:
    """The uniform scale of [..., 3] scales; refuses zero, negative and
    non-uniform ones (beyond float noise)."""
    scale = np.asarray(scale, dtype=np.float64)
    fail = file.error if file is not None else GltfError
    bad = ~(scale > 0).all(axis=-1)
    if bad.any():
        first = np.argwhere(bad)[0]
        raise fail(f"{what}{_at(first)} has a zero, negative or NaN scale {scale[tuple(first)].tolist()}, which a "
                   "joint cannot represent")
    spread = scale.max(axis=-1) - scale.min(axis=-1)
    anisotropic = spread > SCALE_TOLERANCE * scale.max(axis=-1)
    if anisotropic.any():
        first = np.argwhere(anisotropic)[0]
        raise fail(
            f"{what}{_at(first)} has a non-uniform scale {scale[tuple(first)].tolist()}; momentum_ops joints carry "
            f"one uniform scale (anisotropy up to {SCALE_TOLERANCE:g} is accepted as float noise)"
        )
    return np.exp(np.log(scale).mean(axis=-1))


def _at(index) -> str:
    return "" if len(index) == 0 else " at " + ", ".join(f"[{i}]" for i in index)


def _decompose(matrix: np.ndarray, what: str, file: GltfDocument):
    """A node matrix into (T, R xyzw, uniform S); shear and reflection are refused."""
    linear = matrix[:3, :3]
    scales = np.linalg.norm(linear, axis=0)
    s = float(_uniform_scale(scales, what, file))
    rotation = linear / s
    if np.abs(rotation.T @ rotation - np.eye(3)).max() > SCALE_TOLERANCE or np.linalg.det(rotation) < 0:
        raise file.error(f"{what} has a matrix with shear or reflection, which a joint cannot represent")
    q = quaternion.from_matrix(torch.from_numpy(rotation)).numpy()
    return matrix[:3, 3].copy(), q / np.linalg.norm(q), s


def _rest_trs(file: GltfDocument, n: int):
    """The node's own (T [3], R [4] xyzw, uniform S) in float64."""
    t, r, s, matrix = file.node_trs(n)
    if matrix is not None:
        return _decompose(matrix, f"nodes[{n}] ({file.node_name(n)!r})", file)
    return t, r, float(_uniform_scale(s, f"nodes[{n}] ({file.node_name(n)!r})", file))


# ------------------------------------------------------------------- skeleton
def _mesh_nodes(file: GltfDocument) -> List[int]:
    """Every node with a mesh, in node order: the vertex order."""
    return [n for n, node in enumerate(file.items("nodes")) if node.get("mesh") is not None]


def _joint_nodes(file: GltfDocument) -> List[int]:
    """Every joint of every skin, every node that carries a mesh without a
    skin (it moves rigidly with its node), and their ancestors, parents first:
    a depth-first walk from the root nodes (in node order), children in
    order. The hierarchy is a checked forest, so every walk ends."""
    skins = file.items("skins")
    rigid = [n for n in _mesh_nodes(file) if file.items("nodes")[n].get("skin") is None]
    if not skins and not rigid:
        raise file.error("no skin and no mesh; momentum_ops.io.load_gltf reads skinned or rigid meshes")
    needed = set()
    starts = list(rigid)
    for s, skin in enumerate(skins):
        joints = file.index_list(skin, "joints", "nodes", f"skins[{s}]")
        if not joints:
            raise file.error(f"skins[{s}].joints is empty")
        if "skeleton" in skin:
            file.index(skin["skeleton"], "nodes", f"skins[{s}].skeleton")
        starts.extend(joints)
    for joint in starts:
        node = joint
        while node is not None and node not in needed:
            needed.add(node)
            node = file.parent_of.get(node)
    order = []
    stack = [n for n in sorted(needed, reverse=True) if file.parent_of.get(n) not in needed]
    while stack:
        node = stack.pop()
        order.append(node)
        stack.extend(reversed([c for c in file.children[node] if c in needed]))
    return order


def _skeleton(file: GltfDocument):
    nodes = _joint_nodes(file)
    index_of = {node: i for i, node in enumerate(nodes)}
    parents = [index_of.get(file.parent_of.get(node), -1) for node in nodes]
    trs = [_rest_trs(file, node) for node in nodes]
    return nodes, index_of, parents, trs


def _local_matrices(trs) -> np.ndarray:
    t = np.stack([t for t, _, _ in trs])
    r = quaternion.to_matrix(torch.from_numpy(np.stack([r for _, r, _ in trs]))).numpy()
    s = np.asarray([s for _, _, s in trs])
    out = np.zeros((len(trs), 4, 4))
    out[:, :3, :3] = s[:, None, None] * r
    out[:, :3, 3] = t
    out[:, 3, 3] = 1
    return out


def _inverse_bind_pose(file: GltfDocument, nodes, index_of, parents, trs) -> np.ndarray:
    """From the skins; joints no skin binds (ancestors, rigid mesh nodes) get
    their rest pose's."""
    local = _local_matrices(trs)
    world = np.zeros_like(local)
    for i, p in enumerate(parents):
        world[i] = local[i] if p < 0 else world[p] @ local[i]
    ibp = np.linalg.inv(world)
    bound = {}
    for skin_index, skin in enumerate(file.items("skins")):
        joints = skin["joints"]
        where = f"skins[{skin_index}].inverseBindMatrices"
        if skin.get("inverseBindMatrices") is None:
            matrices = np.repeat(np.eye(4)[None], len(joints), axis=0)
        else:
            matrices = file.accessor(skin["inverseBindMatrices"], "inverseBindMatrices", where)
            if len(matrices) < len(joints):
                raise file.error(f"{where} has {len(matrices)} matrices for {len(joints)} joints")
            matrices = file.finite(matrices[: len(joints)], where)
            scale = np.maximum(np.abs(matrices).max(axis=(1, 2)), 1.0)
            off = np.abs(matrices[:, 3] - [0.0, 0.0, 0.0, 1.0]).max(axis=1) > AFFINE_TOLERANCE * scale
            if off.any():
                k = int(np.argmax(off))
                raise file.error(f"{where}: the matrix of joint {k} is not affine (last row "
                                 f"{matrices[k, 3].tolist()})")
            matrices = matrices.copy()
            matrices[:, 3] = [0.0, 0.0, 0.0, 1.0]
        for joint, matrix in zip(joints, matrices):
            i = index_of[joint]
            if i in bound:
                other, previous = bound[i]
                scale = max(np.abs(previous).max(), 1.0)
                if np.abs(previous - matrix).max() > 1e-5 * scale:
                    raise file.error(
                        f"joint {file.node_name(joint)!r} is bound by skins {other} and "
                        f"{skin_index} with different inverse bind matrices; one joint has one bind pose"
                    )
                continue
            bound[i] = (skin_index, matrix)
            ibp[i] = matrix
    return ibp


# ----------------------------------------------------------------------- mesh
def _triangles(mode: int, indices: np.ndarray, where: str, file: GltfDocument) -> np.ndarray:
    """Triangles of a primitive, vectorised (strips alternate their winding)."""
    n = len(indices)
    if mode == 4:
        if n % 3:
            raise file.error(f"{where}: a TRIANGLES primitive has {n} indices, not a multiple of 3")
        return indices.reshape(-1, 3)
    if mode in (5, 6) and n < 3:
        return np.zeros((0, 3), dtype=np.int64)
    if mode == 5:
        i = np.arange(n - 2)
        even = i % 2 == 0
        a = np.where(even, indices[i], indices[i + 1])
        b = np.where(even, indices[i + 1], indices[i])
        return np.stack([a, b, indices[i + 2]], axis=1)
    if mode == 6:
        i = np.arange(1, n - 1)
        return np.stack([np.full(n - 2, indices[0]), indices[i], indices[i + 1]], axis=1)
    return np.zeros((0, 3), dtype=np.int64)  # points and lines have no faces


def _primitives(file: GltfDocument, mesh_index: int) -> List[dict]:
    mesh = file.items("meshes")[mesh_index]
    primitives = mesh.get("primitives")
    if not isinstance(primitives, list) or not primitives or not all(isinstance(p, dict) for p in primitives):
        raise file.error(f"meshes[{mesh_index}].primitives must be a non-empty array of objects")
    return primitives


def _target_count(file: GltfDocument, mesh_index: int) -> int:
    """The mesh's morph target count: the same for every primitive (spec)."""
    counts = []
    for p, primitive in enumerate(_primitives(file, mesh_index)):
        targets = primitive.get("targets", [])
        if not isinstance(targets, list) or not all(isinstance(t, dict) for t in targets):
            raise file.error(f"meshes[{mesh_index}].primitives[{p}].targets must be an array of objects")
        counts.append(len(targets))
    if len(set(counts)) > 1:
        raise file.error(f"meshes[{mesh_index}]: its primitives have {counts} morph targets; the spec asks "
                         "for the same number in every primitive")
    return counts[0]


def _blend_layout(file: GltfDocument):
    """The blend shapes, in vertex order: for each mesh node with morph
    targets, (node, first blend shape, count, names, default weights)."""
    layout = []
    first = 0
    for n in _mesh_nodes(file):
        node = file.items("nodes")[n]
        mesh_index = file.index(node["mesh"], "meshes", f"nodes[{n}].mesh")
        count = _target_count(file, mesh_index)
        if count == 0:
            continue
        mesh = file.items("meshes")[mesh_index]
        weights = file.numbers(mesh, "weights", count, f"meshes[{mesh_index}]", default=np.zeros(count))
        weights = file.numbers(node, "weights", count, f"nodes[{n}]", default=weights)
        extras = mesh.get("extras")
        names = extras.get("targetNames") if isinstance(extras, dict) else None
        if not (isinstance(names, list) and len(names) == count and all(isinstance(x, str) for x in names)):
            names = [f"target_{i}" for i in range(count)]
        layout.append((n, first, count, list(names), weights))
        first += count
    if len(layout) > 1:  # names are per mesh; the node's name tells them apart
        layout = [(n, f, c, [f"{file.node_name(n)}/{x}" for x in names], w) for n, f, c, names, w in layout]
    return layout


def _mesh(file: GltfDocument, index_of, ibp: np.ndarray):
    """Vertices (bind space), faces, skin indices and weights, and blend
    shapes [S, V, 3] of every mesh node. A skinned node's vertices are used
    as they are (the spec ignores its transform); a mesh without a skin is
    bound to its own node with weight 1, its vertices and morph offsets
    placed by the node's bind pose (the inverse of its inverse bind matrix)."""
    positions, indices, weights, faces, targets = [], [], [], [], []
    layout = {n: (first, count) for n, first, count, _, _ in _blend_layout(file)}
    shape_count = sum(count for _, count in layout.values())
    count = 0
    for node_index in _mesh_nodes(file):
        node = file.items("nodes")[node_index]
        skinned = node.get("skin") is not None
        if skinned:
            skin_joints = file.items("skins")[node["skin"]]["joints"]
            to_character = np.asarray([index_of[j] for j in skin_joints], dtype=np.int64)
        else:
            joint = index_of[node_index]
            bind = np.linalg.inv(ibp[joint])
        first_shape, _ = layout.get(node_index, (0, 0))
        for p, primitive in enumerate(_primitives(file, node["mesh"])):
            where = f"meshes[{node['mesh']}].primitives[{p}]"
            attributes = primitive.get("attributes")
            if not isinstance(attributes, dict):
                raise file.error(f"{where}.attributes must be an object")
            mode = file.integer(primitive, "mode", where, default=4, maximum=6)
            if attributes.get("POSITION") is None:
                continue
            points = file.finite(file.accessor(attributes["POSITION"], "POSITION", f"{where}.attributes.POSITION"),
                                 f"{where}.attributes.POSITION")
            V = len(points)
            try:  # a few bytes of JSON can name a million targets of one accessor
                _checks.memory_budget(8 * 3 * shape_count * (count + V),
                                      f"{shape_count} morph targets of {count + V} vertices", "load_gltf")
            except ValueError as error:
                raise file.error(str(error)) from None
            offsets = np.zeros((shape_count, V, 3))
            for t, target in enumerate(primitive.get("targets", [])):
                if target.get("POSITION") is None:
                    continue  # NORMAL and TANGENT targets are not used
                here = f"{where}.targets[{t}].POSITION"
                delta = file.finite(file.accessor(target["POSITION"], "morph POSITION", here), here)
                if len(delta) != V:
                    raise file.error(f"{here} has {len(delta)} elements but POSITION has {V}")
                offsets[first_shape + t] = delta
            if skinned:
                joints, joint_weights = _skin_attributes(file, attributes, V, where, node_index)
                if (joints >= len(to_character)).any():
                    raise file.error(f"{where}: a JOINTS_n index is beyond the {len(to_character)} joints of "
                                     f"skins[{node['skin']}]")
                joints = to_character[joints]
            else:
                points = points @ bind[:3, :3].T + bind[:3, 3]
                offsets = offsets @ bind[:3, :3].T
                joints = np.full((V, 1), joint, dtype=np.int64)
                joint_weights = np.ones((V, 1))
            positions.append(points)
            targets.append(offsets)
            indices.append(joints)
            weights.append(joint_weights)
            if primitive.get("indices") is not None:
                tri = file.accessor(primitive["indices"], "indices", f"{where}.indices")[:, 0]
                if (tri >= V).any():
                    raise file.error(f"{where}.indices has an index beyond its {V} vertices")
            else:
                tri = np.arange(V, dtype=np.int64)
            faces.append(_triangles(mode, tri, where, file) + count)
            count += V
    if not positions:  # a skeleton alone (skins without a mesh node)
        return (np.zeros((0, 3)), np.zeros((0, 3), np.int64), np.zeros((0, 1), np.int64), np.zeros((0, 1)),
                np.zeros((shape_count, 0, 3)))
    k = max(i.shape[1] for i in indices)
    pad = lambda a, fill: np.pad(a, ((0, 0), (0, k - a.shape[1])), constant_values=fill)  # noqa: E731
    return (
        np.concatenate(positions),
        np.concatenate(faces) if faces else np.zeros((0, 3), np.int64),
        np.concatenate([pad(i, 0) for i in indices]),
        np.concatenate([pad(w, 0.0) for w in weights]),
        np.concatenate(targets, axis=1),
    )


def _skin_attributes(file: GltfDocument, attributes: dict, V: int, where: str, node_index: int):
    """A skinned primitive's JOINTS_n/WEIGHTS_n sets, side by side: [V, 4n] each."""
    sets = []
    n = 0
    while f"JOINTS_{n}" in attributes:
        if f"WEIGHTS_{n}" not in attributes:
            raise file.error(f"{where}: JOINTS_{n} without WEIGHTS_{n}")
        joint_set = file.accessor(attributes[f"JOINTS_{n}"], "JOINTS", f"{where}.attributes.JOINTS_{n}")
        weight_set = file.accessor(attributes[f"WEIGHTS_{n}"], "WEIGHTS", f"{where}.attributes.WEIGHTS_{n}")
        for name, values in ((f"JOINTS_{n}", joint_set), (f"WEIGHTS_{n}", weight_set)):
            if len(values) != V:
                raise file.error(f"{where}.attributes.{name} has {len(values)} elements but POSITION has {V}")
        if not (np.isfinite(weight_set).all() and (weight_set >= 0).all()):
            raise file.error(f"{where}.attributes.WEIGHTS_{n} has negative or non-finite weights")
        sets.append((joint_set, weight_set))
        n += 1
    if not sets:
        raise file.error(f"nodes[{node_index}] ({file.node_name(node_index)!r}) has a skin but "
                         f"{where} has no JOINTS_0")
    return np.concatenate([j for j, _ in sets], axis=1), np.concatenate([w for _, w in sets], axis=1)


def load_gltf(path: Union[str, os.PathLike], dtype: torch.dtype = torch.float32) -> Character:
    """Reads a skinned character from a ``.glb`` or ``.gltf`` file.

    Vertices: every mesh node in node order, each primitive in order. A
    skinned mesh node's own transform is ignored (as the glTF spec says); a
    mesh without a skin moves rigidly with its node, which becomes a joint
    (its vertices bound to it with weight 1). Joints: every joint of every
    skin, every rigid mesh node, and the ancestors that place them, parents
    first; ``joint_names`` are the node names. Every joint parameter is a
    model parameter (``P = 7J``, identity transform).

    Morph targets become ``blend_shapes [S, V, 3]``: POSITION targets only
    (NORMAL and TANGENT targets are ignored: the character has no normals
    to morph). ``blend_shape_names`` come from the mesh's
    ``extras.targetNames`` when present (prefixed by the node name when more
    than one mesh node has targets); the default weights are read by
    ``load_gltf_blend_weights(path, character, animation=None)``.

    The file is untrusted: it is checked against the spec before anything is
    read (see ``momentum_ops.io`` and the README), and external buffers are
    read only from regular files inside the file's folder.

    Raises GltfError (a ValueError) naming the file and the object for a
    malformed file and for what the model cannot represent: non-uniform
    scale, shear or reflection, or a joint bound by two skins with different
    inverse bind matrices. FileNotFoundError when ``path`` does not exist.

    Momentum's ``FB_momentum`` extension, when present, gives the parameter
    transform and parameter names (instead of the identity) and the
    ``minmax`` parameter limits (as ``parameter_min/max``; other limit types
    are left out with a warning) and the joint offsets Momentum adds to the
    joint parameters (``motion.offsets``, as ``joint_parameter_offsets``).
    Translations stay in the file's metres; see
    ``momentum_ops.io._momentum_extension`` and the README for the units rule.
    """
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"load_gltf: dtype must be torch.float32 or torch.float64, got {dtype}")
    file = GltfDocument(path)
    nodes, index_of, parents, trs = _skeleton(file)
    ibp = _inverse_bind_pose(file, nodes, index_of, parents, trs)
    vertices, faces, skin_indices, skin_weights, blend_shapes = _mesh(file, index_of, ibp)
    names = [name for _, _, _, shape_names, _ in _blend_layout(file) for name in shape_names]
    joint_names = [file.node_name(n) for n in nodes]
    parameters = {}
    ext = momentum_extension.extension(file)
    if ext is not None and "transform" in ext:
        parameter_names, transform, lower, upper = momentum_extension.read_transform(file, ext, joint_names)
        parameters = dict(parameter_names=parameter_names, parameter_transform=transform.to(dtype),
                          parameter_min=torch.tensor(lower, dtype=dtype), parameter_max=torch.tensor(upper, dtype=dtype))
        joint_offsets = momentum_extension.read_offsets(file, ext, joint_names)
        if joint_offsets is not None:
            parameters["joint_parameter_offsets"] = torch.tensor(joint_offsets, dtype=dtype)
    try:
        return Character(
            joint_names=joint_names,
            parents=torch.tensor(parents, dtype=torch.int64),
            offsets=torch.tensor(np.stack([t for t, _, _ in trs]), dtype=dtype),
            pre_rotations=torch.tensor(np.stack([r for _, r, _ in trs]), dtype=dtype),
            inverse_bind_pose=torch.tensor(ibp, dtype=dtype),
            rest_vertices=torch.tensor(vertices, dtype=dtype),
            faces=torch.tensor(faces, dtype=torch.int64),
            skin_indices=torch.tensor(skin_indices, dtype=torch.int64),
            skin_weights=torch.tensor(skin_weights, dtype=dtype),
            blend_shapes=torch.tensor(blend_shapes, dtype=dtype),
            blend_shape_names=names,
            **parameters,
        )
    except ValueError as error:  # e.g. a bind pose that overflows the dtype
        raise file.error(f"its data does not make a valid character: {error}") from None


# ------------------------------------------------------------------ animation
def _animation_names(file: GltfDocument) -> List[str]:
    names = []
    for i, animation in enumerate(file.items("animations")):
        names.append(file.string(animation, "name", f"animations[{i}]") or f"animation_{i}")
    return names


def gltf_animations(path: Union[str, os.PathLike]) -> List[str]:
    """The names of a file's animations (``animation_<i>`` for unnamed ones)."""
    return _animation_names(GltfDocument(path))


def _find_animation(file: GltfDocument, animation) -> int:
    names = _animation_names(file)
    if isinstance(animation, str):
        if animation not in names:
            raise KeyError(f"{file.path}: no animation {animation!r}; it has {names}")
        return names.index(animation)
    if isinstance(animation, bool) or not isinstance(animation, (int, np.integer)):
        raise TypeError(f"animation must be an index, a name or None, got {type(animation).__name__}")
    if not 0 <= animation < len(names):
        raise IndexError(f"{file.path}: animation {animation} out of range; it has {len(names)}: {names}")
    return int(animation)


def _morph_target_count(file: GltfDocument, node: int) -> int:
    mesh = file.items("nodes")[node].get("mesh")
    return 0 if mesh is None else _target_count(file, file.index(mesh, "meshes", f"nodes[{node}].mesh"))


def _channels(file: GltfDocument, a: int):
    """The checked channels of animations[a]: (node, path, keys, values, interpolation)."""
    animation = file.items("animations")[a]
    where = f"animations[{a}]"
    samplers, channels = animation.get("samplers", []), animation.get("channels", [])
    if not isinstance(samplers, list) or not all(isinstance(s, dict) for s in samplers):
        raise file.error(f"{where}.samplers must be an array of objects")
    if not isinstance(channels, list) or not all(isinstance(c, dict) for c in channels):
        raise file.error(f"{where}.channels must be an array of objects")
    out = []
    for c, channel in enumerate(channels):
        here = f"{where}.channels[{c}]"
        s = channel.get("sampler")
        if not isinstance(s, int) or isinstance(s, bool) or not 0 <= s < len(samplers):
            raise file.error(f"{here}.sampler = {s!r} is not an index into {where}.samplers ({len(samplers)})")
        target = channel.get("target")
        if not isinstance(target, dict):
            raise file.error(f"{here}.target must be an object")
        path = target.get("path")
        if not isinstance(path, str) or path not in ANIMATION_PATHS:
            raise file.error(f"{here}.target.path = {path!r}; the spec allows translation, rotation, scale, weights")
        if target.get("node") is None:
            continue  # a target defined by an extension: nothing of the character
        node = file.index(target["node"], "nodes", f"{here}.target.node")
        sampler = samplers[s]
        shere = f"{where}.samplers[{s}]"
        interpolation = sampler.get("interpolation", "LINEAR")
        if not isinstance(interpolation, str) or interpolation not in INTERPOLATIONS:
            raise file.error(f"{shere}.interpolation = {interpolation!r}; the spec allows LINEAR, STEP, CUBICSPLINE")
        keys = file.finite(file.accessor(sampler.get("input"), "input", f"{shere}.input")[:, 0], f"{shere}.input")
        if (np.diff(keys) <= 0).any():
            raise file.error(f"{shere}.input: keyframe times must be strictly increasing")
        if interpolation == "CUBICSPLINE" and len(keys) < 2:
            raise file.error(f"{shere}: CUBICSPLINE needs at least 2 keyframes")
        values = file.finite(file.accessor(sampler.get("output"), path, f"{shere}.output"), f"{shere}.output")
        per_key = _morph_target_count(file, node) if path == "weights" else 1
        expected = len(keys) * per_key * (3 if interpolation == "CUBICSPLINE" else 1)
        if len(values) != expected:
            raise file.error(f"{shere}.output has {len(values)} elements; {interpolation} with {len(keys)} "
                             f"keyframes{f' of {per_key} weights' if path == 'weights' else ''} needs {expected}")
        if path == "rotation":
            points = values[1::3] if interpolation == "CUBICSPLINE" else values
            if (np.linalg.norm(points, axis=1) == 0).any():
                raise file.error(f"{shere}.output has a zero rotation quaternion")
        out.append((node, path, keys, values, interpolation))
    return out


def _sample_times(channels, times, where: str) -> np.ndarray:
    """The given times, checked; by default every keyframe time of every channel."""
    if times is None:
        return np.unique(np.concatenate([keys for _, _, keys, _, _ in channels])) if channels else np.zeros(1)
    try:
        times = np.asarray(times, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: times must be a sequence of numbers (seconds)") from None
    if not np.isfinite(times).all():
        raise ValueError(f"{where}: times must be finite")
    return times


def load_gltf_blend_weights(
    path: Union[str, os.PathLike],
    character: Character,
    animation: Optional[Union[int, str]] = 0,
    times: Optional[Sequence[float]] = None,
) -> torch.Tensor:
    """Samples an animation's morph-target ``weights`` channels as the
    character's blend weights.

    Args:
        path: the glTF file the character was loaded from.
        character: from ``load_gltf(path)`` (its blend shapes must match the file's).
        animation: index or name; ``None`` gives the default weights (the
            node's ``weights``, else the mesh's, else zeros) as one frame.
        times: seconds; default: every keyframe time of the animation (all
            channels, the same frames as ``load_gltf_motion``).

    Returns:
        ``[F, S]`` in the character's dtype. LINEAR, STEP and CUBICSPLINE
        channels are sampled as the glTF spec says; a mesh node without a
        weights channel keeps its default weights; before the first and
        after the last keyframe a channel holds its end values.
    """
    file = GltfDocument(path)
    layout = _blend_layout(file)
    names = [name for _, _, _, shape_names, _ in layout for name in shape_names]
    if names != list(character.blend_shape_names):
        raise ValueError(f"{file.path}: its morph targets do not match the character's blend shapes "
                         f"({len(names)} vs {character.num_blend_shapes})")
    defaults = np.concatenate([w for *_, w in layout]) if layout else np.zeros(0)
    if animation is None:
        frames = defaults[None]
    else:
        channels = _channels(file, _find_animation(file, animation))
        times = _sample_times(channels, times, "load_gltf_blend_weights")
        try:
            _checks.memory_budget(8 * len(times) * len(defaults),
                                  f"{len(times)} frames of {len(defaults)} blend weights", "load_gltf_blend_weights")
        except ValueError as error:
            raise file.error(str(error)) from None
        frames = np.repeat(defaults[None], len(times), axis=0)
        slices = {n: (first, count) for n, first, count, _, _ in layout}
        for node, target, keys, values, interpolation in channels:
            if target != "weights" or node not in slices:
                continue
            first, count = slices[node]
            rows = values.reshape(-1, count)  # one row of weights per key (x3 for CUBICSPLINE)
            frames[:, first:first + count] = sample_channel(times, keys, rows, interpolation, False)
    return torch.tensor(frames, dtype=character.offsets.dtype)


def load_gltf_model_motion(path: Union[str, os.PathLike], character: Character):
    """The model-parameter motion of Momentum's ``FB_momentum`` extension.

    Returns ``(model_parameters [F, P], fps)`` in the character's parameter
    order and dtype, with the units rule of ``load_gltf`` (length parameters
    in metres). Parameters of the file the character lacks are dropped with a
    warning; ones it lacks are zero. Momentum adds the file's per-joint
    offsets (``motion.offsets``) to every frame's joint parameters: a
    character loaded from the file carries them as
    ``joint_parameter_offsets``, so ``character.model_parameters_to_joint_parameters``
    gives the joint parameters Momentum poses it with. For a character with
    other offsets the difference is folded into the model parameters when
    the transform can express it exactly (else GltfError).
    """
    file = GltfDocument(path)
    ext = momentum_extension.extension(file)
    if ext is None:
        raise file.error(f"has no {momentum_extension.EXTENSION} extension")
    poses, fps = momentum_extension.read_motion(file, ext, character)
    return torch.tensor(poses, dtype=character.offsets.dtype), fps


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
        times: seconds (finite); default: the animation's keyframe times (all channels).

    Returns:
        Joint parameters ``[F, J, 7]`` in the character's dtype.
    """
    file = GltfDocument(path)
    nodes, index_of, parents, trs = _skeleton(file)
    names = [file.node_name(n) for n in nodes]
    if names != list(character.joint_names):
        raise ValueError(f"{file.path}: its joints do not match the character's ({len(names)} vs {character.num_joints})")
    rest_t = np.asarray([t for t, _, _ in trs])
    rest_r = np.asarray([r for _, r, _ in trs])
    rest_s = np.asarray([[s] * 3 for _, _, s in trs])
    if animation is None:
        frames_t, frames_r, frames_s = rest_t[None], rest_r[None], rest_s[None]
    else:
        channels = _channels(file, _find_animation(file, animation))
        times = _sample_times(channels, times, "load_gltf_motion")
        F = len(times)
        frames_t = np.repeat(rest_t[None], F, axis=0)
        frames_r = np.repeat(rest_r[None], F, axis=0)
        frames_s = np.repeat(rest_s[None], F, axis=0)
        for node, target, keys, values, interpolation in channels:
            if node not in index_of or target == "weights":
                continue  # the mesh node, cameras, morph weights: not part of the skeleton
            sampled = sample_channel(times, keys, values, interpolation, target == "rotation")
            {"translation": frames_t, "rotation": frames_r, "scale": frames_s}[target][:, index_of[node]] = sampled
    scales = _uniform_scale(frames_s, "the animated scale of the joints (frame, joint)", file)
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


def save_gltf(path: Union[str, os.PathLike], character: Character, motion: Optional[torch.Tensor] = None,
              fps: float = 30.0, blend_weights: Optional[torch.Tensor] = None,
              model_motion: Optional[torch.Tensor] = None) -> None:
    """Writes the character and a motion (joint parameters ``[F, J, 7]`` or
    ``[F, J*7]``) as a glTF any viewer can play: one node per joint (rest
    translation = offset, rest rotation = pre-rotation), one skinned mesh, one
    LINEAR animation at ``fps``. ``.glb`` writes one binary file; any other
    extension writes ``.gltf`` JSON with the buffer embedded as a data URI.

    The character's blend shapes become morph targets (POSITION, named in
    ``mesh.extras.targetNames``); ``blend_weights [F, S]``, one row per frame,
    become the animation's ``weights`` channel (default: no such channel, so
    viewers show the rest shape).

    Momentum's ``FB_momentum`` extension is written too (when the joint
    names are unique): the parameter transform, names and ``minmax`` limits,
    and ``model_motion [F, P]`` (model parameters) when given, in Momentum's
    centimetres. With ``model_motion`` and no ``motion``, the joint-parameter
    animation is computed from it through the parameter transform.
    """
    pygltflib = _gltf_library()
    path = os.fspath(path)
    J = character.num_joints
    P = character.num_parameters
    if model_motion is not None:
        if not isinstance(model_motion, torch.Tensor) or not model_motion.is_floating_point():
            raise ValueError("save_gltf: model_motion must be a floating-point tensor [F, P]")
        if model_motion.dim() != 2 or model_motion.shape[1] != P:
            raise ValueError(f"save_gltf: model_motion must have shape [F, {P}] for the character's {P} "
                             f"parameters, got {list(model_motion.shape)}")
        if not bool(torch.isfinite(model_motion).all()):
            raise ValueError("save_gltf: model_motion has NaN or infinite values")
        model_motion = model_motion.detach().cpu().double()
        if motion is None:
            motion = character.model_parameters_to_joint_parameters(
                model_motion.to(character.transform_values.dtype)).reshape(-1, J, 7)
        elif motion.shape[0] != model_motion.shape[0]:
            raise ValueError(f"save_gltf: motion has {motion.shape[0]} frames but model_motion has "
                             f"{model_motion.shape[0]}")
    if motion is None:
        raise ValueError("save_gltf: give motion (joint parameters) or model_motion (model parameters)")
    if not isinstance(motion, torch.Tensor):
        raise ValueError(f"save_gltf: motion must be a tensor of joint parameters, got {type(motion).__name__}")
    if not motion.is_floating_point():
        raise ValueError(f"save_gltf: motion must be floating point, got {motion.dtype}")
    shape = tuple(motion.shape)
    if not (len(shape) == 3 and shape[1:] == (J, 7)) and not (len(shape) == 2 and shape[1] == 7 * J):
        raise ValueError(f"save_gltf: motion must have shape [F, {J}, 7] or [F, {7 * J}] for the character's {J} "
                         f"joints, got {list(shape)}")
    motion = motion.detach().cpu().double().reshape(-1, J, 7)
    F = motion.shape[0]
    if F < 1:
        raise ValueError("save_gltf: the motion needs at least one frame")
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not math.isfinite(fps) or not fps > 0:
        raise ValueError(f"save_gltf: fps must be a finite number > 0, got {fps!r}")
    if not bool(torch.isfinite(motion).all()):
        raise ValueError("save_gltf: the motion has NaN or infinite values")
    S = character.num_blend_shapes
    if blend_weights is not None:
        if not isinstance(blend_weights, torch.Tensor) or not blend_weights.is_floating_point():
            raise ValueError("save_gltf: blend_weights must be a floating-point tensor [F, S]")
        if tuple(blend_weights.shape) != (F, S):
            raise ValueError(f"save_gltf: blend_weights must have shape [{F}, {S}] (one row per motion frame, one "
                             f"weight per blend shape), got {list(blend_weights.shape)}")
        if not bool(torch.isfinite(blend_weights).all()):
            raise ValueError("save_gltf: blend_weights has NaN or infinite values")
        if S == 0:
            blend_weights = None
    offsets = character.offsets.detach().cpu().double()
    pre = character.pre_rotations.detach().cpu().double()
    parents = character.parents.tolist()
    writer = _Writer(pygltflib)

    has_mesh = character.num_vertices > 0  # a character without a mesh is written as a skin alone
    if has_mesh:
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
        if S:
            shapes = character.blend_shapes.detach().cpu().float().numpy()
            primitive.targets = [{"POSITION": writer.add(shapes[s], "VEC3", 5126, 34962, min_max=True)} for s in range(S)]
        if character.faces.shape[0]:
            primitive.indices = writer.add(character.faces.cpu().numpy().astype(np.uint32).reshape(-1, 1), "SCALAR", 5125, 34963)
    ibp = character.inverse_bind_pose.detach().cpu().float().numpy().transpose(0, 2, 1)  # column-major
    skin = pygltflib.Skin(joints=list(range(J)), inverseBindMatrices=writer.add(ibp.reshape(J, 16), "MAT4", 5126))

    nodes = []
    children_of: List[List[int]] = [[] for _ in range(J)]
    for c in range(J):
        if parents[c] >= 0:
            children_of[parents[c]].append(c)
    for j, name in enumerate(character.joint_names):
        children = children_of[j]
        nodes.append(pygltflib.Node(name=name, translation=offsets[j].tolist(), rotation=pre[j].tolist(),
                                    children=children or None))
    if has_mesh:
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

    if blend_weights is not None and has_mesh:
        values = blend_weights.detach().cpu().float().numpy().reshape(-1, 1)
        samplers.append(pygltflib.AnimationSampler(input=time_accessor, output=writer.add(values, "SCALAR", 5126),
                                                   interpolation="LINEAR"))
        channels.append(pygltflib.AnimationChannel(sampler=len(samplers) - 1,
                                                   target=pygltflib.AnimationChannelTarget(node=J, path="weights")))
    meshes = [pygltflib.Mesh(primitives=[primitive])] if has_mesh else []
    if S and has_mesh:
        mesh = meshes[0]
        mesh.weights = [0.0] * S
        mesh.extras = {"targetNames": list(character.blend_shape_names)}

    extensions, used = {}, []
    if len(set(character.joint_names)) == J:
        extensions[momentum_extension.EXTENSION] = momentum_extension.write(
            character, None if model_motion is None else model_motion.numpy(), fps,
            lambda values: writer.add(values.astype(np.float32), "SCALAR", 5126))
        used = [momentum_extension.EXTENSION]
        for node in nodes[:J]:
            node.extensions = {momentum_extension.EXTENSION: {"type": "skeleton_joint"}}
    else:
        warnings.warn("save_gltf: the joint names are not unique, so the FB_momentum extension (parameter "
                      "transform, limits, model motion) is not written", stacklevel=2)

    gltf = pygltflib.GLTF2(
        asset=pygltflib.Asset(generator="momentum_ops", version="2.0"),
        extensions=extensions,
        extensionsUsed=used,
        scene=0,
        scenes=[pygltflib.Scene(nodes=[j for j in range(J) if parents[j] < 0] + ([J] if has_mesh else []))],
        nodes=nodes,
        meshes=meshes,
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
