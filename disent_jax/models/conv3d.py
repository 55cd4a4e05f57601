"""3D convolutions for the voxel embedder, with implementations that are faster on XLA:CPU.

XLA:CPU's 3D convolutions are about 4x slower than PyTorch's oneDNN kernels on our 2-core machines (forward
and backward; measured per layer, see README "Performance"). Three exact rewrites close part of that gap:

* `conv_s2d`: a stride-2 convolution with an odd kernel (VoxNet's first layer, 1 input channel, 5^3) is a
  stride-1 convolution of the space-to-depth input (2x2x2 blocks -> 8 channels) with the kernel
  zero-padded to an even size and regrouped: out[o] = sum_k x[2o + k] w[k] with k = 2a + r. Measured
  forward+backward of conv1 at batch 64: 297 ms -> 107 ms. Plain reshapes and a conv; 'auto' uses it off
  CPU. On CPU it was 'auto''s choice for conv1 until 2026-11-25: once the rotated volume is built once
  (`cad.rotate._trilinear`), conv1 as im2col is faster in the whole Stage I step (32^3, batch 64,
  interleaved, autodiff backward: s2d 735, im2col 642, s2d + im2col inside 735 ms; forward + weight
  gradient of conv1 alone: s2d 317-371, im2col 93 ms), and level or faster where the input is pooled first
  (CPU recipe, batch 32: 43.5 vs 45.8 ms) or at 16^3 (demo: 23.9 vs 27.6 ms).
* `conv_im2col`: a VALID convolution as an explicit patch matrix times the kernel matrix. Measured for
  conv2 (3^3, 32 -> 32 channels, 14^3): 509 -> ~450 ms.
* `conv_planes`: the same with patches over each depth plane's (h, w) window only, one product with the
  kernel regrouped to (kh kw ci, kd co), and the k depth taps summed afterwards: a k times smaller patch
  matrix (and its backward), for (d / d_out) times the multiply-adds. conv2 forward + backward alone
  (batch 64, same run): 424 vs 630 ms at 14^3, 304 vs 414 at 12^3, 15 vs 22 at 6^3. The whole Stage I
  step with conv1 as s2d (2026-11-25, `launch.bench_stage1`, 2 cores, interleaved repeats): 32^3 1019 vs
  1357 ms and 1108 vs 1260 ms; 24^3 373 vs 419 ms; 16^3 62 vs 79 ms. 'auto' uses it on CPU for the
  stride-1 layers; conv1 with both layers as planes instead of im2col was slower (1978 vs 1830 ms at 32^3,
  no s2d), so a strided layer s2d cannot take (odd sizes) stays im2col. Using it inside s2d too (conv1's
  stride-1 convolution of 8 channels) was slower (1653 vs 1108 ms at 32^3): that one stays a lax
  convolution.
The last two are only used on CPU: on GPU/TPU the native convolution is the fast path and the patch
matrices would only cost memory. Their backward is written out (custom VJPs) for one reason: the weight
gradient as g^T @ patches, an ordinary matmul that XLA:CPU gives YNNPACK, where autodiff's patches^T @ g
(and a plain (g^T P)^T, which XLA folds back into it) ran in XLA's slower fallback dot: the Stage I step
587 -> 525 ms (32^3, batch 64, interleaved, 9 repeats, every pair faster), the CPU recipe's network level
(31.3 / 31.1 ms), 16^3 27.7 -> 25.9 ms. The same rewrite of ResNet's im2col changed nothing (224 px
10.9 / 10.9 s per step, 64 px 0.985 / 0.963 s), so `resnet.py` keeps autodiff.

**Channels-first** (`conv_im2col_cm`, `conv_planes_cm`; `Conv3D(channels_first=True)`, which the embedder
uses on CPU, `VoxelEmbedder.layout`): the same two convolutions on activations laid out (C, B, D, H, W).
With channels last, the weight gradient's product needs the output gradient transposed, (Co, N) from
(N, Co): a strided copy XLA:CPU runs slowly (conv2: 57-70 ms for 50 MB), and conv1's stayed in the
fallback dot. Channels first, the patch matrix is (K, N) and the output (Co, N): the forward is
W^T (Co, K) @ P, the input gradient W (K, Co) @ G and the weight gradient G (Co, N) . P (K, N) over their
common last axis, which YNNPACK takes as it is, so no large operand is ever transposed. Whole Stage I step
(32^3, batch 64, interleaved in one process, 2026-11-25): 636 -> 563 ms (7 pairs, every one faster),
624 -> 575 ms in another run (560 with `pooling.max_pool_2x`); the CPU recipe's network (input_pool 2,
batch 32) 32.2 -> 29.9 ms, 16^3 46.2 -> 41.3 ms. The kernel's transpose in the forward goes through an
optimization barrier: XLA otherwise folds it into the dot as a transposed operand, the slow form again.
Tried and not kept here: the patch matrices as one gather instead of a concatenation of
slices (faster alone, 48 -> 21 ms for conv2's; slower in the step, 574 -> 643 ms, the gathers fused with
their producers ran at 52 and 78 ms), im2col for conv2 in this layout (839 vs 530 ms per step), and
padding conv1's 125 patch rows to 128 (level alone).

All implementations compute the same function (tested against `lax.conv_general_dilated`).

Where the gap was before `conv_planes` (profile of the benchmark's Stage I step, batch 64, plain
32^3 network, 2 cores, jax 0.10.2, 2026-11-25; ~960 ms of kernels per step): matrix products 227 ms, the
backward of the im2col patches (27 slice adjoints, one fused pad-and-add each) 150 ms, transposes of the patch
matrix for the weight gradient 140 ms, the trilinear rotation's gathers 127 ms, building the patches 91 ms,
Adam and BatchNorm 72 ms. Most of it is memory traffic of the 382 MB patch matrix of conv2, which oneDNN's
direct convolutions never build (PyTorch: conv2 forward 46 ms against our 132 ms). Tried on conv2 alone and
not kept (forward + backward, 351-549 ms against autodiff's 369-386 ms in the same run, the best within the
noise): a custom VJP with the weight gradient as P^T g, (g^T P)^T (folded back by XLA, see above) or split
over 8 batch chunks, and col2im as
one sum of 27 pads, 27 in-place `.at[].add`s, or 9 pads per depth tap then 3. For the rotation, one gather of
8 packed corner values per voxel instead of `map_coordinates`' 8 scalar gathers was 5x slower on XLA:CPU. Also
tried on conv2 alone: 2D convolutions over depth planes as the batch (one conv2d with kd co outputs then the
depth-tap sum, or k conv2d taps): 1175 and 1766 ms against im2col's 624 ms (XLA:CPU's conv2d backward is slow
too); XLA's oneDNN rewrites (--xla_cpu_use_onednn, --xla_cpu_experimental_onednn_custom_call) leave the
convolution untouched on these AMD cores. Tried in the whole step on 2026-11-25 (`launch.bench_stage1`,
interleaved, 'auto' 648 ms per step, PyTorch 347 ms): conv2 by Winograd F(2x2x2, 3x3x3)
(`winograd.conv3_valid`, 64 batched products of K = 32) 652 ms, level (alone: forward 57 vs 78 ms,
forward + backward 225 vs 238 ms); s2d's inner convolution as im2col 805 ms, and both 845 ms, although
im2col alone was faster for that layer in isolation (forward + weight gradient 90 vs 184 ms).
"""

