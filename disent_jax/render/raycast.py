"""Exact CPU renderer: one Embree ray per pixel centre (embreex), flat two-sided Lambert shading in numpy.

No OpenGL is involved, so this backend works wherever the `embreex` wheel installs. It is the fallback of
`render_mesh(backend='auto')` and the oracle the GL backend is tested against. It samples exactly the pixel
centres (no anti-aliasing), as the GL backend does, so both give the same silhouettes.

Rays are cast in the object frame (origin -R^-1 t, direction R^-1 d_cam), so the BVH is built once per mesh
and reused for every pose. Only the pixels inside the projected vertex box are cast.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np
import trimesh

from disent_jax.render import _cache
from disent_jax.render.camera import Camera, pixel_rays, transform
from disent_jax.render.base import (DEFAULT_AMBIENT, DEFAULT_COLOR, RenderResult, check_face_colors,
                                     check_pose, resolve_shading)


@dataclasses.dataclass(eq=False)
class RaycastMesh:
  """A mesh prepared for ray casting: the Embree scene plus per-face data. Build with `prepare_raycast`.

  It holds no reference to the trimesh object, so the per-mesh cache can drop it when the mesh dies.
  """
  scene: object  # embreex.rtcore_scene.EmbreeScene
  offset: np.ndarray  # (3,) the scene's vertices are (v - offset) * scale, for float32 precision.
  scale: float
  vertices: np.ndarray  # (V, 3) float64
  faces: np.ndarray  # (F, 3) int64
  normals: np.ndarray  # (F, 3) float64 unit face normals (0 for degenerate faces).
  p0: np.ndarray  # (F, 3) float64 first vertex of each face (a point on its plane).
  n_faces: int

  def first_hit(self, origin: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """Index of the first face hit by each ray from `origin` (object frame), -1 for a miss."""
    o = np.broadcast_to(((origin - self.offset) * self.scale).astype(np.float32), directions.shape)
    return np.asarray(self.scene.run(np.ascontiguousarray(o),
                                     np.ascontiguousarray(directions, np.float32)))


def prepare_raycast(mesh: trimesh.Trimesh) -> RaycastMesh:
  """Builds the Embree BVH and face data of a mesh (done once per mesh; `render_raycast` caches it).

  Args:
    mesh: any triangle mesh.

  Returns:
    The `RaycastMesh`. Raises ImportError when `embreex` is not installed.
  """
  try:
    from embreex import rtcore_scene  # pylint: disable=import-outside-toplevel
    from embreex.mesh_construction import TriangleMesh  # pylint: disable=import-outside-toplevel
  except ImportError as e:  # Give the fix, not just the missing name.
    raise ImportError("the ray-cast renderer needs embreex: pip install embreex") from e
  v = np.asarray(mesh.vertices, np.float64)
  f = np.asarray(mesh.faces, np.int64).reshape(-1, 3)
  # Embree works in float32: shift and scale the model to a box of about 100 units, as trimesh does, so
  # hits stay accurate for tiny or huge models.
  offset = v.min(axis=0) if len(v) else np.zeros(3)
  extent = float(np.ptp(v, axis=0).max()) if len(v) else 0.0
  scale = 100.0 / extent if extent > 0 else 1.0
  scene = rtcore_scene.EmbreeScene()
  if len(f):
    TriangleMesh(scene=scene, vertices=((v - offset) * scale).astype(np.float32),
                 indices=f.astype(np.int32))
  return RaycastMesh(scene=scene, offset=offset, scale=scale, vertices=v, faces=f,
                     normals=_cache.face_normals(v, f), p0=v[f[:, 0]] if len(f) else np.zeros((0, 3)),
                     n_faces=len(f))


_CACHE: _cache.PerMeshCache[RaycastMesh] = _cache.PerMeshCache(prepare_raycast, max_size=256)


def _pixel_window(vertices: np.ndarray, R: np.ndarray, t: np.ndarray,
                  camera: Camera) -> tuple[int, int, int, int] | None:
  """Pixel rows/columns [j0, j1) x [i0, i1) whose centres may see the mesh; None if none can."""
  xc = transform(vertices, R, t)
  if len(xc) == 0 or np.all(xc[:, 2] <= 0):
    return None
  if np.any(xc[:, 2] <= 0):  # Straddles the camera plane: the projected box is unbounded.
    return 0, camera.height, 0, camera.width
  u = camera.fx * xc[:, 0] / xc[:, 2] + camera.cx
  v = camera.fy * xc[:, 1] / xc[:, 2] + camera.cy
  # Centre i + 0.5 inside [u.min(), u.max()]; one pixel of slack on each side for rounding.
  i0 = max(0, math.floor(u.min() - 0.5))
  i1 = min(camera.width, math.ceil(u.max() - 0.5) + 1)
  j0 = max(0, math.floor(v.min() - 0.5))
  j1 = min(camera.height, math.ceil(v.max() - 0.5) + 1)
  if i0 >= i1 or j0 >= j1:
    return None
  return j0, j1, i0, i1


def render_raycast(mesh: trimesh.Trimesh, R: np.ndarray, t: np.ndarray, camera: Camera, *,
                   color: Sequence[float] = DEFAULT_COLOR, light_dir: Sequence[float] | None = None,
                   ambient: float = DEFAULT_AMBIENT, diffuse: float | None = None,
                   face_colors: np.ndarray | None = None,
                   prepared: RaycastMesh | None = None) -> RenderResult:
  """Renders `mesh` at pose (R, t) by ray casting.

  Args:
    mesh: the triangle mesh (object frame).
    R: (3, 3) rotation, object -> camera.
    t: (3,) translation, object origin in the camera frame.
    camera: intrinsics and image size.
    color: RGB albedo in [0, 1] (ignored when `face_colors` is given).
    light_dir: direction towards the light in the camera frame; None for the default.
    ambient: ambient term.
    diffuse: diffuse weight; None for 1 - ambient.
    face_colors: optional (F, 3) per-face albedo (float in [0, 1], or uint8).
    prepared: a `prepare_raycast(mesh)` result to use instead of the internal per-mesh cache.

  Returns:
    The `RenderResult` (see `disent_jax.render.base` for the shading model).
  """
  R, t = check_pose(R, t)
  shading = resolve_shading(color, light_dir, ambient, diffuse)
  data = prepared if prepared is not None else _CACHE.get(mesh)
  fc = check_face_colors(face_colors, data.n_faces)
  height, width = camera.height, camera.width
  out = RenderResult.empty(height, width)
  window = _pixel_window(data.vertices, R, t, camera) if data.n_faces else None
  if window is None:
    return out
  j0, j1, i0, i1 = window
  d_cam = pixel_rays(camera).reshape(height, width, 3)[j0:j1, i0:i1].reshape(-1, 3)
  r_inv = np.linalg.inv(R)
  origin = -r_inv @ t
  d_obj = d_cam @ r_inv.T
  tri = data.first_hit(origin, d_obj / np.linalg.norm(d_obj, axis=1, keepdims=True))
  hit = tri >= 0
  if not hit.any():
    return out
  tri, d_obj, d_cam = tri[hit], d_obj[hit], d_cam[hit]
  n_obj = data.normals[tri]
  # Ray-plane intersection in float64: d_obj = R^-1 d_cam with d_cam.z = 1, so the ray parameter of the
  # hit is exactly its camera depth Z_c.
  denom = np.einsum("ij,ij->i", n_obj, d_obj)
  with np.errstate(divide="ignore", invalid="ignore"):
    z = np.einsum("ij,ij->i", n_obj, data.p0[tri] - origin) / denom
  bad = ~np.isfinite(z) | (z <= 0)
  if bad.any():  # Grazing ray or degenerate face: fall back to the face centroid's depth.
    centroid = data.vertices[data.faces[tri[bad]]].mean(axis=1)
    z[bad] = (centroid @ R[2] + t[2])
  n_cam = n_obj @ R.T
  n_cam /= np.maximum(np.linalg.norm(n_cam, axis=1, keepdims=True), 1e-300)
  # Two-sided: make the normal face the camera (the ray runs along d_cam, from the camera to the hit).
  n_cam *= np.where(np.einsum("ij,ij->i", n_cam, d_cam) > 0, -1.0, 1.0)[:, None]
  lam = np.maximum(n_cam @ shading.light_dir.astype(np.float64), 0.0)
  albedo = fc[tri] if fc is not None else shading.color[None, :]
  rgb = np.clip(albedo * (shading.ambient + shading.diffuse * lam)[:, None], 0.0, 1.0)
  win_w = i1 - i0
  flat = np.flatnonzero(hit)
  rows, cols = flat // win_w + j0, flat % win_w + i0
  out.mask[rows, cols] = True
  out.rgb[rows, cols] = rgb
  out.depth[rows, cols] = z
  return out


class RaycastRenderer:
  """The ray-cast backend behind the common `Renderer` interface (stateless apart from the BVH cache)."""

  name = "raycast"

  def render(self, mesh: trimesh.Trimesh, R: np.ndarray, t: np.ndarray, camera: Camera, *,
             color: Sequence[float] = DEFAULT_COLOR, light_dir: Sequence[float] | None = None,
             ambient: float = DEFAULT_AMBIENT, diffuse: float | None = None,
             face_colors: np.ndarray | None = None) -> RenderResult:
    """See `render_raycast`."""
    return render_raycast(mesh, R, t, camera, color=color, light_dir=light_dir, ambient=ambient,
                          diffuse=diffuse, face_colors=face_colors)

  def release(self) -> None:
    """Nothing to release (present for symmetry with `GLRenderer`)."""
