"""The voxel bank: one occupancy volume per CAD model of a database, built once and cached on disk.

Stage I trains on the bank (rotating its volumes on device); Stage II computes its targets from it. Row k
of every field describes the same model, in the order of the model list the bank was built from.

File format (`VoxelBank.save`): one .npz holding `volumes` (K, R, R, R) uint8, `cad_indices` (K,) int32 and
`meta`, a JSON string with the other fields plus `format_version`. It is written to a temporary file and
renamed, so a killed build never leaves a half-written bank under the final name.

Cache (`build_voxel_bank`): the bank of a model list lives in `cache_dir` under a name that contains the
list's fingerprint, a SHA-256 over `CODE_VERSION`, the resolution, the fill mode and, per model, its
category, cad_index, name, symmetry, normalisation, source string, a hash of its (normalised) vertices and
faces, and, when the source is a file, the file's absolute path, size and modification time. Any change
of those (an edited file, a new model, another resolution, a voxeliser change that bumped CODE_VERSION)
gives a new name and a rebuild; otherwise the cached bank is loaded and the voxeliser is not run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
import zipfile
from collections.abc import Sequence

import numpy as np
import tqdm

from disent_jax.cad import model as model_lib
from disent_jax.cad import voxels
# VoxelBankError lives in disent_jax.errors; it stays importable from here (voxel_bank.VoxelBankError).
from disent_jax.errors import MeshError, VoxelBankError

PathLike = str | os.PathLike

# Bump when the voxeliser's output changes, so that cached banks are rebuilt.
CODE_VERSION = "voxels-1"
# Version of the on-disk layout written by `VoxelBank.save`.
FORMAT_VERSION = 1

_META_FIELDS = ("categories", "sources", "names", "symmetries", "normalizations", "resolution",
                "fingerprint", "fill")


@dataclasses.dataclass(eq=False)
class VoxelBank:
  """Occupancy volumes of a CAD database, one row per model.

  Attributes:
    volumes: (K, R, R, R) uint8 occupancy (0/1), indexed [model, x, y, z] (grid convention in
      `disent_jax.cad.voxels`).
    categories: K category names.
    cad_indices: (K,) int32 1-based indices within each category.
    sources: K source strings (file paths, or 'zoo:...').
    names: K display names.
    symmetries: K symmetry notes (None when the pose is unique), see `CadModel.symmetry`.
    normalizations: K `Normalization.to_dict()` dicts mapping each source mesh to the voxelised frame.
    resolution: R.
    fingerprint: the cache key of the model list (see the module docstring).
    fill: True for solid occupancy, False for surface-only volumes.
    path: the file this bank was loaded from or saved to, if any (not saved).
  """
  volumes: np.ndarray
  categories: list[str]
  cad_indices: np.ndarray
  sources: list[str]
  names: list[str]
  symmetries: list[str | None]
  normalizations: list[dict]
  resolution: int
  fingerprint: str
  fill: bool = True
  path: str | None = None

  def __post_init__(self):
    self.volumes = np.asarray(self.volumes, np.uint8)
    self.cad_indices = np.asarray(self.cad_indices, np.int32).reshape(-1)
    self.categories, self.sources, self.names = (list(self.categories), list(self.sources),
                                                 list(self.names))
    self.symmetries, self.normalizations = list(self.symmetries), [dict(n) for n in self.normalizations]
    self.resolution = int(self.resolution)
    k, r = len(self.categories), self.resolution
    if self.volumes.shape != (k, r, r, r):
      raise ValueError(f"volumes have shape {self.volumes.shape}, expected {(k, r, r, r)} for {k} models "
                       f"at resolution {r}")
    lengths = {len(x) for x in (self.cad_indices, self.sources, self.names, self.symmetries,
                                self.normalizations)}
    if lengths != {k}:
      raise ValueError(f"voxel bank fields have lengths {sorted(lengths)}, expected {k} for each")
    self._rows = {(c, int(i)): row for row, (c, i) in enumerate(zip(self.categories, self.cad_indices))}

  @property
  def num_models(self) -> int:
    """K, the number of models."""
    return len(self.categories)

  def __len__(self) -> int:
    return self.num_models

  def category_names(self) -> list[str]:
    """The distinct categories, in order of first appearance."""
    return list(dict.fromkeys(self.categories))

  def category_ids(self) -> np.ndarray:
    """(K,) int32 index of each row's category in `category_names()`."""
    lookup = {c: i for i, c in enumerate(self.category_names())}
    return np.asarray([lookup[c] for c in self.categories], np.int32)

  def index(self, category: str, cad_index: int) -> int:
    """The row of the model (category, cad_index).

    Raises:
      KeyError: no such model; the message lists the category's cad indices.
    """
    row = self._rows.get((category, int(cad_index)))
    if row is None:
      known = sorted(int(i) for c, i in zip(self.categories, self.cad_indices) if c == category)
      raise KeyError(f"no model {category}/{int(cad_index):02d} in the voxel bank "
                     f"({category} has cad indices {known})" if known else
                     f"no category {category!r} in the voxel bank (categories: {self.category_names()})")
    return row

  def indices(self, category: str) -> np.ndarray:
    """(n,) int64 rows of a category's models, in bank order (empty for an unknown category)."""
    return np.asarray([row for row, c in enumerate(self.categories) if c == category], np.int64)

  def volume(self, category: str, cad_index: int) -> np.ndarray:
    """The (R, R, R) uint8 volume of model (category, cad_index)."""
    return self.volumes[self.index(category, cad_index)]

  def counts(self) -> dict[str, int]:
    """Number of models per category, in `category_names()` order."""
    return {c: self.categories.count(c) for c in self.category_names()}

  def save(self, path: PathLike) -> str:
    """Writes the bank to one .npz file atomically; returns the path and sets `self.path` to it."""
    path = os.fspath(path)
    meta = {name: getattr(self, name) for name in _META_FIELDS}
    meta["format_version"] = FORMAT_VERSION
    with voxels.atomic_writer(path) as f:
      np.savez_compressed(f, volumes=self.volumes, cad_indices=self.cad_indices,
                          meta=np.asarray(json.dumps(meta)))
    self.path = path
    return path

  @classmethod
  def load(cls, path: PathLike) -> "VoxelBank":
    """Reads a bank written by `save`.

    Raises:
      VoxelBankError: missing, truncated or inconsistent file; the message names it.
    """
    path = os.fspath(path)
    try:
      with np.load(path, allow_pickle=False) as z:
        missing = {"volumes", "cad_indices", "meta"} - set(z.files)
        if missing:
          raise ValueError(f"missing arrays {sorted(missing)}")
        meta = json.loads(str(z["meta"]))
        if meta.get("format_version") != FORMAT_VERSION:
          raise ValueError(f"format version {meta.get('format_version')}, expected {FORMAT_VERSION}")
        fields = {name: meta[name] for name in _META_FIELDS}
        return cls(volumes=z["volumes"], cad_indices=z["cad_indices"], path=path, **fields)
    except FileNotFoundError:
      raise VoxelBankError(f"{path}: no such voxel bank file") from None
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile,
            json.JSONDecodeError) as e:
      raise VoxelBankError(f"{path}: corrupt or incompatible voxel bank file "
                           f"({type(e).__name__}: {e}); delete it to rebuild") from e


