"""A small per-mesh cache (BVHs, GL buffers, part labels) that is safe against reused ids and edits.

`id(mesh)` alone is not a safe key: CPython reuses the id of a collected object, so a new mesh could pick
up a dead mesh's buffers. Each entry therefore keeps a weak reference (checked on lookup) and the mesh's
content hash (trimesh tracks edits to `vertices`/`faces`, and the hash is cached until they change), and is
rebuilt when either disagrees. Entries of collected meshes are released on the next lookup rather than in
the weakref callback, because the callback may run at an arbitrary point (inside GC) where releasing GL
objects is unsafe.
"""

from __future__ import annotations

import collections
import weakref
from typing import Any, Callable, Generic, TypeVar

import numpy as np
import trimesh

V = TypeVar("V")


class PerMeshCache(Generic[V]):
  """Least-recently-used map mesh -> value, with validation (see the module docstring)."""

  def __init__(self, build: Callable[[trimesh.Trimesh], V], max_size: int = 64,
               release: Callable[[V], Any] | None = None):
    """Creates the cache.

    Args:
      build: computes the value for a mesh.
      max_size: most meshes kept; the least recently used are evicted beyond it.
      release: called on a value when it is evicted (e.g. to free GL buffers).
    """
    self._build = build
    self._max_size = max_size
    self._release = release
    self._entries: collections.OrderedDict[int, tuple[weakref.ref, int, V]] = collections.OrderedDict()
    self._dead: list[int] = []

  def _drop(self, key: int) -> None:
    entry = self._entries.pop(key, None)
    if entry is not None and self._release is not None:
      self._release(entry[2])

  def get(self, mesh: trimesh.Trimesh) -> V:
    """The value for `mesh`, built on first use or after the mesh changed."""
    while self._dead:
      key = self._dead.pop()
      entry = self._entries.get(key)
      if entry is not None and entry[0]() is None:
        self._drop(key)
    key = id(mesh)
    content = hash(mesh)
    entry = self._entries.get(key)
    if entry is not None:
      if entry[0]() is mesh and entry[1] == content:
        self._entries.move_to_end(key)
        return entry[2]
      self._drop(key)
    value = self._build(mesh)
    dead = self._dead
    ref = weakref.ref(mesh, lambda _, key=key: dead.append(key))
    self._entries[key] = (ref, content, value)
    while len(self._entries) > self._max_size:
      self._drop(next(iter(self._entries)))
    return value

  def clear(self) -> None:
    """Releases every entry."""
    for key in list(self._entries):
      self._drop(key)
    self._dead.clear()

  def __len__(self) -> int:
    return len(self._entries)


def face_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
  """Unit face normals (F, 3) float64 from the winding; zero for degenerate (zero-area) faces.

  Computed here rather than taken from trimesh, whose `face_normals` may drop or repair degenerate faces;
  the renderers need exactly one normal per face, in face order.
  """
  tri = np.asarray(vertices, np.float64)[np.asarray(faces)]
  n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
  norm = np.linalg.norm(n, axis=1, keepdims=True)
  return np.divide(n, norm, out=np.zeros_like(n), where=norm > 0)


def bounding_sphere(vertices: np.ndarray) -> tuple[np.ndarray, float]:
  """A bounding sphere (centre, radius) about the bbox centre (cheap, not minimal)."""
  v = np.asarray(vertices, np.float64)
  if v.size == 0:
    return np.zeros(3), 0.0
  c = (v.min(axis=0) + v.max(axis=0)) / 2
  return c, float(np.sqrt(((v - c) ** 2).sum(axis=1).max()))
