"""CAD collections: Pascal3D+ (.off and .mat), ModelNet trees, plain folders, spec strings, bad files."""

import logging
import os
import sys
import time
import types

import numpy as np
import pytest

import disent_jax.cad
from disent_jax import categories
from disent_jax.cad import collections as cols
from disent_jax.cad import mesh_io
from disent_jax.errors import CollectionError, ConfigError

_GOOD_OFF = "OFF\n4 4 0\n0 0 0\n1 0 0\n0 1 0\n0 0 1\n3 0 1 2\n3 0 1 3\n3 0 2 3\n3 1 2 3\n"


def _link(src, dst):
  """Symlinks a real file into a tmp layout (no copy of the shared data)."""
  dst.parent.mkdir(parents=True, exist_ok=True)
  os.symlink(src, dst)
  return dst


def _check_model(m):
  v = m.mesh.vertices[np.unique(m.mesh.faces)]
  np.testing.assert_allclose((v.min(0) + v.max(0)) / 2, 0.0, atol=1e-9)
  assert np.sqrt((v ** 2).sum(1)).max() == pytest.approx(0.5, abs=1e-12)
  assert m.name == f"{m.category}/{m.cad_index:02d}" == m.key


# ---------------------------------------------------------------------------------------------------------
# Pascal3D+.


def test_pascal3d_one_category(shared_data):
  models = cols.load_pascal3d_cad_dir(shared_data / "pascal3d_cad_off", categories=["car"])
  assert [m.cad_index for m in models] == [1, 3, 4, 5, 6, 8]  # real numbers kept across the gaps
  for m in models:
    assert m.category == "car"
    assert m.source == str(shared_data / "pascal3d_cad_off" / "car" / f"{m.cad_index:02d}.off")
    _check_model(m)
    raw_v, _ = mesh_io.read_raw_mesh(m.source)
    np.testing.assert_allclose(m.normalization.invert(m.mesh.vertices), raw_v, atol=1e-12)


def test_pascal3d_all_75_real_meshes(shared_data):
  start = time.perf_counter()
  models = cols.load_pascal3d_cad_dir(shared_data / "pascal3d_cad_off")
  elapsed = time.perf_counter() - start
  assert len(models) == 75
  order = [categories.CATEGORIES.index(m.category) for m in models]
  assert order == sorted(order)
  counts = {c: sum(m.category == c for m in models) for c in categories.CATEGORIES}
  assert counts == {"aeroplane": 8, "bicycle": 6, "boat": 6, "bottle": 8, "bus": 6, "car": 6, "chair": 10,
                    "diningtable": 6, "motorbike": 5, "sofa": 6, "train": 4, "tvmonitor": 4}
  assert len({m.key for m in models}) == 75
  for m in models:
    _check_model(m)
  assert elapsed < 20.0, elapsed  # ~2 s here


def test_pascal3d_mat_release_layout(shared_data, tmp_path):
  # The original release: CAD/<category>.mat with no per-model folder; plus one category as .off files.
  cad = tmp_path / "CAD"
  _link(shared_data / "pascal3d_cad_mat_fixtures" / "tvmonitor.mat", cad / "tvmonitor.mat")
  _link(shared_data / "pascal3d_cad_mat_fixtures" / "diningtable.mat", cad / "diningtable.mat")
  for k in (1, 4):
    name = f"{k:02d}.off"
    _link(shared_data / "pascal3d_cad_off" / "diningtable" / name, cad / "diningtable" / name)
  models = cols.load_pascal3d_cad_dir(cad)
  # diningtable: the folder wins over the .mat; tvmonitor: 1-based positions in the .mat.
  assert [m.key for m in models] == ["diningtable/01", "diningtable/04", "tvmonitor/01", "tvmonitor/02",
                                     "tvmonitor/03", "tvmonitor/04"]
  for m in models[2:]:
    assert m.source == f"{cad / 'tvmonitor.mat'}#{m.cad_index}"
    off = mesh_io.load_mesh(shared_data / "pascal3d_cad_off" / "tvmonitor" / f"{m.cad_index:02d}.off")
    np.testing.assert_array_equal(m.mesh.vertices, off.vertices)
    np.testing.assert_array_equal(mesh_io.load_mesh(m.source).vertices, off.vertices)  # source reloads
    _check_model(m)
  # The release root (holding CAD/) is accepted too.
  assert [m.key for m in cols.load_pascal3d_cad_dir(tmp_path)] == [m.key for m in models]


