"""Stage II image backbone: ResNet v1.5 in linen, laid out like torchvision's so ImageNet weights map 1:1.

Architecture (He et al. 2016, as torchvision builds it, "v1.5"):
  (B, H, W, 3) -> Conv(64, 7x7, stride 2, pad 3) -> BN -> ReLU -> MaxPool(3x3, stride 2, pad 1)
  -> layer1 .. layerN (stage i: stage_sizes[i] residual blocks of num_filters * 2^i channels, the first
     block of stages 2.. strides by 2) -> global average pool -> (B, feature_dim) float32.
Blocks: 'basic' (3x3, 3x3; ResNet-18/34) or 'bottleneck' (1x1, 3x3, 1x1 x4 channels; ResNet-50). v1.5 puts
the stride of a bottleneck on its 3x3 conv (the original paper put it on the first 1x1); the projection
shortcut ('downsample') is a strided 1x1 conv + BN, used whenever the shape changes. Convs have no bias
(BatchNorm follows every one); BatchNorm uses torchvision's eps 1e-5.

Padding is explicit and symmetric (pad 3 for 7x7, 1 for 3x3), as torch does: 'SAME' would pad (2, 3) for
a strided conv on an even size, shifting every feature map by one pixel against torchvision weights. The
max-pool pads with -inf, so it is well defined down to a 1x1 input (32 px crops reach layer4 at 1x1).

Submodule names follow torchvision's keys with '.' -> '_' ('conv1', 'bn1', 'layer1_0' holding 'conv1',
'bn1', ..., 'downsample_conv', 'downsample_bn'), so `torchvision_import` maps state dicts mechanically.

BatchNorm: under `jax.jit` with a batch sharded over devices the batch statistics are already global (XLA
inserts the cross-device reduction), so `bn_axis_name` stays None; under `jax.pmap` set it to the pmap
axis name so each device's statistics are averaged across devices. Statistics are always reduced in
float32, whatever `dtype` is.

Speed on XLA:CPU (ResNet-50 train step: forward, linear head + cross-entropy, backward, Adam; batch 32,
64 px; one pinned core of the shared 2-core dev machine, s/step; `disent_jax.bench.flax_resnet`):
* Convolutions as im2col + one matrix product (`conv_impl='im2col'`; 'auto' on CPU for every layer
  Winograd does not take, below): 5.35 -> 1.67 s. XLA:CPU's
  own convolutions are slow inside this network, worst for the strided 3x3 ones (lax for just those
  three: +0.77 s) and the small-spatial 3x3 ones of layers 2-4; 1x1 convolutions as plain matrix
  products run 2-3x faster than as convolutions. im2col also beat 9 shifted products and a 3-row variant
  per layer, and lax for only the large stride-1 3x3 layers was level at 64 px and 5% slower at 224 px.
  On GPU/TPU 'auto' keeps lax, the fast path there.
* 3x3 stride-1 convolutions by Winograd F(2x2, 3x3) (`winograd.conv3_valid`: 16 products per 2x2 outputs
  instead of 36, on a transformed input 4x the input's size instead of im2col's 9x) where the layer is
  large enough: 'auto' on CPU takes it from 49 (7x7) outputs and 64x64 channels up, im2col otherwise. Per
  layer (batch 32, forward + backward, 2 cores, 2026-11-25), im2col -> Winograd: 56^2 x 64 ch 244 -> 185
  ms, 28^2 x 128 190 -> 124, 16^2 x 64 19.0 -> 12.9, 14^2 x 256 161 -> 99, 8^2 x 128 15.2 -> 13.7, 7^2 x 512
  145 -> 130; losing where the 16 slices' fixed cost dominates: 4^2 x 256 12.2 -> 13.4, 6^2 x 64 2.4 ->
  3.4, 12^2 x 32 3.4 -> 4.3 (the half-width ResNet-18 of the CPU recipe at 48 px has only such layers,
  so it keeps im2col). Whole ResNet-50 train step, same runs interleaved: 224 px 3.03-3.17 -> 3.45-3.67
  img/s (+13-16 %), 64 px 45.3 -> 45.7-49.3 img/s.
* Tried on 2026-11-25 and not kept: the stem's max-pool as 9 strided slices with a first-maximum custom
  VJP. XLA:CPU differentiates `reduce_window` max into a select-and-scatter that fills one int32 index
  array per dimension (profile at 224 px: ~1.4 s of thread time in those ops), and the pool alone ran 224
  -> 51 ms forward + backward, but the whole step did not move (224 px 9.73 vs 9.88 s, 64 px 0.693 vs
  0.702 s, interleaved; presumably XLA ran that work concurrently with other ops). Turning XLA's YNNPACK
  dot fusions off (`--xla_cpu_experimental_ynn_fusion_type=`) made the 64 px step 1.4-1.7x slower.
* `BatchNorm` folded into one multiply-add: 1.49 -> 1.44 s (the same as with no BatchNorm at all).
* Process-level, so not here: glibc malloc tunables (launch/main.py sets them) 1.69 -> 1.40 s.
  XLA flags tried and left out (within noise, or worse): thunk runtime off, fast math, oneDNN / XNNPACK
  / YNNPACK dot fusions, YNNPACK convolutions.
Result: 1.40 s (22.8 img/s) against PyTorch 2.13's 1.29 s (24.9 img/s) on the same core; 20.6 s against
13.0-13.6 s at 224 px.

**Channels-first** (`layout`, 'auto' for training on CPU): the feature maps laid out (C, B, H, W), as Stage I's
embedder does (`conv3d` module docstring). Channels-last, the weight gradient of every convolution as a
matrix product contracts the long B*H*W axis that leads both operands, and XLA:CPU either transposes one
of them (a strided copy of the whole activation: a 1x1 layer's weight gradient reads its input transposed)
or runs the product in its slower fallback dot. Channels-first, a layer is W^T (Co, K) @ P (K, N) with the
patch matrix P (the activation itself for a 1x1 layer), its input gradient W @ G, and its weight gradient
G (Co, N) . P (K, N) over their common last axis (`matmul_cm`): row-major products YNNPACK takes as they
are. Winograd's 16 products take the same form (`winograd.conv3_valid_cm`). Same parameters, same
function (tested against channels-last, forward, gradients and BatchNorm statistics). Measured on the
2-core machine (2026-11-25, interleaved in one process, the benchmark's train step, batch 32):
ResNet-50 224 px 12.6-13.9 -> 8.5-10.0 s per step (medians 13.6 -> 9.5), 64 px 1.041 -> 0.886 s,
the CPU recipe's half-width ResNet-18 at 48 px 0.137 -> 0.106 s. The input is transposed once (3
channels) and the pooled features once (B, C). The gain is the backward's: the forward alone (inference,
ResNet-50 at 224 px, same process) is slower channels-first, 1 image 162 vs 128 ms, 32 images 3.06 vs
2.62 s, so 'auto' takes channels-first for training only.

Initialisation matches torchvision's default: Kaiming-normal (fan_out, ReLU gain) convs, BN scale 1 and
bias 0. `zero_init_residual=True` zeroes the last BN scale of each block (Goyal et al. 2017: every block
starts as the identity), torchvision's option of the same name.
"""

