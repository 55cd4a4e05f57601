"""Builds (or reuses from the cache) the voxel bank of a CAD collection.

  python -m launch.build_voxels --source=zoo --resolution=32 --out=/tmp/voxels
  python -m launch.build_voxels --source=pascal3d:/data/PASCAL3D+_release1.1/CAD --out=/tmp/voxels

Prints the number of models per category, the seconds taken and the bank's path. A second run with the
same collection, resolution and fill mode finds the cached bank and does not voxelise again. With
--binvox_dir, every model is also written as `<category>_<cad_index>.binvox` (our grid convention:
translate -0.5, scale 1, in the normalised frame).
"""

import logging as py_logging
import os
import time

from absl import app
from absl import flags
from absl import logging

from disent_jax.cad import collections as cad_collections
from disent_jax.cad import voxel_bank
from disent_jax.cad import voxels

_SOURCE = flags.DEFINE_string(
    "source", "zoo", "CAD collection spec: zoo, zoo:SEED, pascal3d:/path/to/CAD, "
    "modelnet:/path[:split] or folder:/path.")
_RESOLUTION = flags.DEFINE_integer("resolution", 32, "Voxels per axis.", lower_bound=1)
_OUT = flags.DEFINE_string("out", None, "Cache folder of voxel banks.")
_FILL = flags.DEFINE_bool("fill", True, "Solid occupancy (True) or surface voxels only (False).")
_SKIP_BAD = flags.DEFINE_bool("skip_bad", False, "Skip unreadable mesh files instead of failing.")
_BINVOX_DIR = flags.DEFINE_string("binvox_dir", None, "Also write one .binvox per model here.")
flags.mark_flag_as_required("out")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  py_logging.getLogger("absl").setLevel(py_logging.INFO)
  logging.set_verbosity(logging.INFO)
  start = time.perf_counter()
  models = cad_collections.load_collection(_SOURCE.value, skip_bad=_SKIP_BAD.value)
  loaded = time.perf_counter()
  bank = voxel_bank.build_voxel_bank(models, _RESOLUTION.value, _OUT.value, fill=_FILL.value)
  done = time.perf_counter()
  if _BINVOX_DIR.value:
    for row in range(bank.num_models):
      name = f"{bank.categories[row]}_{int(bank.cad_indices[row]):02d}.binvox"
      voxels.write_binvox(os.path.join(_BINVOX_DIR.value, name), bank.volumes[row])
  print(f"voxel bank of {_SOURCE.value}: {bank.num_models} models at {bank.resolution}^3 "
        f"({'solid' if bank.fill else 'surface'})")
  for category, count in bank.counts().items():
    occupancy = bank.volumes[bank.indices(category)].mean()
    print(f"  {category:12s} {count:4d} models, mean occupancy {occupancy:.3f}")
  print(f"seconds: {loaded - start:.1f} loading meshes, {done - loaded:.1f} voxelising or loading the "
        f"cache, {time.perf_counter() - start:.1f} in total")
  print(f"bank: {bank.path}")
  if _BINVOX_DIR.value:
    print(f"binvox files: {_BINVOX_DIR.value}")


if __name__ == "__main__":
  app.run(main)
