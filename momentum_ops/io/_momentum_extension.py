"""Momentum's glTF extension ``FB_momentum``: the parameter transform, the
parameter limits and a model-parameter motion, as Momentum's own glTF IO
(``momentum/io/gltf``) reads and writes them.

Units. Momentum works in centimetres and converts the file's metres on
reading; this library keeps the file's metres. Values the extension stores in
Momentum's units are converted here, exactly and both ways:

* a parameter that drives only translation channels (``tx``, ``ty``, ``tz``)
  is a length: its motion values and its ``minmax`` limits are divided by 100;
* any other parameter keeps its value (radians, log2 scale, blend weights), and
  its coefficients on translation channels are divided by 100 instead;
* joint offsets (``motion.offsets``) on translation channels are divided by 100.

So joint translations come out in metres whatever the parameter, and
``save_gltf`` multiplies back by 100.
"""

from __future__ import annotations

import math
import warnings
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ._gltf_document import GltfDocument

EXTENSION = "FB_momentum"
CHANNELS = ("tx", "ty", "tz", "rx", "ry", "rz", "sc")
CENTIMETRES_PER_METRE = 100.0
# Momentum's default when the extension has no fps.
DEFAULT_FPS = 120.0
# JSON has no infinity: a one-sided limit is written with float32's largest
# value on the open side, and read back as unbounded.
UNBOUNDED = 3.4e38


def extension(file: GltfDocument) -> Optional[dict]:
    """The top-level FB_momentum object, or None."""
    extensions = file.json.get("extensions")
    if extensions is None:
        return None
    if not isinstance(extensions, dict):
        raise file.error("extensions must be an object")
    value = extensions.get(EXTENSION)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise file.error(f"extensions.{EXTENSION} must be an object")
    return value


