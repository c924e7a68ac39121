"""URDF robots as characters: ``load_urdf``.

The file is parsed by ``yourdfpy`` (after a strict, entity-free XML check
here: a URDF is untrusted input). Each link becomes a joint of the same name
whose skeleton state is exactly the link's frame as the URDF defines it::

    frame(child link) = frame(parent link) * origin(xyz, rpy) * motion(q)

with ``motion(q)`` a rotation by ``q`` about the joint axis (revolute,
continuous), a translation by ``q`` along it (prismatic), or the identity
(fixed). In Momentum's joint model (``local = T(offset + t) R(pre) R_xyz(r)``):

* ``offset`` is the origin's xyz and ``pre_rotation`` its rpy;
* a prismatic joint drives ``tx, ty, tz`` with the coefficients
  ``R(rpy) @ axis`` (any axis, exact);
* a revolute joint about ``±x``, ``±y`` or ``±z`` drives that Euler channel
  with coefficient ``±1``. Any other (oblique) axis gets a helper joint
  ``<joint name>:axis`` whose pre-rotation also turns the x axis onto the
  joint axis, driving ``rx``; the link's joint below it undoes that turn, so
  the link frame stays exact.

Model parameters: one per movable joint, named after it, radians or metres;
``parameter_min/max`` from ``<limit>`` (continuous joints are unbounded, and
so is a ``<limit>`` that gives neither ``lower`` nor ``upper``: the spec's
default 0/0 would lock the joint; with one side given the other is 0).
``<mimic>`` joints have no parameter: they get ``multiplier`` times the
mimicked joint's coefficients, and ``offset`` becomes a joint-parameter
offset (``Character.joint_parameter_offsets``), both exact. ``floating`` and
``planar`` joints are refused.

Visual boxes, cylinders and spheres become the mesh, each rigidly bound to its
link; visual mesh files are skipped (listed in one warning).
"""

from __future__ import annotations

import io as _io
import math
import os
import warnings
from typing import Dict, List, Tuple, Union

import numpy as np
import torch

from .. import quaternion
from ..character import Character
from . import _files

MAX_BYTES = 64 << 20
MOVABLE = ("revolute", "continuous", "prismatic")
# |axis . e| above this counts as aligned with a coordinate axis (float noise in files).
ALIGNED = 1 - 1e-12


class UrdfError(ValueError):
    """A URDF file that is malformed, or that momentum_ops cannot represent."""


def _library():
    try:
        import yourdfpy
        from lxml import etree
    except ImportError as error:  # pragma: no cover - exercised only without the extra
        raise ImportError("momentum_ops.io.load_urdf needs yourdfpy: pip install yourdfpy") from error
    return yourdfpy, etree


def _parse(path: str):
    """The yourdfpy model of a checked file."""
    yourdfpy, etree = _library()
    fail = lambda message: UrdfError(f"{path}: {message}")  # noqa: E731
    data = _files.read_regular_file(path, fail, "the file", limit=MAX_BYTES + 1, follow_links=True)
    if len(data) > MAX_BYTES:
        raise fail(f"is larger than {MAX_BYTES >> 20} MiB")
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise fail("has a DOCTYPE or ENTITY declaration, which a URDF does not need (refused: entity expansion)")
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, load_dtd=False)
    try:
        root = etree.fromstring(data, parser=parser)
    except etree.XMLSyntaxError as error:
        raise fail(f"is not well-formed XML: {error}") from None
    if root.tag != "robot":
        raise fail(f"the root element is <{root.tag}>, not <robot>")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return yourdfpy.URDF.load(_io.BytesIO(data), build_scene_graph=False, load_meshes=False,
                                      load_collision_meshes=False, build_collision_scene_graph=False)
    except Exception as error:  # noqa: BLE001 - the parser's own errors, reworded
        raise fail(f"cannot be read as a URDF: {type(error).__name__}: {error}") from None


