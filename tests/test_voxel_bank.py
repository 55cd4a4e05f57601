"""The voxel bank: save/load round trip, the on-disk cache and its fingerprint, lookups, corrupt files."""

import json
import logging
import os
import time

import numpy as np
import pytest
import trimesh

from disent_jax.cad import mesh_io
from disent_jax.cad import model as model_lib
from disent_jax.cad import voxel_bank
from disent_jax.cad import voxels
from disent_jax.errors import MeshError

R = 8


def _zoo_like(category: str, cad_index: int, mesh: trimesh.Trimesh, symmetry=None) -> model_lib.CadModel:
  norm_mesh, norm = model_lib.normalize_mesh(mesh)
  return model_lib.CadModel(category=category, cad_index=cad_index, mesh=norm_mesh, normalization=norm,
                            source=f"zoo:{category}/test{cad_index}", name=f"{category}/test{cad_index}",
                            symmetry=symmetry)


def _file_model(path, category: str, cad_index: int) -> model_lib.CadModel:
  mesh, norm = mesh_io.load_mesh_with_normalization(path)
  return model_lib.CadModel(category=category, cad_index=cad_index, mesh=mesh, normalization=norm,
                            source=str(path), name=f"{category}/{cad_index:02d}")


def _write_off(path, mesh: trimesh.Trimesh) -> None:
  lines = ["OFF", f"{len(mesh.vertices)} {len(mesh.faces)} 0"]
  lines += [" ".join(f"{c:.6f}" for c in v) for v in mesh.vertices]
  lines += ["3 " + " ".join(str(i) for i in f) for f in mesh.faces]
  path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def models():
  return [_zoo_like("bottle", 1, trimesh.creation.cylinder(radius=0.1, height=0.6), "rotational-z"),
          _zoo_like("bottle", 2, trimesh.creation.capsule(height=0.5, radius=0.12), "rotational-z"),
          _zoo_like("tvmonitor", 1, trimesh.creation.box(extents=(0.6, 0.1, 0.4))),
          _zoo_like("chair", 3, trimesh.creation.box(extents=(0.3, 0.3, 0.6)))]


@pytest.fixture
def count_voxelize(monkeypatch):
  calls = []
  real = voxels.voxelize

  def counting(*args, **kwargs):
    calls.append(1)
    return real(*args, **kwargs)

  monkeypatch.setattr(voxels, "voxelize", counting)
  return calls


def _assert_same(a: voxel_bank.VoxelBank, b: voxel_bank.VoxelBank) -> None:
  np.testing.assert_array_equal(a.volumes, b.volumes)
  np.testing.assert_array_equal(a.cad_indices, b.cad_indices)
  assert a.volumes.dtype == b.volumes.dtype == np.uint8 and b.cad_indices.dtype == np.int32
  for field in ("categories", "sources", "names", "symmetries", "normalizations", "resolution",
                "fingerprint", "fill"):
    assert getattr(a, field) == getattr(b, field), field


def test_build_contents_and_lookups(models):
  bank = voxel_bank.build_voxel_bank(models, R, None, progress=False)
  assert bank.volumes.shape == (4, R, R, R) and bank.num_models == len(bank) == 4
  for row, m in enumerate(models):
    np.testing.assert_array_equal(bank.volumes[row], voxels.voxelize(m.mesh, R))
  assert bank.category_names() == ["bottle", "tvmonitor", "chair"]
  assert bank.category_ids().tolist() == [0, 0, 1, 2]
  assert bank.counts() == {"bottle": 2, "tvmonitor": 1, "chair": 1}
  assert bank.index("chair", 3) == 3 and bank.indices("bottle").tolist() == [0, 1]
  np.testing.assert_array_equal(bank.volume("tvmonitor", 1), bank.volumes[2])
  assert bank.symmetries == ["rotational-z", "rotational-z", None, None]
  assert model_lib.Normalization.from_dict(bank.normalizations[2]) == models[2].normalization
  with pytest.raises(KeyError, match=r"bottle has cad indices \[1, 2\]"):
    bank.index("bottle", 7)
  with pytest.raises(KeyError, match="no category 'car'"):
    bank.index("car", 1)
  surface = voxel_bank.build_voxel_bank(models, R, None, fill=False, progress=False)
  assert surface.volumes.sum() < bank.volumes.sum() and surface.fingerprint != bank.fingerprint


def test_save_load_round_trip(models, tmp_path):
  bank = voxel_bank.build_voxel_bank(models, R, None, progress=False)
  path = bank.save(tmp_path / "bank.npz")
  assert path == str(tmp_path / "bank.npz") and os.listdir(tmp_path) == ["bank.npz"]
  back = voxel_bank.VoxelBank.load(path)
  _assert_same(bank, back)
  assert back.path == path


def test_cache_hit_skips_voxelising(models, tmp_path, count_voxelize, caplog):
  first = voxel_bank.build_voxel_bank(models, R, tmp_path, progress=False)
  assert len(count_voxelize) == 4 and first.path and os.path.exists(first.path)
  with caplog.at_level(logging.INFO):
    second = voxel_bank.build_voxel_bank(models, R, tmp_path, progress=False)
  assert len(count_voxelize) == 4  # nothing voxelised again
  assert "cache hit" in caplog.text and second.path == first.path
  _assert_same(first, second)
  # Another resolution, fill mode or model list is another bank.
  voxel_bank.build_voxel_bank(models, R + 2, tmp_path, progress=False)
  voxel_bank.build_voxel_bank(models[:3], R, tmp_path, progress=False)
  assert len(count_voxelize) == 4 + 4 + 3 and len(os.listdir(tmp_path)) == 3


