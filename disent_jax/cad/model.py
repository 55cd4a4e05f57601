"""The CAD model record shared by every CAD source, and the one normalisation applied to every mesh.

Normalisation (fixed once for the whole project, see ../shared/design.md):
  x_norm = (x - center) * scale
with `center` the centre of the axis-aligned bounding box of the *referenced* vertices and `scale` chosen
so that the largest distance of a referenced vertex from `center` is 0.5. The normalised model therefore
lies inside the sphere of diameter 1 centred at the origin, so it stays inside the [-0.5, 0.5]^3 voxel grid
under *every* rotation (Stage I rotates voxels on the fly; a unit-cube normalisation would clip corners).
Only a translation and a uniform scale are applied, never a rotation, so the object frame (and with it every
rotation label) is unchanged. Pascal3D+ CAD models are already bbox-centred with radius 0.37-0.50, so for them
this transform is close to the identity.

The same `Normalization` is stored with each model and applied before voxelising and before rendering, so
voxels, renders, translations and overlays agree.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import trimesh

# Radius of the normalised model's bounding sphere (about the bbox centre).
NORMALIZED_RADIUS = 0.5


@dataclasses.dataclass(frozen=True)
class Normalization:
  """x_norm = (x - center) * scale, applied to the source mesh's vertices."""
  center: tuple[float, float, float]
  scale: float

  def apply(self, points: np.ndarray) -> np.ndarray:
    """Maps source-frame points (..., 3) to the normalised frame."""
    return (np.asarray(points, np.float64) - np.asarray(self.center)) * self.scale

  def invert(self, points: np.ndarray) -> np.ndarray:
    """Maps normalised points (..., 3) back to the source frame."""
    return np.asarray(points, np.float64) / self.scale + np.asarray(self.center)

  def to_dict(self) -> dict:
    return {"center": list(map(float, self.center)), "scale": float(self.scale)}

  @classmethod
  def from_dict(cls, d: dict) -> "Normalization":
    return cls(center=tuple(float(c) for c in d["center"]), scale=float(d["scale"]))


def compute_normalization(vertices: np.ndarray, faces: np.ndarray | None = None) -> Normalization:
  """The project's normalisation for a mesh (see the module docstring).

  Args:
    vertices: (V, 3) source vertices.
    faces: optional (F, 3) faces; when given, only referenced vertices count (real CAD files carry stray
      unreferenced vertices that would otherwise shift the centre).

  Returns:
    The `Normalization`. Raises ValueError for an empty or zero-size vertex set, non-finite vertices, or a
    size float64 cannot normalise (extent overflowing, or a radius so small that 0.5 / radius overflows).
  """
  v = np.asarray(vertices, np.float64)
  if faces is not None and len(faces):
    v = v[np.unique(np.asarray(faces).ravel())]
  if v.size == 0:
    raise ValueError("no vertices to normalise")
  if not np.isfinite(v).all():
    raise ValueError("vertices have NaN/inf coordinates")
  lo, hi = v.min(axis=0), v.max(axis=0)
  with np.errstate(over="ignore", under="ignore"):
    center = (lo + hi) / 2.0
    radius = float(np.sqrt(((v - center) ** 2).sum(axis=1).max()))
  if not (np.isfinite(center).all() and np.isfinite(radius) and radius >= 1e-150):
    # Huge or tiny coordinates: the plain formulas overflow (lo + hi, squares beyond ~1e154) or underflow
    # (squares below ~1e-162). The same quantities computed without overflow, scaled by the largest offset;
    # ordinary meshes never get here, so their normalisation is bit-for-bit the plain formula's.
    with np.errstate(over="ignore"):
      extent = hi - lo
    if not np.isfinite(extent).all():
      raise ValueError(f"mesh extent overflows float64 (coordinates up to {float(np.abs(v).max()):.3g})")
    center = lo + extent / 2.0
    offsets = v - center
    largest = float(np.abs(offsets).max())
    radius = largest * float(np.sqrt(((offsets / largest) ** 2).sum(axis=1).max())) if largest > 0 else 0.0
  if radius <= 0.0:
    raise ValueError("mesh has zero size")
  with np.errstate(over="ignore"):
    scale = NORMALIZED_RADIUS / radius
  if not np.isfinite(scale):
    raise ValueError(f"mesh size {radius:.3g} is too small to normalise in float64")
  return Normalization(center=tuple(float(c) for c in center), scale=scale)


def normalize_mesh(mesh: trimesh.Trimesh) -> tuple[trimesh.Trimesh, Normalization]:
  """Returns a normalised copy of `mesh` and the transform that was applied."""
  norm = compute_normalization(mesh.vertices, mesh.faces)
  out = trimesh.Trimesh(vertices=norm.apply(mesh.vertices), faces=np.asarray(mesh.faces),
                        process=False)
  return out, norm


@dataclasses.dataclass(frozen=True, eq=False)
class CadModel:
  """One model of a CAD database.

  Attributes:
    category: Pascal3D+ category name (see `disent_jax.categories.CATEGORIES`), or the class name of a
      ModelNet-style / folder collection.
    cad_index: 1-based index within the category, as Pascal3D+ annotations use it (`NN.off` -> NN).
    mesh: the *normalised* mesh (see module docstring).
    normalization: the transform that maps the source mesh to `mesh`.
    source: where it came from: a file path, or `zoo:<category>/<variant>` for the procedural zoo.
    name: a short human-readable name (e.g. 'chair/03' or 'chair/office').
    symmetry: None, or a note for evaluations, e.g. 'rotational-z' for a bottle (any rotation about the
      up axis gives the same shape), 'mirror-y' for an object that looks the same front and back.
  """
  category: str
  cad_index: int
  mesh: trimesh.Trimesh
  normalization: Normalization
  source: str
  name: str = ""
  symmetry: str | None = None

  @property
  def key(self) -> str:
    """A unique key '<category>/<cad_index:02d>' within a database."""
    return f"{self.category}/{self.cad_index:02d}"
