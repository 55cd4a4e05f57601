"""Prepares the PASCAL3D+ TFDS dataset (array_record files) from a manual download.

  python -m launch.prepare_pascal3d --manual_dir=/data/PASCAL3D+_release1.1 --data_dir=/data/tfds
  python -m launch.prepare_pascal3d --manual_dir=... --data_dir=... --crop_size=128 --categories=chair,sofa

The dataset is written atomically to `<data_dir>/pascal3d/<config>/1.0.0` (a second run reuses it) and
printed with its split sizes; read it with `tfds.builder_from_directory(path).as_data_source(split)`.
See `disent_jax.datasets.pascal3d` for the splits and what the manual directory must contain.
"""

from absl import app
from absl import flags

from disent_jax.datasets import pascal3d
from launch import _prepare

_MANUAL_DIR = flags.DEFINE_string("manual_dir", None, "The PASCAL3D+_release1.1 folder.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Where TFDS datasets are written.")
_CROP_SIZE = flags.DEFINE_integer("crop_size", 224, "Side in pixels of the stored object crops.",
                                  lower_bound=1)
_CATEGORIES = flags.DEFINE_list("categories", None, "Categories to read (default: all 12).")
flags.mark_flags_as_required(["manual_dir", "data_dir"])


def main(argv):
  _prepare.run(argv, lambda: pascal3d.build_pascal3d(
      _MANUAL_DIR.value, _DATA_DIR.value, crop_size=_CROP_SIZE.value, categories=_CATEGORIES.value),
      "PASCAL3D+ dataset", "objects", name_width=9, count_width=7)


if __name__ == "__main__":
  app.run(main)
