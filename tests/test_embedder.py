"""Tests of disent_jax/models/embedder.py's input pooling (`input_pool`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from disent_jax.models import embedder


def _model(pool: int) -> embedder.VoxelEmbedder:
  return embedder.VoxelEmbedder(num_models=5, num_anchors=4, shape_dim=3, pose_dim=2, conv_features=(4, 4),
                                input_pool=pool)


def test_input_pool_equals_the_unpooled_network_on_box_filtered_volumes():
  """pool=2 on 32^3 == pool=1 with the same parameters on the 2x2x2 means computed by NumPy."""
  vols = (np.random.default_rng(0).random((3, 32, 32, 32)) > 0.6).astype(np.float32)
  pooled = vols.reshape(3, 16, 2, 16, 2, 16, 2).mean(axis=(2, 4, 6))
  variables = _model(1).init(jax.random.key(0), jnp.zeros((1, 16, 16, 16)), train=False)
  # Pooling adds no parameters: the same tree serves both.
  shapes = jax.tree.map(jnp.shape, _model(2).init(jax.random.key(0), jnp.zeros((1, 32, 32, 32)), train=False))
  assert shapes == jax.tree.map(jnp.shape, variables)
  got = _model(2).apply(variables, jnp.asarray(vols), train=False)
  want = _model(1).apply(variables, jnp.asarray(pooled), train=False)
  for key in ("shape_vec", "pose_vec", "shape_logits", "anchor_logits"):
    np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-5)
  # ... and differs from feeding every other voxel (the pooling is really applied).
  strided = _model(1).apply(variables, jnp.asarray(vols[:, ::2, ::2, ::2]), train=False)
  assert np.abs(np.asarray(strided["shape_vec"]) - np.asarray(want["shape_vec"])).max() > 1e-3


def test_input_pool_refuses_an_indivisible_resolution():
  with pytest.raises(ValueError, match="input_pool=2 needs a resolution divisible by 2"):
    _model(2).init(jax.random.key(0), jnp.zeros((1, 31, 31, 31)), train=False)


def test_every_conv_impl_is_the_same_network():
  """conv_impl changes how the convolutions are computed, never the network: same parameters, same outputs
  ('s2d' names conv1's rewrite; a stride-2 conv2 would shrink the embedding layer's input)."""
  vols = (jax.random.uniform(jax.random.key(0), (2, 16, 16, 16)) > 0.5).astype(jnp.float32)

  def model(impl):
    return embedder.VoxelEmbedder(num_models=5, num_anchors=4, shape_dim=3, pose_dim=2, conv_features=(4, 4),
                                  conv_impl=impl)

  variables = model("lax").init(jax.random.key(1), vols, train=False)
  ref = model("lax").apply(variables, vols, train=False)
  for impl in ("s2d", "im2col", "planes", "auto"):
    shapes = jax.tree.map(jnp.shape, model(impl).init(jax.random.key(1), vols, train=False))
    assert shapes == jax.tree.map(jnp.shape, variables), impl
    out = model(impl).apply(variables, vols, train=False)
    for k in ref:
      np.testing.assert_allclose(out[k], ref[k], rtol=1e-4, atol=1e-5, err_msg=f"{impl} {k}")