def model_fingerprint(model: model_lib.CadModel) -> dict:
  """The per-model part of the bank fingerprint (see the module docstring)."""
  mesh_hash = hashlib.sha256()
  mesh_hash.update(np.ascontiguousarray(model.mesh.vertices, np.float64).tobytes())
  mesh_hash.update(np.ascontiguousarray(model.mesh.faces, np.int64).tobytes())
  entry = {"category": model.category, "cad_index": int(model.cad_index), "name": model.name,
           "symmetry": model.symmetry, "normalization": model.normalization.to_dict(),
           "source": model.source, "mesh": mesh_hash.hexdigest()}
  # Pascal3D+ .mat entries have sources like '.../car.mat#3': the file is the part before '#'.
  file_part = model.source.split("#", 1)[0]
  if file_part and os.path.isfile(file_part):
    st = os.stat(file_part)
    entry["file"] = {"path": os.path.abspath(file_part), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
  return entry


def fingerprint(models: Sequence[model_lib.CadModel], resolution: int, fill: bool = True) -> str:
  """SHA-256 hex key of a model list voxelised at `resolution` (see the module docstring)."""
  payload = {"code_version": CODE_VERSION, "resolution": int(resolution), "fill": bool(fill),
             "models": [model_fingerprint(m) for m in models]}
  return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def bank_path(cache_dir: PathLike, key: str, resolution: int, fill: bool = True) -> str:
  """The cache file of a bank with fingerprint `key`."""
  kind = "solid" if fill else "surface"
  return os.path.join(os.fspath(cache_dir), f"voxel_bank_r{int(resolution)}_{kind}_{key[:16]}.npz")


def build_voxel_bank(models: Sequence[model_lib.CadModel], resolution: int, cache_dir: PathLike | None,
                     *, fill: bool = True, progress: bool = True) -> VoxelBank:
  """Voxelises a model list, or loads its bank from the cache when the fingerprint matches.

  Args:
    models: the CAD models (normalised meshes), in bank row order.
    resolution: R.
    cache_dir: folder for cached banks; None builds without caching.
    fill: solid (True) or surface-only (False) occupancy, see `voxels.voxelize`.
    progress: show a tqdm progress bar while voxelising.

  Returns:
    The bank; `bank.path` is the cache file when cache_dir is given.

  Raises:
    ValueError: empty model list or resolution < 1.
    MeshError: a model cannot be voxelised; the message names its source.
  """
  models = list(models)
  if not models:
    raise ValueError("build_voxel_bank needs at least one CAD model")
  if int(resolution) < 1:
    raise ValueError(f"voxel resolution must be >= 1, got {resolution}")
  key = fingerprint(models, resolution, fill)
  path = bank_path(cache_dir, key, resolution, fill) if cache_dir is not None else None
  if path is not None and os.path.exists(path):
    try:
      bank = VoxelBank.load(path)
    except VoxelBankError as e:
      logging.warning("rebuilding the voxel bank: %s", e)
    else:
      if bank.fingerprint == key:
        logging.info("voxel bank cache hit: %s (%d models at %d^3); not rebuilding", path,
                     bank.num_models, bank.resolution)
        return bank
      logging.warning("rebuilding the voxel bank: %s has fingerprint %s, expected %s", path,
                      bank.fingerprint[:16], key[:16])
  start = time.perf_counter()
  volumes = np.zeros((len(models), resolution, resolution, resolution), np.uint8)
  for row, m in enumerate(tqdm.tqdm(models, desc=f"voxelising at {resolution}^3", unit="model",
                                    disable=not progress)):
    try:
      volumes[row] = voxels.voxelize(m.mesh, resolution, fill=fill)
    except MeshError as e:
      raise MeshError(f"{m.source} ({m.key}): {e}") from e
  bank = VoxelBank(
      volumes=volumes, categories=[m.category for m in models],
      cad_indices=[m.cad_index for m in models], sources=[m.source for m in models],
      names=[m.name for m in models], symmetries=[m.symmetry for m in models],
      normalizations=[m.normalization.to_dict() for m in models], resolution=resolution,
      fingerprint=key, fill=fill)
  logging.info("voxelised %d models at %d^3 in %.1f s", len(models), resolution,
               time.perf_counter() - start)
  if path is not None:
    bank.save(path)
    logging.info("saved the voxel bank to %s", path)
  return bank