def _finite(values, what: str, path: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if not np.isfinite(array).all():
        raise UrdfError(f"{path}: {what} has values that are not finite")
    return array


def _tree(robot, path: str):
    """(links parents first, the joint whose child each link is)."""
    links = [link.name for link in robot.links]
    if len(set(links)) != len(links):
        duplicate = next(n for i, n in enumerate(links) if n in links[:i])
        raise UrdfError(f"{path}: two links are named {duplicate!r}")
    if not links:
        raise UrdfError(f"{path}: the robot has no link")
    names = [joint.name for joint in robot.joints]
    if len(set(names)) != len(names):
        duplicate = next(n for i, n in enumerate(names) if n in names[:i])
        raise UrdfError(f"{path}: two joints are named {duplicate!r}")
    known = set(links)
    parent_joint: Dict[str, object] = {}
    children: Dict[str, List[str]] = {name: [] for name in links}
    for joint in robot.joints:
        for role, link in (("parent", joint.parent), ("child", joint.child)):
            if link not in known:
                raise UrdfError(f"{path}: joint {joint.name!r} names {role} link {link!r}, which does not exist")
        if joint.child in parent_joint:
            raise UrdfError(f"{path}: link {joint.child!r} is the child of joints {parent_joint[joint.child].name!r} "
                            f"and {joint.name!r}; a link has one parent joint")
        parent_joint[joint.child] = joint
        children[joint.parent].append(joint.child)
    roots = [name for name in links if name not in parent_joint]
    if len(roots) != 1:
        raise UrdfError(f"{path}: the links must form one tree; found {len(roots)} root links {roots[:5]}"
                        + (" (a cycle)" if not roots else ""))
    order, stack = [], [roots[0]]
    while stack:
        link = stack.pop()
        order.append(link)
        stack.extend(reversed(children[link]))
    if len(order) != len(links):
        cycle = sorted(known - set(order))[:5]
        raise UrdfError(f"{path}: links {cycle} are not reached from the root {roots[0]!r} (a cycle)")
    return order, parent_joint


def _rotation_taking_x_to(axis: np.ndarray) -> np.ndarray:
    """A unit quaternion (xyzw) rotating (1, 0, 0) onto the unit `axis`."""
    x = np.array([1.0, 0.0, 0.0])
    c = float(np.dot(x, axis))
    if c < -ALIGNED:
        return np.array([0.0, 0.0, 1.0, 0.0])  # half turn about z
    v = np.cross(x, axis)
    q = np.array([v[0], v[1], v[2], 1.0 + c])
    return q / np.linalg.norm(q)


def _quaternion_of(matrix: np.ndarray) -> np.ndarray:
    q = quaternion.from_matrix(torch.from_numpy(np.ascontiguousarray(matrix))).numpy()
    return q / np.linalg.norm(q)


def load_urdf(path: Union[str, os.PathLike], dtype: torch.dtype = torch.float32) -> Character:
    """Reads a URDF robot as a Character (see the module docstring for the
    mapping). The joints are the links (parents first, plus a helper joint
    above each oblique revolute axis); the model parameters are the movable
    URDF joints in file order.

    Raises UrdfError (a ValueError) naming the file and the element for a
    malformed file and for what the model cannot represent (floating and
    planar joints, a mimic cycle); FileNotFoundError when ``path`` does not
    exist.
    """
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"load_urdf: dtype must be torch.float32 or torch.float64, got {dtype}")
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(path)
    robot = _parse(path).robot
    order, parent_joint = _tree(robot, path)

    joint_names: List[str] = []
    parents: List[int] = []
    offsets: List[np.ndarray] = []
    pre_rotations: List[np.ndarray] = []
    index_of_link: Dict[str, int] = {}
    # Where each movable URDF joint acts: (character joint, channel rows, coefficients).
    drives: Dict[str, tuple] = {}

    def add(name, parent, offset, rotation):
        joint_names.append(name)
        parents.append(parent)
        offsets.append(offset)
        pre_rotations.append(rotation)
        return len(joint_names) - 1

    for link in order:
        joint = parent_joint.get(link)
        if joint is None:
            index_of_link[link] = add(link, -1, np.zeros(3), np.array([0.0, 0.0, 0.0, 1.0]))
            continue
        where = f"joint {joint.name!r}"
        kind = joint.type
        if kind in ("floating", "planar"):
            raise UrdfError(f"{path}: {where} is {kind}; momentum_ops supports revolute, continuous, prismatic and "
                            "fixed joints")
        if kind not in MOVABLE + ("fixed",):
            raise UrdfError(f"{path}: {where} has type {kind!r}; URDF joint types are revolute, continuous, "
                            "prismatic, fixed, floating, planar")
        origin = _finite(joint.origin if joint.origin is not None else np.eye(4), f"{where} origin", path)
        rotation = origin[:3, :3]
        if np.abs(rotation.T @ rotation - np.eye(3)).max() > 1e-9:
            raise UrdfError(f"{path}: {where} origin is not a rotation")
        offset, pre = origin[:3, 3].copy(), _quaternion_of(rotation)
        parent = index_of_link[joint.parent]
        if kind == "fixed":
            index_of_link[link] = add(link, parent, offset, pre)
            continue
        axis = _finite(joint.axis if joint.axis is not None else [1.0, 0.0, 0.0], f"{where} axis", path)
        norm = float(np.linalg.norm(axis))
        if axis.shape != (3,) or norm < 1e-9:
            raise UrdfError(f"{path}: {where} has a zero or malformed axis {axis.tolist()}")
        axis = axis / norm
        if kind == "prismatic":
            j = index_of_link[link] = add(link, parent, offset, pre)
            drives[joint.name] = (j, [0, 1, 2], rotation @ axis)
            continue
        aligned = np.abs(axis) > ALIGNED
        if aligned.any():
            c = int(np.argmax(aligned))
            j = index_of_link[link] = add(link, parent, offset, pre)
            drives[joint.name] = (j, [3 + c], np.array([np.sign(axis[c])]))
        else:
            turn = _rotation_taking_x_to(axis)
            helper_rotation = quaternion.multiply(torch.from_numpy(pre), torch.from_numpy(turn)).numpy()
            helper = add(f"{joint.name}:axis", parent, offset, helper_rotation)
            back = quaternion.conjugate(torch.from_numpy(turn)).numpy()
            index_of_link[link] = add(link, helper, np.zeros(3), back)
            drives[joint.name] = (helper, [3], np.array([1.0]))

    # Parameters: the movable joints that do not mimic another, in file order.
    movable = [j for j in robot.joints if j.type in MOVABLE]
    parameter_names = [j.name for j in movable if j.mimic is None]
    column = {name: p for p, name in enumerate(parameter_names)}
    by_name = {j.name: j for j in movable}
    J, P = len(joint_names), len(parameter_names)
    transform: Dict[Tuple[int, int], float] = {}  # (joint parameter row, model parameter) -> coefficient
    joint_offsets = np.zeros(7 * J)

    def source(name, seen):
        """(parameter, multiplier, offset): the joint's value as a * theta_p + b."""
        joint = by_name[name]
        if joint.mimic is None:
            return column[name], 1.0, 0.0
        target = joint.mimic.joint
        if target not in by_name:
            raise UrdfError(f"{path}: joint {name!r} mimics {target!r}, which is not a movable joint")
        if target in seen:
            raise UrdfError(f"{path}: joint {name!r} is part of a mimic cycle")
        multiplier = float(_finite(joint.mimic.multiplier if joint.mimic.multiplier is not None else 1.0,
                                   f"joint {name!r} mimic multiplier", path))
        shift = float(_finite(joint.mimic.offset if joint.mimic.offset is not None else 0.0,
                              f"joint {name!r} mimic offset", path))
        p, a, b = source(target, seen | {name})
        return p, multiplier * a, multiplier * b + shift

    lower = np.full(P, -np.inf)
    upper = np.full(P, np.inf)
    for joint in movable:
        p, a, b = source(joint.name, {joint.name})
        j, rows, coefficients = drives[joint.name]
        for row, coefficient in zip(rows, coefficients):
            transform[(7 * j + row, p)] = transform.get((7 * j + row, p), 0.0) + a * coefficient
            joint_offsets[7 * j + row] += b * coefficient
        if joint.mimic is None and joint.type != "continuous" and joint.limit is not None:
            low, high = joint.limit.lower, joint.limit.upper
            if low is None and high is None:  # a <limit> of effort and velocity only: no position limit
                low, high = -np.inf, np.inf
            low = 0.0 if low is None else float(low)  # one side given: the spec's default 0 for the other
            high = 0.0 if high is None else float(high)
            if math.isnan(low) or math.isnan(high) or low > high:
                raise UrdfError(f"{path}: joint {joint.name!r} has limits lower={low} > upper={high}")
            lower[column[joint.name]], upper[column[joint.name]] = low, high

    vertices, faces, skin_indices = _visual_meshes(robot, index_of_link, path)
    character = Character(
        joint_names=joint_names,
        parents=torch.tensor(parents, dtype=torch.int64),
        offsets=torch.tensor(np.stack(offsets), dtype=dtype),
        pre_rotations=torch.tensor(np.stack(pre_rotations), dtype=dtype),
        parameter_transform=torch.sparse_coo_tensor(
            torch.tensor(list(transform.keys()), dtype=torch.int64).reshape(-1, 2).t(),
            torch.tensor(list(transform.values()), dtype=torch.float64), (7 * J, P),
            check_invariants=True).to(dtype),
        parameter_names=parameter_names,
        parameter_min=torch.tensor(lower, dtype=dtype),
        parameter_max=torch.tensor(upper, dtype=dtype),
        joint_parameter_offsets=torch.tensor(joint_offsets, dtype=dtype),
    )
    if len(vertices):
        # Bind the visuals at the zero configuration, where each link's frame
        # is its rest frame: rest vertices are world points of that pose.
        state = character.joint_parameters_to_skeleton_state(
            character.model_parameters_to_joint_parameters(torch.zeros(P, dtype=torch.float64).to(dtype)))
        world = _state_matrices(state.double()).numpy()
        points = np.einsum("vij,vj->vi", world[skin_indices], np.concatenate([vertices, np.ones((len(vertices), 1))], 1))
        character = Character(
            joint_names=joint_names, parents=character.parents, offsets=character.offsets,
            pre_rotations=character.pre_rotations, parameter_transform=character.parameter_transform_sparse,
            parameter_names=parameter_names, parameter_min=character.parameter_min,
            parameter_max=character.parameter_max, joint_parameter_offsets=character.joint_parameter_offsets,
            inverse_bind_pose=torch.tensor(np.linalg.inv(world), dtype=dtype),
            rest_vertices=torch.tensor(points[:, :3], dtype=dtype), faces=torch.tensor(faces, dtype=torch.int64),
            skin_indices=torch.tensor(skin_indices[:, None], dtype=torch.int64),
            skin_weights=torch.ones(len(points), 1, dtype=dtype),
        )
    return character


