"""Rotation and translation conventions of disent_jax: quaternions, geodesic errors, anchors, viewpoints.

Conventions (fixed once, see ../shared/design.md):
  * Quaternions are unit and scalar-first, (w, x, y, z). q and -q are the same rotation; `quat_canonical`
    picks w >= 0 where a unique form is needed.
  * Rotation matrices act on column vectors and map the object frame to the camera frame: X_c = R X_o + t.
  * `quat_to_matrix(quat_multiply(q1, q2)) == quat_to_matrix(q1) @ quat_to_matrix(q2)` (Hamilton product).
  * Angles are radians in every function argument; errors are reported in degrees.

Every function here is written in `jax.numpy`, works on arbitrary leading batch dimensions and can be jitted.
Quaternion code is written by hand rather than taken from jaxlie: jaxlie's `SO3` wraps one rotation per
object (batching needs vmap over pytrees) and has no canonical sign or anchor operations; the few formulas
below are checked against scipy's `Rotation` in tests/test_geometry.py.
"""

from __future__ import annotations

import dataclasses
import logging
from types import ModuleType

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

# ---------------------------------------------------------------------------------------------------------
# Quaternion algebra.


def quat_normalize(q: Array, eps: float = 1e-12) -> Array:
  """Scales quaternions (..., 4) to unit norm."""
  q = jnp.asarray(q)
  return q / jnp.maximum(jnp.linalg.norm(q, axis=-1, keepdims=True), eps)


def quat_multiply(q1: Array, q2: Array) -> Array:
  """Hamilton product q1 * q2 of scalar-first quaternions (..., 4); broadcasts over batch dims."""
  q1, q2 = jnp.asarray(q1), jnp.asarray(q2)
  w1, x1, y1, z1 = jnp.moveaxis(q1, -1, 0)
  w2, x2, y2, z2 = jnp.moveaxis(q2, -1, 0)
  return jnp.stack([
      w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
      w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
      w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
      w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
  ], axis=-1)


def quat_conjugate(q: Array) -> Array:
  """Conjugate (w, -x, -y, -z); the inverse of a unit quaternion."""
  q = jnp.asarray(q)
  return q * jnp.array([1.0, -1.0, -1.0, -1.0], dtype=q.dtype)


def quat_inverse(q: Array) -> Array:
  """Inverse q^-1 = conj(q) / |q|^2 (equals the conjugate for unit quaternions)."""
  q = jnp.asarray(q)
  return quat_conjugate(q) / jnp.sum(q * q, axis=-1, keepdims=True)


def quat_canonical(q: Array) -> Array:
  """The representative of {q, -q} whose first non-zero component is positive (so w >= 0)."""
  q = jnp.asarray(q)
  # Tie-break on x, then y, then z when w == 0, so the result is unique for every rotation.
  sign = jnp.ones(q.shape[:-1], q.dtype)
  decided = jnp.zeros(q.shape[:-1], bool)
  for i in range(4):
    c = q[..., i]
    sign = jnp.where(~decided & (c < 0), -1.0, sign)
    decided = decided | (c != 0)
  return q * sign[..., None]


def quat_to_matrix(q: Array) -> Array:
  """Rotation matrices (..., 3, 3) of quaternions (..., 4) (normalised first)."""
  w, x, y, z = jnp.moveaxis(quat_normalize(q), -1, 0)
  return jnp.stack([
      jnp.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
      jnp.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
      jnp.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
  ], axis=-2)


