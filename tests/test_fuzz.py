"""Property-based fuzzing (hypothesis) of the CAD mesh parsers, the Pascal3D+ annotation parser and geometry.

Parsers: whatever the input (random bytes, or a valid file truncated, with bytes flipped, NaN/inf/huge
numbers or out-of-range indices put in, counts changed, lines dropped or doubled), `mesh_io.load_mesh` and
`pascal3d_annotations.read_annotation` either return a valid result or raise our own error (MeshError /
AnnotationError) naming the file; any other exception fails the test, and so does a hang: every example
runs under a SIGALRM time limit (`_time_limit`) besides hypothesis' deadline, because a deadline is only
checked after the example returns. "Valid" is checked, not assumed: a loaded mesh has finite vertices,
in-range faces and the normalisation's bounding radius 0.5; a record's boxes are finite and non-empty and
every posed object's labels are finite.

Geometry: round trips (quaternion <-> matrix, viewpoint <-> rotation, anchor encode/decode, translation
grid encode/decode, camera <-> crop translation), ranges (geodesics in [0, 180] degrees, unit quaternions
with w >= 0, angles in their documented intervals) and no NaN for finite input, in float32 (the training
dtype) with float32 tolerances. Functions are jitted once per shape, so each example is one dispatch.

What this fuzzing found (each is now a plain regression case in the bad-input catalogue,
tests/test_bad_inputs.py): an OFF face index beyond int64 raised OverflowError; a .mat struct whose header
claims millions of elements made scipy allocate them (seconds and gigabytes) before failing; one flipped
byte in a .mat data element's type code crashed the whole process with a segmentation fault inside
scipy's reader, and so did (found by a longer run of the same byte flips, 10^4 files) a dimensions element
shortened to 3 bytes; `mesh_io.mat_structure_problem` now checks the structure before scipy reads it.

Determinism: `derandomize=True` and no example database, so CI runs the same cases every time. The number
of generated cases is counted (`_CASES`) and printed at the end of the module ("test_fuzz: N fuzz cases").
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import math
import pathlib
import re
import signal

import hypothesis
import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.io
import trimesh

from disent_jax import geometry as g
from disent_jax.cad import mesh_io
from disent_jax.cad import model as model_lib
from disent_jax.datasets import pascal3d_annotations as ann
from disent_jax.errors import AnnotationError, MeshError

import _helpers

# Examples generated per test function (test name -> count), reported at the end of the module, and how
# the parser cases ended ('<test> ok' / '<test> error'), to show that both outcomes are exercised.
_CASES: collections.Counter = collections.Counter()
_OUTCOMES: collections.Counter = collections.Counter()


def _settings(max_examples: int, deadline_s: float | None = 5.0) -> hypothesis.settings:
  """Deterministic settings: derandomised, no example database, a generous per-example deadline (the CI
  machines are shared; the real guard against hangs is `_time_limit`)."""
  return hypothesis.settings(
      max_examples=max_examples, derandomize=True, database=None, print_blob=False,
      deadline=None if deadline_s is None else datetime.timedelta(seconds=deadline_s),
      suppress_health_check=[hypothesis.HealthCheck.too_slow, hypothesis.HealthCheck.data_too_large,
                             hypothesis.HealthCheck.filter_too_much])


class _Hang(BaseException):
  """Raised by the alarm; a BaseException so that the parsers' `except Exception` cannot swallow it."""


def _flip_byte(path: pathlib.Path, flip: tuple[int, int] | None) -> None:
  """XORs the byte at position flip[0] (modulo the file size) with flip[1]; None leaves the file as it is."""
  if flip is None:
    return
  data = bytearray(path.read_bytes())
  data[flip[0] % len(data)] ^= flip[1]
  path.write_bytes(bytes(data))


@contextlib.contextmanager
def _time_limit(seconds: float):
  """Fails the example if the body runs longer than `seconds` (wall clock, SIGALRM; main thread only)."""
  def on_alarm(signum, frame):
    raise _Hang(f"still running after {seconds} s: the parser hangs")
  previous = signal.signal(signal.SIGALRM, on_alarm)
  signal.setitimer(signal.ITIMER_REAL, seconds)
  try:
    yield
  finally:
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


def _count(name: str) -> None:
  _CASES[name] += 1


@pytest.fixture(scope="module", autouse=True)
def _report_case_count(request):
  yield
  total = sum(_CASES.values())
  detail = ", ".join(f"{k} {v}" for k, v in sorted(_CASES.items()))
  outcomes = ", ".join(f"{k} {v}" for k, v in sorted(_OUTCOMES.items()))
  line = f"test_fuzz: {total} fuzz cases run ({detail}); parser outcomes: {outcomes}"
  reporter = request.config.pluginmanager.get_plugin("terminalreporter")
  capture = request.config.pluginmanager.get_plugin("capturemanager")
  if reporter is None or capture is None:
    print(line)
    return
  with capture.global_and_fixture_disabled():  # Output capture would otherwise swallow the line.
    reporter.write_line("")
    reporter.write_line(line)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> pathlib.Path:
  """A module-wide scratch folder (hypothesis examples cannot use the function-scoped tmp_path)."""
  return tmp_path_factory.mktemp("fuzz")


# ---------------------------------------------------------------------------------------------------------
# (a) Mesh files.

_BOX_V, _BOX_F = _helpers.box_mesh((0.5, 0.4, 0.3), (0.1, -0.2, 0.05))


def _off_plain() -> bytes:
  lines = ["OFF", f"{len(_BOX_V)} {len(_BOX_F)} 0"] + [f"{a:.5f} {b:.5f} {c:.5f}" for a, b, c in _BOX_V]
  return ("\n".join(lines + [f"3 {a} {b} {c}" for a, b, c in _BOX_F]) + "\n").encode()


