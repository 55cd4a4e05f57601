"""The grain input pipeline of Stage II and evaluation: TFDS array_record datasets -> numpy batches.

Reads any dataset written with the project's features (`datasets/features.py`: synthetic renders,
Pascal3D+, ...) through `tfds.builder_from_directory(dir).as_data_source(split)` (no TensorFlow) and
yields per-process batches of numpy arrays, ready to be put on a device mesh:

  image        float32 (B, S, S, 3), the object crop normalised with the ImageNet mean / std;
  category     int32 (B,)  ClassLabel index;      cad_index  int32 (B,) 1-based;
  quaternion   float32 (B, 4);  viewpoint float32 (B, 3);
  translation  float32 (B, 3)   crop-relative label for `bbox` (`geometry.camera_to_crop_translation`);
  translation_camera float32 (B, 3);  bbox float32 (B, 4), the box the crop was cut from;
  intrinsics   float32 (B, 3, 3);  occluded, truncated, difficult bool (B,);  bbox_area float32 (B,);
  instance_id  str (B,);  mask bool (B,), False for padding examples (see below);
  model_index  int32 (B,), only with a `model_index_fn`.

Order and sharding. The examples of every epoch are permuted (a fresh permutation per epoch, from `seed`,
when `shuffle`), and process p of P takes positions p, p + P, p + 2P, ... of the epoch, so the processes'
examples are disjoint and together cover the epoch:
  * shuffle=True (training): every process takes N // P examples per epoch; the N mod P examples at the end
    of each epoch's permutation (different ones every epoch) are skipped, so all processes run in step.
  * shuffle=False (evaluation): every process takes ceil(N / P) positions; positions past N are padding
    examples (zero image, mask False), so all processes yield the same number of batches and every real
    example is seen exactly once.
With drop_remainder=False the last batch is padded to the full batch size with mask-False examples (fixed
shapes for jit); with drop_remainder=True it is dropped.

Determinism and resumption. Element k of a process's stream is a pure function of (dataset, split, seed,
process index/count, k): its source index and its augmentation randomness (grain's `random_map` seeds a
generator from (seed, k)). So a fixed seed gives the same batches, and `get_state()` (a small JSON-ready
dict) saved with a checkpoint and passed to `set_state()` continues with exactly the next batch.

Augmentation (`AugmentConfig`): the ground-truth box is jittered like a detector's output
(`crops.jitter_bbox`), the crop is cut again from the full image with the jittered box, and the translation
label is re-encoded for the new box: the camera translation is decoded from the label with the original
box (`geometry.crop_to_camera_translation`) and encoded with the jittered one
(`geometry.camera_to_crop_translation`), so labels stay consistent with what the crop shows. Photometric
jitter (brightness, contrast, saturation) changes no label. No flips: a mirrored image is not a rotation
of the same CAD model.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import os
import sys
import threading
from typing import Any, Callable, Iterator

import grain
import jax
import numpy as np
import tensorflow_datasets as tfds
import tqdm
from absl import logging
from PIL import Image

from disent_jax import geometry
from disent_jax.datasets import crops
from disent_jax.errors import ConfigError

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)

# Keys of every batch (plus 'model_index' with a model_index_fn).
BATCH_KEYS: tuple[str, ...] = (
    "image", "category", "cad_index", "quaternion", "viewpoint", "translation", "translation_camera",
    "bbox", "intrinsics", "occluded", "truncated", "difficult", "bbox_area", "instance_id", "mask")

ModelIndexFn = Callable[[str, int], int]


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  """Training-time augmentation.

  Attributes:
    bbox_scale: maximum log-scale change of the box's width and height (`crops.jitter_bbox`).
    bbox_shift: maximum box-centre shift as a fraction of the box's width / height.
    brightness: multiplicative brightness factor drawn from 1 +- brightness.
    contrast: contrast factor about the crop's mean grey level drawn from 1 +- contrast.
    saturation: saturation factor (blend with the grey image) drawn from 1 +- saturation.
  """
  bbox_scale: float = 0.1
  bbox_shift: float = 0.1
  brightness: float = 0.25
  contrast: float = 0.25
  saturation: float = 0.25

  def __post_init__(self):
    for f in dataclasses.fields(self):
      v = getattr(self, f.name)
      if not 0.0 <= v <= 1.0:
        raise ConfigError(f"AugmentConfig.{f.name} must lie in [0, 1], got {v!r}")


def normalize_image(image: np.ndarray) -> np.ndarray:
  """uint8 (or float in [0, 255]) RGB -> float32 normalised with the ImageNet mean and std."""
  return ((np.asarray(image, np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD).astype(np.float32)


def denormalize_image(image: np.ndarray) -> np.ndarray:
  """Inverse of `normalize_image`, back to uint8 (for figures)."""
  x = (np.asarray(image, np.float32) * IMAGENET_STD + IMAGENET_MEAN) * 255.0
  return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _decode_png(data: bytes | np.ndarray) -> np.ndarray:
  """An encoded PNG -> uint8 RGB; an already decoded array (the in-memory cache) is returned as is."""
  if isinstance(data, np.ndarray) and data.ndim == 3:
    return data
  with Image.open(io.BytesIO(data)) as im:
    return np.asarray(im.convert("RGB"))


# The in-memory cache may take at most this fraction of the machine's physical memory.
_CACHE_MAX_MEMORY_FRACTION = 0.5


def _physical_memory_bytes() -> int | None:
  try:
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
  except (ValueError, OSError, AttributeError):
    return None


def decode_split(source, *, keys: tuple[str, ...] = ("image", "crop"),
                 desc: str = "decoding") -> list[dict[str, Any]] | None:
  """Every record of a data source, deserialised and with its PNGs decoded, as a list in memory.

  Why: reading a record (array_record + example parsing) and decoding its PNGs is ~0.7 ms of the ~1.4 ms
  an augmented example costs on one CPU core (profiled). On a 2-core CPU the pipeline shares the cores with
  the training step, and XLA's parallel ops wait for the core the pipeline holds: measured with the demo's
  Stage II step (2 cores, batch 32, 48 px), at most 155-188 images/s with the streaming pipeline against
  230-265 on pre-made batches; with this cache 211 against 222 on pre-made batches in the same minutes.

  Args:
    source: a data source (`open_source`): len() and integer indexing.
    keys: the PNG fields to decode; the others stay encoded (`_decode_png` takes either).
    desc: progress bar label.

  Returns:
    The records (dicts as the source returns them, with the `keys` fields as uint8 (H, W, 3) arrays), or
    None when they would take more than half of the physical memory (estimated from the first record);
    the caller then streams from the source instead.
  """
  def decoded(i: int) -> dict[str, Any]:
    raw = dict(source[i])
    for key in keys:
      raw[key] = _decode_png(raw[key])
    return raw

  n = len(source)
  if n == 0:
    return []
  first = decoded(0)
  estimate = n * sum(first[key].nbytes for key in keys)
  memory = _physical_memory_bytes()
  if memory is not None and estimate > _CACHE_MAX_MEMORY_FRACTION * memory:
    logging.warning("not caching %d decoded examples in memory: ~%.1f GiB, more than %d%% of the %.1f GiB "
                    "of this machine; streaming from disk instead", n, estimate / 2**30,
                    int(100 * _CACHE_MAX_MEMORY_FRACTION), memory / 2**30)
    return None
  records = [first]
  records.extend(decoded(i) for i in tqdm.tqdm(range(1, n), desc=desc, unit="img", initial=1, total=n,
                                               mininterval=2.0, dynamic_ncols=True))
  logging.info("%s: %d examples decoded in memory (~%.2f GiB)", desc, n, estimate / 2**30)
  return records


def color_jitter(rng: np.random.Generator, image: np.ndarray, cfg: AugmentConfig) -> np.ndarray:
  """Random brightness, contrast and saturation of a uint8 image; returns float32 in [0, 255]."""
  x = image.astype(np.float32)
  grey = x @ np.array([0.299, 0.587, 0.114], np.float32)
  if cfg.saturation:
    s = rng.uniform(1 - cfg.saturation, 1 + cfg.saturation)
    x = grey[..., None] + s * (x - grey[..., None])
  if cfg.contrast:
    c = rng.uniform(1 - cfg.contrast, 1 + cfg.contrast)
    x = grey.mean() + c * (x - grey.mean())
  if cfg.brightness:
    x = x * rng.uniform(1 - cfg.brightness, 1 + cfg.brightness)
  return np.clip(x, 0.0, 255.0)


# --------------------------------------------------------------------------------- index bookkeeping


@dataclasses.dataclass(frozen=True)
class _Plan:
  """Maps element k of this process's stream to a source index (or -1 for padding)."""
  num_source: int
  per_epoch: int  # elements per epoch for this process
  total: int  # real elements in the stream (sys.maxsize when repeating forever); later ones are padding
  shuffle: bool
  seed: int
  process_index: int
  process_count: int

  def source_index(self, k: int) -> int:
    if k >= self.total:
      return -1
    epoch, j = divmod(k, self.per_epoch)
    g = j * self.process_count + self.process_index
    if g >= self.num_source:
      return -1  # evaluation padding
    if not self.shuffle:
      return g
    return int(_epoch_permutation(self.num_source, (self.seed + epoch) % 2**32)[g])


