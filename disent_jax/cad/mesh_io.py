"""Reading CAD meshes (.off, .obj, .ply, Pascal3D+ .mat) into validated, normalised trimesh meshes.

Entry points:
  * `load_mesh(path)`: the normalised `trimesh.Trimesh` (see `disent_jax.cad.model` for THE normalisation).
  * `load_mesh_with_normalization(path)`: the same mesh plus the `Normalization` that produced it.
  * `read_raw_mesh(path)`: validated but unnormalised `(vertices (V, 3) float64, faces (F, 3) int64)`.
  * `read_pascal3d_cad_mat(path)`: every model of a Pascal3D+ `CAD/<category>.mat` struct array.

Models inside a `.mat` file are addressed by a 1-based `index` (the Pascal3D+ `cad_index`):
`load_mesh('CAD/chair.mat', index=2)`. A path ending in `.mat#N` means the same as `index=N`
(`load_mesh('CAD/chair.mat#2')`), so the `source` string stored with a `CadModel` loads back.

OFF files are parsed here rather than by trimesh, whose OFF reader mishandles real-world quirks. Accepted:
CRLF line endings, trailing spaces, blank lines, `#` comments, values written as `0`, the `OFF123 456 0`
header of some ModelNet files (and `OFF 123 456 0` on one line), the COFF/NOFF/CNOFF/STOFF variants (extra
vertex columns are ignored), polygon faces (fan-triangulated, i.e. assumed convex) and per-face colour values
after the indices; lines after the announced faces are ignored. Unreferenced vertices are kept in the raw
arrays; the normalisation ignores them.

OBJ and PLY files are read by trimesh (`force='mesh'`, scenes concatenated, materials and textures skipped).
trimesh splits OBJ vertices per texture coordinate; the reader merges exact duplicates back.

Every problem with a file raises `MeshError` with a message `'<path>: <problem>'`: missing or unreadable
file, unknown extension, empty file, bad header, non-numeric values, fewer vertex/face lines than the header
announces, NaN/inf vertices, face indices out of range, no faces, and degenerate geometry (the referenced
vertices coincide, lie on a line or lie in a plane, so the model has no volume to voxelise), coordinates
whose extent overflows float64, and .mat files whose MATLAB structure is corrupt (`mat_structure_problem`,
checked before scipy reads them: scipy's reader crashes on some corruptions).
"""

from __future__ import annotations

import io
import math
import os
import pathlib
import re
import struct
import warnings
import zlib

import numpy as np
import scipy.io
import trimesh

from disent_jax.cad import model as model_lib
from disent_jax.errors import MeshError

PathLike = str | os.PathLike

# Extensions `load_mesh` understands (lower case).
MESH_EXTENSIONS: tuple[str, ...] = (".off", ".obj", ".ply")
SUPPORTED_EXTENSIONS: tuple[str, ...] = MESH_EXTENSIONS + (".mat",)

# Relative singular-value threshold below which the referenced vertices count as lying in a lower-dimensional
# subspace. Text files round coordinates at ~1e-5, so only exactly flat (or exactly collinear) point sets fall
# below it; thin but real parts (a screen, a table top with legs) are far above.
_DEGENERATE_RTOL = 1e-9

# Face indices must fit int64; anything beyond is out of range of every vertex array anyway.
_INT64_MIN, _INT64_MAX = -2 ** 63, 2 ** 63 - 1

# '<anything>.mat#<N>': a model inside a Pascal3D+ .mat struct array, 1-based.
_MAT_INDEX_RE = re.compile(r"^(?P<path>.*\.mat)#(?P<index>\d+)$", re.IGNORECASE)

# Header of an OFF file: optional ST/C/N prefixes, 'OFF', then possibly the counts on the same line
# (ModelNet's 'OFF490 518 0').
_OFF_HEADER_RE = re.compile(rb"^(?:ST)?C?N?OFF(?P<rest>.*)$")


# ---------------------------------------------------------------------------------------------------------
# Public API.


def load_mesh(path: PathLike, normalize: bool = True, *, index: int | None = None) -> trimesh.Trimesh:
  """Loads a mesh file, validated and (by default) normalised.

  Args:
    path: a `.off`, `.obj`, `.ply` or Pascal3D+ `.mat` file; `'<file>.mat#N'` selects model N of a `.mat`.
    normalize: apply the project's normalisation (`disent_jax.cad.model.normalize_mesh`); when False the
      mesh keeps the file's coordinates.
    index: for `.mat` files, the 1-based model index (the Pascal3D+ cad_index). May be left out when the
      file holds a single model.

  Returns:
    A `trimesh.Trimesh` built with `process=False`: for OFF and .mat files the file's vertex order and
    unreferenced vertices are kept; OBJ/PLY vertices are as trimesh reads them (OBJ duplicates merged).

  Raises:
    MeshError: the file is missing, unreadable or invalid; the message names the file and the problem.
  """
  if normalize:
    return load_mesh_with_normalization(path, index=index)[0]
  vertices, faces = read_raw_mesh(path, index=index)
  return trimesh.Trimesh(vertices=vertices, faces=faces, process=False)


