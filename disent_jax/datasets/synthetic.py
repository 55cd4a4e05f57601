"""The synthetic image dataset: photo-like renders of a CAD database, as a TFDS array_record dataset.

Every example renders one model of the CAD database (uniform over models; all splits share the database,
since the task is pose estimation and retrieval within it, not generalisation to unseen models) at a
sampled viewpoint (`viewpoints.py`) and position (fully in view, or truncated by an image border), over a
random procedural background with random colours, light and occluders (`render.scene.compose_scene`). The
features are THE image features of the project (`features.pose_features`): the full image, the square crop
of the visible box (`crops.square_crop`), and labels in the project's conventions:
  quaternion  = canonical `geometry.matrix_to_quat(R_cv)`, viewpoint = its Pascal3D+ angles;
  translation_camera = the model origin in the camera frame, translation =
  `geometry.camera_to_crop_translation(translation_camera, bbox, K)` for the visible box bbox;
  occluded / truncated as `compose_scene` reports them, difficult = False.

Determinism: example i of a split depends only on (seed, split, i), through
`np.random.default_rng([seed, split_id, i])`, and on the settings (`SyntheticSettings`, which name the
dataset). So a dataset can be rebuilt bit for bit, generated in any number of worker processes, and any
example can be regenerated in memory (`render_example`) to check what was written.

Build with `build_synthetic` (atomic, reuses a finished build with the same settings) and read with
`tfds.builder_from_directory(path).as_data_source(split)` (no TensorFlow, see ../shared/design.md).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import hashlib
import io
import json
import logging
import multiprocessing
import os
import pathlib
import re
import shutil
import time
import uuid
from typing import Any, Iterator, Sequence

import jax
import numpy as np
import tensorflow_datasets as tfds
import tqdm
from PIL import Image

from disent_jax import geometry
from disent_jax.cad import collections as cad_collections
from disent_jax.cad import model as model_lib
from disent_jax.categories import CATEGORIES
from disent_jax.datasets import crops
from disent_jax.datasets import features as features_lib
from disent_jax.datasets import tfds_compat
from disent_jax.datasets import viewpoints as viewpoints_lib
from disent_jax.errors import ConfigError, DisentError
from disent_jax.render import camera as camera_lib
from disent_jax.render import scene as scene_lib

SPLITS: tuple[str, ...] = ("train", "validation", "test")
SPLIT_IDS: dict[str, int] = {name: i for i, name in enumerate(SPLITS)}
SETTINGS_FILE = "synthetic_settings.json"  # written into every finished dataset directory
BUILDER_NAME = "synthetic"

# One scene fails the visibility checks only in unlucky draws (a far, heavily truncated or occluded
# object); a few redraws from the same generator keep the example deterministic.
_MAX_ATTEMPTS = 25


@dataclasses.dataclass(frozen=True)
class SyntheticSettings:
  """Everything that determines the content of a synthetic dataset (and so its name).

  Attributes:
    cad_source: CAD database spec for `cad.collections.load_collection` ('zoo', 'pascal3d:/path/CAD', ...).
    image_size: side of the full square render in pixels.
    crop_size: side of the stored square object crop.
    num_train, num_validation, num_test: examples per split (0 leaves the split out).
    seed: the dataset seed.
    viewpoints: the viewpoint distribution.
    p_occlude: probability of trying to put an occluder in front of the object.
    p_truncate: probability of a placement cut by an image border.
    depth_range: range of the model origin's depth Z (the model has radius 0.5); with the default camera
      (f = 1.25 image_size) 1.6-3.2 makes the model's bounding circle 40-80 % of the image.
    focal_scale: focal length over image size of the render camera (`render.Camera.default`).
    supersample: render at this factor and average down (anti-aliased edges); 1 for speed.
    min_box_fraction: the visible box's longer side must be at least this fraction of the image.
    min_visible_fraction: at least this fraction of the image must show the object (thin shapes seen
      edge-on, a glider at elevation 5 degrees, cover well under 1 % and are valid views).
    backend: renderer, 'auto' (GL if EGL works, else ray casting), 'gl' or 'raycast'. Part of the
      settings because the backends differ in a few edge pixels.
  """
  cad_source: str = "zoo"
  image_size: int = 128
  crop_size: int = 64
  num_train: int = 10_000
  num_validation: int = 500
  num_test: int = 1_000
  seed: int = 0
  viewpoints: viewpoints_lib.ViewpointDistribution = viewpoints_lib.ViewpointDistribution()
  p_occlude: float = 0.3
  p_truncate: float = 0.15
  depth_range: tuple[float, float] = (1.6, 3.2)
  focal_scale: float = 1.25
  supersample: int = 1
  min_box_fraction: float = 0.1
  min_visible_fraction: float = 0.002
  backend: str = "auto"

  def __post_init__(self):
    if not isinstance(self.cad_source, str) or not self.cad_source.strip():
      raise ConfigError(f"cad_source must be a non-empty spec string, got {self.cad_source!r}")
    for name in ("image_size", "crop_size"):
      v = getattr(self, name)
      if isinstance(v, bool) or int(v) != v or v < 8:
        raise ConfigError(f"{name} must be an integer >= 8, got {v!r}")
    for name in ("num_train", "num_validation", "num_test", "seed"):
      v = getattr(self, name)
      if isinstance(v, bool) or int(v) != v or v < 0:
        raise ConfigError(f"{name} must be a non-negative integer, got {v!r}")
    if self.num_train + self.num_validation + self.num_test == 0:
      raise ConfigError("a synthetic dataset needs at least one example in some split")
    for name in ("p_occlude", "p_truncate", "min_box_fraction", "min_visible_fraction"):
      v = getattr(self, name)
      if not 0.0 <= v <= 1.0:
        raise ConfigError(f"{name} must lie in [0, 1], got {v!r}")
    lo, hi = self.depth_range
    if not 0.6 < lo <= hi:  # The model (radius 0.5) must lie in front of the camera.
      raise ConfigError(f"depth_range must satisfy 0.6 < min <= max, got {self.depth_range}")
    if not self.focal_scale > 0:
      raise ConfigError(f"focal_scale must be positive, got {self.focal_scale}")
    if int(self.supersample) != self.supersample or self.supersample < 1:
      raise ConfigError(f"supersample must be a positive integer, got {self.supersample}")
    if self.backend not in ("auto", "gl", "raycast"):
      raise ConfigError(f"backend must be 'auto', 'gl' or 'raycast', got {self.backend!r}")
    if not isinstance(self.viewpoints, viewpoints_lib.ViewpointDistribution):
      raise ConfigError(f"viewpoints must be a ViewpointDistribution, got {self.viewpoints!r}")
    object.__setattr__(self, "depth_range", (float(lo), float(hi)))

  def num_examples(self, split: str) -> int:
    """Number of examples of `split`."""
    return {"train": self.num_train, "validation": self.num_validation, "test": self.num_test}[split]

  def to_dict(self) -> dict[str, Any]:
    """JSON-ready dict (also the input of the dataset name's hash)."""
    d = dataclasses.asdict(self)
    d["depth_range"] = list(self.depth_range)
    return d

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> "SyntheticSettings":
    d = dict(d)
    d["viewpoints"] = viewpoints_lib.ViewpointDistribution(**d["viewpoints"])
    d["depth_range"] = tuple(d["depth_range"])
    return cls(**d)

  @property
  def camera(self) -> camera_lib.Camera:
    """The render camera (square image, centred principal point)."""
    return camera_lib.Camera.default(self.image_size, focal_scale=self.focal_scale)

  @property
  def config_name(self) -> str:
    """A TFDS config name: '<source>_<image>px_<crop>px_<hash of all settings>'."""
    kind = self.cad_source.split(":", 1)[0]
    tag = re.sub(r"[^a-z0-9]+", "", kind.lower()) or "cad"
    digest = hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:10]
    return f"{tag}_{self.image_size}px_{self.crop_size}px_{digest}"


