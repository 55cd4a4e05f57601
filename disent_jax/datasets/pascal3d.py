"""PASCAL3D+ (release 1.1) as a TFDS dataset of object instances, read from a manual download.

One example = one annotated object with a fine viewpoint (see `pascal3d_annotations` for the parsing and
the pose conventions) and every feature of `disent_jax/datasets/features.py`. Prepare it with
`build_pascal3d(manual_dir, data_dir)` (or `python -m launch.prepare_pascal3d`), read it with
`tfds.builder_from_directory(path).as_data_source(split)`; no TensorFlow is involved.

Splits (the paper's protocol, Sec. 4, after Su et al. and Tulsiani & Malik):
  * 'train'    = PASCAL3D+ ImageNet train + ImageNet val + PASCAL VOC 2012 train images, every object of
                 the category with a fine viewpoint (truncated/occluded/difficult objects included, flagged).
  * 'test'     = PASCAL VOC 2012 val images, objects with a fine viewpoint that are neither truncated,
                 occluded nor difficult (the set pose is evaluated on).
  * 'test_all' = PASCAL VOC 2012 val, every object with a fine viewpoint, flags kept (for the paper's
                 Table 4 breakdown by size, occlusion and truncation).
Objects without a viewpoint, or with a coarse one only (`distance == 0`: no CAD alignment, hence no
camera and no translation), are left out of every split; how many is logged per split.

Image sets (read by `read_image_set`):
  * `Image_sets/<category>_imagenet_{train,val}.txt`: one ImageNet image id per line
    (e.g. 'n02690373_1000').
  * `PASCAL/VOCdevkit/VOC2012/ImageSets/Main/<category>_{train,val}.txt`: lines '<image_id> <label>'
    (e.g. '2008_000021  1'), label 1 = the image contains the category, 0 = only "difficult" instances
    of it, -1 = none. Images with label 1 or 0 are used; they are the images PASCAL3D+ annotated in
    `Annotations/<category>_pascal/`.
A listed image without an annotation file is skipped and counted (logged), not an error.

Images are looked up at `Images/<category>_<source>/<filename>` (release 1.1 ships both ImageNet and VOC
images there) and, for VOC images, also at `PASCAL/VOCdevkit/VOC2012/JPEGImages/<filename>`. RGB or
grayscale JPEG/PNG files are stored byte for byte (no re-encoding); anything else (CMYK JPEGs exist in
ImageNet) is converted to RGB and stored as PNG.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import logging
import os
import pathlib
import shutil
import tempfile
from collections.abc import Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from disent_jax import categories as categories_lib
from disent_jax.cad import collections as cad_collections
from disent_jax.cad import model as model_lib
from disent_jax.datasets import crops
from disent_jax.datasets import features as features_lib
from disent_jax.datasets import pascal3d_annotations as ann
from disent_jax.datasets import tfds_compat
# ManualDirError lives in disent_jax.errors; it stays importable from here (pascal3d.ManualDirError).
from disent_jax.errors import AnnotationError, CollectionError, ConfigError, ImageError, ManualDirError

PathLike = str | os.PathLike

VOC_DIR = "PASCAL/VOCdevkit/VOC2012"
# Top-level folders of the release that the builder reads.
REQUIRED_DIRS: tuple[str, ...] = ("Annotations", "Images", "Image_sets", "CAD", f"{VOC_DIR}/ImageSets/Main")
SPLITS: tuple[str, ...] = ("train", "test", "test_all")

MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Download PASCAL3D+ release 1.1 (PASCAL3D+_release1.1.zip) from
https://cvgl.stanford.edu/projects/pascal3d.html and unzip it. Pass the folder PASCAL3D+_release1.1 as the
manual directory (--manual_dir). It must contain:
  Annotations/<category>_{{pascal,imagenet}}/*.mat    the annotations
  Images/<category>_{{pascal,imagenet}}/*             the images
  Image_sets/<category>_imagenet_{{train,val}}.txt     the ImageNet splits
  CAD/<category>/NN.off (or CAD/<category>.mat)       the CAD models
  {VOC_DIR}/ImageSets/Main/<category>_{{train,val}}.txt   the PASCAL VOC 2012 splits
  ({VOC_DIR}/JPEGImages/ is used for VOC images missing from Images/)
for the 12 categories {', '.join(categories_lib.CATEGORIES)}. The release zip ships all of this, including the
PASCAL VOC 2012 devkit under PASCAL/.
"""


