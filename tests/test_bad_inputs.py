"""The bad-input catalogue: what each kind of bad input does, and where that is tested.

Each entry reads `input -> behaviour [tests]`. Every error case asserts the error type AND that the message
names the input (file, key, source) and the problem. `here:` names a test of this module; other tests are
`module::test`, so that the list is complete for mesh files, collections, voxel banks, annotations,
images, boxes, configs and full disks. Random and mutated inputs: tests/test_fuzz.py. "(was ...)" is the
behaviour before the fix made with this catalogue.

CAD mesh files (`mesh_io.load_mesh`, MeshError '<path>: <problem>'):
  - empty, whitespace- or comment-only file -> 'empty file'
    [test_mesh_io::test_bad_off_files[empty.off, blank.off], test_bad_obj_and_ply_files[empty.*]]
  - no 'OFF' header, bad or missing counts, binary junk -> 'bad header'
    [test_mesh_io::test_bad_off_files[noheader, badcounts, nocounts, binary_garbage]]
  - non-numeric or short vertex / face line -> 'bad vertex|face line N: ...'
    [test_mesh_io::test_bad_off_files[nonnumeric_*, short_*]]
  - fewer lines than the header announces -> 'header announces N ...'
    [test_mesh_io::test_bad_off_files[few_vertices, few_faces]]
  - NaN / inf vertex (OFF, OBJ) -> 'NaN/inf'
    [test_mesh_io::test_bad_off_files[nan, inf]; test_collections::test_mesh_folder_flat_with_two_bad_files]
  - NaN vertex in a binary PLY, or in a vertex no face uses -> 'NaN/inf' [here: test_nan_vertices_anywhere]
  - face index out of range (too high, negative; OFF, OBJ) -> 'out of range'
    [test_mesh_io::test_bad_off_files[index_high, index_negative], test_bad_obj_and_ply_files[badindex.obj]]
  - face index beyond int64 -> 'vertex index out of range' (was OverflowError)
    [here: test_fuzz_found_off_bugs[huge_index.off]]
  - face index '1_0' (Python-only syntax) -> 'non-integer vertex index' (was read as 10)
    [here: test_fuzz_found_off_bugs[underscore_index.off]]
  - no faces, no vertices, a 2-gon, a point-cloud PLY -> 'no faces' / 'no vertices' / 'at least 3'
    [test_mesh_io::test_bad_off_files[nofaces, novertices, empty_mesh, twogon],
    test_mesh_io::test_point_cloud_ply_has_no_faces]
  - all used vertices coincide / collinear / coplanar -> 'degenerate mesh: ...'
    [test_mesh_io::test_bad_off_files[coincident, collinear, flat, tilted_flat],
    test_mesh_io::test_bad_obj_and_ply_files[flat.obj]]
  - some degenerate faces (repeated index, zero area) in a solid mesh -> loads, faces kept
    [here: test_degenerate_faces_in_a_solid_mesh_load]
  - non-manifold (bow-tie vertex, edge of 3 faces, duplicate and flipped faces) -> loads and voxelises
    [here: test_non_manifold_mesh_loads_and_voxelises]
  - huge (1e300) or tiny (1e-300) but finite coordinates -> loads, normalised to radius 0.5
    (was 'mesh has zero size') [here: test_extreme_but_valid_scales_normalise]
  - coordinates +-1e308 (the extent overflows) -> 'coordinates too large' (was 'collinear')
    [here: test_fuzz_found_off_bugs[opposite_huge.off]]
  - coordinates ~5e-324 (0.5 / radius overflows) -> 'too small to normalise' (was 'mesh has zero size')
    [here: test_fuzz_found_off_bugs[denormal.off]]
  - missing file, directory, unknown extension, unreadable file -> 'no such file', 'not a regular file', ...
    [test_mesh_io::test_missing_file_directory_and_extension, test_unreadable_file]
  - malformed OBJ / PLY -> 'cannot parse' [test_mesh_io::test_bad_obj_and_ply_files[garbage.ply]]
  - truncated / byte-flipped real OFF and OBJ files -> a mesh or MeshError
    [test_mesh_io::test_corrupted_real_files_raise_only_mesh_error]
CAD .mat files (`mesh_io.read_pascal3d_cad_mat`, MeshError '<path>[#N]: ...'):
  - not a .mat file, no struct, an index for a non-.mat -> MeshError
    [test_mesh_io::test_bad_mat_file, test_mat_without_cad_struct]
  - uint8 faces holding a 0 (0-based by mistake) -> 'out of range ... -1'
    [test_mesh_io::test_mat_uint8_faces_cast_before_subtracting]
  - faces beyond int64 (uint64 max, 1e30 doubles) -> 'out of range' with the file's values (were wrapped)
    [here: test_mat_faces_beyond_int64_and_complex]
  - complex vertices or faces -> 'not a real numeric array' (the imaginary part was dropped) [here: ditto]
  - struct header claiming millions of models (one flipped byte) -> 'not a readable MATLAB .mat file, it is
    corrupt (... claims N elements in M bytes ...)' (took seconds and gigabytes)
    [here: test_mat_claiming_millions_of_models]
  - unknown data type code (one flipped byte) -> 'not a readable ... unknown type' (was a segfault inside
    scipy) [here: test_flipped_type_code_in_a_mat_file[cad]]
CAD collections (`collections.load_*`, one CollectionError listing every bad file, or skipped with skip_bad):
  - folder with bad files, with and without skip_bad -> CollectionError / a warning and the good models
    [test_collections::test_mesh_folder_flat_with_two_bad_files, test_load_collection_passes_skip_bad]
  - Pascal3D+ CAD dir with a bad .off and a bad .mat -> CollectionError listing both
    [test_collections::test_pascal3d_bad_files_all_listed]
  - ModelNet tree with one bad file, with and without skip_bad -> CollectionError naming it / a warning
    and the others [here: test_modelnet_tree_with_one_bad_file]
  - Pascal3D+ .mat with one bad model among good ones -> 'chair.mat#2' listed; skip_bad keeps cad_index 1
    and 3 [here: test_pascal3d_mat_with_one_bad_model]
  - missing or empty root, no mesh files, unknown category or split -> CollectionError / ConfigError
    [test_collections::test_pascal3d_missing_or_empty_root, test_mesh_folder_empty, test_modelnet_tree_splits]
  - malformed spec strings -> ConfigError [test_collections::test_load_collection_bad_specs]
Voxels and the voxel bank:
  - bad mesh arrays to voxelize -> MeshError / ValueError
    [test_voxels::test_empty_and_bad_meshes; test_voxel_bank::test_bad_model_error_names_its_source]
  - bad, truncated or missing binvox -> MeshError naming the file
    [test_voxels::test_bad_binvox_files_name_the_file, test_missing_binvox_file]
  - corrupt, truncated, empty, missing or inconsistent bank -> VoxelBankError naming it
    [test_voxel_bank::test_corrupt_bank_file_names_it, test_missing_bank_file,
    test_bank_with_wrong_fields_is_rejected]
  - corrupt cached bank -> rebuilt with a warning [test_voxel_bank::test_corrupt_cached_bank_is_rebuilt]
  - failing rename during a write -> OSError, the old file kept
    [test_voxels::test_failed_write_leaves_the_old_file]
  - full disk (ENOSPC) midway through VoxelBank.save / write_binvox -> OSError(ENOSPC) 'cannot write <path>:
    No space left on device'; nothing under the final name, no temp file, an old file kept (the message
    did not name the file)
    [here: test_full_disk_during_voxel_bank_save, test_full_disk_keeps_the_old_bank_and_binvox]
Pascal3D+ annotations (`read_annotation`, AnnotationError '<path>: <field>: <problem>'):
  - missing, wrong-type, empty, NaN or inverted fields -> AnnotationError naming the field
    [test_pascal3d::test_bad_record_names_file_and_field[*] (27 cases)]
  - empty, garbage or truncated file; no 'record' -> 'not a readable' / 'record'
    [test_pascal3d::test_unreadable_files]
  - missing file; folder not '<category>_<source>' -> AnnotationError
    [test_pascal3d::test_missing_file_and_bad_folder]
  - mutated records -> a record or AnnotationError
    [test_pascal3d::test_property_mutated_records_parse_or_raise_annotation_error]
  - reversed bndbox struct (no bbox) -> 'empty box' [here: test_bad_annotation_fields[reversed_bndbox]]
  - complex azimuth, NaN coarse angles, `record` a string, `objects` a cell of numbers -> AnnotationError
    naming the field [here: test_bad_annotation_fields[*]]
  - focal * viewport < 1 (focal 1e-300) -> 'implausible camera' (the labels were ~1e300)
    [here: test_bad_annotation_fields[tiny_focal]]
  - image depth 1e300 -> 'record.imgsize' (was accepted) [here: test_bad_annotation_fields[huge_depth]]
  - record header claiming millions of elements -> 'not a readable ... claims N elements' (seconds, GBs)
    [here: test_annotation_claiming_millions_of_records]
  - unknown data type code (one flipped byte) -> 'not a readable ... unknown type' (was a segfault)
    [here: test_flipped_type_code_in_a_mat_file[annotation]]
  - char array whose dimensions element is 3 bytes long -> 'not a readable ... dimensions of 3 bytes'
    (was a segfault) [here: test_char_array_without_dimensions]
  - manual dir missing or incomplete, image missing -> ManualDirError / ImageError
    [test_pascal3d::test_manual_dir_errors, test_missing_image_is_an_error]
Images (`image_io.load_image`, ImageError '<source>: <problem>'):
  - missing file, directory, empty file, empty bytes, text file, truncated JPEG or PNG -> 'no such image
    file', 'not a regular file', 'empty ...', 'not an image file', 'truncated or corrupt'
    [here: test_bad_image_files[*]]
  - zero-size array or PIL image, bad array shape, unsupported dtype, NaN / inf, floats outside [0, 1], a
    list -> 'zero-size image', 'has shape', 'unsupported image dtype', 'NaN/inf', 'must lie in [0, 1]', ...
    [here: test_bad_image_arrays[*]]
Boxes (`image_io.check_bbox`, ImageError naming the source and the box):
  - partly outside the image -> kept unchanged (crops pad with zeros)
    [test_image_io::test_check_bbox_keeps_boxes_partly_outside_the_image]
  - entirely outside (any side, or only touching an edge) -> 'lies entirely outside' [here: test_bad_boxes[*]]
  - zero area, reversed, NaN / inf, not 4 numbers -> 'is empty' / 'must be 4 finite numbers'
    [here: test_bad_boxes[*]]; bad image shape -> 'bad image shape' [here: test_bad_image_shape_for_a_box]
  - `crops.square_crop` of a box entirely outside -> an all-black crop, no error (check_bbox is the gate)
    [here: test_square_crop_of_a_box_outside_is_black]
Configs (`config_check.validate`, `train_lib.check_batch_divisible`; ConfigError naming key, value, allowed):
  - unknown key, wrong type, out-of-range value -> ConfigError [here: test_bad_configs[*]; every rule:
    test_config_check]
  - batch size not divisible by the device count, or <= 0 -> ConfigError
    [here: test_batch_not_divisible_by_device_count]
"""

