"""Winograd's minimal filtering F(2, 3): stride-1 convolutions with 3-tap kernels in fewer multiplications.

Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks" (CVPR 2016). Along one axis, two outputs
of a 3-tap correlation are A^T [(G g) * (B^T d)] for a 4-sample input tile d: 4 multiplications instead of
6. Applied along every spatial axis, a 3x3 convolution costs 16 products per 2x2 outputs instead of 36,
and the products of all tiles and channels become 4^n independent matrix products

  M[t] = V[t] @ U[t],  V[t]: (tiles, C_in) transformed input,  U[t]: (C_in, C_out) transformed kernel,

so the heavy work is still a matrix product, on a transformed input of (4/2)^n = 4x (2D) the input's size
instead of im2col's 9x patch matrix. The transforms are sums and differences of strided slices, which XLA
fuses. Autodiff gives the backward pass (the transposed transforms and two more batched products): a
custom VJP with the input gradient as a Winograd convolution of the flipped kernel was measured no faster.

Why it is here: on XLA:CPU the im2col patch matrices of ResNet-50's 56x56 and 28x28 layers are memory-bound
(README "Performance"). Measured on the 2-core dev machine (2026-11-25, jax 0.10.2, batch 32, one 3x3
layer with as many output as input channels, forward + backward, im2col -> Winograd): 56^2 x 64 channels
244 -> 185 ms, 28^2 x 128 190 -> 124 ms, 14^2 x 256 161 -> 99 ms, 7^2 x 512 145 -> 130 ms; small layers lose
to the fixed cost of the 16 transformed slices (12^2 x 32 3.4 -> 4.3 ms), so `resnet.Conv` picks per layer.
F(4, 3) (36 products per 4x4 outputs) was faster forward on the two largest of those layers (42 vs 49 and
32 vs 38 ms) but 1.6-1.8x slower than F(2, 3) forward + backward on all four and less accurate, so F(2, 3)
it is.

Accuracy: the transforms' coefficients are 0, +-1 and +-1/2, exact in binary floating point; the result
differs from a direct convolution by float32 rounding only (tested against `lax.conv_general_dilated`).
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp

# F(2, 3): input transform B^T (4x4), kernel transform G (4x3), output transform A^T (2x4).
_BT = ((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1))
_G = ((1, 0, 0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0, 0, 1))
_AT = ((1, 1, 1, 0), (0, 1, -1, -1))


def _combine(coefs: Sequence[float], parts: Sequence[jax.Array]) -> jax.Array:
  """sum_i coefs[i] * parts[i], skipping zero terms and writing +-1 as adds and subtracts."""
  acc = None
  for c, p in zip(coefs, parts):
    if c == 0:
      continue
    term = p if c == 1 else (-p if c == -1 else c * p)
    acc = term if acc is None else acc + term
  return acc


def conv3_valid(x: jax.Array, w: jax.Array) -> jax.Array:
  """VALID stride-1 convolution with a 3-tap kernel along every spatial axis, by Winograd F(2, 3).

  Args:
    x: (B, *spatial, C_in) channels-last input with n spatial axes; each output size (size - 2) must be
      even (pad the input first otherwise; `resnet.conv_winograd` does).
    w: (3,) * n + (C_in, C_out) kernel (HWIO order for n = 2, DHWIO for n = 3).

  Returns:
    (B, *(size - 2), C_out), the same as `lax.conv_general_dilated(x, w, (1,) * n, 'VALID')` up to float
    rounding.
  """
  return _conv3_valid(x, w, channels_first=False,
                      matmul=lambda v, u: jnp.einsum("tnc,tco->tno", v, u))


def conv3_valid_cm(x: jax.Array, w: jax.Array,
                   matmul: Callable[[jax.Array, jax.Array], jax.Array] | None = None) -> jax.Array:
  """`conv3_valid` on channel-major activations: x (C_in, B, *spatial) -> (C_out, B, *(size - 2)).

  The 4^n products are M[t] = U[t]^T @ V[t] with V[t] (C_in, tiles), so every operand keeps its long axis
  last (the layout `resnet.matmul_cm` is written for).

  Args:
    x: (C_in, B, *spatial) input; output sizes (size - 2) even, as for `conv3_valid`.
    w: (3,) * n + (C_in, C_out) kernel.
    matmul: computes the products, (4^n, C_in, C_out) transformed kernel and (4^n, C_in, N) transformed
      input -> (4^n, C_out, N); default `jnp.matmul` of the kernel's transpose.

  Returns:
    (C_out, B, *(size - 2)).
  """
  if matmul is None:
    matmul = lambda u, v: jnp.matmul(jnp.swapaxes(u, -1, -2), v)
  return _conv3_valid(x, w, channels_first=True, matmul=lambda v, u: matmul(u, v))


def _conv3_valid(x: jax.Array, w: jax.Array, channels_first: bool,
                 matmul: Callable[[jax.Array, jax.Array], jax.Array]) -> jax.Array:
  """Both layouts of `conv3_valid`: matmul(v, u) multiplies the transformed input and kernel."""
  n = x.ndim - 2
  first = 2 if channels_first else 1  # first spatial axis
  c_in, b = (x.shape[0], x.shape[1]) if channels_first else (x.shape[-1], x.shape[0])
  spatial, c_out = x.shape[first:first + n], w.shape[-1]
  if w.shape != (3,) * n + (c_in, c_out):
    raise ValueError(f"conv3_valid needs a (3,)*{n} + (C_in, C_out) kernel for input {x.shape}, "
                     f"got {w.shape}")
  if any(s < 4 or s % 2 for s in spatial):
    raise ValueError(f"conv3_valid needs even output sizes >= 2, got input {x.shape}")
  tiles = [(s - 2) // 2 for s in spatial]
  # Input transform, one axis at a time: 4 slices of stride 2 (tile starts), combined by B^T, the 4 results
  # stacked on a new leading axis. After axis k the spatial axis k sits at first + 2k (k stacked axes
  # before it).
  v = x
  for k, t in enumerate(tiles):
    axis = first + 2 * k
    cols = [jax.lax.slice_in_dim(v, i, i + 2 * (t - 1) + 1, 2, axis) for i in range(4)]
    v = jnp.stack([_combine(row, cols) for row in _BT])
  # Tile-element axes in the order (a_{n-1}, ..., a_0); (4^n, C_in, N) channels-first, (4^n, N, C_in) else.
  v = v.reshape(4 ** n, c_in, -1) if channels_first else v.reshape(4 ** n, -1, c_in)
  # Kernel transform G g G^T along every axis; tensordot puts each new axis in front, giving the same order.
  g = jnp.asarray(_G, w.dtype)
  u = w
  for k in range(n):
    u = jnp.tensordot(g, u, axes=((1,), (k,)))
  m = matmul(v, u.reshape(4 ** n, c_in, c_out))
  lead = (c_out, b) if channels_first else (b,)
  m = m.reshape((4,) * n + lead + tuple(tiles) + (() if channels_first else (c_out,)))
  # Output transform A^T along the leading tile-element axis, n times; each puts its 2 outputs last, so the
  # result is (*lead, *tiles, [C_out,] r_{n-1}, ..., r_0), then every r_k moves next to its tile axis.
  y = m
  for _ in range(n):
    y = jnp.stack([_combine(row, [y[i] for i in range(4)]) for row in _AT], axis=-1)
  rank = y.ndim  # r_k sits at rank - 1 - k
  perm = list(range(len(lead)))
  for k in range(n):
    perm += [len(lead) + k, rank - 1 - k]
  if not channels_first:
    perm.append(len(lead) + n)
  out = tuple(2 * t for t in tiles)
  return y.transpose(perm).reshape(*((c_out, b) if channels_first else (b,)), *out,
                                   *(() if channels_first else (c_out,)))
