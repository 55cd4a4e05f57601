"""Aligned ModelNet40 (Sedaghat et al. 2017) as a CAD collection and as a TFDS dataset of voxel grids.

The paper (Sec. 3.4) pre-trains the Stage I embedder on "the aligned version of ModelNet40": the
manually aligned ModelNet40 of Sedaghat, Zolfaghari, Amiri and Brox, "Orientation-boosted Voxel Nets for
3D Object Recognition" (BMVC 2017), distributed as `modelnet40_manually_aligned.tar` (manual download, see
MANUAL_DOWNLOAD_INSTRUCTIONS). Layout: `<class>/{train,test}/<class>_NNNN.off`, the 40 classes of
`MODELNET40_CLASSES`, 9,843 train and 2,468 test models.

Frame. ModelNet models are stored with +z up (checked here on original ModelNet40/ModelNet10 samples: an
airplane's smallest extent and a chair's or stool's largest extent are along z), and the aligned release
rotates models about that vertical axis only, to a common front per class; so +z up is kept, like
PASCAL3D+'s CAD frame. Which horizontal direction is the front of each class in the aligned release (and
whether it matches PASCAL3D+'s azimuth 0, the -y side) has NOT been checked against the real release
here; Stage I only needs a consistent frame per class. `up_axis` lets a user with a y-up copy rotate it to
z-up: the axis named becomes +z by a 90 degree rotation (`up_rotation`), applied to the normalised mesh
and to its `Normalization.center` (a 90 degree rotation maps the bounding box to the bounding box, so the
result is exactly the normalisation of the rotated source mesh).

Voxels are `disent_jax.cad.voxels.voxelize` grids of the normalised meshes (grid convention of that
module: [x, y, z] indexing over [-0.5, 0.5]^3), stored as a zlib-compressed uint8 tensor.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import pathlib
from collections.abc import Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds
import trimesh

from disent_jax.cad import collections as cad_collections
from disent_jax.cad import mesh_io
from disent_jax.cad import model as model_lib
from disent_jax.cad import voxels as voxels_lib
from disent_jax.datasets import pascal3d
from disent_jax.errors import ConfigError, ManualDirError

PathLike = str | os.PathLike

MODELNET40_CLASSES: tuple[str, ...] = (
    "airplane", "bathtub", "bed", "bench", "bookshelf", "bottle", "bowl", "car", "chair", "cone", "cup",
    "curtain", "desk", "door", "dresser", "flower_pot", "glass_box", "guitar", "keyboard", "lamp",
    "laptop", "mantel", "monitor", "night_stand", "person", "piano", "plant", "radio", "range_hood",
    "sink", "sofa", "stairs", "stool", "table", "tent", "toilet", "tv_stand", "vase", "wardrobe", "xbox",
)
UP_AXES: tuple[str, ...] = ("z", "y", "x")

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download the manually aligned ModelNet40 of Sedaghat et al. (BMVC 2017),
modelnet40_manually_aligned.tar, from https://lmb.informatik.uni-freiburg.de/resources/datasets/ORION/
and extract it. Pass the extracted folder (the one holding airplane/, bathtub/, ...) as the manual
directory (--manual_dir). Each class folder must contain train/ and test/ with .off meshes:
  <class>/train/<class>_NNNN.off
  <class>/test/<class>_NNNN.off
"""