from __future__ import annotations

import errno
import io
import logging
import os
import pathlib
import struct

import numpy as np
import pytest
import scipy.io
import trimesh
from PIL import Image

from configs import default
from disent_jax import config_check
from disent_jax import image_io
from disent_jax import train_lib
from disent_jax.cad import collections as cols
from disent_jax.cad import mesh_io
from disent_jax.cad import model as model_lib
from disent_jax.cad import voxel_bank
from disent_jax.cad import voxels
from disent_jax.datasets import crops
from disent_jax.datasets import pascal3d_annotations as ann
from disent_jax.errors import AnnotationError, CollectionError, ConfigError, ImageError, MeshError

import _helpers

_TET_V = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float64)
_TET_F = np.array([[0, 1, 2], [0, 1, 3], [0, 2, 3], [1, 2, 3]])
_TET_OFF = "OFF\n4 4 0\n0 0 0\n1 0 0\n0 1 0\n0 0 1\n3 0 1 2\n3 0 1 3\n3 0 2 3\n3 1 2 3\n"


def _raises(error, call, *names: str):
  """Runs `call`, which must raise `error` whose message contains every string in `names`."""
  with pytest.raises(error) as info:
    call()
  message = str(info.value)
  for name in names:
    assert name in message, f"{name!r} not in {message!r}"
  return info.value