def matrix_to_quat(m: Array) -> Array:
  """Canonical unit quaternions (..., 4) of rotation matrices (..., 3, 3).

  Shepperd's method, branch-free: all four candidate formulas are evaluated and the one with the largest
  pivot (hence the best conditioned) is selected per matrix, so the result is accurate for every angle.
  """
  m = jnp.asarray(m)
  m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
  m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
  m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
  pivots = jnp.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22,
                      1 - m00 + m11 - m22, 1 - m00 - m11 + m22], axis=-1)
  cands = jnp.stack([
      jnp.stack([pivots[..., 0], m21 - m12, m02 - m20, m10 - m01], -1),
      jnp.stack([m21 - m12, pivots[..., 1], m01 + m10, m02 + m20], -1),
      jnp.stack([m02 - m20, m01 + m10, pivots[..., 2], m12 + m21], -1),
      jnp.stack([m10 - m01, m02 + m20, m12 + m21, pivots[..., 3]], -1),
  ], axis=-2)
  best = jnp.argmax(pivots, axis=-1)
  q = jnp.take_along_axis(cands, best[..., None, None], axis=-2)[..., 0, :]
  return quat_canonical(quat_normalize(q))


def random_quaternions(key: Array, shape: tuple[int, ...] = (), dtype=jnp.float32) -> Array:
  """Uniformly distributed (Haar) random unit quaternions of shape `shape + (4,)`, canonical sign.

  A normalised 4-D standard normal is uniform on S^3, and S^3 -> SO(3) pushes that to the Haar measure.
  """
  return quat_canonical(quat_normalize(jax.random.normal(key, tuple(shape) + (4,), dtype)))


def axis_angle_to_quat(rotvec: Array) -> Array:
  """Quaternions (..., 4) of rotation vectors (..., 3) (axis * angle in radians)."""
  rotvec = jnp.asarray(rotvec)
  angle = jnp.linalg.norm(rotvec, axis=-1, keepdims=True)
  half = 0.5 * angle
  # sin(a/2)/a via a series near 0 keeps it finite and differentiable at the identity.
  small = angle < 1e-4
  safe = jnp.where(small, 1.0, angle)
  k = jnp.where(small, 0.5 - angle ** 2 / 48.0, jnp.sin(half) / safe)
  return jnp.concatenate([jnp.cos(half), rotvec * k], axis=-1)


def quat_to_axis_angle(q: Array) -> Array:
  """Rotation vectors (..., 3) with angle in [0, pi] of quaternions (..., 4)."""
  q = quat_canonical(quat_normalize(q))
  v = q[..., 1:]
  s = jnp.linalg.norm(v, axis=-1, keepdims=True)
  angle = 2.0 * jnp.arctan2(s, q[..., :1])
  small = s < 1e-8
  return v * jnp.where(small, 2.0, angle / jnp.where(small, 1.0, s))


def quat_slerp(q0: Array, q1: Array, t: Array) -> Array:
  """Spherical linear interpolation from q0 (t=0) to q1 (t=1) along the shorter arc."""
  q0, q1 = quat_normalize(q0), quat_normalize(q1)
  t = jnp.asarray(t)[..., None]
  dot = jnp.sum(q0 * q1, axis=-1, keepdims=True)
  q1 = jnp.where(dot < 0, -q1, q1)
  dot = jnp.abs(dot)
  theta = jnp.arccos(jnp.clip(dot, -1.0, 1.0))
  near = dot > 0.9995  # fall back to normalised lerp where sin(theta) ~ 0
  sin_t = jnp.where(near, 1.0, jnp.sin(theta))
  w0 = jnp.where(near, 1.0 - t, jnp.sin((1.0 - t) * theta) / sin_t)
  w1 = jnp.where(near, t, jnp.sin(t * theta) / sin_t)
  return quat_normalize(w0 * q0 + w1 * q1)


# ---------------------------------------------------------------------------------------------------------
# Geodesic distances. Both use atan2 of (sin, cos) of the relative angle rather than arccos of the cosine:
# arccos loses half the digits near 0 and near 180 degrees, atan2 is well conditioned everywhere.


def _safe_norm(x: Array, axis: int = -1) -> Array:
  """Euclidean norm with a finite gradient at 0."""
  sq = jnp.sum(x * x, axis=axis)
  nonzero = sq > 0
  return jnp.where(nonzero, jnp.sqrt(jnp.where(nonzero, sq, 1.0)), 0.0)


