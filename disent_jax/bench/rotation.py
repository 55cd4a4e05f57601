"""Measurements of on-device voxel rotation and rotation-anchor labelling against scipy.

1. Volumes per second for a batch of random rotations: `jax.jit(rotate_voxels)` (trilinear) against a
   loop of `scipy.ndimage.affine_transform(order=1, mode='grid-constant')` with the same matrices. The two
   results are also compared (they agree to float32 rounding).
2. Anchor labelling (paper Eq. 3): `geometry.assign_rotation_anchor` (one matmul + argmax, jitted) against
   a scipy cKDTree over the anchors and their negatives (q and -q are the same rotation); the labels must
   agree.
The volumes are solid random shapes (unions of boxes), so the interpolation work is representative. Used
by `launch/bench_rotate.py` and the benchmark suite (`disent_jax/bench/suite.py`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage
from scipy import spatial

from disent_jax import geometry
from disent_jax.bench import timing
from disent_jax.cad import rotate


def random_solids(rng: np.random.Generator, batch: int, r: int) -> np.ndarray:
  """(batch, r, r, r) float32 unions of 3 random boxes inside the central sphere."""
  vols = np.zeros((batch, r, r, r), np.float32)
  for b in range(batch):
    for _ in range(3):
      lo = rng.integers(r // 4, r // 2, 3)
      hi = lo + rng.integers(2, r // 4 + 1, 3)
      vols[b, lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = 1.0
  return vols


def bench_rotation(batch: int, r: int, repeats: int) -> dict:
  """Times jit(rotate_voxels) and the scipy loop on the same inputs, interleaved.

  Args:
    batch: volumes per call.
    r: voxels per axis.
    repeats: timed repeats (median reported).

  Returns:
    dict with jax_s, scipy_s (median seconds per batch), compile_s (our first call minus steady state),
    scipy_first_s and max_abs_diff between the two results.
  """
  rng = np.random.default_rng(0)
  vols = random_solids(rng, batch, r)
  quats = geometry.random_quaternions(jax.random.key(0), (batch,))
  mats = np.asarray(geometry.quat_to_matrix(quats), np.float64)
  dev_vols, dev_quats = jnp.asarray(vols), jnp.asarray(quats)
  jitted = jax.jit(rotate.rotate_voxels)
  c = np.full(3, (r - 1) / 2)

  def scipy_loop():
    return np.stack([ndimage.affine_transform(v, m.T, offset=c - m.T @ c, order=1, mode="grid-constant",
                                              cval=0.0) for v, m in zip(vols, mats)])

  t = timing.time_interleaved({"jax": lambda: jitted(dev_vols, dev_quats).block_until_ready(),
                               "scipy": scipy_loop}, repeats)
  diff = float(np.abs(np.asarray(jitted(dev_vols, dev_quats)) - scipy_loop()).max())
  return {"jax_s": t["jax"].median_s, "scipy_s": t["scipy"].median_s, "compile_s": t["jax"].compile_s,
          "scipy_first_s": t["scipy"].first_s, "max_abs_diff": diff}


def bench_labels(n_quats: int, anchor_n: int, repeats: int) -> dict:
  """Times matmul-argmax anchor labels against a cKDTree over +-anchors, interleaved.

  Args:
    n_quats: quaternions per call.
    anchor_n: anchor grid size n (paper: 7 -> 259 anchors).
    repeats: timed repeats (median reported).

  Returns:
    dict with ours_s, kdtree_s (median seconds), compile_s, agree (fraction of equal labels), anchors.
  """
  anchors = geometry.rotation_anchors(anchor_n)
  quats = np.asarray(geometry.random_quaternions(jax.random.key(1), (n_quats,)))
  dev_anchors, dev_quats = jnp.asarray(anchors, jnp.float32), jnp.asarray(quats)
  assign = jax.jit(geometry.assign_rotation_anchor)
  tree = spatial.cKDTree(np.concatenate([anchors, -anchors]))

  def kdtree_labels():
    return tree.query(quats)[1] % len(anchors)

  t = timing.time_interleaved({"ours": lambda: assign(dev_quats, dev_anchors).block_until_ready(),
                               "kdtree": kdtree_labels}, repeats)
  agree = float(np.mean(np.asarray(assign(dev_quats, dev_anchors)) == kdtree_labels()))
  return {"ours_s": t["ours"].median_s, "kdtree_s": t["kdtree"].median_s, "compile_s": t["ours"].compile_s,
          "agree": agree, "anchors": len(anchors)}
