"""Types shared by the render backends: the result record, the renderer protocol and the shading model.

Shading model (identical in every backend, so that backends are interchangeable and can test each other):
flat, two-sided Lambert with one directional light,

  rgb = clip(albedo * (ambient + diffuse * max(0, n . l)), 0, 1)

where n is the face normal in the camera frame, flipped to face the camera (dot(n, X_c) < 0) because CAD
meshes have inconsistent winding, and l is the unit direction from the surface towards the light, also in
the camera frame (X right, Y down, Z forward). Empty pixels are black with depth 0.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol, Sequence

import numpy as np
import trimesh

from disent_jax.render.camera import Camera

# Light from the upper left, a little in front of the object (towards the camera, -Z): shows shape well.
DEFAULT_LIGHT_DIR = (-0.3, -0.5, -1.0)
DEFAULT_COLOR = (0.7, 0.7, 0.7)
DEFAULT_AMBIENT = 0.3


@dataclasses.dataclass
class RenderResult:
  """One rendered view.

  Attributes:
    rgb: (H, W, 3) float32 in [0, 1]; black where the mesh is absent.
    mask: (H, W) bool, True where a triangle covers the pixel centre.
    depth: (H, W) float32 camera-frame Z of the visible surface; 0 where `mask` is False.
  """
  rgb: np.ndarray
  mask: np.ndarray
  depth: np.ndarray

  @classmethod
  def empty(cls, height: int, width: int) -> "RenderResult":
    """An all-background result (used when the object is entirely behind the camera)."""
    return cls(rgb=np.zeros((height, width, 3), np.float32), mask=np.zeros((height, width), bool),
               depth=np.zeros((height, width), np.float32))


class Renderer(Protocol):
  """Anything that renders a mesh like `GLRenderer.render` / `RaycastRenderer.render`."""

  def render(self, mesh: trimesh.Trimesh, R: np.ndarray, t: np.ndarray, camera: Camera, *,
             color: Sequence[float] = DEFAULT_COLOR, light_dir: Sequence[float] | None = None,
             ambient: float = DEFAULT_AMBIENT, diffuse: float | None = None,
             face_colors: np.ndarray | None = None) -> RenderResult:
    ...


@dataclasses.dataclass(frozen=True)
class Shading:
  """Validated shading parameters (see the module docstring for the model)."""
  color: np.ndarray  # (3,) float32 albedo used when no face colours are given.
  light_dir: np.ndarray  # (3,) float32 unit vector towards the light, camera frame.
  ambient: float
  diffuse: float


def resolve_shading(color: Sequence[float] = DEFAULT_COLOR, light_dir: Sequence[float] | None = None,
                    ambient: float = DEFAULT_AMBIENT, diffuse: float | None = None) -> Shading:
  """Checks and normalises shading arguments.

  Args:
    color: RGB albedo in [0, 1].
    light_dir: direction towards the light in the camera frame; None for `DEFAULT_LIGHT_DIR`. Need not be
      unit length.
    ambient: ambient term.
    diffuse: diffuse weight; None for `1 - ambient` (so a surface facing the light shows its albedo).

  Returns:
    The `Shading`. Raises ValueError on a bad colour or a zero light direction.
  """
  c = np.asarray(color, np.float32).reshape(-1)
  if c.shape != (3,) or not np.all(np.isfinite(c)):
    raise ValueError(f"color must be 3 finite floats, got {color!r}")
  l = np.asarray(DEFAULT_LIGHT_DIR if light_dir is None else light_dir, np.float64).reshape(-1)
  norm = float(np.linalg.norm(l)) if l.shape == (3,) else 0.0
  if not np.isfinite(norm) or norm == 0.0:
    raise ValueError(f"light_dir must be a non-zero 3-vector, got {light_dir!r}")
  ambient = float(ambient)
  diffuse = 1.0 - ambient if diffuse is None else float(diffuse)
  return Shading(color=c, light_dir=(l / norm).astype(np.float32), ambient=ambient, diffuse=diffuse)


def check_face_colors(face_colors: np.ndarray | None, n_faces: int) -> np.ndarray | None:
  """Returns `face_colors` as a (F, 3) float32 array, or None; raises ValueError on a shape mismatch."""
  if face_colors is None:
    return None
  fc = np.asarray(face_colors)
  if fc.dtype == np.uint8:  # trimesh's own visual.face_colors are uint8 RGBA.
    fc = fc.astype(np.float32) / 255.0
  fc = np.asarray(fc, np.float32)
  if fc.ndim != 2 or fc.shape[0] != n_faces or fc.shape[1] not in (3, 4):
    raise ValueError(f"face_colors must have shape ({n_faces}, 3), got {fc.shape}")
  return np.ascontiguousarray(fc[:, :3])


def check_pose(R: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Returns (R, t) as float64 (3, 3) and (3,) arrays; raises ValueError on bad shapes or non-finite values.

  R is not required to be orthonormal: a uniformly scaled rotation is accepted by the GL backend, but the
  ray-cast backend needs an invertible matrix; a proper rotation is what every caller passes.
  """
  R = np.asarray(R, np.float64)
  t = np.asarray(t, np.float64).reshape(-1)
  if R.shape != (3, 3) or t.shape != (3,):
    raise ValueError(f"R must be (3, 3) and t (3,), got {R.shape} and {t.shape}")
  if not (np.all(np.isfinite(R)) and np.all(np.isfinite(t))):
    raise ValueError("R and t must be finite")
  return R, t