def geodesic_rad(r1: Array, r2: Array) -> Array:
  """Geodesic distance ||log(R1 R2^T)||_F / sqrt(2) in radians between rotation matrices (..., 3, 3)."""
  r1, r2 = jnp.asarray(r1), jnp.asarray(r2)
  rel = r1 @ jnp.swapaxes(r2, -1, -2)
  cos = 0.5 * (jnp.trace(rel, axis1=-2, axis2=-1) - 1.0)
  vee = jnp.stack([rel[..., 2, 1] - rel[..., 1, 2], rel[..., 0, 2] - rel[..., 2, 0],
                   rel[..., 1, 0] - rel[..., 0, 1]], -1)
  sin = 0.5 * _safe_norm(vee)
  return jnp.arctan2(sin, cos)


def geodesic_deg(r1: Array, r2: Array) -> Array:
  """Geodesic distance in degrees between rotation matrices (..., 3, 3); the paper's Eq. (4)."""
  return jnp.degrees(geodesic_rad(r1, r2))


def quat_geodesic_deg(q1: Array, q2: Array) -> Array:
  """Geodesic distance 2 arccos(|<q1, q2>|) in degrees (paper Eq. 3), with q ~ -q.

  Computed as 2 atan2(|v|, |w|) of the relative quaternion q1^-1 q2, which is accurate near 0 and 180.
  """
  rel = quat_multiply(quat_conjugate(quat_normalize(q1)), quat_normalize(q2))
  return jnp.degrees(2.0 * jnp.arctan2(_safe_norm(rel[..., 1:]), jnp.abs(rel[..., 0])))


# ---------------------------------------------------------------------------------------------------------
# Rotation anchors (paper Eq. 1-3).


def rotation_anchors(n: int) -> np.ndarray:
  """The deduplicated anchor table of paper Eq. (1) for an n x n x n grid.

  u1 runs over linspace(0, 1, n) (both ends), u2 and u3 over k / n, k = 0..n-1, and
  q = (sqrt(1-u1) sin 2 pi u2, sqrt(1-u1) cos 2 pi u2, sqrt(u1) sin 2 pi u3, sqrt(u1) cos 2 pi u3),
  read scalar-first. At u1 = 0 (and u1 = 1) q does not depend on u3 (u2), so those grid rows repeat the
  same rotations; duplicates (as rotations, q ~ -q) are removed keeping the first occurrence in
  (u1, u2, u3) order. n = 7 gives the paper's 259 anchors.

  Args:
    n: grid size per dimension (the paper uses 7; its Table 3 ablation uses 1, 4, 9).

  Returns:
    (K, 4) float64 canonical unit quaternions, deterministic.
  """
  if n < 1:
    raise ValueError(f"rotation_anchors needs n >= 1, got {n}")
  u1 = np.linspace(0.0, 1.0, n)  # n = 1 gives [0.0]
  u23 = np.arange(n) / n
  g1, g2, g3 = np.meshgrid(u1, u23, u23, indexing="ij")
  g1, g2, g3 = g1.ravel(), g2.ravel(), g3.ravel()
  q = np.stack([np.sqrt(1 - g1) * np.sin(2 * np.pi * g2), np.sqrt(1 - g1) * np.cos(2 * np.pi * g2),
                np.sqrt(g1) * np.sin(2 * np.pi * g3), np.sqrt(g1) * np.cos(2 * np.pi * g3)], axis=-1)
  keep: list[np.ndarray] = []
  for cand in q:
    if not keep or np.max(np.abs(np.asarray(keep) @ cand)) < 1.0 - 1e-9:
      keep.append(cand)
  return _np_quat_canonical(np.asarray(keep))


def _np_quat_canonical(q: np.ndarray) -> np.ndarray:
  """NumPy twin of `quat_canonical` (keeps float64 without enabling jax x64)."""
  q = np.array(q, np.float64)
  for row in q.reshape(-1, 4):
    nz = np.flatnonzero(np.abs(row) > 1e-15)
    if nz.size and row[nz[0]] < 0:
      row *= -1.0
  return q


