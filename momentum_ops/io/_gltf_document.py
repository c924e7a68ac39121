"""A glTF 2.0 document read as untrusted input.

Everything the loaders use goes through this class, which checks it against
the spec before it is used: the GLB container, the JSON, every index, every
accessor against its buffer view and buffer (before anything is read or
allocated), the component and element types each use allows, and the node
hierarchy (a forest). Every failure is a GltfError that names the file, the
object (``accessors[3].count``) and what is wrong. Buffers are read lazily,
each at most once; external ones go through ``_files`` (inside the folder,
regular files only).
"""

from __future__ import annotations

import json
import os
import struct
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import _files


class GltfError(ValueError):
    """A glTF file that is malformed, or that momentum_ops cannot represent faithfully."""


COMPONENT_TYPES = {
    5120: np.dtype("<i1"),
    5121: np.dtype("<u1"),
    5122: np.dtype("<i2"),
    5123: np.dtype("<u2"),
    5125: np.dtype("<u4"),
    5126: np.dtype("<f4"),
}
COMPONENT_NAMES = {5120: "BYTE", 5121: "UNSIGNED_BYTE", 5122: "SHORT", 5123: "UNSIGNED_SHORT",
                   5125: "UNSIGNED_INT", 5126: "FLOAT"}
ELEMENT_WIDTH = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT2": 4, "MAT3": 9, "MAT4": 16}

# (element types, {componentType: normalized-allowed?}) per use, from the spec.
FLOAT = {5126: False}
NORMALIZED_UNSIGNED = {5121: True, 5123: True}
NORMALIZED_ANY = {5120: True, 5121: True, 5122: True, 5123: True}
USES = {
    "POSITION": ({"VEC3"}, FLOAT),
    "JOINTS": ({"VEC4"}, {5121: False, 5123: False}),
    "WEIGHTS": ({"VEC4"}, {**FLOAT, **NORMALIZED_UNSIGNED}),
    "indices": ({"SCALAR"}, {5121: False, 5123: False, 5125: False}),
    "inverseBindMatrices": ({"MAT4"}, FLOAT),
    "input": ({"SCALAR"}, FLOAT),
    "translation": ({"VEC3"}, FLOAT),
    "rotation": ({"VEC4"}, {**FLOAT, **NORMALIZED_ANY}),
    "scale": ({"VEC3"}, FLOAT),
    "weights": ({"SCALAR"}, {**FLOAT, **NORMALIZED_ANY}),
    "morph POSITION": ({"VEC3"}, {**FLOAT, **NORMALIZED_ANY}),
    "FB_momentum motion": ({"SCALAR"}, FLOAT),
}
SPARSE_INDEX_TYPES = {5121, 5123, 5125}
INTERPOLATIONS = ("LINEAR", "STEP", "CUBICSPLINE")
ANIMATION_PATHS = ("translation", "rotation", "scale", "weights")
# Extensions whose presence changes how the data reads; a file that requires
# any other is refused rather than misread.
SUPPORTED_REQUIRED_EXTENSIONS: frozenset = frozenset()
GLB_MAGIC = b"glTF"
GLB_JSON = 0x4E4F534A
GLB_BIN = 0x004E4942
# Largest integer a count or offset may hold (glTF uses JSON numbers; beyond
# 2^53 they are not exact).
MAX_INTEGER = 2 ** 53


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _reject_constant(name):
    raise ValueError(f"{name} is not valid JSON")