from __future__ import annotations

import functools
import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp

from disent_jax.models import matmul_forms

_DN = ("NDHWC", "DHWIO", "NDHWC")


def conv_lax(x: jax.Array, w: jax.Array, stride: int) -> jax.Array:
  """Reference VALID convolution, x (B, D, H, W, Ci), w (k, k, k, Ci, Co)."""
  return lax.conv_general_dilated(x, w, (stride,) * 3, "VALID", dimension_numbers=_DN)


def space_to_depth(x: jax.Array, f: int) -> jax.Array:
  """(B, D, H, W, C) -> (B, D/f, H/f, W/f, f^3 C): each f^3 block becomes channels, ordered (d, h, w, c).

  The sizes must divide by f (callers check, with their own message).
  """
  b, d, h, wd, c = x.shape
  x = x.reshape(b, d // f, f, h // f, f, wd // f, f, c)
  return x.transpose(0, 1, 3, 5, 2, 4, 6, 7).reshape(b, d // f, h // f, wd // f, f ** 3 * c)


def conv_s2d(x: jax.Array, w: jax.Array) -> jax.Array:
  """Stride-2 VALID convolution via space-to-depth (even input size, odd kernel k).

  x (B, D, H, W, Ci) -> (B, D/2, H/2, W/2, 8 Ci); w (k, k, k, Ci, Co) zero-padded to k + 1 and regrouped to
  ((k+1)/2, (k+1)/2, (k+1)/2, 8 Ci, Co); then a stride-1 VALID convolution.
  """
  b, d, h, wd, ci = x.shape
  k, co = w.shape[0], w.shape[-1]
  if d % 2 or h % 2 or wd % 2 or k % 2 == 0:
    raise ValueError(f"conv_s2d needs even input sizes and an odd kernel, got {x.shape}, {w.shape}")
  xs = space_to_depth(x, 2)
  kk = (k + 1) // 2
  wp = jnp.pad(w, ((0, 1), (0, 1), (0, 1), (0, 0), (0, 0)))
  wp = wp.reshape(kk, 2, kk, 2, kk, 2, ci, co).transpose(0, 2, 4, 1, 3, 5, 6, 7)
  wp = wp.reshape(kk, kk, kk, 8 * ci, co)
  return lax.conv_general_dilated(xs, wp, (1, 1, 1), "VALID", dimension_numbers=_DN)


def _im2col_patches(x: jax.Array, k: int, stride: int) -> jax.Array:
  """(B, od, oh, ow, k^3 Ci) patches of a VALID convolution, features ordered (kd, kh, kw, ci)."""
  return matmul_forms.window_patches(x, k, stride, (1, 2, 3), channel_axis=-1)


def _weight_grad(g_t: jax.Array, cols: jax.Array) -> jax.Array:
  """g_t (M, N) @ cols (N, K) -> (M, K): the weight gradient of a patches @ matrix product.

  Written with the output-gradient transposed first so that the product is an ordinary (M, N) @ (N, K)
  matmul that XLA:CPU hands to YNNPACK. Autodiff's form, patches^T @ g, contracts the long leading axis of
  both operands and ran in XLA's slower fallback dot (Stage I conv2: ~100 ms against YNNPACK's ~55 ms for
  the same 7 GFLOP; batch 64 at 32^3, 2 cores). Callers reshape the result before transposing it: XLA
  folds a transpose of a 2D dot's result back into the dot, which restores the slow form.
  """
  return g_t @ cols


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv_im2col(x: jax.Array, w: jax.Array, stride: int) -> jax.Array:
  """VALID convolution as (patches @ kernel matrix); patch features ordered (kd, kh, kw, ci).

  The backward is written out (`_weight_grad` says why); it computes autodiff's gradients.
  """
  k, co = w.shape[0], w.shape[-1]
  return jnp.einsum("bdhwk,ko->bdhwo", _im2col_patches(x, k, stride), w.reshape(-1, co))


def _im2col_fwd(x, w, stride):
  return conv_im2col(x, w, stride), (x, w)


def _im2col_bwd(stride, res, g):
  x, w = res
  k, ci, co = w.shape[0], w.shape[3], w.shape[4]
  cols, cols_vjp = jax.vjp(lambda v: _im2col_patches(v, k, stride), x)
  dx = cols_vjp(jnp.einsum("bdhwo,ko->bdhwk", g, w.reshape(-1, co)))[0]
  # Here XLA folds the plain transpose of g into the dot (conv1: the fallback dot stays); routing conv1's
  # gradient through YNNPACK with a transpose it cannot fold measured level (514 / 521 ms per step).
  dw_t = _weight_grad(g.reshape(-1, co).T, cols.reshape(-1, cols.shape[-1]))  # (co, k^3 ci)
  return dx, dw_t.reshape(co, k, k, k, ci).transpose(1, 2, 3, 4, 0)


conv_im2col.defvjp(_im2col_fwd, _im2col_bwd)


def _plane_patches(x: jax.Array, k: int, stride: int) -> jax.Array:
  """(B, D, oh, ow, k^2 Ci): the (h, w) patches of every input depth plane, features ordered (kh, kw, ci)."""
  return matmul_forms.window_patches(x, k, stride, (2, 3), channel_axis=-1)


def _planes_kernel(w: jax.Array) -> jax.Array:
  """(k, k, k, Ci, Co) -> (k k Ci, k Co): rows (kh, kw, ci), columns (kd, co), as `conv_planes` multiplies."""
  k, c, co = w.shape[0], w.shape[3], w.shape[4]
  return w.transpose(1, 2, 3, 0, 4).reshape(k * k * c, k * co)


def _tap_gradients(g: jax.Array, d: int, k: int, stride: int, depth_axis: int) -> list[jax.Array]:
  """The gradient of each depth tap's plane products (`conv_planes`): for tap a, g moved to the input depth
  planes it read (a, a + stride, ...) of the d, zero elsewhere."""
  od = g.shape[depth_axis]
  zero = jnp.zeros((), g.dtype)
  config = [(0, 0, 0)] * g.ndim
  taps = []
  for a in range(k):
    config[depth_axis] = (a, d - a - stride * (od - 1) - 1, stride - 1)
    taps.append(lax.pad(g, zero, tuple(config)))
  return taps


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv_planes(x: jax.Array, w: jax.Array, stride: int) -> jax.Array:
  """VALID convolution as per-depth-plane patches times the kernel matrix, depth taps summed afterwards.

  The patches cover only the k x k (h, w) window of every input depth plane (features ordered kh, kw, ci);
  one product with the kernel regrouped to (kh kw ci, kd co) gives each plane's contribution to every
  depth tap, and out[d] = sum_a y[stride d + a, tap a]. The patch matrix is k times smaller than
  `conv_im2col`'s (k^2 instead of k^3 copies of the input), which is what the step pays for on XLA:CPU.
  The backward is written out (`_weight_grad` says why); it computes autodiff's gradients.
  """
  d = x.shape[1]
  k, co = w.shape[0], w.shape[4]
  od = (d - k) // stride + 1
  cols = _plane_patches(x, k, stride)
  y = jnp.einsum("bdhwk,ko->bdhwo", cols, _planes_kernel(w)).reshape(*cols.shape[:4], k, co)
  return sum(y[:, a:a + stride * (od - 1) + 1:stride, :, :, a, :] for a in range(k))


def _planes_fwd(x, w, stride):
  return conv_planes(x, w, stride), (x, w)


def _planes_bwd(stride, res, g):
  x, w = res
  d = x.shape[1]
  k, c, co = w.shape[0], w.shape[3], w.shape[4]
  cols, cols_vjp = jax.vjp(lambda v: _plane_patches(v, k, stride), x)
  taps = _tap_gradients(g, d, k, stride, depth_axis=1)
  gy = jnp.stack(taps, axis=-2)  # (B, D, oh, ow, kd, co)
  dx = cols_vjp(jnp.einsum("bdhwo,ko->bdhwk", gy.reshape(*gy.shape[:4], k * co), _planes_kernel(w)))[0]
  # Rows (kd, co) of the transposed gradient built tap by tap (a concatenation, not a transpose XLA folds).
  g_t = jnp.concatenate([t.reshape(-1, co).T for t in taps], axis=0)
  dwm_t = _weight_grad(g_t, cols.reshape(-1, cols.shape[-1]))  # (kd co, kh kw ci)
  return dx, dwm_t.reshape(k, co, k, k, c).transpose(0, 2, 3, 4, 1)


conv_planes.defvjp(_planes_fwd, _planes_bwd)


# Channel-major versions: activations laid out (C, B, D, H, W), so that every product of the step is a
# row-major matmul XLA:CPU gives YNNPACK without a transposed copy of a large operand (module docstring,
# "Channels-first").


def _im2col_patches_cm(x: jax.Array, k: int, stride: int) -> jax.Array:
  """(k^3 Ci, B, od, oh, ow) patches of x (Ci, B, D, H, W), rows ordered (kd, kh, kw, ci)."""
  return matmul_forms.window_patches(x, k, stride, (2, 3, 4), channel_axis=0)


def _plane_patches_cm(x: jax.Array, k: int, stride: int) -> jax.Array:
  """(k^2 Ci, B, D, oh, ow): the (h, w) patches of every depth plane of x (Ci, B, D, H, W), rows (kh, kw, ci)."""
  return matmul_forms.window_patches(x, k, stride, (3, 4), channel_axis=0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv_im2col_cm(x: jax.Array, w: jax.Array, stride: int) -> jax.Array:
  """`conv_im2col` on channel-major activations: x (Ci, B, D, H, W), w (k, k, k, Ci, Co) -> (Co, B, od, oh, ow)."""
  k, co = w.shape[0], w.shape[-1]
  cols = _im2col_patches_cm(x, k, stride)
  y = matmul_forms.transposed_copy(w.reshape(-1, co)) @ cols.reshape(cols.shape[0], -1)
  return y.reshape(co, *cols.shape[1:])


def _im2col_cm_fwd(x, w, stride):
  return conv_im2col_cm(x, w, stride), (x, w)


def _im2col_cm_bwd(stride, res, g):
  x, w = res
  k, ci, co = w.shape[0], w.shape[3], w.shape[4]
  cols, cols_vjp = jax.vjp(lambda v: _im2col_patches_cm(v, k, stride), x)
  g2 = g.reshape(co, -1)
  dx = cols_vjp((w.reshape(-1, co) @ g2).reshape(cols.shape))[0]
  dw_t = matmul_forms.nt(g2, cols.reshape(cols.shape[0], -1))  # (co, k^3 ci)
  return dx, dw_t.reshape(co, k, k, k, ci).transpose(1, 2, 3, 4, 0)


conv_im2col_cm.defvjp(_im2col_cm_fwd, _im2col_cm_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv_planes_cm(x: jax.Array, w: jax.Array, stride: int) -> jax.Array:
  """`conv_planes` on channel-major activations: x (Ci, B, D, H, W), w (k, k, k, Ci, Co) -> (Co, B, od, oh, ow)."""
  d = x.shape[2]
  k, co = w.shape[0], w.shape[4]
  od = (d - k) // stride + 1
  cols = _plane_patches_cm(x, k, stride)
  y = matmul_forms.transposed_copy(_planes_kernel(w)) @ cols.reshape(cols.shape[0], -1)
  y = y.reshape(k, co, *cols.shape[1:])
  return sum(y[a, :, :, a:a + stride * (od - 1) + 1:stride] for a in range(k))


def _planes_cm_fwd(x, w, stride):
  return conv_planes_cm(x, w, stride), (x, w)


def _planes_cm_bwd(stride, res, g):
  x, w = res
  d = x.shape[2]
  k, c, co = w.shape[0], w.shape[3], w.shape[4]
  cols, cols_vjp = jax.vjp(lambda v: _plane_patches_cm(v, k, stride), x)
  # Rows (kd, co): a concatenation of contiguous blocks in this layout.
  gy = jnp.concatenate(_tap_gradients(g, d, k, stride, depth_axis=2), axis=0).reshape(k * co, -1)
  dx = cols_vjp((_planes_kernel(w) @ gy).reshape(cols.shape))[0]
  dwm_t = matmul_forms.nt(gy, cols.reshape(cols.shape[0], -1))  # (kd co, kh kw ci)
  return dx, dwm_t.reshape(k, co, k, k, c).transpose(0, 2, 3, 4, 1)


conv_planes_cm.defvjp(_planes_cm_fwd, _planes_cm_bwd)


# The implementations of `Conv3D(channels_first=True)`.
CHANNELS_FIRST_IMPLS = ("auto", "im2col", "planes")


class Conv3D(nn.Module):
  """A VALID 3D convolution with a choice of implementation (parameters named as nn.Conv's).

  Attributes:
    features: output channels.
    kernel_size: cubic kernel size k.
    stride: cubic stride.
    use_bias: add a bias.
    impl: 'lax', 's2d' (stride 2, odd k, even input), 'im2col', 'planes', or 'auto': on CPU planes
      (stride 1) or im2col (strided); elsewhere s2d where it applies, else lax.
    channels_first: inputs and outputs laid out (C, B, D, H, W) (`conv_planes_cm`); impl 'auto' (planes
      for stride 1, im2col otherwise), 'planes' or 'im2col'. The parameters are the same as channels-last's.
    dtype: computation dtype.
  """
  features: int
  kernel_size: int
  stride: int = 1
  use_bias: bool = True
  impl: str = "auto"
  channels_first: bool = False
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k = self.kernel_size
    ci = x.shape[0] if self.channels_first else x.shape[-1]
    w = self.param("kernel", nn.initializers.lecun_normal(), (k, k, k, ci, self.features),
                   jnp.float32).astype(self.dtype)
    x = x.astype(self.dtype)
    if self.channels_first:
      if self.impl not in CHANNELS_FIRST_IMPLS:
        raise ValueError(f"channels-first Conv3D takes impl in {CHANNELS_FIRST_IMPLS}, got {self.impl!r}")
      impl = self.impl if self.impl != "auto" else ("planes" if self.stride == 1 else "im2col")
      y = {"planes": conv_planes_cm, "im2col": conv_im2col_cm}[impl](x, w, self.stride)
      if self.use_bias:
        y = y + self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32).astype(
            self.dtype)[:, None, None, None, None]
      return y
    impl = self.impl
    if impl == "auto":
      s2d_ok = self.stride == 2 and k % 2 == 1 and all(n % 2 == 0 for n in x.shape[1:4])
      if jax.default_backend() != "cpu":
        impl = "s2d" if s2d_ok else "lax"
      else:  # planes measured faster for stride 1 only, im2col for strided layers (module docstring)
        impl = "planes" if self.stride == 1 else "im2col"
    if impl == "s2d":
      if self.stride != 2:  # conv_s2d computes a stride-2 convolution; anything else would be wrong silently
        raise ValueError(f"conv impl 's2d' needs stride 2, got stride {self.stride} (use 'auto')")
      y = conv_s2d(x, w)
    elif impl == "planes":
      y = conv_planes(x, w, self.stride)
    elif impl == "im2col":
      y = conv_im2col(x, w, self.stride)
    elif impl == "lax":
      y = conv_lax(x, w, self.stride)
    else:
      raise ValueError(f"unknown conv impl {self.impl!r}")
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32).astype(self.dtype)
    return y
