"""Tests of the grain input pipeline: batches, determinism, resumption, sharding, augmentation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow_datasets as tfds

from disent_jax import geometry
from disent_jax import input_pipeline as ip
from disent_jax.datasets import crops
from disent_jax.datasets import synthetic
from disent_jax.errors import ConfigError

import _helpers

SETTINGS = _helpers.tiny_synthetic_settings(seed=5, p_occlude=0.3, p_truncate=0.2)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
  return synthetic.build_synthetic(tmp_path_factory.mktemp("pipe"), SETTINGS, progress=False)


@pytest.fixture(scope="module")
def stored(data_dir):
  """The raw stored examples by instance id."""
  src = tfds.builder_from_directory(data_dir).as_data_source("train")
  return {src[i]["instance_id"].decode(): src[i] for i in range(len(src))}


def _take(it, n):
  return [next(it) for _ in range(n)]


def _assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_batch_layout_and_values(data_dir, stored):
  it = ip.make_pipeline(data_dir, "train", batch_size=4, seed=0, process_index=0, process_count=1,
                        model_index_fn=lambda cat, idx: 100 * synthetic.CATEGORIES.index(cat) + idx)
  b = next(it)
  assert set(b) == set(ip.BATCH_KEYS) | {"model_index"}
  assert b["image"].shape == (4, 32, 32, 3) and b["image"].dtype == np.float32
  assert b["quaternion"].shape == (4, 4) and b["intrinsics"].shape == (4, 3, 3)
  assert b["category"].dtype == np.int32 and b["occluded"].dtype == np.bool_ and b["mask"].all()
  assert it.num_examples == 12 and it.steps_per_epoch == 3 and it.categories == synthetic.CATEGORIES
  for j, iid in enumerate(b["instance_id"]):
    ex = stored[str(iid)]
    np.testing.assert_array_equal(ip.denormalize_image(b["image"][j]), ex["crop"])
    for k in ("quaternion", "translation", "translation_camera", "bbox", "intrinsics", "viewpoint"):
      np.testing.assert_array_equal(b[k][j], ex[k])
    assert b["model_index"][j] == 100 * ex["category"] + ex["cad_index"]


def test_other_image_size_is_cut_from_the_full_image(data_dir, stored):
  b = next(ip.make_pipeline(data_dir, "train", batch_size=2, image_size=24, process_index=0,
                            process_count=1))
  assert b["image"].shape == (2, 24, 24, 3)
  ex = stored[str(b["instance_id"][0])]
  np.testing.assert_array_equal(ip.denormalize_image(b["image"][0]),
                                crops.square_crop(ex["image"], ex["bbox"], 24))


@pytest.mark.parametrize("augment", [None, ip.AugmentConfig()])
def test_fixed_seed_is_deterministic(data_dir, augment):
  kw = dict(batch_size=4, augment=augment, process_index=0, process_count=1)
  a = _take(ip.make_pipeline(data_dir, "train", seed=7, **kw), 6)
  b = _take(ip.make_pipeline(data_dir, "train", seed=7, **kw), 6)
  _assert_batches_equal(a, b)
  c = _take(ip.make_pipeline(data_dir, "train", seed=8, **kw), 6)
  assert any(not np.array_equal(x["instance_id"], y["instance_id"]) for x, y in zip(a, c))


def test_epochs_are_fresh_permutations(data_dir):
  it = ip.make_pipeline(data_dir, "train", batch_size=4, seed=1, num_epochs=3, process_index=0,
                        process_count=1)
  ids = [str(i) for b in it for i in b["instance_id"]]
  epochs = [ids[0:12], ids[12:24], ids[24:36]]
  assert len(ids) == 36
  assert all(sorted(e) == [f"train/{i:06d}" for i in range(12)] for e in epochs)
  assert epochs[0] != epochs[1] and epochs[1] != epochs[2]


@pytest.mark.parametrize("augment", [None, ip.AugmentConfig()])
def test_state_restores_the_next_batch(data_dir, augment):
  kw = dict(batch_size=5, seed=3, augment=augment, process_index=0, process_count=1)
  it = ip.make_pipeline(data_dir, "train", **kw)
  _take(it, 3)  # crosses an epoch boundary (12 examples, 5 per batch)
  state = json.loads(json.dumps(it.get_state()))  # as a checkpoint would store it
  expected = _take(it, 4)
  fresh = ip.make_pipeline(data_dir, "train", **kw)
  fresh.set_state(state)
  _assert_batches_equal(_take(fresh, 4), expected)
  other = ip.make_pipeline(data_dir, "train", **{**kw, "batch_size": 4})
  with pytest.raises(ConfigError, match="batch_size"):
    other.set_state(state)


def test_training_shards_are_disjoint_and_complete(data_dir):
  seen = []
  for p in range(3):
    it = ip.make_pipeline(data_dir, "train", batch_size=2, seed=4, num_epochs=1, process_index=p,
                          process_count=3)
    ids = [str(i) for b in it for i in b["instance_id"]]
    assert len(ids) == 4 and it.steps_per_epoch == 2
    seen.append(set(ids))
  assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])
  assert set.union(*seen) == {f"train/{i:06d}" for i in range(12)}


def test_evaluation_shards_pad_instead_of_dropping(data_dir):
  """4 test examples over 3 processes: every example once, equal batch counts, padding masked."""
  seen, counts = [], []
  for p in range(3):
    batches = list(ip.make_pipeline(data_dir, "test", batch_size=3, shuffle=False, num_epochs=1,
                                    drop_remainder=False, process_index=p, process_count=3))
    counts.append(len(batches))
    for b in batches:
      assert b["image"].shape[0] == 3
      seen += [str(i) for i, m in zip(b["instance_id"], b["mask"]) if m]
      assert not np.any(b["image"][~b["mask"]])
  assert counts == [1, 1, 1]
  assert sorted(seen) == [f"test/{i:06d}" for i in range(4)]


def test_augmentation_keeps_labels_consistent(data_dir, stored):
  geo_only = ip.AugmentConfig(brightness=0.0, contrast=0.0, saturation=0.0, bbox_scale=0.2,
                              bbox_shift=0.2)
  it = ip.make_pipeline(data_dir, "train", batch_size=6, seed=2, augment=geo_only, process_index=0,
                        process_count=1)
  moved = 0
  for b in _take(it, 4):
    for j, iid in enumerate(b["instance_id"]):
      ex = stored[str(iid)]
      box = b["bbox"][j].astype(np.float64)
      moved += not np.allclose(box, ex["bbox"])
      # The image is THE crop of the full image for the jittered box...
      np.testing.assert_array_equal(ip.denormalize_image(b["image"][j]),
                                    crops.square_crop(ex["image"], box, 32))
      # ...and the translation label, decoded with that box, gives the stored camera translation.
      t_cam = np.asarray(geometry.crop_to_camera_translation(b["translation"][j], box,
                                                             ex["intrinsics"]))
      np.testing.assert_allclose(t_cam, ex["translation_camera"], rtol=1e-5, atol=1e-5)
      for k in ("quaternion", "translation_camera", "category", "cad_index"):
        np.testing.assert_array_equal(b[k][j], ex[k])
  assert moved >= 20


def test_colour_jitter_changes_pixels_not_labels(data_dir, stored):
  it = ip.make_pipeline(data_dir, "train", batch_size=4, seed=2,
                        augment=ip.AugmentConfig(bbox_scale=0.0, bbox_shift=0.0), process_index=0,
                        process_count=1)
  b = next(it)
  for j, iid in enumerate(b["instance_id"]):
    ex = stored[str(iid)]
    np.testing.assert_allclose(b["bbox"][j], ex["bbox"])
    np.testing.assert_allclose(b["translation"][j], ex["translation"], rtol=1e-5, atol=1e-5)
  assert not np.array_equal(ip.denormalize_image(b["image"][0]),
                            stored[str(b["instance_id"][0])]["crop"])


def test_bad_arguments(data_dir):
  with pytest.raises(ConfigError, match="split"):
    ip.make_pipeline(data_dir, "nope", batch_size=2, process_index=0, process_count=1)
  with pytest.raises(ConfigError, match="batch_size"):
    ip.make_pipeline(data_dir, "train", batch_size=0, process_index=0, process_count=1)
  with pytest.raises(ConfigError, match="process_index"):
    ip.make_pipeline(data_dir, "train", batch_size=2, process_index=3, process_count=3)
  with pytest.raises(ConfigError, match="full batch"):
    ip.make_pipeline(data_dir, "test", batch_size=8, num_epochs=1, process_index=0, process_count=1)
  with pytest.raises(ConfigError):
    ip.AugmentConfig(bbox_scale=-1.0)


@pytest.mark.parametrize("augment,image_size", [(None, None), (None, 24), (ip.AugmentConfig(), None)])
def test_decoded_cache_gives_the_same_batches(data_dir, augment, image_size):
  kw = dict(batch_size=5, seed=4, augment=augment, image_size=image_size, process_index=0,
            process_count=1)
  streamed = ip.make_pipeline(data_dir, "train", **kw)
  cached = ip.make_pipeline(data_dir, "train", cache_decoded=True, **kw)
  _assert_batches_equal(_take(cached, 4), _take(streamed, 4))
  # A state saved by one continues in the other: the cache is not part of the pipeline's identity.
  state = json.loads(json.dumps(streamed.get_state()))
  expected = _take(streamed, 2)
  cached.set_state(state)
  _assert_batches_equal(_take(cached, 2), expected)


def test_decode_split_holds_decoded_arrays(data_dir, stored):
  src = ip.open_source(data_dir, "train")
  records = ip.decode_split(src)
  assert len(records) == len(src) == 12
  for r in records:
    ex = stored[r["instance_id"].decode()]
    np.testing.assert_array_equal(r["image"], ex["image"])
    np.testing.assert_array_equal(r["crop"], ex["crop"])
    assert r["image"].dtype == np.uint8 and r["image"].ndim == 3
  only_images = ip.decode_split(src, keys=("image",))  # what an augmenting pipeline reads
  assert isinstance(only_images[0]["image"], np.ndarray) and isinstance(only_images[0]["crop"], bytes)
  np.testing.assert_array_equal(ip._decode_png(only_images[0]["crop"]), records[0]["crop"])


def test_decoded_cache_too_big_for_memory_streams_instead(data_dir, monkeypatch, caplog):
  monkeypatch.setattr(ip, "_physical_memory_bytes", lambda: 1000)  # 12 examples need ~30 kB
  assert ip.decode_split(ip.open_source(data_dir, "train")) is None
  kw = dict(batch_size=4, seed=2, augment=ip.AugmentConfig(), process_index=0, process_count=1)
  with caplog.at_level("WARNING"):
    cached = ip.make_pipeline(data_dir, "train", cache_decoded=True, **kw)
  assert "not caching 12 decoded examples" in caplog.text
  _assert_batches_equal(_take(cached, 3), _take(ip.make_pipeline(data_dir, "train", **kw), 3))


def test_decoded_cache_in_a_worker_process(data_dir):
  kw = dict(batch_size=4, seed=6, augment=ip.AugmentConfig(), process_index=0, process_count=1)
  it = ip.make_pipeline(data_dir, "train", cache_decoded=True, worker_count=1, **kw)
  try:
    got = _take(it, 3)
  finally:
    it.close()
  _assert_batches_equal(got, _take(ip.make_pipeline(data_dir, "train", **kw), 3))


def test_decoded_cache_reads_each_example_once(data_dir, monkeypatch):
  reads = []

  class CountingSource:
    def __init__(self, source):
      self.source = source

    def __len__(self):
      return len(self.source)

    def __getitem__(self, i):
      reads.append(i)
      return self.source[i]

  real = ip.open_source
  # Counts only the sources opened from here on (other tests' pipelines may still be prefetching).
  monkeypatch.setattr(ip, "open_source", lambda d, split: CountingSource(real(d, split)))
  kw = dict(batch_size=4, seed=1, augment=ip.AugmentConfig(), process_index=0, process_count=1)
  cached = ip.make_pipeline(data_dir, "train", cache_decoded=True, **kw)
  after_build = len(reads)
  assert sorted(set(reads)) == list(range(12))  # every example read once to build the cache
  _take(cached, 9)  # three epochs
  assert len(reads) == after_build
  streamed = ip.make_pipeline(data_dir, "train", **kw)
  _take(streamed, 9)
  assert len(reads) >= after_build + 36  # streaming reads every example every epoch


def test_reencode_translation_agrees_with_jax_geometry():
  rng = np.random.default_rng(0)
  n = 64
  t_cam = np.stack([rng.uniform(-1, 1, n), rng.uniform(-1, 1, n), rng.uniform(3, 12, n)], -1)
  k = np.tile(np.array([[500.0, 0, 160], [0, 480.0, 120], [0, 0, 1]]), (n, 1, 1))
  xy = rng.uniform(20, 200, (n, 2))
  box_old = np.concatenate([xy, xy + rng.uniform(30, 100, (n, 2))], -1)
  box_new = box_old + rng.uniform(-8, 8, (n, 4))
  import jax  # pylint: disable=import-outside-toplevel
  with jax.enable_x64(True):
    label_old = np.asarray(geometry.camera_to_crop_translation(t_cam, box_old, k))
    expected = np.asarray(geometry.camera_to_crop_translation(t_cam, box_new, k))
  got = ip.reencode_translation(label_old, box_old, box_new, k)
  assert isinstance(got, np.ndarray) and got.dtype == np.float32 and got.shape == (n, 3)
  np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(ip.reencode_translation(label_old, box_old, box_old, k), label_old,
                             rtol=1e-6, atol=1e-6)  # the same box: the same label
  assert np.abs(got - label_old).max() > 1e-2  # the boxes differ enough for the test to mean something