def _off(vertices, faces) -> str:
  lines = ["OFF", f"{len(vertices)} {len(faces)} 0"] + [" ".join(repr(float(c)) for c in v) for v in vertices]
  return "\n".join(lines + [f"{len(f)} " + " ".join(str(i) for i in f) for f in faces]) + "\n"


# ---------------------------------------------------------------------------------------------------------
# CAD mesh files.


@pytest.mark.parametrize("name,text,problem", [
    ("huge_index.off", _TET_OFF.replace("3 1 2 3", "3 1 2 99999999999999999999"),
     "vertex index out of range"),
    ("underscore_index.off", _TET_OFF.replace("3 1 2 3", "4 1 2 3 1_0"), "non-integer vertex index"),
    ("opposite_huge.off", _off([[-1e308, 0, 0], [1e308, 0, 0], [0, 1e308, 0], [0, 0, 1e308]], _TET_F),
     "coordinates too large"),
    ("denormal.off", _off(_TET_V * 5e-324, _TET_F), "too small to normalise"),
])
def test_fuzz_found_off_bugs(tmp_path, name, text, problem):
  path = tmp_path / name
  path.write_text(text)
  _raises(MeshError, lambda: mesh_io.load_mesh(path), name, problem)


@pytest.mark.parametrize("scale", [1e-300, 1e-150, 1e150, 1e300])
def test_extreme_but_valid_scales_normalise(tmp_path, scale):
  box_v, box_f = _helpers.box_mesh((0.5, 0.4, 0.3), (0.1, -0.2, 0.05))
  path = tmp_path / "scaled.off"
  path.write_text(_off(box_v * scale, box_f))
  mesh = mesh_io.load_mesh(path)
  # Normalisation removes the scale: the same vertices as the unscaled box's.
  unit = model_lib.normalize_mesh(trimesh.Trimesh(box_v, box_f, process=False))[0]
  np.testing.assert_allclose(mesh.vertices, unit.vertices, atol=1e-12)
  assert np.sqrt((mesh.vertices ** 2).sum(axis=1)).max() == pytest.approx(0.5, rel=1e-12)


