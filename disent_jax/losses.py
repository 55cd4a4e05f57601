"""Loss functions of both stages (paper 3.2, 3.3), written as pure functions of model outputs and labels.

Each returns per-example values (B,) so callers can weight, mask and average them; `stage1_loss` and the
Stage II loss combine them with the weights from the config.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def softmax_ce(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Per-example softmax cross-entropy with integer labels."""
  return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


def huber(x: jax.Array, delta: float) -> jax.Array:
  """Elementwise Huber loss 0.5 x^2 for |x| <= delta, delta (|x| - 0.5 delta) beyond."""
  ax = jnp.abs(x)
  return jnp.where(ax <= delta, 0.5 * x * x, delta * (ax - 0.5 * delta))


def take_anchor(per_anchor: jax.Array, anchor: jax.Array) -> jax.Array:
  """Selects (B, D) from per-anchor predictions (B, A, D) at anchor indices (B,)."""
  return jnp.take_along_axis(per_anchor, anchor[:, None, None], axis=1)[:, 0]


def rotation_residual_loss(residuals: jax.Array, anchor: jax.Array, target: jax.Array,
                           delta: float) -> jax.Array:
  """Huber loss between the ground-truth anchor's predicted residual quaternion and the target (B,).

  q and -q are the same rotation, so the loss is the smaller of the losses against target and -target;
  with the canonical (w >= 0) targets of `geometry.encode_rotation` and predictions near the identity this
  equals the paper's plain Huber loss, and it never punishes a correct rotation with the other sign.
  """
  pred = take_anchor(residuals, anchor)
  pos = jnp.sum(huber(pred - target, delta), axis=-1)
  neg = jnp.sum(huber(pred + target, delta), axis=-1)
  return jnp.minimum(pos, neg)


def translation_residual_loss(residuals: jax.Array, cell: jax.Array, target: jax.Array,
                              delta: float) -> jax.Array:
  """Huber loss between the ground-truth cell's predicted residual (in [0, 1]^3) and the target (B,)."""
  return jnp.sum(huber(take_anchor(residuals, cell) - target, delta), axis=-1)


def anchor_distances_deg(quats: jax.Array, anchors: jax.Array) -> jax.Array:
  """Geodesic distance (degrees) from each rotation (B, 4) to every anchor (A, 4): (B, A)."""
  cos = jnp.clip(jnp.abs(quats @ anchors.T), 0.0, 1.0)
  return jnp.degrees(2.0 * jnp.arccos(cos))


def soft_anchor_ce(logits: jax.Array, dist_deg: jax.Array, sigma_deg: float) -> jax.Array:
  """Cross-entropy against a soft anchor distribution p(a) ~ exp(-d(q, q_a)^2 / (2 sigma^2)).

  The paper's hard label is the sigma -> 0 limit. Neighbouring anchors describe nearly the same rotation,
  so giving them some of the target mass turns the 259-way classification into a smooth problem on SO(3):
  early in training the network is rewarded for getting the orientation roughly right, which a hard label
  does not do. The arg-max of the soft target is still the nearest anchor.
  """
  target = jax.nn.softmax(-0.5 * (dist_deg / sigma_deg) ** 2, axis=-1)
  return -jnp.sum(target * jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1), axis=-1)


def neighbourhood_residual_loss(residuals: jax.Array, quats: jax.Array, anchors: jax.Array,
                                dist_deg: jax.Array, radius_deg: float, delta: float) -> jax.Array:
  """Huber residual loss averaged over every anchor within `radius_deg` of the rotation (B,).

  Each such anchor's residual head is trained to its own target q * q_a^-1, so decoding from a neighbour
  of the nearest anchor (which the soft classification makes likely early on) still gives the right
  rotation. The nearest anchor is always included.
  """
  from disent_jax import geometry  # local: losses stays importable without the geometry module's deps
  targets = geometry.quat_canonical(geometry.quat_multiply(
      quats[:, None, :], geometry.quat_conjugate(anchors)[None, :, :]))  # (B, A, 4)
  pos = jnp.sum(huber(residuals - targets, delta), axis=-1)
  neg = jnp.sum(huber(residuals + targets, delta), axis=-1)
  per_anchor = jnp.minimum(pos, neg)
  nearest = jnp.argmin(dist_deg, axis=-1)
  mask = (dist_deg <= radius_deg) | (jnp.arange(anchors.shape[0])[None] == nearest[:, None])
  return jnp.sum(per_anchor * mask, axis=-1) / jnp.sum(mask, axis=-1)