def _off_quirky() -> bytes:
  """Real-world quirks at once: BOM, CRLF, comments, blank lines, trailing spaces, ModelNet's one-line
  'OFF<nv> <nf> 0' header, quads and per-face colours."""
  v = _BOX_V
  quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
  lines = [f"OFF{len(v)} {len(quads)} 0  ", "# a comment", ""]
  lines += [f"{a:.5f} {b:.5f} {c:.5f}   " for a, b, c in v]
  lines += [f"4 {a} {b} {c} {d} 255 0 0" for a, b, c, d in quads]
  return b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\r\n"


def _coff() -> bytes:
  lines = ["COFF", f"{len(_BOX_V)} {len(_BOX_F)} 0"]
  lines += [f"{a:.5f} {b:.5f} {c:.5f} 10 20 30 255" for a, b, c in _BOX_V]
  return ("\n".join(lines + [f"3 {a} {b} {c}" for a, b, c in _BOX_F]) + "\n").encode()


def _obj() -> bytes:
  lines = ["# exported", "o box"] + [f"v {a:.5f} {b:.5f} {c:.5f}" for a, b, c in _BOX_V]
  lines += ["vt 0 0", "vt 1 0", "vt 0 1", "vn 0 0 1"]
  lines += [f"f {a + 1}/1/1 {b + 1}/2/1 {c + 1}/3/1" for a, b, c in _BOX_F[:6]]
  lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in _BOX_F[6:]]
  return ("\n".join(lines) + "\n").encode()


def _ply(encoding: str) -> bytes:
  mesh = trimesh.Trimesh(_BOX_V, _BOX_F, process=False)
  return trimesh.exchange.ply.export_ply(mesh, encoding=encoding)


# (name, extension, bytes) of the valid files the mutations start from.
_SEEDS = [("off_plain", ".off", _off_plain()), ("off_quirky", ".off", _off_quirky()),
          ("coff", ".off", _coff()), ("obj", ".obj", _obj()), ("ply_ascii", ".ply", _ply("ascii")),
          ("ply_binary", ".ply", _ply("binary"))]

# Replacement tokens: the numbers that break parsers (NaN, inf, overflow, underflow, huge or negative
# indices and counts, int64 and int32 limits) and syntax junk (comment, line breaks, NUL, non-UTF-8).
_TOKENS = [b"nan", b"NaN", b"inf", b"-inf", b"1e308", b"-1e308", b"1e309", b"1e-320", b"5e-324",
           b"99999999999999999999", b"-99999999999999999999", b"9223372036854775808", b"2147483648",
           b"-1", b"-9", b"0", b"1", b"2", b"3", b"4", b"8", b"65536", b"1.5", b"-0", b"1_0", b"0x10",
           b"x", b"", b"#", b"\r", b"\n", b"\x00", b"\xff\xfe", b"   ", b"3 0 1 2", b"OFF"]

_INDEX_TOKENS = [b"-1", b"-9", b"8", b"65536", b"2147483648", b"9223372036854775807", b"9223372036854775808",
                 b"99999999999999999999", b"-99999999999999999999", b"1_0", b"3.0"]
_NUMBER_TOKENS = [b"nan", b"-inf", b"1e308", b"-1e308", b"1e309", b"1e-320", b"5e-324", b"1e200", b"-0"]

# Positions are drawn as integers and taken modulo the length: hypothesis draws floats in [0, 1] mostly at
# the ends (0, 1, 0.5, tiny), which would mutate the header and the last line over and over.
_pos = st.integers(0, 2 ** 20)
_ops = st.one_of(
    st.tuples(st.just("truncate"), _pos),
    st.tuples(st.just("flip"), _pos, st.integers(1, 255)),
    st.tuples(st.just("insert"), _pos, st.sampled_from(_TOKENS)),
    st.tuples(st.just("token"), _pos, st.sampled_from(_TOKENS)),
    # A token of the last 40% of the file (face lines in OFF/OBJ/ASCII PLY) replaced by an index that is
    # negative, out of range, or beyond int32/int64; and a coordinate replaced by NaN, inf, over- or
    # underflowing numbers. Their own ops, because hypothesis' derandomised draws would rarely pair the
    # general token op with the right token and position.
    st.tuples(st.just("tail_token"), _pos, st.sampled_from(_INDEX_TOKENS)),
    st.tuples(st.just("token"), _pos, st.sampled_from(_NUMBER_TOKENS)),
    st.tuples(st.just("drop_line"), _pos),
    st.tuples(st.just("double_line"), _pos),
    st.tuples(st.just("counts"), st.sampled_from(_TOKENS), st.sampled_from(_TOKENS)),
)


def _mutate(data: bytes, op: tuple) -> bytes:
  """One mutation; positions are taken modulo the file's length so that every op applies to every seed."""
  kind = op[0]
  if kind == "counts":  # Rewrite the element counts of an OFF or PLY header.
    data = re.sub(rb"^(OFF\s*\n?\s*)\d+ \d+", lambda m: m.group(1) + op[1] + b" " + op[2], data, count=1)
    return re.sub(rb"element (vertex|face) \d+", lambda m: b"element " + m.group(1) + b" " + op[1], data,
                  count=1)
  if kind == "truncate":
    return data[:op[1] % (len(data) + 1)]
  if not data:
    return data
  pos = op[1] % len(data)
  if kind == "flip":
    return data[:pos] + bytes([data[pos] ^ op[2]]) + data[pos + 1:]
  if kind == "insert":
    return data[:pos] + op[2] + data[pos:]
  if kind in ("token", "tail_token"):  # Replace a whitespace-delimited token (a number, mostly).
    spans = [m.span() for m in re.finditer(rb"\S+", data)]
    if kind == "tail_token":
      spans = spans[int(0.6 * len(spans)):]
    if not spans:
      return data
    a, b = spans[op[1] % len(spans)]
    return data[:a] + op[2] + data[b:]
  lines = data.split(b"\n")
  i = op[1] % len(lines)
  if kind == "drop_line":
    return b"\n".join(lines[:i] + lines[i + 1:])
  if kind == "double_line":
    return b"\n".join(lines[:i + 1] + lines[i:])
  raise AssertionError(kind)