# ------------------------------------------------------------------------------------ the CAD database


@functools.lru_cache(maxsize=4)
def load_database(cad_source: str) -> tuple[model_lib.CadModel, ...]:
  """The CAD models of `cad_source` (cached per process; loading the zoo takes about 2 s)."""
  models = tuple(cad_collections.load_collection(cad_source))
  if not models:
    raise ConfigError(f"CAD source {cad_source!r} has no models")
  return models


def database_categories(models: Sequence[model_lib.CadModel]) -> tuple[str, ...]:
  """The ClassLabel names: the 12 Pascal3D+ categories (in the paper's order) when the database uses
  only those, so zoo and Pascal3D+ datasets share labels; else the database's sorted category names."""
  cats = {m.category for m in models}
  if cats <= set(CATEGORIES):
    return CATEGORIES
  return tuple(sorted(cats))


# ---------------------------------------------------------------------------------- one example


@functools.lru_cache(maxsize=None)
def _label_fns():
  """Jitted label maths of `geometry` (float64 on the CPU; see viewpoints._jitted for why)."""
  return (jax.devices("cpu")[0], jax.jit(geometry.matrix_to_quat),
          jax.jit(geometry.camera_to_crop_translation))


def _labels(r_cv: np.ndarray, t_cam: np.ndarray, bbox: np.ndarray,
            k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(quaternion, crop translation) labels in float64."""
  cpu, to_q, to_t = _label_fns()
  with jax.enable_x64(True), jax.default_device(cpu):
    q = np.asarray(to_q(np.asarray(r_cv, np.float64)), np.float64)
    t = np.asarray(to_t(np.asarray(t_cam, np.float64), np.asarray(bbox, np.float64),
                        np.asarray(k, np.float64)), np.float64)
  return q, t


def render_example(settings: SyntheticSettings, models: Sequence[model_lib.CadModel],
                   categories: Sequence[str], split: str, index: int, renderer) -> dict[str, Any]:
  """Generates example `index` of `split` (a pure function of the settings, split and index).

  Args:
    settings: the dataset settings.
    models: the CAD database (`load_database(settings.cad_source)`).
    categories: the ClassLabel names (`database_categories(models)`).
    split: 'train', 'validation' or 'test'.
    index: the example's index within the split.
    renderer: a renderer of the settings' backend (created in this process).

  Returns:
    The example as numpy values: images as uint8 arrays, category as its name (TFDS encodes it), float
    features as float32 arrays, plus 'model_key' (not a dataset feature) naming the rendered model.

  Raises:
    DisentError: when no acceptable scene was found in `_MAX_ATTEMPTS` draws.
  """
  if split not in SPLIT_IDS:
    raise ConfigError(f"unknown split {split!r}; expected one of {SPLITS}")
  rng = np.random.default_rng([settings.seed, SPLIT_IDS[split], int(index)])
  cam = settings.camera
  # The model is drawn once, before any redraw of the scene, so models stay exactly uniform even if
  # some shapes (thin bottles seen edge-on) are rejected more often.
  model = models[int(rng.integers(len(models)))]
  if model.category not in categories:
    raise ConfigError(f"model {model.key} has category {model.category!r}, not one of {categories}")
  min_side = settings.min_box_fraction * settings.image_size
  min_pixels = settings.min_visible_fraction * settings.image_size ** 2
  for _ in range(_MAX_ATTEMPTS):
    vp = viewpoints_lib.sample_viewpoint(rng, settings.viewpoints)
    t_cam = scene_lib.random_translation(rng, cam, z_range=settings.depth_range,
                                         p_truncate=settings.p_truncate)
    scene = scene_lib.compose_scene(rng, model.mesh, vp.rotation, t_cam, cam, renderer,
                                    p_occlude=settings.p_occlude, supersample=settings.supersample)
    bbox = scene["visible_bbox"]
    if (bbox is not None and max(bbox[2] - bbox[0], bbox[3] - bbox[1]) >= min_side
        and scene["mask"].sum() >= min_pixels):
      break
  else:
    raise DisentError(f"{split}/{index}: no scene of {model.key} passed the visibility checks in "
                      f"{_MAX_ATTEMPTS} draws; lower min_box_fraction / min_visible_fraction")
  quat, trans = _labels(vp.rotation, t_cam, bbox, cam.K)
  return {
      "instance_id": f"{split}/{int(index):06d}",
      "image": scene["image"],
      "crop": crops.square_crop(scene["image"], bbox, settings.crop_size),
      "bbox": bbox.astype(np.float32),
      "bbox_area": np.float32((bbox[2] - bbox[0]) * (bbox[3] - bbox[1])),
      "category": model.category,
      "cad_index": np.int32(model.cad_index),
      "quaternion": quat.astype(np.float32),
      "viewpoint": np.array(viewpoints_lib.rotation_viewpoint(vp.rotation), np.float32),
      "translation": trans.astype(np.float32),
      "translation_camera": np.asarray(t_cam, np.float32),
      "intrinsics": cam.K.astype(np.float32),
      "occluded": bool(scene["occluded"]),
      "truncated": bool(scene["truncated"]),
      "difficult": False,
      "model_key": model.key,
  }


def png_bytes(image: np.ndarray) -> bytes:
  """Lossless PNG encoding (TFDS cannot encode arrays without TensorFlow; it stores these bytes as is)."""
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format="PNG", compress_level=1)  # Level 1: 3x faster, ~10 % larger.
  return buf.getvalue()


def encode_example(example: dict[str, Any]) -> dict[str, Any]:
  """The TFDS feature dict of a `render_example` result (images as PNG bytes, no extra keys)."""
  out = {k: v for k, v in example.items() if k != "model_key"}
  out["image"] = png_bytes(example["image"])
  out["crop"] = png_bytes(example["crop"])
  return out


# ---------------------------------------------------------------------------------- worker processes

# Per-process state of the generation workers: the database and the renderer are built once per process,
# inside it (a GL context must never be inherited across a fork, see render/gl.py).
_WORKER: dict[str, Any] = {}


def _worker_init(settings_dict: dict[str, Any], lp_threads: int | None) -> None:
  from disent_jax import render  # pylint: disable=import-outside-toplevel
  settings = SyntheticSettings.from_dict(settings_dict)
  models = load_database(settings.cad_source)
  # In this process (num_workers=0) reuse its one default renderer across splits and builds rather than
  # opening a new GL context each time; pool workers make their own single-threaded one.
  renderer = (render.default_renderer(settings.backend) if lp_threads is None else
              render.make_renderer(settings.backend, lp_threads=lp_threads))
  _WORKER.update(settings=settings, models=models, categories=database_categories(models),
                 renderer=renderer)


def _worker_render(job: tuple[str, int]) -> dict[str, Any]:
  split, index = job
  ex = render_example(_WORKER["settings"], _WORKER["models"], _WORKER["categories"], split, index,
                      _WORKER["renderer"])
  return encode_example(ex)


def generate_split(settings: SyntheticSettings, split: str, *, num_workers: int = 0,
                   progress: bool = True) -> Iterator[tuple[int, dict[str, Any]]]:
  """Yields (index, encoded example) for every example of `split`, in index order.

  Args:
    settings: the dataset settings.
    split: the split name.
    num_workers: 0 renders in this process; n > 0 uses n 'spawn' worker processes (never 'fork': the
      parent may hold a GL context or JAX threads).
    progress: show a tqdm progress bar.

  Yields:
    (index, TFDS feature dict).
  """
  n = settings.num_examples(split)
  bar = tqdm.tqdm(total=n, desc=f"rendering {split}", unit="img", disable=not progress,
                  dynamic_ncols=True)
  with bar:
    if num_workers <= 0:
      _worker_init(settings.to_dict(), None)
      for i in range(n):
        yield i, _worker_render((split, i))
        bar.update()
      return
    ctx = multiprocessing.get_context("spawn")
    # llvmpipe would start a thread per core in every worker; one each avoids oversubscription.
    with concurrent.futures.ProcessPoolExecutor(num_workers, mp_context=ctx, initializer=_worker_init,
                                                initargs=(settings.to_dict(), 1)) as pool:
      jobs = ((split, i) for i in range(n))
      for i, ex in enumerate(pool.map(_worker_render, jobs, chunksize=16)):
        yield i, ex
        bar.update()


# ------------------------------------------------------------------------------------ TFDS builder


@dataclasses.dataclass(eq=False)
class SyntheticConfig(tfds.core.BuilderConfig):
  """BuilderConfig carrying the `SyntheticSettings` (its name is `settings.config_name`)."""
  settings: SyntheticSettings = SyntheticSettings()


def make_config(settings: SyntheticSettings) -> SyntheticConfig:
  """The builder config of `settings`."""
  return SyntheticConfig(name=settings.config_name, settings=settings,
                         description=f"renders of the CAD database {settings.cad_source!r} (all settings: "
                                     f"metadata.json and {SETTINGS_FILE})")


class Synthetic(tfds.core.GeneratorBasedBuilder):
  """Photo-like renders of a CAD database with exact pose, translation and box labels."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release: zoo or any CAD collection, PNG images, array_record."}
  BUILDER_CONFIGS = [make_config(SyntheticSettings())]

  def __init__(self, *args, num_workers: int = 0, progress: bool = True, **kwargs):
    self._num_workers = int(num_workers)
    self._progress = progress
    super().__init__(*args, **kwargs)

  @property
  def settings(self) -> SyntheticSettings:
    return self.builder_config.settings

  def _info(self) -> tfds.core.DatasetInfo:
    models = load_database(self.settings.cad_source)
    metadata = tfds.core.MetadataDict(
        settings=self.settings.to_dict(),
        models=[{"category": m.category, "cad_index": int(m.cad_index), "name": m.name,
                 "source": m.source} for m in models])
    return self.dataset_info_from_configs(
        description=__doc__.split("\n\n", 1)[0],
        features=features_lib.pose_features(database_categories(models)),
        metadata=metadata,
        disable_shuffling=True,  # Record i of a split is example i: regenerable, easy to inspect.
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download: everything is rendered.
    return {split: self._generate_examples(split) for split in SPLITS
            if self.settings.num_examples(split) > 0}

  def _generate_examples(self, split: str):
    yield from generate_split(self.settings, split, num_workers=self._num_workers,
                              progress=self._progress)


# ------------------------------------------------------------------------------------ atomic builds


def dataset_dir(data_dir: str | os.PathLike, settings: SyntheticSettings) -> pathlib.Path:
  """Where `build_synthetic` puts the dataset of `settings` under `data_dir`."""
  return (pathlib.Path(os.path.expanduser(os.fspath(data_dir))) / BUILDER_NAME / settings.config_name
          / str(Synthetic.VERSION))


def is_complete(path: str | os.PathLike, settings: SyntheticSettings | None = None) -> bool:
  """True if `path` holds a finished synthetic dataset (of `settings`, when given).

  The settings file is written after TFDS has finished, and the directory only appears under its final
  name by an atomic rename, so an interrupted build never satisfies this.
  """
  path = pathlib.Path(path)
  marker = path / SETTINGS_FILE
  if not (marker.is_file() and (path / "dataset_info.json").is_file()):
    return False
  if settings is None:
    return True
  try:
    return json.loads(marker.read_text()) == settings.to_dict()
  except (OSError, ValueError):
    return False


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def _remove_stale_tmp(root: pathlib.Path, name: str) -> None:
  """Deletes temporary build dirs of `name` left by killed builds (their pid no longer runs)."""
  for p in root.glob(f".tmp-{name}-*"):
    m = re.match(rf"\.tmp-{re.escape(name)}-(\d+)-", p.name)
    if m and not _pid_alive(int(m.group(1))):
      logging.info("removing stale temporary build %s", p)
      shutil.rmtree(p, ignore_errors=True)


def build_synthetic(data_dir: str | os.PathLike, settings: SyntheticSettings | None = None, *,
                    num_workers: int = 0, progress: bool = True, overwrite: bool = False,
                    **setting_overrides) -> str:
  """Builds (or reuses) the synthetic dataset of `settings` under `data_dir`; returns its directory.

  The dataset is generated by TFDS (`file_format='array_record'`) into a temporary sibling directory and
  renamed into place only when complete, so an interrupted build never leaves a dataset that looks
  finished. A finished dataset with the same settings is reused without rendering anything.

  Args:
    data_dir: root directory; the dataset goes to `<data_dir>/synthetic/<config_name>/<version>`.
    settings: the dataset settings; None for the defaults.
    num_workers: rendering processes (0: render in this process; see `generate_split`).
    progress: show progress bars.
    overwrite: rebuild even if a finished dataset exists.
    **setting_overrides: fields of `SyntheticSettings` replacing those of `settings`
      (e.g. `cad_source='pascal3d:/data/CAD', num_train=2000`).

  Returns:
    The dataset directory, readable with `tfds.builder_from_directory`.
  """
  settings = settings or SyntheticSettings()
  if setting_overrides:
    unknown = set(setting_overrides) - {f.name for f in dataclasses.fields(SyntheticSettings)}
    if unknown:
      raise ConfigError(f"unknown synthetic dataset settings {sorted(unknown)}")
    settings = dataclasses.replace(settings, **setting_overrides)
  final = dataset_dir(data_dir, settings)
  if is_complete(final, settings) and not overwrite:
    logging.info("reusing the finished synthetic dataset %s", final)
    return str(final)
  root = final.parents[2]
  root.mkdir(parents=True, exist_ok=True)
  _remove_stale_tmp(root, settings.config_name)
  tmp = root / f".tmp-{settings.config_name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
  try:
    start = time.perf_counter()
    # TFDS refuses a config object named like a registered one: name the registered default instead.
    registered = {c.name for c in Synthetic.BUILDER_CONFIGS}
    config = settings.config_name if settings.config_name in registered else make_config(settings)
    builder = Synthetic(data_dir=str(tmp), config=config, num_workers=num_workers, progress=progress)
    tfds_compat.use_local_bucket_files()  # splits over 1 GB spill to disk; TFDS's own way needs TensorFlow
    builder.download_and_prepare(download_dir=str(tmp / "downloads"), file_format="array_record")
    built = pathlib.Path(builder.data_dir)
    (built / SETTINGS_FILE).write_text(json.dumps(settings.to_dict(), indent=1, sort_keys=True))
    logging.info("rendered synthetic dataset %s in %.1f s", settings.config_name,
                 time.perf_counter() - start)
    final.parent.mkdir(parents=True, exist_ok=True)
    if is_complete(final, settings) and not overwrite:
      logging.info("another process finished %s meanwhile; keeping its copy", final)
      return str(final)
    if final.exists():  # overwrite=True, or an incomplete leftover: move it aside, then replace.
      trash = root / f".tmp-{settings.config_name}-{os.getpid()}-old-{uuid.uuid4().hex[:8]}"
      os.rename(final, trash)
      shutil.rmtree(trash, ignore_errors=True)
    os.rename(built, final)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return str(final)
