"""Reading and writing characters and motions (glTF 2.0)."""

from .gltf import GltfError, gltf_animations, load_gltf, load_gltf_motion, save_gltf

__all__ = ["GltfError", "gltf_animations", "load_gltf", "load_gltf_motion", "save_gltf"]