# ---------------------------------------------------------------------------------------------------------
# The release's layout.


@dataclasses.dataclass(frozen=True)
class ImageRef:
  """One annotated image of one category: `Annotations/<category>_<source>/<image_id>.mat`."""
  category: str
  source: str
  image_id: str

  def annotation_path(self, root: pathlib.Path) -> pathlib.Path:
    return root / "Annotations" / f"{self.category}_{self.source}" / f"{self.image_id}.mat"


def check_manual_dir(manual_dir: PathLike, categories: Sequence[str] = categories_lib.CATEGORIES
                     ) -> pathlib.Path:
  """Checks that a manual directory holds everything the builder reads.

  Args:
    manual_dir: the PASCAL3D+_release1.1 folder.
    categories: the categories to be read.

  Returns:
    The directory as a Path.

  Raises:
    ManualDirError: listing every missing folder and image-set file, plus the download instructions.
  """
  root = pathlib.Path(os.path.expanduser(os.fspath(manual_dir)))
  if not root.is_dir():
    raise ManualDirError(f"PASCAL3D+ manual directory {root} does not exist.\n{MANUAL_DOWNLOAD_INSTRUCTIONS}")
  missing = [f"{d}/" for d in REQUIRED_DIRS if not (root / d).is_dir()]
  for cat in categories:
    wanted = [f"Annotations/{cat}_pascal/", f"Annotations/{cat}_imagenet/",
              f"Image_sets/{cat}_imagenet_train.txt", f"Image_sets/{cat}_imagenet_val.txt",
              f"{VOC_DIR}/ImageSets/Main/{cat}_train.txt", f"{VOC_DIR}/ImageSets/Main/{cat}_val.txt"]
    for rel in wanted:
      parent_missing = any(rel.startswith(m) for m in missing)
      exists = (root / rel).is_dir() if rel.endswith("/") else (root / rel).is_file()
      if not exists and not parent_missing:
        missing.append(rel)
    has_cad = (root / "CAD" / cat).is_dir() or (root / "CAD" / f"{cat}.mat").is_file()
    if "CAD/" not in missing and not has_cad:
      missing.append(f"CAD/{cat}/ (or CAD/{cat}.mat)")
  if missing:
    listing = "\n".join(f"  {m}" for m in missing)
    raise ManualDirError(f"PASCAL3D+ manual directory {root} is incomplete; missing:\n{listing}\n"
                         f"{MANUAL_DOWNLOAD_INSTRUCTIONS}")
  return root


def read_image_set(path: PathLike) -> list[str]:
  """The image ids of an image-set file, in file order.

  Lines are '<image_id>' (PASCAL3D+ Image_sets) or '<image_id> <label>' (VOC ImageSets/Main, label 1, 0
  or -1); ids with label -1 (the image does not contain the category) are dropped. Blank lines are
  ignored.

  Args:
    path: the file.

  Returns:
    The ids.

  Raises:
    AnnotationError: unreadable file or a malformed line (naming the file and the line number).
  """
  path = pathlib.Path(path)
  try:
    text = path.read_text()
  except (OSError, UnicodeDecodeError) as e:
    raise AnnotationError(f"{path}: cannot read image set ({type(e).__name__}: {e})") from e
  ids = []
  for lineno, line in enumerate(text.splitlines(), start=1):
    parts = line.split()
    if not parts:
      continue
    if len(parts) > 2:
      raise AnnotationError(f"{path}:{lineno}: expected '<image_id>' or '<image_id> <label>', got {line!r}")
    if len(parts) == 2:
      if parts[1] not in ("1", "0", "-1"):
        raise AnnotationError(f"{path}:{lineno}: label must be 1, 0 or -1, got {parts[1]!r}")
      if parts[1] == "-1":
        continue
    ids.append(parts[0])
  return ids


def split_images(root: PathLike, categories: Sequence[str] = categories_lib.CATEGORIES
                 ) -> dict[str, list[ImageRef]]:
  """The images of each split (see the module docstring): {'train': [...], 'test': [...]}.

  'test' serves both 'test' and 'test_all' (they differ in the object filter, `keep_object`).
  """
  root = pathlib.Path(root)
  sets = root / "Image_sets"
  voc = root / VOC_DIR / "ImageSets" / "Main"
  out: dict[str, list[ImageRef]] = {"train": [], "test": []}
  for cat in categories:
    for part in ("train", "val"):
      out["train"] += [ImageRef(cat, "imagenet", i)
                       for i in read_image_set(sets / f"{cat}_imagenet_{part}.txt")]
    out["train"] += [ImageRef(cat, "pascal", i) for i in read_image_set(voc / f"{cat}_train.txt")]
    out["test"] += [ImageRef(cat, "pascal", i) for i in read_image_set(voc / f"{cat}_val.txt")]
  return out


