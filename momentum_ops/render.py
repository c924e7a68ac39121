"""Draws posed characters to a PNG with matplotlib: a shaded mesh and the
skeleton, one or several frames side by side. glTF's y-up is drawn up."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch


def _to_plot(points: np.ndarray, up: str) -> np.ndarray:
    # matplotlib's 3D axes are z-up; a y-up character maps (x, y, z) -> (x, -z, y).
    return points[..., [0, 2, 1]] * np.array([1.0, -1.0, 1.0]) if up == "y" else points


def render(
    path: str,
    vertices: torch.Tensor,
    faces: torch.Tensor,
    joints: Optional[torch.Tensor] = None,
    parents: Optional[torch.Tensor] = None,
    titles: Optional[Sequence[str]] = None,
    up: str = "y",
    size: float = 4.0,
    color=(0.55, 0.7, 0.9),
    azimuth: float = -70.0,
) -> str:
    """Writes `path`: frames of `vertices` ``[F, V, 3]`` (or ``[V, 3]``) with
    `faces` ``[T, 3]``, and, when given, joint positions ``[F, J, 3]`` linked
    to their `parents`. Returns the path."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    vertices = _to_plot(np.asarray(torch.as_tensor(vertices).detach().cpu().double()), up)
    if vertices.ndim == 2:
        vertices = vertices[None]
    faces = np.asarray(torch.as_tensor(faces).cpu())
    frames = vertices.shape[0]
    if joints is not None:
        joints = _to_plot(np.asarray(torch.as_tensor(joints).detach().cpu().double()), up).reshape(frames, -1, 3)
        parents = [int(p) for p in torch.as_tensor(parents).cpu()]
    every = vertices.reshape(-1, 3) if joints is None else np.concatenate([vertices.reshape(-1, 3), joints.reshape(-1, 3)])
    if not len(every):
        raise ValueError("render: nothing to draw (no vertices and no joints)")
    low, high = every.min(axis=0), every.max(axis=0)
    centre, half = (low + high) / 2, (high - low).max() / 2 * 1.05 + 1e-9
    light = np.array([0.4, -0.8, 0.6])
    light /= np.linalg.norm(light)

    figure = plt.figure(figsize=(size * frames, size * 1.1))
    for f in range(frames):
        axes = figure.add_subplot(1, frames, f + 1, projection="3d")
        # Draw in call order: matplotlib's depth sort would bury the skeleton inside the mesh.
        axes.computed_zorder = False
        if len(faces):
            triangles = vertices[f][faces]
            normals = np.cross(triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0])
            normals /= np.linalg.norm(normals, axis=1, keepdims=True) + 1e-12
            shade = 0.3 + 0.7 * np.abs(normals @ light)
            colors = np.clip(np.asarray(color)[None] * shade[:, None], 0, 1)
            axes.add_collection3d(Poly3DCollection(triangles, facecolors=colors, edgecolors="none", alpha=0.6, zorder=1))
        elif vertices.shape[1]:
            axes.scatter(*vertices[f].T, s=1, c=[color])
        if joints is not None:
            for j, p in enumerate(parents):
                if p >= 0:
                    axes.plot(*np.stack([joints[f, p], joints[f, j]]).T, color="black",
                              linewidth=1.2 if vertices.shape[1] else 4.0, zorder=2)
            axes.scatter(*joints[f].T, s=6, c="crimson", depthshade=False, zorder=3)
        for setter, c in zip((axes.set_xlim, axes.set_ylim, axes.set_zlim), centre):
            setter(c - half, c + half)
        axes.set_box_aspect((1, 1, 1), zoom=1.8 if vertices.shape[1] else 1.2)
        axes.view_init(elev=12, azim=azimuth)
        axes.set_axis_off()
        if titles is not None:
            axes.set_title(titles[f], fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def render_character(path: str, character, joint_parameters: torch.Tensor, titles=None, skeleton: bool = True,
                     azimuth: float = -70.0, blend_weights: Optional[torch.Tensor] = None, up: str = "y") -> str:
    """Poses `character` with joint parameters ``[F, J, 7]`` (and blend
    weights ``[F, S]``) and draws it; ``up="z"`` for z-up models (URDF)."""
    with torch.no_grad():
        state = character.joint_parameters_to_skeleton_state(joint_parameters)
        vertices = character.skin(state, blend_weights)
    return render(
        path, vertices, character.faces,
        joints=state[..., :3] if skeleton else None, parents=character.parents if skeleton else None,
        titles=titles, azimuth=azimuth, up=up,
    )