def _check_mesh(mesh: trimesh.Trimesh, where: str) -> None:
  """What a returned mesh promises: finite, in range, normalised (bounding radius 0.5 about the origin)."""
  v, f = np.asarray(mesh.vertices), np.asarray(mesh.faces)
  assert v.dtype == np.float64 and v.ndim == 2 and v.shape[1] == 3 and len(v), where
  assert np.issubdtype(f.dtype, np.integer) and f.ndim == 2 and f.shape[1] == 3 and len(f), where
  assert f.min() >= 0 and f.max() < len(v), where
  assert np.isfinite(v).all(), where
  used = v[np.unique(f)]
  radius = float(np.sqrt((used ** 2).sum(axis=1)).max())
  assert radius == pytest.approx(model_lib.NORMALIZED_RADIUS, rel=1e-6), (where, radius)


def _load_checked(path: pathlib.Path, what: str, **kwargs) -> trimesh.Trimesh | None:
  """Loads under the time limit; a MeshError must name the file, a mesh must be valid."""
  try:
    with _time_limit(20):
      mesh = mesh_io.load_mesh(path, **kwargs)
  except MeshError as e:
    assert str(path) in str(e), str(e)
    _OUTCOMES[f"{what} error"] += 1
    return None
  _check_mesh(mesh, str(path))
  _OUTCOMES[f"{what} ok"] += 1
  return mesh


@pytest.fixture(scope="module", autouse=True)
def _warm_up(tmp_path_factory):
  """Loads every seed once, so lazy imports inside trimesh/scipy do not count against a deadline, and
  checks that the seeds themselves are valid (otherwise the mutations would test nothing)."""
  folder = tmp_path_factory.mktemp("seeds")
  for name, ext, data in _SEEDS:
    path = folder / f"{name}{ext}"
    path.write_bytes(data)
    assert mesh_io.load_mesh(path).faces.shape[0] >= 6, name


# One hypothesis run per seed file: with the seed drawn inside one run, the derandomised search
# correlates the seed with the mutation and leaves combinations (a huge index in a plain OFF face) untried.
@pytest.mark.parametrize("seed", _SEEDS, ids=[name for name, _, _ in _SEEDS])
@_settings(max_examples=100)
@hypothesis.given(ops=st.lists(_ops, min_size=1, max_size=4))
def test_mutated_mesh_files_load_or_raise_mesh_error(work, seed, ops):
  _count("mutated_mesh_files")
  name, ext, data = seed
  for op in ops:
    data = _mutate(data, op)
  path = work / f"mutated_{name}{ext}"
  path.write_bytes(data)
  _load_checked(path, "mesh")


_PREFIXES = [b"", b"OFF\n", b"OFF\n3 1 0\n", b"COFF\n", b"ply\nformat ascii 1.0\n",
             b"ply\nformat binary_little_endian 1.0\nelement vertex 3\nproperty float x\n",
             b"v 0 0 0\nv 1 0 0\n", b"MATLAB 5.0 MAT-file"]


@_settings(max_examples=250)
@hypothesis.given(ext=st.sampled_from([".off", ".obj", ".ply", ".mat"]), prefix=st.sampled_from(_PREFIXES),
                  body=st.binary(max_size=600))
def test_random_bytes_raise_mesh_error(work, ext, prefix, body):
  _count("random_bytes")
  path = work / f"random{ext}"
  path.write_bytes(prefix + body)
  _load_checked(path, "bytes", **({"index": 1} if ext == ".mat" else {}))


# Pascal3D+ CAD .mat files: a (1, N) struct array with `vertices` and `faces` (1-based), written the way
# scipy.io.savemat writes MATLAB structs, with each field drawn from good and bad values.
_TET_V = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float64)
_TET_F = np.array([[1, 2, 3], [1, 2, 4], [1, 3, 4], [2, 3, 4]])


def _struct_value() -> np.ndarray:
  s = np.zeros((1, 1), dtype=[("vertices", object), ("faces", object)])
  s[0, 0] = (_TET_V, _TET_F)
  return s


def _cell() -> np.ndarray:
  c = np.empty((1, 2), object)
  c[0, 0], c[0, 1] = _TET_V, "x"
  return c


_MAT_VERTICES = {
    "good": _TET_V, "int8": _TET_V.astype(np.int8), "single": _TET_V.astype(np.float32),
    "huge": _TET_V * 1e300, "opposite_huge": _TET_V * 1e308 - 5e307, "tiny": _TET_V * 1e-300,
    "denormal": _TET_V * 5e-324, "offset": _TET_V + 1e17, "nan": np.where(_TET_V == 1, np.nan, _TET_V),
    "inf": np.where(_TET_V == 1, np.inf, _TET_V), "two_columns": _TET_V[:, :2], "transposed": _TET_V.T,
    "flat": np.r_[_TET_V[:3], [[1, 1, 0]]], "empty": np.zeros((0, 0)), "string": "vertices",
    "complex": _TET_V + 1j, "logical": _TET_V.astype(bool), "struct": _struct_value(), "cell": _cell(),
    "row": _TET_V.reshape(1, -1),
}
_MAT_FACES = {
    "good": _TET_F, "uint8": _TET_F.astype(np.uint8), "uint16": _TET_F.astype(np.uint16),
    "double": _TET_F.astype(np.float64), "zero_based": _TET_F - 1, "negative": -_TET_F,
    "too_high": _TET_F + 4, "huge_double": _TET_F * 1e30,
    "uint64_max": np.full((1, 3), 2 ** 64 - 1, np.uint64),
    "int64_max": np.full((1, 3), 2 ** 63 - 1, np.int64), "nan": np.where(_TET_F == 1, np.nan, _TET_F),
    "fraction": _TET_F + 0.5, "four_columns": np.c_[_TET_F, _TET_F[:, :1]], "one_face_row": _TET_F[:1],
    "empty": np.zeros((0, 0)), "string": "faces", "complex": _TET_F + 0j, "logical": _TET_F > 1,
    "struct": _struct_value(), "cell": _cell(), "flat_vector": _TET_F.ravel()[None],
}