def up_rotation(up_axis: str) -> np.ndarray:
  """The 90 degree rotation (3, 3) that maps the named axis to +z ('z' gives the identity)."""
  if up_axis == "z":
    return np.eye(3)
  if up_axis == "y":  # Rx(+90): y -> z, z -> -y.
    return np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
  if up_axis == "x":  # Ry(-90): x -> z, z -> -x.
    return np.array([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
  raise ConfigError(f"unknown up axis {up_axis!r} (expected one of {UP_AXES})")


def reorient(model: model_lib.CadModel, up_axis: str) -> model_lib.CadModel:
  """The model with `up_axis` turned to +z (see the module docstring); 'z' returns it unchanged."""
  r = up_rotation(up_axis)
  if up_axis == "z":
    return model
  mesh = trimesh.Trimesh(vertices=model.mesh.vertices @ r.T, faces=np.asarray(model.mesh.faces),
                         process=False)
  norm = model_lib.Normalization(center=tuple(float(c) for c in r @ np.asarray(model.normalization.center)),
                                 scale=model.normalization.scale)
  return dataclasses.replace(model, mesh=mesh, normalization=norm)


def load_modelnet40_aligned(root: PathLike, split: str = "train", *, up_axis: str = "z",
                            skip_bad: bool = False) -> list[model_lib.CadModel]:
  """The aligned ModelNet40 models of a split as a CAD collection (for Stage I).

  Args:
    root: the extracted `modelnet40_manually_aligned` folder.
    split: 'train', 'test' or 'all'.
    up_axis: the source's up axis, turned to +z ('z' for the release, see the module docstring).
    skip_bad: log and skip unreadable meshes instead of raising.

  Returns:
    The models (category = class name, cad_index as `collections.load_modelnet_tree`), normalised.

  Raises:
    ConfigError: unknown split or up axis.
    CollectionError: missing tree or bad files (listed).
  """
  up_rotation(up_axis)  # Validates before the (slow) loading.
  models = cad_collections.load_modelnet_tree(root, split, skip_bad=skip_bad)
  return [reorient(m, up_axis) for m in models]


# Re-exported: (class, cad_index, path) of a split without loading meshes, as `load_modelnet_tree` numbers it.
modelnet_entries = cad_collections.modelnet_entries


def check_manual_dir(manual_dir: PathLike, classes: Sequence[str] = MODELNET40_CLASSES) -> pathlib.Path:
  """Checks that every wanted class has `train/` and `test/` folders; unknown class folders are errors.

  Raises:
    ManualDirError: listing what is missing (or unknown), with the download instructions.
  """
  root = pathlib.Path(os.path.expanduser(os.fspath(manual_dir)))
  if not root.is_dir():
    raise ManualDirError(f"ModelNet40 manual directory {root} does not exist.\n"
                         f"{MANUAL_DOWNLOAD_INSTRUCTIONS}")
  missing = [f"{c}/{part}/" for c in classes for part in ("train", "test") if not (root / c / part).is_dir()]
  unknown = sorted(p.name for p in root.iterdir()
                   if p.is_dir() and not p.name.startswith(".") and p.name not in MODELNET40_CLASSES)
  problems = []
  if missing:
    problems.append("missing:\n" + "\n".join(f"  {m}" for m in missing))
  if unknown:
    problems.append(f"folders that are not ModelNet40 classes: {unknown}")
  if problems:
    raise ManualDirError(f"ModelNet40 manual directory {root} is incomplete or not ModelNet40; "
                         + "\n".join(problems) + f"\n{MANUAL_DOWNLOAD_INSTRUCTIONS}")
  return root


def voxel_examples(root: pathlib.Path, split: str, resolution: int, classes: Sequence[str],
                   up_axis: str = "z", fill: bool = True) -> Iterator[tuple[str, dict]]:
  """(key, features) per model of a split, loading one mesh at a time.

  Raises:
    MeshError: an unreadable mesh (naming the file).
  """
  rotation = up_rotation(up_axis)
  for cls, cad_index, path in modelnet_entries(root, split, classes):
    mesh, _ = mesh_io.load_mesh_with_normalization(path)
    if up_axis != "z":
      mesh = trimesh.Trimesh(vertices=mesh.vertices @ rotation.T, faces=np.asarray(mesh.faces), process=False)
    rel = path.relative_to(root).as_posix()
    yield rel, {
        "voxels": voxels_lib.voxelize(mesh, resolution, fill=fill).astype(np.uint8),
        "label": cls,
        "cad_index": np.int32(cad_index),
        "source": rel,
    }


@dataclasses.dataclass(eq=False)
class Modelnet40Config(tfds.core.BuilderConfig):
  """Builder options.

  Attributes:
    resolution: voxels per axis.
    fill: solid (True) or surface-only (False) grids.
    up_axis: the source's up axis, turned to +z.
    classes: the classes to read (the label ClassLabel always lists all 40).
  """
  resolution: int = 32
  fill: bool = True
  up_axis: str = "z"
  classes: tuple[str, ...] = MODELNET40_CLASSES


def make_config(resolution: int = 32, *, fill: bool = True, up_axis: str = "z",
                classes: Sequence[str] | None = None) -> Modelnet40Config:
  """The config for these options; the name encodes them ('res32', 'res32-surface-upy-chair-sofa')."""
  if isinstance(resolution, bool) or int(resolution) != resolution or resolution < 1:
    raise ConfigError(f"voxel resolution must be a positive integer, got {resolution!r}")
  up_rotation(up_axis)
  wanted = tuple(classes) if classes is not None else MODELNET40_CLASSES
  unknown = [c for c in wanted if c not in MODELNET40_CLASSES]
  if unknown or not wanted:
    raise ConfigError(f"unknown or no ModelNet40 classes {list(wanted)}")
  wanted = tuple(c for c in MODELNET40_CLASSES if c in wanted)
  name = f"res{int(resolution)}" + ("" if fill else "-surface") + ("" if up_axis == "z" else f"-up{up_axis}")
  if wanted != MODELNET40_CLASSES:
    name += "-" + "-".join(wanted)
  return Modelnet40Config(name=name, resolution=int(resolution), fill=bool(fill), up_axis=up_axis,
                          classes=wanted, description=f"{int(resolution)}^3 voxel grids")


class Modelnet40Aligned(tfds.core.GeneratorBasedBuilder):
  """Sedaghat et al.'s manually aligned ModelNet40 as voxel grids (manual download)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release: voxel grids of the train and test splits."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  BUILDER_CONFIGS = [make_config(32), make_config(64)]

  def _info(self) -> tfds.core.DatasetInfo:
    r = self.builder_config.resolution
    return tfds.core.DatasetInfo(
        builder=self,
        description="Manually aligned ModelNet40 (Sedaghat et al. 2017), one voxel grid per model.",
        features=tfds.features.FeaturesDict({
            "voxels": tfds.features.Tensor(shape=(r, r, r), dtype=np.uint8, encoding="zlib"),
            "label": tfds.features.ClassLabel(names=list(MODELNET40_CLASSES)),
            "cad_index": tfds.features.Scalar(dtype=np.int32),
            "source": tfds.features.Text(),  # path relative to the manual directory
        }),
        homepage="https://lmb.informatik.uni-freiburg.de/resources/datasets/ORION/",
        citation="@inproceedings{sedaghat2017orientation, title={Orientation-boosted Voxel Nets for 3D "
                 "Object Recognition}, author={Sedaghat, Nima and Zolfaghari, Mohammadreza and Amiri, "
                 "Ehsan and Brox, Thomas}, booktitle={BMVC}, year={2017}}",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    cfg = self.builder_config
    root = check_manual_dir(dl_manager.manual_dir, cfg.classes)
    return {split: self._generate_examples(root, split) for split in ("train", "test")}

  def _generate_examples(self, root, split):
    cfg = self.builder_config
    count = collections.Counter()
    for key, example in voxel_examples(root, split, cfg.resolution, cfg.classes, cfg.up_axis, cfg.fill):
      count[example["label"]] += 1
      yield key, example
    logging.info("ModelNet40 split %s: %d models", split, sum(count.values()))


def build_modelnet40(manual_dir: PathLike, data_dir: PathLike, *, resolution: int = 32, fill: bool = True,
                     up_axis: str = "z", classes: Sequence[str] | None = None) -> str:
  """Prepares the voxel dataset atomically (temporary folder, renamed when complete); returns its dir.

  Args:
    manual_dir: the extracted aligned ModelNet40 folder.
    data_dir: where TFDS datasets live.
    resolution: voxels per axis.
    fill: solid or surface grids.
    up_axis: the source's up axis.
    classes: classes to read (default all 40).

  Returns:
    The dataset directory (`data_dir/modelnet40_aligned/<config>/<version>`); an existing complete one
    is reused.

  Raises:
    ManualDirError: missing or incomplete manual directory.
    MeshError: an unreadable mesh.
  """
  config = make_config(resolution, fill=fill, up_axis=up_axis, classes=classes)
  root = check_manual_dir(manual_dir, config.classes)
  return pascal3d.build_atomically(Modelnet40Aligned, config, root, data_dir,
                                   title="ModelNet40 voxel dataset", tmp_prefix=".modelnet40-tmp-")
