"""Tests of `tfds_compat`: TFDS's shuffler spilling a split to disk without TensorFlow.

Without the local bucket class, any split over `shuffle.MAX_MEM_BUFFER_SIZE` fails with
ModuleNotFoundError (tensorflow) in a TensorFlow-free environment; the tests lower that limit to a few
hundred bytes so a tiny split takes the same path.
"""

from __future__ import annotations

import dataclasses
import struct

import numpy as np
import pytest
from tensorflow_datasets.core import shuffle

from disent_jax.datasets import synthetic
from disent_jax.datasets import tfds_compat

import _helpers

pytestmark = pytest.mark.skipif(
    tfds_compat.tensorflow_available(),
    reason="TensorFlow is installed: TFDS's own bucket files work and are kept")


@pytest.fixture
def local_buckets(monkeypatch):
  """The local bucket class installed for one test (monkeypatch restores TFDS's afterwards)."""
  monkeypatch.setattr(shuffle, "_Bucket", shuffle._Bucket)  # pylint: disable=protected-access
  assert tfds_compat.use_local_bucket_files()
  assert shuffle._Bucket is tfds_compat.LocalBucket  # pylint: disable=protected-access


def test_bucket_file_is_tfds_format_and_reads_back(tmp_path):
  bucket = tfds_compat.LocalBucket(tmp_path / "sub" / "bucket_000.tmp")
  records = [(3, b"abc"), (2**100 + 7, b""), (2**128 - 1, bytes(range(256)))]
  for key, data in records:
    bucket.add(key, data)
  assert (len(bucket), bucket.size) == (3, 259)
  bucket.flush()
  # TFDS's layout, written out independently: key as two native uint64 (high, low), size as '=Q', data.
  expected = b"".join(struct.pack("=QQ", k >> 64, k & (2**64 - 1)) + struct.pack("=Q", len(d)) + d
                      for k, d in records)
  assert (tmp_path / "sub" / "bucket_000.tmp").read_bytes() == expected
  bucket.add(5, b"later")  # appends after a flush, as TFDS's bucket would before reading
  assert list(bucket.read_values()) == records + [(5, b"later")]
  bucket.del_file()
  assert not (tmp_path / "sub" / "bucket_000.tmp").exists()
  bucket.del_file()  # nothing left: no error
  assert list(tfds_compat.LocalBucket(tmp_path / "never.tmp").read_values()) == []


@pytest.mark.parametrize("disable_shuffling", [True, False])
def test_shuffler_spilling_to_disk_gives_the_in_memory_order(tmp_path, monkeypatch, local_buckets,
                                                              disable_shuffling):
  data = [(i, f"example {i} ".encode() * (i % 7 + 1)) for i in range(200)]

  def shuffled(limit, name):
    monkeypatch.setattr(shuffle, "MAX_MEM_BUFFER_SIZE", limit)
    s = shuffle.Shuffler(tmp_path / name, hash_salt="train", disable_shuffling=disable_shuffling)
    for key, value in data:
      s.add(key, value)
    return s, list(s)

  in_memory, expected = shuffled(1 << 30, "mem")
  spilled, got = shuffled(300, "disk")
  assert in_memory.bucket_lengths == [200]
  assert sum(spilled.bucket_lengths) == 200 and len(spilled.bucket_lengths) == shuffle.BUCKETS_NUMBER
  assert got == expected
  if disable_shuffling:
    assert [v for _, v in got] == [v for _, v in data]
  else:
    assert sorted(v for _, v in got) == sorted(v for _, v in data)
    assert [v for _, v in got] != [v for _, v in data]
  assert not list((tmp_path / "disk").glob("*.tmp"))  # every bucket file deleted after reading


def test_synthetic_split_over_the_memory_limit_builds_without_tensorflow(tmp_path, monkeypatch):
  settings = dataclasses.replace(_helpers.tiny_synthetic_settings(seed=5, p_occlude=0.3, p_truncate=0.2),
                                 num_validation=0, num_test=0)
  # build_synthetic installs the local buckets itself; restore TFDS's class after the test.
  monkeypatch.setattr(shuffle, "_Bucket", shuffle._Bucket)  # pylint: disable=protected-access
  reference = synthetic.build_synthetic(tmp_path / "mem", settings, progress=False)
  monkeypatch.setattr(shuffle, "MAX_MEM_BUFFER_SIZE", 4096)  # a few KB forces the spill
  spilled = synthetic.build_synthetic(tmp_path / "disk", settings, progress=False)
  a, b = _read(reference), _read(spilled)
  assert len(a) == len(b) == settings.num_train
  for i, (x, y) in enumerate(zip(a, b)):
    assert x.keys() == y.keys()
    for key in x:
      np.testing.assert_array_equal(x[key], y[key], err_msg=f"train/{i} {key}")


def _read(path: str) -> list[dict]:
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  src = tfds.builder_from_directory(path).as_data_source("train")
  return [src[i] for i in range(len(src))]