_mat_models = st.one_of(  # Mostly one bad field at a time, so that the geometry checks are reached too.
    st.just(("good", "good")),
    st.tuples(st.sampled_from(sorted(_MAT_VERTICES)), st.just("good")),
    st.tuples(st.just("good"), st.sampled_from(sorted(_MAT_FACES))),
    st.tuples(st.sampled_from(sorted(_MAT_VERTICES)), st.sampled_from(sorted(_MAT_FACES))))


@_settings(max_examples=250)
@hypothesis.given(models=st.lists(_mat_models, min_size=0, max_size=3),
                  var_named_after_file=st.booleans(), extra_fields=st.booleans(), compress=st.booleans(),
                  flip=st.one_of(st.none(), st.tuples(_pos, st.integers(1, 255))),
                  index=st.integers(0, 3))
def test_cad_mat_structs_load_or_raise_mesh_error(work, models, var_named_after_file, extra_fields, compress,
                                                  flip, index):
  _count("cad_mat_structs")
  names = ["vertices", "faces"] + (["keypoints", "grid"] if extra_fields else [])
  struct = np.zeros((1, len(models)), dtype=[(n, object) for n in names])
  for k, (v, f) in enumerate(models):
    struct[0, k]["vertices"], struct[0, k]["faces"] = _MAT_VERTICES[v], _MAT_FACES[f]
    if extra_fields:
      struct[0, k]["keypoints"], struct[0, k]["grid"] = np.zeros((0, 0)), np.ones((2, 2, 2), np.uint8)
  path = work / "chair.mat"
  scipy.io.savemat(path, {"chair" if var_named_after_file else "models": struct, "other": np.arange(3)},
                   do_compression=compress)
  _flip_byte(path, flip)
  try:
    with _time_limit(20):
      entries = mesh_io.read_pascal3d_cad_mat(path)
  except MeshError as e:
    assert str(path) in str(e), str(e)
    _OUTCOMES["mat error"] += 1
    return
  assert flip is not None or len(entries) == len(models)
  for v, f in entries:  # The structure is checked here; geometry by load_mesh below.
    assert v.dtype == np.float64 and v.shape[1:] == (3,) and f.dtype == np.int64 and f.shape[1:] == (3,)
  _load_checked(path, "mat", **({"index": index} if index else {}))


# ---------------------------------------------------------------------------------------------------------
# (b) Pascal3D+ annotation files.

_EMPTY = np.zeros((0, 0))


def _num(x) -> np.ndarray:
  return np.array([[x]], np.float64)


def _struct_array(items: list[dict]) -> np.ndarray:
  names: list[str] = []
  for item in items:
    names += [k for k in item if k not in names]
  out = np.zeros((1, len(items)), dtype=[(n, object) for n in names] or [("_", object)])
  for i, item in enumerate(items):
    for n in names:
      out[0, i][n] = item.get(n, _EMPTY)
  return out


def _struct(**fields) -> np.ndarray:
  return _struct_array([fields])


def _good_viewpoint() -> dict:
  return {"azimuth": _num(30.0), "elevation": _num(10.0), "theta": _num(2.0), "distance": _num(5.0),
          "focal": _num(1.0), "viewport": _num(3000.0), "px": _num(40.0), "py": _num(30.0),
          "azimuth_coarse": _num(30.0), "elevation_coarse": _num(15.0)}


# Placeholders in an object dict for its viewpoint and bndbox structs, built at the end from the (mutated)
# field dicts unless an object-level mutation replaced them.
_VP, _BB = "<viewpoint>", "<bndbox>"


def _good_object(cls: str = "aeroplane") -> dict:
  return {"class": cls, "bbox": np.array([[5.0, 6.0, 30.0, 20.0]]), "bndbox": _BB, "truncated": _num(0),
          "occluded": _num(0), "difficult": _num(0), "cad_index": _num(1), "viewpoint": _VP}


def _good_bndbox() -> dict:
  return {"xmin": _num(5.0), "ymin": _num(6.0), "xmax": _num(30.0), "ymax": _num(20.0)}


def _nested(depth: int) -> np.ndarray:
  value = _num(1)
  for _ in range(depth):
    value = _struct(a=value)
  return value


_BAD_VALUES = {
    "delete": None, "empty": _EMPTY, "empty_row": np.zeros((1, 0)), "text": "abc", "blank": " ",
    "nan": _num(np.nan), "inf": _num(np.inf), "-inf": _num(-np.inf), "zero": _num(0), "negative": _num(-7),
    "huge": _num(1e300), "tiny": _num(1e-300), "fraction": _num(2.5), "pair": np.array([[1.0, 2.0]]),
    "logical": np.array([[True]]), "complex": np.array([[1 + 2j]]), "int64_max": np.array([[2 ** 63 - 1]]),
    "uint8_quad": np.array([[1, 2, 3, 4]], np.uint8), "quad": np.array([[40.0, 30.0, 10.0, 5.0]]),
    "nan_quad": np.array([[np.nan, 1.0, 2.0, 3.0]]), "struct": _struct(a=_num(1)),
    "struct_pair": _struct_array([{"a": _num(1)}, {"a": _num(2)}]), "cell": np.array([["x", "y"]], object),
    "nested_deep": _nested(20), "matrix": np.ones((3, 3)), "huge_depth": np.array([[64.0, 48.0, 1e300]]),
    "huge_quad": np.array([[1.0, 2.0, 1e300, 4.0]]), "big_negative_quad": np.array([[-9e5, -9e5, 9e5, 9e5]]),
}
_BAD_VALUES["complex_quad"] = np.array([[1 + 1j, 2.0, 30.0, 20.0]])
# Values that are plausible mistakes for each kind of field, so that most mutations test that field's
# checks rather than a type error any value would trigger.
_SCALAR = ["delete", "empty", "text", "nan", "inf", "-inf", "zero", "negative", "huge", "tiny", "fraction",
           "pair", "logical", "complex", "int64_max", "struct"]
