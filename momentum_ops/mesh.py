"""Mesh helpers on posed vertices. Pure PyTorch, differentiable, any device."""

from __future__ import annotations

import torch

from . import _checks


def compute_vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted vertex normals ``[..., V, 3]`` of triangles ``faces``
    ``[F, 3]`` (counter-clockwise is the front): each vertex gets the unit
    direction of the sum of its triangles' normals weighted by their areas
    (the cross product of two edges is twice the area times the normal). A
    vertex in no triangle, or whose triangles cancel, gets zero."""
    where = "compute_vertex_normals"
    _checks.tensor(vertices, "vertices", where)
    faces = _checks.index_tensor(faces, "faces", where, device=vertices.device).to(torch.int64)
    if vertices.dim() < 2 or vertices.shape[-1] != 3:
        raise ValueError(f"{where}: vertices must have shape [..., V, 3], got {list(vertices.shape)}")
    if faces.dim() != 2 or faces.shape[1] != 3:
        raise ValueError(f"{where}: faces must have shape [F, 3], got {list(faces.shape)}")
    V = vertices.shape[-2]
    if faces.numel() and (int(faces.min()) < 0 or int(faces.max()) >= V):
        raise ValueError(f"{where}: faces must index the {V} vertices")
    corners = [vertices.index_select(-2, faces[:, k]) for k in range(3)]
    weighted = torch.cross(corners[1] - corners[0], corners[2] - corners[0], dim=-1)  # [..., F, 3]
    normals = torch.zeros_like(vertices)
    for k in range(3):
        normals = normals.index_add(-2, faces[:, k], weighted)
    length = torch.linalg.vector_norm(normals, dim=-1, keepdim=True)
    return normals / torch.where(length > 0, length, torch.ones_like(length))