def batch_hard_triplet(embeddings: jax.Array, labels: jax.Array, margin: float) -> jax.Array:
  """Batch-hard triplet loss (per anchor example) on L2-normalised embeddings.

  For each example: the farthest same-label example and the nearest other-label example in the batch,
  loss = max(0, d_pos - d_neg + margin). Examples without a positive or a negative in the batch get 0.
  The paper's alternative to cross-entropy for large databases (e.g. ObjectNet3D).
  """
  e = embeddings / jnp.maximum(jnp.linalg.norm(embeddings, axis=-1, keepdims=True), 1e-6)
  d2 = jnp.sum((e[:, None, :] - e[None, :, :]) ** 2, axis=-1)
  d = jnp.sqrt(jnp.maximum(d2, 1e-12))
  same = labels[:, None] == labels[None, :]
  eye = jnp.eye(labels.shape[0], dtype=bool)
  pos_mask = same & ~eye
  neg_mask = ~same
  d_pos = jnp.max(jnp.where(pos_mask, d, -jnp.inf), axis=1)
  d_neg = jnp.min(jnp.where(neg_mask, d, jnp.inf), axis=1)
  valid = jnp.any(pos_mask, axis=1) & jnp.any(neg_mask, axis=1)
  return jnp.where(valid, jnp.maximum(d_pos - d_neg + margin, 0.0), 0.0)


def pair_invariance(vectors: jax.Array) -> jax.Array:
  """Pose-invariance of the shape vector on a batch of adjacent pairs (same model, two rotations).

  The mean squared distance within pairs (2i, 2i + 1) over the mean squared distance between all examples
  of the batch: 0 when a model's shape vector does not move under rotation, about 1 when rotation moves
  it as much as a change of model. A ratio, so it cannot be lowered by shrinking the vectors. This is
  Stage I's evaluation figure (`eval_embedder.disentanglement`) turned into a loss; the paper relies on
  the classifier alone, which leaves the shape vector free to vary with pose in directions the linear
  classifier ignores, and so hurts nearest-neighbour retrieval against canonical-pose vectors.

  Returns:
    A scalar.
  """
  v = vectors.astype(jnp.float32)
  within = jnp.mean(jnp.sum((v[0::2] - v[1::2]) ** 2, axis=-1))
  centred = v - jnp.mean(v, axis=0, keepdims=True)
  # Mean over all ordered pairs i != j of ||v_i - v_j||^2 = 2 B / (B - 1) * mean ||v_i - mean||^2.
  n = v.shape[0]
  between = 2.0 * n / max(n - 1, 1) * jnp.mean(jnp.sum(centred ** 2, axis=-1))
  return within / (between + 1e-6)


def rotation_loss(outputs: dict[str, jax.Array], batch: dict[str, jax.Array], anchors: jax.Array | None,
                  *, huber_delta: float, soft_sigma_deg: float = 0.0,
                  residual_radius_deg: float = 0.0) -> tuple[jax.Array, jax.Array]:
  """Anchor classification and residual regression losses (B,), (B,) (paper 3.2, plus options).

  With soft_sigma_deg = residual_radius_deg = 0 this is the paper's loss: hard-label cross-entropy on the
  nearest anchor and the Huber loss on its residual. Otherwise see `soft_anchor_ce` and
  `neighbourhood_residual_loss` (they need `anchors` and the batch's 'quat').
  """
  if soft_sigma_deg > 0 or residual_radius_deg > 0:
    dist = anchor_distances_deg(batch["quat"], anchors)
  l_anchor = (soft_anchor_ce(outputs["anchor_logits"], dist, soft_sigma_deg) if soft_sigma_deg > 0
              else softmax_ce(outputs["anchor_logits"], batch["anchor"]))
  l_res = (neighbourhood_residual_loss(outputs["residuals"], batch["quat"], anchors, dist,
                                       residual_radius_deg, huber_delta) if residual_radius_deg > 0
           else rotation_residual_loss(outputs["residuals"], batch["anchor"], batch["residual"],
                                       huber_delta))
  return l_anchor, l_res


