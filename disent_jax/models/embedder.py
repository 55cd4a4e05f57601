"""Stage I: the VoxNet-like 3D conv embedder (paper 3.2) and its disentangled shape/pose heads.

Architecture (VoxNet [28]: two 3D convolutions and one fully connected layer):
  (B, R, R, R, 1) occupancy -> [box filter by `input_pool`] -> Conv3D(c1, 5^3, stride 2, VALID) -> norm
  -> leaky ReLU -> Conv3D(c2, 3^3, stride 1, VALID) -> norm -> leaky ReLU -> max-pool 2 -> flatten
  -> Dense(shape_dim + pose_dim) = the embedding, split into a shape vector and a pose vector.
At R = 32 the feature maps are 14^3 and 12^3, pooled to 6^3 (6912 features for c2 = 32); with input_pool 2
they are 6^3 and 4^3, pooled to 2^3.
On CPU the feature maps are computed channels-first, (C, B, D, H, W) (`layout`; faster on XLA:CPU, see
`conv3d`); the flattened features keep the channels-last order, so parameters and outputs are the same.

Input pooling (`input_pool` = f > 1, not in the paper): the volume is box-filtered to (R/f)^3 before
the first convolution, so the network costs what an (R/f)^3 network costs while its input still comes from
R^3 voxels rotated at R^3. Rotating a coarse grid aliases: a rotated 16^3 grid of a thin part is not a
16^3 voxelisation of the rotated part, and the canonical (unrotated, crisp) grid differs from every rotated
(blurred) one, which makes the shape vector move with pose. Pooling a rotated 32^3 grid gives partial-volume
occupancies that are consistent across rotations (measured in README "Stage I results").

Disentangled (the paper): the shape head reads only the shape vector and the rotation head only the pose
vector. `disentangle=False` is the paper's "w/o disentangling" ablation: one joint vector of
shape_dim + pose_dim read by both heads.

Normalisation (`norm`): 'batch' adds BatchNorm after each convolution; 'none' is the paper's plain VoxNet.
Under `jax.jit` with a sharded batch the batch statistics are already global, so `bn_axis_name` stays None;
the pmap path sets it to the pmap axis name so statistics are averaged across devices.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from disent_jax.models import conv3d
from disent_jax.models import heads
from disent_jax.models import pooling


def _box_filter(x: jax.Array, f: int) -> jax.Array:
  """Means of the f^3 blocks of x (B, R, R, R, 1) -> (B, R/f, R/f, R/f, 1).

  Written as a matmul with the block axis last rather than `nn.avg_pool` or a reshape-mean: inside the
  jitted Stage I step the input is the on-device rotation (a trilinear gather), and XLA:CPU fused that
  gather into a following reduction badly: rotating 32 volumes at 32^3 and pooling took 83 ms (avg_pool /
  reshape-mean, also behind an optimization barrier) against 15 ms with this matmul and 10 ms for the
  rotation alone (jax 0.10.2, 2-core CPU).
  """
  return conv3d.space_to_depth(x, f) @ jnp.full((f ** 3, 1), 1.0 / f ** 3, x.dtype)


class VoxelEmbedder(nn.Module):
  """Maps occupancy volumes to (shape vector, pose vector) and the Stage I heads' outputs.

  Attributes:
    num_models: number of CAD models (shape classes).
    num_anchors: number of rotation anchors.
    shape_dim, pose_dim: embedding sizes (512 each in the paper).
    conv_features: channels of the two convolutions.
    disentangle: False for the joint-embedding ablation.
    norm: 'batch' or 'none'.
    embedding_activation: 'none' (linear embedding), 'relu' or 'tanh'.
    head_hidden: hidden width of the rotation head (0: linear).
    bn_axis_name: pmap axis name for cross-device BatchNorm statistics (None under jit).
    conv_impl: convolution implementation, see `conv3d.Conv3D` ('auto' picks the fastest exact one;
      's2d' applies to conv1, conv2 then takes 'auto').
    layout: where the convolutional features keep their channels: 'channels_last' (B, D, H, W, C) or
      'channels_first' (C, B, D, H, W), the channel-major layout of `conv3d.conv_planes_cm` (conv_impl
      'auto', 'im2col' or 'planes' only). 'auto': channels_first on CPU with conv_impl 'auto',
      channels_last otherwise. The same network either way (same parameters, same function).
    input_pool: box-filter factor f applied to the input volume first (1: none; R must divide by f).
    dtype: computation dtype (parameters stay float32).
  """
  num_models: int
  num_anchors: int
  shape_dim: int = 512
  pose_dim: int = 512
  conv_features: tuple[int, int] = (32, 32)
  disentangle: bool = True
  norm: str = "batch"
  embedding_activation: str = "none"
  head_hidden: int = 0
  bn_axis_name: str | None = None
  conv_impl: str = "auto"
  input_pool: int = 1
  layout: str = "auto"
  dtype: jnp.dtype = jnp.float32

  def _norm(self, x, train: bool, name: str, axis: int = -1):
    if self.norm == "batch":
      return nn.BatchNorm(use_running_average=not train, momentum=0.9, axis=axis, axis_name=self.bn_axis_name,
                          dtype=self.dtype, name=name)(x)
    if self.norm == "none":
      return x
    raise ValueError(f"unknown norm {self.norm!r}")

  def embed(self, volumes: jax.Array, *, train: bool) -> tuple[jax.Array, jax.Array]:
    """(shape vector, pose vector) of volumes (B, R, R, R) or (B, R, R, R, 1).

    With disentangle=False both returned halves are slices of the one joint vector.
    """
    x = volumes.astype(self.dtype)
    if x.ndim == 4:
      x = x[..., None]
    if self.input_pool > 1:
      f = self.input_pool
      if any(d % f for d in x.shape[1:4]):
        raise ValueError(f"input_pool={f} needs a resolution divisible by {f}, got volumes {x.shape[1:4]}")
      x = _box_filter(x, f)
    c1, c2 = self.conv_features
    # A bias before BatchNorm is cancelled by it: its gradient is rounding noise, which Adam would
    # amplify to +-lr steps. Leave it out when normalising.
    bias = self.norm == "none"
    if self._channel_major():
      x = self._features_cm(x, train, bias)
    else:
      x = self._features(x, train, bias)
    emb = nn.Dense(self.shape_dim + self.pose_dim, dtype=self.dtype, name="embedding")(x)
    emb = {"none": lambda e: e, "relu": nn.relu, "tanh": jnp.tanh}[self.embedding_activation](emb)
    emb = emb.astype(jnp.float32)
    return emb[:, :self.shape_dim], emb[:, self.shape_dim:]

  def _channel_major(self) -> bool:
    """Whether the features run channels-first (see `layout`)."""
    if self.layout == "auto":
      return jax.default_backend() == "cpu" and self.conv_impl == "auto"
    if self.layout == "channels_first":
      if self.conv_impl not in conv3d.CHANNELS_FIRST_IMPLS:
        raise ValueError(f"layout 'channels_first' takes conv_impl in {conv3d.CHANNELS_FIRST_IMPLS}, "
                         f"got {self.conv_impl!r}")
      return True
    if self.layout == "channels_last":
      return False
    raise ValueError(f"unknown layout {self.layout!r}; allowed: 'auto', 'channels_last', 'channels_first'")

  def _features_cm(self, x: jax.Array, train: bool, bias: bool) -> jax.Array:
    """Flattened pooled features (B, F) of x (B, D, H, W, 1), computed channels-first.

    Every product is then a plain row-major matmul that XLA:CPU hands to YNNPACK without a transposed copy of
    an operand (`conv3d.conv_planes_cm`). The flattening order is channels-last's (d, h, w, c), so the dense
    layer's parameters are the same in both layouts.
    """
    c1, c2 = self.conv_features
    b = x.shape[0]
    x = x.reshape(1, *x.shape[:4])  # one input channel: channels-first is a reshape
    x = conv3d.Conv3D(c1, 5, stride=2, use_bias=bias, impl=self.conv_impl, channels_first=True,
                      dtype=self.dtype, name="conv1")(x)
    x = nn.leaky_relu(self._norm(x, train, "bn1", axis=0), 0.1)
    x = conv3d.Conv3D(c2, 3, use_bias=bias, impl=self.conv_impl, channels_first=True, dtype=self.dtype,
                      name="conv2")(x)
    x = nn.leaky_relu(self._norm(x, train, "bn2", axis=0), 0.1)
    x = pooling.max_pool_2x(x, (2, 3, 4))
    return x.transpose(1, 2, 3, 4, 0).reshape(b, -1)

  def _features(self, x: jax.Array, train: bool, bias: bool) -> jax.Array:
    """Flattened pooled features (B, F) of x (B, D, H, W, 1), computed channels-last."""
    c1, c2 = self.conv_features
    x = conv3d.Conv3D(c1, 5, stride=2, use_bias=bias, impl=self.conv_impl, dtype=self.dtype,
                      name="conv1")(x)
    x = nn.leaky_relu(self._norm(x, train, "bn1"), 0.1)
    # 's2d' is a stride-2 rewrite: it names conv1's implementation, the stride-1 conv2 takes 'auto'.
    impl2 = "auto" if self.conv_impl == "s2d" else self.conv_impl
    x = conv3d.Conv3D(c2, 3, use_bias=bias, impl=impl2, dtype=self.dtype, name="conv2")(x)
    x = nn.leaky_relu(self._norm(x, train, "bn2"), 0.1)
    x = nn.max_pool(x, (2, 2, 2), strides=(2, 2, 2))
    return x.reshape(x.shape[0], -1)

  @nn.compact
  def __call__(self, volumes: jax.Array, *, train: bool) -> dict[str, jax.Array]:
    """Returns a dict with shape_vec (B, S), pose_vec (B, P), shape_logits (B, K),
    anchor_logits (B, A) and residuals (B, A, 4) (unit quaternions)."""
    shape_vec, pose_vec = self.embed(volumes, train=train)
    joint = jnp.concatenate([shape_vec, pose_vec], axis=-1)
    shape_in = shape_vec if self.disentangle else joint
    pose_in = pose_vec if self.disentangle else joint
    shape_logits = heads.ShapeHead(self.num_models, dtype=self.dtype, name="shape_head")(shape_in)
    anchor_logits, residuals = heads.RotationHead(self.num_anchors, hidden=self.head_hidden,
                                                  dtype=self.dtype, name="rotation_head")(pose_in)
    return {"shape_vec": shape_vec, "pose_vec": pose_vec, "shape_logits": shape_logits,
            "anchor_logits": anchor_logits, "residuals": residuals}