def test_nan_vertices_anywhere(tmp_path):
  v = np.vstack([_TET_V, [[np.nan, 0, 0]]])
  ply = tmp_path / "nan.ply"
  mesh = trimesh.Trimesh(v, _TET_F, process=False)
  ply.write_bytes(trimesh.exchange.ply.export_ply(mesh, encoding="binary"))
  _raises(MeshError, lambda: mesh_io.load_mesh(ply), "nan.ply", "NaN/inf")
  # The NaN vertex (index 4) is referenced by no face: still an error, all vertices are checked.
  off = tmp_path / "stray_nan.off"
  off.write_text(_off(v, _TET_F).replace("nan", "NaN"))
  _raises(MeshError, lambda: mesh_io.load_mesh(off), "stray_nan.off", "NaN/inf", "vertex 4")


def test_degenerate_faces_in_a_solid_mesh_load(tmp_path):
  faces = [list(f) for f in _TET_F] + [[0, 0, 1], [0, 1, 1]]  # Repeated indices: zero-area triangles.
  v = np.vstack([_TET_V, [[0.5, 0.5, 0.0]]])
  faces.append([1, 4, 2])  # Collinear: (1,0,0), (.5,.5,0), (0,1,0).
  path = tmp_path / "degenerate_faces.off"
  path.write_text(_off(v, faces))
  mesh = mesh_io.load_mesh(path)
  assert mesh.faces.shape == (7, 3)  # Kept as they are: they add nothing to the voxels.
  np.testing.assert_array_equal(voxels.voxelize(mesh, 8), voxels.voxelize(
      trimesh.Trimesh(mesh.vertices, mesh.faces[:4], process=False), 8))


def test_non_manifold_mesh_loads_and_voxelises(tmp_path):
  # Two tetrahedra touching at one vertex (a bow-tie), a fin: an edge shared by three faces, one face
  # duplicated and one flipped. CAD meshes are like this; none of it is an error.
  v = np.vstack([_TET_V * 0.4, -_TET_V * 0.4, [[0.2, 0.2, -0.3]]])
  faces = [list(f) for f in _TET_F] + [list(f + 4) for f in _TET_F[1:]] + [[0, 4 + 1, 4 + 2]]
  faces += [[0, 1, 8], list(_TET_F[0]), list(_TET_F[1][::-1])]
  path = tmp_path / "nonmanifold.off"
  path.write_text(_off(v, faces))
  mesh = mesh_io.load_mesh(path)
  assert not mesh.is_watertight and len(mesh.faces) == len(faces)
  assert voxels.voxelize(mesh, 16).sum() > 0


# ---------------------------------------------------------------------------------------------------------
# CAD .mat files.


def _cad_mat(path: pathlib.Path, models: list[tuple[np.ndarray, np.ndarray]]) -> None:
  s = np.zeros((1, len(models)), dtype=[("vertices", object), ("faces", object)])
  for k, (v, f) in enumerate(models):
    s[0, k] = (v, f)
  scipy.io.savemat(path, {path.stem: s})


def test_mat_faces_beyond_int64_and_complex(tmp_path):
  good_f = _TET_F + 1
  for label, v, f, problem in [
      ("uint64", _TET_V, np.full((1, 3), 2 ** 64 - 1, np.uint64), "out of range (min 18446744073709551615"),
      ("huge_double", _TET_V, good_f * 1e30, "out of range (min 1e+30"),
      ("complex_vertices", _TET_V + 1j, good_f, "'vertices' is not a real numeric array"),
      ("complex_faces", _TET_V, good_f + 0j, "'faces' is not a real numeric array")]:
    path = tmp_path / f"{label}.mat"
    _cad_mat(path, [(v, f)])
    _raises(MeshError, lambda: mesh_io.load_mesh(path), f"{label}.mat#1", problem)


