"""Geometric building blocks for the procedural CAD zoo (`disent_jax.cad.zoo`).

Every mesh-making function returns a closed (watertight), outward-oriented triangle mesh (a "part") in
the zoo's working frame (+z up, front towards -y, see `zoo`). Parts are only concatenated, never merged
by boolean operations, so a model is a union of overlapping closed shells: fine for ray casting, and for
voxelisers that do not rely on ray-crossing parity (`disent_jax.cad.voxels` votes over 6 directions).

No optional trimesh dependency is needed (no shapely, no mapbox-earcut, no rtree): planar polygons are
triangulated here by ear clipping, and most parts are assembled directly from vertex/face arrays.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import trimesh
from trimesh import creation

ArrayLike = np.ndarray | Sequence[float]


# Meshes are assembled from raw arrays with process=False: trimesh's own primitives merge vertices and
# build caches on every call, which made the zoo several times slower to build.


def _signed_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
  """Volume enclosed by a closed triangle mesh, negative when its faces point inward."""
  v = vertices[faces]
  return float(np.einsum("ij,ij->i", v[:, 0], np.cross(v[:, 1], v[:, 2])).sum()) / 6.0


def _mesh(vertices: np.ndarray, faces: np.ndarray, orient: bool = True) -> trimesh.Trimesh:
  """A Trimesh from arrays (no processing), flipped if needed so that its closed surface faces outward."""
  vertices = np.asarray(vertices, np.float64)
  faces = np.asarray(faces, np.int64)
  if orient and _signed_volume(vertices, faces) < 0:
    faces = faces[:, ::-1]
  return trimesh.Trimesh(vertices=vertices, faces=np.ascontiguousarray(faces), process=False)


def _placed(vertices: np.ndarray, faces: np.ndarray, rotation: np.ndarray | None = None,
            translation: ArrayLike = (0.0, 0.0, 0.0)) -> trimesh.Trimesh:
  """The mesh with vertices rotation @ v + translation (a proper rotation keeps the orientation)."""
  v = np.asarray(vertices, np.float64)
  if rotation is not None:
    v = v @ np.asarray(rotation, np.float64).T
  return trimesh.Trimesh(vertices=v + np.asarray(translation, np.float64), faces=faces, process=False)


@functools.lru_cache(maxsize=None)
def _unit(kind: str, detail: int) -> tuple[np.ndarray, np.ndarray]:
  """Cached read-only (vertices, faces) of a unit primitive: 'box' (extents 1), 'sphere' (radius 1,
  `detail` subdivisions) or 'capsule' (radius 1, cylinder height 1 along z, `detail` rings)."""
  if kind == "box":
    m = creation.box(extents=(1.0, 1.0, 1.0))
  elif kind == "sphere":
    m = creation.icosphere(subdivisions=detail, radius=1.0)
  else:
    m = creation.capsule(height=1.0, radius=1.0, count=[detail, detail])
  v, f = np.array(m.vertices, np.float64), np.array(m.faces, np.int64)
  if _signed_volume(v, f) < 0:
    f = f[:, ::-1].copy()
  v.flags.writeable = False
  f.flags.writeable = False
  return v, f


def rot_x(a: float) -> np.ndarray:
  """Active rotation by `a` radians about +x."""
  c, s = np.cos(a), np.sin(a)
  return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rot_y(a: float) -> np.ndarray:
  """Active rotation by `a` radians about +y."""
  c, s = np.cos(a), np.sin(a)
  return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rot_z(a: float) -> np.ndarray:
  """Active rotation by `a` radians about +z."""
  c, s = np.cos(a), np.sin(a)
  return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _frame_from_z(direction: np.ndarray) -> np.ndarray:
  """A rotation taking +z to the unit vector `direction` (any roll)."""
  d = direction / np.linalg.norm(direction)
  helper = np.array([1.0, 0.0, 0.0]) if abs(d[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
  x = np.cross(helper, d)
  x /= np.linalg.norm(x)
  y = np.cross(d, x)
  return np.stack([x, y, d], axis=1)


def box(size: ArrayLike, center: ArrayLike = (0.0, 0.0, 0.0),
        rotation: np.ndarray | None = None) -> trimesh.Trimesh:
  """An axis-aligned box of extents `size` (rotated about its centre by `rotation`, if given)."""
  v, f = _unit("box", 0)
  return _placed(v * np.asarray(size, np.float64), f, rotation, center)


def box_between(lo: ArrayLike, hi: ArrayLike) -> trimesh.Trimesh:
  """The axis-aligned box with opposite corners `lo` and `hi`."""
  lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
  return box(np.abs(hi - lo), (lo + hi) / 2.0)


def cylinder(radius: float, p0: ArrayLike, p1: ArrayLike, sections: int = 16) -> trimesh.Trimesh:
  """A closed cylinder whose axis runs from `p0` to `p1`."""
  p0, p1 = np.asarray(p0, np.float64), np.asarray(p1, np.float64)
  return _prism(radius, radius, p0, p1, sections)


def _prism(r0: float, r1: float, p0: np.ndarray, p1: np.ndarray, sections: int) -> trimesh.Trimesh:
  """A closed frustum (r1 = 0: a cone) along p0 -> p1, built directly from arrays."""
  if np.linalg.norm(p1 - p0) < 1e-12:
    raise ValueError(f"zero-length axis at {p0}")
  n = sections
  t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
  circle = np.stack([np.cos(t), np.sin(t), np.zeros(n)], 1)
  frame = _frame_from_z(p1 - p0)
  ring0 = p0 + (r0 * circle) @ frame.T
  i = np.arange(n)
  j = (i + 1) % n
  if r1 > 0:
    ring1 = p1 + (r1 * circle) @ frame.T
    v = np.concatenate([ring0, ring1, [p0, p1]])
    c0, c1 = 2 * n, 2 * n + 1
    faces = np.concatenate([np.stack([i, j, j + n], 1), np.stack([i, j + n, i + n], 1),
                            np.stack([np.full(n, c0), j, i], 1), np.stack([np.full(n, c1), i + n, j + n], 1)])
  else:
    v = np.concatenate([ring0, [p0, p1]])
    c0, apex = n, n + 1
    faces = np.concatenate([np.stack([i, j, np.full(n, apex)], 1), np.stack([np.full(n, c0), j, i], 1)])
  return _mesh(v, faces)


def rod(radius: float, p0: ArrayLike, p1: ArrayLike) -> trimesh.Trimesh:
  """A thin cylinder with few sides: frame tubes, legs and spokes, where faces are wasted."""
  return cylinder(radius, p0, p1, sections=8)


def capsule(radius: float, p0: ArrayLike, p1: ArrayLike, count: int = 8) -> trimesh.Trimesh:
  """A capsule (cylinder with hemispherical ends) whose axis runs from `p0` to `p1`."""
  p0, p1 = np.asarray(p0, np.float64), np.asarray(p1, np.float64)
  length = float(np.linalg.norm(p1 - p0))
  v, f = _unit("capsule", count)
  # Scale the hemispheres by the radius and stretch only the cylinder part to the segment length.
  v = v * radius
  v[:, 2] += np.sign(v[:, 2]) * (length - radius) / 2.0
  return _placed(v, f, _frame_from_z(p1 - p0), (p0 + p1) / 2.0)


def cone(radius: float, base: ArrayLike, tip: ArrayLike, sections: int = 16) -> trimesh.Trimesh:
  """A closed cone with its base disc centred at `base` and its apex at `tip`."""
  base, tip = np.asarray(base, np.float64), np.asarray(tip, np.float64)
  return _prism(radius, 0.0, base, tip, sections)


def ellipsoid(radii: ArrayLike, center: ArrayLike = (0.0, 0.0, 0.0),
              subdivisions: int = 2, rotation: np.ndarray | None = None) -> trimesh.Trimesh:
  """An icosphere scaled to semi-axes `radii` (then rotated, then moved to `center`)."""
  v, f = _unit("sphere", subdivisions)
  return _placed(v * np.asarray(radii, np.float64), f, rotation, center)


def torus(major: float, minor: float, center: ArrayLike, axis: ArrayLike = (1.0, 0.0, 0.0),
          major_sections: int = 24, minor_sections: int = 6) -> trimesh.Trimesh:
  """A torus (a tyre or a ring) around `axis` through `center`."""
  a = np.linspace(0.0, 2.0 * np.pi, major_sections, endpoint=False)[:, None]
  b = np.linspace(0.0, 2.0 * np.pi, minor_sections, endpoint=False)[None, :]
  ring = major + minor * np.cos(b)
  x, y = ring * np.cos(a), ring * np.sin(a)
  v = np.stack([x, y, np.broadcast_to(minor * np.sin(b), x.shape)], -1).reshape(-1, 3)
  i, j = np.meshgrid(np.arange(major_sections), np.arange(minor_sections), indexing="ij")
  i1, j1 = (i + 1) % major_sections, (j + 1) % minor_sections
  idx = lambda p, q: (p * minor_sections + q).ravel()  # noqa: E731
  faces = np.concatenate([np.stack([idx(i, j), idx(i1, j), idx(i1, j1)], 1),
                          np.stack([idx(i, j), idx(i1, j1), idx(i, j1)], 1)])
  mesh = _mesh(v, faces)
  return _placed(mesh.vertices, mesh.faces, _frame_from_z(np.asarray(axis, np.float64)), center)


def _signed_area(poly: np.ndarray) -> float:
  """Signed area of a 2D polygon (> 0 when counter-clockwise)."""
  x, y = poly[:, 0], poly[:, 1]
  return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def triangulate(poly: np.ndarray) -> np.ndarray:
  """Ear-clipping triangulation of a simple polygon.

  Args:
    poly: (N, 2) vertices of a simple polygon, either orientation, no repeated closing vertex.

  Returns:
    (N - 2, 3) int triangles indexing `poly`, counter-clockwise in the plane.
  """
  poly = np.asarray(poly, np.float64)
  idx = list(range(len(poly)))
  if _signed_area(poly) < 0:
    idx.reverse()
  tris = []

  def cross(o, a, b):
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

  guard = 0
  while len(idx) > 3 and guard < 10 * len(poly) ** 2:
    guard += 1
    n = len(idx)
    for k in range(n):
      i0, i1, i2 = idx[(k - 1) % n], idx[k], idx[(k + 1) % n]
      a, b, c = poly[i0], poly[i1], poly[i2]
      if cross(a, b, c) <= 1e-12:
        continue  # reflex or degenerate corner: not an ear
      inside = False
      for j in idx:
        if j in (i0, i1, i2):
          continue
        p = poly[j]
        if cross(a, b, p) >= 0 and cross(b, c, p) >= 0 and cross(c, a, p) >= 0:
          inside = True
          break
      if not inside:
        tris.append((i0, i1, i2))
        idx.pop(k)
        break
    else:
      # Numerically stuck (nearly collinear input): fan the rest, still a valid closed surface.
      tris.extend((idx[0], idx[j], idx[j + 1]) for j in range(1, len(idx) - 1))
      idx = idx[:3]
      break
  if len(idx) == 3:
    tris.append(tuple(idx))
  return np.asarray(tris, np.int64)


def extrude(profile: ArrayLike, depth: float, plane: str = "yz", offset: float = 0.0,
            centered: bool = True) -> trimesh.Trimesh:
  """Extrudes a planar polygon into a prism.

  Args:
    profile: (N, 2) polygon. Its two coordinates are the first two axes named by `plane`.
    depth: prism thickness along the remaining axis.
    plane: 'yz' (a side profile, extruded along x), 'xz' (a front profile, along y) or 'xy' (a plan, along
      z).
    offset: the prism's centre (or start, when not `centered`) along the extrusion axis.
    centered: centre the prism on `offset` rather than starting there.

  Returns:
    The closed prism.
  """
  profile = np.asarray(profile, np.float64)
  # Drop repeated consecutive points (e.g. an arch that starts where the straight edge ends): they would
  # make zero-area cap triangles and an open shell.
  keep = np.linalg.norm(profile - np.roll(profile, 1, axis=0), axis=1) > 1e-9
  profile = profile[keep]
  if plane not in ("yz", "xz", "xy"):
    raise ValueError(f"unknown plane {plane!r}")
  start = offset - depth / 2.0 if centered else offset
  rings = [np.concatenate([profile, np.full((len(profile), 1), z)], 1) for z in (start, start + depth)]
  mesh = loft(rings)
  # The prism was built as (a, b, along); permute to the requested plane.
  order = {"yz": [2, 0, 1], "xz": [0, 2, 1], "xy": [0, 1, 2]}[plane]
  v = mesh.vertices[:, order]
  # An odd permutation mirrors the mesh: reverse the winding to keep it outward.
  faces = mesh.faces[:, ::-1] if plane == "xz" else mesh.faces
  return trimesh.Trimesh(vertices=v, faces=np.ascontiguousarray(faces), process=False)


def loft(rings: Sequence[np.ndarray], cap_start: bool = True, cap_end: bool = True) -> trimesh.Trimesh:
  """A closed tube through a sequence of rings (cross-sections) with matching vertex counts.

  Args:
    rings: K arrays of (N, 3) points, each a closed planar polygon; consecutive rings are joined vertex
      for vertex. A ring may collapse to a point (all N points equal) for a pointed end.
    cap_start: close the first ring with a polygon (ear-clipped in its own plane).
    cap_end: close the last ring.

  Returns:
    The lofted mesh, oriented outward when both ends are closed.
  """
  rings = [np.asarray(r, np.float64) for r in rings]
  n = len(rings[0])
  # A collapsed ring becomes a single apex vertex joined by a fan, so no degenerate faces are made.
  collapsed = [bool(np.ptp(r, axis=0).max() < 1e-12) for r in rings]
  starts, verts, total = [], [], 0
  for r, c in zip(rings, collapsed):
    starts.append(total)
    verts.append(r[:1] if c else r)
    total += 1 if c else n
  i = np.arange(n)
  j = (i + 1) % n
  faces = []
  for r in range(len(rings) - 1):
    a, b = starts[r], starts[r + 1]
    ca, cb = collapsed[r], collapsed[r + 1]
    if ca and cb:
      continue
    # Side faces run ring a's edges backwards (a_j -> a_i) and ring b's forwards (b_i -> b_j); fans keep that.
    if ca:
      faces.append(np.stack([np.full(n, a), b + i, b + j], 1))
    elif cb:
      faces.append(np.stack([a + j, a + i, np.full(n, b)], 1))
    else:
      faces.append(np.stack([a + i, b + i, b + j], 1))
      faces.append(np.stack([a + i, b + j, a + j], 1))
  for use, r in ((cap_start, 0), (cap_end, len(rings) - 1)):
    if not use or collapsed[r]:
      continue
    ring = rings[r]
    # Project the ring onto its best-fit plane to triangulate it.
    centered = ring - ring.mean(0)
    _, _, vt = np.linalg.svd(centered)
    flat = centered @ vt[:2].T
    tris = triangulate(flat)
    # The side faces run each ring edge backwards on the first ring and forwards on the last, so the
    # start cap must follow the ring order and the end cap must oppose it for a consistent winding.
    follows_ring = _signed_area(flat) > 0
    if follows_ring != (r == 0):
      tris = tris[:, ::-1]
    faces.append(tris + starts[r])
  return _mesh(np.concatenate(verts), np.concatenate(faces))


def superellipse(a: float, b: float, n: int = 16, power: float = 2.0) -> np.ndarray:
  """(n, 2) points of |u/a|^p + |v/b|^p = 1, counter-clockwise from +u: rounded-rectangle sections.

  Args:
    a: half-width along the first coordinate.
    b: half-height along the second coordinate.
    n: number of points.
    power: 2 is an ellipse; larger is boxier.

  Returns:
    The points.
  """
  t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
  c, s = np.cos(t), np.sin(t)
  e = 2.0 / power
  return np.stack([a * np.sign(c) * np.abs(c) ** e, b * np.sign(s) * np.abs(s) ** e], 1)


def ring_xz(section: np.ndarray, y: float, dz: float = 0.0, dx: float = 0.0) -> np.ndarray:
  """Places a 2D (x, z) section as a ring at height offset `dz` in the plane y = `y`."""
  section = np.asarray(section, np.float64)
  return np.stack([section[:, 0] + dx, np.full(len(section), y), section[:, 1] + dz], 1)


def ring_yz(section: np.ndarray, x: float, dy: float = 0.0, dz: float = 0.0) -> np.ndarray:
  """Places a 2D (y, z) section as a ring in the plane x = `x`."""
  section = np.asarray(section, np.float64)
  return np.stack([np.full(len(section), x), section[:, 0] + dy, section[:, 1] + dz], 1)


def ring_xy(section: np.ndarray, z: float, dx: float = 0.0, dy: float = 0.0) -> np.ndarray:
  """Places a 2D (x, y) section as a ring in the plane z = `z`."""
  section = np.asarray(section, np.float64)
  return np.stack([section[:, 0] + dx, section[:, 1] + dy, np.full(len(section), z)], 1)


def lathe(profile: ArrayLike, sections: int = 24, center: ArrayLike = (0.0, 0.0, 0.0)) -> trimesh.Trimesh:
  """A closed surface of revolution about the vertical axis through `center`.

  Args:
    profile: (K, 2) (radius, z) points from bottom to top; a radius of 0 closes that end with a point.
    sections: points around each ring.
    center: where the axis meets z = 0 of the profile.

  Returns:
    The closed mesh.
  """
  profile = np.asarray(profile, np.float64)
  circle = superellipse(1.0, 1.0, sections)
  center = np.asarray(center, np.float64)
  rings = [ring_xy(circle * r, z) + center for r, z in profile]
  return loft(rings)


def airfoil(chord: float, thickness: float, n: int = 10) -> np.ndarray:
  """(n, 2) closed (along-chord, thickness) outline of a simple symmetric airfoil, leading edge at 0.

  The leading edge is at coordinate 0 and the trailing edge at `chord`, so a wing whose chord runs along
  +y has its leading edge at the front (-y) end.
  """
  t = np.linspace(0.0, np.pi, n // 2 + 1)[1:-1]
  u = chord * (1.0 - np.cos(t)) / 2.0
  half = 0.5 * thickness * np.sqrt(np.clip(u / chord, 0.0, 1.0)) * (1.0 - u / chord) * 2.6
  upper = np.stack([u, half], 1)
  lower = np.stack([u[::-1], -half[::-1]], 1)
  return np.concatenate([[[0.0, 0.0]], upper, [[chord, 0.0]], lower])


def wing(root: ArrayLike, tip: ArrayLike, root_chord: float, tip_chord: float,
         thickness: float, vertical: bool = False) -> trimesh.Trimesh:
  """A tapered, swept plate between a root and a tip section (wings, tail planes, fins, sails' keels).

  Args:
    root: the root leading-edge point.
    tip: the tip leading-edge point (its offset from `root` sets span, sweep and dihedral).
    root_chord: chord length at the root, along +y (front to back).
    tip_chord: chord length at the tip.
    thickness: maximum thickness at the root (the tip scales with its chord).
    vertical: a fin: the thickness is along x instead of z.

  Returns:
    The closed wing.
  """
  root, tip = np.asarray(root, np.float64), np.asarray(tip, np.float64)
  rings = []
  for p, c in ((root, root_chord), (tip, tip_chord)):
    foil = airfoil(c, thickness * c / root_chord)
    if vertical:
      ring = np.stack([p[0] + foil[:, 1], p[1] + foil[:, 0], np.full(len(foil), p[2])], 1)
    else:
      ring = np.stack([np.full(len(foil), p[0]), p[1] + foil[:, 0], p[2] + foil[:, 1]], 1)
    rings.append(ring)
  return loft(rings)


def wheel(radius: float, width: float, center: ArrayLike, axis: ArrayLike = (1.0, 0.0, 0.0),
          hub: float = 0.55) -> trimesh.Trimesh:
  """A car/bus wheel: a tyre cylinder plus a protruding hub disc, axle along `axis` (x by default)."""
  center, axis = np.asarray(center, np.float64), np.asarray(axis, np.float64)
  axis = axis / np.linalg.norm(axis)
  tyre = cylinder(radius, center - axis * width / 2, center + axis * width / 2, sections=16)
  cap = cylinder(radius * hub, center - axis * width * 0.6, center + axis * width * 0.6, sections=12)
  return combine([tyre, cap])


def spoked_wheel(radius: float, tyre: float, center: ArrayLike, spokes: int = 8,
                 spoke_radius: float = 0.006) -> trimesh.Trimesh:
  """A bicycle/motorbike wheel in the yz plane: tyre torus, hub and radial spokes."""
  center = np.asarray(center, np.float64)
  parts = [torus(radius - tyre, tyre, center, (1.0, 0.0, 0.0), major_sections=24, minor_sections=6),
           cylinder(tyre * 1.2, center - [0.04, 0, 0], center + [0.04, 0, 0], sections=8)]
  for k in range(spokes):
    a = 2.0 * np.pi * k / spokes
    end = center + (radius - tyre) * np.array([0.0, np.cos(a), np.sin(a)])
    parts.append(box([spoke_radius * 2, spoke_radius * 2, radius - tyre],
                     (center + end) / 2.0, rot_x(a - np.pi / 2)))
  return combine(parts)


def combine(parts: Sequence[trimesh.Trimesh]) -> trimesh.Trimesh:
  """Concatenates parts into one mesh (no merging, no booleans)."""
  parts = [p for p in parts if p is not None]
  offsets = np.cumsum([0] + [len(p.vertices) for p in parts[:-1]])
  vertices = np.concatenate([p.vertices for p in parts])
  faces = np.concatenate([np.asarray(p.faces) + o for p, o in zip(parts, offsets)])
  return trimesh.Trimesh(vertices=vertices, faces=faces, process=False)


def mirror_x(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
  """A copy of `mesh` reflected through the plane x = 0 (winding fixed so it stays outward)."""
  return trimesh.Trimesh(vertices=mesh.vertices * np.array([-1.0, 1.0, 1.0]),
                         faces=np.ascontiguousarray(mesh.faces[:, ::-1]), process=False)


def pair_x(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
  """`mesh` plus its mirror image through x = 0 (left and right parts)."""
  return combine([mesh, mirror_x(mesh)])


def sweep(path: ArrayLike, radius: float | ArrayLike, normal: ArrayLike = (1.0, 0.0, 0.0),
          sides: int = 6, power: float = 2.0, aspect: float = 1.0) -> trimesh.Trimesh:
  """A closed tube of (rounded-)square or round section along a polyline (bent bars, rails, handles).

  Args:
    path: (K, 3) points of the tube's axis.
    radius: the section's half-size, a scalar or one per path point.
    normal: a direction never parallel to the path (for a planar path, its plane's normal), fixing the
      section's orientation.
    sides: points per section.
    power: superellipse exponent of the section (2 round, larger squarer).
    aspect: the section's half-size along the second section axis (t x (t x normal), i.e. along
      `normal` for a planar path) relative to `radius`: > 1 makes a flat strip such as a mudguard.

  Returns:
    The closed tube.
  """
  path = np.asarray(path, np.float64)
  radii = np.broadcast_to(np.asarray(radius, np.float64), (len(path),))
  tangents = np.gradient(path, axis=0)
  tangents /= np.linalg.norm(tangents, axis=1, keepdims=True)
  normal = np.asarray(normal, np.float64)
  section = superellipse(1.0, 1.0, sides, power)
  rings = []
  for p, t, r in zip(path, tangents, radii):
    e1 = np.cross(t, normal)
    if np.linalg.norm(e1) < 1e-9:
      e1 = np.cross(t, [0.0, 0.0, 1.0] if abs(t[2]) < 0.9 else [1.0, 0.0, 0.0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(t, e1)
    rings.append(p + r * (section[:, :1] * e1 + aspect * section[:, 1:] * e2))
  return loft(rings)


def arc(center: ArrayLike, radius: float, a0: float, a1: float, plane: str = "yz",
        n: int = 10) -> np.ndarray:
  """(n, 3) points on a circular arc from angle `a0` to `a1` (radians) in a coordinate plane.

  The angle is measured from the plane's first axis towards its second ('yz': from +y towards +z).
  """
  t = np.linspace(a0, a1, n)
  c, s = radius * np.cos(t), radius * np.sin(t)
  z = np.zeros_like(t)
  offsets = {"yz": (z, c, s), "xz": (c, z, s), "xy": (c, s, z)}[plane]
  return np.asarray(center, np.float64) + np.stack(offsets, 1)