from __future__ import annotations

import functools
from typing import Callable

from flax import traverse_util
import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp

from disent_jax import errors
from disent_jax.models import matmul_forms
from disent_jax.models import winograd

# torchvision's nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu"): N(0, 2 / fan_out).
_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def conv_lax(x: jax.Array, w: jax.Array, stride: int, pad: int) -> jax.Array:
  """Reference 2D convolution: NHWC x, HWIO w, symmetric zero padding."""
  return lax.conv_general_dilated(x, w, (stride, stride), ((pad, pad), (pad, pad)),
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))


def conv_im2col(x: jax.Array, w: jax.Array, stride: int, pad: int) -> jax.Array:
  """The same convolution as one matrix product: explicit patches (features ordered kh, kw, ci) times the
  kernel matrix; a 1x1 kernel needs no patches (a strided slice, then the product)."""
  k = w.shape[0]
  if k == 1 and pad == 0:
    return jnp.einsum("bhwc,co->bhwo", x[:, ::stride, ::stride], w[0, 0])
  x = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  ho, wo = (x.shape[1] - k) // stride + 1, (x.shape[2] - k) // stride + 1
  if k > 3:
    # Large kernels (the 7x7 stem): the kw taps first, then the kh taps of those rows, 2k slices instead
    # of k^2. Measured for the stem (batch 32, 64 px, fwd + bwd, one core): compile 1.7 -> 0.7 s,
    # run 125 -> 108 ms. For 3x3 kernels it was no faster (and 20% slower strided), so they take k^2.
    rows = jnp.concatenate([x[:, :, j:j + stride * (wo - 1) + 1:stride] for j in range(k)], axis=-1)
    cols = [rows[:, i:i + stride * (ho - 1) + 1:stride] for i in range(k)]
  else:
    cols = [x[:, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride]
            for i in range(k) for j in range(k)]
  return jnp.einsum("bhwk,ko->bhwo", jnp.concatenate(cols, axis=-1), w.reshape(-1, w.shape[-1]))


