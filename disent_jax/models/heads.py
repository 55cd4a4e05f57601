"""Output heads shared by Stage I (voxel embedder) and Stage II (image regressor).

The rotation head implements the paper's hybrid classification/regression (3.2): logits over the rotation
anchors plus one residual quaternion per anchor, L2-normalised (the paper's activation that enforces
||q|| = 1). Predicting a residual per anchor (rather than one shared residual) lets each anchor's regressor
specialise to its own bin, as in the anchor-based detectors the paper follows [32]; the loss reads only
the ground-truth anchor's residual, and inference reads the arg-max anchor's.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-6) -> jax.Array:
  """x / max(||x||, eps) along `axis`."""
  return x / jnp.maximum(jnp.linalg.norm(x, axis=axis, keepdims=True), eps)


class ShapeHead(nn.Module):
  """Shape classification logits over the database models."""
  num_models: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return nn.Dense(self.num_models, dtype=self.dtype, name="logits")(x).astype(jnp.float32)


class RotationHead(nn.Module):
  """Rotation anchor logits (B, A) and L2-normalised per-anchor residual quaternions (B, A, 4)."""
  num_anchors: int
  hidden: int = 0  # 0: linear heads on the input vector; > 0: one hidden ReLU layer first
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    if self.hidden:
      x = nn.relu(nn.Dense(self.hidden, dtype=self.dtype, name="hidden")(x))
    logits = nn.Dense(self.num_anchors, dtype=self.dtype, name="anchor_logits")(x)
    # Bias the residual towards the identity quaternion (1, 0, 0, 0) at initialisation: the residual of the
    # closest anchor is a small rotation, so training starts near the right answer.
    def bias_init(key, shape, dtype=jnp.float32):
      del key
      return jnp.tile(jnp.array([1.0, 0.0, 0.0, 0.0], dtype), shape[0] // 4)
    res = nn.Dense(self.num_anchors * 4, dtype=self.dtype, bias_init=bias_init,
                   kernel_init=nn.initializers.variance_scaling(0.01, "fan_in", "truncated_normal"),
                   name="residuals")(x)
    res = res.astype(jnp.float32).reshape(x.shape[:-1] + (self.num_anchors, 4))
    return logits.astype(jnp.float32), l2_normalize(res)


class TranslationHead(nn.Module):
  """Translation anchor-cell logits (B, C) and per-cell residuals in [0, 1]^3 (B, C, 3) (paper 3.3)."""
  num_cells: int
  hidden: int = 0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    if self.hidden:
      x = nn.relu(nn.Dense(self.hidden, dtype=self.dtype, name="hidden")(x))
    logits = nn.Dense(self.num_cells, dtype=self.dtype, name="cell_logits")(x)
    res = nn.Dense(self.num_cells * 3, dtype=self.dtype, name="residuals")(x)
    # A sigmoid keeps the residual inside its cell, the range the paper normalises it to.
    res = nn.sigmoid(res.astype(jnp.float32)).reshape(x.shape[:-1] + (self.num_cells, 3))
    return logits.astype(jnp.float32), res
