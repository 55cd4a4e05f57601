"""Tests of the synthetic dataset: crops, viewpoint sampling, the TFDS builder (round trip, determinism,
label consistency, atomic builds)."""

from __future__ import annotations

import dataclasses
import json
import pathlib

import numpy as np
import pytest
import tensorflow_datasets as tfds

from disent_jax import geometry
from disent_jax.datasets import crops
from disent_jax.datasets import synthetic
from disent_jax.datasets import viewpoints
from disent_jax.errors import ConfigError, ImageError
from disent_jax.render import Camera, RaycastRenderer, project, projected_bbox

import _helpers

# A tiny dataset: ray casting (no GL context in the test process), flags made frequent so that every
# branch (occluded, truncated, clean) appears among 20 examples.
TINY = _helpers.tiny_synthetic_settings(seed=3, p_occlude=0.4, p_truncate=0.3)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> str:
  return synthetic.build_synthetic(tmp_path_factory.mktemp("synth"), TINY, progress=False)


@pytest.fixture(scope="module")
def database():
  models = synthetic.load_database(TINY.cad_source)
  return models, synthetic.database_categories(models)


def _read_all(path: str, split: str) -> list[dict]:
  src = tfds.builder_from_directory(path).as_data_source(split)
  return [src[i] for i in range(len(src))]


# ----------------------------------------------------------------------------------------------- crops


def _image(h=40, w=50, seed=0) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_square_crop_integer_box_is_exact_copy():
  img = _image()
  np.testing.assert_array_equal(crops.square_crop(img, (10, 5, 26, 21), 16), img[5:21, 10:26])


def test_square_crop_pads_with_zeros_outside_the_image():
  img = _image()
  ref = np.zeros((16, 16, 3), np.uint8)
  ref[3:, 4:] = img[0:13, 0:12]
  np.testing.assert_array_equal(crops.square_crop(img, (-4, -3, 12, 13), 16), ref)
  ref = np.zeros((16, 16, 3), np.uint8)
  ref[:8, :10] = img[32:40, 40:50]
  np.testing.assert_array_equal(crops.square_crop(img, (40, 32, 56, 48), 16), ref)


def test_square_crop_extends_the_short_side_about_the_centre():
  img = _image()
  # 16 x 8 box centred at (18, 9): the square is y in [1, 17).
  np.testing.assert_array_equal(crops.square_crop(img, (10, 5, 26, 13), 16), img[1:17, 10:26])
  # 6 x 16 box centred at (33, 20): the square is x in [25, 41).
  np.testing.assert_array_equal(crops.square_crop(img, (30, 12, 36, 28), 16), img[12:28, 25:41])


def test_square_crop_half_pixel_shift_is_the_bilinear_average():
  img = _image().astype(np.float64)
  out = crops.square_crop(img.astype(np.uint8), (10.5, 5, 26.5, 21), 16).astype(np.float64)
  ref = 0.5 * (img[5:21, 10:26] + img[5:21, 11:27])
  assert np.abs(out - ref).max() <= 1.0  # uint8 rounding only


def test_square_crop_grey_and_bad_inputs():
  grey = _image()[..., 0]
  np.testing.assert_array_equal(crops.square_crop(grey, (0, 0, 8, 8), 8),
                                np.repeat(grey[:8, :8, None], 3, axis=2))
  with pytest.raises(ImageError, match="empty"):
    crops.square_crop(_image(), (5, 5, 5, 9), 8)
  with pytest.raises(ImageError, match="finite"):
    crops.square_crop(_image(), (0, 0, np.nan, 9), 8)
  with pytest.raises(ImageError, match="uint8"):
    crops.square_crop(_image().astype(np.float32), (0, 0, 8, 8), 8)
  with pytest.raises(ImageError, match="size"):
    crops.square_crop(_image(), (0, 0, 8, 8), 0)