@functools.lru_cache(maxsize=8)
def _epoch_permutation(n: int, seed: int) -> grain.MapDataset:
  """A lazily evaluated permutation of range(n) (grain's index shuffle: O(1) memory, random access)."""
  return grain.MapDataset.range(n).shuffle(seed=seed)


# ------------------------------------------------------------------------------------ element maps


class _LoadElement:
  """Reads and prepares one example (picklable, so grain worker processes can run it)."""

  def __init__(self, builder_dir: str, split: str, image_size: int, augment: AugmentConfig | None,
               model_index_fn: ModelIndexFn | None, categories: tuple[str, ...],
               cache_decoded: bool = False):
    self.builder_dir = builder_dir
    self.split = split
    self.image_size = image_size
    self.augment = augment
    self.model_index_fn = model_index_fn
    self.categories = categories
    self.cache_decoded = cache_decoded
    self._source = None
    self._records = None
    self._lock = threading.Lock()

  def __getstate__(self):
    d = dict(self.__dict__)
    # Re-opened (and, with cache_decoded, decoded again) in each worker process: pickling the decoded
    # split would copy it through a pipe per worker.
    d["_source"] = None
    d["_records"] = None
    del d["_lock"]
    return d

  def __setstate__(self, d):
    self.__dict__.update(d)
    self._lock = threading.Lock()

  @property
  def source(self):
    if self._source is None:
      self._source = open_source(self.builder_dir, self.split)
    return self._source

  def load_records(self):
    """What examples are read from: the decoded in-memory split (cache_decoded; decoded on the first call,
    once, with a progress bar) or the data source."""
    if not self.cache_decoded:
      return self.source
    if self._records is None:
      with self._lock:  # grain's reading threads may all ask first
        if self._records is None:
          # Augmented crops are cut from the full image only; the stored crop is never read then.
          keys = ("image",) if self.augment is not None else ("image", "crop")
          records = decode_split(self.source, keys=keys, desc=f"decoding {self.split} into memory")
          self._records = self.source if records is None else records
    return self._records

  def _padding(self) -> dict[str, Any]:
    s = self.image_size
    ex = {
        "image": np.zeros((s, s, 3), np.float32), "category": np.int32(0), "cad_index": np.int32(0),
        "quaternion": np.array([1, 0, 0, 0], np.float32), "viewpoint": np.zeros(3, np.float32),
        "translation": np.zeros(3, np.float32), "translation_camera": np.zeros(3, np.float32),
        "bbox": np.array([0, 0, 1, 1], np.float32), "intrinsics": np.eye(3, dtype=np.float32),
        "occluded": False, "truncated": False, "difficult": False, "bbox_area": np.float32(0),
        "instance_id": "", "mask": False,
    }
    if self.model_index_fn is not None:
      ex["model_index"] = np.int32(0)
    if self.augment is not None:
      ex["bbox_original"] = ex["bbox"].copy()
    return ex

  def __call__(self, k: int, rng: np.random.Generator | None = None, *, plan: _Plan) -> dict[str, Any]:
    idx = plan.source_index(k)
    if idx < 0:
      return self._padding()
    raw = self.load_records()[idx]
    bbox = np.asarray(raw["bbox"], np.float32)
    out = {
        "category": np.int32(raw["category"]), "cad_index": np.int32(raw["cad_index"]),
        "quaternion": np.asarray(raw["quaternion"], np.float32),
        "viewpoint": np.asarray(raw["viewpoint"], np.float32),
        "translation": np.asarray(raw["translation"], np.float32),
        "translation_camera": np.asarray(raw["translation_camera"], np.float32),
        "bbox": bbox, "intrinsics": np.asarray(raw["intrinsics"], np.float32),
        "occluded": bool(raw["occluded"]), "truncated": bool(raw["truncated"]),
        "difficult": bool(raw["difficult"]), "bbox_area": np.float32(raw["bbox_area"]),
        "instance_id": _as_str(raw["instance_id"]), "mask": True,
    }
    if self.model_index_fn is not None:
      out["model_index"] = np.int32(self.model_index_fn(self.categories[out["category"]],
                                                        int(out["cad_index"])))
    if self.augment is None:
      crop = _decode_png(raw["crop"])
      if crop.shape[:2] != (self.image_size, self.image_size):
        # A different input size: cut THE crop at that size from the full image (no double resampling).
        crop = crops.square_crop(_decode_png(raw["image"]), bbox, self.image_size)
      out["image"] = normalize_image(crop)
      return out
    full = _decode_png(raw["image"])
    box = crops.jitter_bbox(rng, bbox, scale=self.augment.bbox_scale, shift=self.augment.bbox_shift,
                            image_size=full.shape[:2]).astype(np.float32)
    # Cut with the float32 box that the batch carries, so crop, box and translation label agree exactly.
    crop = crops.square_crop(full, box, self.image_size)
    out["image"] = normalize_image(color_jitter(rng, crop, self.augment))
    out["bbox_original"] = bbox
    out["bbox"] = box
    return out