def test_changed_source_file_triggers_rebuild(tmp_path, count_voxelize):
  mesh_dir = tmp_path / "meshes"
  mesh_dir.mkdir()
  path = mesh_dir / "01.off"
  _write_off(path, trimesh.creation.box(extents=(0.5, 0.2, 0.3)))
  cache = tmp_path / "cache"
  bank = voxel_bank.build_voxel_bank([_file_model(path, "sofa", 1)], R, cache, progress=False)
  voxel_bank.build_voxel_bank([_file_model(path, "sofa", 1)], R, cache, progress=False)
  assert len(count_voxelize) == 1
  # Rewrite the file with another shape (and a later mtime, even on coarse-clock file systems).
  _write_off(path, trimesh.creation.box(extents=(0.2, 0.5, 0.3)))
  st = os.stat(path)
  os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
  rebuilt = voxel_bank.build_voxel_bank([_file_model(path, "sofa", 1)], R, cache, progress=False)
  assert len(count_voxelize) == 2 and rebuilt.fingerprint != bank.fingerprint
  assert not np.array_equal(rebuilt.volumes, bank.volumes)
  # Touching the file (same content, new mtime) also rebuilds: the stat is part of the key.
  os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 4_000_000_000))
  voxel_bank.build_voxel_bank([_file_model(path, "sofa", 1)], R, cache, progress=False)
  assert len(count_voxelize) == 3


def test_changed_zoo_mesh_triggers_rebuild(models, tmp_path, count_voxelize):
  voxel_bank.build_voxel_bank(models, R, tmp_path, progress=False)
  changed = list(models)
  changed[0] = _zoo_like("bottle", 1, trimesh.creation.cylinder(radius=0.12, height=0.6), "rotational-z")
  voxel_bank.build_voxel_bank(changed, R, tmp_path, progress=False)
  assert len(count_voxelize) == 8


@pytest.mark.parametrize("damage", ["garbage", "truncate", "empty"])
def test_corrupt_bank_file_names_it(models, tmp_path, damage):
  path = tmp_path / "bank.npz"
  voxel_bank.build_voxel_bank(models, R, None, progress=False).save(path)
  data = path.read_bytes()
  path.write_bytes({"garbage": b"not a bank at all" * 10, "truncate": data[:len(data) // 2],
                    "empty": b""}[damage])
  with pytest.raises(voxel_bank.VoxelBankError, match="corrupt") as err:
    voxel_bank.VoxelBank.load(path)
  assert str(path) in str(err.value)


def test_missing_bank_file(tmp_path):
  with pytest.raises(voxel_bank.VoxelBankError, match="no such voxel bank file"):
    voxel_bank.VoxelBank.load(tmp_path / "nope.npz")


def test_bank_with_wrong_fields_is_rejected(models, tmp_path):
  bank = voxel_bank.build_voxel_bank(models, R, None, progress=False)
  path = bank.save(tmp_path / "bad.npz")
  with np.load(path) as z:
    arrays = dict(z)
  meta = json.loads(str(arrays["meta"]))
  meta["categories"].append("extra")  # one more name than volumes
  np.savez(path, volumes=arrays["volumes"], cad_indices=arrays["cad_indices"],
           meta=np.asarray(json.dumps(meta)))
  with pytest.raises(voxel_bank.VoxelBankError, match="bad.npz.*expected"):
    voxel_bank.VoxelBank.load(path)
  meta["format_version"] = 99
  np.savez(path, volumes=arrays["volumes"], cad_indices=arrays["cad_indices"],
           meta=np.asarray(json.dumps(meta)))
  with pytest.raises(voxel_bank.VoxelBankError, match="format version 99"):
    voxel_bank.VoxelBank.load(path)


def test_corrupt_cached_bank_is_rebuilt(models, tmp_path, count_voxelize, caplog):
  bank = voxel_bank.build_voxel_bank(models, R, tmp_path, progress=False)
  with open(bank.path, "wb") as f:
    f.write(b"junk")
  with caplog.at_level(logging.WARNING):
    again = voxel_bank.build_voxel_bank(models, R, tmp_path, progress=False)
  assert len(count_voxelize) == 8 and "rebuilding" in caplog.text
  _assert_same(bank, voxel_bank.VoxelBank.load(again.path))


def test_bad_model_error_names_its_source(models):
  bad = model_lib.CadModel(category="car", cad_index=1, normalization=models[0].normalization,
                           mesh=trimesh.Trimesh(np.array([[0, 0, 0], [np.nan, 0, 0], [0, 1, 0.0]]),
                                                np.array([[0, 1, 2]]), process=False),
                           source="/some/where/car/01.off", name="car/01")
  with pytest.raises(MeshError, match="/some/where/car/01.off"):
    voxel_bank.build_voxel_bank(models + [bad], R, None, progress=False)
  with pytest.raises(ValueError, match="at least one"):
    voxel_bank.build_voxel_bank([], R, None)


def test_real_pascal3d_bank(shared_data, tmp_path):
  root = shared_data / "pascal3d_cad_off"
  paths = [root / "bus" / "02.off", root / "chair" / "04.off"]
  if not all(p.exists() for p in paths):
    pytest.skip("real meshes absent")
  ms = [_file_model(paths[0], "bus", 2), _file_model(paths[1], "chair", 4)]
  start = time.perf_counter()
  bank = voxel_bank.build_voxel_bank(ms, 16, tmp_path, progress=False)
  assert time.perf_counter() - start < 20
  assert bank.index("chair", 4) == 1 and bank.volumes[0].sum() > bank.volumes[1].sum()
