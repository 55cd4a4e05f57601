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


def _init(model: embedder.VoxelEmbedder, vols: jax.Array, seed: int = 0) -> dict:
  # Jitted here and below: op by op, each of the patch matrices' slices would compile on its own (slow).
  return jax.jit(lambda k: model.init(k, vols, train=False))(jax.random.key(seed))


def _apply(model: embedder.VoxelEmbedder, variables: dict, vols: jax.Array) -> dict:
  return jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, vols)


def test_input_pool_equals_the_unpooled_network_on_box_filtered_volumes():
  """pool=2 on 32^3 == pool=1 with the same parameters on the 2x2x2 means computed by NumPy."""
  vols = (np.random.default_rng(0).random((3, 32, 32, 32)) > 0.6).astype(np.float32)
  pooled = vols.reshape(3, 16, 2, 16, 2, 16, 2).mean(axis=(2, 4, 6))
  variables = _init(_model(1), jnp.zeros((1, 16, 16, 16)))
  # Pooling adds no parameters: the same tree serves both.
  shapes = jax.tree.map(jnp.shape, jax.eval_shape(lambda k: _model(2).init(k, jnp.zeros((1, 32, 32, 32)),
                                                                             train=False), jax.random.key(0)))
  assert shapes == jax.tree.map(jnp.shape, variables)
  got = _apply(_model(2), variables, jnp.asarray(vols))
  want = _apply(_model(1), variables, jnp.asarray(pooled))
  for key in ("shape_vec", "pose_vec", "shape_logits", "anchor_logits"):
    np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-5)
  # ... and differs from feeding every other voxel (the pooling is really applied).
  strided = _apply(_model(1), variables, jnp.asarray(vols[:, ::2, ::2, ::2]))
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

  variables = _init(model("lax"), vols, seed=1)
  ref = _apply(model("lax"), variables, vols)
  for impl in ("s2d", "im2col", "planes", "auto"):
    shapes = jax.tree.map(jnp.shape, jax.eval_shape(lambda k: model(impl).init(k, vols, train=False),
                                                    jax.random.key(1)))
    assert shapes == jax.tree.map(jnp.shape, variables), impl
    out = _apply(model(impl), variables, vols)
    for k in ref:
      np.testing.assert_allclose(out[k], ref[k], rtol=1e-4, atol=1e-5, err_msg=f"{impl} {k}")


def _layout_model(layout: str, impl: str = "auto", **kw) -> embedder.VoxelEmbedder:
  return embedder.VoxelEmbedder(num_models=5, num_anchors=4, shape_dim=3, pose_dim=2, conv_features=(4, 6),
                                conv_impl=impl, layout=layout, **kw)


@pytest.mark.parametrize("pool", [1])  # pool 2 only reshapes the box filter's output the same way
def test_layouts_are_the_same_network_forward_gradients_and_statistics(pool):
  """channels_first computes the channels_last network: same parameter tree, outputs, parameter gradients
  and BatchNorm statistics in training mode (the max-pool's ties included: empty space gives equal
  activations)."""
  size = 16 * pool
  vols = (jax.random.uniform(jax.random.key(2), (3, size, size + 2 * pool, size)) > 0.6).astype(jnp.float32)
  cl, cf = _layout_model("channels_last", input_pool=pool), _layout_model("channels_first", input_pool=pool)
  variables = _init(cl, vols, seed=3)
  assert (jax.tree.map(jnp.shape, jax.eval_shape(lambda k: cf.init(k, vols, train=False), jax.random.key(3)))
          == jax.tree.map(jnp.shape, variables))

  def loss(model, params):
    out, new = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, vols, train=True,
                           mutable=["batch_stats"])
    return sum(jnp.sum(jnp.sin(v)) for v in out.values()), (out, new["batch_stats"])

  # Jitted: op by op, every one of the patch matrices' slices would compile on its own (minutes).
  grad = lambda model: jax.jit(jax.value_and_grad(lambda p: loss(model, p), has_aux=True))
  (_, (out_cl, stats_cl)), g_cl = grad(cl)(variables["params"])
  (_, (out_cf, stats_cf)), g_cf = grad(cf)(variables["params"])
  for k in out_cl:
    np.testing.assert_allclose(out_cf[k], out_cl[k], rtol=1e-4, atol=1e-5, err_msg=k)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), stats_cf, stats_cl)
  flat_cl = dict(jax.tree_util.tree_leaves_with_path(g_cl))
  for path, g in jax.tree_util.tree_leaves_with_path(g_cf):
    np.testing.assert_allclose(g, flat_cl[path], rtol=2e-3, atol=2e-4, err_msg=jax.tree_util.keystr(path))
  # In inference mode too (running statistics), the path the frozen Stage II targets take.
  ref = _apply(cl, variables, vols)
  got = _apply(cf, variables, vols)
  for k in ref:
    np.testing.assert_allclose(got[k], ref[k], rtol=1e-4, atol=1e-5, err_msg=k)


def test_layout_auto_and_bad_layouts():
  on_cpu = jax.default_backend() == "cpu"
  assert _layout_model("auto")._channel_major() == on_cpu  # pylint: disable=protected-access
  # An explicit conv_impl keeps channels-last unless asked: 'lax' and 's2d' have no channels-first form.
  assert not _layout_model("auto", impl="lax")._channel_major()  # pylint: disable=protected-access
  assert _layout_model("channels_first", impl="planes")._channel_major()  # pylint: disable=protected-access
  vols = jnp.zeros((1, 16, 16, 16))
  with pytest.raises(ValueError, match="layout 'channels_first' takes conv_impl in"):
    _layout_model("channels_first", impl="s2d").init(jax.random.key(0), vols, train=False)
  with pytest.raises(ValueError, match="unknown layout 'nchw'"):
    _layout_model("nchw").init(jax.random.key(0), vols, train=False)