def _as_str(v) -> str:
  return v.decode("utf-8") if isinstance(v, (bytes, np.bytes_)) else str(v)


def reencode_translation(translation: np.ndarray, bbox_old: np.ndarray, bbox_new: np.ndarray,
                         intrinsics: np.ndarray) -> np.ndarray:
  """The crop translation label for `bbox_new` of an object labelled `translation` for `bbox_old`.

  Decodes the camera translation with the old box and re-encodes it with the new one: geometry's own
  functions evaluated with NumPy in float64. Not with jax: on a CPU device a jax call from the pipeline's
  reading threads queues behind the training step in flight (py-spy on the 2-core demo's Stage II showed
  both reading threads waiting here for the step), which ties the pipeline to the step's pace.

  Args:
    translation: (..., 3) labels for bbox_old.
    bbox_old: (..., 4) boxes the labels refer to.
    bbox_new: (..., 4) new boxes.
    intrinsics: (..., 3, 3) cameras.

  Returns:
    (..., 3) float32 labels for bbox_new.
  """
  k = np.asarray(intrinsics, np.float64)
  t_cam = geometry.crop_to_camera_translation(np.asarray(translation, np.float64),
                                              np.asarray(bbox_old, np.float64), k, xp=np)
  return geometry.camera_to_crop_translation(t_cam, np.asarray(bbox_new, np.float64), k,
                                             xp=np).astype(np.float32)