def _strings(file: GltfDocument, value, where: str, unique: bool = True) -> List[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise file.error(f"{where} must be an array of strings")
    if unique and len(set(value)) != len(value):
        duplicate = next(v for i, v in enumerate(value) if v in value[:i])
        raise file.error(f"{where} names {duplicate!r} twice")
    return list(value)


def _number(file: GltfDocument, value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise file.error(f"{where} = {value!r} must be a finite number")
    return float(value)


def length_parameters(index: np.ndarray, values: np.ndarray, parameters: int) -> np.ndarray:
    """[P] bool: parameters that drive translation channels and nothing else
    (from the transform's entries: index [2, nnz] rows and columns, values)."""
    rows, columns = index[0][values != 0], index[1][values != 0]
    on_translation = np.zeros(parameters, dtype=bool)
    on_other = np.zeros(parameters, dtype=bool)
    on_translation[columns[rows % 7 < 3]] = True
    on_other[columns[rows % 7 >= 3]] = True
    return on_translation & ~on_other


def _entries(character):
    """The character's transform entries as numpy (index [2, nnz], values)."""
    return character.transform_index.numpy(), character.transform_values.detach().cpu().double().numpy()


def read_transform(file: GltfDocument, ext: dict, joint_names: Sequence[str]):
    """(parameter names, transform [7J, P] in metres as a sparse COO tensor
    (float64), parameter_min, parameter_max)."""
    where = f"extensions.{EXTENSION}.transform"
    spec = ext["transform"]
    if not isinstance(spec, dict):
        raise file.error(f"{where} must be an object")
    if "parameters" not in spec or "joints" not in spec:
        raise file.error(f"{where} needs 'parameters' and 'joints'")
    names = _strings(file, spec["parameters"], f"{where}.parameters")
    column = {name: i for i, name in enumerate(names)}
    if len(set(joint_names)) != len(joint_names):
        raise file.error(f"{where}: the skeleton's joint names are not unique, so the transform's joint names "
                         "cannot be resolved")
    row_of_joint = {name: j for j, name in enumerate(joint_names)}
    joints = spec["joints"]
    if not isinstance(joints, dict):
        raise file.error(f"{where}.joints must be an object (joint name -> channel -> parameter -> coefficient)")
    entries: Dict[Tuple[int, int], float] = {}
    for joint, channels in joints.items():
        here = f"{where}.joints[{joint!r}]"
        if joint not in row_of_joint:
            raise file.error(f"{here}: no joint of the skeleton is named {joint!r}")
        if not isinstance(channels, dict):
            raise file.error(f"{here} must be an object (channel -> parameter -> coefficient)")
        for channel, terms in channels.items():
            if channel not in CHANNELS:
                raise file.error(f"{here}: unknown channel {channel!r}; channels are {list(CHANNELS)}")
            if not isinstance(terms, dict):
                raise file.error(f"{here}[{channel!r}] must be an object (parameter -> coefficient)")
            for parameter, coefficient in terms.items():
                if parameter not in column:
                    raise file.error(f"{here}[{channel!r}] names parameter {parameter!r}, which is not in "
                                     f"{where}.parameters")
                value = _number(file, coefficient, f"{here}[{channel!r}][{parameter!r}]")
                entries[(7 * row_of_joint[joint] + CHANNELS.index(channel), column[parameter])] = value
    index = np.array(list(entries.keys()), dtype=np.int64).reshape(-1, 2).T
    values = np.array(list(entries.values()), dtype=np.float64)
    lengths = length_parameters(index, values, len(names))
    # Non-length parameters keep their values: their translation coefficients take the unit change.
    values[(index[0] % 7 < 3) & ~lengths[index[1]]] /= CENTIMETRES_PER_METRE
    lower, upper = read_limits(file, ext, names, lengths)
    transform = torch.sparse_coo_tensor(torch.from_numpy(index), torch.from_numpy(values),
                                        (7 * len(joint_names), len(names)), check_invariants=True)
    return names, transform, lower, upper


def _limit_pair(file: GltfDocument, value, where: str):
    flat = value
    while isinstance(flat, list) and len(flat) == 1 and isinstance(flat[0], list):
        flat = flat[0]
    if isinstance(flat, list) and len(flat) == 2 and all(isinstance(v, list) and len(v) == 1 for v in flat):
        flat = [flat[0][0], flat[1][0]]
    if not isinstance(flat, list) or len(flat) != 2:
        raise file.error(f"{where} must hold two numbers [min, max], got {value!r}")
    low, high = (_number(file, v, where) for v in flat)
    low = -np.inf if low <= -UNBOUNDED else low
    high = np.inf if high >= UNBOUNDED else high
    if low > high:
        raise file.error(f"{where} = [{low}, {high}]: min exceeds max")
    return low, high


def read_limits(file: GltfDocument, ext: dict, names: Sequence[str], lengths: np.ndarray):
    """``minmax`` limits as bounds [P] (metres for length parameters); several
    limits on one parameter intersect. Other limit types are left out with a
    warning naming them."""
    lower = np.full(len(names), -np.inf)
    upper = np.full(len(names), np.inf)
    limits = ext.get("parameterLimits", [])
    where = f"extensions.{EXTENSION}.parameterLimits"
    if not isinstance(limits, list) or not all(isinstance(x, dict) for x in limits):
        raise file.error(f"{where} must be an array of objects")
    column = {name: i for i, name in enumerate(names)}
    skipped: Dict[str, int] = {}
    for i, limit in enumerate(limits):
        kind = limit.get("type")
        if not isinstance(kind, str):
            raise file.error(f"{where}[{i}].type must be a string")
        if kind != "minmax":
            skipped[kind] = skipped.get(kind, 0) + 1
            continue
        parameter = limit.get("parameter")
        if parameter not in column:
            raise file.error(f"{where}[{i}].parameter = {parameter!r} is not a parameter of the transform")
        low, high = _limit_pair(file, limit.get("limits"), f"{where}[{i}].limits")
        p = column[parameter]
        if lengths[p]:
            low, high = low / CENTIMETRES_PER_METRE, high / CENTIMETRES_PER_METRE
        lower[p], upper[p] = max(lower[p], low), min(upper[p], high)
        if lower[p] > upper[p]:
            raise file.error(f"{where}: the minmax limits of {parameter!r} do not overlap")
    if skipped:
        listed = ", ".join(f"{count} {kind!r}" for kind, count in sorted(skipped.items()))
        warnings.warn(f"{file.path}: FB_momentum parameter limits other than 'minmax' are not supported and were "
                      f"left out ({listed}); 'minmax' limits became parameter_min/parameter_max", stacklevel=4)
    return lower, upper


def _motion_object(file: GltfDocument, ext: dict) -> Optional[dict]:
    motion = ext.get("motion")
    if motion is not None and not isinstance(motion, dict):
        raise file.error(f"extensions.{EXTENSION}.motion must be an object")
    return motion


def read_offsets(file: GltfDocument, ext: dict, joint_names: Sequence[str]) -> Optional[np.ndarray]:
    """The joint-parameter offsets Momentum adds to every frame's joint
    parameters (``motion.offsets``, by ``motion.jointNames``), [7J] with
    translations in metres; None when the file has none."""
    motion = _motion_object(file, ext)
    if motion is None or motion.get("offsets") is None:
        return None
    where = f"extensions.{EXTENSION}.motion"
    names = _strings(file, motion.get("jointNames", []), f"{where}.jointNames")
    values = file.accessor(motion["offsets"], "FB_momentum motion", f"{where}.offsets")[:, 0]
    if len(values) != 7 * len(names):
        raise file.error(f"{where}.offsets has {len(values)} values; {len(names)} joints need {7 * len(names)}")
    values = file.finite(values.reshape(-1, 7), f"{where}.offsets")
    offsets = np.zeros((len(joint_names), 7))
    row = {name: j for j, name in enumerate(joint_names)}
    unknown = [name for name in names if name not in row]
    if unknown:
        warnings.warn(f"{file.path}: the motion's offsets name joints the character lacks ({unknown[:5]}); "
                      "they were left out", stacklevel=4)
    for i, name in enumerate(names):
        if name in row:
            offsets[row[name]] = values[i]
    offsets[:, :3] /= CENTIMETRES_PER_METRE
    return offsets.reshape(-1)


def read_motion(file: GltfDocument, ext: dict, character):
    """(model parameters [F, P] in the character's parameter order and
    units, fps). Parameters the character lacks are dropped with a warning and
    ones the file lacks are zero (as Momentum maps a motion onto a
    character). Momentum adds the file's joint offsets to every frame's joint
    parameters; a character loaded from the file carries them
    (``joint_parameter_offsets``). For another character, the difference
    between the file's offsets and the character's is folded into the model
    parameters, which is exact when it lies in the transform's range (else
    GltfError)."""
    where = f"extensions.{EXTENSION}.motion"
    parameter_names, joint_names = list(character.parameter_names), list(character.joint_names)
    character_offsets = character.joint_parameter_offsets.detach().cpu().double().numpy()
    motion = _motion_object(file, ext)
    if motion is None:
        raise file.error(f"has no {where}")
    fps = _number(file, ext.get("fps", DEFAULT_FPS), f"extensions.{EXTENSION}.fps")
    if not fps > 0:
        raise file.error(f"extensions.{EXTENSION}.fps = {fps} must be > 0")
    frames = file.integer(motion, "nframes", where, default=0)
    P = len(parameter_names)
    out = np.zeros((frames, P))
    if frames and motion.get("poses") is not None:
        names = _strings(file, motion.get("parameterNames", []), f"{where}.parameterNames")
        poses = file.accessor(motion["poses"], "FB_momentum motion", f"{where}.poses")[:, 0]
        if len(poses) != frames * len(names):
            raise file.error(f"{where}.poses has {len(poses)} values; {frames} frames of {len(names)} parameters "
                             f"need {frames * len(names)}")
        poses = file.finite(poses.reshape(frames, len(names)), f"{where}.poses")  # frame-major (Eigen column-major)
        column = {name: i for i, name in enumerate(parameter_names)}
        missing = [name for name in names if name not in column]
        if missing:
            warnings.warn(f"{file.path}: the motion's parameters {missing[:5]}{'...' if len(missing) > 5 else ''} "
                          "are not parameters of the character and were left out", stacklevel=3)
        lengths = length_parameters(*_entries(character), P)
        for i, name in enumerate(names):
            if name in column:
                p = column[name]
                out[:, p] = poses[:, i] / (CENTIMETRES_PER_METRE if lengths[p] else 1.0)
    offsets = read_offsets(file, ext, joint_names)
    difference = (np.zeros_like(character_offsets) if offsets is None else offsets) - character_offsets
    if frames and np.abs(difference).max(initial=0) > 1e-6 * (1 + np.abs(character_offsets).max(initial=0)):
        transform = character.parameter_transform.detach().cpu().double().numpy()
        shift, *_ = np.linalg.lstsq(transform, difference, rcond=None)
        residual = np.abs(transform @ shift - difference).max()
        if residual > 1e-6 * (1 + np.abs(difference).max()):
            raise file.error(f"{where}.offsets differ from the character's joint_parameter_offsets on joint "
                             f"parameters no model parameter drives (residual {residual:.3g}); load the character "
                             "from this file to use its offsets")
        out += shift[None]
    return out, fps


def write(character, model_motion: Optional[np.ndarray], fps: float, add_accessor) -> dict:
    """The FB_momentum object for a character (and a model-parameter motion
    [F, P] in this library's units), in Momentum's units."""
    index, values = _entries(character)
    names = list(character.parameter_names)
    joint_names = list(character.joint_names)
    lengths = length_parameters(index, values, len(names))
    joints: Dict[str, Dict[str, Dict[str, float]]] = {}
    for r, c, value in zip(index[0].tolist(), index[1].tolist(), values.tolist()):
        if value == 0:
            continue
        joint, channel = divmod(r, 7)
        if channel < 3 and not lengths[c]:
            value *= CENTIMETRES_PER_METRE
        joints.setdefault(joint_names[joint], {}).setdefault(CHANNELS[channel], {})[names[c]] = value
    scale = np.where(lengths, CENTIMETRES_PER_METRE, 1.0)
    limits = []
    lower = character.parameter_min.detach().cpu().double().numpy() * scale
    upper = character.parameter_max.detach().cpu().double().numpy() * scale
    for p, name in enumerate(names):
        if np.isfinite(lower[p]) or np.isfinite(upper[p]):
            low = float(lower[p]) if np.isfinite(lower[p]) else -UNBOUNDED
            high = float(upper[p]) if np.isfinite(upper[p]) else UNBOUNDED
            limits.append({"type": "minmax", "parameter": name, "limits": [[low, high]], "weight": 1.0})
    out = {"transform": {"parameters": names, "joints": joints}, "parameterLimits": limits, "fps": float(fps)}
    offsets = character.joint_parameter_offsets.detach().cpu().double().numpy().reshape(-1, 7).copy()
    offsets[:, :3] *= CENTIMETRES_PER_METRE
    motion = {}
    if model_motion is not None:
        poses = (np.asarray(model_motion, dtype=np.float64) * scale[None]).astype(np.float32)
        motion.update(nframes=int(poses.shape[0]), parameterNames=names, poses=add_accessor(poses.reshape(-1, 1)))
    if np.any(offsets != 0):
        motion.update(jointNames=joint_names, offsets=add_accessor(offsets.reshape(-1, 1)))
        motion.setdefault("nframes", 0)
    if motion:
        out["motion"] = motion
    return out