def assign_rotation_anchor(q: Array, anchors: Array) -> Array:
  """Index of the closest anchor, argmax_a |<q, q_a>| (paper Eq. 3), as one matmul on device.

  Args:
    q: (..., 4) unit quaternions.
    anchors: (K, 4) anchor table from `rotation_anchors`.

  Returns:
    (...,) int32 anchor indices.
  """
  anchors = jnp.asarray(anchors, jnp.asarray(q).dtype)
  return jnp.argmax(jnp.abs(jnp.asarray(q) @ anchors.T), axis=-1).astype(jnp.int32)


def encode_rotation(q: Array, anchors: Array) -> tuple[Array, Array]:
  """Anchor class and residual of a rotation: q_d = q_gt * q_a^-1 (paper Eq. 2), canonical sign.

  Returns:
    (anchor index (...,) int32, residual quaternion (..., 4) with w >= 0).
  """
  q = quat_normalize(q)
  anchors = jnp.asarray(anchors, q.dtype)
  idx = assign_rotation_anchor(q, anchors)
  qa = anchors[idx]
  return idx, quat_canonical(quat_multiply(q, quat_conjugate(qa)))


def decode_rotation(idx: Array, q_d: Array, anchors: Array) -> Array:
  """Inverse of `encode_rotation`: q = q_d * q_a (canonical sign)."""
  q_d = quat_normalize(q_d)
  qa = jnp.asarray(anchors, q_d.dtype)[idx]
  return quat_canonical(quat_multiply(q_d, qa))


# ---------------------------------------------------------------------------------------------------------
# Translation (paper 3.3): crop-relative, up to scale, anchor cubes + normalised residual.
#
# THE definition of the translation label t = (x, y, z) (every producer and consumer uses these functions):
#   Let the object (its normalised frame's origin, see disent_jax/cad/model.py) sit at camera coordinates
#   T = (X, Y, Z), seen by a pinhole camera K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] (pixel i's centre at
#   u = i + 0.5), and let the object's bounding box in the image be (x1, y1, x2, y2), w = x2 - x1,
#   h = y2 - y1. The network sees the square crop of side s = max(w, h) centred on the box centre
#   (bx, by) (`disent_jax.datasets.crops.square_crop`), whose top-left corner is (bx - s/2, by - s/2).
#   With f = (fx + fy) / 2 and the projected centre u = fx X / Z + cx, v = fy Y / Z + cy:
#     x = (u - (bx - s/2)) / s,   y = (v - (by - s/2)) / s   (projected centre in the crop's coordinates:
#                                                             0 = left/top edge of the crop, 1 = right/bottom)
#     z = (Z / r) * (s / f)                                   (depth in units of the object's radius r = 0.5,
#                                                             as seen by a camera whose focal length is s)
#   x and y are measured in the square the network sees (not in the box), so they stay a function of the
#   input image when the box is jittered. z is about 2 s / d for an object whose projected bounding sphere
#   has diameter d pixels. Knowing K and the box recovers T exactly.

OBJECT_RADIUS = 0.5  # radius of every normalised CAD model (disent_jax.cad.model.NORMALIZED_RADIUS)


def _crop_square(bbox: Array, xp: ModuleType = jnp) -> tuple[Array, Array, Array]:
  """Top-left corner (x0, y0) and side s of the square crop of a box (..., 4)."""
  x1, y1, x2, y2 = xp.moveaxis(xp.asarray(bbox), -1, 0)
  s = xp.maximum(x2 - x1, y2 - y1)
  return 0.5 * (x1 + x2) - 0.5 * s, 0.5 * (y1 + y2) - 0.5 * s, s