def test_pascal3d_bad_files_all_listed(shared_data, tmp_path):
  cad = tmp_path / "CAD"
  _link(shared_data / "pascal3d_cad_off" / "chair" / "04.off", cad / "chair" / "04.off")
  (cad / "chair" / "05.off").write_text("OFF\n3 1 0\n0 0 0\n1 0 0\n")  # truncated
  (cad / "sofa.mat").write_bytes(b"not a mat file" * 20)
  with pytest.raises(CollectionError) as info:
    cols.load_pascal3d_cad_dir(cad)
  paths = [p for p, _ in info.value.problems]
  assert paths == [str(cad / "chair" / "05.off"), str(cad / "sofa.mat")]
  assert "05.off" in str(info.value) and "sofa.mat" in str(info.value)
  models = cols.load_pascal3d_cad_dir(cad, skip_bad=True)
  assert [m.key for m in models] == ["chair/04"]


def test_pascal3d_missing_or_empty_root(tmp_path):
  with pytest.raises(CollectionError, match="no such directory"):
    cols.load_pascal3d_cad_dir(tmp_path / "absent")
  with pytest.raises(CollectionError, match="no Pascal3D"):
    cols.load_pascal3d_cad_dir(tmp_path)
  with pytest.raises(ConfigError, match="unknown Pascal3D"):
    cols.load_pascal3d_cad_dir(tmp_path, categories=["cat"])


# ---------------------------------------------------------------------------------------------------------
# ModelNet trees and folders.


@pytest.fixture
def modelnet_tree(shared_data, tmp_path):
  src = shared_data / "modelnet_samples"
  root = tmp_path / "ModelNet"
  _link(src / "ModelNet10" / "bed_0001.off", root / "bed" / "train" / "bed_0001.off")
  _link(src / "ModelNet10" / "chair_0890.off", root / "chair" / "test" / "chair_0890.off")
  _link(src / "ModelNet40_original" / "stool_0002.off", root / "chair" / "train" / "chair_0002.off")
  _link(src / "ModelNet40_original" / "airplane" / "airplane_0006.off",
        root / "airplane" / "test" / "airplane_0006.off")
  _link(src / "ModelNet40_original" / "airplane" / "airplane_0005.off",
        root / "airplane" / "train" / "airplane_0005.off")
  (root / "airplane" / "train" / "README.txt").write_text("not a mesh")
  return root


def test_modelnet_tree_splits(modelnet_tree):
  train = cols.load_modelnet_tree(modelnet_tree, "train")
  test = cols.load_modelnet_tree(modelnet_tree, split="test")
  both = cols.load_modelnet_tree(modelnet_tree, "all")
  assert [(m.key, os.path.basename(m.source)) for m in train] == [
      ("airplane/01", "airplane_0005.off"), ("bed/01", "bed_0001.off"), ("chair/01", "chair_0002.off")]
  assert [m.key for m in test] == ["airplane/02", "chair/02"]  # cad_index is the same in every split
  assert sorted(m.key for m in both) == sorted(m.key for m in train + test)
  for m in both:
    _check_model(m)
    assert m.source.startswith(str(modelnet_tree))
  with pytest.raises(ConfigError, match="split"):
    cols.load_modelnet_tree(modelnet_tree, "val")


def test_mesh_folder_shapenet(shared_data):
  models = cols.load_mesh_folder(shared_data / "shapenet_samples")
  assert [m.category for m in models] == ["02691156_1caa02b831cccff090baeef8ba5b93e5",
                                          "03001627_21bfb150cfc23accb01c58badc8bbc39"]
  assert all(m.cad_index == 1 and m.source.endswith("model.obj") for m in models)
  for m in models:
    _check_model(m)


