"""Benchmarks on-device voxel rotation and rotation-anchor labelling against scipy, in one run.

  python -m launch.bench_rotate [--batch=64 --resolution=32 --repeats=7]

1. Volumes per second for a batch of random rotations: `jax.jit(rotate_voxels)` (trilinear) against a
   loop of `scipy.ndimage.affine_transform(order=1, mode='grid-constant')` with the same matrices. The
   first (compiling) call is timed apart; the median of --repeats timed calls is reported. The two results
   are also compared (they agree to float32 rounding).
2. Anchor labelling (paper Eq. 3): `geometry.assign_rotation_anchor` (one matmul + argmax, jitted) against
   a scipy cKDTree over the anchors and their negatives (q and -q are the same rotation), for
   --label_batch quaternions; the labels must agree.
The volumes are solid random shapes (unions of boxes), so the interpolation work is representative.
The measuring code lives in `disent_jax/bench/rotation.py` (shared with `launch.benchmark`, which runs it
as the 'rotation' and 'anchor_labels' rows); the two sides are timed interleaved.
"""

from absl import app
from absl import flags
import jax

from disent_jax.bench import rotation

_BATCH = flags.DEFINE_integer("batch", 64, "Volumes per rotation batch.", lower_bound=1)
_RESOLUTION = flags.DEFINE_integer("resolution", 32, "Voxels per axis.", lower_bound=2)
_REPEATS = flags.DEFINE_integer("repeats", 7, "Timed repeats (the median is reported).", lower_bound=1)
_LABEL_BATCH = flags.DEFINE_integer("label_batch", 4096, "Quaternions per anchor-labelling batch.",
                                    lower_bound=1)
_ANCHOR_N = flags.DEFINE_integer("anchor_n", 7, "Anchor grid size n (paper: 7 -> 259 anchors).",
                                 lower_bound=1)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  b, r, repeats = _BATCH.value, _RESOLUTION.value, _REPEATS.value
  print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), {repeats} repeats, median")
  rot = rotation.bench_rotation(b, r, repeats)
  print(f"rotate {b} x {r}^3 volumes (trilinear):")
  print(f"  jit(rotate_voxels)          {rot['jax_s'] * 1e3:8.2f} ms  {b / rot['jax_s']:9.0f} volumes/s "
        f"(compile {rot['compile_s']:.2f} s)")
  print(f"  scipy affine_transform loop {rot['scipy_s'] * 1e3:8.2f} ms  {b / rot['scipy_s']:9.0f} volumes/s")
  print(f"  speed-up {rot['scipy_s'] / rot['jax_s']:.2f}x, max |jax - scipy| = {rot['max_abs_diff']:.1e}")
  lab = rotation.bench_labels(_LABEL_BATCH.value, _ANCHOR_N.value, repeats)
  n = _LABEL_BATCH.value
  print(f"anchor labels for {n} quaternions, {lab['anchors']} anchors:")
  print(f"  jit(assign_rotation_anchor) {lab['ours_s'] * 1e3:8.2f} ms  {n / lab['ours_s']:9.0f} labels/s")
  print(f"  cKDTree over +-anchors      {lab['kdtree_s'] * 1e3:8.2f} ms  {n / lab['kdtree_s']:9.0f} labels/s")
  print(f"  speed-up {lab['kdtree_s'] / lab['ours_s']:.2f}x, labels agree on {lab['agree'] * 100:.2f}%")


if __name__ == "__main__":
  app.run(main)