def load_mesh_with_normalization(
    path: PathLike, *, index: int | None = None) -> tuple[trimesh.Trimesh, model_lib.Normalization]:
  """Loads a mesh file and returns the normalised mesh with the normalisation that was applied.

  Args:
    path: as for `load_mesh`.
    index: as for `load_mesh`.

  Returns:
    `(mesh, normalization)`, with `mesh.vertices == normalization.apply(raw_vertices)`.

  Raises:
    MeshError: as for `load_mesh`.
  """
  vertices, faces = read_raw_mesh(path, index=index)  # Already validated.
  return _normalize(vertices, faces, _display_name(path, index))


def read_raw_mesh(path: PathLike, *, index: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Reads and validates a mesh file without normalising it.

  Args:
    path: as for `load_mesh`.
    index: as for `load_mesh`.

  Returns:
    `(vertices, faces)`: float64 (V, 3) in the file's coordinates (unreferenced vertices kept) and int64
    (F, 3) 0-based triangle indices (polygons fan-triangulated).

  Raises:
    MeshError: as for `load_mesh`.
  """
  path, index = _split_mat_index(path, index)
  name = _display_name(path, index)
  ext = pathlib.Path(path).suffix.lower()
  if ext not in SUPPORTED_EXTENSIONS:
    raise MeshError(f"{path}: unknown mesh file extension {ext!r} (supported: "
                    f"{', '.join(SUPPORTED_EXTENSIONS)})")
  if index is not None and ext != ".mat":
    raise MeshError(f"{path}: an index is only meaningful for .mat files")
  if ext == ".mat":
    entries = read_pascal3d_cad_mat(path)
    if index is None:
      if len(entries) != 1:
        raise MeshError(f"{path}: holds {len(entries)} models; pass index=1..{len(entries)} "
                        f"(or '{path}#N')")
      index = 1
      name = _display_name(path, index)
    if not 1 <= index <= len(entries):
      raise MeshError(f"{path}: model index {index} out of range 1..{len(entries)} (indices are 1-based)")
    vertices, faces = entries[index - 1]
  else:
    data = _read_bytes(path)
    if ext == ".off":
      vertices, faces = parse_off(data, name)
    else:
      vertices, faces = _read_with_trimesh(data, ext, path)
  return validate_mesh(vertices, faces, name)


def read_pascal3d_cad_mat(path: PathLike) -> list[tuple[np.ndarray, np.ndarray]]:
  """Reads every model of a Pascal3D+ `CAD/<category>.mat` (or 3DVP `Geometry/<category>.mat`) file.

  `scipy.io.loadmat(path)[category]` is a (1, N) struct array with (at least) the fields `vertices` (V, 3)
  and `faces` (F, 3), 1-based and stored as uint8/uint16/int32/double. Other fields (keypoints, voxel grids)
  are ignored. The variable named after the file's stem is used, else the first struct variable that has
  those fields.

  Args:
    path: the `.mat` file.

  Returns:
    One `(vertices float64 (V, 3), faces int64 (F, 3) 0-based)` per model, in file order (list position
    + 1 is the cad_index). Only the structure is checked here; `validate_mesh` checks the geometry, so a
    collection can report one bad model without losing the others.

  Raises:
    MeshError: missing/unreadable file, no struct array with `vertices` and `faces`, or a model whose
      fields do not have the right shapes or types.
  """
  path = pathlib.Path(path)
  data = _read_bytes(path)
  problem = mat_structure_problem(data)
  if problem:
    raise MeshError(f"{path}: not a readable MATLAB .mat file, it is corrupt ({problem})")
  try:
    variables = scipy.io.whosmat(io.BytesIO(data))
  except Exception as e:  # scipy raises ValueError, TypeError, OSError... on foreign files.
    raise MeshError(f"{path}: not a readable MATLAB .mat file ({type(e).__name__}: {e})") from e
  names = [n for n, _, cls in variables if cls == "struct"]
  if not names:
    raise MeshError(f"{path}: no struct variable (expected a Pascal3D+ CAD struct array)")
  # Prefer the variable named after the category; otherwise try every struct variable in turn.
  candidates = [path.stem] if path.stem in names else names
  cad_struct = None
  for var in candidates:
    try:
      loaded = scipy.io.loadmat(io.BytesIO(data), variable_names=[var])
    except Exception as e:
      raise MeshError(f"{path}: cannot read variable {var!r} ({type(e).__name__}: {e})") from e
    value = loaded.get(var)
    fields = getattr(getattr(value, "dtype", None), "names", None) or ()
    if "vertices" in fields and "faces" in fields:
      cad_struct = value
      break
  if cad_struct is None:
    raise MeshError(f"{path}: no struct array with 'vertices' and 'faces' fields (variables: "
                    f"{', '.join(names)})")
  entries = []
  for k, entry in enumerate(cad_struct.ravel(), start=1):
    entries.append(_mat_entry_arrays(entry["vertices"], entry["faces"], f"{path}#{k}"))
  if not entries:
    raise MeshError(f"{path}: the CAD struct array is empty")
  return entries


def parse_off(data: bytes, name: str = "<off>") -> tuple[np.ndarray, np.ndarray]:
  """Parses the bytes of an OFF file (see the module docstring for the quirks accepted).

  Args:
    data: the file's contents.
    name: the file name used in error messages.

  Returns:
    `(vertices float64 (V, 3), faces int64 (F, 3))`; polygons are fan-triangulated. Indices are not range
    checked here (`validate_mesh` does that).

  Raises:
    MeshError: empty file, bad header, non-numeric values, or fewer lines than the header announces.
  """
  if data.startswith(b"\xef\xbb\xbf"):  # A UTF-8 byte-order mark some Windows tools write.
    data = data[3:]
  lines = data.splitlines()  # Handles \n, \r\n and \r.
  if b"#" in data:
    lines = [line.partition(b"#")[0] for line in lines]
  # Keep the 1-based line numbers of the non-blank lines, for error messages.
  rows = [i for i, line in enumerate(lines) if line and not line.isspace()]
  if not rows:
    raise MeshError(f"{name}: empty file")

  first = lines[rows[0]].strip()
  match = _OFF_HEADER_RE.match(first)
  if match is None:
    raise MeshError(f"{name}: bad header {_show(first)} on line {rows[0] + 1} (expected 'OFF')")
  rest = match.group("rest").strip()
  pos = 1
  if rest:
    counts_line, counts_lineno = rest, rows[0] + 1
  else:
    if len(rows) < 2:
      raise MeshError(f"{name}: bad header: no vertex/face counts after 'OFF'")
    counts_line, counts_lineno = lines[rows[1]].strip(), rows[1] + 1
    pos = 2
  counts = counts_line.split()
  try:
    if len(counts) not in (2, 3):
      raise ValueError
    nv, nf = int(counts[0]), int(counts[1])
  except ValueError:
    raise MeshError(f"{name}: bad header: expected 'nV nF nE' counts on line {counts_lineno}, got "
                    f"{_show(counts_line)}") from None
  if nv < 0 or nf < 0:
    raise MeshError(f"{name}: bad header: negative counts {nv} {nf} on line {counts_lineno}")

  available = len(rows) - pos
  if available < nv:
    raise MeshError(f"{name}: header announces {nv} vertices but the file has only {available} vertex lines")
  if available - nv < nf:
    raise MeshError(f"{name}: header announces {nf} faces but the file has only {available - nv} face lines")
  vrows = rows[pos:pos + nv]
  frows = rows[pos + nv:pos + nv + nf]
  vertices = _parse_vertex_block(lines, vrows, name)
  faces = _parse_face_block(lines, frows, name)
  return vertices, faces


def validate_mesh(vertices: np.ndarray, faces: np.ndarray,
                  name: str = "<mesh>") -> tuple[np.ndarray, np.ndarray]:
  """Checks raw mesh arrays and returns them as float64 (V, 3) and int64 (F, 3).

  Args:
    vertices: (V, 3) vertex positions.
    faces: (F, 3) 0-based triangle indices.
    name: the file name used in error messages.

  Returns:
    `(vertices, faces)` as contiguous float64 / int64 arrays.

  Raises:
    MeshError: no vertices, no faces, NaN/inf vertices, indices out of range, or degenerate geometry
      (referenced vertices coincident, collinear or coplanar: zero volume, nothing to voxelise).
  """
  try:
    vertices = np.ascontiguousarray(vertices, dtype=np.float64)
    faces = np.ascontiguousarray(faces)
  except (TypeError, ValueError) as e:
    raise MeshError(f"{name}: vertices/faces are not numeric arrays ({e})") from e
  if vertices.size == 0 and faces.size == 0:
    raise MeshError(f"{name}: no vertices and no faces")
  if faces.size == 0:
    raise MeshError(f"{name}: no faces (a point cloud, not a surface)")
  if vertices.size == 0:
    raise MeshError(f"{name}: no vertices")
  if vertices.ndim != 2 or vertices.shape[1] != 3:
    raise MeshError(f"{name}: vertices have shape {vertices.shape}, expected (V, 3)")
  if faces.ndim != 2 or faces.shape[1] != 3:
    raise MeshError(f"{name}: faces have shape {faces.shape}, expected (F, 3)")
  if not np.issubdtype(faces.dtype, np.integer):
    raise MeshError(f"{name}: face indices have dtype {faces.dtype}, expected integers")
  faces = faces.astype(np.int64)
  finite = np.isfinite(vertices).all(axis=1)
  if not finite.all():
    bad = np.flatnonzero(~finite)
    raise MeshError(f"{name}: {bad.size} vertices have NaN/inf coordinates (first: vertex {bad[0]} = "
                    f"{vertices[bad[0]].tolist()})")
  nv = vertices.shape[0]
  lo, hi = int(faces.min()), int(faces.max())
  if lo < 0 or hi >= nv:
    bad_face = int(np.flatnonzero(((faces < 0) | (faces >= nv)).any(axis=1))[0])
    raise MeshError(f"{name}: face indices out of range [0, {nv}) (min {lo}, max {hi}; first bad face "
                    f"{bad_face}: {faces[bad_face].tolist()})")
  _check_not_degenerate(vertices[np.unique(faces)], name)
  return vertices, faces


def mesh_from_arrays(vertices: np.ndarray, faces: np.ndarray,
                     source: str = "<mesh>") -> tuple[trimesh.Trimesh, model_lib.Normalization]:
  """Validates raw arrays and returns the normalised mesh and its normalisation.

  Args:
    vertices: (V, 3) vertex positions in the source frame.
    faces: (F, 3) 0-based triangle indices.
    source: the file name used in error messages.

  Returns:
    `(mesh, normalization)` as from `load_mesh_with_normalization`.

  Raises:
    MeshError: as for `validate_mesh`, or when the normalisation cannot be computed.
  """
  vertices, faces = validate_mesh(vertices, faces, source)
  return _normalize(vertices, faces, source)


# ---------------------------------------------------------------------------------------------------------
# Helpers.


def _normalize(vertices: np.ndarray, faces: np.ndarray,
               source: str) -> tuple[trimesh.Trimesh, model_lib.Normalization]:
  """The project's normalisation of validated arrays (`model.normalize_mesh`), errors as MeshError."""
  raw = trimesh.Trimesh(vertices=vertices, faces=faces, process=False)
  try:
    return model_lib.normalize_mesh(raw)
  except ValueError as e:  # compute_normalization's "zero size" (validate_mesh catches it first).
    raise MeshError(f"{source}: cannot normalise the mesh ({e})") from e


def _show(text: bytes, limit: int = 40) -> str:
  """A short printable rendering of a (possibly binary) line for error messages."""
  s = text.decode("latin-1")
  return repr(s if len(s) <= limit else s[:limit] + "...")


def _display_name(path: PathLike, index: int | None) -> str:
  """The name used in messages: the path, with '#N' for a model inside a .mat file."""
  path = os.fspath(path)
  if index is not None and not _MAT_INDEX_RE.match(path):
    return f"{path}#{index}"
  return path


def _split_mat_index(path: PathLike, index: int | None) -> tuple[str, int | None]:
  """Splits 'file.mat#N' into ('file.mat', N) unless a file of that exact name exists."""
  path = os.fspath(path)
  if index is not None and (isinstance(index, bool) or not isinstance(index, (int, np.integer))):
    raise MeshError(f"{path}: index must be an int, got {index!r}")
  match = _MAT_INDEX_RE.match(path)
  if match and not os.path.exists(path):
    suffix_index = int(match.group("index"))
    if index is not None and index != suffix_index:
      raise MeshError(f"{path}: index={index} disagrees with the '#{suffix_index}' in the path")
    return match.group("path"), suffix_index
  return path, None if index is None else int(index)


def _check_file(path: PathLike) -> None:
  """Raises MeshError unless `path` is an existing regular file."""
  if not os.path.exists(path):
    raise MeshError(f"{path}: no such file")
  if not os.path.isfile(path):
    raise MeshError(f"{path}: not a regular file")


def _read_bytes(path: PathLike) -> bytes:
  """The file's contents; MeshError when missing, unreadable or empty."""
  _check_file(path)
  try:
    with open(path, "rb") as f:
      data = f.read()
  except OSError as e:
    raise MeshError(f"{path}: cannot read file ({e.strerror or e})") from e
  if not data.strip():
    raise MeshError(f"{path}: empty file")
  return data


def _bad_vertex_line(lines: list[bytes], rows: list[int], name: str, err: ValueError) -> MeshError:
  """Finds the first bad vertex line (after numpy's reader failed) and says what is wrong with it."""
  # numpy.loadtxt's own row numbers are 0- or 1-based depending on the error, so locate the line here
  # (error path only, speed does not matter).
  for i in rows:
    tokens = lines[i].split()
    if len(tokens) < 3:
      return MeshError(f"{name}: bad vertex line {i + 1}: expected 3 coordinates, got {len(tokens)} "
                       f"({_show(lines[i].strip())})")
    for t in tokens[:3]:
      try:
        if b"_" in t:  # float() accepts '1_0', numpy's reader does not.
          raise ValueError(t)
        float(t)
      except ValueError:
        return MeshError(f"{name}: bad vertex line {i + 1}: non-numeric value {_show(t)}")
  return MeshError(f"{name}: bad vertex lines ({err})")


def _parse_vertex_block(lines: list[bytes], rows: list[int], name: str) -> np.ndarray:
  """Parses the vertex lines: the first 3 columns (COFF/NOFF carry colours/normals after them)."""
  if not rows:
    return np.zeros((0, 3), np.float64)
  block = b"\n".join([lines[i] for i in rows])
  try:
    # numpy's C reader: fast (a 4 MB file in ~0.1 s), reports the bad row, accepts extra columns.
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      return np.loadtxt(io.BytesIO(block), dtype=np.float64, usecols=(0, 1, 2), ndmin=2, comments=None)
  except ValueError as e:
    raise _bad_vertex_line(lines, rows, name, e) from None


def _parse_face_block(lines: list[bytes], rows: list[int], name: str) -> np.ndarray:
  """Parses the face lines 'n i1 .. in [colour ...]' into fan-triangulated (F, 3) int64 indices."""
  if not rows:
    return np.zeros((0, 3), np.int64)
  block = b"\n".join([lines[i] for i in rows])
  try:
    # Fast path: all triangles ('3 i j k', anything after k ignored), as in nearly every real file.
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      table = np.loadtxt(io.BytesIO(block), dtype=np.int64, usecols=(0, 1, 2, 3), ndmin=2, comments=None)
    if (table[:, 0] == 3).all():
      return np.ascontiguousarray(table[:, 1:4])
  except ValueError:
    pass  # Short lines, polygons or bad values: the line-by-line path below says exactly what is wrong.
  triangles: list[tuple[int, int, int]] = []
  for i in rows:
    tokens = lines[i].split()
    lineno = i + 1
    try:
      n = _parse_int(tokens[0])
    except ValueError:
      raise MeshError(f"{name}: bad face line {lineno}: vertex count {_show(tokens[0])} is not an "
                      "integer") from None
    if n < 3:
      raise MeshError(f"{name}: bad face line {lineno}: a face needs at least 3 vertices, got {n}")
    if len(tokens) < n + 1:
      raise MeshError(f"{name}: bad face line {lineno}: announces {n} vertices but has only "
                      f"{len(tokens) - 1} values")
    try:
      idx = [_parse_int(t) for t in tokens[1:n + 1]]
    except ValueError:
      raise MeshError(f"{name}: bad face line {lineno}: non-integer vertex index in "
                      f"{_show(lines[i].strip())}") from None
    # Python ints are unbounded; an index beyond int64 would overflow the index array below.
    if any(not _INT64_MIN <= k <= _INT64_MAX for k in idx):
      raise MeshError(f"{name}: bad face line {lineno}: vertex index out of range in "
                      f"{_show(lines[i].strip())}")
    # Fan triangulation (exact for the convex polygons OFF writers emit).
    triangles.extend((idx[0], idx[k], idx[k + 1]) for k in range(1, n - 1))
  return np.asarray(triangles, dtype=np.int64).reshape(-1, 3)


def _parse_int(token: bytes) -> int:
  """int(token), but without Python-only syntax ('1_000') that numpy's reader (the fast path) rejects."""
  if b"_" in token:
    raise ValueError(token)
  return int(token)


def _read_with_trimesh(data: bytes, ext: str, path: PathLike) -> tuple[np.ndarray, np.ndarray]:
  """Reads .obj/.ply through trimesh; geometry only (materials and textures are ignored)."""
  kwargs = {"skip_materials": True} if ext == ".obj" else {}
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")  # trimesh warns freely on odd files; problems surface below.
      # Loading from bytes (not the path) keeps trimesh from resolving .mtl/texture files next to it.
      loaded = trimesh.load(io.BytesIO(data), file_type=ext[1:], force="mesh", process=False, **kwargs)
  except Exception as e:  # trimesh raises anything from ValueError to IndexError on malformed files.
    raise MeshError(f"{path}: cannot parse {ext} file ({type(e).__name__}: {e})") from e
  vertices = getattr(loaded, "vertices", None)
  faces = getattr(loaded, "faces", None)
  vertices = np.zeros((0, 3)) if vertices is None else np.asarray(vertices)
  faces = np.zeros((0, 3), np.int64) if faces is None else np.asarray(faces)
  if ext == ".obj":
    vertices, faces = _merge_duplicate_vertices(vertices, faces)
  return vertices, faces  # validate_mesh checks shapes, values and ranges.


def _merge_duplicate_vertices(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Merges exactly equal vertices, keeping first-occurrence order; odd arrays are returned unchanged.

  trimesh splits OBJ vertices per texture coordinate (a ShapeNet chair: 1,387 'v' lines -> 8,220 vertices).
  Textures are ignored here, so the split is undone to get the file's geometry back.
  """
  if (vertices.ndim != 2 or vertices.shape[1] != 3 or not len(vertices) or faces.ndim != 2
      or not faces.size or not np.issubdtype(faces.dtype, np.integer)
      or faces.min() < 0 or faces.max() >= len(vertices)):
    return vertices, faces  # Let validate_mesh report what is wrong.
  _, first, inverse = np.unique(vertices, axis=0, return_index=True, return_inverse=True)
  order = np.argsort(first)
  rank = np.empty_like(order)
  rank[order] = np.arange(order.size)
  return vertices[first[order]], rank[inverse.reshape(-1)][faces]


def _mat_entry_arrays(vertices, faces, name: str) -> tuple[np.ndarray, np.ndarray]:
  """Converts one .mat struct entry's fields to float64 vertices and 0-based int64 faces."""
  v = np.asarray(vertices)
  f = np.asarray(faces)
  # Complex arrays are numbers too, but casting them drops the imaginary part silently.
  if v.dtype == object or not np.issubdtype(v.dtype, np.number) or np.iscomplexobj(v):
    raise MeshError(f"{name}: 'vertices' is not a real numeric array (dtype {v.dtype})")
  if f.dtype == object or not np.issubdtype(f.dtype, np.number) or np.iscomplexobj(f):
    raise MeshError(f"{name}: 'faces' is not a real numeric array (dtype {f.dtype})")
  if v.size and (v.ndim != 2 or v.shape[1] != 3):
    raise MeshError(f"{name}: 'vertices' has shape {v.shape}, expected (V, 3)")
  if f.size and (f.ndim != 2 or f.shape[1] != 3):
    raise MeshError(f"{name}: 'faces' has shape {f.shape}, expected (F, 3)")
  if np.issubdtype(f.dtype, np.floating):
    if not np.isfinite(f).all() or (f != np.round(f)).any():
      raise MeshError(f"{name}: 'faces' holds non-integer values")
  # Values beyond int64 (huge doubles, uint64) would wrap in the cast below and be reported as other,
  # wrong indices; they are out of range of any vertex array, so say so with the file's own values.
  if f.size and (float(f.max()) > 2.0 ** 62 or float(f.min()) < -2.0 ** 62):
    raise MeshError(f"{name}: 'faces' holds indices out of range (min {f.min()}, max {f.max()})")
  # Cast BEFORE subtracting 1: faces are stored as uint8/uint16, where 0 - 1 wraps to 255/65535.
  f = f.astype(np.int64).reshape(-1, 3) - 1
  return v.astype(np.float64).reshape(-1, 3), f


def _check_not_degenerate(points: np.ndarray, name: str) -> None:
  """Raises MeshError when the referenced vertices span fewer than 3 dimensions (zero volume), or span
  more than float64 can hold (coordinates of opposite sign near 1e308: the extent overflows)."""
  lo, hi = points.min(axis=0), points.max(axis=0)
  with np.errstate(over="ignore"):
    extent = hi - lo
  if not np.isfinite(extent).all():
    raise MeshError(f"{name}: coordinates too large: the referenced vertices span more than float64 can "
                    f"represent (largest |coordinate| {float(np.abs(points).max()):.3g})")
  size = float(extent.max())
  if size == 0.0:
    raise MeshError(f"{name}: degenerate mesh: all {points.shape[0]} referenced vertices coincide")
  # Singular values of the centred, size-scaled points, so the test is independent of units and of the
  # orientation of the line or plane (an axis-aligned extent check would miss a tilted flat mesh). Shifted
  # to the bbox centre and scaled before the mean is taken: a mean of huge coordinates can overflow.
  scaled = (points - (lo + extent / 2)) / size
  centred = scaled - scaled.mean(axis=0)
  sv = np.linalg.svd(centred, compute_uv=False) if points.shape[0] >= 3 else np.zeros(3)
  sv = np.concatenate([sv, np.zeros(3 - sv.size)])
  if sv[1] <= _DEGENERATE_RTOL * sv[0] or points.shape[0] < 3:
    raise MeshError(f"{name}: degenerate mesh: the referenced vertices are collinear (zero area)")
  if sv[2] <= _DEGENERATE_RTOL * sv[0]:
    raise MeshError(f"{name}: degenerate mesh: the referenced vertices are coplanar (zero volume; extent "
                    f"{np.round(extent, 6).tolist()})")


# ---------------------------------------------------------------------------------------------------------
# MATLAB 5 structure check.
#
# scipy's MATLAB 5 reader (the Cython `VarReader5`) trusts the file: it looks a numeric or char data
# element's type code up in a 20-entry C array of dtypes without a bounds or NULL check (one flipped byte
# in a type code is a segmentation fault, found by tests/test_fuzz.py), and it allocates struct and cell
# arrays of the size in their header before reading any element (one flipped byte in a dimension costs
# seconds and gigabytes, or the OOM killer), and a char array without dimensions makes it read out of
# bounds (another segfault). `mat_structure_problem` walks every data element first, in
# Python, and reports what would make scipy crash or allocate wildly; everything else scipy checks itself,
# with ordinary exceptions. Annotation files use it too (disent_jax/datasets/pascal3d_annotations.py).

# Type codes scipy has a dtype for: int8..uint32, single, double, int64, uint64, utf8/16/32.
_MI_DATA_TYPES = frozenset({1, 2, 3, 4, 5, 6, 7, 9, 12, 13, 16, 17, 18})
_MI_MATRIX, _MI_COMPRESSED = 14, 15
# Array classes (the low byte of the array flags).
_MX_CELL, _MX_STRUCT, _MX_OBJECT, _MX_CHAR, _MX_SPARSE = 1, 2, 3, 4, 5
_MX_NUMERIC = frozenset(range(6, 16))
_MX_FUNCTION, _MX_OPAQUE = 16, 17
_MAT_MAX_DEPTH = 64  # Nesting of structs/cells; real files nest a handful of levels.
_MAT_MAX_INFLATED = 1 << 30  # Bytes all compressed elements may inflate to (a zlib bomb stops here).
_MAT_MAX_EMPTY_ELEMENTS = 1 << 20  # Elements of a struct array without fields (they take no bytes).


class _MatProblem(Exception):
  """A structural problem of a MATLAB 5 file (internal to `mat_structure_problem`)."""


def mat_structure_problem(data: bytes) -> str | None:
  """Checks the data elements of a MATLAB 5 .mat file before scipy reads it (see the comment above).

  Args:
    data: the file's contents.

  Returns:
    None when scipy can safely be given the file (including files that are not MATLAB 5 at all: MATLAB 4
    and 7.3 files, or junk, which scipy rejects or reads with its own checks), else the first problem
    found, e.g. 'data element at byte 2976 has unknown type 25609'.
  """
  if len(data) < 128:
    return None
  byte_order = {b"IM": "<", b"MI": ">"}.get(bytes(data[126:128]))
  if byte_order is None or struct.unpack_from(byte_order + "H", data, 124)[0] != 0x0100:
    return None
  walker = _Mat5Walker(byte_order)
  try:
    walker.variables(data, 128, len(data), 0)
  except _MatProblem as e:
    return str(e)
  return None


class _Mat5Walker:
  """Walks the data elements of a MATLAB 5 file as scipy's reader will (`_mio5_utils.VarReader5`).

  Real files hold up to ~10^5 small matrices (the `visibility` struct arrays of Pascal3D+ CAD files), so
  the per-element path avoids work it does not need: dimensions are only decoded for cells and structs,
  and messages are only formatted on failure.
  """

  def __init__(self, byte_order: str):
    self.byte_order = byte_order
    self.pair = struct.Struct(byte_order + "II")
    self.uint = struct.Struct(byte_order + "I")
    self.int = struct.Struct(byte_order + "i")
    self.inflated = 0

  def tag(self, buf: bytes, pos: int, end: int) -> tuple[int, int, int, int]:
    """(type, byte count, data start, next element) of the element at `pos` (padded to 8 bytes)."""
    if end - pos < 8:
      raise _MatProblem(f"truncated data element at byte {pos}")
    mdtype, count = self.pair.unpack_from(buf, pos)
    if mdtype >> 16:  # Small data element: byte count in the upper half, data in the tag's last 4 bytes.
      if mdtype >> 16 > 4:
        raise _MatProblem(f"small data element at byte {pos} claims {mdtype >> 16} bytes (at most 4)")
      return mdtype & 0xFFFF, mdtype >> 16, pos + 4, pos + 8
    if count > end - pos - 8:
      raise _MatProblem(f"data element at byte {pos} claims {count} bytes, {end - pos - 8} left")
    return mdtype, count, pos + 8, pos + 8 + count + (-count % 8)

  def data(self, buf: bytes, pos: int, end: int, allow_empty: bool = False) -> int:
    """A numeric or char data element (scipy indexes its dtype table with the type code); the next one."""
    mdtype, count, _, nxt = self.tag(buf, pos, end)
    if mdtype not in _MI_DATA_TYPES and not (allow_empty and count == 0):
      raise _MatProblem(f"data element at byte {pos} has unknown type {mdtype}")
    return nxt

  def variables(self, buf: bytes, pos: int, end: int, depth: int) -> None:
    """Top-level elements: matrices, or compressed elements holding one (no padding between them)."""
    while pos < end:
      mdtype, count, start, _ = self.tag(buf, pos, end)
      if mdtype == _MI_MATRIX:
        self.matrix(buf, start, start + count, depth)
      elif mdtype == _MI_COMPRESSED:
        inflated = self.inflate(buf[start:start + count], pos)
        self.variables(inflated, 0, len(inflated), depth + 1)
      else:
        raise _MatProblem(f"top-level data element at byte {pos} has type {mdtype} (expected a matrix)")
      pos = start + count

  def inflate(self, blob: bytes, pos: int) -> bytes:
    inflater = zlib.decompressobj()
    try:
      out = inflater.decompress(blob, _MAT_MAX_INFLATED - self.inflated + 1)
    except zlib.error as e:
      raise _MatProblem(f"compressed element at byte {pos} is corrupt ({e})") from None
    self.inflated += len(out)
    if self.inflated > _MAT_MAX_INFLATED:
      raise _MatProblem(f"compressed elements inflate to more than {_MAT_MAX_INFLATED} bytes")
    return out

  def matrix(self, buf: bytes, pos: int, end: int, depth: int) -> None:
    """One miMATRIX body: array flags, dims, name, then the class's data or sub-matrices."""
    if pos == end:
      return  # An empty matrix ([]): a zero byte count.
    if depth > _MAT_MAX_DEPTH:
      raise _MatProblem(f"matrices nested more than {_MAT_MAX_DEPTH} levels deep (byte {pos})")
    tag = self.tag
    _, count, start, nxt = tag(buf, pos, end)
    if count < 8:
      raise _MatProblem(f"matrix at byte {pos - 8}: array flags of {count} bytes (expected 8)")
    flags = self.uint.unpack_from(buf, start)[0]
    mclass = flags & 0xFF
    if mclass == _MX_OPAQUE:  # Name, type system and class name, then one matrix.
      for _ in range(3):
        nxt = tag(buf, nxt, end)[3]
      self.sub_matrices(buf, nxt, end, depth, 0)
      return
    dims_pos = nxt
    _, count, _, nxt = tag(buf, nxt, end)
    # MATLAB writes two dimensions at least; scipy turns a char array of zero dimensions into a 0-d array
    # and then reads its last dimension out of bounds (another segfault found by fuzzing).
    if count < 8 or count % 4:
      raise _MatProblem(f"matrix at byte {pos - 8}: dimensions of {count} bytes (expected 2 or more int32)")
    nxt = tag(buf, nxt, end)[3]  # Past the name.
    if mclass in _MX_NUMERIC or mclass == _MX_SPARSE:
      # Real (and imaginary) parts; sparse arrays first hold their row and column indices.
      for _ in range((2 if flags >> 11 & 1 else 1) + (2 if mclass == _MX_SPARSE else 0)):
        nxt = self.data(buf, nxt, end)
    elif mclass == _MX_CHAR:
      self.data(buf, nxt, end, allow_empty=True)
    elif mclass == _MX_CELL:
      self.sub_matrices(buf, nxt, end, depth, self.size(buf, dims_pos, end))
    elif mclass in (_MX_STRUCT, _MX_OBJECT):
      if mclass == _MX_OBJECT:
        nxt = tag(buf, nxt, end)[3]  # Class name.
      _, count, start, nxt = tag(buf, nxt, end)
      name_length = self.int.unpack_from(buf, start)[0] if count >= 4 else 0
      if name_length <= 0:
        raise _MatProblem(f"matrix at byte {pos - 8}: struct field names of length {name_length}")
      _, count, _, nxt = tag(buf, nxt, end)
      fields, size = count // name_length, self.size(buf, dims_pos, end)
      if fields == 0 and not 0 <= size <= _MAT_MAX_EMPTY_ELEMENTS:
        raise _MatProblem(f"matrix at byte {pos - 8}: struct array without fields claims {size} elements")
      self.sub_matrices(buf, nxt, end, depth, size * fields if size >= 0 else -1)
    elif mclass == _MX_FUNCTION:
      self.sub_matrices(buf, nxt, end, depth, 0)

  def size(self, buf: bytes, pos: int, end: int) -> int:
    """The number of elements the dimensions element at `pos` claims (-1 for a negative dimension)."""
    _, count, start, _ = self.tag(buf, pos, end)
    dims = struct.unpack_from(f"{self.byte_order}{min(count, 128) // 4}i", buf, start)
    return math.prod(dims) if all(d >= 0 for d in dims) else -1

  def sub_matrices(self, buf: bytes, pos: int, end: int, depth: int, expected: int) -> None:
    """The matrices a cell or struct array consists of: `expected` of them, 8 bytes each at least."""
    if expected < 0 or expected * 8 > end - pos:
      raise _MatProblem(f"array at byte {pos} claims {expected if expected >= 0 else 'a negative number of'} "
                        f"elements in {end - pos} bytes (each takes 8 at least)")
    tag, matrix = self.tag, self.matrix
    while pos < end:
      mdtype, count, start, nxt = tag(buf, pos, end)
      if mdtype != _MI_MATRIX:
        raise _MatProblem(f"element at byte {pos} has type {mdtype} (expected a matrix)")
      matrix(buf, start, start + count, depth + 1)
      pos = nxt