def test_crop_camera_maps_full_image_points_into_the_crop():
  cam = Camera(fx=70.0, fy=64.0, cx=37.3, cy=26.6, width=72, height=56)
  bbox = np.array([10.2, 7.9, 41.5, 30.0])
  size = 24
  ccam = crops.crop_camera(cam, bbox, size)
  x0, y0, x1, _ = crops.square_box(bbox)
  rng = np.random.default_rng(0)
  pts = rng.uniform(-0.4, 0.4, (20, 3))
  R, t = viewpoints.haar_rotation(rng), np.array([0.1, -0.05, 2.5])
  uv = project(pts, R, t, cam)
  np.testing.assert_allclose(project(pts, R, t, ccam), (uv - [x0, y0]) * size / (x1 - x0), atol=1e-9)


def test_jitter_bbox_is_detector_like_and_clipped():
  rng = np.random.default_rng(0)
  box = np.array([20.0, 10.0, 60.0, 40.0])
  ious = [crops.box_iou(box, crops.jitter_bbox(rng, box, scale=0.1, shift=0.1)) for _ in range(500)]
  assert min(ious) > 0.6 and 0.75 < np.mean(ious) < 0.95
  np.testing.assert_array_equal(crops.jitter_bbox(rng, box, scale=0.0, shift=0.0), box)
  for _ in range(100):
    j = crops.jitter_bbox(rng, [0.0, 0.0, 8.0, 6.0], scale=0.5, shift=0.5, image_size=(20, 30))
    assert j[0] >= 0 and j[1] >= 0 and j[2] <= 30 and j[3] <= 20
    assert j[2] - j[0] >= 2 - 1e-9 and j[3] - j[1] >= 2 - 1e-9


# ------------------------------------------------------------------------------------------ viewpoints


def test_photo_viewpoints_statistics():
  dist = viewpoints.ViewpointDistribution()
  rng = np.random.default_rng(0)
  vps = [viewpoints.sample_viewpoint(rng, dist) for _ in range(3000)]
  az, el, th = np.array([v.angles for v in vps]).T
  assert az.min() >= 0 and az.max() < 2 * np.pi
  assert abs(np.mean(np.cos(az))) < 0.06 and abs(np.mean(np.sin(az))) < 0.06  # uniform azimuth
  assert np.histogram(az, bins=8, range=(0, 2 * np.pi))[0].min() > 3000 / 8 * 0.8
  el_deg, th_deg = np.degrees(el), np.degrees(th)
  assert dist.elevation_min <= el_deg.min() and el_deg.max() <= dist.elevation_max
  assert 8.0 < el_deg.mean() < 14.0 and 9.0 < el_deg.std() < 13.0  # truncation shifts N(10, 12) a bit
  assert np.mean(el_deg > 0) > 0.75  # mostly from above
  assert abs(th_deg).max() <= dist.theta_limit and 4.0 < th_deg.std() < 6.0
  for v in vps[:20]:  # R_cv is geometry's rotation of those angles, and the angles read back.
    ref = np.asarray(geometry.viewpoint_to_camera_rotation(v.azimuth, v.elevation, v.theta))
    np.testing.assert_allclose(v.rotation, ref, atol=1e-6)
    np.testing.assert_allclose(viewpoints.rotation_viewpoint(v.rotation), v.angles, atol=1e-9)


def test_uniform_viewpoints_are_haar():
  rng = np.random.default_rng(1)
  rs = np.array([viewpoints.sample_viewpoint(rng, viewpoints.ViewpointDistribution(mode="uniform"))
                 .rotation for _ in range(3000)])
  np.testing.assert_allclose(np.einsum("nij,nkj->nik", rs, rs), np.broadcast_to(np.eye(3), rs.shape),
                             atol=1e-12)
  assert np.abs(rs.mean(axis=0)).max() < 0.05  # E[R] = 0 under the Haar measure
  # The rotation angle of a Haar rotation has density (1 - cos a) / pi: mean pi/2 + 2/pi.
  angles = np.arccos(np.clip((np.trace(rs, axis1=1, axis2=2) - 1) / 2, -1, 1))
  assert abs(angles.mean() - (np.pi / 2 + 2 / np.pi)) < 0.04
  el = np.array([viewpoints.rotation_viewpoint(r)[1] for r in rs[:500]])
  assert abs(np.mean(np.sin(el))) < 0.08  # elevation is not biased upwards here


