"""Tests of the aligned ModelNet40 loader and voxel TFDS builder, on miniature `<class>/{train,test}/*.off`
trees."""

from __future__ import annotations

import pathlib
import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds

from disent_jax.cad import collections as cad_collections
from disent_jax.cad import voxels as voxels_lib
from disent_jax.datasets import modelnet40
from disent_jax.errors import ConfigError, ManualDirError, MeshError

import _helpers


@pytest.fixture()
def tree(tmp_path) -> pathlib.Path:
  root = tmp_path / "modelnet40_manually_aligned"
  rng = np.random.default_rng(0)
  for cls, n_train, n_test in (("airplane", 2, 1), ("chair", 1, 2)):
    for part, n, start in (("train", n_train, 1), ("test", n_test, n_train + 1)):
      for k in range(start, start + n):
        extent = rng.uniform(0.2, 1.0, 3) * (10.0 if cls == "airplane" else 1.0)  # Arbitrary units.
        # ModelNet files end lines with '\r\n'; one starts with the one-line header quirk.
        _helpers.write_off(root / cls / part / f"{cls}_{k:04d}.off",
                           *_helpers.box_mesh(extent, rng.uniform(-3, 3, 3)), decimals=4, newline="\r\n",
                           one_line_header=(k == 2))
  return root


def test_entries_match_collection_numbering(tree):
  for split in ("train", "test", "all"):
    models = cad_collections.load_modelnet_tree(tree, split)
    entries = modelnet40.modelnet_entries(tree, split)
    assert [(m.category, m.cad_index, m.source) for m in models] == [(c, i, str(p)) for c, i, p in entries]
  assert [(c, i) for c, i, _ in modelnet40.modelnet_entries(tree, "test")] == [
      ("airplane", 3), ("chair", 2), ("chair", 3)]
  assert [c for c, _, _ in modelnet40.modelnet_entries(tree, "all", classes=("chair",))] == ["chair"] * 3


def test_loader_returns_normalised_cad_models(tree):
  models = modelnet40.load_modelnet40_aligned(tree, "train")
  assert [(m.category, m.cad_index) for m in models] == [("airplane", 1), ("airplane", 2), ("chair", 1)]
  for m in models:
    r = np.linalg.norm(m.mesh.vertices, axis=1).max()
    assert r == pytest.approx(0.5)


def test_up_axis_rotates_mesh_and_normalisation(tree):
  z = modelnet40.load_modelnet40_aligned(tree, "test")
  y = modelnet40.load_modelnet40_aligned(tree, "test", up_axis="y")
  rot = modelnet40.up_rotation("y")
  np.testing.assert_allclose(rot @ [0, 1, 0], [0, 0, 1])
  np.testing.assert_allclose(modelnet40.up_rotation("x") @ [1, 0, 0], [0, 0, 1])
  for a, b in zip(z, y):
    np.testing.assert_allclose(b.mesh.vertices, a.mesh.vertices @ rot.T, atol=1e-12)
    # The stored normalisation maps the rotated source mesh onto the rotated normalised mesh.
    raw = a.normalization.invert(a.mesh.vertices)
    np.testing.assert_allclose(b.normalization.apply(raw @ rot.T), b.mesh.vertices, atol=1e-9)
  with pytest.raises(ConfigError, match="up axis"):
    modelnet40.load_modelnet40_aligned(tree, "test", up_axis="w")


def test_manual_dir_errors(tree, tmp_path):
  with pytest.raises(ManualDirError, match="does not exist") as info:
    modelnet40.check_manual_dir(tmp_path / "nowhere")
  assert "modelnet40_manually_aligned.tar" in str(info.value)
  with pytest.raises(ManualDirError, match="bathtub/train/"):  # All 40 classes by default.
    modelnet40.check_manual_dir(tree)
  shutil.rmtree(tree / "chair" / "test")
  (tree / "chairs").mkdir()
  with pytest.raises(ManualDirError) as info:
    modelnet40.check_manual_dir(tree, ("airplane", "chair"))
  assert "chair/test/" in str(info.value) and "'chairs'" in str(info.value)
  with pytest.raises(ManualDirError):
    modelnet40.build_modelnet40(tree, tmp_path / "data", resolution=4, classes=("airplane", "chair"))
  assert not (tmp_path / "data" / "modelnet40_aligned").exists()
  with pytest.raises(ConfigError, match="classes"):
    modelnet40.make_config(8, classes=("spaceship",))


def test_bad_mesh_names_file(tree, tmp_path):
  bad = tree / "chair" / "train" / "chair_0001.off"
  bad.write_text("OFF\n3 1 0\n0 0 0\n1 1 nan\n0 1 0\n3 0 1 2\n")
  with pytest.raises(MeshError, match="chair_0001.off"):
    list(modelnet40.voxel_examples(tree, "train", 4, ("airplane", "chair")))


def test_build_round_trip(tree, tmp_path):
  res = 8
  out = modelnet40.build_modelnet40(tree, tmp_path / "data", resolution=res, classes=("chair", "airplane"))
  assert out == str(tmp_path / "data" / "modelnet40_aligned" / "res8-airplane-chair" / "1.0.0")
  assert not [p for p in (tmp_path / "data").iterdir() if p.name.startswith(".")]
  assert modelnet40.build_modelnet40(tree, tmp_path / "data", resolution=res,
                                     classes=("airplane", "chair")) == out
  builder = tfds.builder_from_directory(out)
  names = builder.info.features["label"].names
  assert names == list(modelnet40.MODELNET40_CLASSES)
  for split in ("train", "test"):
    src = builder.as_data_source(split)
    models = {f"{m.category}/{split}/{pathlib.Path(m.source).name}": m
              for m in modelnet40.load_modelnet40_aligned(tree, split)}
    got = {}
    for i in range(len(src)):
      ex = src[i]
      got[ex["source"].decode() if isinstance(ex["source"], bytes) else ex["source"]] = ex
    assert set(got) == set(models)
    for key, m in models.items():
      ex = got[key]
      assert ex["voxels"].shape == (res, res, res) and ex["voxels"].dtype == np.uint8
      np.testing.assert_array_equal(ex["voxels"], voxels_lib.voxelize(m.mesh, res).astype(np.uint8))
      assert names[ex["label"]] == m.category and ex["cad_index"] == m.cad_index


def test_real_modelnet_samples_are_z_up(shared_data, tmp_path):
  """The frame finding the module documents: ModelNet models stand on z (chair/stool tall, bed flat in z)."""
  src = shared_data / "modelnet_samples"
  root = tmp_path / "mn"
  for cls, part, path in (("chair", "test", src / "ModelNet10" / "chair_0890.off"),
                          ("stool", "train", src / "ModelNet40_original" / "stool_0002.off"),
                          ("bed", "train", src / "ModelNet10" / "bed_0001.off")):
    (root / cls / part).mkdir(parents=True)
    (root / cls / ("train" if part == "test" else "test")).mkdir(parents=True)
    shutil.copy(path, root / cls / part / path.name)
  res = 16
  for split in ("train", "test"):
    for _, ex in modelnet40.voxel_examples(root, split, res, ("bed", "chair", "stool")):
      occupied = np.argwhere(ex["voxels"])
      extent = occupied.max(axis=0) - occupied.min(axis=0)
      if ex["label"] == "bed":
        assert np.argmin(extent) == 2, extent
      else:
        assert np.argmax(extent) == 2, extent
