"""Qualitative overlays: a CAD model drawn over a photo at a (predicted or annotated) pose."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import scipy.ndimage
import trimesh

from disent_jax.errors import ImageError
from disent_jax.render.base import Renderer
from disent_jax.render.camera import Camera


def overlay(image: np.ndarray, mesh: trimesh.Trimesh, R: np.ndarray, t: np.ndarray, camera: Camera, *,
            color: Sequence[float] = (0.2, 0.8, 0.3), alpha: float = 0.5,
            outline_color: Sequence[int] | None = (255, 255, 0), outline_width: int = 1,
            renderer: Renderer | None = None, backend: str = "auto") -> np.ndarray:
  """Blends the shaded model into `image` and paints its outline.

  Args:
    image: (H, W, 3) uint8 photo (or (H, W) grey, which is expanded to RGB).
    mesh: the model (normalised frame).
    R: (3, 3) rotation, object -> camera.
    t: (3,) object origin in the camera frame.
    camera: the photo's intrinsics; its size must equal the image's.
    color: model albedo in [0, 1].
    alpha: weight of the rendering inside the silhouette (0 = photo only, 1 = rendering only).
    outline_color: RGB uint8 colour of the silhouette outline, None for no outline.
    outline_width: outline thickness in pixels.
    renderer: the renderer to use; None for this process's default (`render_mesh`'s `backend`).
    backend: backend of the default renderer when `renderer` is None.

  Returns:
    (H, W, 3) uint8, a new array.
  """
  img = np.asarray(image)
  if img.ndim == 2:
    img = np.repeat(img[..., None], 3, axis=2)
  if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
    raise ImageError(f"overlay needs an (H, W, 3) uint8 image, got {img.shape} {img.dtype}")
  if img.shape[:2] != camera.shape:
    raise ImageError(f"image size {img.shape[1]}x{img.shape[0]} differs from the camera's "
                     f"{camera.width}x{camera.height}")
  if renderer is None:
    from disent_jax.render import default_renderer  # pylint: disable=import-outside-toplevel
    renderer = default_renderer(backend)
  res = renderer.render(mesh, R, t, camera, color=color)
  out = img.astype(np.float32)
  m = res.mask
  out[m] = (1 - alpha) * out[m] + alpha * 255.0 * res.rgb[m]
  if outline_color is not None and m.any():
    inner = scipy.ndimage.binary_erosion(m, iterations=max(1, int(outline_width)), border_value=0)
    out[m & ~inner] = np.asarray(outline_color, np.float32)
  return np.clip(np.rint(out), 0, 255).astype(np.uint8)
