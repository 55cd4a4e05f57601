"""Mesh reading: every format on real files, the OFF quirks, the normalisation, and one test per bad file."""

import pathlib
import time

import numpy as np
import pytest
import scipy.io
import trimesh

from disent_jax.cad import mesh_io
from disent_jax.cad import model as model_lib
from disent_jax.errors import MeshError

_CUBE_V = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], np.float64)
_CUBE_QUADS = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]


def _off_text(vertices, faces, header="OFF\n{nv} {nf} 0\n"):
  """An OFF file with a given header format; faces may be polygons."""
  out = header.format(nv=len(vertices), nf=len(faces))
  out += "".join(" ".join(f"{c:g}" for c in v) + "\n" for v in vertices)
  out += "".join(f"{len(f)} " + " ".join(map(str, f)) + "\n" for f in faces)
  return out


def _write(tmp_path, name, text):
  p = tmp_path / name
  p.write_bytes(text.encode() if isinstance(text, str) else text)
  return p


def _cube_triangles():
  return np.array([t for q in _CUBE_QUADS for t in ((q[0], q[1], q[2]), (q[0], q[2], q[3]))])


def _check_normalised(mesh, norm, raw_vertices, faces):
  """The project's normalisation: bbox centre at 0, max radius of referenced vertices 0.5, invertible."""
  ref = np.unique(np.asarray(faces).ravel())
  v = mesh.vertices[ref]
  np.testing.assert_allclose((v.min(0) + v.max(0)) / 2, 0.0, atol=1e-9)
  assert np.sqrt((v ** 2).sum(1)).max() == pytest.approx(0.5, abs=1e-12)
  np.testing.assert_allclose(mesh.vertices, norm.apply(raw_vertices), atol=1e-12)
  np.testing.assert_allclose(norm.invert(norm.apply(raw_vertices)), raw_vertices,
                             atol=1e-9 * max(1.0, np.abs(raw_vertices).max()))


# ---------------------------------------------------------------------------------------------------------
# OFF on real files.


def test_real_off_quirky_files_match_plain_reading(shared_data):
  root = shared_data / "pascal3d_cad_off"
  # chair/02: CRLF + trailing spaces; motorbike/03: bare '0' values + trailing spaces.
  for rel in ("chair/02.off", "motorbike/03.off"):
    path = root / rel
    vertices, faces = mesh_io.read_raw_mesh(path)
    lines = [ln.split() for ln in path.read_text().splitlines() if ln.strip()]
    nv, nf = int(lines[1][0]), int(lines[1][1])
    assert vertices.shape == (nv, 3) and faces.shape == (nf, 3)
    np.testing.assert_array_equal(vertices, np.array(lines[2:2 + nv], np.float64))
    np.testing.assert_array_equal(faces, np.array(lines[2 + nv:], np.int64)[:, 1:])
    assert vertices.dtype == np.float64 and faces.dtype == np.int64
  assert b"\r\n" in (root / "chair/02.off").read_bytes()


def test_real_off_normalisation_properties(shared_data):
  path = shared_data / "pascal3d_cad_off" / "chair" / "02.off"
  raw_v, faces = mesh_io.read_raw_mesh(path)
  mesh, norm = mesh_io.load_mesh_with_normalization(path)
  _check_normalised(mesh, norm, raw_v, faces)
  # Pascal3D+ meshes are already about centred and < 0.5 in radius: the transform is near the identity.
  assert 1.0 <= norm.scale < 1.5 and np.abs(norm.center).max() < 0.05
  np.testing.assert_array_equal(mesh.faces, faces)
  np.testing.assert_allclose(mesh_io.load_mesh(path).vertices, mesh.vertices)
  np.testing.assert_array_equal(mesh_io.load_mesh(path, normalize=False).vertices, raw_v)


def test_unreferenced_vertices_kept_but_not_normalised(shared_data):
  # chair/09 has stray vertices (the .mat fixture's faces start at index 97, 1-based).
  path = shared_data / "pascal3d_cad_off" / "chair" / "09.off"
  raw_v, faces = mesh_io.read_raw_mesh(path)
  assert np.unique(faces).size < len(raw_v)
  mesh, norm = mesh_io.load_mesh_with_normalization(path)
  assert len(mesh.vertices) == len(raw_v)
  assert norm == model_lib.compute_normalization(raw_v, faces)
  _check_normalised(mesh, norm, raw_v, faces)


