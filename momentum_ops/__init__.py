"""momentum_ops: forward kinematics, skinning and inverse kinematics as PyTorch
dispatcher ops (``torch.ops.momentum.*``), with CPU and CUDA kernels.

Importing the package checks the installed torch against the build record and
then loads the compiled library; a mismatch raises ImportError with the fix.
Conventions (layouts, formulas) follow Meta's Momentum: see docs/conventions.md.
"""

import os as _os

import torch as _torch

from . import _compat

_PACKAGE_DIR = _os.path.dirname(_os.path.abspath(__file__))
LIBRARY_PATH = _os.path.join(_PACKAGE_DIR, "_C.so")

try:
    from ._build_info import BUILD_INFO
except ImportError:  # a source tree that was never built
    BUILD_INFO = None
if BUILD_INFO is None or not _os.path.exists(LIBRARY_PATH):
    raise ImportError(_compat.not_built_message(_PACKAGE_DIR))

_compat.check_torch(BUILD_INFO, _torch.__version__, _torch.version.cuda)
try:
    _torch.ops.load_library(LIBRARY_PATH)
except OSError as _error:
    raise ImportError(
        _compat.load_failure_message(BUILD_INFO, _torch.__version__, LIBRARY_PATH, _error)
    ) from _error

__version__ = BUILD_INFO["version"]

from . import io, quaternion, skel_state  # noqa: E402  (io reads glTF; pygltflib loads on first use)
from .character import Character  # noqa: E402
from .fk import (  # noqa: E402
    joint_parameters_to_local_skeleton_state,
    joint_parameters_to_skeleton_state,
    model_parameters_to_joint_parameters,
    skeleton_state_to_joint_parameters,
)
from .ik import IKResult, position_residuals_and_jacobian, solve_ik  # noqa: E402
from .mesh import compute_vertex_normals  # noqa: E402
from .skinning import skin_blended_points, skin_points  # noqa: E402

__all__ = [
    "BUILD_INFO",
    "Character",
    "IKResult",
    "compute_vertex_normals",
    "io",
    "joint_parameters_to_local_skeleton_state",
    "joint_parameters_to_skeleton_state",
    "model_parameters_to_joint_parameters",
    "position_residuals_and_jacobian",
    "quaternion",
    "skel_state",
    "skeleton_state_to_joint_parameters",
    "skin_blended_points",
    "skin_points",
    "solve_ik",
]
