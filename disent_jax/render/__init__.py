"""Rendering of normalised CAD meshes with the project's pinhole camera.

Two interchangeable backends produce the same `RenderResult` (rgb, mask, depth) with the same flat
two-sided Lambert shading and exact pixel-centre sampling:
  * 'gl'      `gl.GLRenderer`: moderngl on a headless EGL context. Fast (thousands of images/s on CPU).
  * 'raycast' `raycast.RaycastRenderer`: trimesh/embreex ray casting, no OpenGL. The fallback and the
              tests' oracle.
`render_mesh(..., backend='auto')` uses GL when an EGL context can be created, else ray casting.

`scene.compose_scene` turns a render into a photo-like training image (backgrounds, colours, light,
occluders, truncation flags); `overlay.overlay` draws a model over a photo for qualitative figures.

Fork safety: GL contexts must be created inside worker processes, never in a parent that forks later
(see `gl`). `render_mesh` creates its GL renderer lazily on first use, per process.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import trimesh

from disent_jax.render.base import (DEFAULT_AMBIENT, DEFAULT_COLOR, DEFAULT_LIGHT_DIR, Renderer,
                                    RenderResult)
from disent_jax.render.camera import Camera, mask_bbox, project, projected_bbox
from disent_jax.render.raycast import RaycastRenderer, render_raycast

__all__ = [
    "Camera", "DEFAULT_AMBIENT", "DEFAULT_COLOR", "DEFAULT_LIGHT_DIR", "RaycastRenderer", "RenderResult",
    "Renderer", "make_renderer", "mask_bbox", "project", "projected_bbox", "render_mesh",
    "render_raycast",
]

_log = logging.getLogger(__name__)
BACKENDS = ("auto", "gl", "raycast")

# Per-process default renderers, keyed by (pid, backend): a child process must never reuse its parent's GL
# context, so the pid is part of the key.
_DEFAULT: dict[tuple[int, str], Any] = {}
_LOGGED: set[str] = set()


def _log_once(msg: str, *args) -> None:
  if msg not in _LOGGED:
    _LOGGED.add(msg)
    _log.info(msg, *args)


def make_renderer(backend: str = "auto", *, lp_threads: int | None = None) -> Renderer:
  """A new renderer.

  Args:
    backend: 'gl', 'raycast', or 'auto' (GL if an EGL context can be created in this process, else ray
      casting; the choice is logged once).
    lp_threads: llvmpipe threads for GL (see `gl.GLRenderer`); 1 is best in data-generation workers.

  Returns:
    A `GLRenderer` or `RaycastRenderer`. With 'gl', raises when EGL is unavailable.
  """
  if backend not in BACKENDS:
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
  if backend == "raycast":
    return RaycastRenderer()
  from disent_jax.render.gl import GLRenderer  # pylint: disable=import-outside-toplevel
  if backend == "gl":
    return GLRenderer(lp_threads=lp_threads)
  try:
    r = GLRenderer(lp_threads=lp_threads)
  except Exception as e:  # pylint: disable=broad-except  # Any GL failure means: fall back.
    _log_once("render backend: raycast (no EGL OpenGL context: %s)", e)
    return RaycastRenderer()
  _log_once("render backend: gl (%s)", r.info.get("GL_RENDERER", "?"))
  return r


def default_renderer(backend: str = "auto") -> Renderer:
  """This process's shared renderer for `backend`, created on first use (see `make_renderer`)."""
  key = (os.getpid(), backend)
  r = _DEFAULT.get(key)
  if r is None:
    r = _DEFAULT[key] = make_renderer(backend)
  return r


def render_mesh(mesh: trimesh.Trimesh, R: np.ndarray, t: np.ndarray, camera: Camera,
                backend: str = "auto", **shading) -> RenderResult:
  """Renders `mesh` at pose (R, t) with this process's default renderer.

  Args:
    mesh: the triangle mesh (object frame; normalised CAD models by convention).
    R: (3, 3) rotation, object -> camera.
    t: (3,) object origin in the camera frame.
    camera: intrinsics and image size.
    backend: 'auto', 'gl' or 'raycast'.
    **shading: color, light_dir, ambient, diffuse, face_colors (see `GLRenderer.render`).

  Returns:
    The `RenderResult`.
  """
  return default_renderer(backend).render(mesh, R, t, camera, **shading)
