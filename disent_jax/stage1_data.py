"""Stage I training examples, generated on device inside the jitted step (no per-step host work).

Each example is (a database model, a uniformly random rotation): the model's voxels are rotated with
`cad.rotate.rotate_voxels` and labelled with the closest rotation anchor and the residual quaternion by a
matmul against the anchor table (the paper used a KD-tree on the CPU).

Every example of step s depends only on (key, s, position in the global batch): the global batch's model
indices and rotations are drawn from one key, and a device (pmap) or shard (jit) takes its slice. So a run
on 1 device, on 8 devices with jit, and on 8 devices with pmap sees the same examples.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from disent_jax import geometry
from disent_jax.cad import rotate


def sample_labels(key: jax.Array, num_models: int, batch_size: int,
                  paired: bool = False) -> tuple[jax.Array, jax.Array]:
  """Model indices (B,) uniform over the database and Haar-uniform rotations (B, 4).

  paired=True draws B/2 models and shows each twice, at positions 2i and 2i + 1 under independent
  rotations (adjacent, so every device's slice of the batch holds whole pairs), for the shape vector's
  pose-invariance loss (`losses.pair_invariance`).
  """
  k_model, k_rot = jax.random.split(key)
  if paired:
    models = jnp.repeat(jax.random.randint(k_model, (batch_size // 2,), 0, num_models), 2)
  else:
    models = jax.random.randint(k_model, (batch_size,), 0, num_models)
  quats = geometry.random_quaternions(k_rot, (batch_size,))
  return models, quats


def make_examples(volumes_bank: jax.Array, anchors: jax.Array, models: jax.Array,
                  quats: jax.Array, sampler: str = "map_coordinates") -> dict[str, jax.Array]:
  """Rotated volumes and labels for given models and rotations.

  Args:
    volumes_bank: (K, R, R, R) occupancy (uint8 or float).
    anchors: (A, 4) rotation anchors.
    models: (B,) model indices.
    quats: (B, 4) rotations.
    sampler: `rotate.rotate_voxels`' trilinear sampler (same values; a speed choice).

  Returns:
    dict with 'volume' (B, R, R, R) float32, 'model', 'quat', 'anchor' (B,) int32 and 'residual' (B, 4).
  """
  vols = rotate.rotate_voxels(volumes_bank[models].astype(jnp.float32), quats, sampler=sampler)
  anchor, residual = geometry.encode_rotation(quats, anchors)
  return {"volume": vols, "model": models, "quat": quats, "anchor": anchor, "residual": residual}


def sample_batch(key: jax.Array, volumes_bank: jax.Array, anchors: jax.Array, batch_size: int,
                 shard: tuple[jax.Array, int] | None = None, paired: bool = False,
                 sampler: str = "map_coordinates") -> dict[str, jax.Array]:
  """A training batch drawn on device; `shard=(index, count)` returns that slice of the global batch.

  Args:
    key: the step's key.
    volumes_bank: (K, R, R, R) database volumes.
    anchors: (A, 4) rotation anchors.
    batch_size: the global batch size.
    shard: optional (shard index (traced ok), number of shards) for per-device generation under pmap.
    paired: draw models in adjacent pairs (see `sample_labels`).
    sampler: the rotation's trilinear sampler (see `make_examples`).

  Returns:
    The batch dict of `make_examples` (global, or the shard's slice).
  """
  models, quats = sample_labels(key, volumes_bank.shape[0], batch_size, paired)
  if shard is not None:
    index, count = shard
    size = batch_size // count
    models = jax.lax.dynamic_slice_in_dim(models, index * size, size)
    quats = jax.lax.dynamic_slice_in_dim(quats, index * size, size)
  return make_examples(volumes_bank, anchors, models, quats, sampler)