def test_modelnet_samples_crlf_and_uncentred(shared_data):
  root = shared_data / "modelnet_samples"
  for path in (root / "ModelNet10" / "bed_0001.off",
               root / "ModelNet40_original" / "stool_0002.off",
               root / "ModelNet40_original" / "airplane" / "airplane_0006.off"):
    raw_v, faces = mesh_io.read_raw_mesh(path)
    mesh, norm = mesh_io.load_mesh_with_normalization(path)
    _check_normalised(mesh, norm, raw_v, faces)
  assert b"\r\n" in (root / "ModelNet10" / "bed_0001.off").read_bytes()
  # airplane_0006 spans thousands of units: the scale is tiny, the inverse still exact.
  assert norm.scale < 1e-3


def test_merged_modelnet_header_from_real_file(shared_data, tmp_path):
  src = shared_data / "modelnet_samples" / "ModelNet40_original" / "stool_0002.off"
  want_v, want_f = mesh_io.read_raw_mesh(src)
  lines = src.read_bytes().splitlines(keepends=True)
  counts = lines[1].strip()
  merged = _write(tmp_path, "stool_merged.off", b"OFF" + counts + b"\n" + b"".join(lines[2:]))
  spaced = _write(tmp_path, "stool_spaced.off", b"OFF " + counts + b"\n" + b"".join(lines[2:]))
  assert merged.read_bytes().startswith(b"OFF547 344 0\n")
  for path in (merged, spaced):
    v, f = mesh_io.read_raw_mesh(path)
    np.testing.assert_array_equal(v, want_v)
    np.testing.assert_array_equal(f, want_f)


def test_off_comments_blank_lines_polygons_and_face_colours(tmp_path):
  text = ("# written by hand\nOFF  # header comment\n\n8 6 12\n"
          + "".join(f"{x:g} {y:g} {z:g}   # vertex {i}\n" for i, (x, y, z) in enumerate(_CUBE_V))
          + "\n".join(f"4 {' '.join(map(str, q))} 255 0 0 1" for q in _CUBE_QUADS) + "\n")
  v, f = mesh_io.read_raw_mesh(_write(tmp_path, "cube.off", text.replace("\n", "\r\n")))
  np.testing.assert_array_equal(v, _CUBE_V)
  np.testing.assert_array_equal(f, _cube_triangles())  # fan triangulation of each quad
  mesh = trimesh.Trimesh(v, f, process=False)
  assert mesh.is_watertight and mesh.volume == pytest.approx(1.0)


def test_off_mixed_polygons_and_variants(tmp_path):
  # A pentagon, a triangle, and COFF vertex colours (extra vertex columns are ignored).
  verts = np.array([[0, 0, 0], [2, 0, 0], [3, 1, 0], [1, 2, 0], [-1, 1, 0], [1, 1, 2]], np.float64)
  lines = ["COFF", "6 3 0"] + [" ".join(f"{c:g}" for c in v) + " 0.5 0.5 0.5 1" for v in verts]
  lines += ["5 0 1 2 3 4", "3 0 1 5", "3 2 3 5"]
  v, f = mesh_io.read_raw_mesh(_write(tmp_path, "mixed.off", "\n".join(lines)))  # no final newline
  np.testing.assert_array_equal(v, verts)
  np.testing.assert_array_equal(f, [[0, 1, 2], [0, 2, 3], [0, 3, 4], [0, 1, 5], [2, 3, 5]])


def test_large_off_loads_fast(shared_data):
  path = shared_data / "pascal3d_cad_off" / "car" / "05.off"  # 3.8 MB, 91,566 vertices
  start = time.perf_counter()
  v, f = mesh_io.read_raw_mesh(path)
  elapsed = time.perf_counter() - start
  assert v.shape == (91566, 3) and len(f) == 76722
  assert elapsed < 2.0, elapsed  # ~0.2 s here; generous for a loaded 2-core machine.


# ---------------------------------------------------------------------------------------------------------
# OBJ and PLY.