def _patch_dims(path: pathlib.Path, dims: tuple[int, int]) -> None:
  """Overwrites the dimensions of the first variable of an uncompressed MATLAB 5 file.

  Layout: 128-byte file header, then the variable's miMATRIX tag (8 bytes), its array-flags element
  (16 bytes) and the dimensions element: an 8-byte tag and two int32.
  """
  data = bytearray(path.read_bytes())
  assert struct.unpack_from("<ii", data, 152) == (5, 8)  # miINT32, 8 bytes: the dims tag.
  struct.pack_into("<ii", data, 160, *dims)
  path.write_bytes(bytes(data))


def test_mat_claiming_millions_of_models(tmp_path):
  path = tmp_path / "chair.mat"
  _cad_mat(path, [(_TET_V, _TET_F + 1)])
  _patch_dims(path, (8519681, 2))
  assert scipy.io.whosmat(str(path))[0][1] == (8519681, 2)  # The header lies; the file holds one model.
  # 17,039,362 models of 2 fields each would take 8 bytes per field at least; the struct has 304 bytes.
  _raises(MeshError, lambda: mesh_io.load_mesh(path), "chair.mat", "not a readable MATLAB .mat file",
          "corrupt", "claims 34078724 elements in 304 bytes")


@pytest.mark.parametrize("kind", ["cad", "annotation"])
def test_flipped_type_code_in_a_mat_file(tmp_path, kind):
  """scipy indexes a C table with a numeric element's type code unchecked: 0x6409 instead of 9 (double)
  crashed the process with a segmentation fault. Now the file is refused before scipy reads it."""
  if kind == "cad":
    path = tmp_path / "chair.mat"
    _cad_mat(path, [(_TET_V, _TET_F + 1)])
    tag, load, error = struct.pack("<II", 9, _TET_V.nbytes), mesh_io.load_mesh, MeshError
  else:
    path = tmp_path / "aeroplane_pascal" / "2008_000100.mat"
    path.parent.mkdir()
    scipy.io.savemat(str(path), {"record": _record()})
    tag, load, error = struct.pack("<II", 9, 24), ann.read_annotation, AnnotationError  # imgsize: 3 doubles
  data = path.read_bytes()
  at = data.index(tag)
  path.write_bytes(data[:at] + struct.pack("<I", 0x6409) + data[at + 4:])
  _raises(error, lambda: load(path), str(path), "not a readable MATLAB .mat file",
          f"data element at byte {at} has unknown type 25609")


def test_char_array_without_dimensions(tmp_path):
  """A dimensions element of 3 bytes gives scipy a char array of zero dimensions, whose last dimension
  its `chars_to_strings` then reads out of bounds: a segmentation fault. Refused before scipy reads it."""
  path = tmp_path / "aeroplane_pascal" / "2008_000100.mat"
  path.parent.mkdir()
  scipy.io.savemat(str(path), {"record": _record()})
  data = path.read_bytes()
  at = data.index(struct.pack("<IIii", 5, 8, 1, len("2008_000100.jpg")))  # The filename's dims: 1 x 15.
  path.write_bytes(data[:at] + struct.pack("<II", 5, 3) + data[at + 8:])
  _raises(AnnotationError, lambda: ann.read_annotation(path), str(path), "not a readable MATLAB .mat file",
          "dimensions of 3 bytes")


# ---------------------------------------------------------------------------------------------------------
# CAD collections.


def test_modelnet_tree_with_one_bad_file(tmp_path, caplog):
  root = tmp_path / "ModelNet"
  for name in ("chair_0001.off", "chair_0002.off"):
    (root / "chair" / "train").mkdir(parents=True, exist_ok=True)
    (root / "chair" / "train" / name).write_text(_TET_OFF)
  bad = root / "chair" / "train" / "chair_0003.off"
  bad.write_text(_TET_OFF.replace("0 0 1\n", "0 0 inf\n"))
  err = _raises(CollectionError, lambda: cols.load_modelnet_tree(root), "chair_0003.off", "NaN/inf",
                "1 bad file(s) (2 good)", "skip_bad=True")
  assert err.problems == [(str(bad), err.problems[0][1])] and "NaN/inf" in err.problems[0][1]
  with caplog.at_level(logging.WARNING):
    models = cols.load_collection(f"modelnet:{root}:train", skip_bad=True)
  assert [m.cad_index for m in models] == [1, 2] and "chair_0003.off" in caplog.text