def test_viewpoint_distribution_rejects_bad_values():
  with pytest.raises(ConfigError):
    viewpoints.ViewpointDistribution(mode="random")
  with pytest.raises(ConfigError):
    viewpoints.ViewpointDistribution(elevation_min=30, elevation_max=10)


# -------------------------------------------------------------------------------------------- dataset


def test_settings_validation_and_names():
  with pytest.raises(ConfigError, match="crop_size"):
    dataclasses.replace(TINY, crop_size=0)
  with pytest.raises(ConfigError, match="p_occlude"):
    dataclasses.replace(TINY, p_occlude=1.5)
  with pytest.raises(ConfigError, match="unknown"):
    synthetic.build_synthetic("/nonexistent", TINY, no_such_setting=1)
  assert TINY.config_name != dataclasses.replace(TINY, seed=4).config_name
  assert synthetic.SyntheticSettings.from_dict(json.loads(json.dumps(TINY.to_dict()))) == TINY


def test_round_trip_every_feature(tiny_dir, database):
  """What is written is what is read: every example regenerated in memory matches, images exactly."""
  models, categories = database
  info = tfds.builder_from_directory(tiny_dir).info
  assert {k: v.num_examples for k, v in info.splits.items()} == {"train": 12, "validation": 4, "test": 4}
  names = info.features["category"].names
  assert tuple(names) == categories
  assert info.metadata["settings"] == TINY.to_dict()
  renderer = RaycastRenderer()
  for split in synthetic.SPLITS:
    for i, got in enumerate(_read_all(tiny_dir, split)):
      ref = synthetic.render_example(TINY, models, categories, split, i, renderer)
      assert got["instance_id"].decode() == ref["instance_id"] == f"{split}/{i:06d}"
      assert names[got["category"]] == ref["category"]
      for key in ("image", "crop"):
        np.testing.assert_array_equal(got[key], ref[key], err_msg=f"{split}/{i} {key}")
      for key in ("bbox", "bbox_area", "cad_index", "quaternion", "viewpoint", "translation",
                  "translation_camera", "intrinsics", "occluded", "truncated", "difficult"):
        np.testing.assert_array_equal(got[key], ref[key], err_msg=f"{split}/{i} {key}")


def test_build_is_deterministic_and_seed_dependent(tiny_dir, tmp_path):
  again = synthetic.build_synthetic(tmp_path, dataclasses.replace(TINY, num_validation=0, num_test=0),
                                    progress=False)
  a, b = _read_all(tiny_dir, "train"), _read_all(again, "train")
  for x, y in zip(a, b):  # Example i depends on (seed, split, i) only: other splits' sizes don't matter.
    for key in x:
      np.testing.assert_array_equal(x[key], y[key])
  other = synthetic.build_synthetic(tmp_path, dataclasses.replace(TINY, seed=4, num_validation=0,
                                                                  num_test=0), progress=False)
  c = _read_all(other, "train")
  assert not all(np.array_equal(x["image"], z["image"]) for x, z in zip(a, c))