_VECTOR = ["delete", "empty", "empty_row", "text", "quad", "nan_quad", "huge_quad", "big_negative_quad",
           "uint8_quad", "complex_quad", "pair", "huge_depth", "matrix", "struct", "cell"]
_STRING = ["delete", "empty", "blank", "text", "zero", "cell", "struct", "logical"]
_STRUCT = ["delete", "empty", "empty_row", "text", "zero", "struct", "struct_pair", "cell", "nested_deep",
           "matrix"]
_RECORD_FIELDS = {"filename": _STRING, "imgname": _STRING, "imgsize": _VECTOR, "size": _STRUCT,
                  "database": _STRING, "objects": _STRUCT}
_OBJECT_FIELDS = {"class": _STRING, "bbox": _VECTOR, "bndbox": _STRUCT, "truncated": _SCALAR,
                  "occluded": _SCALAR, "difficult": _SCALAR, "cad_index": _SCALAR, "viewpoint": _STRUCT}
_VIEWPOINT_FIELDS = {name: _SCALAR for name in _good_viewpoint()}
_BNDBOX_FIELDS = {name: _SCALAR for name in _good_bndbox()}


def _field_mutation(level: str, fields: dict[str, list[str]]):
  return st.sampled_from(sorted(fields)).flatmap(
      lambda f: st.tuples(st.just(level), st.just(f), st.sampled_from(fields[f])))


_mutations = st.one_of(
    _field_mutation("record", _RECORD_FIELDS),
    _field_mutation("object", _OBJECT_FIELDS),
    _field_mutation("viewpoint", _VIEWPOINT_FIELDS),
    _field_mutation("bndbox", _BNDBOX_FIELDS),
    st.tuples(st.just("nan_viewpoint"), st.just(""), st.just("")),
    st.tuples(st.just("reversed_bbox"), st.sampled_from(["bbox", "bndbox"]), st.just("")),
    st.tuples(st.just("coarse_only"), st.just(""), st.just("")),
)


def _set(d: dict, key: str, value) -> None:
  """d[key] = value, or delete the key for None."""
  if value is None:
    d.pop(key, None)
  else:
    d[key] = value


def _build_record(n_objects: int, mutations: list[tuple], targets: list[int]) -> np.ndarray:
  """A record with `n_objects` objects (every third one a person), after the mutations (object i =
  target % n_objects); without mutations every aeroplane has a fine viewpoint with a camera."""
  rec: dict = {"filename": "2008_000100.jpg", "imgsize": np.array([[64.0, 48.0, 3.0]]), "database": "VOC"}
  objects = [_good_object("aeroplane" if i % 3 != 2 else "person") for i in range(n_objects)]
  viewpoints = [_good_viewpoint() for _ in range(n_objects)]
  bndboxes = [_good_bndbox() for _ in range(n_objects)]
  objects_value = "built"
  for (where, field, value_name), target in zip(mutations, targets):
    value = _BAD_VALUES.get(value_name)
    if where == "record":
      if field == "objects":
        objects_value = value_name
      else:
        _set(rec, field, value)
      continue
    if not n_objects:
      continue
    i = target % n_objects
    if where == "object":
      _set(objects[i], field, value)
    elif where == "viewpoint":
      _set(viewpoints[i], field, value)
    elif where == "bndbox":
      objects[i].pop("bbox", None)  # So that the bndbox struct is what gets read.
      _set(bndboxes[i], field, value)
    elif where == "nan_viewpoint":
      for k in ("azimuth", "elevation", "theta", "azimuth_coarse", "elevation_coarse"):
        viewpoints[i][k] = _num(np.nan)
    elif where == "reversed_bbox":
      if field == "bbox":
        objects[i]["bbox"] = np.array([[30.0, 20.0, 5.0, 6.0]])
      else:
        objects[i].pop("bbox", None)
        bndboxes[i] = {"xmin": _num(30.0), "ymin": _num(20.0), "xmax": _num(5.0), "ymax": _num(6.0)}
    elif where == "coarse_only":
      viewpoints[i]["distance"] = _num(0.0)
  for obj, vp, bb in zip(objects, viewpoints, bndboxes):
    if isinstance(obj.get("viewpoint"), str) and obj["viewpoint"] == _VP:
      obj["viewpoint"] = _struct(**vp) if vp else _EMPTY
    if isinstance(obj.get("bndbox"), str) and obj["bndbox"] == _BB:
      obj["bndbox"] = _struct(**bb) if bb else _EMPTY
  if objects_value == "built":
    rec["objects"] = _struct_array(objects) if objects else _EMPTY
  elif objects_value != "delete":
    rec["objects"] = _BAD_VALUES[objects_value]
  return _struct(**rec)


def _check_record(rec: ann.Pascal3dRecord, path: pathlib.Path) -> None:
  """What a parsed record promises: sane sizes, finite non-empty boxes, finite viewpoints and labels."""
  assert 1 <= rec.width <= 1e6 and 1 <= rec.height <= 1e6 and 1 <= rec.depth <= 1e6 and rec.filename
  norm = model_lib.Normalization(center=(0.01, -0.02, 0.03), scale=1.2)
  for obj in rec.objects:
    b = obj.bbox
    assert b.shape == (4,) and np.isfinite(b).all() and b[2] > b[0] and b[3] > b[1], (path, b)
    assert obj.cad_index >= 0
    vp = obj.viewpoint
    if vp is not None:
      values = [vp.azimuth, vp.elevation, vp.theta, vp.distance, vp.focal, vp.viewport, vp.px, vp.py]
      assert all(math.isfinite(x) for x in values), (path, vp)
    if obj.has_pose:
      assert vp.focal * vp.viewport >= 1, (path, vp)  # A focal length under one pixel is no camera.
      labels = ann.pose_labels(obj, norm)
      for name in ("rotation", "quaternion", "viewpoint", "intrinsics", "translation_camera", "translation"):
        assert np.isfinite(getattr(labels, name)).all(), (path, name, getattr(labels, name))
      np.testing.assert_allclose(labels.rotation @ labels.rotation.T, np.eye(3), atol=1e-9)


