"""Stage I evaluation helpers against brute-force computations."""

import numpy as np

from disent_jax import eval_embedder


def test_nearest_rows_equals_brute_force_in_chunks():
  rng = np.random.default_rng(0)
  q, d = rng.normal(size=(100, 8)), rng.normal(size=(30, 8))
  ref = np.argmin(((q[:, None] - d[None]) ** 2).sum(-1), axis=1)
  np.testing.assert_array_equal(eval_embedder.nearest_rows(q, d, chunk=7), ref)


def test_disentanglement_ratios_hand_computed():
  # 2 models x 2 rotations in 1-D: model 0 at (0, 1), model 1 at (10, 11) over the two rotations.
  v = np.array([[[0.0], [1.0]], [[10.0], [11.0]]])
  d = eval_embedder.disentanglement(v)
  assert d["across_rotations"] == 1.0  # each model moves by 1 between rotations
  assert d["across_models"] == 10.0  # the models are 10 apart at each rotation
  x = np.random.default_rng(1).normal(size=(5, 3))
  ref = np.mean([np.linalg.norm(x[i] - x[j]) for i in range(5) for j in range(5) if i != j])
  assert abs(eval_embedder._mean_pairwise(x) - ref) < 1e-12  # pylint: disable=protected-access
