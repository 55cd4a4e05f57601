"""Patch matrices and the matrix-product forms XLA:CPU runs fast, shared by the 3D (`conv3d`) and 2D
(`resnet`) convolutions written as matrix products.

XLA:CPU hands row-major products to YNNPACK; a product whose operand is transposed (contracting an
operand's leading axis) runs in its slower fallback dot, or behind a strided copy of the operand. The
channel-major layers are written so that every large operand keeps its long axis last: their forward
multiplies the small kernel matrix's transpose (`transposed_copy`) and their weight gradient contracts
both operands' last axis (`nt`).
"""

from __future__ import annotations

import itertools

import jax
from jax import lax
import jax.numpy as jnp


def window_patches(x: jax.Array, k: int, stride: int, axes: tuple[int, ...], channel_axis: int) -> jax.Array:
  """The VALID patches of a k-wide window with `stride` over `axes` of x: the k^n strided slices, one per
  window offset (row-major over `axes`), concatenated along the channel axis (offset-major, then channel)."""
  out = {a: (x.shape[a] - k) // stride + 1 for a in axes}
  slices = []
  for offsets in itertools.product(range(k), repeat=len(axes)):
    index = [slice(None)] * x.ndim
    for a, o in zip(axes, offsets):
      index[a] = slice(o, o + stride * (out[a] - 1) + 1, stride)
    slices.append(x[tuple(index)])
  return jnp.concatenate(slices, axis=channel_axis)


def transposed_copy(m: jax.Array) -> jax.Array:
  """m with its last two axes swapped, as its own array. XLA folds a plain transpose of a dot's operand into
  the dot's dimension numbers, and XLA:CPU runs the resulting transposed-operand product in its slower
  fallback dot."""
  return lax.optimization_barrier(jnp.swapaxes(m, -1, -2))


def nt(a: jax.Array, b: jax.Array) -> jax.Array:
  """a (..., M, N) @ b (..., K, N)^T -> (..., M, K), contracting both operands' last axis (a form YNNPACK
  takes); leading axes are batch axes."""
  batch = tuple(range(a.ndim - 2))
  return lax.dot_general(a, b, (((a.ndim - 1,), (b.ndim - 1,)), (batch, batch)))