@_settings(max_examples=250)
@hypothesis.given(n_objects=st.integers(0, 3), mutations=st.lists(_mutations, min_size=1, max_size=4),
                  targets=st.lists(st.integers(0, 2), min_size=4, max_size=4),
                  compress=st.booleans(), flip=st.one_of(st.none(), st.tuples(_pos, st.integers(1, 255))))
def test_mutated_annotations_parse_or_raise_annotation_error(work, n_objects, mutations, targets, compress,
                                                              flip):
  _count("annotations")
  path = work / "aeroplane_pascal" / "2008_000100.mat"
  path.parent.mkdir(parents=True, exist_ok=True)
  record = _build_record(n_objects, mutations, targets)
  scipy.io.savemat(str(path), {"record": record}, do_compression=compress)
  _flip_byte(path, flip)
  try:
    with _time_limit(20):
      rec = ann.read_annotation(path)
  except AnnotationError as e:
    assert str(path) in str(e), str(e)
    _OUTCOMES["annotation error"] += 1
    return
  _check_record(rec, path)
  _OUTCOMES[f"annotation ok ({'posed' if rec.posed_objects else 'no pose'})"] += 1


def test_annotation_seed_record_is_valid(tmp_path):
  """The unmutated record parses with a pose (else the mutations above would test nothing)."""
  path = tmp_path / "aeroplane_pascal" / "2008_000100.mat"
  path.parent.mkdir()
  scipy.io.savemat(str(path), {"record": _build_record(3, [], [])})
  rec = ann.read_annotation(path)
  assert len(rec.objects) == 2 and rec.num_other_class == 1 and all(o.has_pose for o in rec.objects)
  _check_record(rec, path)


# ---------------------------------------------------------------------------------------------------------
# (c) Geometry.

_N = 8  # Rotations per example: a fixed batch shape, so every jitted function compiles once.
_f32 = st.floats(-1.0, 1.0, width=32, allow_nan=False)
_quats = hnp.arrays(np.float32, (_N, 4), elements=_f32).filter(
    lambda q: bool(np.all(np.linalg.norm(q.astype(np.float64), axis=-1) > 0.05)))
_any_quats = hnp.arrays(np.float32, (_N, 4), elements=st.floats(-1e3, 1e3, width=32))
_any_matrices = hnp.arrays(np.float32, (_N, 3, 3), elements=st.floats(-10.0, 10.0, width=32))

_quat_to_matrix = jax.jit(g.quat_to_matrix)
_matrix_to_quat = jax.jit(g.matrix_to_quat)
_geodesic_deg = jax.jit(g.geodesic_deg)
_quat_geodesic_deg = jax.jit(g.quat_geodesic_deg)
_quat_multiply = jax.jit(g.quat_multiply)
_vp_to_rot = jax.jit(g.viewpoint_to_rotation)
_rot_to_vp = jax.jit(g.rotation_to_viewpoint)
_vp_to_cam = jax.jit(g.viewpoint_to_camera_rotation)
_cam_to_vp = jax.jit(g.camera_rotation_to_viewpoint)
_encode_rotation = jax.jit(g.encode_rotation)
_decode_rotation = jax.jit(g.decode_rotation)
_to_crop = jax.jit(g.camera_to_crop_translation)
_to_camera = jax.jit(g.crop_to_camera_translation)
_axis_angle_to_quat = jax.jit(g.axis_angle_to_quat)
_quat_to_axis_angle = jax.jit(g.quat_to_axis_angle)

_ANCHORS = {n: np.asarray(g.rotation_anchors(n), np.float32) for n in (1, 2, 4, 7)}


def _unit(q: np.ndarray) -> np.ndarray:
  q = q.astype(np.float64)
  return q / np.linalg.norm(q, axis=-1, keepdims=True)


def _same_rotation(q1, q2, atol=2e-5) -> None:
  """q1 and q2 (..., 4) are the same rotation (q ~ -q)."""
  dots = np.abs(np.sum(_unit(np.asarray(q1)) * _unit(np.asarray(q2)), axis=-1))
  np.testing.assert_allclose(dots, 1.0, atol=atol)


@_settings(max_examples=120, deadline_s=None)
@hypothesis.given(q=_quats)
def test_quaternion_matrix_round_trip(q):
  _count("geometry")
  r = np.asarray(_quat_to_matrix(q), np.float64)
  assert np.isfinite(r).all()
  np.testing.assert_allclose(r @ np.swapaxes(r, -1, -2), np.broadcast_to(np.eye(3), r.shape), atol=2e-6)
  np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=5e-6)
  back = np.asarray(_matrix_to_quat(r.astype(np.float32)))
  assert np.isfinite(back).all() and np.all(back[:, 0] >= 0)
  np.testing.assert_allclose(np.linalg.norm(back.astype(np.float64), axis=-1), 1.0, atol=1e-6)
  _same_rotation(back, q)