def test_mesh_folder_flat_with_two_bad_files(shared_data, tmp_path, caplog):
  _link(shared_data / "pascal3d_cad_off" / "chair" / "04.off", tmp_path / "b_chair.off")
  (tmp_path / "a_tetra.off").write_text(_GOOD_OFF)
  (tmp_path / "c_broken.off").write_text("OFF\n4 4 0\n0 0 0\n1 0 0\n")
  (tmp_path / "d_nan.obj").write_text("v 0 0 nan\nv 1 0 0\nv 0 1 0\nv 0 0 1\nf 1 2 3\nf 1 2 4\n")
  (tmp_path / "notes.txt").write_text("ignored")
  with pytest.raises(CollectionError) as info:
    cols.load_mesh_folder(tmp_path)
  err = info.value
  assert [os.path.basename(p) for p, _ in err.problems] == ["c_broken.off", "d_nan.obj"]
  assert "announces 4 vertices" in err.problems[0][1] and "NaN" in err.problems[1][1]
  assert "c_broken.off" in str(err) and "d_nan.obj" in str(err) and "2 bad file(s)" in str(err)
  with caplog.at_level(logging.WARNING):
    models = cols.load_mesh_folder(tmp_path, skip_bad=True)
  assert [(m.category, m.cad_index, os.path.basename(m.source)) for m in models] == [
      ("object", 1, "a_tetra.off"), ("object", 2, "b_chair.off")]
  warned = caplog.text
  assert "c_broken.off" in warned and "d_nan.obj" in warned


def test_mesh_folder_empty(tmp_path):
  with pytest.raises(CollectionError, match="no mesh files"):
    cols.load_mesh_folder(tmp_path)


# ---------------------------------------------------------------------------------------------------------
# Spec strings.


def test_load_collection_specs(shared_data, modelnet_tree, tmp_path):
  cad = tmp_path / "CAD"
  _link(shared_data / "pascal3d_cad_mat_fixtures" / "tvmonitor.mat", cad / "tvmonitor.mat")
  assert len(cols.load_collection(f"pascal3d:{cad}")) == 4
  assert [m.key for m in cols.load_collection(f"modelnet:{modelnet_tree}:test")] == ["airplane/02",
                                                                                    "chair/02"]
  assert len(cols.load_collection(f"modelnet:{modelnet_tree}")) == 3  # default split: train
  assert len(cols.load_collection(f"folder:{shared_data / 'shapenet_samples'}")) == 2


def test_load_collection_zoo_dispatch(monkeypatch):
  calls = []
  fake = types.ModuleType("disent_jax.cad.zoo")
  fake.procedural_zoo = lambda *args: calls.append(args) or ["model"]
  monkeypatch.setitem(sys.modules, "disent_jax.cad.zoo", fake)
  monkeypatch.setattr(disent_jax.cad, "zoo", fake, raising=False)
  assert cols.load_collection("zoo") == ["model"]
  assert cols.load_collection("zoo:7") == ["model"]
  assert calls == [(), (7,)]


@pytest.mark.parametrize("spec,problem", [
    ("", "empty"), ("shapenet:/x", "unknown CAD collection spec"), ("zoo:abc", "bad zoo seed"),
    ("folder:", "no path"), ("/just/a/path", "unknown CAD collection spec"),
])
def test_load_collection_bad_specs(spec, problem):
  with pytest.raises(ConfigError, match=problem):
    cols.load_collection(spec)


def test_load_collection_passes_skip_bad(tmp_path):
  (tmp_path / "good.off").write_text(_GOOD_OFF)
  (tmp_path / "bad.off").write_text("")
  with pytest.raises(CollectionError):
    cols.load_collection(f"folder:{tmp_path}")
  assert [m.source for m in cols.load_collection(f"folder:{tmp_path}", skip_bad=True)] == [
      str(tmp_path / "good.off")]
