"""Stage II: the regression network from an image crop to the embedding, rotation and translation (paper 3.3).

Architecture (paper Figure 2, Stage II):
  crop (B, S, S, 3) -> ResNet backbone -> pooled features f
  f -> Dense -> predicted shape vector s' (shape_dim)   } regressed with L1 to the frozen Stage I embedder's
  f -> Dense -> predicted pose vector p'  (pose_dim)    } vectors of the ground-truth voxels at the GT rotation
  s' -> shape head (classification over the database models)
  p' -> rotation head (anchor logits + per-anchor residual quaternions)
  f -> translation head (anchor-cell logits + per-cell residuals in [0, 1]^3)

Why the shape and rotation heads read the predicted embedding, not the backbone features: the paper maps
"the image to the ground truth embedding vectors" and then has sub-networks "similarly to the embedding
network" for shape and rotation; Figure 2 draws them after the embedding. Reading s' and p' keeps the heads
the same functions as Stage I's (same names and shapes), so they can start from the trained Stage I heads
(`init_heads_from_embedder`), and the image network's only job is to land in the embedding space, which is
what makes the embedding useful. The translation head reads the backbone features: the paper keeps
translation out of the pose embedding because it depends on the crop, not on the 3D shape.

Ablations: `use_embedding=False` is the paper's "w/o embedding" (the vectors are an ordinary hidden layer,
no L1 terms; see losses.stage2_loss); `disentangle=False` follows Stage I's joint embedding: one
shape_dim + pose_dim vector regressed as a whole and read by both heads.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from disent_jax.models import heads
from disent_jax.models import resnet


class ImageRegressor(nn.Module):
  """Image crop -> (shape vector, pose vector, shape logits, rotation and translation predictions).

  Attributes:
    backbone: a `resnet.BACKBONES` name ('resnet50', 'resnet34', 'resnet18', 'resnet_tiny').
    num_models: number of CAD models (shape classes).
    num_anchors: number of rotation anchors.
    num_cells: number of translation anchor cells.
    shape_dim, pose_dim: embedding sizes (must equal Stage I's).
    disentangle: False for the joint-embedding ablation.
    head_hidden: hidden width of the rotation head (Stage I's value, so its weights can be copied).
    translation_hidden: hidden width of the translation head (0: linear).
    backbone_width, backbone_stages: optional overrides of the backbone's width and depth (CPU configs:
      the 2-core CPU trains a full ResNet-18 at ~25 img/s; ImageNet weights need the standard shape).
    backbone_layout: the backbone's feature-map layout, `resnet.ResNet.layout` ('auto': channels-first
      for training on CPU, channels-last otherwise; the same parameters either way).
    bn_axis_name: pmap axis name for cross-device BatchNorm statistics (None under jit).
    dtype: computation dtype (parameters stay float32).
  """
  backbone: str
  num_models: int
  num_anchors: int
  num_cells: int
  shape_dim: int = 512
  pose_dim: int = 512
  disentangle: bool = True
  head_hidden: int = 0
  translation_hidden: int = 0
  backbone_width: int = 0  # 0: the backbone's own width (64 for the ResNets); else its num_filters
  backbone_stages: tuple[int, ...] = ()  # (): the backbone's own blocks per stage
  backbone_layout: str = "auto"
  bn_axis_name: str | None = None
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, *, train: bool) -> dict[str, jax.Array]:
    """Returns shape_vec (B, S), pose_vec (B, P), shape_logits (B, K), anchor_logits (B, A),
    residuals (B, A, 4), cell_logits (B, C) and cell_residuals (B, C, 3)."""
    # Named 'backbone' so ImageNet weights can be merged into this subtree (torchvision_import).
    overrides = {}
    if self.backbone_width:
      overrides["num_filters"] = self.backbone_width
    if self.backbone_stages:
      overrides["stage_sizes"] = tuple(self.backbone_stages)
    backbone = resnet.create_backbone(self.backbone, dtype=self.dtype, bn_axis_name=self.bn_axis_name,
                                      layout=self.backbone_layout, **overrides)
    features = backbone.clone(parent=self, name="backbone")(images, train=train)
    if self.disentangle:
      shape_vec = nn.Dense(self.shape_dim, dtype=self.dtype, name="shape_vec")(features)
      pose_vec = nn.Dense(self.pose_dim, dtype=self.dtype, name="pose_vec")(features)
      shape_vec, pose_vec = shape_vec.astype(jnp.float32), pose_vec.astype(jnp.float32)
      shape_in, pose_in = shape_vec, pose_vec
    else:
      joint = nn.Dense(self.shape_dim + self.pose_dim, dtype=self.dtype,
                       name="joint_vec")(features).astype(jnp.float32)
      shape_vec, pose_vec = joint[:, :self.shape_dim], joint[:, self.shape_dim:]
      shape_in = pose_in = joint
    shape_logits = heads.ShapeHead(self.num_models, dtype=self.dtype, name="shape_head")(shape_in)
    anchor_logits, residuals = heads.RotationHead(self.num_anchors, hidden=self.head_hidden,
                                                  dtype=self.dtype, name="rotation_head")(pose_in)
    cell_logits, cell_residuals = heads.TranslationHead(self.num_cells, hidden=self.translation_hidden,
                                                        dtype=self.dtype,
                                                        name="translation_head")(features)
    return {"shape_vec": shape_vec, "pose_vec": pose_vec, "shape_logits": shape_logits,
            "anchor_logits": anchor_logits, "residuals": residuals, "cell_logits": cell_logits,
            "cell_residuals": cell_residuals}
