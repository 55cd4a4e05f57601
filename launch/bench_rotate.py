"""Benchmarks on-device voxel rotation and rotation-anchor labelling against scipy, in one run.

  python -m launch.bench_rotate [--batch=64 --resolution=32 --repeats=7]

1. Volumes per second for a batch of random rotations: `jax.jit(rotate_voxels)` (trilinear) against a
   loop of `scipy.ndimage.affine_transform(order=1, mode='grid-constant')` with the same matrices. The
   first (compiling) call is excluded; the median of --repeats timed calls is reported. The two results
   are also compared (they agree to float32 rounding).
2. Anchor labelling (paper Eq. 3): `geometry.assign_rotation_anchor` (one matmul + argmax, jitted) against
   a scipy cKDTree over the anchors and their negatives (q and -q are the same rotation), for
   --label_batch quaternions; the labels must agree.
The volumes are solid random shapes (unions of boxes), so the interpolation work is representative.
"""

import statistics
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage
from scipy import spatial

from disent_jax import geometry
from disent_jax.cad import rotate

_BATCH = flags.DEFINE_integer("batch", 64, "Volumes per rotation batch.", lower_bound=1)
_RESOLUTION = flags.DEFINE_integer("resolution", 32, "Voxels per axis.", lower_bound=2)
_REPEATS = flags.DEFINE_integer("repeats", 7, "Timed repeats (the median is reported).", lower_bound=1)
_LABEL_BATCH = flags.DEFINE_integer("label_batch", 4096, "Quaternions per anchor-labelling batch.",
                                    lower_bound=1)
_ANCHOR_N = flags.DEFINE_integer("anchor_n", 7, "Anchor grid size n (paper: 7 -> 259 anchors).",
                                 lower_bound=1)


def _median_seconds(fn, repeats: int) -> float:
  """Median wall time of `fn()` over `repeats` calls, after one untimed warm-up call."""
  fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def _random_solids(rng: np.random.Generator, batch: int, r: int) -> np.ndarray:
  """(batch, r, r, r) float32 unions of 3 random boxes inside the central sphere."""
  vols = np.zeros((batch, r, r, r), np.float32)
  for b in range(batch):
    for _ in range(3):
      lo = rng.integers(r // 4, r // 2, 3)
      hi = lo + rng.integers(2, r // 4 + 1, 3)
      vols[b, lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = 1.0
  return vols


def bench_rotation(batch: int, r: int, repeats: int) -> dict:
  """Times jit(rotate_voxels) and the scipy loop on the same inputs."""
  rng = np.random.default_rng(0)
  vols = _random_solids(rng, batch, r)
  quats = geometry.random_quaternions(jax.random.key(0), (batch,))
  mats = np.asarray(geometry.quat_to_matrix(quats), np.float64)
  dev_vols, dev_quats = jnp.asarray(vols), jnp.asarray(quats)
  jitted = jax.jit(rotate.rotate_voxels)
  start = time.perf_counter()
  jitted(dev_vols, dev_quats).block_until_ready()
  compile_s = time.perf_counter() - start
  c = np.full(3, (r - 1) / 2)

  def scipy_loop():
    return np.stack([ndimage.affine_transform(v, m.T, offset=c - m.T @ c, order=1, mode="grid-constant",
                                              cval=0.0) for v, m in zip(vols, mats)])

  jax_s = _median_seconds(lambda: jitted(dev_vols, dev_quats).block_until_ready(), repeats)
  scipy_s = _median_seconds(scipy_loop, repeats)
  diff = float(np.abs(np.asarray(jitted(dev_vols, dev_quats)) - scipy_loop()).max())
  return {"jax_s": jax_s, "scipy_s": scipy_s, "compile_s": compile_s, "max_abs_diff": diff}


def bench_labels(n_quats: int, anchor_n: int, repeats: int) -> dict:
  """Times matmul-argmax anchor labels against a cKDTree over +-anchors."""
  anchors = geometry.rotation_anchors(anchor_n)
  quats = np.asarray(geometry.random_quaternions(jax.random.key(1), (n_quats,)))
  dev_anchors, dev_quats = jnp.asarray(anchors, jnp.float32), jnp.asarray(quats)
  assign = jax.jit(geometry.assign_rotation_anchor)
  tree = spatial.cKDTree(np.concatenate([anchors, -anchors]))

  def kdtree_labels():
    return tree.query(quats)[1] % len(anchors)

  ours_s = _median_seconds(lambda: assign(dev_quats, dev_anchors).block_until_ready(), repeats)
  tree_s = _median_seconds(kdtree_labels, repeats)
  agree = float(np.mean(np.asarray(assign(dev_quats, dev_anchors)) == kdtree_labels()))
  return {"ours_s": ours_s, "kdtree_s": tree_s, "agree": agree, "anchors": len(anchors)}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  b, r, repeats = _BATCH.value, _RESOLUTION.value, _REPEATS.value
  print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), {repeats} repeats, median")
  rot = bench_rotation(b, r, repeats)
  print(f"rotate {b} x {r}^3 volumes (trilinear):")
  print(f"  jit(rotate_voxels)          {rot['jax_s'] * 1e3:8.2f} ms  {b / rot['jax_s']:9.0f} volumes/s "
        f"(compile + first call {rot['compile_s']:.2f} s)")
  print(f"  scipy affine_transform loop {rot['scipy_s'] * 1e3:8.2f} ms  {b / rot['scipy_s']:9.0f} volumes/s")
  print(f"  speed-up {rot['scipy_s'] / rot['jax_s']:.2f}x, max |jax - scipy| = {rot['max_abs_diff']:.1e}")
  lab = bench_labels(_LABEL_BATCH.value, _ANCHOR_N.value, repeats)
  n = _LABEL_BATCH.value
  print(f"anchor labels for {n} quaternions, {lab['anchors']} anchors:")
  print(f"  jit(assign_rotation_anchor) {lab['ours_s'] * 1e3:8.2f} ms  {n / lab['ours_s']:9.0f} labels/s")
  print(f"  cKDTree over +-anchors      {lab['kdtree_s'] * 1e3:8.2f} ms  {n / lab['kdtree_s']:9.0f} labels/s")
  print(f"  speed-up {lab['kdtree_s'] / lab['ours_s']:.2f}x, labels agree on {lab['agree'] * 100:.2f}%")


if __name__ == "__main__":
  app.run(main)
