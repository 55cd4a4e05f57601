"""Rotating occupancy volumes on device (Stage I samples a random rotation per example).

Convention (see `disent_jax.cad.voxels` for the grid): rotating a volume by the rotation matrix M gives
  out(p) = in(M^T p)   for every voxel centre p,
i.e. the object is rotated by M about the grid centre, the same way a mesh's vertices move X -> M X.
In voxel index units, with c = (R - 1) / 2 the grid centre, output voxel i samples the input at
  M^T (i - c) + c,
trilinearly (order=1) or at the nearest voxel (order=0), and points outside the grid read as 0
(`jax.scipy.ndimage.map_coordinates(mode='constant')`, which blends towards 0 in the one-voxel band
outside the grid exactly like scipy's mode='grid-constant'; order 1 is our own `_trilinear`, the same
function written so that XLA:CPU builds the rotated volume once).

Exactness at axis-aligned rotations: a float32 rotation matrix of a 90-degree quaternion has entries like
6e-8 instead of 0, which would blur every voxel by ~1e-6. Sample coordinates within a small tolerance of
an integer are therefore snapped to it, so rotations by multiples of 90 degrees about the axes are exact
voxel permutations (equal to np.rot90). The snap is straight-through (the gradient with respect to the
coordinates is left unchanged), so gradients w.r.t. the rotation stay those of the trilinear sampler.

Everything here is jit-able and vmapped over the batch; wrap calls in `jax.jit` (order is static).
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np

from disent_jax import geometry

Array = jax.Array

# Snap tolerance in voxels per voxel of resolution (float32 rounding of the matrix entries, ~6e-8, times the
# largest lever arm R/2, with a safety factor). At R = 32 it is 1e-5 voxel, far below any meaningful shift.
_SNAP_TOL_PER_VOXEL = 3e-7

SAMPLERS = ("map_coordinates", "gather")


def rotate_voxels(volumes: Array, quaternions: Array, order: int = 1,
                  sampler: str = "map_coordinates") -> Array:
  """Rotates volumes by unit quaternions about the grid centre (see the module docstring).

  Args:
    volumes: (B, R, R, R) or a single (R, R, R) volume indexed [x, y, z]; any real or bool dtype.
    quaternions: (B, 4) scalar-first (w, x, y, z) quaternions, or (4,) for a single volume. They are
      normalised, so q and -q (and any positive multiple) give the same result.
    order: 1 for trilinear interpolation (differentiable), 0 for nearest neighbour.
    sampler: how order 1 is computed, the same function either way: 'map_coordinates' (jax's, fused
      into its consumer by XLA) or 'gather' (`_trilinear`: one gather and a reduction, built once; faster
      when a convolution reads the volume directly on XLA:CPU, see `_trilinear`).

  Returns:
    float32 volumes of the input's shape.
  """
  return rotate_voxels_matrix(volumes, geometry.quat_to_matrix(jnp.asarray(quaternions, jnp.float32)),
                              order=order, sampler=sampler)


def rotate_voxels_matrix(volumes: Array, rotations: Array, order: int = 1,
                         sampler: str = "map_coordinates") -> Array:
  """Rotates volumes by rotation matrices about the grid centre: out(p) = in(M^T p).

  Args:
    volumes: (B, R, R, R) or a single (R, R, R) volume indexed [x, y, z].
    rotations: (B, 3, 3) rotation matrices acting on column vectors (the object moves X -> M X), or
      (3, 3) for a single volume.
    order: 1 for trilinear interpolation, 0 for nearest neighbour.
    sampler: 'map_coordinates' or 'gather' (order 1 only; see `rotate_voxels`).

  Returns:
    float32 volumes of the input's shape.

  Raises:
    ValueError: bad order or sampler, non-cubic volumes, or shapes that do not match.
  """
  if order not in (0, 1):
    raise ValueError(f"rotate_voxels supports order 0 (nearest) and 1 (trilinear), got {order}")
  if sampler not in SAMPLERS:
    raise ValueError(f"rotate_voxels: unknown sampler {sampler!r}, expected one of {SAMPLERS}")
  volumes = jnp.asarray(volumes)
  rotations = jnp.asarray(rotations, jnp.float32)
  single = volumes.ndim == 3
  if single:
    if rotations.shape != (3, 3):
      raise ValueError(f"a single volume needs one (3, 3) rotation (or (4,) quaternion), got "
                       f"{rotations.shape}")
    volumes, rotations = volumes[None], rotations[None]
  if volumes.ndim != 4 or len(set(volumes.shape[1:])) != 1:
    raise ValueError(f"volumes must be (B, R, R, R) or (R, R, R), got {volumes.shape}")
  if rotations.shape != (volumes.shape[0], 3, 3):
    raise ValueError(f"{volumes.shape[0]} volumes need ({volumes.shape[0]}, 3, 3) rotations (or "
                     f"({volumes.shape[0]}, 4) quaternions), got {rotations.shape}")
  out = jax.vmap(lambda v, m: _rotate_one(v, m, order, sampler))(volumes.astype(jnp.float32), rotations)
  return out[0] if single else out


def sample_coordinates(rotation: Array, resolution: int) -> Array:
  """Input-index coordinates M^T (i - c) + c read by each output voxel (before snapping).

  Args:
    rotation: (3, 3) rotation matrix.
    resolution: R.

  Returns:
    (3, R, R, R) float32 coordinates, as `map_coordinates` takes them.
  """
  c = (resolution - 1) / 2.0
  rel = np.stack(np.meshgrid(*(np.arange(resolution, dtype=np.float32) - c,) * 3, indexing="ij"))
  rel = jnp.asarray(rel.reshape(3, -1))
  # (M^T rel)_a = sum_b M[b, a] rel_b.
  coords = jnp.asarray(rotation, jnp.float32).T @ rel + c
  return coords.reshape(3, resolution, resolution, resolution)


def _rotate_one(volume: Array, rotation: Array, order: int, sampler: str) -> Array:
  """One (R, R, R) float32 volume rotated by one (3, 3) matrix."""
  resolution = volume.shape[0]
  coords = sample_coordinates(rotation, resolution)
  nearest = jnp.round(coords)
  tol = _SNAP_TOL_PER_VOXEL * max(resolution, 1)
  snap = jnp.where(jnp.abs(nearest - coords) < tol, nearest - coords, 0.0)
  coords = coords + jax.lax.stop_gradient(snap)
  if order == 1 and sampler == "gather":
    return _trilinear(volume, coords)
  return jax.scipy.ndimage.map_coordinates(volume, list(coords), order=order, mode="constant", cval=0.0)


def _trilinear(volume: Array, coords: Array) -> Array:
  """`map_coordinates(volume, coords, order=1, mode='constant', cval=0)`, written for XLA:CPU.

  The 8 corner values come from one gather and are combined by one reduction over the corner axis.
  map_coordinates ends in an elementwise weighted sum of 8 separate gathers, and XLA fuses that
  elementwise tail (with the weights' arithmetic) into every consumer of the rotated volume: in the
  Stage I step the first convolution's space-to-depth copy and its transposed copy for the weight
  gradient each recomputed it (the 8 gathers 88 ms one after the other, the two copies 22 and 93 ms; batch
  64 at 32^3, 2 cores, jax 0.10.2), and an im2col first convolution would recompute it in each of its 125
  patch slices. A reduction is not fused into its consumers, so the volume is built once: the whole
  rotation then takes ~60 ms there. When a single consumer materialises the volume anyway (the box filter
  of `input_pool`, a matmul), map_coordinates' fused loop is faster (~8 ms for 32 volumes at 32^3 against
  ~25 ms): hence the choice (`rotate_voxels(sampler=...)`). Equal to map_coordinates to float rounding,
  values and gradient (tested).

  Args:
    volume: (R, R, R) float32.
    coords: (3, R, R, R) input-index coordinates read by each output voxel.

  Returns:
    (R, R, R) float32: corners outside the grid read as 0.
  """
  r = volume.shape
  lower = jnp.floor(coords)
  frac = coords - lower
  lower = lower.astype(jnp.int32)
  # Per axis a and side s (0: the lower neighbour, 1: the upper): clipped index, weight, inside the grid.
  per_axis = []
  for a in range(3):
    sides = []
    for side, w in ((0, 1.0 - frac[a]), (1, frac[a])):
      i = lower[a] + side
      sides.append((jnp.clip(i, 0, r[a] - 1), w, (i >= 0) & (i < r[a])))
    per_axis.append(sides)
  flat_index, weights, inside = [], [], []
  for cx, cy, cz in itertools.product((0, 1), repeat=3):
    (ix, wx, mx), (iy, wy, my), (iz, wz, mz) = per_axis[0][cx], per_axis[1][cy], per_axis[2][cz]
    flat_index.append((ix * r[1] + iy) * r[2] + iz)
    weights.append(wx * wy * wz)
    inside.append(mx & my & mz)
  values = volume.reshape(-1)[jnp.stack(flat_index)]  # (8, R, R, R), one gather
  # Validity as a select, not folded into the weights: XLA otherwise hands multiply + sum to YNNPACK as one
  # fusion, which took 71 ms alone in the Stage I step (whole step 667 -> 632 ms with the select).
  return jnp.sum(jnp.where(jnp.stack(inside), values * jnp.stack(weights), 0.0), axis=0)