def keep_object(split: str, obj: ann.Pascal3dObject) -> bool:
  """Whether a split keeps an object: it needs a fine pose, and for 'test' no truncation, occlusion or
  difficulty."""
  if not obj.has_pose:
    return False
  return obj.easy if split == "test" else True


def find_image(root: pathlib.Path, record: ann.Pascal3dRecord) -> pathlib.Path:
  """The image file of a record (see the module docstring for where it is looked up)."""
  candidates = [root / "Images" / f"{record.category}_{record.source}" / record.filename]
  if record.source == "pascal":
    candidates.append(root / VOC_DIR / "JPEGImages" / record.filename)
  for c in candidates:
    if c.is_file():
      return c
  raise ImageError(f"{record.path}: image {record.filename!r} not found (looked for "
                   f"{', '.join(str(c) for c in candidates)})")


def load_image(path: pathlib.Path) -> tuple[bytes, np.ndarray]:
  """The bytes to store for an image and its pixels (H, W, 3) uint8.

  RGB or grayscale JPEG/PNG files are returned byte for byte (TFDS decodes grayscale to 3 channels);
  other formats or modes are converted to RGB and encoded as PNG.
  """
  try:
    data = path.read_bytes()
    with Image.open(io.BytesIO(data)) as im:
      im.load()
      passthrough = im.format in ("JPEG", "PNG") and im.mode in ("RGB", "L")
      rgb = im.convert("RGB")
  except (OSError, ValueError, Image.DecompressionBombError) as e:
    raise ImageError(f"{path}: unreadable image ({type(e).__name__}: {e})") from e
  pixels = np.asarray(rgb, np.uint8)
  if not passthrough:
    data = _png_bytes(pixels)
  return data, pixels


