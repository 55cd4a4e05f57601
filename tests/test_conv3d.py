"""The fast 3D convolution rewrites compute exactly the reference convolution, forward and backward."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from disent_jax.models import conv3d


@pytest.mark.parametrize("size,ci", [(16, 1), (12, 3)])
def test_s2d_equals_lax_forward_and_gradients(size, ci):
  kx, kw = jax.random.split(jax.random.key(0))
  x = jax.random.normal(kx, (2, size, size, size, ci))
  w = jax.random.normal(kw, (5, 5, 5, ci, 4))
  np.testing.assert_allclose(conv3d.conv_s2d(x, w), conv3d.conv_lax(x, w, 2), rtol=1e-4, atol=1e-4)
  g_ref = jax.grad(lambda x, w: jnp.sum(conv3d.conv_lax(x, w, 2) ** 2), argnums=(0, 1))(x, w)
  g = jax.grad(lambda x, w: jnp.sum(conv3d.conv_s2d(x, w) ** 2), argnums=(0, 1))(x, w)
  for a, b in zip(g, g_ref):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-2)


@pytest.mark.parametrize("stride", [1, 2])
def test_im2col_equals_lax(stride):
  kx, kw = jax.random.split(jax.random.key(1))
  x = jax.random.normal(kx, (2, 9, 10, 11, 3))  # non-cubic: an axis mix-up cannot cancel out
  w = jax.random.normal(kw, (3, 3, 3, 3, 5))
  np.testing.assert_allclose(conv3d.conv_im2col(x, w, stride), conv3d.conv_lax(x, w, stride),
                             rtol=1e-4, atol=1e-4)
  # Both gradients: conv_im2col's backward is written out (custom VJP).
  g_ref = jax.grad(lambda x, w: jnp.sum(jnp.sin(conv3d.conv_lax(x, w, stride))), argnums=(0, 1))(x, w)
  g = jax.grad(lambda x, w: jnp.sum(jnp.sin(conv3d.conv_im2col(x, w, stride))), argnums=(0, 1))(x, w)
  for a, b in zip(g, g_ref):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("stride,size", [(1, 9), (2, 9), (1, 8)])
def test_planes_equals_lax_forward_and_gradients(stride, size):
  # Non-cubic input so a mix-up of the depth axis with height or width cannot cancel out.
  kx, kw = jax.random.split(jax.random.key(4))
  x = jax.random.normal(kx, (2, size, size + 1, size + 2, 3))
  w = jax.random.normal(kw, (3, 3, 3, 3, 5))
  np.testing.assert_allclose(conv3d.conv_planes(x, w, stride), conv3d.conv_lax(x, w, stride),
                             rtol=1e-4, atol=1e-4)
  loss = lambda f: (lambda x, w: jnp.sum(jnp.sin(f(x, w, stride))))
  g_ref = jax.grad(loss(conv3d.conv_lax), argnums=(0, 1))(x, w)
  g = jax.grad(loss(conv3d.conv_planes), argnums=(0, 1))(x, w)
  for a, b in zip(g, g_ref):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3)


def test_module_impls_share_parameters_and_agree():
  x = jax.random.uniform(jax.random.key(2), (2, 16, 16, 16, 1))
  ref = conv3d.Conv3D(4, 5, stride=2, impl="lax")
  params = ref.init(jax.random.key(3), x)
  assert params["params"]["kernel"].shape == (5, 5, 5, 1, 4)
  for impl in ("s2d", "im2col", "planes", "auto"):
    # Jitted: op by op, each of im2col's 125 patch slices would compile on its own.
    np.testing.assert_allclose(jax.jit(conv3d.Conv3D(4, 5, stride=2, impl=impl).apply)(params, x),
                               ref.apply(params, x), rtol=1e-4, atol=1e-5)
  with pytest.raises(ValueError, match="even input"):
    conv3d.Conv3D(4, 5, stride=2, impl="s2d").apply(params, x[:, :15, :15, :15])
  # s2d computes a stride-2 convolution: asked for another stride it must refuse, not change the network.
  with pytest.raises(ValueError, match="'s2d' needs stride 2, got stride 1"):
    conv3d.Conv3D(4, 5, stride=1, impl="s2d").init(jax.random.key(3), x)


@pytest.mark.parametrize("stride,size", [(1, 10), (2, 15)])
def test_auto_without_s2d_equals_lax(stride, size):
  # The layers s2d cannot take: a stride-1 layer (planes on CPU) and a strided one on an odd size (im2col).
  x = jax.random.uniform(jax.random.key(5), (2, size, size, size, 3))
  ref = conv3d.Conv3D(4, 3, stride=stride, impl="lax")
  params = ref.init(jax.random.key(6), x)
  np.testing.assert_allclose(conv3d.Conv3D(4, 3, stride=stride, impl="auto").apply(params, x),
                             ref.apply(params, x), rtol=1e-4, atol=1e-5)


def _channels_first(f, stride):
  """f on channels-first arrays, wrapped to take and return channels-last ones (the reference's layout)."""
  return lambda x, w: f(x.transpose(4, 0, 1, 2, 3), w, stride).transpose(1, 2, 3, 4, 0)


@pytest.mark.parametrize("fn,k,stride,ci", [(conv3d.conv_im2col_cm, 5, 2, 1),  # the embedder's conv1
                                            (conv3d.conv_planes_cm, 3, 1, 3),  # the embedder's conv2
                                            (conv3d.conv_planes_cm, 3, 2, 2)],
                         ids=["im2col-k5s2", "planes-k3s1", "planes-k3s2"])
def test_channels_first_convs_equal_lax_forward_and_gradients(fn, k, stride, ci):
  # Non-cubic input and a batch of 2: a mix-up of depth, height, width or batch cannot cancel out. Both
  # backwards are written out (custom VJPs), so both gradients are compared, with a random cotangent.
  kx, kw, kg = jax.random.split(jax.random.key(7), 3)
  x = jax.random.normal(kx, (2, 9, 10, 11, ci))
  w = jax.random.normal(kw, (k, k, k, ci, 4))
  ref, got = (lambda x, w: conv3d.conv_lax(x, w, stride)), _channels_first(fn, stride)
  y = ref(x, w)
  np.testing.assert_allclose(jax.jit(got)(x, w), y, rtol=1e-4, atol=1e-4)
  ct = jax.random.normal(kg, y.shape)
  # Jitted: op by op, each of the patch matrix's slices (and their adjoints) would compile on its own.
  vjp = lambda f: jax.jit(lambda x, w, ct: jax.vjp(f, x, w)[1](ct))
  g_ref = vjp(ref)(x, w, ct)
  g = vjp(got)(x, w, ct)
  for a, b, name in zip(g, g_ref, ("input", "kernel")):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3, err_msg=name)


def test_channels_first_module_shares_parameters_and_refuses_other_impls():
  x = jax.random.uniform(jax.random.key(8), (2, 12, 11, 10, 3))
  ref = conv3d.Conv3D(4, 3, stride=1, impl="lax")
  params = ref.init(jax.random.key(9), x)
  xc = x.transpose(4, 0, 1, 2, 3)
  for impl in conv3d.CHANNELS_FIRST_IMPLS:
    cf = conv3d.Conv3D(4, 3, stride=1, impl=impl, channels_first=True)
    assert jax.tree.map(jnp.shape, cf.init(jax.random.key(9), xc)) == jax.tree.map(jnp.shape, params)
    np.testing.assert_allclose(cf.apply(params, xc), ref.apply(params, x).transpose(4, 0, 1, 2, 3),
                               rtol=1e-4, atol=1e-5, err_msg=impl)
  with pytest.raises(ValueError, match="channels-first Conv3D takes impl in"):
    conv3d.Conv3D(4, 3, impl="lax", channels_first=True).init(jax.random.key(9), xc)