def test_pascal3d_mat_with_one_bad_model(tmp_path, caplog):
  cad = tmp_path / "CAD"
  cad.mkdir()
  good = (_TET_V, _TET_F + 1)
  _cad_mat(cad / "chair.mat", [good, (np.where(_TET_V == 1, np.nan, _TET_V), _TET_F + 1), good])
  err = _raises(CollectionError, lambda: cols.load_pascal3d_cad_dir(cad), "chair.mat#2", "NaN/inf",
                "1 bad file(s) (2 good)")
  assert [p for p, _ in err.problems] == [f"{cad / 'chair.mat'}#2"]
  with caplog.at_level(logging.WARNING):
    models = cols.load_pascal3d_cad_dir(cad, skip_bad=True)
  assert [m.key for m in models] == ["chair/01", "chair/03"] and "chair.mat#2" in caplog.text


# ---------------------------------------------------------------------------------------------------------
# Full disk.


class _FillingFile:
  """A binary file whose writes fail with ENOSPC once `room` bytes have been written (a disk filling up)."""

  def __init__(self, f, room: int):
    self._f, self._room = f, room

  def write(self, data) -> int:
    n = len(memoryview(data).cast("B"))
    if n > self._room:
      self._f.write(bytes(memoryview(data).cast("B")[:self._room]))  # Part of it lands, as on a real disk.
      self._room = 0
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    self._room -= n
    return self._f.write(data)

  def __getattr__(self, name):
    return getattr(self._f, name)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    return self._f.__exit__(*exc)


@pytest.fixture
def full_disk(monkeypatch):
  """Makes the atomic writer's temporary file fail with ENOSPC after 100 bytes; yields the temp paths made."""
  made = []
  real_mkstemp, real_fdopen = voxels.tempfile.mkstemp, os.fdopen

  def mkstemp(*args, **kwargs):
    fd, name = real_mkstemp(*args, **kwargs)
    made.append(name)
    return fd, name
  monkeypatch.setattr(voxels.tempfile, "mkstemp", mkstemp)
  monkeypatch.setattr(voxels.os, "fdopen", lambda fd, *a, **k: _FillingFile(real_fdopen(fd, *a, **k), 100))
  return made


def _bank() -> voxel_bank.VoxelBank:
  rng = np.random.default_rng(0)
  return voxel_bank.VoxelBank(volumes=rng.integers(0, 2, (2, 8, 8, 8)), categories=["chair", "car"],
                              cad_indices=[1, 1], sources=["a.off", "b.off"], names=["chair/01", "car/01"],
                              symmetries=[None, None],
                              normalizations=[{"center": [0, 0, 0], "scale": 1.0}] * 2,
                              resolution=8, fingerprint="f")


def test_full_disk_during_voxel_bank_save(tmp_path, full_disk):
  path = tmp_path / "bank.npz"
  err = _raises(OSError, lambda: _bank().save(path), str(path), "No space left on device")
  assert err.errno == errno.ENOSPC
  assert len(full_disk) == 1 and full_disk[0].startswith(str(tmp_path / ".bank.npz."))  # A temp file...
  assert os.listdir(tmp_path) == []  # ... and removed it; nothing under the final name either.


def test_full_disk_keeps_the_old_bank_and_binvox(tmp_path, request):
  bank = _bank()
  path = bank.save(tmp_path / "bank.npz")
  old = pathlib.Path(path).read_bytes()
  voxels.write_binvox(tmp_path / "a.binvox", np.ones((8, 8, 8), bool))
  old_binvox = (tmp_path / "a.binvox").read_bytes()
  request.getfixturevalue("full_disk")  # The disk fills up from here on.
  _raises(OSError, lambda: bank.save(path), "bank.npz", "No space left on device")
  err = _raises(OSError, lambda: voxels.write_binvox(tmp_path / "a.binvox", np.zeros((64, 64, 64), bool)),
                "a.binvox", "No space left on device")
  assert err.errno == errno.ENOSPC
  assert pathlib.Path(path).read_bytes() == old and (tmp_path / "a.binvox").read_bytes() == old_binvox
  assert sorted(os.listdir(tmp_path)) == ["a.binvox", "bank.npz"]
  np.testing.assert_array_equal(voxel_bank.VoxelBank.load(path).volumes, bank.volumes)  # Still whole.


# ---------------------------------------------------------------------------------------------------------
# Pascal3D+ annotations.

_EMPTY = np.zeros((0, 0))


def _num(x) -> np.ndarray:
  return np.array([[x]], np.float64)


def _struct(**fields) -> np.ndarray:
  out = np.zeros((1, 1), dtype=[(n, object) for n in fields])
  for n, v in fields.items():
    out[0, 0][n] = v
  return out


def _viewpoint(**changes) -> np.ndarray:
  fields = {"azimuth": _num(30.0), "elevation": _num(10.0), "theta": _num(2.0), "distance": _num(5.0),
            "focal": _num(1.0), "viewport": _num(3000.0), "px": _num(40.0), "py": _num(30.0),
            "azimuth_coarse": _num(30.0), "elevation_coarse": _num(15.0)}
  fields.update(changes)
  return _struct(**fields)