def _winograd_applies(w: jax.Array, stride: int, pad: int) -> bool:
  """Whether `conv_winograd` computes this layer by Winograd: a 3x3 kernel, stride 1, pad 1."""
  return w.shape[:2] == (3, 3) and stride == 1 and pad == 1


def conv_winograd(x: jax.Array, w: jax.Array, stride: int, pad: int) -> jax.Array:
  """The same convolution by Winograd F(2x2, 3x3) (`winograd.conv3_valid`) for a 3x3 kernel, stride 1, pad
  1; an odd input size gets one more row/column of zeros (its extra output is cropped). Other kernels and
  strides fall back to `conv_im2col`."""
  if not _winograd_applies(w, stride, pad):
    return conv_im2col(x, w, stride, pad)
  h, wd = x.shape[1:3]
  x = jnp.pad(x, ((0, 0), (1, 1 + h % 2), (1, 1 + wd % 2), (0, 0)))
  return winograd.conv3_valid(x, w)[:, :h, :wd]


def _winograd_pays(x: jax.Array, w: jax.Array, stride: int, pad: int, channels_first: bool = False) -> bool:
  """Whether F(2x2, 3x3) applies and beats im2col for this layer on XLA:CPU (see the module docstring)."""
  (h, wd), c_in = (x.shape[2:], x.shape[0]) if channels_first else (x.shape[1:3], x.shape[3])
  return _winograd_applies(w, stride, pad) and h * wd >= 49 and c_in * w.shape[-1] >= 64 * 64


_CONV_IMPLS = {"lax": conv_lax, "im2col": conv_im2col, "winograd": conv_winograd}


@jax.custom_vjp
def matmul_cm(w: jax.Array, x: jax.Array) -> jax.Array:
  """A channel-major layer's product: w (..., K, Co), x (..., K, N) -> w^T @ x, (..., Co, N).

  Written out so that no large operand is ever transposed (module docstring, "Channels-first"): the
  forward multiplies the kernel's transpose (small; an optimization barrier keeps XLA from folding it
  back into the dot as a transposed operand, which XLA:CPU runs in a slower fallback), the input gradient
  is w @ g, and the weight gradient is g . x over their common last axis, a form YNNPACK takes as it is.
  Leading axes are batch axes (Winograd's 16 products).
  """
  return jnp.matmul(matmul_forms.transposed_copy(w), x)


def _matmul_cm_fwd(w, x):
  return matmul_cm(w, x), (w, x)


def _matmul_cm_bwd(res, g):
  w, x = res
  dw_t = matmul_forms.nt(g, x)  # (..., Co, K)
  return jnp.swapaxes(dw_t, -1, -2), jnp.matmul(w, g)


matmul_cm.defvjp(_matmul_cm_fwd, _matmul_cm_bwd)


def conv_im2col_cm(x: jax.Array, w: jax.Array, stride: int, pad: int) -> jax.Array:
  """`conv_im2col` on channel-major activations: x (Ci, B, H, W), w HWIO -> (Co, B, Ho, Wo).

  The patch matrix is (k k Ci, B Ho Wo), rows ordered (kh, kw, ci) like the kernel matrix's; a 1x1
  kernel needs no patches (a strided slice, then the product).
  """
  k, co = w.shape[0], w.shape[-1]
  if pad:
    x = jnp.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
  cols = matmul_forms.window_patches(x, k, stride, (2, 3), channel_axis=0)
  return matmul_cm(w.reshape(-1, co), cols.reshape(cols.shape[0], -1)).reshape(co, *cols.shape[1:])


