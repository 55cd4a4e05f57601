"""`pooling.max_pool_2x` against XLA's reduce-window max pooling: values and gradients, ties included."""

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest

from disent_jax.models import pooling


def _reference(x, axes):
  window = tuple(2 if i in axes else 1 for i in range(x.ndim))
  return lax.reduce_window(x, -jnp.inf, lax.max, window, window, "VALID")


@pytest.mark.parametrize("shape,axes", [((3, 2, 4, 6, 4), (2, 3, 4)),  # the embedder's channels-first use
                                        ((2, 5, 7, 3), (1, 2)),  # odd sizes: trailing elements dropped
                                        ((4, 9, 2), (1,))])
def test_values_and_gradients_equal_reduce_window_with_ties(shape, axes):
  rng = np.random.default_rng(0)
  # Rounded values: most windows hold ties, where the gradient must go to the first maximum only, as
  # XLA's select-and-scatter does (a gradient split between ties would still sum right per window).
  x = jnp.asarray(np.round(rng.standard_normal(shape)), jnp.float32)
  y_ref, vjp_ref = jax.vjp(lambda v: _reference(v, axes), x)
  y, vjp = jax.vjp(lambda v: pooling.max_pool_2x(v, axes), x)
  np.testing.assert_array_equal(y, y_ref)
  ct = jnp.asarray(rng.standard_normal(y.shape), jnp.float32)
  np.testing.assert_array_equal(vjp(ct)[0], vjp_ref(ct)[0])


def test_gradient_of_a_hand_made_window():
  # One 2x2 window over axes (0, 1) of [[1, 3], [3, 0]]: the maximum 3 appears at positions 1 and 2
  # (row-major); the first one takes the whole gradient.
  x = jnp.asarray([[1.0, 3.0], [3.0, 0.0]])
  y, vjp = jax.vjp(lambda v: pooling.max_pool_2x(v, (0, 1)), x)
  np.testing.assert_array_equal(y, [[3.0]])
  np.testing.assert_array_equal(vjp(jnp.asarray([[5.0]]))[0], [[0.0, 5.0], [0.0, 0.0]])