def test_labels_are_consistent(tiny_dir, database):
  models, categories = database
  by_key = {(m.category, m.cad_index): m for m in models}
  seen = {"clean": 0, "occluded": 0, "truncated": 0}
  for split in synthetic.SPLITS:
    for ex in _read_all(tiny_dir, split):
      K, bbox = ex["intrinsics"].astype(np.float64), ex["bbox"].astype(np.float64)
      q = ex["quaternion"].astype(np.float64)
      assert abs(np.linalg.norm(q) - 1) < 1e-6 and q[0] >= 0
      R = np.asarray(geometry.quat_to_matrix(q), np.float64)
      np.testing.assert_allclose(
          R, np.asarray(geometry.viewpoint_to_camera_rotation(*ex["viewpoint"])), atol=1e-5)
      t_cam = ex["translation_camera"].astype(np.float64)
      np.testing.assert_allclose(
          np.asarray(geometry.crop_to_camera_translation(ex["translation"], bbox, K)), t_cam,
          rtol=1e-5, atol=1e-5)
      assert ex["bbox_area"] == pytest.approx((bbox[2] - bbox[0]) * (bbox[3] - bbox[1]))
      assert 0 <= bbox[0] < bbox[2] <= 64 and 0 <= bbox[1] < bbox[3] <= 64
      np.testing.assert_array_equal(ex["crop"], crops.square_crop(ex["image"], bbox, 32))
      assert not ex["difficult"]
      cam = Camera.from_K(K, 64, 64)
      amodal = projected_bbox(by_key[(categories[ex["category"]], int(ex["cad_index"]))].mesh.vertices,
                              R, t_cam, cam)
      if ex["truncated"]:
        seen["truncated"] += 1
        assert amodal[0] < -0.5 or amodal[1] < -0.5 or amodal[2] > 64.5 or amodal[3] > 64.5
        continue
      if ex["occluded"]:
        seen["occluded"] += 1
        # The visible box lies inside the amodal one.
        assert np.all(bbox[:2] >= amodal[:2] - 1.0) and np.all(bbox[2:] <= amodal[2:] + 1.0)
        continue
      seen["clean"] += 1
      # The mask box (pixel extents) lies within a pixel of the projected vertex box, and nearly fills it:
      # only parts thinner than a pixel (masts, spokes) may stick out of the mask unsampled.
      assert np.all(bbox[:2] >= amodal[:2] - 1.0) and np.all(bbox[2:] <= amodal[2:] + 1.0)
      # (Small boxes: a sub-pixel difference per side already costs IoU, so within a pixel per side passes too.)
    assert crops.box_iou(bbox, amodal) > 0.85 or np.all(np.abs(bbox - amodal) <= 1.0)
  assert min(seen.values()) >= 1, seen


def test_reuses_a_finished_build(tiny_dir, monkeypatch):
  parent = pathlib.Path(tiny_dir).parents[2]
  before = sorted(p.name for p in parent.iterdir())

  def boom(*args, **kwargs):
    raise AssertionError("a finished dataset must be reused, not rendered again")

  monkeypatch.setattr(synthetic, "generate_split", boom)
  assert synthetic.build_synthetic(parent, TINY, progress=False) == tiny_dir
  assert sorted(p.name for p in parent.iterdir()) == before


def test_interrupted_build_leaves_nothing_complete(tmp_path, monkeypatch):
  settings = dataclasses.replace(TINY, num_train=6, num_validation=2, num_test=2, seed=11)
  real = synthetic.render_example
  calls = []

  def flaky(*args, **kwargs):
    calls.append(1)
    if len(calls) == 8:  # Die in the middle of the second split.
      raise KeyboardInterrupt("simulated kill")
    return real(*args, **kwargs)

  monkeypatch.setattr(synthetic, "render_example", flaky)
  with pytest.raises(KeyboardInterrupt):
    synthetic.build_synthetic(tmp_path, settings, progress=False)
  final = synthetic.dataset_dir(tmp_path, settings)
  assert not final.exists() and not synthetic.is_complete(final)
  assert not list(tmp_path.glob(".tmp-*"))  # the temporary build was removed
  # A build killed hard leaves its temporary dir; it never looks complete and is cleaned up later.
  stale = tmp_path / f".tmp-{settings.config_name}-999999999-deadbeef" / "synthetic"
  stale.mkdir(parents=True)
  monkeypatch.setattr(synthetic, "render_example", real)
  path = synthetic.build_synthetic(tmp_path, settings, progress=False)
  assert synthetic.is_complete(path, settings)
  assert not list(tmp_path.glob(".tmp-*"))
  assert len(_read_all(path, "train")) == 6


def test_worker_processes_render_the_same_examples(database):
  """The spawn pool gives the same bytes as rendering in this process."""
  settings = dataclasses.replace(TINY, num_train=3)
  inproc = list(synthetic.generate_split(settings, "train", num_workers=0, progress=False))
  pooled = list(synthetic.generate_split(settings, "train", num_workers=1, progress=False))
  assert [i for i, _ in pooled] == [0, 1, 2]
  for (_, a), (_, b) in zip(inproc, pooled):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
