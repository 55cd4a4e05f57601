"""Measurement of shape retrieval at database scale: exact, approximate and sharded top-k vs numpy.

For a random (N, D) float32 database and Q random queries (generated on device: at N = 1e6, D = 512 the
database is 2 GB and a host round trip would dominate set-up), one `retrieval.Retriever` is built and
timed, interleaved with the alternatives:
  * exact: `Retriever.search` (chunked matmul + `lax.top_k`);
  * approx: the same with `lax.approx_max_k` (on CPU/GPU XLA's exact fallback; only TPU approximates),
    with its recall@1 against the exact search;
  * numpy: the brute force a user would otherwise write (chunked matmul + `argpartition` + sort of the k
    winners, |d|^2 precomputed like ours);
  * sharded: the database split over every device (only when there are several).
Latency is for the whole query batch (one call of Q queries). Used by the benchmark suite.
"""

from __future__ import annotations

import jax
import numpy as np

from disent_jax import retrieval
from disent_jax.bench import timing


def numpy_topk(queries: np.ndarray, database: np.ndarray, sq_norms: np.ndarray, k: int,
               chunk: int) -> tuple[np.ndarray, np.ndarray]:
  """Brute-force L2 top-k in numpy, `chunk` queries at a time.

  Args:
    queries: (Q, D).
    database: (N, D).
    sq_norms: (N,) |d|^2, precomputed.
    k: neighbours.
    chunk: queries per chunk (bounds the (chunk, N) score matrix).

  Returns:
    (ranking scores 2 q.d - |d|^2 (Q, k), indices (Q, k)), best first.
  """
  out_s, out_i = [], []
  for start in range(0, len(queries), chunk):
    s = (2 * queries[start:start + chunk]) @ database.T - sq_norms
    part = np.argpartition(-s, k - 1, axis=1)[:, :k]
    ps = np.take_along_axis(s, part, axis=1)
    order = np.argsort(-ps, axis=1)
    out_s.append(np.take_along_axis(ps, order, axis=1))
    out_i.append(np.take_along_axis(part, order, axis=1))
  return np.concatenate(out_s), np.concatenate(out_i)


def bench_retrieval(n: int, dim: int, num_queries: int, k: int, repeats: int, *,
                    recall_target: float = 0.95, max_seconds: float | None = 30.0,
                    numpy_baseline: bool = True, seed: int = 0) -> dict:
  """Times exact, approximate, numpy and (with several devices) sharded top-k on one random database.

  Args:
    n: database entries.
    dim: vector dimension.
    num_queries: queries per call.
    k: neighbours per query.
    repeats: timed rounds (fewer when max_seconds runs out first, at least 3).
    recall_target: the approximate search's target.
    max_seconds: time budget of the timed rounds (`timing.time_interleaved`).
    numpy_baseline: time the numpy brute force too.
    seed: data seed.

  Returns:
    dict: timings (name -> Timing, names 'exact', 'approx', 'numpy', 'sharded' as measured),
    recall_at_1 (approx vs exact), numpy_agrees / sharded_agrees (fraction of equal top-k indices),
    devices (of the sharded search, 1 when not measured).
  """
  kq, kd = jax.random.split(jax.random.key(seed))
  database = jax.random.normal(kd, (n, dim), np.float32)
  queries = jax.random.normal(kq, (num_queries, dim), np.float32)
  ret = retrieval.Retriever(database, recall_target=recall_target)
  fns = {"exact": lambda: jax.block_until_ready(ret.search(queries, k)),
         "approx": lambda: jax.block_until_ready(ret.search(queries, k, approx=True))}
  host = {}
  if numpy_baseline:
    host["q"], host["db"] = np.asarray(queries), np.asarray(database)
    host["sq"] = np.square(host["db"]).sum(axis=1)
    chunk = retrieval.query_chunk_size(num_queries, n)
    fns["numpy"] = lambda: numpy_topk(host["q"], host["db"], host["sq"], k, chunk)
  devices = len(jax.devices())
  if devices > 1:
    sharded = retrieval.Retriever(database, num_devices=devices, recall_target=recall_target)
    fns["sharded"] = lambda: jax.block_until_ready(sharded.search(queries, k))
  timings = timing.time_interleaved(fns, repeats, max_seconds=max_seconds)
  exact_idx = np.asarray(ret.search(queries, k)[1])
  out = {"timings": timings, "devices": devices if devices > 1 else 1,
         "recall_at_1": retrieval.recall_at(ret.search(queries, k, approx=True)[1], exact_idx, 1)}
  if numpy_baseline:
    out["numpy_agrees"] = retrieval.recall_at(fns["numpy"]()[1], exact_idx, k)
  if devices > 1:
    out["sharded_agrees"] = retrieval.recall_at(sharded.search(queries, k)[1], exact_idx, k)
  return out
