"""Tests of disent_jax.retrieval: exact, approximate and sharded top-k against a numpy brute force.

Random Gaussian vectors have no exact ties, and their k-th and (k+1)-th neighbours are far apart compared
with float32 rounding, so indices are compared exactly and scores to a relative 1e-4.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from disent_jax import retrieval
from disent_jax.errors import ConfigError


def _data(n: int, q: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(seed)
  return (rng.standard_normal((q, d)).astype(np.float32), rng.standard_normal((n, d)).astype(np.float32))


def _brute_force(queries: np.ndarray, database: np.ndarray, k: int, metric: str):
  """(scores, indices) by float64 argsort of the full score matrix."""
  q, db = queries.astype(np.float64), database.astype(np.float64)
  if metric == "cosine":
    scores = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (db / np.linalg.norm(db, axis=1,
                                                                                   keepdims=True)).T
  else:
    scores = -((q[:, None, :] - db[None, :, :]) ** 2).sum(-1)
  idx = np.argsort(-scores, axis=1, kind="stable")[:, :k]
  return np.take_along_axis(scores, idx, axis=1), idx


def _assert_matches(result, expected):
  scores, idx = (np.asarray(x) for x in result)
  np.testing.assert_array_equal(idx, expected[1])
  np.testing.assert_allclose(scores, expected[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_exact_topk_equals_brute_force(metric):
  queries, database = _data(300, 17, 24)
  result = retrieval.exact_topk(queries, database, 10, metric=metric)
  assert result[1].dtype == np.int32 and result[0].shape == (17, 10)
  _assert_matches(result, _brute_force(queries, database, 10, metric))


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_query_chunking_gives_the_same_answer(metric):
  # A budget of 3 queries' scores forces 4 chunks of 3 with a padded last chunk for 11 queries.
  queries, database = _data(100, 11, 8, seed=1)
  assert retrieval.query_chunk_size(11, 100, 3 * 4 * 100) == 3
  result = retrieval.exact_topk(queries, database, 7, metric=metric, max_scores_bytes=3 * 4 * 100)
  _assert_matches(result, _brute_force(queries, database, 7, metric))


@pytest.mark.parametrize("metric", ["l2", "cosine"])
@pytest.mark.parametrize("n", [203, 256])
def test_sharded_equals_unsharded(metric, n):
  assert len(jax.devices()) == 8, "tests/conftest.py should give 8 fake CPU devices"
  queries, database = _data(n, 9, 16, seed=2)
  unsharded = retrieval.exact_topk(queries, database, 10, metric=metric)
  sharded = retrieval.sharded_topk(queries, database, 10, metric=metric, num_devices=8)
  np.testing.assert_array_equal(np.asarray(sharded[1]), np.asarray(unsharded[1]))
  np.testing.assert_allclose(np.asarray(sharded[0]), np.asarray(unsharded[0]), rtol=1e-5, atol=1e-5)
  _assert_matches(sharded, _brute_force(queries, database, 10, metric))


def test_sharded_padding_rows_are_never_returned():
  # 13 entries over 8 devices: 2 rows per shard (3 padding rows), and k = N > rows per shard.
  queries, database = _data(13, 5, 4, seed=3)
  scores, idx = retrieval.sharded_topk(queries, database, 13, num_devices=8)
  np.testing.assert_array_equal(np.sort(np.asarray(idx), axis=1), np.tile(np.arange(13), (5, 1)))
  assert np.isfinite(np.asarray(scores)).all()
  _assert_matches((scores, idx), _brute_force(queries, database, 13, "l2"))


def test_retriever_is_reusable_and_chunks_sharded_queries():
  queries, database = _data(150, 20, 12, seed=4)
  ret = retrieval.Retriever(database, metric="cosine", num_devices=4, max_scores_bytes=6 * 4 * 38)
  assert ret.num_entries == 150 and ret.dim == 12 and ret.mesh.devices.size == 4
  assert ret.rows.shape == (152, 12)  # padded to a multiple of 4
  for k in (1, 5):
    _assert_matches(ret.search(queries, k), _brute_force(queries, database, k, "cosine"))
  _assert_matches(ret.search(queries[:3], 5), _brute_force(queries[:3], database, 5, "cosine"))


@pytest.mark.parametrize("sharded", [False, True])
def test_approx_recall_meets_the_target(sharded):
  queries, database = _data(4000, 64, 32, seed=5)
  exact = retrieval.exact_topk(queries, database, 10)
  if sharded:
    approx = retrieval.sharded_topk(queries, database, 10, approx=True, recall_target=0.9)
  else:
    approx = retrieval.approx_topk(queries, database, 10, recall_target=0.9)
  assert retrieval.recall_at(approx[1], exact[1], k=1) >= 0.9
  assert retrieval.recall_at(exact[1], exact[1], k=10) == 1.0


def test_zero_vectors_do_not_give_nan_with_cosine():
  queries, database = _data(20, 3, 4, seed=6)
  database[0] = 0.0
  queries[1] = 0.0
  scores, _ = retrieval.exact_topk(queries, database, 20, metric="cosine")
  assert np.isfinite(np.asarray(scores)).all()


@pytest.mark.parametrize("kwargs, match", [
    (dict(queries=np.zeros((2, 5)), k=1), "query dimension 5 does not match the database dimension 4"),
    (dict(k=11), r"k=11 is larger than the database \(10 entries\)"),
    (dict(k=0), "k must be >= 1"),
    (dict(k=2.0), "k must be an integer"),
    (dict(queries=np.zeros(4), k=1), "queries must be a 2-D"),
    (dict(database=np.zeros((0, 4)), k=1), "database is empty"),
    (dict(database=np.zeros((3, 4, 1)), k=1), "database must be a 2-D"),
    (dict(k=1, metric="dot"), "metric must be one of"),
])
def test_bad_inputs_raise_config_error(kwargs, match):
  args = dict(queries=np.zeros((2, 4)), database=np.ones((10, 4)), k=1)
  args.update(kwargs)
  with pytest.raises(ConfigError, match=match):
    retrieval.exact_topk(args.pop("queries"), args.pop("database"), args.pop("k"), **args)


def test_bad_sharding_and_recall_target_raise_config_error():
  queries, database = _data(10, 2, 4)
  with pytest.raises(ConfigError, match="only|available"):
    retrieval.sharded_topk(queries, database, 1, num_devices=len(jax.devices()) + 1)
  with pytest.raises(ConfigError, match="recall_target"):
    retrieval.approx_topk(queries, database, 1, recall_target=1.5)
  with pytest.raises(ConfigError, match="larger than the database"):
    retrieval.sharded_topk(queries, database, 11, num_devices=8)