def _object(**changes) -> dict:
  fields = {"class": "aeroplane", "bbox": np.array([[5.0, 6.0, 30.0, 20.0]]), "truncated": _num(0),
            "occluded": _num(0), "difficult": _num(0), "cad_index": _num(1), "viewpoint": _viewpoint()}
  fields.update(changes)
  return {k: v for k, v in fields.items() if v is not None}


def _record(objects=None, **changes):
  fields = {"filename": "2008_000100.jpg", "imgsize": np.array([[64.0, 48.0, 3.0]]), "database": "VOC",
            "objects": objects if objects is not None else _struct(**_object())}
  fields.update(changes)
  return _struct(**fields)


def _cell(*items) -> np.ndarray:
  c = np.empty((1, len(items)), object)
  for i, item in enumerate(items):
    c[0, i] = item
  return c


_BAD_ANNOTATIONS = {
    "reversed_bndbox": (lambda: _record(_struct(**_object(bbox=None, bndbox=_struct(
        xmin=_num(30), ymin=_num(20), xmax=_num(5), ymax=_num(6))))),
                        "record.objects(1).bndbox", "empty box"),
    "complex_azimuth": (lambda: _record(_struct(**_object(viewpoint=_viewpoint(
        azimuth=np.array([[1 + 2j]]))))), "record.objects(1).viewpoint.azimuth", "expected a number"),
    "nan_coarse_angles": (lambda: _record(_struct(**_object(viewpoint=_viewpoint(
        distance=_num(0), azimuth_coarse=_num(np.nan), elevation_coarse=_num(np.nan))))),
                          "viewpoint.azimuth_coarse", "finite"),
    "record_is_a_string": (lambda: "just text", "record", "expected a struct"),
    "objects_cell_of_numbers": (lambda: _record(_cell(_num(1), _num(2))), "record.objects(1)",
                                "expected a struct"),
    "tiny_focal": (lambda: _record(_struct(**_object(viewpoint=_viewpoint(focal=_num(1e-300)))))
                   , "record.objects(1).viewpoint", "implausible camera"),
    "huge_depth": (lambda: _record(imgsize=np.array([[64.0, 48.0, 1e300]])), "record.imgsize",
                   "positive integer width, height, depth"),
}


@pytest.mark.parametrize("name", sorted(_BAD_ANNOTATIONS))
def test_bad_annotation_fields(tmp_path, name):
  make, field, problem = _BAD_ANNOTATIONS[name]
  path = tmp_path / "aeroplane_pascal" / "2008_000100.mat"
  path.parent.mkdir()
  scipy.io.savemat(str(path), {"record": make()})
  _raises(AnnotationError, lambda: ann.read_annotation(path), str(path), field, problem)


def test_annotation_seed_is_good(tmp_path):
  path = tmp_path / "aeroplane_pascal" / "2008_000100.mat"
  path.parent.mkdir()
  scipy.io.savemat(str(path), {"record": _record()})
  assert ann.read_annotation(path).objects[0].has_pose


def test_annotation_claiming_millions_of_records(tmp_path):
  path = tmp_path / "aeroplane_pascal" / "2008_000100.mat"
  path.parent.mkdir()
  scipy.io.savemat(str(path), {"record": _record()})
  _patch_dims(path, (8519681, 2))
  _raises(AnnotationError, lambda: ann.read_annotation(path), str(path), "not a readable MATLAB .mat file",
          "corrupt", "claims 68157448 elements")  # 17,039,362 records of 4 fields


# ---------------------------------------------------------------------------------------------------------
# Images.


def _jpeg() -> bytes:
  buf = io.BytesIO()
  Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, "JPEG")
  return buf.getvalue()


def _png() -> bytes:
  buf = io.BytesIO()
  Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, "PNG")
  return buf.getvalue()


@pytest.mark.parametrize("name,content,problem", [
    ("absent.jpg", None, "no such image file"),
    ("folder.jpg", "dir", "not a regular file"),
    ("empty.jpg", b"", "empty file"),
    ("notes.jpg", b"this is not an image\n" * 5, "not an image file"),
    ("truncated.jpg", _jpeg()[:300], "truncated or corrupt"),
    ("truncated.png", _png()[:200], "truncated or corrupt"),
])
def test_bad_image_files(tmp_path, name, content, problem):
  path = tmp_path / name
  if content == "dir":
    path.mkdir()
  elif content is not None:
    path.write_bytes(content)
  _raises(ImageError, lambda: image_io.load_image(path), name, problem)
  if isinstance(content, bytes):  # The same bytes in memory are named by the caller's name.
    _raises(ImageError, lambda: image_io.load_image(content, name="upload#3"), "upload#3",
            "empty data" if not content else problem)


