"""Prepares the aligned ModelNet40 voxel TFDS dataset (array_record files) from a manual download.

  python -m launch.prepare_modelnet40 --manual_dir=/data/modelnet40_manually_aligned --data_dir=/data/tfds
  python -m launch.prepare_modelnet40 --manual_dir=... --data_dir=... --resolution=64 --up_axis=y

The dataset is written atomically to `<data_dir>/modelnet40_aligned/<config>/1.0.0` (a second run reuses
it) and printed with its split sizes. See `disent_jax.datasets.modelnet40` for the frame and layout.
"""

from absl import app
from absl import flags

from disent_jax.datasets import modelnet40
from launch import _prepare

_MANUAL_DIR = flags.DEFINE_string("manual_dir", None, "The extracted modelnet40_manually_aligned folder.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Where TFDS datasets are written.")
_RESOLUTION = flags.DEFINE_integer("resolution", 32, "Voxels per axis.", lower_bound=1)
_FILL = flags.DEFINE_bool("fill", True, "Solid occupancy (True) or surface voxels only (False).")
_UP_AXIS = flags.DEFINE_enum("up_axis", "z", list(modelnet40.UP_AXES),
                             "The meshes' up axis, turned to +z (the aligned release is z-up).")
_CLASSES = flags.DEFINE_list("classes", None, "Classes to read (default: all 40).")
flags.mark_flags_as_required(["manual_dir", "data_dir"])


def main(argv):
  _prepare.run(argv, lambda: modelnet40.build_modelnet40(
      _MANUAL_DIR.value, _DATA_DIR.value, resolution=_RESOLUTION.value, fill=_FILL.value,
      up_axis=_UP_AXIS.value, classes=_CLASSES.value),
      "ModelNet40 voxel dataset", "models", name_width=6, count_width=6)


if __name__ == "__main__":
  app.run(main)