def test_shapenet_obj(shared_data):
  path = shared_data / "shapenet_samples" / "03001627_21bfb150cfc23accb01c58badc8bbc39" / "model.obj"
  raw_v, faces = mesh_io.read_raw_mesh(path)
  # 1,387 'v' lines (2 unused), 5,356 faces; trimesh's per-texture-coordinate split is merged back.
  assert raw_v.shape == (1385, 3) and faces.shape == (5356, 3)
  text_v = np.array([ln.split()[1:4] for ln in path.read_text().splitlines() if ln.startswith("v ")],
                    np.float64)
  assert {tuple(r) for r in raw_v} <= {tuple(r) for r in text_v}
  mesh, norm = mesh_io.load_mesh_with_normalization(path)
  _check_normalised(mesh, norm, raw_v, faces)
  # Same surface as trimesh's own reading.
  ref = trimesh.load(path, force="mesh", process=False, skip_materials=True)
  assert mesh.area == pytest.approx(ref.area * norm.scale ** 2, rel=1e-9)


def test_ply_binary_and_ascii(shared_data, tmp_path):
  raw_v, faces = mesh_io.read_raw_mesh(shared_data / "pascal3d_cad_off" / "chair" / "01.off")
  mesh = trimesh.Trimesh(raw_v, faces, process=False)
  for encoding in ("binary", "ascii"):
    path = tmp_path / f"chair01_{encoding}.ply"
    path.write_bytes(mesh.export(file_type="ply", encoding=encoding))
    v, f = mesh_io.read_raw_mesh(path)
    np.testing.assert_allclose(v, raw_v, atol=1e-6)  # PLY stores float32/ascii rounding
    np.testing.assert_array_equal(f, faces)
    m, norm = mesh_io.load_mesh_with_normalization(path)
    _check_normalised(m, norm, v, f)


def test_point_cloud_ply_has_no_faces(shared_data):
  path = shared_data / "pascal3d_cad_pointclouds" / "car" / "02.ply"
  with pytest.raises(MeshError, match="no faces") as info:
    mesh_io.load_mesh(path)
  assert "02.ply" in str(info.value)


# ---------------------------------------------------------------------------------------------------------
# Pascal3D+ .mat.


@pytest.mark.parametrize("category", ["chair", "tvmonitor"])
def test_cad_mat_fixtures_equal_off_files(shared_data, category):
  entries = mesh_io.read_pascal3d_cad_mat(shared_data / "pascal3d_cad_mat_fixtures" / f"{category}.mat")
  assert len(entries) == {"chair": 10, "tvmonitor": 4}[category]
  for k, (v, f) in enumerate(entries, start=1):
    off_v, off_f = mesh_io.read_raw_mesh(shared_data / "pascal3d_cad_off" / category / f"{k:02d}.off")
    np.testing.assert_array_equal(v, off_v)
    np.testing.assert_array_equal(f, off_f)
    assert f.dtype == np.int64 and f.min() >= 0


def test_load_mesh_mat_index_and_suffix(shared_data):
  mat = shared_data / "pascal3d_cad_mat_fixtures" / "tvmonitor.mat"
  off = mesh_io.load_mesh(shared_data / "pascal3d_cad_off" / "tvmonitor" / "02.off")
  by_kw = mesh_io.load_mesh(mat, index=2)
  by_suffix = mesh_io.load_mesh(f"{mat}#2")
  np.testing.assert_array_equal(by_kw.vertices, off.vertices)
  np.testing.assert_array_equal(by_suffix.vertices, off.vertices)
  with pytest.raises(MeshError, match="pass index"):
    mesh_io.load_mesh(mat)  # 4 models: an index is required
  with pytest.raises(MeshError, match="out of range 1..4"):
    mesh_io.load_mesh(mat, index=0)  # 1-based
  with pytest.raises(MeshError, match="out of range"):
    mesh_io.load_mesh(mat, index=5)


def test_3dvp_voxel_mat_is_accepted(shared_data):
  entries = mesh_io.read_pascal3d_cad_mat(shared_data / "pascal3d_cad_voxels50_3dvp" / "diningtable.mat")
  assert len(entries) == 6
  for k, (v, f) in enumerate(entries, start=1):
    off_v, off_f = mesh_io.read_raw_mesh(shared_data / "pascal3d_cad_off" / "diningtable" / f"{k:02d}.off")
    np.testing.assert_array_equal(v, off_v)
    np.testing.assert_array_equal(f, off_f)


