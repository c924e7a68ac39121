"""The Character: a skeleton, its parameterisation and a skinned mesh, as a
``torch.nn.Module`` whose tensors are buffers (so ``.to(device, dtype)``,
``state_dict``, ``torch.jit.script`` and ``torch.compile`` work).

``parents`` and ``transform_index`` stay on the CPU whatever device the module
moves to: the ops read the skeleton's topology and the transform's index on
the host, and a CPU copy spares them a device sync.
"""

from typing import List, Optional, Sequence

import torch

from . import _checks, skel_state
from . import parameter_transform as _transform

JOINT_PARAMETER_NAMES = ("tx", "ty", "tz", "rx", "ry", "rz", "sc")


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


class Character(torch.nn.Module):
    """A skinned character.

    Buffers (J joints, P model parameters, V vertices, F faces, K influences):

    ========================= =============== =========================================
    ``parents``               ``[J]`` int64   parent of each joint, ``-1`` for roots, parents first
    ``offsets``               ``[J, 3]``      translation in the parent's frame
    ``pre_rotations``         ``[J, 4]``      fixed rotation (xyzw) before the Euler rotation
    ``transform_index``       ``[2, nnz]`` int64 rows (joint parameter) and columns (model parameter)
    ``transform_values``      ``[nnz]``       of the sparse parameter transform ``[J*7, P]``:
                                              joint parameters = transform @ model parameters + offsets
    ``joint_parameter_offsets`` ``[J*7]``     those constant offsets (Momentum's identity offsets; default 0)
    ``parameter_min/_max``    ``[P]``         limits, ``±inf`` where there is none
    ``inverse_bind_pose``     ``[J, 4, 4]``   inverse of each joint's global matrix at the bind pose
    ``rest_vertices``         ``[V, 3]``      the mesh at the bind pose
    ``faces``                 ``[F, 3]`` int64 triangles
    ``skin_indices``          ``[V, K]`` int64 joints influencing each vertex
    ``skin_weights``          ``[V, K]``      their weights (0 for an unused slot)
    ``blend_shapes``          ``[S, V, 3]``   vertex offsets: rest + sum_s w_s * blend_shapes[s]
    ========================= =============== =========================================

    ``parameter_transform`` (a dense tensor, or a sparse COO/CSR one) is stored
    as its nonzero entries (``momentum_ops.parameter_transform``);
    ``Character.parameter_transform`` gives it back dense on request and
    ``parameter_transform_sparse`` as a sparse tensor. Change the transform
    by building a new Character or through ``load_state_dict``; to learn its
    values, make ``transform_values`` require grad (a small transform is also
    kept as a dense copy, used only while its values do not require grad).

    and the lists ``joint_names`` (J), ``parameter_names`` (P) and
    ``blend_shape_names`` (S). Every argument but the skeleton is optional: by
    default every joint parameter is a model parameter (``P = 7J``, identity
    transform), there are no limits, the bind pose is the rest pose (all
    parameters zero), and there is no mesh and no blend shape.
    """

    joint_names: List[str]
    parameter_names: List[str]
    blend_shape_names: List[str]
    has_joint_parameter_offsets: bool
    __jit_unused_properties__ = ["num_joints", "num_parameters", "num_vertices", "num_blend_shapes",
                                 "parameter_transform", "parameter_transform_sparse"]

    def __init__(
        self,
        joint_names: Sequence[str],
        parents: torch.Tensor,
        offsets: torch.Tensor,
        pre_rotations: torch.Tensor,
        parameter_transform: Optional[torch.Tensor] = None,
        parameter_names: Optional[Sequence[str]] = None,
        parameter_min: Optional[torch.Tensor] = None,
        parameter_max: Optional[torch.Tensor] = None,
        inverse_bind_pose: Optional[torch.Tensor] = None,
        rest_vertices: Optional[torch.Tensor] = None,
        faces: Optional[torch.Tensor] = None,
        skin_indices: Optional[torch.Tensor] = None,
        skin_weights: Optional[torch.Tensor] = None,
        blend_shapes: Optional[torch.Tensor] = None,
        blend_shape_names: Optional[Sequence[str]] = None,
        joint_parameter_offsets: Optional[torch.Tensor] = None,
    ):
        super().__init__()
        if offsets is None or pre_rotations is None or parents is None:
            missing = [n for n, v in (("parents", parents), ("offsets", offsets), ("pre_rotations", pre_rotations))
                       if v is None]
            raise ValueError(f"Character: {', '.join(missing)} must be given (got None)")
        joint_names = list(joint_names)
        _check(all(isinstance(n, str) for n in joint_names), "Character: joint_names must be strings")
        offsets = torch.as_tensor(offsets)
        dtype = offsets.dtype if offsets.is_floating_point() else torch.get_default_dtype()
        device = offsets.device
        J = len(joint_names)

        def floating(x, name, shape):
            x = torch.as_tensor(x, device=device)
            _check(x.is_floating_point(), f"Character: {name} must be floating point, got {x.dtype}")
            x = x.to(dtype)
            _check(tuple(x.shape) == shape, f"Character: {name} must have shape {list(shape)}, got {list(x.shape)}")
            _check(bool(torch.isfinite(x).all()), f"Character: {name} has NaN or infinite values")
            return x

        parents = _checks.index_tensor(parents, "parents", "Character").to("cpu", torch.int64)
        _check(tuple(parents.shape) == (J,), f"Character: parents must have shape [{J}] (one per joint name), got {list(parents.shape)}")
        for j, p in enumerate(parents.tolist()):
            _check(-1 <= p < j, f"Character: parents[{j}] = {p}; a parent must be -1 or an earlier joint (parents first)")
        offsets = floating(offsets, "offsets", (J, 3))
        pre_rotations = floating(pre_rotations, "pre_rotations", (J, 4))
        norms = pre_rotations.double().norm(dim=-1)
        _check(bool(((norms - 1).abs() < 1e-3).all()), "Character: pre_rotations must be unit quaternions (xyzw)")
        pre_rotations = torch.nn.functional.normalize(pre_rotations, dim=-1)

        if parameter_transform is None:
            transform_index, transform_values = _transform.identity(J, dtype, device)
            P = 7 * J
            if parameter_names is None:
                parameter_names = [f"{name}_{p}" for name in joint_names for p in JOINT_PARAMETER_NAMES]
        else:
            if not isinstance(parameter_transform, torch.Tensor):
                parameter_transform = torch.as_tensor(parameter_transform)
            transform_index, transform_values = _transform.entries(parameter_transform, J, "Character")
            P = parameter_transform.shape[1]
            transform_values = transform_values.to(device=device, dtype=dtype)
        if parameter_names is None:
            parameter_names = [f"p{i}" for i in range(P)]
        _check(len(parameter_names) == P, f"Character: {len(parameter_names)} parameter names for {P} parameters")
        if joint_parameter_offsets is None:
            joint_parameter_offsets = torch.zeros(7 * J, dtype=dtype, device=device)
        joint_parameter_offsets = floating(torch.as_tensor(joint_parameter_offsets).reshape(-1),
                                           "joint_parameter_offsets", (7 * J,))
        inf = torch.full((P,), float("inf"), dtype=dtype, device=device)
        parameter_min = -inf if parameter_min is None else torch.as_tensor(parameter_min, device=device).to(dtype)
        parameter_max = inf if parameter_max is None else torch.as_tensor(parameter_max, device=device).to(dtype)
        for name, limit in (("parameter_min", parameter_min), ("parameter_max", parameter_max)):
            _check(tuple(limit.shape) == (P,), f"Character: {name} must have shape [{P}], got {list(limit.shape)}")
            _check(not bool(torch.isnan(limit).any()), f"Character: {name} has NaN values")
        _check(bool((parameter_min <= parameter_max).all()), "Character: parameter_min must not exceed parameter_max")

        if inverse_bind_pose is None:
            inverse_bind_pose = _rest_inverse_bind_pose(parents, offsets, pre_rotations)
        inverse_bind_pose = floating(inverse_bind_pose, "inverse_bind_pose", (J, 4, 4))

        rest_vertices = torch.zeros(0, 3, dtype=dtype) if rest_vertices is None else rest_vertices
        rest_vertices = floating(rest_vertices, "rest_vertices", (torch.as_tensor(rest_vertices).shape[0], 3))
        V = rest_vertices.shape[0]
        faces = torch.zeros(0, 3, dtype=torch.int64) if faces is None else faces
        faces = _checks.index_tensor(faces, "faces", "Character", device=device).to(torch.int64)
        _check(faces.dim() == 2 and faces.shape[1] == 3, f"Character: faces must have shape [F, 3], got {list(faces.shape)}")
        _check(bool(((faces >= 0) & (faces < V)).all()), f"Character: faces must index the {V} vertices")
        if skin_indices is None:
            skin_indices = torch.zeros(V, 1, dtype=torch.int64)
            skin_weights = torch.zeros(V, 1, dtype=dtype) if skin_weights is None else skin_weights
        skin_indices = _checks.index_tensor(skin_indices, "skin_indices", "Character", device=device).to(torch.int64)
        _check(
            skin_indices.dim() == 2 and skin_indices.shape[0] == V,
            f"Character: skin_indices must have shape [{V}, K], got {list(skin_indices.shape)}",
        )
        _check(bool(((skin_indices >= 0) & (skin_indices < J)).all()), f"Character: skin_indices must be joint indices in [0, {J})")
        skin_weights = floating(skin_weights, "skin_weights", tuple(skin_indices.shape))
        if blend_shapes is None:
            blend_shapes = torch.zeros(0, V, 3, dtype=dtype)
        blend_shapes = torch.as_tensor(blend_shapes)
        _check(blend_shapes.dim() == 3, f"Character: blend_shapes must have shape [S, {V}, 3], got {list(blend_shapes.shape)}")
        blend_shapes = floating(blend_shapes, "blend_shapes", (blend_shapes.shape[0], V, 3))
        S = blend_shapes.shape[0]
        if blend_shape_names is None:
            blend_shape_names = [f"blend_shape_{s}" for s in range(S)]
        blend_shape_names = list(blend_shape_names)
        _check(all(isinstance(n, str) for n in blend_shape_names), "Character: blend_shape_names must be strings")
        _check(len(blend_shape_names) == S, f"Character: {len(blend_shape_names)} blend shape names for {S} blend shapes")

        self.joint_names = list(joint_names)
        self.parameter_names = list(parameter_names)
        self.blend_shape_names = blend_shape_names
        # Read on the host once, so calls need no device sync to skip the offsets.
        self.has_joint_parameter_offsets = bool((joint_parameter_offsets != 0).any())
        self.register_buffer("parents", parents)
        self.register_buffer("offsets", offsets)
        self.register_buffer("pre_rotations", pre_rotations)
        # The sparse transform (see momentum_ops.parameter_transform): its
        # index on the CPU, read by the IK ops on the host like `parents`, and
        # a copy on the character's device for model_parameters_to_joint_parameters.
        self.register_buffer("transform_index", transform_index)
        self.register_buffer("transform_values", transform_values)
        self.register_buffer("_transform_index_device", transform_index.to(device), persistent=False)
        # Small transforms are also kept dense: one matmul beats a gather and
        # a scatter-add below ~64k elements (a 7-joint arm at batch 1: 2 us
        # against 9 us). Rebuilt after load_state_dict; see
        # model_parameters_to_joint_parameters for when it is used.
        self.register_buffer("_dense_transform", self._small_dense(transform_index, transform_values, J, P),
                             persistent=False)
        self.register_load_state_dict_post_hook(_rebuild_dense_transform)
        self.register_buffer("joint_parameter_offsets", joint_parameter_offsets)
        self.register_buffer("parameter_min", parameter_min)
        self.register_buffer("parameter_max", parameter_max)
        self.register_buffer("inverse_bind_pose", inverse_bind_pose)
        self.register_buffer("rest_vertices", rest_vertices)
        self.register_buffer("faces", faces)
        self.register_buffer("skin_indices", skin_indices)
        self.register_buffer("skin_weights", skin_weights)
        self.register_buffer("blend_shapes", blend_shapes)

    # The topology stays on the CPU (see the module docstring).
    def _apply(self, fn, recurse=True):
        parents, transform_index = self.parents, self.transform_index
        super()._apply(fn, recurse)
        self.parents = parents.cpu()
        self.transform_index = transform_index.cpu()
        return self

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    @property
    def num_parameters(self) -> int:
        return len(self.parameter_names)

    @property
    def num_vertices(self) -> int:
        return int(self.rest_vertices.shape[0])

    @property
    def num_blend_shapes(self) -> int:
        return len(self.blend_shape_names)

    @staticmethod
    def _small_dense(index: torch.Tensor, values: torch.Tensor, joints: int, parameters: int) -> torch.Tensor:
        if 7 * joints * parameters > _DENSE_LIMIT:
            return torch.zeros(0, 0, dtype=values.dtype, device=values.device)
        return _transform.dense(index, values.detach(), 7 * joints, parameters, "Character")

    @property
    def parameter_transform(self) -> torch.Tensor:
        """The transform as a dense ``[J*7, P]`` tensor, built on each access
        (refused when it would take more than half of this machine's memory;
        the character itself stores only ``transform_index``/``transform_values``)."""
        return _transform.dense(self.transform_index, self.transform_values, 7 * self.num_joints,
                                self.num_parameters, "Character.parameter_transform")

    @property
    def parameter_transform_sparse(self) -> torch.Tensor:
        """The transform as a sparse COO tensor ``[J*7, P]`` (coalesced)."""
        return torch.sparse_coo_tensor(
            self.transform_index.to(self.transform_values.device), self.transform_values,
            (7 * self.num_joints, self.num_parameters), is_coalesced=True, check_invariants=False)

    def model_parameters_to_joint_parameters(self, model_parameters: torch.Tensor) -> torch.Tensor:
        """``[..., P]`` -> flat joint parameters ``[..., J*7]``
        (``transform @ model_parameters + joint_parameter_offsets``)."""
        if model_parameters is None:
            raise ValueError("Character: model_parameters must be a tensor, got None")
        if self._dense_transform.numel() > 0 and not self.transform_values.requires_grad:
            joint_parameters = torch.matmul(model_parameters, self._dense_transform.t())
        else:  # big transforms, and values being learnt (their gradient flows through the entries)
            joint_parameters = _transform.apply(model_parameters, self._transform_index_device, self.transform_values,
                                                7 * self.parents.shape[0])
        if self.has_joint_parameter_offsets:
            joint_parameters = joint_parameters + self.joint_parameter_offsets
        return joint_parameters

    def joint_parameters_to_skeleton_state(self, joint_parameters: torch.Tensor) -> torch.Tensor:
        """``[..., J, 7]`` or ``[..., J*7]`` -> skeleton state ``[..., J, 8]``."""
        if joint_parameters is None:
            raise ValueError("Character: joint_parameters must be a tensor, got None")
        joints = self.parents.shape[0]
        if not (joint_parameters.dim() >= 2 and joint_parameters.shape[-1] == 7 and joint_parameters.shape[-2] == joints):
            shape = list(joint_parameters.shape[:-1]) + [joints, 7]
            joint_parameters = joint_parameters.reshape(shape)
        return torch.ops.momentum.joint_parameters_to_skeleton_state(
            joint_parameters, self.parents, self.offsets, self.pre_rotations
        )

    def skin(
        self,
        skeleton_state: torch.Tensor,
        blend_weights: Optional[torch.Tensor] = None,
        rest_points: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Posed vertices ``[..., V, 3]`` from a skeleton state ``[..., J, 8]``.

        ``blend_weights [..., S]`` (batch dims of the state) adds the blend
        shapes to the rest vertices, in the same op as the skinning; without
        it the rest vertices are used as they are (all weights zero).
        ``rest_points`` overrides the rest vertices (``[V, 3]``, or
        ``[..., V, 3]`` when there are no blend weights)."""
        if skeleton_state is None:
            raise ValueError("Character.skin: skeleton_state must be a tensor, got None")
        points = self.rest_vertices if rest_points is None else rest_points
        if blend_weights is None:
            return torch.ops.momentum.skin_points(
                skeleton_state, self.inverse_bind_pose, points, self.skin_indices, self.skin_weights
            )
        if blend_weights.shape[-1:] != self.blend_shapes.shape[:1]:
            raise ValueError(
                f"Character.skin: blend_weights must have shape [..., {self.blend_shapes.shape[0]}] for the "
                f"character's {self.blend_shapes.shape[0]} blend shapes, got {list(blend_weights.shape)}"
            )
        return torch.ops.momentum.skin_blended_points(
            skeleton_state, self.inverse_bind_pose, points, self.blend_shapes, blend_weights,
            self.skin_indices, self.skin_weights
        )

    def forward(self, model_parameters: torch.Tensor, blend_weights: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Model parameters ``[..., P]`` (and blend weights ``[..., S]``) ->
        posed vertices ``[..., V, 3]``."""
        joint_parameters = self.model_parameters_to_joint_parameters(model_parameters)
        return self.skin(self.joint_parameters_to_skeleton_state(joint_parameters), blend_weights)

    @torch.jit.unused
    def rest_skeleton_state(self) -> torch.Tensor:
        """The skeleton state with every joint parameter zero, ``[J, 8]``."""
        zeros = torch.zeros(self.num_joints, 7, dtype=self.offsets.dtype, device=self.offsets.device)
        return self.joint_parameters_to_skeleton_state(zeros)

    def extra_repr(self) -> str:
        return (
            f"joints={len(self.joint_names)}, parameters={len(self.parameter_names)}, "
            f"vertices={self.rest_vertices.shape[0]}, faces={self.faces.shape[0]}, "
            f"influences={self.skin_indices.shape[1]}, blend_shapes={self.blend_shapes.shape[0]}"
        )


# The largest transform (7J x P elements) also kept dense.
_DENSE_LIMIT = 1 << 16


def _rebuild_dense_transform(module, incompatible_keys) -> None:
    """load_state_dict replaced transform_values (in place): rebuild the dense copy."""
    dense = Character._small_dense(module.transform_index, module.transform_values, module.num_joints,
                                   module.num_parameters)
    module._dense_transform = dense.to(module.transform_values.device)


def _rest_inverse_bind_pose(parents, offsets, pre_rotations) -> torch.Tensor:
    """Inverse global matrices of the pose with all joint parameters zero."""
    zeros = torch.zeros(parents.shape[0], 7, dtype=torch.float64, device=offsets.device)
    state = torch.ops.momentum.joint_parameters_to_skeleton_state(
        zeros, parents, offsets.double(), pre_rotations.double()
    )
    return torch.linalg.inv(skel_state.to_matrix(state)).to(offsets.dtype)
