"""Losses against hand-computed values on fixed inputs."""

import jax.numpy as jnp
import numpy as np
import pytest

from disent_jax import losses


def test_softmax_ce_hand_computed():
  logits = jnp.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
  got = losses.softmax_ce(logits, jnp.array([2, 1]))
  expected = [-np.log(np.exp(3) / (np.exp(1) + np.exp(2) + np.exp(3))), np.log(3.0)]
  np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_huber_hand_computed():
  x = jnp.array([-3.0, -0.5, 0.0, 0.2, 2.0])
  np.testing.assert_allclose(losses.huber(x, 1.0), [2.5, 0.125, 0.0, 0.02, 1.5], rtol=1e-6)
  np.testing.assert_allclose(losses.huber(x, 0.1), [0.295, 0.045, 0.0, 0.015, 0.195], rtol=1e-6)


def test_rotation_residual_loss_reads_gt_anchor_and_is_sign_invariant():
  residuals = jnp.zeros((2, 3, 4)).at[:, :, 0].set(1.0)
  residuals = residuals.at[0, 2].set(jnp.array([0.6, 0.8, 0.0, 0.0]))
  anchor = jnp.array([2, 0])
  target = jnp.array([[1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
  got = losses.rotation_residual_loss(residuals, anchor, target, delta=1.0)
  # Example 0: diff (-0.4, 0.8, 0, 0) -> 0.5 * (0.16 + 0.64) = 0.4; example 1: exact -> 0.
  np.testing.assert_allclose(got, [0.4, 0.0], atol=1e-6)
  flipped = losses.rotation_residual_loss(residuals, anchor, -target, delta=1.0)
  np.testing.assert_allclose(flipped, got, atol=1e-6)


def test_translation_residual_loss():
  res = jnp.full((1, 2, 3), 0.5).at[0, 1].set(jnp.array([0.0, 1.0, 0.5]))
  got = losses.translation_residual_loss(res, jnp.array([1]), jnp.array([[0.5, 0.5, 0.5]]), 1.0)
  np.testing.assert_allclose(got, [0.25], atol=1e-6)


def test_batch_hard_triplet_hand_computed():
  e = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]])
  labels = jnp.array([0, 0, 1, 2])
  got = np.asarray(losses.batch_hard_triplet(e, labels, margin=0.2))
  # Example 0: hardest positive is ex 1 (d = sqrt 2), nearest negative ex 2 (d = 0) -> sqrt2 + 0.2.
  # Example 1: positive ex 0 (sqrt 2), nearest negative ex 2 or 3 (sqrt 2) -> 0.2.
  # Examples 2, 3 have no positive -> 0.
  np.testing.assert_allclose(got, [np.sqrt(2) + 0.2, 0.2, 0.0, 0.0], atol=1e-5)


def test_stage1_loss_combines_weighted_terms():
  outputs = {
      "shape_logits": jnp.array([[0.0, 0.0]]),
      "shape_vec": jnp.ones((1, 4)),
      "anchor_logits": jnp.array([[0.0, 0.0, 0.0, 0.0]]),
      "residuals": jnp.tile(jnp.array([1.0, 0.0, 0.0, 0.0]), (1, 4, 1)),
  }
  batch = {"model": jnp.array([1]), "anchor": jnp.array([3]),
           "residual": jnp.array([[0.8, 0.6, 0.0, 0.0]])}
  total, aux = losses.stage1_loss(outputs, batch, shape_loss="ce", shape_weight=2.0,
                                  anchor_weight=0.5, residual_weight=10.0, huber_delta=1.0)
  res = 0.5 * (0.2 ** 2 + 0.6 ** 2)
  expected = 2.0 * np.log(2) + 0.5 * np.log(4) + 10.0 * res
  assert float(total) == pytest.approx(expected, rel=1e-6)
  assert float(aux["residual_loss"]) == pytest.approx(res, rel=1e-6)
  with pytest.raises(ValueError, match="unknown shape loss"):
    losses.stage1_loss(outputs, batch, shape_loss="nope", shape_weight=1, anchor_weight=1,
                       residual_weight=1, huber_delta=1)


def test_soft_anchor_ce_hand_computed_and_hard_limit():
  dist = jnp.array([[0.0, 15.0, 30.0]])
  logits = jnp.array([[2.0, 1.0, 0.0]])
  got = float(losses.soft_anchor_ce(logits, dist, sigma_deg=15.0)[0])
  w = np.exp(-0.5 * np.array([0.0, 1.0, 4.0]))
  w /= w.sum()
  logp = np.array([2.0, 1.0, 0.0]) - np.log(np.exp([2.0, 1.0, 0.0]).sum())
  assert got == pytest.approx(-(w * logp).sum(), rel=1e-6)
  # sigma -> 0 gives the hard-label cross-entropy of the nearest anchor.
  hard = float(losses.softmax_ce(logits, jnp.array([0]))[0])
  assert float(losses.soft_anchor_ce(logits, dist, sigma_deg=0.5)[0]) == pytest.approx(hard, rel=1e-5)


def test_anchor_distances_match_geometry():
  from disent_jax import geometry
  anchors = jnp.asarray(geometry.rotation_anchors(4), jnp.float32)
  q = geometry.random_quaternions(__import__("jax").random.key(0), (5,))
  d = losses.anchor_distances_deg(q, anchors)
  ref = geometry.quat_geodesic_deg(q[:, None], anchors[None])
  np.testing.assert_allclose(d, ref, atol=2e-2)


def test_neighbourhood_residual_loss_is_zero_for_exact_residuals_and_masks_far_anchors():
  from disent_jax import geometry
  anchors = jnp.asarray(geometry.rotation_anchors(4), jnp.float32)
  q = geometry.random_quaternions(__import__("jax").random.key(1), (3,))
  dist = losses.anchor_distances_deg(q, anchors)
  exact = geometry.quat_canonical(geometry.quat_multiply(q[:, None], geometry.quat_conjugate(anchors)[None]))
  np.testing.assert_allclose(
      losses.neighbourhood_residual_loss(exact, q, anchors, dist, 60.0, 1.0), 0.0, atol=1e-6)
  # Spoil the residuals of anchors outside the radius: the loss must not see them.
  nearest = jnp.argmin(dist, axis=-1)
  far = (dist > 60.0) & (jnp.arange(anchors.shape[0])[None] != nearest[:, None])
  spoiled = jnp.where(far[..., None], jnp.array([0.0, 1.0, 0.0, 0.0]), exact)
  np.testing.assert_allclose(
      losses.neighbourhood_residual_loss(spoiled, q, anchors, dist, 60.0, 1.0), 0.0, atol=1e-6)
  # Radius 0 keeps only the nearest anchor: equal to the paper's loss on that anchor.
  noisy = exact + 0.1
  ref = losses.rotation_residual_loss(noisy, nearest, exact[jnp.arange(3), nearest], 1.0)
  np.testing.assert_allclose(losses.neighbourhood_residual_loss(noisy, q, anchors, dist, 0.0, 1.0), ref,
                             rtol=1e-5)