def conv_winograd_cm(x: jax.Array, w: jax.Array, stride: int, pad: int) -> jax.Array:
  """`conv_winograd` on channel-major activations (`winograd.conv3_valid_cm`, products by `matmul_cm`);
  other kernels and strides fall back to `conv_im2col_cm`."""
  if not _winograd_applies(w, stride, pad):
    return conv_im2col_cm(x, w, stride, pad)
  h, wd = x.shape[2:4]
  x = jnp.pad(x, ((0, 0), (0, 0), (1, 1 + h % 2), (1, 1 + wd % 2)))
  return winograd.conv3_valid_cm(x, w, matmul_cm)[:, :, :h, :wd]


_CM_IMPLS = {"im2col": conv_im2col_cm, "winograd": conv_winograd_cm}
# The conv_impl values a channels-first ResNet takes.
CHANNELS_FIRST_CONV_IMPLS = ("auto", *_CM_IMPLS)


class Conv(nn.Module):
  """A bias-free 2D convolution with torch's symmetric padding and a choice of implementation.

  The parameter is nn.Conv's ('kernel', HWIO), so the weights do not depend on the implementation.

  Attributes:
    features: output channels.
    kernel_size: square kernel size k (padding (k - 1) // 2 on every side).
    stride: square stride.
    impl: 'lax', 'im2col', 'winograd' (3x3 stride-1 layers; im2col for the others), or 'auto': on CPU
      winograd for the 3x3 stride-1 layers where it pays and im2col for the rest, lax elsewhere (see the
      module docstring).
    channels_first: inputs and outputs laid out (C, B, H, W) (`conv_im2col_cm`, `conv_winograd_cm`);
      impl 'auto', 'im2col' or 'winograd'. The parameter is the same.
    dtype: computation dtype.
  """
  features: int
  kernel_size: int
  stride: int = 1
  impl: str = "auto"
  channels_first: bool = False
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k = self.kernel_size
    ci = x.shape[0] if self.channels_first else x.shape[-1]
    w = self.param("kernel", _conv_init, (k, k, ci, self.features), jnp.float32)
    if self.channels_first:
      impl = self.impl
      if impl == "auto":
        impl = "winograd" if _winograd_pays(x, w, self.stride, (k - 1) // 2, True) else "im2col"
      if impl not in _CM_IMPLS:
        raise errors.ConfigError(f"channels-first conv impl must be 'auto' or one of {sorted(_CM_IMPLS)}, "
                                 f"got {impl!r}")
      return _CM_IMPLS[impl](x.astype(self.dtype), w.astype(self.dtype), self.stride, (k - 1) // 2)
    impl = self.impl
    if impl == "auto" and jax.default_backend() != "cpu":
      impl = "lax"
    elif impl == "auto":
      impl = "winograd" if _winograd_pays(x, w, self.stride, (k - 1) // 2) else "im2col"
    if impl not in _CONV_IMPLS:
      raise errors.ConfigError(f"conv impl must be 'auto' or one of {sorted(_CONV_IMPLS)}, got {impl!r}")
    return _CONV_IMPLS[impl](x.astype(self.dtype), w.astype(self.dtype), self.stride, (k - 1) // 2)


class BatchNorm(nn.Module):
  """BatchNorm over all axes but `axis`, with nn.BatchNorm's variables, statistics and update rule.

  Same variables ('scale', 'bias' in params; 'mean', 'var' in batch_stats), float32 statistics, the same
  fast variance E[x^2] - E[x]^2 clipped at 0, the same running-average update (skipped at init), and the
  same cross-device mean under `axis_name`. The difference is the normalisation: it is folded into one
  per-channel multiply-add, y = x * a + b with a = scale / sqrt(var + eps) and b = bias - mean * a, whose
  gradient is also fewer passes over the activations. Measured on the ResNet-50 train step (batch 32,
  64 px, one core): 1.49 -> 1.44 s, the same as with no BatchNorm at all (1.44 s).

  Attributes:
    use_running_average: normalise with the running statistics (eval) instead of the batch's.
    momentum: decay of the running averages.
    epsilon: added to the variance.
    axis_name: pmap axis to average the statistics over (None under jit).
    dtype: computation dtype of the normalised output (statistics stay float32).
    scale_init: initializer of the scale (zeros for `zero_init_residual`).
    axis: the channel axis (-1 channels-last, 0 channels-first).
  """
  use_running_average: bool
  momentum: float = 0.9
  epsilon: float = 1e-5
  axis_name: str | None = None
  dtype: jnp.dtype = jnp.float32
  scale_init: Callable = nn.initializers.ones
  axis: int = -1

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    axis = self.axis % x.ndim
    c = x.shape[axis]
    scale = self.param("scale", self.scale_init, (c,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
    ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
    ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
    if self.use_running_average:
      mean, var = ra_mean.value, ra_var.value
    else:
      xf = x.astype(jnp.float32)
      axes = tuple(a for a in range(x.ndim) if a != axis)
      if axis != x.ndim - 1:
        # Channels-first (C, B, H, W): the statistics read x behind an optimization barrier. Without it
        # XLA:CPU (jax 0.10.2) splits these reductions over the pieces of a Winograd output transform and
        # its YNNPACK reduce fusions then give wrong gradients to the layers before (found by
        # `tests/test_resnet.py::test_channels_first_matches_channels_last`: ~1e-2 relative error in a
        # ResNet-18's first block for some parameter values, exact with
        # --xla_cpu_experimental_ynn_fusion_type=-reduce; float64 agrees with channels-last).
        xf = lax.optimization_barrier(xf)
      moments = jnp.concatenate([jnp.mean(xf, axes), jnp.mean(jnp.square(xf), axes)])
      if self.axis_name is not None and not self.is_initializing():
        moments = lax.pmean(moments, self.axis_name)  # one collective for both moments
      mean, mean2 = moments[:c], moments[c:]
      var = jnp.maximum(mean2 - jnp.square(mean), 0.0)
      if not self.is_initializing():
        ra_mean.value = self.momentum * ra_mean.value + (1.0 - self.momentum) * mean
        ra_var.value = self.momentum * ra_var.value + (1.0 - self.momentum) * var
    mul = scale * lax.rsqrt(var + self.epsilon)
    shape = [1] * x.ndim
    shape[axis] = c
    add = (bias - mean * mul).reshape(shape)
    return x.astype(self.dtype) * mul.reshape(shape).astype(self.dtype) + add.astype(self.dtype)


class _Blocks(nn.Module):
  """The two block types' shared settings, and conv and BN factories that apply them (`channels_first`:
  the block's input and output are (C, B, H, W))."""
  features: int
  stride: int = 1
  bn_axis_name: str | None = None
  bn_momentum: float = 0.9
  zero_init_residual: bool = False
  conv_impl: str = "auto"
  channels_first: bool = False
  dtype: jnp.dtype = jnp.float32

  def _conv(self, features: int, kernel: int, stride: int, name: str) -> Conv:
    return Conv(features, kernel, stride, impl=self.conv_impl, channels_first=self.channels_first,
                dtype=self.dtype, name=name)

  def _norm(self, train: bool, name: str, zero: bool = False) -> BatchNorm:
    return BatchNorm(use_running_average=not train, momentum=self.bn_momentum, epsilon=1e-5,
                     axis_name=self.bn_axis_name, dtype=self.dtype,
                     scale_init=nn.initializers.zeros if zero else nn.initializers.ones,
                     axis=0 if self.channels_first else -1, name=name)

  def _shortcut(self, x: jax.Array, features: int, train: bool) -> jax.Array:
    if x.shape[0 if self.channels_first else -1] == features and self.stride == 1:
      return x
    x = self._conv(features, 1, self.stride, "downsample_conv")(x)
    return self._norm(train, "downsample_bn")(x)


class BasicBlock(_Blocks):
  """3x3 conv -> BN -> ReLU -> 3x3 conv -> BN, plus the shortcut, -> ReLU (ResNet-18/34)."""
  expansion = 1

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    y = nn.relu(self._norm(train, "bn1")(self._conv(self.features, 3, self.stride, "conv1")(x)))
    y = self._norm(train, "bn2", self.zero_init_residual)(self._conv(self.features, 3, 1, "conv2")(y))
    return nn.relu(y + self._shortcut(x, self.features, train))


class BottleneckBlock(_Blocks):
  """1x1 conv -> BN -> ReLU -> 3x3 conv (strided, v1.5) -> BN -> ReLU -> 1x1 conv (x4) -> BN, + shortcut."""
  expansion = 4

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    y = nn.relu(self._norm(train, "bn1")(self._conv(self.features, 1, 1, "conv1")(x)))
    y = nn.relu(self._norm(train, "bn2")(self._conv(self.features, 3, self.stride, "conv2")(y)))
    out = self.features * self.expansion
    y = self._norm(train, "bn3", self.zero_init_residual)(self._conv(out, 1, 1, "conv3")(y))
    return nn.relu(y + self._shortcut(x, out, train))


_BLOCKS = {"basic": BasicBlock, "bottleneck": BottleneckBlock}


class ResNet(nn.Module):
  """ResNet v1.5 feature extractor: (B, H, W, 3) images -> (B, feature_dim) pooled float32 features.

  Attributes:
    stage_sizes: blocks per stage (e.g. (3, 4, 6, 3) for ResNet-50).
    block: 'basic' or 'bottleneck'.
    num_filters: channels of the stem and of the first stage (doubled per stage).
    bn_axis_name: pmap axis name for cross-device BatchNorm statistics (None under jit).
    bn_momentum: running-average decay of the BatchNorm statistics (flax convention: 0.9 is torch's 0.1).
    dtype: computation dtype (parameters and BatchNorm statistics stay float32).
    zero_init_residual: start each block's last BN scale at 0 (default False: torchvision's init).
    conv_impl: 'auto' (Winograd or im2col on CPU, lax elsewhere; see `Conv`), 'lax', 'im2col' or
      'winograd'; all compute the same function.
    layout: where the feature maps keep their channels: 'channels_last' (B, H, W, C), 'channels_first'
      (C, B, H, W; conv_impl 'auto', 'im2col' or 'winograd'), or 'auto': channels-first for training on
      CPU unless conv_impl is 'lax', channels-last for inference and elsewhere (module docstring,
      "Channels-first"). Inputs and outputs are the same in both: NHWC images in, (B, feature_dim) out;
      so are the parameters.
  """
  stage_sizes: tuple[int, ...]
  block: str
  num_filters: int = 64
  bn_axis_name: str | None = None
  bn_momentum: float = 0.9
  dtype: jnp.dtype = jnp.float32
  zero_init_residual: bool = False
  conv_impl: str = "auto"
  layout: str = "auto"

  def _channels_first(self, train: bool) -> bool:
    """Whether the feature maps run channels-first (see `layout`)."""
    if self.layout == "auto":
      return train and jax.default_backend() == "cpu" and self.conv_impl != "lax"
    if self.layout == "channels_first":
      if self.conv_impl not in CHANNELS_FIRST_CONV_IMPLS:
        raise errors.ConfigError(f"ResNet layout 'channels_first' takes conv_impl in "
                                 f"{CHANNELS_FIRST_CONV_IMPLS}, got {self.conv_impl!r}")
      return True
    if self.layout == "channels_last":
      return False
    raise errors.ConfigError(f"ResNet layout must be 'auto', 'channels_last' or 'channels_first', "
                             f"got {self.layout!r}")

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """Pooled features of NHWC images x (any float dtype; cast to `dtype`).

    Args:
      x: (B, H, W, 3) images.
      train: use batch statistics and update the running ones ('batch_stats' must be mutable), else use
        the running statistics.

    Returns:
      (B, feature_dim) float32 features after global average pooling.
    """
    if self.block not in _BLOCKS:
      raise errors.ConfigError(f"ResNet block must be one of {sorted(_BLOCKS)}, got {self.block!r}")
    block_cls = _BLOCKS[self.block]
    cf = self._channels_first(train)
    x = x.astype(self.dtype)
    if cf:
      x = x.transpose(3, 0, 1, 2)  # (3, B, H, W): small, like the pooled features' at the end
    x = Conv(self.num_filters, 7, 2, impl=self.conv_impl, channels_first=cf, dtype=self.dtype,
             name="conv1")(x)
    x = BatchNorm(use_running_average=not train, momentum=self.bn_momentum, epsilon=1e-5,
                  axis_name=self.bn_axis_name, dtype=self.dtype, axis=0 if cf else -1, name="bn1")(x)
    x = nn.relu(x)
    # -inf padding (flax's max_pool pads with the reduction's identity), like torch's MaxPool2d(3, 2, 1).
    if cf:
      x = lax.reduce_window(x, -jnp.inf, lax.max, (1, 1, 3, 3), (1, 1, 2, 2),
                            ((0, 0), (0, 0), (1, 1), (1, 1)))
    else:
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for i, size in enumerate(self.stage_sizes):
      for j in range(size):
        x = block_cls(self.num_filters * 2 ** i, stride=2 if i > 0 and j == 0 else 1,
                      bn_axis_name=self.bn_axis_name, bn_momentum=self.bn_momentum,
                      zero_init_residual=self.zero_init_residual, conv_impl=self.conv_impl,
                      channels_first=cf, dtype=self.dtype, name=f"layer{i + 1}_{j}")(x, train=train)
    # Pool in float32: a bf16 sum over 7x7 (or 2x2 at 64 px) positions loses digits for nothing.
    if cf:
      return jnp.mean(x.astype(jnp.float32), axis=(2, 3)).T
    return jnp.mean(x.astype(jnp.float32), axis=(1, 2))


BACKBONES: dict[str, dict] = {
    "resnet50": dict(stage_sizes=(3, 4, 6, 3), block="bottleneck"),
    "resnet34": dict(stage_sizes=(3, 4, 6, 3), block="basic"),
    "resnet18": dict(stage_sizes=(2, 2, 2, 2), block="basic"),
    # The test network: stem + one basic block, 16 channels (feature_dim 16); compiles in seconds.
    "resnet_tiny": dict(stage_sizes=(1,), block="basic", num_filters=16),
}


def _spec(name: str) -> dict:
  if name not in BACKBONES:
    raise errors.ConfigError(f"unknown backbone {name!r}; valid backbones: {', '.join(sorted(BACKBONES))}")
  return BACKBONES[name]


def create_backbone(name: str, *, dtype: jnp.dtype = jnp.float32, bn_axis_name: str | None = None,
                    **overrides) -> ResNet:
  """The ResNet named `name` (a `BACKBONES` key), unbound.

  Args:
    name: 'resnet50', 'resnet34', 'resnet18' or 'resnet_tiny'.
    dtype: computation dtype (parameters stay float32).
    bn_axis_name: pmap axis name for cross-device BatchNorm statistics (None under jit).
    **overrides: other `ResNet` attributes (e.g. zero_init_residual=True, bn_momentum).

  Returns:
    The module; call `.init(rng, images, train=False)` for its variables.

  Raises:
    errors.ConfigError: unknown name (the message lists the valid ones).
  """
  return ResNet(**{**_spec(name), **overrides}, dtype=dtype, bn_axis_name=bn_axis_name)


def feature_dim(name: str, **overrides) -> int:
  """Width of the pooled features of backbone `name` (2048 for ResNet-50, 512 for ResNet-18/34, 16 for
  resnet_tiny), with the same `overrides` as `create_backbone` (num_filters, stage_sizes, block)."""
  spec = {**_spec(name), **overrides}
  return (spec.get("num_filters", 64) * 2 ** (len(spec["stage_sizes"]) - 1)
          * _BLOCKS[spec["block"]].expansion)


def variable_shapes(name: str) -> dict[tuple[str, ...], tuple[int, ...]]:
  """Shapes of backbone `name`'s variables, flat: ('params' | 'batch_stats', module, ..., leaf) -> shape.

  Computed without FLOPs (jax.eval_shape) and cached; the spatial size changes no shape.
  """
  return dict(_variable_shapes(name))


@functools.lru_cache(maxsize=None)
def _variable_shapes(name: str) -> tuple[tuple[tuple[str, ...], tuple[int, ...]], ...]:
  model = create_backbone(name)
  tree = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))
  flat = traverse_util.flatten_dict(dict(tree))
  return tuple((path, tuple(leaf.shape)) for path, leaf in flat.items())
