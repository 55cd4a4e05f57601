"""Winograd F(2, 3) computes the direct convolution, forward and backward, in 1, 2 and 3 spatial dims."""

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest

from disent_jax.models import winograd

_DN = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC"), 3: ("NDHWC", "DHWIO", "NDHWC")}


def _direct(x, w):
  n = x.ndim - 2
  return lax.conv_general_dilated(x, w, (1,) * n, "VALID", dimension_numbers=_DN[n],
                                  precision=lax.Precision.HIGHEST)


# Non-cubic sizes so that a mix-up of two spatial axes (tile order, output interleaving) cannot cancel out.
@pytest.mark.parametrize("spatial", [(10,), (6, 8), (4, 6, 8)])
def test_conv3_valid_equals_the_direct_convolution(spatial):
  rng = np.random.default_rng(len(spatial))
  n = len(spatial)
  x = rng.standard_normal((2, *spatial, 3)).astype(np.float32)
  w = rng.standard_normal((3,) * n + (3, 5)).astype(np.float32)
  ct = rng.standard_normal((2, *(s - 2 for s in spatial), 5)).astype(np.float32)
  # Jitted (eagerly every small op compiles on its own); gradients against a random cotangent, as a sum
  # would hide a permutation of the outputs.
  @jax.jit
  def outputs_and_gradients(x, w):
    return [(conv(x, w), jax.grad(lambda x, w: jnp.sum(conv(x, w) * ct), (0, 1))(x, w))
            for conv in (winograd.conv3_valid, _direct)]

  (out, g), (ref, g_ref) = outputs_and_gradients(x, w)
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
  for a, b in zip(g, g_ref):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("spatial", [(6, 8), (4, 6, 8)])
def test_conv3_valid_cm_equals_the_direct_convolution(spatial):
  # The channel-major version, (C, B, *spatial) in and out, with its default product and a custom one.
  rng = np.random.default_rng(10 + len(spatial))
  n = len(spatial)
  x = rng.standard_normal((2, *spatial, 3)).astype(np.float32)
  w = rng.standard_normal((3,) * n + (3, 5)).astype(np.float32)
  ct = rng.standard_normal((2, *(s - 2 for s in spatial), 5)).astype(np.float32)
  to_cm, from_cm = (n + 1, 0, *range(1, n + 1)), (*range(1, n + 2), 0)
  calls = []

  def matmul(u, v):
    calls.append((u.shape, v.shape))
    return jnp.einsum("tco,tcn->ton", u, v)

  convs = [lambda x, w: winograd.conv3_valid_cm(x.transpose(to_cm), w).transpose(from_cm),
           lambda x, w: winograd.conv3_valid_cm(x.transpose(to_cm), w, matmul).transpose(from_cm), _direct]

  @jax.jit
  def outputs_and_gradients(x, w):
    return [(conv(x, w), jax.grad(lambda x, w: jnp.sum(conv(x, w) * ct), (0, 1))(x, w)) for conv in convs]

  *ours, (ref, g_ref) = outputs_and_gradients(x, w)
  for out, g in ours:
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(g, g_ref):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)
  tiles = int(np.prod([(s - 2) // 2 for s in spatial]))
  assert calls[0] == ((4 ** n, 3, 5), (4 ** n, 3, 2 * tiles))


def test_conv3_valid_against_a_hand_computed_case():
  # 1D: x = 0..5, w = (1, 2, 3): out[i] = x[i] + 2 x[i+1] + 3 x[i+2] = 6 i + 8.
  x = jnp.arange(6.0).reshape(1, 6, 1)
  w = jnp.array([1.0, 2.0, 3.0]).reshape(3, 1, 1)
  np.testing.assert_array_equal(winograd.conv3_valid(x, w)[0, :, 0], [8.0, 14.0, 20.0, 26.0])


@pytest.mark.parametrize("x_shape,w_shape,match", [
    ((1, 7, 8, 2), (3, 3, 2, 4), "even output sizes"),    # 5 outputs along H
    ((1, 2, 8, 2), (3, 3, 2, 4), "even output sizes"),    # no output
    ((1, 8, 8, 2), (5, 5, 2, 4), r"\(3,\)\*2"),            # not a 3-tap kernel
    ((1, 8, 8, 2), (3, 3, 3, 4), r"\(3,\)\*2"),            # channel mismatch
])
def test_conv3_valid_rejects_shapes_it_cannot_take(x_shape, w_shape, match):
  with pytest.raises(ValueError, match=match):
    winograd.conv3_valid(jnp.zeros(x_shape), jnp.zeros(w_shape))