def _finish_batch(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Batch-level step: re-encodes augmented translations (one jitted call per batch)."""
  old = batch.pop("bbox_original", None)
  if old is not None:
    new_t = reencode_translation(batch["translation"], old, batch["bbox"], batch["intrinsics"])
    batch["translation"] = np.where(batch["mask"][:, None], new_t, batch["translation"])
  return batch


# ------------------------------------------------------------------------------------------ pipeline


@functools.lru_cache(maxsize=16)
def _builder(builder_dir: str):
  return tfds.builder_from_directory(builder_dir)


def open_source(builder_dir: str | os.PathLike, split: str):
  """The TFDS array_record data source of `split`, with PNG images left encoded (decoded on demand)."""
  builder = _builder(os.fspath(builder_dir))
  if split not in builder.info.splits:
    raise ConfigError(f"{builder_dir} has no split {split!r}; it has {sorted(builder.info.splits)}")
  skip = tfds.decode.SkipDecoding()
  return builder.as_data_source(split, decoders={"image": skip, "crop": skip})


def category_names(builder_dir: str | os.PathLike) -> tuple[str, ...]:
  """The ClassLabel names of a dataset's `category` feature."""
  return tuple(_builder(os.fspath(builder_dir)).info.features["category"].names)


def _ensure_absl_flags_parsed() -> None:
  """grain's worker processes read absl flags; parse them (empty) when no absl app has (design.md)."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


class BatchIterator(Iterator[dict[str, np.ndarray]]):
  """Iterator over numpy batch dicts with a checkpointable state.

  Attributes:
    num_examples: examples in the split.
    steps_per_epoch: batches per epoch for this process (with the remainder rule of `make_pipeline`).
    categories: the dataset's category names (index = `category` value).
  """

  def __init__(self, dataset: grain.IterDataset, fingerprint: dict[str, Any], num_examples: int,
               steps_per_epoch: int, categories: tuple[str, ...]):
    self._dataset = dataset
    self._it = iter(dataset)
    self._fingerprint = fingerprint
    self.num_examples = num_examples
    self.steps_per_epoch = steps_per_epoch
    self.categories = categories

  def __iter__(self) -> "BatchIterator":
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    return next(self._it)

  @property
  def fingerprint(self) -> dict[str, Any]:
    """The pipeline settings a saved state is checked against (dataset name, split, seed, ...)."""
    return dict(self._fingerprint)

  @property
  def grain_iterator(self) -> grain.DatasetIterator:
    """The underlying grain iterator (for grain's own checkpoint handlers)."""
    return self._it

  def get_state(self) -> dict[str, Any]:
    """A JSON-serialisable state: restoring it with `set_state` continues with the next batch."""
    state = {"grain": self._it.get_state(), "pipeline": self._fingerprint}
    json.dumps(state)  # Fail here, not when a checkpoint is written, if grain's state changes type.
    return state

  def set_state(self, state: dict[str, Any]) -> None:
    """Restores a state from `get_state` of a pipeline with the same settings.

    Raises:
      ConfigError: the state belongs to a pipeline with other settings (dataset, split, seed, batch
        size, sharding, ...), whose positions would mean other examples.
    """
    if not isinstance(state, dict) or "grain" not in state or "pipeline" not in state:
      raise ConfigError(f"not an input pipeline state: {state!r:.200}")
    saved = json.loads(json.dumps(state["pipeline"]))
    mine = json.loads(json.dumps(self._fingerprint))
    if saved != mine:
      diff = {k: (saved.get(k), mine.get(k)) for k in set(saved) | set(mine) if saved.get(k) != mine.get(k)}
      raise ConfigError(f"input pipeline state was saved with other settings (saved, now): {diff}")
    self._it.set_state(state["grain"])

  def close(self) -> None:
    """Stops worker processes, if any."""
    close = getattr(self._it, "close", None)
    if close is not None:
      close()


def make_pipeline(data_dir: str | os.PathLike, split: str, *, batch_size: int,
                  image_size: int | None = None, seed: int = 0, shuffle: bool = True,
                  num_epochs: int | None = None, augment: AugmentConfig | bool | None = None,
                  process_index: int | None = None, process_count: int | None = None,
                  worker_count: int = 0, drop_remainder: bool = True,
                  model_index_fn: ModelIndexFn | None = None, read_threads: int = 2,
                  prefetch_buffer_size: int = 64, cache_decoded: bool = False) -> BatchIterator:
  """A resumable iterator of numpy batches of one split (see the module docstring).

  Args:
    data_dir: a finished dataset directory (as returned by `build_synthetic`; anything
      `tfds.builder_from_directory` reads).
    split: 'train', 'validation', 'test', ...
    batch_size: examples per batch of THIS process (the global batch is batch_size * process_count).
    image_size: side of the output crops; None for the dataset's stored crop size. Another size is cut
      from the full image (never by resizing the stored crop twice).
    seed: shuffle and augmentation seed (the same on every process).
    shuffle: a fresh permutation per epoch (training); False keeps the split's order (evaluation).
    num_epochs: epochs to iterate; None repeats forever.
    augment: an `AugmentConfig`, True for the default one, or None / False for none.
    process_index: this process's index; None for `jax.process_index()`.
    process_count: number of processes; None for `jax.process_count()`.
    worker_count: grain worker processes (0: everything in this process; tests use 0).
    drop_remainder: drop the last partial batch (True) or pad it with mask-False examples (False).
    model_index_fn: optional (category name, cad_index) -> row of the model in a voxel bank; adds
      'model_index' to the batches.
    read_threads: threads reading and decoding examples (in each worker process).
    prefetch_buffer_size: elements prefetched by the reading threads.
    cache_decoded: read and decode the whole split once into memory (`decode_split`: a progress bar,
      then ~2x fewer CPU cycles per example; the synthetic default's 10,000 training examples take
      ~0.46 GiB when augmenting). Skipped with a warning when the split would take more than half the
      physical memory. With worker processes every worker holds its own copy. The batches are identical
      either way.

  Returns:
    The `BatchIterator`.

  Raises:
    ConfigError: bad arguments, or a split too small for the sharding and batch size.
  """
  builder_dir = os.fspath(data_dir)
  if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
    raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
  if process_index is None:
    process_index = jax.process_index()
  if process_count is None:
    process_count = jax.process_count()
  if not 0 <= process_index < process_count:
    raise ConfigError(f"need 0 <= process_index < process_count, got {process_index}, {process_count}")
  if num_epochs is not None and (int(num_epochs) != num_epochs or num_epochs < 1):
    raise ConfigError(f"num_epochs must be a positive integer or None, got {num_epochs!r}")
  if worker_count < 0 or read_threads < 1:
    raise ConfigError(f"need worker_count >= 0 and read_threads >= 1, got {worker_count}, {read_threads}")
  if augment is True:
    augment = AugmentConfig()
  elif augment is False:
    augment = None
  if not 0 <= seed < 2**32:
    raise ConfigError(f"seed must lie in [0, 2**32), got {seed}")

  source = open_source(builder_dir, split)
  n = len(source)
  categories = category_names(builder_dir)
  if image_size is None:
    image_size = _decode_png(source[0]["crop"]).shape[0] if n else 0
  if isinstance(image_size, bool) or int(image_size) != image_size or image_size < 1:
    raise ConfigError(f"image_size must be a positive integer, got {image_size!r}")

  per_epoch = n // process_count if shuffle else -(-n // process_count)
  if per_epoch < 1:
    raise ConfigError(f"split {split!r} of {builder_dir} has {n} examples, too few for "
                      f"{process_count} processes")
  if num_epochs is None:
    total = length = sys.maxsize
  else:
    total = length = per_epoch * int(num_epochs)
    if not drop_remainder:
      length = -(-total // batch_size) * batch_size  # Pad the last batch (elements >= total: mask False).
    elif total < batch_size:
      raise ConfigError(f"{total} examples per process in {num_epochs} epoch(s) of {split!r} make no "
                        f"full batch of {batch_size}; use drop_remainder=False or a smaller batch")
  plan = _Plan(num_source=n, per_epoch=per_epoch, total=total, shuffle=bool(shuffle), seed=int(seed),
               process_index=int(process_index), process_count=int(process_count))
  load = _LoadElement(builder_dir, split, int(image_size), augment, model_index_fn, categories,
                      cache_decoded=bool(cache_decoded))
  if cache_decoded and worker_count == 0:
    load.load_records()  # decode now, with a progress bar, not mid-step

  ds = grain.MapDataset.range(length)
  if augment is None:
    ds = ds.map(functools.partial(_map_plain, load=load, plan=plan))
  else:
    ds = ds.random_map(functools.partial(_map_random, load=load, plan=plan), seed=int(seed))
  ds = ds.batch(int(batch_size), drop_remainder=drop_remainder).map(_finish_batch)
  it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=int(read_threads),
                                               prefetch_buffer_size=int(prefetch_buffer_size)))
  if worker_count > 0:
    _ensure_absl_flags_parsed()
    it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=int(worker_count)))

  fingerprint = {
      # The dataset's identity, not its path: a state stays valid when the data moves to another disk.
      "dataset": _builder(builder_dir).info.full_name, "split": split, "num_examples": n,
      "batch_size": int(batch_size), "image_size": int(image_size), "seed": int(seed),
      "shuffle": bool(shuffle), "num_epochs": num_epochs, "drop_remainder": bool(drop_remainder),
      "augment": None if augment is None else dataclasses.asdict(augment),
      "process_index": int(process_index), "process_count": int(process_count),
      "worker_count": int(worker_count),
  }
  steps = per_epoch // batch_size if drop_remainder else -(-per_epoch // batch_size)
  return BatchIterator(it_ds, fingerprint, n, steps, categories)


def _map_plain(k: int, *, load: _LoadElement, plan: _Plan) -> dict[str, Any]:
  return load(int(k), plan=plan)


def _map_random(k: int, rng: np.random.Generator, *, load: _LoadElement, plan: _Plan) -> dict[str, Any]:
  return load(int(k), rng, plan=plan)