def _state_matrices(state: torch.Tensor) -> torch.Tensor:
    out = torch.zeros(*state.shape[:-1], 4, 4, dtype=state.dtype)
    out[..., :3, :3] = state[..., 7:8, None] * quaternion.to_matrix(state[..., 3:7])
    out[..., :3, 3] = state[..., :3]
    out[..., 3, 3] = 1
    return out


def _visual_meshes(robot, index_of_link, path):
    """Boxes, cylinders and spheres of the links' visuals, in each link's
    frame: (vertices [V, 3], faces [F, 3], the joint of each vertex [V])."""
    import trimesh  # a dependency of yourdfpy

    vertices, faces, owners, skipped = [], [], [], []
    count = 0
    for link in robot.links:
        for visual in link.visuals or []:
            geometry = visual.geometry
            if geometry is None:
                continue
            if geometry.box is not None:
                mesh = trimesh.creation.box(extents=_finite(geometry.box.size, f"link {link.name!r} box", path))
            elif geometry.cylinder is not None:
                radius = float(_finite(geometry.cylinder.radius, f"link {link.name!r} cylinder", path))
                length = float(_finite(geometry.cylinder.length, f"link {link.name!r} cylinder", path))
                mesh = trimesh.creation.cylinder(radius=radius, height=length, sections=24)
            elif geometry.sphere is not None:
                radius = float(_finite(geometry.sphere.radius, f"link {link.name!r} sphere", path))
                mesh = trimesh.creation.icosphere(subdivisions=2, radius=radius)
            else:
                if geometry.mesh is not None:
                    skipped.append(geometry.mesh.filename)
                continue
            origin = _finite(visual.origin if visual.origin is not None else np.eye(4),
                             f"link {link.name!r} visual origin", path)
            points = np.asarray(mesh.vertices) @ origin[:3, :3].T + origin[:3, 3]
            vertices.append(points)
            faces.append(np.asarray(mesh.faces, dtype=np.int64) + count)
            owners.append(np.full(len(points), index_of_link[link.name], dtype=np.int64))
            count += len(points)
    if skipped:
        warnings.warn(f"{path}: {len(skipped)} visual mesh files are not loaded (boxes, cylinders and spheres "
                      f"are); e.g. {skipped[0]!r}", stacklevel=3)
    if not vertices:
        return np.zeros((0, 3)), np.zeros((0, 3), np.int64), np.zeros(0, np.int64)
    return np.concatenate(vertices), np.concatenate(faces), np.concatenate(owners)