@_settings(max_examples=120, deadline_s=None)
@hypothesis.given(q1=_quats, q2=_quats)
def test_geodesics_range_symmetry_and_agreement(q1, q2):
  _count("geometry")
  r1, r2 = _quat_to_matrix(q1), _quat_to_matrix(q2)
  d = np.asarray(_geodesic_deg(r1, r2), np.float64)
  dq = np.asarray(_quat_geodesic_deg(q1, q2), np.float64)
  assert np.isfinite(d).all() and np.isfinite(dq).all()
  assert np.all((d >= 0) & (d <= 180)) and np.all((dq >= 0) & (dq <= 180))
  np.testing.assert_allclose(d, np.asarray(_geodesic_deg(r2, r1)), atol=1e-3)
  np.testing.assert_allclose(d, dq, atol=0.05)  # float32: the matrix form loses ~1e-3 deg near 0 and 180
  assert np.all(np.asarray(_geodesic_deg(r1, r1)) < 0.05)
  assert np.all(np.asarray(_quat_geodesic_deg(q1, q1)) < 0.05)
  # The geodesic is the angle of the relative rotation.
  rel = _quat_multiply(g.quat_conjugate(g.quat_normalize(q1)), g.quat_normalize(q2))
  angle = np.degrees(np.linalg.norm(np.asarray(_quat_to_axis_angle(rel), np.float64), axis=-1))
  np.testing.assert_allclose(angle, dq, atol=0.05)


@_settings(max_examples=100, deadline_s=None)
@hypothesis.given(q=_any_quats, m1=_any_matrices, m2=_any_matrices)
def test_geodesics_of_arbitrary_finite_input_stay_in_range(q, m1, m2):
  """Garbage in (zero quaternions, non-rotation matrices): still no NaN, still in [0, 180] degrees."""
  _count("geometry")
  for d in (np.asarray(_geodesic_deg(m1, m2)), np.asarray(_quat_geodesic_deg(q, q[::-1]))):
    assert np.isfinite(d).all() and np.all((d >= 0) & (d <= 180)), d
  assert np.isfinite(np.asarray(_quat_to_matrix(q))).all()
  back = np.asarray(_matrix_to_quat(m1))
  assert np.isfinite(back).all()


def _f32(x: float) -> float:
  """x rounded to float32 (hypothesis wants float32 bounds exactly representable)."""
  return float(np.float32(x))


_angles = st.tuples(
    hnp.arrays(np.float32, (_N,), elements=st.floats(0.0, _f32(2 * math.pi), width=32, exclude_max=True)),
    hnp.arrays(np.float32, (_N,), elements=st.floats(_f32(-math.pi / 2), _f32(math.pi / 2), width=32)),
    hnp.arrays(np.float32, (_N,), elements=st.floats(_f32(-math.pi), _f32(math.pi), width=32,
                                                     exclude_min=True)))


def _angle_diff(a, b) -> np.ndarray:
  """|a - b| modulo 2 pi, in [0, pi]."""
  d = np.mod(np.asarray(a, np.float64) - np.asarray(b, np.float64), 2 * np.pi)
  return np.minimum(d, 2 * np.pi - d)


@_settings(max_examples=120, deadline_s=None)
@hypothesis.given(angles=_angles, camera=st.booleans())
def test_viewpoint_rotation_round_trip(angles, camera):
  _count("geometry")
  az, el, th = angles
  to_rot, to_vp = (_vp_to_cam, _cam_to_vp) if camera else (_vp_to_rot, _rot_to_vp)
  r = to_rot(az, el, th)
  az2, el2, th2 = (np.asarray(x, np.float64) for x in to_vp(r))
  for x in (az2, el2, th2):
    assert np.isfinite(x).all()
  eps = 1e-6
  assert np.all((az2 >= 0) & (az2 <= 2 * np.pi + eps))
  assert np.all((el2 >= -np.pi / 2 - eps) & (el2 <= np.pi / 2 + eps))
  assert np.all((th2 > -np.pi - eps) & (th2 <= np.pi + eps))
  # The angles may differ at the poles (only az +- theta is defined there), the rotation may not.
  r2 = to_rot(az2.astype(np.float32), el2.astype(np.float32), th2.astype(np.float32))
  assert np.all(np.asarray(_geodesic_deg(r, r2)) < 0.05)
  away = np.abs(el) < np.pi / 2 - 0.05
  assert np.all(_angle_diff(az2, az)[away] < 1e-3) and np.all(_angle_diff(th2, th)[away] < 1e-3)
  np.testing.assert_allclose(el2, el, atol=1e-3)


@_settings(max_examples=100, deadline_s=None)
@hypothesis.given(angles=hnp.arrays(np.float32, (3, _N), elements=st.floats(-1e4, 1e4, width=32)))
def test_viewpoint_conversions_of_any_angles_are_finite_rotations(angles):
  _count("geometry")
  r = np.asarray(_vp_to_cam(*angles), np.float64)
  assert np.isfinite(r).all()
  np.testing.assert_allclose(r @ np.swapaxes(r, -1, -2), np.broadcast_to(np.eye(3), r.shape), atol=1e-5)
  assert all(np.isfinite(np.asarray(x)).all() for x in _cam_to_vp(r.astype(np.float32)))


@_settings(max_examples=120, deadline_s=None)
@hypothesis.given(q=_quats, n=st.sampled_from(sorted(_ANCHORS)))
def test_rotation_anchor_encode_decode(q, n):
  _count("geometry")
  anchors = _ANCHORS[n]
  idx, resid = (np.asarray(x) for x in _encode_rotation(q, anchors))
  assert np.all((idx >= 0) & (idx < len(anchors)))
  assert np.isfinite(resid).all() and np.all(resid[:, 0] >= 0)
  np.testing.assert_allclose(np.linalg.norm(resid.astype(np.float64), axis=-1), 1.0, atol=1e-6)
  # The chosen anchor is (one of) the closest: |<q, q_a>| is maximal.
  dots = np.abs(_unit(q) @ anchors.astype(np.float64).T)
  np.testing.assert_allclose(dots[np.arange(_N), idx], dots.max(axis=1), atol=1e-6)
  back = np.asarray(_decode_rotation(idx, resid, anchors))
  assert np.all(back[:, 0] >= 0)
  _same_rotation(back, q)


