"""Builds the synthetic image dataset (TFDS array_record) of a CAD database.

  python -m launch.prepare_synthetic --data_dir=/data/disent
  python -m launch.prepare_synthetic --data_dir=/data/disent --cad_source=pascal3d:/data/PASCAL3D+/CAD \
      --num_train=2000 --num_validation=200 --num_test=200 --num_workers=2

The build is atomic and deterministic (see disent_jax/datasets/synthetic.py): it renders into a temporary
directory renamed into place when complete, and a finished dataset with the same settings is reused.
Prints the split sizes, the time taken and the directory to pass to training (`tfds.builder_from_directory`).
"""

import dataclasses
import time

from absl import app
from absl import flags
from absl import logging

from disent_jax.datasets import synthetic
from disent_jax.datasets import viewpoints

_DEFAULTS = synthetic.SyntheticSettings()
_VP = viewpoints.ViewpointDistribution()

_DATA_DIR = flags.DEFINE_string("data_dir", None, "Root directory of the datasets.", required=True)
_CAD_SOURCE = flags.DEFINE_string("cad_source", _DEFAULTS.cad_source,
                                  "CAD database: 'zoo', 'zoo:SEED', 'pascal3d:/path/CAD', ...")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", _DEFAULTS.image_size, "Full render size (px).",
                                   lower_bound=8)
_CROP_SIZE = flags.DEFINE_integer("crop_size", _DEFAULTS.crop_size, "Stored crop size (px).",
                                  lower_bound=8)
_NUM_TRAIN = flags.DEFINE_integer("num_train", _DEFAULTS.num_train, "Training examples.", lower_bound=0)
_NUM_VALIDATION = flags.DEFINE_integer("num_validation", _DEFAULTS.num_validation,
                                       "Validation examples.", lower_bound=0)
_NUM_TEST = flags.DEFINE_integer("num_test", _DEFAULTS.num_test, "Test examples.", lower_bound=0)
_SEED = flags.DEFINE_integer("seed", _DEFAULTS.seed, "Dataset seed.", lower_bound=0)
_VIEWPOINTS = flags.DEFINE_enum("viewpoints", _VP.mode, list(viewpoints.MODES),
                                "Viewpoint distribution: photo-like or uniform over SO(3).")
_ELEVATION_MEAN = flags.DEFINE_float("elevation_mean", _VP.elevation_mean, "Degrees ('photo').")
_ELEVATION_STD = flags.DEFINE_float("elevation_std", _VP.elevation_std, "Degrees ('photo').")
_THETA_STD = flags.DEFINE_float("theta_std", _VP.theta_std, "In-plane rotation std, degrees ('photo').")
_P_OCCLUDE = flags.DEFINE_float("p_occlude", _DEFAULTS.p_occlude, "Probability of an occluder.")
_P_TRUNCATE = flags.DEFINE_float("p_truncate", _DEFAULTS.p_truncate, "Probability of truncation.")
_SUPERSAMPLE = flags.DEFINE_integer("supersample", _DEFAULTS.supersample,
                                    "Render at this factor and average down (anti-aliasing).",
                                    lower_bound=1)
_BACKEND = flags.DEFINE_enum("backend", _DEFAULTS.backend, ["auto", "gl", "raycast"], "Renderer.")
_NUM_WORKERS = flags.DEFINE_integer("num_workers", 0,
                                    "Rendering processes (0: render in this process).", lower_bound=0)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Rebuild even if a finished dataset exists.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  vp = dataclasses.replace(_VP, mode=_VIEWPOINTS.value, elevation_mean=_ELEVATION_MEAN.value,
                           elevation_std=_ELEVATION_STD.value, theta_std=_THETA_STD.value)
  settings = dataclasses.replace(
      _DEFAULTS, cad_source=_CAD_SOURCE.value, image_size=_IMAGE_SIZE.value,
      crop_size=_CROP_SIZE.value, num_train=_NUM_TRAIN.value, num_validation=_NUM_VALIDATION.value,
      num_test=_NUM_TEST.value, seed=_SEED.value, viewpoints=vp, p_occlude=_P_OCCLUDE.value,
      p_truncate=_P_TRUNCATE.value, supersample=_SUPERSAMPLE.value, backend=_BACKEND.value)
  reused = not _OVERWRITE.value and synthetic.is_complete(
      synthetic.dataset_dir(_DATA_DIR.value, settings), settings)
  start = time.perf_counter()
  path = synthetic.build_synthetic(_DATA_DIR.value, settings, num_workers=_NUM_WORKERS.value,
                                   overwrite=_OVERWRITE.value)
  elapsed = time.perf_counter() - start
  # Reading the finished directory back (not trusting the builder object) proves it is readable.
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  info = tfds.builder_from_directory(path).info
  sizes = {name: split.num_examples for name, split in info.splits.items()}
  total = sum(sizes.values())
  logging.info("settings: %s", settings)
  print(f"splits: {sizes}")
  if reused:
    print("reused the finished dataset with these settings (nothing rendered)")
  else:
    print(f"time: {elapsed:.1f} s ({total / max(elapsed, 1e-9):.0f} examples/s)")
  print(f"dataset: {path}")


if __name__ == "__main__":
  app.run(main)
