"""The pinhole camera of the whole project, and projections with it.

Conventions (fixed for the project, see ../shared/rendering.md):
  X_c = R X_o + t                          (R: object -> camera rotation, t: object origin in the camera)
  u = fx X_c / Z_c + cx,  v = fy Y_c / Z_c + cy
Camera axes: X right, Y down, Z forward. Image rows are counted from the top. Coordinates are continuous:
pixel (row j, column i) covers [i, i + 1) x [j, j + 1) and its centre is at (u, v) = (i + 0.5, j + 0.5), so
cx = W / 2 is the image centre. An OpenCV-style K (centres at integers) converts by adding 0.5 to cx, cy
(`Camera.from_K(..., opencv=True)`).

A bounding box (x1, y1, x2, y2) is in the same continuous coordinates: a mask occupying columns i0..i1 has
x1 = i0 and x2 = i1 + 1 (`mask_bbox`).
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np


@dataclasses.dataclass(frozen=True)
class Camera:
  """Pinhole intrinsics plus the image size.

  Attributes:
    fx, fy: focal lengths in pixels.
    cx, cy: principal point in continuous pixel coordinates (image centre = (W / 2, H / 2)).
    width, height: image size in pixels.
  """
  fx: float
  fy: float
  cx: float
  cy: float
  width: int
  height: int

  def __post_init__(self):
    if int(self.width) != self.width or int(self.height) != self.height or self.width <= 0 or \
        self.height <= 0:
      raise ValueError(f"image size must be positive integers, got {self.width}x{self.height}")
    if not (np.isfinite(self.fx) and np.isfinite(self.fy) and self.fx > 0 and self.fy > 0):
      raise ValueError(f"focal lengths must be positive, got fx={self.fx}, fy={self.fy}")
    if not (np.isfinite(self.cx) and np.isfinite(self.cy)):
      raise ValueError("principal point must be finite")
    # Normalise types so equal cameras hash equal (the ray-grid cache is keyed by the camera).
    for name in ("fx", "fy", "cx", "cy"):
      object.__setattr__(self, name, float(getattr(self, name)))
    object.__setattr__(self, "width", int(self.width))
    object.__setattr__(self, "height", int(self.height))

  @classmethod
  def default(cls, width: int, height: int | None = None, focal_scale: float = 1.25) -> "Camera":
    """A centred camera with fx = fy = focal_scale * max(width, height).

    Args:
      width: image width in pixels.
      height: image height; None for a square image.
      focal_scale: focal length over image size. 1.25 gives a field of view of about 44 degrees, so a
        normalised model (radius 0.5) at distance 2.0-2.6 fills a third to a quarter of the image.

    Returns:
      The camera.
    """
    height = width if height is None else height
    f = float(focal_scale) * max(width, height)
    return cls(fx=f, fy=f, cx=width / 2.0, cy=height / 2.0, width=width, height=height)

  @classmethod
  def from_K(cls, K: np.ndarray, width: int, height: int, *, opencv: bool = False) -> "Camera":
    """A camera from a 3x3 intrinsic matrix.

    Args:
      K: [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] (skew must be 0).
      width: image width.
      height: image height.
      opencv: True if K follows OpenCV's convention of pixel centres at integers; then 0.5 is added to cx
        and cy to reach this project's convention.

    Returns:
      The camera.
    """
    K = np.asarray(K, np.float64)
    if K.shape != (3, 3) or abs(K[0, 1]) > 1e-9 or np.any(np.abs(K[2] - (0, 0, 1)) > 1e-9):
      raise ValueError(f"K must be a 3x3 zero-skew pinhole matrix, got {K!r}")
    off = 0.5 if opencv else 0.0
    return cls(fx=K[0, 0], fy=K[1, 1], cx=K[0, 2] + off, cy=K[1, 2] + off, width=width, height=height)

  @property
  def K(self) -> np.ndarray:
    """The 3x3 float64 intrinsic matrix (this project's pixel-centre convention)."""
    return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

  @property
  def shape(self) -> tuple[int, int]:
    """(height, width), the numpy shape of a mask."""
    return self.height, self.width

  def scaled(self, factor: int) -> "Camera":
    """The same view at `factor` times the resolution (for supersampling).

    Continuous coordinates scale exactly: pixel centre i + 0.5 of the large image lies at (i + 0.5) /
    factor in the small one, so block-averaging `factor` x `factor` pixels gives the small image.
    """
    if int(factor) != factor or factor < 1:
      raise ValueError(f"scale factor must be a positive integer, got {factor}")
    s = int(factor)
    return Camera(self.fx * s, self.fy * s, self.cx * s, self.cy * s, self.width * s, self.height * s)

  def crop(self, x1: int, y1: int, width: int, height: int) -> "Camera":
    """The camera of the sub-image [x1, x1 + width) x [y1, y1 + height) (integer pixel offsets)."""
    return Camera(self.fx, self.fy, self.cx - x1, self.cy - y1, width, height)


def transform(points: np.ndarray, R: np.ndarray, t: np.ndarray) -> np.ndarray:
  """Camera-frame coordinates X_c = R X_o + t of object-frame points (N, 3) -> (N, 3) float64."""
  p = np.asarray(points, np.float64).reshape(-1, 3)
  return p @ np.asarray(R, np.float64).T + np.asarray(t, np.float64).reshape(1, 3)


def project(points: np.ndarray, R: np.ndarray, t: np.ndarray, camera: Camera) -> np.ndarray:
  """Projects object-frame points to continuous pixel coordinates.

  Args:
    points: (N, 3) points in the object frame.
    R: (3, 3) rotation, object -> camera.
    t: (3,) translation (object origin in the camera frame).
    camera: the intrinsics.

  Returns:
    (N, 2) float64 (u, v). Points at or behind the camera plane (Z_c <= 0) give non-finite or meaningless
    values; check `transform(...)[:, 2] > 0` first when that can happen.
  """
  xc = transform(points, R, t)
  with np.errstate(divide="ignore", invalid="ignore"):
    u = camera.fx * xc[:, 0] / xc[:, 2] + camera.cx
    v = camera.fy * xc[:, 1] / xc[:, 2] + camera.cy
  return np.stack([u, v], axis=1)


def projected_bbox(mesh_vertices: np.ndarray, R: np.ndarray, t: np.ndarray,
                   camera: Camera) -> np.ndarray:
  """Bounding box (x1, y1, x2, y2) of the projected vertices, in continuous pixel coordinates.

  This is the amodal box: it is not clipped to the image. The rendered silhouette's box (`mask_bbox`)
  equals it to within one pixel when the object is inside the image.

  Args:
    mesh_vertices: (N, 3) object-frame vertices.
    R: (3, 3) rotation.
    t: (3,) translation.
    camera: the intrinsics.

  Returns:
    (4,) float64. Raises ValueError if a vertex lies at or behind the camera plane (the box is unbounded).
  """
  xc = transform(mesh_vertices, R, t)
  if xc.size == 0:
    raise ValueError("no vertices to project")
  if np.any(xc[:, 2] <= 0):
    raise ValueError("a vertex lies at or behind the camera plane; its projected box is unbounded")
  uv = project(mesh_vertices, R, t, camera)
  return np.concatenate([uv.min(axis=0), uv.max(axis=0)])


def mask_bbox(mask: np.ndarray) -> np.ndarray | None:
  """Box (x1, y1, x2, y2) of a mask in continuous pixel coordinates, or None for an empty mask.

  The box covers the pixels' full extent: columns i0..i1 give x1 = i0, x2 = i1 + 1.
  """
  mask = np.asarray(mask, bool)
  cols = np.flatnonzero(mask.any(axis=0))
  if cols.size == 0:
    return None
  rows = np.flatnonzero(mask.any(axis=1))
  return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], np.float64)


@functools.lru_cache(maxsize=32)
def pixel_rays(camera: Camera) -> np.ndarray:
  """Camera-frame ray directions through every pixel centre, (H * W, 3) float64 with Z = 1.

  Row-major (row j, column i) order: d = ((i + 0.5 - cx) / fx, (j + 0.5 - cy) / fy, 1). With Z = 1 the ray
  parameter of a hit is its camera depth Z_c. Cached per camera and read-only.
  """
  i = (np.arange(camera.width) + 0.5 - camera.cx) / camera.fx
  j = (np.arange(camera.height) + 0.5 - camera.cy) / camera.fy
  d = np.empty((camera.height, camera.width, 3))
  d[..., 0] = i[None, :]
  d[..., 1] = j[:, None]
  d[..., 2] = 1.0
  d = d.reshape(-1, 3)
  d.flags.writeable = False
  return d
