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
    np.testing.assert_allclose(conv3d.Conv3D(4, 5, stride=2, impl=impl).apply(params, x),
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
