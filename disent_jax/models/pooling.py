"""Max-pooling by 2 over chosen axes, written out for XLA:CPU (the Stage I embedder's channel-major path).

`lax.reduce_window`'s gradient is a select-and-scatter, which XLA:CPU runs as a variadic reduce-window that
also carries the argmax's coordinates, then a scatter: ~32 ms of the Stage I step (batch 64, 32 x 12^3
features, 2 cores). With a window equal to its stride the pool is the maximum of 2^n strided views, and its
gradient is an elementwise choice: forward + backward of that layer alone 64 -> 26 ms (2026-11-25).
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp


def _window_views(x: jax.Array, axes: tuple[int, ...]) -> list[jax.Array]:
  """The 2^n strided views of x, one per window position, in lexicographic (row-major) window order."""
  views = []
  for offsets in itertools.product((0, 1), repeat=len(axes)):
    index = [slice(None)] * x.ndim
    for axis, offset in zip(axes, offsets):
      index[axis] = slice(offset, offset + 2 * (x.shape[axis] // 2), 2)
    views.append(x[tuple(index)])
  return views


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def max_pool_2x(x: jax.Array, axes: tuple[int, ...]) -> jax.Array:
  """Max-pool with window 2 and stride 2 along `axes` (VALID: an odd trailing element is dropped).

  The same values as `lax.reduce_window(x, -inf, lax.max, ...)`, and the same gradient: each window's
  output gradient goes to its first maximum in row-major window order, as XLA's select-and-scatter does with
  ties (common here: empty space gives equal activations).

  Args:
    x: input array.
    axes: the pooled axes (distinct, ascending).

  Returns:
    x pooled along `axes`, each of those dimensions halved (rounded down).
  """
  return functools.reduce(jnp.maximum, _window_views(x, axes))


def _max_pool_2x_fwd(x, axes):
  return max_pool_2x(x, axes), x


def _max_pool_2x_bwd(axes, x, g):
  # Each window's first maximum, recomputed from x here: XLA:CPU fuses this computation into the backward's
  # loop whichever way it is written (tried: kept from the forward as an int8 residual, behind an
  # optimization barrier, as a min-reduction), so computing it here costs nothing more and keeps no residual.
  views = _window_views(x, axes)
  m = functools.reduce(jnp.maximum, views)
  first = jnp.full(m.shape, len(views) - 1, jnp.int8)
  for p in range(len(views) - 2, -1, -1):
    first = jnp.where(views[p] == m, jnp.int8(p), first)
  zero = jnp.zeros((), g.dtype)
  parts = [jnp.where(first == p, g, zero) for p in range(2 ** len(axes))]
  dx = jnp.stack(parts, axis=-1).reshape(*g.shape, *([2] * len(axes)))
  perm = []  # each window axis goes right after the axis it subdivides
  for i in range(g.ndim):
    perm.append(i)
    if i in axes:
      perm.append(g.ndim + axes.index(i))
  dx = dx.transpose(perm).reshape(*[2 * s if i in axes else s for i, s in enumerate(g.shape)])
  pad = [(0, x.shape[i] - dx.shape[i]) for i in range(x.ndim)]  # the dropped odd trailing elements
  return (jnp.pad(dx, pad) if any(p for _, p in pad) else dx,)


max_pool_2x.defvjp(_max_pool_2x_fwd, _max_pool_2x_bwd)