class GltfDocument:
    """The parsed, checked JSON of a .gltf/.glb and lazy access to its data."""

    def __init__(self, path):
        self.path = os.fspath(path)
        if not isinstance(self.path, str):
            raise GltfError(f"{self.path!r}: expected a file path")
        raw = _files.read_regular_file(self.path, self.error, "the file", follow_links=True)
        self.file_bytes = len(raw)
        self.folder = os.path.realpath(os.path.dirname(os.path.abspath(self.path)))
        self.binary_chunk: Optional[bytes] = None
        if raw[:4] == GLB_MAGIC:
            text = self._read_glb(raw)
        else:
            text = raw
        try:
            decoded = text.decode("utf-8-sig")
            self.json = json.loads(decoded, parse_constant=_reject_constant)
        except (UnicodeDecodeError, ValueError, RecursionError) as error:
            message = str(error) if not isinstance(error, RecursionError) else "nested too deeply"
            raise GltfError(f"{self.path}: not a glTF 2.0 file: its JSON does not parse ({message[:200]})") from None
        if not isinstance(self.json, dict):
            raise GltfError(f"{self.path}: not a glTF 2.0 file: the JSON is not an object")
        asset = self.json.get("asset")
        version = asset.get("version") if isinstance(asset, dict) else None
        if not isinstance(version, str) or not version.startswith("2."):
            raise GltfError(f"{self.path}: asset.version is {version!r}; only glTF 2.x is read")
        required = self.json.get("extensionsRequired", [])
        if not isinstance(required, list) or not all(isinstance(e, str) for e in required):
            raise GltfError(f"{self.path}: extensionsRequired must be a list of names")
        unsupported = sorted(set(required) - SUPPORTED_REQUIRED_EXTENSIONS)
        if unsupported:
            raise GltfError(f"{self.path}: the file requires extensions momentum_ops does not read: {unsupported}")
        for kind in ("nodes", "meshes", "skins", "accessors", "bufferViews", "buffers", "animations",
                     "images", "scenes"):
            self.items(kind)
        self._buffers: Dict[int, bytes] = {}
        self._backed_bytes: Optional[int] = None
        self._check_images()
        self._check_hierarchy()

    # -------------------------------------------------------------- errors
    def error(self, message: str) -> GltfError:
        return GltfError(f"{self.path}: {message}")

    # ------------------------------------------------------------- container
    def _read_glb(self, raw: bytes) -> bytes:
        if len(raw) < 12:
            raise self.error(f"the GLB header needs 12 bytes, the file has {len(raw)}")
        _, version, length = struct.unpack_from("<4sII", raw, 0)
        if version != 2:
            raise self.error(f"GLB version {version}; only version 2 is read")
        if length > len(raw):
            raise self.error(f"the GLB header declares {length} bytes but the file has {len(raw)} (truncated?)")
        if length < 20:
            raise self.error(f"the GLB header declares {length} bytes, too few for a JSON chunk")
        position, chunks = 12, []
        while position < length:
            if position + 8 > length:
                raise self.error(f"a GLB chunk header at byte {position} runs past the declared length {length}")
            chunk_length, chunk_type = struct.unpack_from("<II", raw, position)
            start, end = position + 8, position + 8 + chunk_length
            if end > length:
                raise self.error(f"GLB chunk {len(chunks)} (bytes {start}..{end}) runs past the declared "
                                 f"length {length}")
            chunks.append((chunk_type, raw[start:end]))
            position = end
        if not chunks or chunks[0][0] != GLB_JSON:
            raise self.error("the first GLB chunk must be the JSON chunk")
        if len(chunks) > 1 and chunks[1][0] == GLB_BIN:
            self.binary_chunk = chunks[1][1]
        if any(t == GLB_JSON for t, _ in chunks[1:]) or sum(t == GLB_BIN for t, _ in chunks) > 1:
            raise self.error("a GLB file has one JSON chunk and at most one BIN chunk")
        return chunks[0][1].rstrip(b" \x00")

    # ------------------------------------------------------------ JSON access
    def items(self, kind: str) -> List[dict]:
        """The top-level array `kind` ([] when absent); each entry must be an object.
        Checked once per array (readers ask for nodes once per node)."""
        value = self.json.get(kind, [])
        checked = self.__dict__.setdefault("_checked_arrays", {})
        if kind in checked and checked[kind] is value:
            return value
        if not isinstance(value, list):
            raise self.error(f"{kind} must be an array")
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                raise self.error(f"{kind}[{i}] must be an object")
        checked[kind] = value
        return value

    def index(self, value, kind: str, where: str) -> int:
        """A checked index into the top-level array `kind`."""
        count = len(self.items(kind))
        if not _is_int(value) or not 0 <= value < count:
            raise self.error(f"{where} = {value!r} is not an index into {kind} (which has {count})")
        return value

    def item(self, kind: str, value, where: str) -> dict:
        return self.items(kind)[self.index(value, kind, where)]

    def integer(self, obj: dict, key: str, where: str, default=None, minimum: int = 0, maximum: int = MAX_INTEGER):
        value = obj.get(key, default)
        if value is None and default is None:
            raise self.error(f"{where}.{key} is missing")
        if not _is_int(value) or not minimum <= value <= maximum:
            raise self.error(f"{where}.{key} = {value!r} must be an integer in [{minimum}, {maximum}]")
        return value

    def numbers(self, obj: dict, key: str, count: int, where: str, default=None) -> Optional[np.ndarray]:
        """`count` finite numbers (float64), the default when absent."""
        value = obj.get(key)
        if value is None:
            return None if default is None else np.asarray(default, dtype=np.float64)
        if (not isinstance(value, list) or len(value) != count
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
            raise self.error(f"{where}.{key} must be an array of {count} numbers")
        array = np.asarray(value, dtype=np.float64)
        if not np.isfinite(array).all():
            raise self.error(f"{where}.{key} has values that are not finite")
        return array

    def string(self, obj: dict, key: str, where: str) -> Optional[str]:
        value = obj.get(key)
        if value is not None and not isinstance(value, str):
            raise self.error(f"{where}.{key} must be a string, got {type(value).__name__}")
        return value

    def index_list(self, obj: dict, key: str, kind: str, where: str, unique: bool = True) -> List[int]:
        value = obj.get(key, [])
        if not isinstance(value, list):
            raise self.error(f"{where}.{key} must be an array of indices into {kind}")
        indices = [self.index(v, kind, f"{where}.{key}[{i}]") for i, v in enumerate(value)]
        if unique and len(set(indices)) != len(indices):
            seen = set()
            duplicate = next(v for v in indices if v in seen or seen.add(v))
            raise self.error(f"{where}.{key} lists {kind}[{duplicate}] twice")
        return indices

    # -------------------------------------------------------------- structure
    def _check_images(self) -> None:
        """Images are never read, but an image URI that escapes the folder is refused all the same."""
        for i, image in enumerate(self.items("images")):
            uri = image.get("uri")
            if uri is None:
                continue
            where = f"images[{i}].uri"
            if isinstance(uri, str) and uri.startswith("data:"):
                header = uri.partition(",")[0]
                if not header.endswith(";base64"):
                    raise self.error(f"{where}: a data URI must be base64 ('data:<type>;base64,<data>')")
                continue
            _files.resolve_relative_uri(uri, self.folder, self.error, where)

    def _check_hierarchy(self) -> None:
        """Children are valid and unique, no node has two parents, and there is no cycle."""
        nodes = self.items("nodes")
        self.parent_of: Dict[int, int] = {}
        self.children: List[List[int]] = []
        for n, node in enumerate(nodes):
            children = self.index_list(node, "children", "nodes", f"nodes[{n}]")
            for child in children:
                if child in self.parent_of:
                    raise self.error(f"nodes[{child}] is a child of both nodes[{self.parent_of[child]}] and "
                                     f"nodes[{n}]; a node has at most one parent")
                self.parent_of[child] = n
            self.children.append(children)
        # With one parent each, a cycle is exactly a set of nodes that no root reaches.
        reached = [False] * len(nodes)
        stack = [n for n in range(len(nodes)) if n not in self.parent_of]
        while stack:
            n = stack.pop()
            reached[n] = True
            stack.extend(self.children[n])
        if not all(reached):
            first = reached.index(False)
            raise self.error(f"nodes[{first}] is part of a cycle in the node hierarchy; it must be a forest")
        for n, node in enumerate(nodes):
            where = f"nodes[{n}]"
            self.string(node, "name", where)
            for key, kind in (("mesh", "meshes"), ("skin", "skins"), ("camera", "cameras")):
                if key in node:
                    self.index(node[key], kind, f"{where}.{key}")
            if "skin" in node and "mesh" not in node:
                raise self.error(f"{where} has a skin but no mesh")

    def node_name(self, n: int) -> str:
        return self.items("nodes")[n].get("name") or f"node_{n}"

    def node_trs(self, n: int):
        """(T [3], R [4] xyzw unit, S [3]) or the 4x4 matrix (row-major) of node n, float64."""
        node = self.items("nodes")[n]
        where = f"nodes[{n}]"
        matrix = self.numbers(node, "matrix", 16, where)
        trs = [node.get(k) is not None for k in ("translation", "rotation", "scale")]
        if matrix is not None:
            matrix = matrix.reshape(4, 4).T  # glTF stores columns
            if any(trs) and not np.array_equal(matrix, np.eye(4)):
                raise self.error(f"{where} has both a matrix and translation/rotation/scale; the spec allows one")
            if np.abs(matrix[3] - [0, 0, 0, 1]).max() > 1e-6:
                raise self.error(f"{where}.matrix is not affine (last row {matrix[3].tolist()})")
            if not any(trs):
                return None, None, None, matrix
        t = self.numbers(node, "translation", 3, where, default=[0.0, 0.0, 0.0])
        r = self.numbers(node, "rotation", 4, where, default=[0.0, 0.0, 0.0, 1.0])
        s = self.numbers(node, "scale", 3, where, default=[1.0, 1.0, 1.0])
        norm = float(np.linalg.norm(r))
        if abs(norm - 1.0) > 1e-3:
            raise self.error(f"{where}.rotation {r.tolist()} is not a unit quaternion (norm {norm:.6g})")
        return t, r / norm, s, None

    # ---------------------------------------------------------------- buffers
    def buffer(self, index: int, where: str) -> bytes:
        """The checked bytes of buffers[index] (exactly byteLength of them)."""
        index = self.index(index, "buffers", where)
        if index in self._buffers:
            return self._buffers[index]
        buffer = self.items("buffers")[index]
        here = f"buffers[{index}]"
        length = self.integer(buffer, "byteLength", here, minimum=1)
        uri = buffer.get("uri")
        if uri is None:
            if self.binary_chunk is None:
                raise self.error(f"{here} has no uri and the file has no GLB binary chunk")
            if index != 0:
                raise self.error(f"{here} has no uri; only buffers[0] may refer to the GLB binary chunk")
            data = self.binary_chunk
        elif not isinstance(uri, str):
            raise self.error(f"{here}.uri must be a string")
        elif uri.startswith("data:"):
            data = _files.decode_data_uri(uri, self.error, f"{here}.uri")
        else:
            resolved = _files.resolve_relative_uri(uri, self.folder, self.error, f"{here}.uri")
            try:
                data = _files.read_regular_file(resolved, self.error, f"{here}.uri {uri!r}", limit=length)
            except FileNotFoundError:
                raise self.error(f"{here}.uri {uri!r}: no such file in {self.folder!r}") from None
        if len(data) < length:
            raise self.error(f"{here}.byteLength is {length} but only {len(data)} bytes back it")
        data = data[:length] if len(data) > length else data
        self._buffers[index] = data
        return data

    def _view(self, index, where: str) -> Tuple[bytes, int, int, Optional[int]]:
        """(buffer bytes, byteOffset, byteLength, byteStride) of a checked bufferView."""
        index = self.index(index, "bufferViews", where)
        view = self.items("bufferViews")[index]
        here = f"bufferViews[{index}]"
        data = self.buffer(view.get("buffer"), f"{here}.buffer")
        offset = self.integer(view, "byteOffset", here, default=0)
        length = self.integer(view, "byteLength", here, minimum=1)
        if offset + length > len(data):
            raise self.error(f"{here}: byteOffset {offset} + byteLength {length} exceeds the "
                             f"{len(data)} bytes of buffers[{view.get('buffer')}]")
        stride = view.get("byteStride")
        if stride is not None:
            stride = self.integer(view, "byteStride", here, minimum=4, maximum=252)
            if stride % 4:
                raise self.error(f"{here}.byteStride = {stride} must be a multiple of 4")
        return data, offset, length, stride

    def _elements(self, view_index, byte_offset: int, count: int, dtype: np.dtype, width: int, where: str,
                  strided: bool = True) -> np.ndarray:
        data, view_offset, view_length, stride = self._view(view_index, f"{where}.bufferView")
        element = dtype.itemsize * width
        if not strided:
            stride = None
        if stride is not None and stride < element:
            raise self.error(f"{where}: bufferViews[{view_index}].byteStride {stride} is smaller than one "
                             f"element ({element} bytes)")
        step = stride or element
        if (view_offset + byte_offset) % dtype.itemsize:
            raise self.error(f"{where}: data at byte {view_offset + byte_offset} is not aligned to its "
                             f"{dtype.itemsize}-byte components")
        needed = byte_offset + step * (count - 1) + element
        if needed > view_length:
            raise self.error(f"{where}: {count} elements of {element} bytes (stride {step}) from byteOffset "
                             f"{byte_offset} need {needed} bytes, but bufferViews[{view_index}] has {view_length}")
        return np.ndarray((count, width), dtype=dtype, buffer=data, offset=view_offset + byte_offset,
                          strides=(step, dtype.itemsize)).copy()

    def _unbacked_limit(self) -> int:
        """Bytes an accessor without a bufferView may expand to: the size of
        the file's data, so that the cost of a load stays linear in the file."""
        if self._backed_bytes is None:
            total = self.file_bytes
            for i in range(len(self.items("buffers"))):
                if self.items("buffers")[i].get("uri") is not None:
                    total += len(self.buffer(i, f"buffers[{i}]"))
            self._backed_bytes = total
        return self._backed_bytes

    def accessor(self, index, use: str, where: str) -> np.ndarray:
        """Accessor `index` read for `use` (a key of USES): [count, width]
        (MAT4 as [count, 4, 4] row-major). Normalized integers become float64,
        float components float64, integer components int64."""
        index = self.index(index, "accessors", where)
        accessor = self.items("accessors")[index]
        here = f"accessors[{index}]"
        types, components = USES[use]
        kind = accessor.get("type")
        component = accessor.get("componentType")
        if not isinstance(kind, str) or kind not in types:
            raise self.error(f"{here} (used as {use} by {where}) has type {kind!r}; the spec allows {sorted(types)}")
        if not _is_int(component) or component not in components:
            allowed = [COMPONENT_NAMES[c] for c in components]
            raise self.error(f"{here} (used as {use} by {where}) has componentType {component!r}; the spec "
                             f"allows {allowed}")
        normalized = accessor.get("normalized", False)
        if not isinstance(normalized, bool):
            raise self.error(f"{here}.normalized must be true or false")
        if normalized and not components[component]:
            raise self.error(f"{here} (used as {use}) must not be normalized with componentType "
                             f"{COMPONENT_NAMES[component]}")
        if use in ("WEIGHTS", "rotation", "weights", "morph POSITION") and component != 5126 and not normalized:
            raise self.error(f"{here} (used as {use}) has integer components, which the spec allows only "
                             "normalized")
        dtype, width = COMPONENT_TYPES[component], ELEMENT_WIDTH[kind]
        count = self.integer(accessor, "count", here, minimum=1)
        byte_offset = self.integer(accessor, "byteOffset", here, default=0)
        if accessor.get("bufferView") is not None:
            values = self._elements(accessor["bufferView"], byte_offset, count, dtype, width, here)
        else:
            if count * dtype.itemsize * width > self._unbacked_limit():
                raise self.error(f"{here} has no bufferView but declares {count} elements "
                                 f"({count * dtype.itemsize * width} bytes), more than the file's data")
            values = np.zeros((count, width), dtype=dtype)
        sparse = accessor.get("sparse")
        if sparse is not None:
            values = self._apply_sparse(values, sparse, dtype, width, count, here)
        with np.errstate(invalid="ignore", over="ignore"):  # NaN and inf are reported by finite()
            if normalized:
                values = _normalized_to_float(values)
            elif component == 5126:
                values = values.astype(np.float64)
            else:
                values = values.astype(np.int64)
        if kind == "MAT4":
            values = values.reshape(-1, 4, 4).transpose(0, 2, 1)  # glTF stores columns
        return values

    def _apply_sparse(self, values, sparse, dtype, width, count, here) -> np.ndarray:
        if not isinstance(sparse, dict):
            raise self.error(f"{here}.sparse must be an object")
        n = self.integer(sparse, "count", f"{here}.sparse", minimum=1, maximum=count)
        indices, new = sparse.get("indices"), sparse.get("values")
        if not isinstance(indices, dict) or not isinstance(new, dict):
            raise self.error(f"{here}.sparse needs indices and values objects")
        index_type = indices.get("componentType")
        if not _is_int(index_type) or index_type not in SPARSE_INDEX_TYPES:
            raise self.error(f"{here}.sparse.indices.componentType = {index_type!r} must be an unsigned integer type")
        rows = self._elements(indices.get("bufferView"), self.integer(indices, "byteOffset", f"{here}.sparse.indices",
                                                                      default=0),
                              n, COMPONENT_TYPES[index_type], 1, f"{here}.sparse.indices", strided=False)[:, 0]
        rows = rows.astype(np.int64)
        if (np.diff(rows) <= 0).any() or rows[-1] >= count:
            raise self.error(f"{here}.sparse.indices must be strictly increasing and below count {count}")
        replacement = self._elements(new.get("bufferView"), self.integer(new, "byteOffset", f"{here}.sparse.values",
                                                                         default=0),
                                     n, dtype, width, f"{here}.sparse.values", strided=False)
        values = values.copy()
        values[rows] = replacement
        return values

    def finite(self, values: np.ndarray, what: str) -> np.ndarray:
        if not np.isfinite(values).all():
            raise self.error(f"{what} has values that are not finite (NaN or infinite)")
        return values


def _normalized_to_float(values: np.ndarray) -> np.ndarray:
    kind = values.dtype
    scale = {np.dtype("<u1"): 255.0, np.dtype("<u2"): 65535.0, np.dtype("<i1"): 127.0, np.dtype("<i2"): 32767.0}
    if kind in scale:
        return np.maximum(values.astype(np.float64) / scale[kind], -1.0)
    return values.astype(np.float64)


def sample_channel(times: np.ndarray, keys: np.ndarray, values: np.ndarray, interpolation: str,
                   rotation: bool) -> np.ndarray:
    """Samples one channel at `times` as the glTF spec says, vectorised (no
    per-frame Python); holds the first and last values outside the keys.
    `values` holds (in-tangent, value, out-tangent) triples for CUBICSPLINE."""
    if interpolation == "CUBICSPLINE":
        in_tangents, points, out_tangents = values[0::3], values[1::3], values[2::3]
    else:
        points = values
    n = len(keys)
    if n == 1:
        out = np.repeat(points[:1], len(times), axis=0).astype(np.float64)
    else:
        k = np.clip(np.searchsorted(keys, times, side="right") - 1, 0, n - 2)
        dt = keys[k + 1] - keys[k]
        u = np.clip((times - keys[k]) / dt, 0.0, 1.0)[:, None]
        a, b = points[k], points[k + 1]
        if interpolation == "STEP":
            out = a.copy()
        elif interpolation == "CUBICSPLINE":
            u2, u3 = u * u, u * u * u
            d = dt[:, None]
            out = ((2 * u3 - 3 * u2 + 1) * a + d * (u3 - 2 * u2 + u) * out_tangents[k]
                   + (-2 * u3 + 3 * u2) * b + d * (u3 - u2) * in_tangents[k + 1])
        elif rotation:
            out = _slerp(a, b, u[:, 0])
        else:
            out = (1 - u) * a + u * b
        out[times <= keys[0]] = points[0]
        out[times >= keys[-1]] = points[-1]
    if rotation:
        norm = np.linalg.norm(out, axis=1, keepdims=True)
        out = out / np.where(norm > 0, norm, 1.0)
    return out


def _slerp(a: np.ndarray, b: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Spherical interpolation of unit quaternions [N, 4], the shorter arc."""
    dot = (a * b).sum(1)
    b = np.where(dot[:, None] < 0, -b, b)
    dot = np.minimum(np.abs(dot), 1.0)
    theta = np.arccos(dot)
    sin_theta = np.sin(theta)
    small = sin_theta < 1e-6
    safe = np.where(small, 1.0, sin_theta)
    wa = np.where(small, 1 - u, np.sin((1 - u) * theta) / safe)
    wb = np.where(small, u, np.sin(u * theta) / safe)
    out = wa[:, None] * a + wb[:, None] * b
    return out / np.linalg.norm(out, axis=1, keepdims=True)


__all__: Sequence[str] = ("GltfDocument", "GltfError", "sample_channel")