def test_mat_uint8_faces_cast_before_subtracting(tmp_path):
  # uint8 faces: 0-based conversion done in uint8 would wrap a 1 to 0 correctly but a 0 to 255; the reader
  # must cast first, so a 0 (invalid in a 1-based file) becomes -1 and is reported as out of range.
  tri = np.array([[1, 2, 3], [1, 3, 4], [1, 4, 2], [2, 4, 3]], np.uint8)
  verts = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float64)
  good, bad = tmp_path / "tetra.mat", tmp_path / "broken.mat"
  struct = np.zeros((1, 1), dtype=[("vertices", object), ("faces", object)])
  struct[0, 0] = (verts, tri)
  scipy.io.savemat(good, {"tetra": struct})
  (v, f), = mesh_io.read_pascal3d_cad_mat(good)
  np.testing.assert_array_equal(f, tri.astype(np.int64) - 1)
  assert mesh_io.load_mesh(good).faces.shape == (4, 3)  # a single model needs no index
  struct[0, 0] = (verts, np.array([[0, 1, 2]], np.uint8))
  scipy.io.savemat(bad, {"broken": struct})
  with pytest.raises(MeshError, match="out of range") as info:
    mesh_io.load_mesh(bad)
  assert "broken.mat" in str(info.value) and "-1" in str(info.value)


def test_mat_without_cad_struct(tmp_path):
  path = tmp_path / "nothing.mat"
  scipy.io.savemat(path, {"x": np.zeros(3)})
  with pytest.raises(MeshError, match="no struct") as info:
    mesh_io.read_pascal3d_cad_mat(path)
  assert "nothing.mat" in str(info.value)


# ---------------------------------------------------------------------------------------------------------
# Bad files: each raises MeshError naming the file.

_TRI = "0 0 0\n1 0 0\n0 1 0\n0 0 1\n"
_TET_FACES = "3 0 1 2\n3 0 1 3\n3 0 2 3\n3 1 2 3\n"
_BAD_OFF = {
    "empty.off": ("", "empty file"),
    "blank.off": ("  \r\n\n# only a comment\n", "empty file"),
    "noheader.off": ("4 4 0\n" + _TRI + _TET_FACES, "bad header"),
    "badcounts.off": ("OFF\nfour 4 0\n" + _TRI + _TET_FACES, "bad header"),
    "nocounts.off": ("OFF\n", "bad header"),
    "nonnumeric_vertex.off": ("OFF\n4 4 0\n0 0 0\n1 x 0\n0 1 0\n0 0 1\n" + _TET_FACES, "line 4: non-numeric"),
    "short_vertex.off": ("OFF\n4 4 0\n0 0 0\n1 0\n0 1 0\n0 0 1\n" + _TET_FACES,
                         "line 4: expected 3 coordinates"),
    "nonnumeric_face.off": ("OFF\n4 4 0\n" + _TRI + "3 0 1 2\n3 0 one 3\n3 0 2 3\n3 1 2 3\n", "line 8"),
    "short_face.off": ("OFF\n4 4 0\n" + _TRI + "3 0 1 2\n3 0 1\n3 0 2 3\n3 1 2 3\n", "only 2 values"),
    "few_vertices.off": ("OFF\n9 0 0\n" + _TRI, "announces 9 vertices"),
    "few_faces.off": ("OFF\n4 7 0\n" + _TRI + _TET_FACES, "announces 7 faces"),
    "nan.off": ("OFF\n4 4 0\n0 0 0\n1 0 nan\n0 1 0\n0 0 1\n" + _TET_FACES, "NaN/inf"),
    "inf.off": ("OFF\n4 4 0\n0 0 0\n1 0 0\n0 inf 0\n0 0 1\n" + _TET_FACES, "NaN/inf"),
    "index_high.off": ("OFF\n4 4 0\n" + _TRI + "3 0 1 2\n3 0 1 4\n3 0 2 3\n3 1 2 3\n", "out of range"),
    "index_negative.off": ("OFF\n4 4 0\n" + _TRI + "3 0 1 2\n3 0 -1 3\n3 0 2 3\n3 1 2 3\n", "out of range"),
    "nofaces.off": ("OFF\n4 0 0\n" + _TRI, "no faces"),
    "novertices.off": ("OFF\n0 1 0\n3 0 1 2\n", "no vertices"),
    "empty_mesh.off": ("OFF\n0 0 0\n", "no vertices and no faces"),
    "twogon.off": ("OFF\n4 1 0\n" + _TRI + "2 0 1\n", "at least 3"),
    "coincident.off": ("OFF\n3 1 0\n1 1 1\n1 1 1\n1 1 1\n3 0 1 2\n", "coincide"),
    "collinear.off": ("OFF\n3 1 0\n0 0 0\n1 1 1\n2 2 2\n3 0 1 2\n", "collinear"),
    "flat.off": ("OFF\n4 2 0\n0 0 0\n1 0 0\n1 1 0\n0 1 0\n3 0 1 2\n3 0 2 3\n", "coplanar"),
    # A tilted plane: zero volume although no axis has zero extent.
    "tilted_flat.off": ("OFF\n4 2 0\n0 0 0\n1 1 0\n1 1 1\n0 0 1\n3 0 1 2\n3 0 2 3\n", "coplanar"),
    "binary_garbage.off": (b"\x00\x01\x02\xff\xfe" * 20, "bad header"),
}