def camera_to_crop_translation(t_cam: Array, bbox: Array, intrinsics: Array,
                               xp: ModuleType = jnp) -> Array:
  """Crop-relative translation label (x, y, z) of a camera-frame translation (see the definition above).

  Args:
    t_cam: (..., 3) object origin in the camera frame (Z > 0).
    bbox: (..., 4) box (x1, y1, x2, y2) in pixels (the crop is its centred square).
    intrinsics: (..., 3, 3) camera matrices K.
    xp: the array module, `jax.numpy` or `numpy` (the input pipeline's host-side re-encoding uses NumPy:
      a jax call there would queue behind the training step on a CPU device).

  Returns:
    (..., 3) labels (x, y, z).
  """
  t_cam, k = xp.asarray(t_cam), xp.asarray(intrinsics)
  fx, fy, cx, cy = k[..., 0, 0], k[..., 1, 1], k[..., 0, 2], k[..., 1, 2]
  big_x, big_y, big_z = xp.moveaxis(t_cam, -1, 0)
  x0, y0, s = _crop_square(bbox, xp)
  u = fx * big_x / big_z + cx
  v = fy * big_y / big_z + cy
  f = 0.5 * (fx + fy)
  return xp.stack([(u - x0) / s, (v - y0) / s, big_z / OBJECT_RADIUS * s / f], axis=-1)


def crop_to_camera_translation(t_crop: Array, bbox: Array, intrinsics: Array,
                               xp: ModuleType = jnp) -> Array:
  """Inverse of `camera_to_crop_translation`: camera-frame (X, Y, Z) from (x, y, z), the box and K.

  `xp`: the array module, as for `camera_to_crop_translation`.
  """
  t_crop, k = xp.asarray(t_crop), xp.asarray(intrinsics)
  fx, fy, cx, cy = k[..., 0, 0], k[..., 1, 1], k[..., 0, 2], k[..., 1, 2]
  x, y, z = xp.moveaxis(t_crop, -1, 0)
  x0, y0, s = _crop_square(bbox, xp)
  f = 0.5 * (fx + fy)
  big_z = z * OBJECT_RADIUS * f / s
  u = x0 + x * s
  v = y0 + y * s
  return xp.stack([(u - cx) * big_z / fx, (v - cy) * big_z / fy, big_z], axis=-1)


@dataclasses.dataclass(frozen=True)
class TranslationGrid:
  """Axis-aligned anchor cells over the crop-relative translation range (paper 3.3).

  The paper's "equal cubes": the range [lower, upper] is divided into `cells[i]` equal intervals per axis.
  Anchor index = (ix * ny + iy) * nz + iz.

  Defaults: x and y span the paper's [-0.25, 1.5]. The paper's z range [0.5, 10] belongs to its own depth
  definition, which it does not spell out ("determined by the translation range in the training data"); for
  ours (`camera_to_crop_translation`) the synthetic zoo data has z in [0.32, 2.08] (median 1.66), so the
  default z range is [0.25, 2.75]. With 7 x 7 x 10 cells every cell is a cube of side 0.25.
  """
  lower: tuple[float, float, float] = (-0.25, -0.25, 0.25)
  upper: tuple[float, float, float] = (1.5, 1.5, 2.75)
  cells: tuple[int, int, int] = (7, 7, 10)

  def __post_init__(self):
    if any(c < 1 for c in self.cells) or any(u <= l for l, u in zip(self.lower, self.upper)):
      raise ValueError(f"invalid TranslationGrid {self}")

  @property
  def num_anchors(self) -> int:
    return int(np.prod(self.cells))

  @property
  def cell_size(self) -> np.ndarray:
    return (np.asarray(self.upper) - np.asarray(self.lower)) / np.asarray(self.cells)

  def centers(self) -> np.ndarray:
    """(K, 3) cell centres t_a, in anchor-index order."""
    idx = np.arange(self.num_anchors)
    cell = np.stack(np.unravel_index(idx, self.cells), -1)
    return np.asarray(self.lower) + (cell + 0.5) * self.cell_size


