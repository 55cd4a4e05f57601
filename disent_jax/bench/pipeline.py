"""Measurement of the grain input pipeline's throughput (examples/s), and a synthetic dataset to feed it.

The rate is what `input_pipeline.make_pipeline` yields after a few warm-up batches (worker start-up and
file opening excluded), to compare with what a training step consumes. Without a dataset at hand the
benchmark renders a small synthetic one (`datasets.synthetic`, ray-cast, cached by its settings in the
cache folder and reused by later runs). Used by `launch/bench_pipeline.py` and the benchmark suite.
"""

from __future__ import annotations

import os
import statistics
import time

from disent_jax import input_pipeline
from disent_jax.datasets import synthetic


def bench_settings(num_train: int, *, image_size: int = 128,
                   crop_size: int = 64) -> synthetic.SyntheticSettings:
  """Settings of a benchmark dataset: a train split only, ray-cast (no GL needed)."""
  return synthetic.SyntheticSettings(num_train=num_train, num_validation=0, num_test=0,
                                     image_size=image_size, crop_size=crop_size, backend="raycast")


def ensure_dataset(cache_dir: str | os.PathLike, settings: synthetic.SyntheticSettings) -> str:
  """The finished dataset with these settings under `cache_dir`, rendered first if absent.

  Returns:
    The dataset directory (for `make_pipeline`).
  """
  return synthetic.build_synthetic(cache_dir, settings, progress=False)


def pipeline_rate(data_dir: str | os.PathLike, *, split: str = "train", batch: int = 32,
                  image_size: int | None = 64, augment: bool = False, workers: int = 0, batches: int = 40,
                  warmup: int = 3, repeats: int = 1, cache_decoded: bool = False) -> dict:
  """Examples per second of `make_pipeline`: `repeats` blocks of `batches` batches after `warmup` ones.

  Args:
    data_dir: a finished dataset directory.
    split: split to read.
    batch: batch size.
    image_size: crop size fed to the network (None: the stored one).
    augment: the default augmentation, or none.
    workers: grain worker processes.
    batches: batches per timed block.
    warmup: untimed batches first (>= 1).
    repeats: timed blocks (the median rate is reported).
    cache_decoded: decode the split into memory first (`make_pipeline`'s option; its decoding counts
      as start-up).

  Returns:
    dict with rate (median examples/s over the blocks), rates (each block's) and startup_s (creating the
    iterator and its warm-up batches, minus what those batches take in the steady state).
  """
  start = time.perf_counter()
  it = input_pipeline.make_pipeline(data_dir, split, batch_size=batch, image_size=image_size,
                                    augment=augment, worker_count=workers, cache_decoded=cache_decoded)
  try:
    for _ in range(max(warmup, 1)):
      next(it)
    first_s = time.perf_counter() - start
    rates = []
    for _ in range(repeats):
      start = time.perf_counter()
      for _ in range(batches):
        next(it)
      rates.append(batches * batch / (time.perf_counter() - start))
  finally:
    if hasattr(it, "close"):
      it.close()
  rate = statistics.median(rates)
  return {"rate": rate, "rates": rates,
          "startup_s": max(first_s - max(warmup, 1) * batch / rate, 0.0)}