def stage1_loss(outputs: dict[str, jax.Array], batch: dict[str, jax.Array], *, shape_loss: str,
                shape_weight: float, anchor_weight: float, residual_weight: float,
                huber_delta: float, triplet_margin: float = 0.2, anchors: jax.Array | None = None,
                soft_sigma_deg: float = 0.0, residual_radius_deg: float = 0.0,
                invariance_weight: float = 0.0) -> tuple[jax.Array, dict]:
  """The Stage I objective: shape classification (or triplet) + rotation anchor CE + residual Huber.

  Args:
    outputs: the embedder's outputs (see `VoxelEmbedder.__call__`).
    batch: labels 'model' (B,), 'anchor' (B,), 'residual' (B, 4), 'quat' (B, 4).
    shape_loss: 'ce' or 'triplet'.
    *_weight: loss weights.
    huber_delta: the Huber threshold of the residual loss.
    triplet_margin: margin of the triplet option.
    anchors: (A, 4) anchor table (needed by the soft-label and neighbourhood options).
    soft_sigma_deg: > 0 for soft anchor labels (`soft_anchor_ce`); 0 is the paper's hard label.
    residual_radius_deg: > 0 to train the residuals of all anchors within this radius.
    invariance_weight: > 0 adds `pair_invariance` of the shape vectors (the batch must be paired).

  Returns:
    (scalar total loss, dict of scalar components and accuracies for logging).
  """
  if shape_loss == "ce":
    l_shape = softmax_ce(outputs["shape_logits"], batch["model"])
  elif shape_loss == "triplet":
    l_shape = batch_hard_triplet(outputs["shape_vec"], batch["model"], triplet_margin)
  else:
    raise ValueError(f"unknown shape loss {shape_loss!r}")
  l_anchor, l_res = rotation_loss(outputs, batch, anchors, huber_delta=huber_delta,
                                  soft_sigma_deg=soft_sigma_deg,
                                  residual_radius_deg=residual_radius_deg)
  total = jnp.mean(shape_weight * l_shape + anchor_weight * l_anchor + residual_weight * l_res)
  if invariance_weight > 0:
    l_inv = pair_invariance(outputs["shape_vec"])
    total = total + invariance_weight * l_inv
  aux = {
      "loss": total,
      "shape_loss": jnp.mean(l_shape),
      "anchor_loss": jnp.mean(l_anchor),
      "residual_loss": jnp.mean(l_res),
      "shape_acc": jnp.mean(jnp.argmax(outputs["shape_logits"], -1) == batch["model"]),
      "anchor_acc": jnp.mean(jnp.argmax(outputs["anchor_logits"], -1) == batch["anchor"]),
  }
  if invariance_weight > 0:
    aux["invariance_loss"] = l_inv
  return total, aux


def stage2_loss(outputs: dict[str, jax.Array], batch: dict[str, jax.Array], *, use_embedding: bool,
                embedding_weight: float, shape_weight: float, anchor_weight: float,
                residual_weight: float, cell_weight: float, cell_residual_weight: float,
                huber_delta: float, anchors: jax.Array | None = None, soft_sigma_deg: float = 0.0,
                residual_radius_deg: float = 0.0) -> tuple[jax.Array, dict]:
  """The Stage II objective (paper 3.3), averaged over the examples with mask True.

  L1 from the predicted shape and pose vectors to the frozen embedder's vectors (mean absolute difference
  per dimension, unless `use_embedding` is False: the paper's "w/o embedding" ablation), shape
  classification cross-entropy, rotation anchor cross-entropy + residual Huber (as Stage I, with the same
  soft-label options), translation anchor-cell cross-entropy + Huber on the normalised residual.

  Args:
    outputs: the regressor's outputs (`ImageRegressor.__call__`).
    batch: 'model' (B,), 'quat', 'anchor', 'residual' (rotation labels), 'cell' (B,), 'cell_residual'
      (B, 3), 'target_shape' (B, S), 'target_pose' (B, P), 'mask' (B,) bool.
    use_embedding, *_weight, huber_delta, anchors, soft_sigma_deg, residual_radius_deg: see configs.

  Returns:
    (scalar total loss, dict of scalar components and accuracies for logging).
  """
  mask = batch["mask"].astype(jnp.float32)
  denom = jnp.maximum(jnp.sum(mask), 1.0)

  def mean(x):
    return jnp.sum(x * mask) / denom

  l_shape = softmax_ce(outputs["shape_logits"], batch["model"])
  l_anchor, l_res = rotation_loss(outputs, batch, anchors, huber_delta=huber_delta,
                                  soft_sigma_deg=soft_sigma_deg, residual_radius_deg=residual_radius_deg)
  l_cell = softmax_ce(outputs["cell_logits"], batch["cell"])
  l_cell_res = translation_residual_loss(outputs["cell_residuals"], batch["cell"],
                                         batch["cell_residual"], huber_delta)
  total = (shape_weight * l_shape + anchor_weight * l_anchor + residual_weight * l_res
           + cell_weight * l_cell + cell_residual_weight * l_cell_res)
  l_emb = (jnp.mean(jnp.abs(outputs["shape_vec"] - batch["target_shape"]), axis=-1)
           + jnp.mean(jnp.abs(outputs["pose_vec"] - batch["target_pose"]), axis=-1))
  if use_embedding:
    total = total + embedding_weight * l_emb
  aux = {
      "loss": mean(total),
      "embedding_l1": mean(l_emb),
      "shape_loss": mean(l_shape),
      "anchor_loss": mean(l_anchor),
      "residual_loss": mean(l_res),
      "cell_loss": mean(l_cell),
      "cell_residual_loss": mean(l_cell_res),
      "shape_acc": mean(jnp.argmax(outputs["shape_logits"], -1) == batch["model"]),
      "anchor_acc": mean(jnp.argmax(outputs["anchor_logits"], -1) == batch["anchor"]),
      "cell_acc": mean(jnp.argmax(outputs["cell_logits"], -1) == batch["cell"]),
  }
  return aux["loss"], aux
