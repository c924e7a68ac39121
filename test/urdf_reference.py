"""An independent URDF kinematics reference, written from the URDF spec with
xml.etree and numpy only (no yourdfpy, no momentum_ops):

    frame(child) = frame(parent) @ origin(xyz, rpy) @ motion(q)
    origin: translation xyz, rotation Rz(yaw) Ry(pitch) Rx(roll)
    motion: revolute/continuous: rotation by q about the unit axis (Rodrigues)
            prismatic: translation q * axis; fixed: identity
    mimic:  q = multiplier * q(mimicked) + offset
"""

import xml.etree.ElementTree as ET

import numpy as np


def _vector(element, attribute, default):
    if element is None or element.get(attribute) is None:
        return np.asarray(default, dtype=float)
    return np.asarray([float(v) for v in element.get(attribute).split()])


def rpy_matrix(roll, pitch, yaw):
    cr, sr, cp, sp, cy, sy = np.cos(roll), np.sin(roll), np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw)
    rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    return rz @ ry @ rx


def axis_angle(axis, angle):
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


class Urdf:
    def __init__(self, path):
        root = ET.parse(path).getroot()
        self.links = [link.get("name") for link in root.findall("link")]
        self.joints = []
        for joint in root.findall("joint"):
            origin = joint.find("origin")
            axis = _vector(joint.find("axis"), "xyz", [1, 0, 0])
            mimic = joint.find("mimic")
            self.joints.append(dict(
                name=joint.get("name"), type=joint.get("type"),
                parent=joint.find("parent").get("link"), child=joint.find("child").get("link"),
                xyz=_vector(origin, "xyz", [0, 0, 0]), rpy=_vector(origin, "rpy", [0, 0, 0]),
                axis=axis / np.linalg.norm(axis),
                mimic=None if mimic is None else (mimic.get("joint"), float(mimic.get("multiplier", 1)),
                                                  float(mimic.get("offset", 0))),
                limit=joint.find("limit")))
        self.movable = [j["name"] for j in self.joints if j["type"] in ("revolute", "continuous", "prismatic")
                        and j["mimic"] is None]

    def values(self, q):
        """Every movable joint's value from the independent ones (dict name -> q)."""
        out = dict(q)
        for _ in self.joints:  # mimic chains resolve in at most this many passes
            for j in self.joints:
                if j["mimic"] is not None and j["mimic"][0] in out:
                    out[j["name"]] = j["mimic"][1] * out[j["mimic"][0]] + j["mimic"][2]
        return out

    def frames(self, q):
        """4x4 world frame of every link for the configuration q (dict)."""
        q = self.values(q)
        by_child = {j["child"]: j for j in self.joints}
        frames = {}

        def frame(link):
            if link not in frames:
                j = by_child.get(link)
                if j is None:
                    frames[link] = np.eye(4)
                else:
                    origin = np.eye(4)
                    origin[:3, :3] = rpy_matrix(*j["rpy"])
                    origin[:3, 3] = j["xyz"]
                    motion = np.eye(4)
                    value = q.get(j["name"], 0.0)
                    if j["type"] in ("revolute", "continuous"):
                        motion[:3, :3] = axis_angle(j["axis"], value)
                    elif j["type"] == "prismatic":
                        motion[:3, 3] = value * j["axis"]
                    frames[link] = frame(j["parent"]) @ origin @ motion
            return frames[link]

        return {link: frame(link) for link in self.links}