@pytest.mark.parametrize("name", sorted(_BAD_OFF))
def test_bad_off_files(tmp_path, name):
  text, problem = _BAD_OFF[name]
  path = _write(tmp_path, name, text)
  with pytest.raises(MeshError) as info:
    mesh_io.load_mesh(path)
  message = str(info.value)
  assert name in message and problem in message, message


def test_missing_file_directory_and_extension(tmp_path):
  for path, problem in ((tmp_path / "absent.off", "no such file"),
                        (tmp_path, "not a regular file"),
                        (_write(tmp_path, "mesh.stl", "solid x\n"), "unknown mesh file extension"),
                        (_write(tmp_path, "noext", "OFF\n"), "unknown mesh file extension")):
    if path == tmp_path:
      path = tmp_path / "adir.off"
      path.mkdir()
    with pytest.raises(MeshError, match=problem) as info:
      mesh_io.load_mesh(path)
    assert path.name in str(info.value)


def test_unreadable_file(tmp_path):
  path = _write(tmp_path, "secret.off", "OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n")
  path.chmod(0)
  try:
    if path.stat().st_mode & 0o777 == 0 and _can_read(path):
      pytest.skip("running as root: permissions are not enforced")
    with pytest.raises(MeshError, match="cannot read") as info:
      mesh_io.load_mesh(path)
    assert "secret.off" in str(info.value)
  finally:
    path.chmod(0o644)


def _can_read(path: pathlib.Path) -> bool:
  try:
    path.read_bytes()
    return True
  except OSError:
    return False


@pytest.mark.parametrize("name,text,problem", [
    ("empty.obj", "", "empty file"),
    ("points.obj", "v 0 0 0\nv 1 0 0\nv 0 1 0\n", "no faces"),
    ("badindex.obj", "v 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\nf 1 2 3\nf 1 2 9\n", ""),
    ("flat.obj", "v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n", "coplanar"),
    ("garbage.ply", "ply\nformat nonsense\nend_header\n", ""),
    ("empty.ply", "", "empty file"),
])
def test_bad_obj_and_ply_files(tmp_path, name, text, problem):
  path = _write(tmp_path, name, text)
  with pytest.raises(MeshError) as info:
    mesh_io.load_mesh(path)
  assert name in str(info.value) and problem in str(info.value), str(info.value)


def test_bad_mat_file(tmp_path):
  path = _write(tmp_path, "chair.mat", b"MATLAB? no, just bytes" * 10)
  with pytest.raises(MeshError) as info:
    mesh_io.load_mesh(path, index=1)
  assert "chair.mat" in str(info.value)
  with pytest.raises(MeshError, match="only meaningful for .mat"):
    mesh_io.load_mesh(_write(tmp_path, "x.off", "OFF\n"), index=1)


def test_corrupted_real_files_raise_only_mesh_error(shared_data, tmp_path):
  """Truncations, byte flips and insertions of real files: either a mesh or a MeshError, never a crash."""
  rng = np.random.default_rng(0)
  sources = [shared_data / "pascal3d_cad_off" / "chair" / "04.off",
             shared_data / "shapenet_samples" / "03001627_21bfb150cfc23accb01c58badc8bbc39" / "model.obj"]
  for src in sources:
    data = src.read_bytes()
    for k in range(45):
      d = bytearray(data)
      if k % 3 == 0:
        d = d[:rng.integers(0, len(d))]
      elif k % 3 == 1:
        for _ in range(rng.integers(1, 5)):
          d[rng.integers(0, len(d))] = rng.integers(0, 256)
      else:
        i = rng.integers(0, len(d))
        d[i:i] = bytes(rng.choice(list(b" -\n\r.e0123456789#x"), size=rng.integers(1, 8)))
      path = _write(tmp_path, f"corrupt{src.suffix}", bytes(d))
      try:
        mesh_io.load_mesh(path)
      except MeshError as e:
        assert path.name in str(e)