def _png_bytes(pixels: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(pixels).save(buf, format="PNG", compress_level=3)
  return buf.getvalue()


def cad_normalizations(root: PathLike, categories: Sequence[str]
                       ) -> dict[tuple[str, int], model_lib.Normalization]:
  """{(category, cad_index): Normalization} of the manual directory's `CAD/` models."""
  try:
    models = cad_collections.load_pascal3d_cad_dir(pathlib.Path(root) / "CAD", categories=tuple(categories))
  except CollectionError as e:
    raise ManualDirError(f"PASCAL3D+ CAD models under {pathlib.Path(root) / 'CAD'} are unusable: {e}") from e
  return {(m.category, m.cad_index): m.normalization for m in models}


# ---------------------------------------------------------------------------------------------------------
# Examples.


def object_examples(root: pathlib.Path, refs: Sequence[ImageRef], split: str, crop_size: int,
                    normalizations: dict[tuple[str, int], model_lib.Normalization],
                    stats: collections.Counter | None = None) -> Iterator[tuple[str, dict]]:
  """(instance_id, feature dict) of every kept object of the images `refs`.

  Args:
    root: the manual directory.
    refs: the split's images.
    split: 'train', 'test' or 'test_all' (selects the object filter).
    crop_size: side of the `crop` feature.
    normalizations: from `cad_normalizations`.
    stats: optional counter updated with what was kept and skipped.

  Yields:
    (instance_id '<image_id>/<object_index>', features as in `features.pose_features`).

  Raises:
    AnnotationError: a malformed annotation file, or a cad_index without a CAD model.
    ImageError: a missing or unreadable image.
  """
  stats = collections.Counter() if stats is None else stats
  seen: set[str] = set()
  for ref in refs:
    path = ref.annotation_path(root)
    if not path.is_file():
      stats["images without annotation file"] += 1
      if stats["images without annotation file"] <= 5:
        logging.warning("%s: listed in the %s image set but missing; skipped", path, split)
      continue
    record = ann.read_annotation(path, ref.category, ref.source)
    stats["objects of other classes"] += record.num_other_class
    kept = []
    for obj in record.objects:
      if obj.viewpoint is None:
        stats["objects without viewpoint"] += 1
      elif not obj.has_pose:
        stats["objects with a coarse viewpoint only"] += 1
      elif not keep_object(split, obj):
        stats["objects truncated/occluded/difficult"] += 1
      else:
        kept.append(obj)
    if not kept:
      continue
    image_path = find_image(root, record)
    image_bytes, pixels = load_image(image_path)
    if pixels.shape[:2] != (record.height, record.width):
      stats["images whose size differs from the record"] += 1
      logging.warning("%s: image %s is %dx%d but the record says %dx%d", path, image_path,
                      pixels.shape[1], pixels.shape[0], record.width, record.height)
    for obj in kept:
      instance_id = f"{record.image_id}/{obj.index}"
      if instance_id in seen:  # The same image listed twice (e.g. in two image sets): keep one copy.
        stats["duplicate objects"] += 1
        continue
      seen.add(instance_id)
      norm = normalizations.get((obj.category, obj.cad_index))
      if norm is None:
        raise AnnotationError(f"{path}: record.objects({obj.index + 1}).cad_index: {obj.category} CAD model "
                              f"{obj.cad_index} is not in the CAD directory {root / 'CAD'}")
      labels = ann.pose_labels(obj, norm)
      x1, y1, x2, y2 = obj.bbox
      stats["examples"] += 1
      yield instance_id, {
          "instance_id": instance_id,
          "image": image_bytes,
          "crop": _png_bytes(crops.square_crop(pixels, obj.bbox, crop_size)),
          "bbox": obj.bbox.astype(np.float32),
          "bbox_area": np.float32((x2 - x1) * (y2 - y1)),
          "category": obj.category,
          "cad_index": np.int32(obj.cad_index),
          "quaternion": labels.quaternion.astype(np.float32),
          "viewpoint": labels.viewpoint.astype(np.float32),
          "translation": labels.translation.astype(np.float32),
          "translation_camera": labels.translation_camera.astype(np.float32),
          "intrinsics": labels.intrinsics.astype(np.float32),
          "occluded": obj.occluded,
          "truncated": obj.truncated,
          "difficult": obj.difficult,
      }


# ---------------------------------------------------------------------------------------------------------
# The TFDS builder.


@dataclasses.dataclass(eq=False)
class Pascal3dConfig(tfds.core.BuilderConfig):
  """Builder options.

  Attributes:
    crop_size: side in pixels of the stored `crop` feature (the input pipeline resizes further).
    categories: the categories to read (the `category` ClassLabel always lists all 12).
  """
  crop_size: int = 224
  categories: tuple[str, ...] = categories_lib.CATEGORIES


def make_config(crop_size: int = 224, categories: Sequence[str] | None = None) -> Pascal3dConfig:
  """The config for a crop size and category subset; its name encodes both ('crop224',
  'crop64-chair-sofa')."""
  cats = tuple(categories) if categories is not None else categories_lib.CATEGORIES
  unknown = [c for c in cats if c not in categories_lib.CATEGORIES]
  if unknown or not cats:
    raise ConfigError(f"unknown or no PASCAL3D+ categories {list(cats)} (known: "
                     f"{list(categories_lib.CATEGORIES)})")
  if isinstance(crop_size, bool) or int(crop_size) != crop_size or crop_size < 1:
    raise ConfigError(f"crop_size must be a positive integer, got {crop_size!r}")
  cats = tuple(c for c in categories_lib.CATEGORIES if c in cats)  # Canonical order, no duplicates.
  name = f"crop{int(crop_size)}"
  if cats != categories_lib.CATEGORIES:
    name += "-" + "-".join(cats)
  return Pascal3dConfig(name=name, crop_size=int(crop_size), categories=cats,
                        description=f"{int(crop_size)} px crops, categories {', '.join(cats)}")


class Pascal3d(tfds.core.GeneratorBasedBuilder):
  """PASCAL3D+ release 1.1 object instances with poses, CAD indices and crops (manual download)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release: train / test / test_all, features of features.py."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  BUILDER_CONFIGS = [make_config(224), make_config(128), make_config(64)]

  def _info(self) -> tfds.core.DatasetInfo:
    # DatasetInfo(builder=self) directly: dataset_info_from_configs would look for README/CITATIONS files.
    return tfds.core.DatasetInfo(
        builder=self,
        description="PASCAL3D+ release 1.1 objects (ImageNet + PASCAL VOC 2012) with viewpoints, CAD "
                    "indices, crop-relative translations and square crops; one example per object.",
        features=features_lib.pose_features(categories_lib.CATEGORIES),
        homepage="https://cvgl.stanford.edu/projects/pascal3d.html",
        citation="@inproceedings{xiang2014beyond, title={Beyond PASCAL: A Benchmark for 3D Object "
                 "Detection in the Wild}, author={Xiang, Yu and Mottaghi, Roozbeh and Savarese, Silvio}, "
                 "booktitle={WACV}, year={2014}}",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    root = check_manual_dir(dl_manager.manual_dir, self.builder_config.categories)
    images = split_images(root, self.builder_config.categories)
    norms = cad_normalizations(root, self.builder_config.categories)
    return {
        "train": self._generate_examples(root, images["train"], "train", norms),
        "test": self._generate_examples(root, images["test"], "test", norms),
        "test_all": self._generate_examples(root, images["test"], "test_all", norms),
    }

  def _generate_examples(self, root, refs, split, norms):
    stats = collections.Counter()
    yield from object_examples(root, refs, split, self.builder_config.crop_size, norms, stats)
    logging.info("PASCAL3D+ split %s: %s", split, dict(sorted(stats.items())))


def build_pascal3d(manual_dir: PathLike, data_dir: PathLike, *, crop_size: int = 224,
                   categories: Sequence[str] | None = None) -> str:
  """Prepares the dataset (array_record files) and returns its directory.

  The dataset is written into a temporary folder beside its destination and renamed into place only
  when complete, so `data_dir/pascal3d/<config>/<version>` is either absent or whole. An existing
  complete dataset is reused.

  Args:
    manual_dir: the PASCAL3D+_release1.1 folder (see MANUAL_DOWNLOAD_INSTRUCTIONS).
    data_dir: where TFDS datasets live.
    crop_size: side of the stored crops.
    categories: categories to read (default all 12).

  Returns:
    The dataset directory, for `tfds.builder_from_directory(...)`.

  Raises:
    ManualDirError: missing or incomplete manual directory (the message lists what is missing).
    AnnotationError, ImageError: a bad annotation or image file (the message names it).
  """
  config = make_config(crop_size, categories)
  root = check_manual_dir(manual_dir, config.categories)
  return build_atomically(Pascal3d, config, root, data_dir, title="PASCAL3D+ dataset",
                          tmp_prefix=".pascal3d-tmp-")


def build_atomically(builder_cls: type[tfds.core.GeneratorBasedBuilder], config: tfds.core.BuilderConfig,
                     manual_dir: pathlib.Path, data_dir: PathLike, *, title: str, tmp_prefix: str) -> str:
  """Prepares a manual-download TFDS dataset (array_record files) atomically and returns its directory.

  Shared by the manual-download builders (this module's and `modelnet40`'s). The dataset is written into
  a temporary folder in `data_dir` and renamed into place only when complete, so
  `data_dir/<builder name>/<config name>/<version>` is either absent or whole. An existing complete
  dataset (one with dataset_info.json) is reused; a leftover without it is replaced.

  Args:
    builder_cls: the builder class; its `name` and `VERSION` name the destination.
    config: the builder config.
    manual_dir: the (already checked) manual download directory.
    data_dir: where TFDS datasets live ('~' is expanded).
    title: what the dataset is called in the log (e.g. 'PASCAL3D+ dataset').
    tmp_prefix: name prefix of the temporary folder (a dot name, e.g. '.pascal3d-tmp-').

  Returns:
    The dataset directory, for `tfds.builder_from_directory(...)`.
  """
  data_dir = pathlib.Path(os.path.expanduser(os.fspath(data_dir)))
  final = data_dir / builder_cls.name / config.name / str(builder_cls.VERSION)
  if (final / "dataset_info.json").is_file():
    logging.info("%s already prepared at %s", title, final)
    return str(final)
  data_dir.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=tmp_prefix, dir=data_dir))
  try:
    builder = builder_cls(config=config, data_dir=str(tmp))
    tfds_compat.use_local_bucket_files()  # splits over 1 GB spill to disk; TFDS's own way needs TensorFlow
    builder.download_and_prepare(
        file_format="array_record",
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir), try_download_gcs=False))
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():  # A leftover without dataset_info.json is not a dataset: replace it.
      shutil.rmtree(final)
    os.replace(builder.data_dir, final)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return str(final)