_grids = st.builds(
    lambda lower, size, cells: g.TranslationGrid(
        lower=tuple(lower), upper=tuple(l + s for l, s in zip(lower, size)), cells=tuple(cells)),
    st.lists(st.floats(-5, 5), min_size=3, max_size=3), st.lists(st.floats(0.1, 10), min_size=3, max_size=3),
    st.lists(st.integers(1, 9), min_size=3, max_size=3))


@_settings(max_examples=100, deadline_s=None)
@hypothesis.given(grid=_grids, t=hnp.arrays(np.float32, (_N, 3), elements=st.floats(-20, 20, width=32)),
                  inside=st.booleans())
@hypothesis.example(grid=g.TranslationGrid(lower=(0.0, 0.0, 1.401298464324817e-45), upper=(1.0, 1.0, 1.0),
                                           cells=(1, 1, 1)),
                    t=np.zeros((_N, 3), np.float32), inside=False)  # a subnormal bound (see below)
def test_translation_grid_encode_decode(grid, t, inside):
  _count("geometry")
  lower, upper = np.asarray(grid.lower), np.asarray(grid.upper)
  if inside:  # Map into the grid's range, so the round trip must be exact.
    t = (lower + (t.astype(np.float64) + 20) / 40 * (upper - lower)).astype(np.float32)
  idx, resid, out = (np.asarray(x) for x in g.encode_translation(jnp.asarray(t), grid))
  assert np.all((idx >= 0) & (idx < grid.num_anchors))
  assert np.isfinite(resid).all() and np.all((resid >= 0) & (resid <= 1))
  t64 = t.astype(np.float64)
  # XLA:CPU flushes float32 subnormals to zero (FTZ/DAZ): a bound or translation below 1.2e-38 in magnitude
  # compares as 0 on device (hypothesis found lower = 1.4e-45 with t = 0), so the reference does the same.
  ftz = lambda a: np.where(np.abs(a) < np.finfo(np.float32).tiny, 0.0, a).astype(np.float32)  # noqa: E731
  outside = (ftz(t) < ftz(lower)) | (ftz(t) > ftz(upper))
  np.testing.assert_array_equal(out, np.any(outside, axis=-1))
  back = np.asarray(g.decode_translation(jnp.asarray(idx), jnp.asarray(resid), grid), np.float64)
  # Decoding gives the translation clipped to the range (out-of-range labels go to the border cells).
  tol = 1e-5 * (1 + np.abs(lower) + np.abs(upper))
  assert np.all(np.abs(back - np.clip(t64, lower, upper)) <= tol), (back, t64)
  assert np.all(np.abs(grid.centers()[idx] - back) <= grid.cell_size / 2 + tol)


@_settings(max_examples=120, deadline_s=None)
@hypothesis.given(
    xy=hnp.arrays(np.float64, (_N, 2), elements=st.floats(-50, 50)),
    z=hnp.arrays(np.float64, (_N,), elements=st.floats(0.1, 100)),
    corner=hnp.arrays(np.float64, (_N, 2), elements=st.floats(-100, 1000)),
    size=hnp.arrays(np.float64, (_N, 2), elements=st.floats(1, 500)),
    focal=hnp.arrays(np.float64, (_N, 2), elements=st.floats(10, 5000)),
    principal=hnp.arrays(np.float64, (_N, 2), elements=st.floats(-100, 1000)))
def test_camera_crop_translation_round_trip(xy, z, corner, size, focal, principal):
  _count("geometry")
  t_cam = np.concatenate([xy, z[:, None]], axis=1)
  bbox = np.concatenate([corner, corner + size], axis=1)
  k = np.zeros((_N, 3, 3))
  k[:, 0, 0], k[:, 1, 1], k[:, 0, 2], k[:, 1, 2], k[:, 2, 2] = focal[:, 0], focal[:, 1], principal[:, 0], \
      principal[:, 1], 1.0
  with jax.enable_x64(True):  # The labels are computed in float64 on the host (pascal3d_annotations).
    crop = np.asarray(_to_crop(t_cam, bbox, k))
    back = np.asarray(_to_camera(crop, bbox, k))
  assert np.isfinite(crop).all() and np.all(crop[:, 2] > 0)
  np.testing.assert_allclose(back, t_cam, rtol=1e-9, atol=1e-9)
  # And in float32, the dtype of the training pipeline: same round trip, float32 tolerance.
  crop32 = np.asarray(_to_crop(t_cam.astype(np.float32), bbox.astype(np.float32), k.astype(np.float32)))
  back32 = np.asarray(_to_camera(crop32, bbox.astype(np.float32), k.astype(np.float32)), np.float64)
  assert np.isfinite(crop32).all()
  np.testing.assert_allclose(back32, t_cam, rtol=2e-3, atol=2e-3 * np.abs(t_cam).max())


@_settings(max_examples=100, deadline_s=None)
@hypothesis.given(v=hnp.arrays(np.float32, (_N, 3), elements=st.floats(-1.0, 1.0, width=32)),
                  angle=hnp.arrays(np.float32, (_N,), elements=st.floats(0.0, _f32(3.1), width=32)))
def test_axis_angle_round_trip(v, angle):
  _count("geometry")
  norm = np.linalg.norm(v.astype(np.float64), axis=-1, keepdims=True)
  rotvec = np.where(norm > 1e-3, v / np.maximum(norm, 1e-12) * angle[:, None], 0.0).astype(np.float32)
  q = np.asarray(_axis_angle_to_quat(rotvec))
  assert np.isfinite(q).all()
  np.testing.assert_allclose(np.linalg.norm(q.astype(np.float64), axis=-1), 1.0, atol=1e-6)
  back = np.asarray(_quat_to_axis_angle(q))
  np.testing.assert_allclose(back, rotvec, atol=1e-4)