@pytest.mark.parametrize("array,problem", [
    (np.zeros((0, 5, 3), np.uint8), "zero-size image"),
    (np.zeros((5, 0), np.uint8), "zero-size image"),
    (np.zeros((4, 4, 5), np.uint8), "has shape (4, 4, 5)"),
    (np.zeros((2, 2, 2, 2), np.uint8), "has shape (2, 2, 2, 2)"),
    (np.zeros(12, np.uint8), "has shape (12,)"),
    (np.zeros((4, 4, 3), np.int32), "unsupported image dtype int32"),
    (np.zeros((4, 4, 3), np.complex64), "unsupported image dtype complex64"),
    (np.zeros((4, 4), object), "unsupported image dtype object"),
    (np.full((4, 4, 3), np.nan), "48 NaN/inf"),
    (np.array([[0.5, np.inf]]), "1 NaN/inf"),
    (np.array([[0.5, 1.5]]), "must lie in [0, 1], got [0.5, 1.5]"),
    (np.array([[-0.1, 0.5]], np.float32), "must lie in [0, 1]"),
    (Image.new("RGB", (0, 0)), "zero-size image (0x0)"),
    ([[1, 2], [3, 4]], "cannot load an image from a list"),
])
def test_bad_image_arrays(array, problem):
  _raises(ImageError, lambda: image_io.load_image(array, name="frame_7"), "frame_7", problem)


# ---------------------------------------------------------------------------------------------------------
# Boxes.


@pytest.mark.parametrize("box,problem", [
    ((-10, 1, -2, 3), "lies entirely outside the 7x5 image"),  # left
    ((8, 1, 12, 3), "lies entirely outside the 7x5 image"),  # right
    ((1, -9, 3, -1), "lies entirely outside the 7x5 image"),  # above
    ((1, 5, 3, 9), "lies entirely outside the 7x5 image"),  # below: touches the bottom edge only
    ((-3, 1, 0, 3), "lies entirely outside the 7x5 image"),  # touches the left edge only
    ((2, 2, 2, 4), "is empty"),  # zero width
    ((2, 3, 4, 3), "is empty"),  # zero height
    ((4, 4, 2, 2), "is empty"),  # reversed
    ((1, np.nan, 2, 3), "must be 4 finite numbers"),
    ((1, 1, np.inf, 3), "must be 4 finite numbers"),
    ((1, 2, 3), "must be 4 finite numbers"),
    ("1 2 3 4", "must be 4 numbers"),
])
def test_bad_boxes(box, problem):
  err = _raises(ImageError, lambda: image_io.check_bbox(box, (5, 7, 3), source="2008_000100.mat#2"),
                "2008_000100.mat#2: bbox", problem)
  if "outside" in problem:
    assert str(tuple(float(b) for b in box)) in str(err)


def test_bad_image_shape_for_a_box():
  for shape in ((0, 7), (5,), (5, 7, 3, 1), (5.5, 7), ("a", 7), None):
    _raises(ImageError, lambda: image_io.check_bbox((1, 1, 2, 2), shape, source="img.png"), "img.png",
            "bad image shape")


def test_square_crop_of_a_box_outside_is_black():
  crop = crops.square_crop(np.full((5, 7, 3), 200, np.uint8), (20, 20, 24, 24), 4)
  assert crop.shape == (4, 4, 3) and not crop.any()


# ---------------------------------------------------------------------------------------------------------
# Configs.


@pytest.mark.parametrize("path,value,expected", [
    ("train.batchsize", 32, "train.batchsize=32: unknown key; allowed: did you mean train.batch_size?"),
    ("model.disentangle", "no", "model.disentangle='no': wrong type str; allowed: a bool"),
    ("train.learning_rate", -1e-3, "train.learning_rate=-0.001: out of range; allowed: a finite number > 0"),
    ("anchors.n", 20, "anchors.n=20: out of range; allowed: an integer in 1..12"),
])
def test_bad_configs(path, value, expected):
  config = default.get_config().to_dict()
  section, key = path.split(".")
  config[section][key] = value
  _raises(ConfigError, lambda: config_check.validate(config, stage="embedder"), expected)


def test_batch_not_divisible_by_device_count():
  train_lib.check_batch_divisible(64, 8)
  _raises(ConfigError, lambda: train_lib.check_batch_divisible(64, 3), "train.batch_size=64",
          "positive multiple of the device count (3)")
  _raises(ConfigError, lambda: train_lib.check_batch_divisible(0, 1, "regressor_train.batch_size"),
          "regressor_train.batch_size=0", "positive multiple")
