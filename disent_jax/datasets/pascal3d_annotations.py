"""Reading PASCAL3D+ (release 1.1) annotation files, and the pose labels they define.

File layout: `Annotations/<category>_{pascal,imagenet}/<image_id>.mat` holds one MATLAB variable `record`, a
1x1 struct with (among others) `filename` (or `imgname`), `imgsize` = [width height depth] (or a `size`
struct with `width`, `height`, `depth`), `database`, and `objects`, a 1xN struct array. Each object has
`class`, `bbox` = [x1 y1 x2 y2] (or a `bndbox` struct xmin/ymin/xmax/ymax), `truncated`, `occluded`,
`difficult`, `cad_index`, `anchors` (keypoints, ignored here) and `viewpoint`, a struct with `azimuth`,
`elevation`, `theta`, `distance`, `focal`, `px`, `py`, `viewport` (fine alignment to a CAD model) and
`azimuth_coarse`, `elevation_coarse` (a coarse view only). Angles are in DEGREES in the files.
`.mat` files come in every shape scipy can produce (1x1 arrays, `[]` for empty fields, strings as char
arrays, struct arrays or cells of structs), so everything is first converted to plain dicts and lists
(`_plain`) and then read with checks; every malformed file raises `AnnotationError` naming the file and the
field (`record.objects(2).viewpoint.azimuth`, MATLAB's 1-based object numbering, as in the file).

What is kept (`Pascal3dRecord.objects`): the objects whose `class` is the folder's category. Pascal VOC
records also list every other VOC object of the image (persons, ...) with an empty viewpoint: those are
not parsed further, only counted (`num_other_class`). An object of the category keeps `viewpoint = None`
when the file gives none (empty struct, or neither fine nor coarse angles); a viewpoint with
`distance == 0` has no CAD alignment, only (coarse) angles: it is kept with `coarse = True` and
`has_camera = False`. Only objects with `has_pose` (a fine viewpoint with a camera) get pose labels; the
dataset builder skips the others and reports how many.

Conventions derived here (and checked in tests/test_pascal3d.py by projecting real CAD meshes):

* Bounding boxes. Pascal VOC / PASCAL3D+ boxes are 1-based inclusive pixel indices: xmin is the first
  and xmax the last pixel column of the object. In the project's continuous coordinates pixel i (1-based)
  spans [i - 1, i), so the box is (x1, y1, x2, y2) = (xmin - 1, ymin - 1, xmax, ymax) and its width is
  xmax - xmin + 1 pixels. ImageNet boxes are read the same way; whether PASCAL3D+ copied them 1-based
  (like VOC) was not checked against the real release, so they may be off by one pixel.

* Camera. PASCAL3D+'s `project_3d.m` puts the camera centre at
  C = d (cos(el) sin(az), -cos(el) cos(az), sin(el)) in the CAD frame, rotates by
  R = Rx(el - pi/2) Rz(-az) (active rotations; an OpenGL-style camera looking along -Z), projects with
  P = diag(f M, f M, -1) [R | -R C] (f = `focal`, M = `viewport`), rotates the image plane by theta,
  flips y and adds the principal point (px, py). In our CV camera (X right, Y down, Z forward) that is
    X_c = R_cv X + t_cv,   R_cv = diag(1, -1, -1) Rz(theta) Rx(el - pi/2) Rz(-az)
                                = geometry.viewpoint_to_camera_rotation(az, el, theta),
    t_cv = (0, 0, d)       (the camera looks at the CAD origin from distance d, in CAD units),
    u = f M X_c / Z_c + px', v = f M Y_c / Z_c + py'.
  MATLAB image coordinates put the centre of 1-based pixel i at i, ours at i - 0.5, so
  px' = px - 0.5 and py' = py - 0.5, and K = [[f M, 0, px'], [0, f M, py'], [0, 0, 1]].

* Translation. CAD models are normalised (x_n = (x - c) s, `disent_jax.cad.model`). A point x_n of the
  normalised model sits at R_cv (x_n / s + c) + t_cv in the camera; scaling the scene by s about the
  camera centre leaves the image unchanged, so the normalised model's origin is at
    t_norm = s (R_cv c + t_cv)
  with the same K and R_cv. `translation_camera` = t_norm and `translation` =
  geometry.camera_to_crop_translation(t_norm, bbox, K).
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import pathlib
from typing import Any

import jax
import numpy as np
import scipy.io
from scipy.io import matlab

from disent_jax import geometry
from disent_jax.cad import mesh_io
from disent_jax.cad import model as model_lib
from disent_jax.errors import AnnotationError

PathLike = str | os.PathLike

SOURCES: tuple[str, ...] = ("pascal", "imagenet")

# A real record nests structs four levels deep (record.objects.viewpoint.*, record.objects.anchors.*.*);
# anything much deeper is not a PASCAL3D+ annotation, and the limit keeps recursion bounded on junk.
_MAX_DEPTH = 16

_MISSING = object()


# ---------------------------------------------------------------------------------------------------------
# Plain data.


@dataclasses.dataclass(frozen=True)
class Viewpoint:
  """One PASCAL3D+ viewpoint, angles converted to radians and the principal point to our coordinates.

  Attributes:
    azimuth, elevation, theta: radians (the file's degrees * pi / 180).
    distance: camera distance from the CAD origin, in CAD units; 0 when the object was not aligned.
    focal: `focal` (usually 1).
    viewport: `viewport` (usually 3000); the focal length in pixels is focal * viewport.
    px, py: principal point (where the CAD origin projects) in the project's continuous pixel
      coordinates (the file's 1-based MATLAB values minus 0.5).
    coarse: True when only coarse angles are known (`distance == 0`); theta is then the file's theta if
      given, else 0, and there is no camera.
  """
  azimuth: float
  elevation: float
  theta: float
  distance: float = 0.0
  focal: float = 0.0
  viewport: float = 0.0
  px: float = 0.0
  py: float = 0.0
  coarse: bool = False

  @property
  def has_camera(self) -> bool:
    """True when the viewpoint defines a full camera (fine alignment, distance > 0)."""
    return not self.coarse and self.distance > 0 and self.focal * self.viewport > 0

  def camera_rotation(self) -> np.ndarray:
    """R_cv (3, 3) float64: CAD frame -> CV camera, `geometry.viewpoint_to_camera_rotation`."""
    return _camera_rotation(self.azimuth, self.elevation, self.theta)

  def intrinsics(self) -> np.ndarray:
    """K (3, 3) float64 in the project's pixel convention (see the module docstring)."""
    self._require_camera()
    f = self.focal * self.viewport
    return np.array([[f, 0.0, self.px], [0.0, f, self.py], [0.0, 0.0, 1.0]])

  def camera_translation(self) -> np.ndarray:
    """t_cv = (0, 0, distance): the CAD origin in the camera frame, CAD units."""
    self._require_camera()
    return np.array([0.0, 0.0, self.distance])

  def _require_camera(self) -> None:
    if not self.has_camera:
      raise ValueError("this viewpoint has no camera (coarse viewpoint or distance 0)")


@dataclasses.dataclass(frozen=True, eq=False)  # Holds arrays: equality is identity.
class Pascal3dObject:
  """One annotated object of the folder's category.

  Attributes:
    index: 0-based position in the record's `objects` array (all classes counted), so
      '<image_id>/<index>' names the object uniquely.
    category: the object's class (the folder's category).
    bbox: (x1, y1, x2, y2) float64 in continuous pixel coordinates (see the module docstring).
    viewpoint: the viewpoint, or None when the file gives none.
    cad_index: 1-based CAD model index; 0 when the file gives none (only allowed without a pose).
    truncated, occluded, difficult: the file's flags (empty or absent -> False).
  """
  index: int
  category: str
  bbox: np.ndarray
  viewpoint: Viewpoint | None
  cad_index: int
  truncated: bool
  occluded: bool
  difficult: bool

  @property
  def has_pose(self) -> bool:
    """True when the object has a fine viewpoint with a camera and a CAD model: it gets pose labels."""
    return self.viewpoint is not None and self.viewpoint.has_camera and self.cad_index > 0

  @property
  def easy(self) -> bool:
    """Neither truncated, occluded nor difficult: the objects the paper evaluates pose on."""
    return not (self.truncated or self.occluded or self.difficult)


@dataclasses.dataclass(frozen=True, eq=False)  # Holds arrays: equality is identity.
class Pascal3dRecord:
  """One annotation file.

  Attributes:
    path: the file.
    image_id: the file's stem (e.g. '2008_000021' or 'n02690373_1000').
    category: the folder's category.
    source: 'pascal' or 'imagenet' (the folder's suffix).
    filename: the image file name from the record (e.g. '2008_000021.jpg').
    width, height, depth: the image size from the record.
    database: the record's `database` string ('' when absent).
    objects: the objects of `category`, in file order.
    num_other_class: how many objects of other classes the record lists (skipped).
  """
  path: str
  image_id: str
  category: str
  source: str
  filename: str
  width: int
  height: int
  depth: int
  database: str
  objects: tuple[Pascal3dObject, ...]
  num_other_class: int

  @property
  def posed_objects(self) -> tuple[Pascal3dObject, ...]:
    """The objects that have pose labels (`Pascal3dObject.has_pose`)."""
    return tuple(o for o in self.objects if o.has_pose)


@dataclasses.dataclass(frozen=True, eq=False)  # Holds arrays: equality is identity.
class PoseLabels:
  """The pose features of one object (see disent_jax/datasets/features.py), float64.

  Attributes:
    rotation: R_cv (3, 3), CAD (= normalised CAD) frame -> CV camera.
    quaternion: canonical scalar-first unit quaternion of `rotation`.
    viewpoint: (azimuth, elevation, theta) radians of `rotation` (`geometry.camera_rotation_to_viewpoint`).
    intrinsics: K (3, 3).
    translation_camera: t_norm, the normalised model's origin in the camera frame.
    translation: the crop-relative label (x, y, z) of t_norm for the object's box.
  """
  rotation: np.ndarray
  quaternion: np.ndarray
  viewpoint: np.ndarray
  intrinsics: np.ndarray
  translation_camera: np.ndarray
  translation: np.ndarray


# ---------------------------------------------------------------------------------------------------------
# Pose labels.


def _x64(fn, stack: bool = False):
  """`fn` jitted and evaluated in float64 on the host; `stack` stacks a tuple result into one array.

  Labels are computed once, so float64 costs nothing, and jit keeps the per-object cost at one dispatch
  instead of dozens of eager ops.
  """
  jitted = jax.jit((lambda *args: jax.numpy.stack(fn(*args))) if stack else fn)

  def wrapped(*args):
    with jax.enable_x64(True):
      return np.asarray(jitted(*[np.asarray(a, np.float64) for a in args]), np.float64)
  return wrapped


_camera_rotation = _x64(geometry.viewpoint_to_camera_rotation)
_matrix_to_quat = _x64(geometry.matrix_to_quat)
_crop_translation = _x64(geometry.camera_to_crop_translation)
_camera_to_viewpoint = _x64(geometry.camera_rotation_to_viewpoint, stack=True)


def normalized_translation(viewpoint: Viewpoint, normalization: model_lib.Normalization) -> np.ndarray:
  """t_norm = s (R_cv c + t_cv): the normalised CAD model's origin in the camera frame (module docstring).

  Args:
    viewpoint: a viewpoint with a camera.
    normalization: the CAD model's normalisation (x_n = (x - c) s).

  Returns:
    (3,) float64.
  """
  r = viewpoint.camera_rotation()
  c = np.asarray(normalization.center, np.float64)
  return normalization.scale * (r @ c + viewpoint.camera_translation())


def pose_labels(obj: Pascal3dObject, normalization: model_lib.Normalization) -> PoseLabels:
  """The pose features of an object whose CAD model has `normalization`.

  Args:
    obj: an object with `has_pose`.
    normalization: the normalisation of CAD model `obj.cad_index` of `obj.category`.

  Returns:
    The labels.

  Raises:
    ValueError: the object has no pose.
  """
  if not obj.has_pose:
    raise ValueError(f"object {obj.index} ({obj.category}) has no fine viewpoint with a camera")
  vp = obj.viewpoint
  r = vp.camera_rotation()
  k = vp.intrinsics()
  t_norm = normalized_translation(vp, normalization)
  return PoseLabels(rotation=r, quaternion=_matrix_to_quat(r), viewpoint=_camera_to_viewpoint(r),
                    intrinsics=k, translation_camera=t_norm,
                    translation=_crop_translation(t_norm, obj.bbox, k))


# ---------------------------------------------------------------------------------------------------------
# Parsing.


def read_annotation(path: PathLike, category: str | None = None, source: str | None = None) -> Pascal3dRecord:
  """Reads one `Annotations/<category>_<source>/<image_id>.mat` file.

  Args:
    path: the file.
    category: the category whose objects to keep; default: from the folder name `<category>_<source>`.
    source: 'pascal' or 'imagenet'; default: from the folder name.

  Returns:
    The record.

  Raises:
    AnnotationError: the file is missing, unreadable or malformed; the message names the file and field.
  """
  path = pathlib.Path(path)
  if category is None or source is None:
    cat, sep, src = path.parent.name.rpartition("_")
    if not sep or src not in SOURCES:
      raise AnnotationError(f"{path}: cannot tell category and source from the folder name "
                            f"{path.parent.name!r} (expected '<category>_pascal' or '<category>_imagenet')")
    category = cat if category is None else category
    source = src if source is None else source
  if not path.is_file():
    raise AnnotationError(f"{path}: no such annotation file")
  try:
    data = path.read_bytes()
  except OSError as e:
    raise AnnotationError(f"{path}: cannot read annotation file ({e.strerror or e})") from e
  # scipy's reader trusts the file: a flipped byte in a type code crashes the process (segfault) and
  # one in a struct's dimensions allocates gigabytes; mesh_io's check of the data elements comes first.
  problem = mesh_io.mat_structure_problem(data)
  if problem:
    raise AnnotationError(f"{path}: not a readable MATLAB .mat file, it is corrupt ({problem})")
  try:
    mat = scipy.io.loadmat(io.BytesIO(data), squeeze_me=True, struct_as_record=False)
  except Exception as e:  # scipy raises ValueError, TypeError, OSError, ... on foreign or broken files.
    raise AnnotationError(f"{path}: not a readable MATLAB .mat file ({type(e).__name__}: {e})") from e
  if "record" not in mat:
    names = sorted(k for k in mat if not k.startswith("__"))
    raise AnnotationError(f"{path}: record: no 'record' variable (variables: {names or 'none'})")
  return parse_record(mat["record"], path=str(path), category=category, source=source,
                      image_id=path.stem)


def parse_record(record: Any, *, path: str, category: str, source: str, image_id: str) -> Pascal3dRecord:
  """Parses a loaded `record` variable (any `scipy.io.loadmat` squeeze/struct_as_record setting).

  Args:
    record: the value of the `record` variable.
    path: the file name, for error messages.
    category: the category whose objects to keep.
    source: 'pascal' or 'imagenet'.
    image_id: the image id (the file's stem).

  Returns:
    The record.

  Raises:
    AnnotationError: naming `path` and the bad field.
  """
  if source not in SOURCES:
    raise AnnotationError(f"{path}: unknown source {source!r} (expected one of {SOURCES})")
  try:
    rec = _plain(record, 0)
  except RecursionError:
    raise AnnotationError(f"{path}: record: nested too deeply") from None
  except _TooDeep:
    raise AnnotationError(f"{path}: record: structs nested more than {_MAX_DEPTH} levels deep") from None
  r = _Reader(path)
  rec = r.struct(rec, "record")
  filename = r.optional_string(rec, "filename", "record") or r.optional_string(rec, "imgname", "record")
  if not filename:
    raise AnnotationError(f"{path}: record.filename: missing or empty (no 'filename' or 'imgname')")
  width, height, depth = r.image_size(rec)
  database = r.optional_string(rec, "database", "record") or ""
  objects_value = rec.get("objects", _MISSING)
  if objects_value is _MISSING:
    raise AnnotationError(f"{path}: record.objects: missing")
  objects, other = [], 0
  for index, obj in enumerate(r.struct_list(objects_value, "record.objects")):
    where = f"record.objects({index + 1})"
    cls = r.string(obj, "class", where)
    if cls != category:
      other += 1
      continue
    objects.append(r.pascal3d_object(obj, index, category, where))
  return Pascal3dRecord(path=path, image_id=image_id, category=category, source=source, filename=filename,
                        width=width, height=height, depth=depth, database=database,
                        objects=tuple(objects), num_other_class=other)


class _TooDeep(Exception):
  pass


def _plain(x: Any, depth: int) -> Any:
  """Converts scipy's MATLAB values to dicts (structs), lists (struct/cell arrays) and numpy leaves.

  A struct (a `mat_struct`, or a structured array of size 1) becomes a dict; a struct array or cell array
  of size != 1 becomes a list in MATLAB (column-major) order; a cell of size 1 becomes its content, so 1x1
  wrappers (`squeeze_me=False`) and their absence read the same. Strings stay `str`, numbers stay numpy.
  """
  if depth > _MAX_DEPTH:
    raise _TooDeep()
  if isinstance(x, matlab.mat_struct):
    return {name: _plain(getattr(x, name), depth + 1) for name in x._fieldnames}
  if isinstance(x, np.void) and x.dtype.names:
    return {name: _plain(x[name], depth + 1) for name in x.dtype.names}
  if isinstance(x, np.ndarray):
    if x.dtype.names:
      items = [{name: _plain(e[name], depth + 1) for name in x.dtype.names} for e in x.ravel(order="F")]
      return items[0] if len(items) == 1 else items
    if x.dtype == object:
      if x.size == 0:
        return np.zeros((0,))
      items = [_plain(e, depth + 1) for e in x.ravel(order="F")]
      return items[0] if len(items) == 1 else items
    if x.dtype.kind == "U":
      if x.size == 1:
        return str(x.ravel()[0])
      if x.size == 0:
        return ""
  if isinstance(x, np.str_):
    return str(x)
  return x


def _describe(v: Any) -> str:
  """A short description of a value for error messages."""
  if isinstance(v, dict):
    return f"a struct with fields {sorted(v)[:8]}"
  if isinstance(v, list):
    return f"an array of {len(v)} elements"
  if isinstance(v, str):
    return f"the string {v[:40]!r}"
  if isinstance(v, np.ndarray):
    if v.size == 1 and v.dtype.kind in "biuf":
      return f"{v.dtype} value {v.ravel()[0]!r}"
    return f"a {v.dtype} array of shape {v.shape}"
  return f"{type(v).__name__} {v!r}"[:80]


def _empty(v: Any) -> bool:
  """True for MATLAB's empty values: [], '', {} and structs without fields."""
  if v is None or v is _MISSING:
    return True
  if isinstance(v, (str, list, dict)):
    return len(v) == 0
  if isinstance(v, np.ndarray):
    return v.size == 0
  return False


class _Reader:
  """Typed field access on plain (dict/list/numpy) records, raising AnnotationError naming file and field."""

  def __init__(self, path: str):
    self.path = path

  def error(self, where: str, problem: str) -> AnnotationError:
    return AnnotationError(f"{self.path}: {where}: {problem}")

  def struct(self, v: Any, where: str) -> dict:
    if isinstance(v, list) and len(v) == 1:
      v = v[0]
    if not isinstance(v, dict):
      raise self.error(where, f"expected a struct, got {_describe(v)}")
    return v

  def struct_list(self, v: Any, where: str) -> list[dict]:
    """A struct array (or cell array of structs, possibly nested) as a flat list; [] is no element."""
    if _empty(v):
      return []
    out: list[dict] = []
    stack = [v]
    while stack:  # Flattens cells of struct arrays in order, without recursion.
      item = stack.pop(0)
      if isinstance(item, dict):
        out.append(item)
      elif isinstance(item, list):
        stack = list(item) + stack
      else:
        raise self.error(f"{where}({len(out) + 1})", f"expected a struct, got {_describe(item)}")
    return out

  def get(self, s: dict, name: str) -> Any:
    return s.get(name, _MISSING)

  def string(self, s: dict, name: str, where: str) -> str:
    v = self.get(s, name)
    if v is _MISSING:
      raise self.error(f"{where}.{name}", "missing")
    if not isinstance(v, str):
      raise self.error(f"{where}.{name}", f"expected a string, got {_describe(v)}")
    if not v.strip():
      raise self.error(f"{where}.{name}", "empty string")
    return v.strip()

  def optional_string(self, s: dict, name: str, where: str) -> str | None:
    v = self.get(s, name)
    if _empty(v):
      return None
    if not isinstance(v, str):
      raise self.error(f"{where}.{name}", f"expected a string, got {_describe(v)}")
    return v.strip() or None

  def number(self, v: Any, where: str) -> float:
    """One finite real number (a 1x1 numeric or logical array, or a Python/numpy scalar)."""
    if isinstance(v, (bool, int, float, np.number, np.bool_)):
      v = np.asarray(v)
    if not isinstance(v, np.ndarray) or v.dtype.kind not in "biuf":
      raise self.error(where, f"expected a number, got {_describe(v)}")
    if v.size != 1:
      raise self.error(where, f"expected one number, got {_describe(v)}")
    x = float(v.ravel()[0])
    if not math.isfinite(x):
      raise self.error(where, f"expected a finite number, got {x}")
    return x

  def field_number(self, s: dict, name: str, where: str) -> float:
    v = self.get(s, name)
    if v is _MISSING:
      raise self.error(f"{where}.{name}", "missing")
    if _empty(v):
      raise self.error(f"{where}.{name}", "empty")
    return self.number(v, f"{where}.{name}")

  def optional_number(self, s: dict, name: str, where: str) -> float | None:
    v = self.get(s, name)
    return None if _empty(v) else self.number(v, f"{where}.{name}")

  def flag(self, s: dict, name: str, where: str) -> bool:
    """A 0/1 flag; absent or empty reads as False (ImageNet records often leave `difficult` out)."""
    x = self.optional_number(s, name, where)
    return bool(x) if x is not None else False

  def vector(self, v: Any, n: int, where: str) -> np.ndarray:
    if not isinstance(v, np.ndarray) or v.dtype.kind not in "biuf":
      raise self.error(where, f"expected {n} numbers, got {_describe(v)}")
    if v.size != n:
      raise self.error(where, f"expected {n} numbers, got {_describe(v)}")
    out = v.astype(np.float64).ravel()
    if not np.all(np.isfinite(out)):
      raise self.error(where, f"expected finite numbers, got {out.tolist()}")
    return out

  def image_size(self, rec: dict) -> tuple[int, int, int]:
    """(width, height, depth) from `imgsize` = [w h d] (or [w h]), else from the `size` struct."""
    v = self.get(rec, "imgsize")
    if not _empty(v):
      if not isinstance(v, np.ndarray) or v.size not in (2, 3):
        raise self.error("record.imgsize", f"expected [width height depth], got {_describe(v)}")
      size = self.vector(v, v.size, "record.imgsize")
      dims = (size[0], size[1], size[2] if size.size == 3 else 3.0)
      where = "record.imgsize"
    else:
      s = self.get(rec, "size")
      if _empty(s):
        raise self.error("record.imgsize", "missing (neither 'imgsize' nor a 'size' struct)")
      s = self.struct(s, "record.size")
      depth = self.optional_number(s, "depth", "record.size")
      dims = (self.field_number(s, "width", "record.size"), self.field_number(s, "height", "record.size"),
              3.0 if depth is None else depth)
      where = "record.size"
    if any(d != int(d) or d < 1 or d > 1e6 for d in dims):
      raise self.error(where, f"expected positive integer width, height, depth, got {list(dims)}")
    return int(dims[0]), int(dims[1]), int(dims[2])

  def bbox(self, obj: dict, where: str) -> np.ndarray:
    """The object box, 1-based inclusive [xmin ymin xmax ymax] -> continuous (x1, y1, x2, y2)."""
    v = self.get(obj, "bbox")
    if not _empty(v):
      b = self.vector(v, 4, f"{where}.bbox")
      field = "bbox"
    else:
      s = self.get(obj, "bndbox")
      if _empty(s):
        raise self.error(f"{where}.bbox", "missing (neither 'bbox' nor a 'bndbox' struct)")
      s = self.struct(s, f"{where}.bndbox")
      b = np.array([self.field_number(s, k, f"{where}.bndbox") for k in ("xmin", "ymin", "xmax", "ymax")])
      field = "bndbox"
    if b[2] < b[0] or b[3] < b[1]:
      raise self.error(f"{where}.{field}", f"empty box {b.tolist()} (need xmax >= xmin and ymax >= ymin)")
    if np.any(np.abs(b) > 1e6):
      raise self.error(f"{where}.{field}", f"implausible box {b.tolist()}")
    # Pixel i (1-based) spans [i - 1, i): the first pixel's left edge and the last pixel's right edge.
    return np.array([b[0] - 1.0, b[1] - 1.0, b[2], b[3]])

  def viewpoint(self, obj: dict, where: str) -> Viewpoint | None:
    v = self.get(obj, "viewpoint")
    if _empty(v):
      return None
    where = f"{where}.viewpoint"
    vp = self.struct(v, where)
    distance = self.optional_number(vp, "distance", where)
    distance = 0.0 if distance is None else distance
    if distance < 0:
      raise self.error(f"{where}.distance", f"negative distance {distance}")
    if distance > 0:
      angles = [self.field_number(vp, k, where) for k in ("azimuth", "elevation", "theta")]
      focal = self.field_number(vp, "focal", where)
      viewport = self.field_number(vp, "viewport", where)
      px = self.field_number(vp, "px", where)
      py = self.field_number(vp, "py", where)
      for name, x in (("focal", focal), ("viewport", viewport)):
        if x <= 0:
          raise self.error(f"{where}.{name}", f"must be positive, got {x}")
      # A focal length under one pixel (focal 1e-300, say) is no camera: the labels would be ~1e300.
      if abs(px) > 1e7 or abs(py) > 1e7 or not 1 <= focal * viewport <= 1e9 or distance > 1e9:
        raise self.error(where, f"implausible camera (focal {focal}, viewport {viewport}, px {px}, "
                         f"py {py}, distance {distance})")
      az, el, th = (math.radians(a) for a in angles)
      # MATLAB puts 1-based pixel i's centre at i, the project at i - 0.5.
      return Viewpoint(azimuth=az, elevation=el, theta=th, distance=distance, focal=focal,
                       viewport=viewport, px=px - 0.5, py=py - 0.5, coarse=False)
    # No alignment: fall back to the coarse angles (or the fine fields if only those are filled in).
    az = self.optional_number(vp, "azimuth_coarse", where)
    el = self.optional_number(vp, "elevation_coarse", where)
    if az is None or el is None:
      az = self.optional_number(vp, "azimuth", where)
      el = self.optional_number(vp, "elevation", where)
    if az is None or el is None:
      return None
    th = self.optional_number(vp, "theta", where)
    return Viewpoint(azimuth=math.radians(az), elevation=math.radians(el),
                     theta=math.radians(th) if th is not None else 0.0, coarse=True)

  def cad_index(self, obj: dict, where: str, required: bool) -> int:
    x = self.optional_number(obj, "cad_index", where)
    if x is None:
      if required:
        raise self.error(f"{where}.cad_index", "missing or empty for an object with a viewpoint")
      return 0
    if x != int(x) or x < (1 if required else 0) or x > 1e6:
      raise self.error(f"{where}.cad_index", f"expected a positive integer, got {x}")
    return int(x)

  def pascal3d_object(self, obj: dict, index: int, category: str, where: str) -> Pascal3dObject:
    bbox = self.bbox(obj, where)
    vp = self.viewpoint(obj, where)
    cad_index = self.cad_index(obj, where, required=vp is not None and vp.has_camera)
    return Pascal3dObject(index=index, category=category, bbox=bbox, viewpoint=vp, cad_index=cad_index,
                          truncated=self.flag(obj, "truncated", where),
                          occluded=self.flag(obj, "occluded", where),
                          difficult=self.flag(obj, "difficult", where))