def encode_translation(t: Array, grid: TranslationGrid) -> tuple[Array, Array, Array]:
  """Anchor cell and residual normalised to [0, 1] within it.

  Values outside the grid's range are clipped to the border cell (residual clipped to [0, 1]), never
  wrapped; the returned mask says which labels were clipped so host code can count and log them
  (`count_out_of_range`).

  Args:
    t: (..., 3) crop-relative translations.
    grid: the anchor grid.

  Returns:
    (anchor index (...,) int32, residual (..., 3) in [0, 1], out_of_range (...,) bool).
  """
  t = jnp.asarray(t)
  lower = jnp.asarray(grid.lower, t.dtype)
  size = jnp.asarray(grid.cell_size, t.dtype)
  cells = jnp.asarray(grid.cells)
  pos = (t - lower) / size
  out = jnp.any((t < lower) | (t > jnp.asarray(grid.upper, t.dtype)), axis=-1)
  cell = jnp.clip(jnp.floor(pos).astype(jnp.int32), 0, cells - 1)
  resid = jnp.clip(pos - cell, 0.0, 1.0)
  idx = (cell[..., 0] * grid.cells[1] + cell[..., 1]) * grid.cells[2] + cell[..., 2]
  return idx.astype(jnp.int32), resid, out


def decode_translation(idx: Array, resid: Array, grid: TranslationGrid) -> Array:
  """Inverse of `encode_translation`: t = lower + (cell + residual) * cell_size."""
  idx, resid = jnp.asarray(idx), jnp.asarray(resid)
  nyz = grid.cells[1] * grid.cells[2]
  cell = jnp.stack([idx // nyz, (idx // grid.cells[2]) % grid.cells[1], idx % grid.cells[2]], -1)
  return (jnp.asarray(grid.lower, resid.dtype)
          + (cell.astype(resid.dtype) + resid) * jnp.asarray(grid.cell_size, resid.dtype))


def count_out_of_range(t: np.ndarray, grid: TranslationGrid, what: str = "translations") -> int:
  """Counts labels outside the grid's range and logs a warning with the count (host side)."""
  t = np.asarray(t, np.float64).reshape(-1, 3)
  n = int(np.sum(np.any((t < np.asarray(grid.lower)) | (t > np.asarray(grid.upper)), axis=-1)))
  if n:
    logging.warning("%d of %d %s lie outside the translation anchor range %s..%s and are clipped to "
                    "the border cells", n, len(t), what, grid.lower, grid.upper)
  return n


# ---------------------------------------------------------------------------------------------------------
# Pascal3D+ viewpoints (Tulsiani & Malik's convention, see design.md).


def rot_x(a: Array) -> Array:
  """Active right-handed rotation matrices (..., 3, 3) about x by angles a (radians)."""
  a = jnp.asarray(a)
  c, s = jnp.cos(a), jnp.sin(a)
  o, z = jnp.ones_like(a), jnp.zeros_like(a)
  return jnp.stack([jnp.stack([o, z, z], -1), jnp.stack([z, c, -s], -1),
                    jnp.stack([z, s, c], -1)], -2)


def rot_z(a: Array) -> Array:
  """Active right-handed rotation matrices (..., 3, 3) about z by angles a (radians)."""
  a = jnp.asarray(a)
  c, s = jnp.cos(a), jnp.sin(a)
  o, z = jnp.ones_like(a), jnp.zeros_like(a)
  return jnp.stack([jnp.stack([c, -s, z], -1), jnp.stack([s, c, z], -1),
                    jnp.stack([z, z, o], -1)], -2)


# Two matrices describe a Pascal3D+ viewpoint, and they differ by a transpose and a constant flip:
#   * R_vk = Rz(az) Rx(pi/2 - el) Rz(-theta) (`viewpoint_to_rotation`) is the `rot` matrix that
#     ViewpointsAndKeypoints and most Pascal3D+ papers store and evaluate. It is the transpose of the rotation
#     from the object to an OpenGL-style camera (looking along -Z, Y up).
#   * R_cv = diag(1, -1, -1) R_vk^T (`viewpoint_to_camera_rotation`) maps the object to our CV camera
#     (X right, Y down, Z forward): X_c = R_cv X_o + t. This is THE rotation of the project's pose labels
#     (quaternions, voxel rotations, renders, overlays). Check: Pascal3D+'s project_3d.m puts the camera at
#     d (cos el sin az, -cos el cos az, sin el); with R_cv that camera centre is -R_cv^T t for t = (0, 0, d).
# Geodesic errors are the same under either form (d(D A^T, D B^T) = d(A, B)), so figures computed against
# the annotations' `rot` matrices agree with figures computed in our convention.
_GL_TO_CV = np.diag([1.0, -1.0, -1.0])


def viewpoint_to_rotation(azimuth: Array, elevation: Array, theta: Array) -> Array:
  """The Pascal3D+ annotation matrix of a viewpoint (radians): Rz(az) Rx(pi/2 - el) Rz(-theta).

  This is MATLAB `angle2dcm(theta, elevation - pi/2, -azimuth, 'ZXZ')` as used by ViewpointsAndKeypoints
  and most Pascal3D+ papers; it reproduces the `rot` matrices stored with the real annotations. For the
  object-to-camera rotation used to render or label a pose, use `viewpoint_to_camera_rotation`.

  Args:
    azimuth, elevation, theta: broadcastable arrays of angles in radians.

  Returns:
    (..., 3, 3) rotation matrices.
  """
  azimuth, elevation, theta = jnp.broadcast_arrays(jnp.asarray(azimuth), jnp.asarray(elevation),
                                                   jnp.asarray(theta))
  return rot_z(azimuth) @ rot_x(jnp.pi / 2 - elevation) @ rot_z(-theta)


def rotation_to_viewpoint(r: Array) -> tuple[Array, Array, Array]:
  """Inverse of `viewpoint_to_rotation`: (azimuth in [0, 2 pi), elevation in [-pi/2, pi/2], theta in
  (-pi, pi]) in radians.

  R = Rz(a) Rx(b) Rz(c) with b = pi/2 - elevation in [0, pi]; at the poles (b = 0 or pi) only a +- c is
  defined and theta is set to 0.
  """
  r = jnp.asarray(r)
  sin_b = jnp.sqrt(r[..., 0, 2] ** 2 + r[..., 1, 2] ** 2)
  b = jnp.arctan2(sin_b, r[..., 2, 2])
  pole = sin_b < 1e-9
  a = jnp.where(pole, jnp.arctan2(r[..., 1, 0], r[..., 0, 0]), jnp.arctan2(r[..., 0, 2], -r[..., 1, 2]))
  c = jnp.where(pole, 0.0, jnp.arctan2(r[..., 2, 0], r[..., 2, 1]))
  azimuth = jnp.mod(a, 2 * jnp.pi)
  theta = -c
  theta = jnp.where(theta <= -jnp.pi, theta + 2 * jnp.pi, theta)
  return azimuth, jnp.pi / 2 - b, theta


def viewpoint_to_camera_rotation(azimuth: Array, elevation: Array, theta: Array) -> Array:
  """Object-to-camera rotation R_cv (X_c = R_cv X_o + t, CV camera) of a Pascal3D+ viewpoint (radians).

  R_cv = diag(1, -1, -1) @ viewpoint_to_rotation(...)^T: azimuth 0, elevation 0 looks at the object's front
  (-y) with +z up in the image; positive elevation looks from above; azimuth 90 degrees sees the +x side.
  """
  r_vk = viewpoint_to_rotation(azimuth, elevation, theta)
  return jnp.asarray(_GL_TO_CV, r_vk.dtype) @ jnp.swapaxes(r_vk, -1, -2)


def camera_rotation_to_viewpoint(r_cv: Array) -> tuple[Array, Array, Array]:
  """Inverse of `viewpoint_to_camera_rotation`: (azimuth, elevation, theta) in radians."""
  r_cv = jnp.asarray(r_cv)
  return rotation_to_viewpoint(jnp.swapaxes(r_cv, -1, -2) @ jnp.asarray(_GL_TO_CV, r_cv.dtype))
