"""Reading and writing characters and motions (glTF 2.0) and reading URDF robots.

Files are untrusted input: every loader checks a file against its format's
spec before it reads or allocates anything, reads other files only from
inside the file's folder (regular files only), and raises ``GltfError`` (a
``ValueError``) naming the file and the object for anything malformed.
"""

from ._gltf_document import GltfError
from .gltf import (
    gltf_animations,
    load_gltf,
    load_gltf_blend_weights,
    load_gltf_model_motion,
    load_gltf_motion,
    save_gltf,
)
from .urdf import UrdfError, load_urdf

__all__ = ["GltfError", "UrdfError", "gltf_animations", "load_gltf", "load_gltf_blend_weights",
           "load_gltf_model_motion", "load_gltf_motion", "load_urdf", "save_gltf"]
