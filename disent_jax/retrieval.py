"""Nearest-neighbour retrieval of shape vectors against a database of canonical shape vectors.

The paper retrieves a CAD model by comparing the shape half of an image's embedding with the shape
embeddings of the canonical voxel models. With a few thousand models this is one small matmul; this module
makes the same search work for databases of 1e6+ entries, on one device or split over several.

Scores (higher is nearer):
  * metric='l2': the negated squared Euclidean distance -|q - d|^2. The search ranks by 2 q.d - |d|^2
    (|q|^2 is the same for every entry of a row, so it is added back only to the k winners), so the whole
    search is one matmul with a precomputed per-entry bias -|d|^2, then `jax.lax.top_k`.
  * metric='cosine': q.d / (|q| |d|), by normalising both sides once (zero vectors score 0 everywhere).

Memory. The (queries x entries) score matrix is the big intermediate: 256 queries x 1e6 entries is 1 GiB
in float32. Queries are therefore processed in chunks (`jax.lax.map`) sized so that one chunk's score
matrix stays under `max_scores_bytes` (default 256 MiB); only the (Q, k) winners of every chunk are kept.
The database itself must fit in the memory of the devices that hold it, which sharding divides.

Approximate search (`approx_topk`) uses `jax.lax.approx_max_k`, which is a real approximate (and much
faster) partial reduction on TPU; on CPU and GPU XLA lowers it to an exact fallback, so there its recall
is 1 and its speed that of a sort-based top-k.

Sharding. A database larger than one device is split row-wise over a 1-D device mesh (axis 'data',
`NamedSharding(mesh, P('data'))`). Inside `jax.shard_map` every device takes the top-k of its own rows and
turns local row numbers into global ones (+ shard index x rows per shard); the (devices x k) candidates
are then gathered and merged by one more top-k, so the result is replicated and equal to the unsharded
search. When the entry count does not divide by the device count the database is padded with
zero rows whose bias is -inf: they score -inf for every query, and since k <= N real entries always score
higher (finite), a padding row is never returned.

`Retriever` holds a prepared database (normalised / bias computed, padded, placed on its devices once)
and jits its search per (query shape, k), which is what an inference loop wants; `exact_topk`,
`approx_topk` and `sharded_topk` are one-shot conveniences over the same code. Inputs are validated in
Python (shapes and k are static), raising `errors.ConfigError`; NaN values are not checked (that would
need a device round trip) and give unspecified rankings.
"""

from __future__ import annotations

import functools
import math
from typing import Literal, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from disent_jax.errors import ConfigError

Metric = Literal["l2", "cosine"]
METRICS: tuple[str, ...] = ("l2", "cosine")
DEFAULT_MAX_SCORES_BYTES = 256 * 2 ** 20
_AXIS = "data"
# Tiny floor of a vector norm, so a zero vector normalises to zero instead of NaN.
_NORM_EPS = 1e-12


# ---------------------------------------------------------------------------------------------------------
# Validation and helpers.


def _check_metric(metric: str) -> None:
  if metric not in METRICS:
    raise ConfigError(f"retrieval metric must be one of {METRICS}, got {metric!r}")


def _check_recall_target(recall_target: float) -> None:
  if not 0.0 < float(recall_target) <= 1.0:
    raise ConfigError(f"recall_target must be in (0, 1], got {recall_target}")


def _as_matrix(x, what: str) -> jax.Array:
  """`x` as a 2-D floating jax array (integers become float32)."""
  x = x if isinstance(x, jax.Array) else np.asarray(x)
  if x.ndim != 2:
    raise ConfigError(f"{what} must be a 2-D (count, dim) array, got shape {tuple(x.shape)}")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    x = x.astype(np.float32)
  return jnp.asarray(x)


def _check_search(queries_shape: Sequence[int], num_entries: int, dim: int, k) -> int:
  """Validates a search against a database of `num_entries` x `dim`; returns k as an int."""
  if len(queries_shape) != 2:
    raise ConfigError(f"queries must be a 2-D (Q, D) array, got shape {tuple(queries_shape)}")
  if queries_shape[1] != dim:
    raise ConfigError(f"query dimension {queries_shape[1]} does not match the database dimension {dim}")
  if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
    raise ConfigError(f"k must be an integer, got {k!r}")
  if k < 1:
    raise ConfigError(f"k must be >= 1, got {k}")
  if k > num_entries:
    raise ConfigError(f"k={k} is larger than the database ({num_entries} entries)")
  return int(k)


def make_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
  """A 1-D mesh (axis 'data') over the first `num_devices` devices (None: all).

  Args:
    num_devices: how many devices to split the database over.

  Returns:
    The mesh.

  Raises:
    ConfigError: more devices asked for than exist, or fewer than 1.
  """
  devices = jax.devices()
  n = len(devices) if num_devices is None else int(num_devices)
  if not 1 <= n <= len(devices):
    raise ConfigError(f"cannot shard a database over {n} devices: {len(devices)} are available")
  # A plain Mesh has Auto axes, which shard_map and NamedSharding accept without explicit-sharding types.
  return jax.sharding.Mesh(np.asarray(devices[:n]), (_AXIS,))


def query_chunk_size(num_queries: int, rows: int, max_scores_bytes: int = DEFAULT_MAX_SCORES_BYTES) -> int:
  """Queries per chunk so a chunk's float32 score matrix against `rows` entries fits the budget.

  The chunk is then evened out (ceil(Q / chunks)) so the padded last chunk wastes little.

  Args:
    num_queries: Q.
    rows: database rows one device scores (all of them unsharded, one shard's when sharded).
    max_scores_bytes: the budget of one chunk's score matrix.

  Returns:
    The chunk size, in [1, Q].
  """
  if max_scores_bytes < 1:
    raise ConfigError(f"max_scores_bytes must be positive, got {max_scores_bytes}")
  cap = max(1, int(max_scores_bytes) // (4 * max(rows, 1)))
  chunks = math.ceil(num_queries / min(cap, num_queries))
  return math.ceil(num_queries / chunks)


def recall_at(found: jax.Array | np.ndarray, truth: jax.Array | np.ndarray, k: int = 1) -> float:
  """Recall@k of a search against the exact one: mean fraction of the true top-k found in the top-k.

  Args:
    found: (Q, >=k) indices returned by the search under test.
    truth: (Q, >=k) indices of the exact search.
    k: how many leading columns to compare.

  Returns:
    The recall in [0, 1]; for k=1, the fraction of queries whose nearest entry was found first.
  """
  found, truth = np.asarray(found)[:, :k], np.asarray(truth)[:, :k]
  hits = [len(set(f.tolist()) & set(t.tolist())) for f, t in zip(found, truth)]
  return float(np.mean(hits) / k) if hits else 1.0


# ---------------------------------------------------------------------------------------------------------
# The jitted core.


def _normalise(x: jax.Array) -> jax.Array:
  norm = jnp.linalg.norm(x, axis=-1, keepdims=True)
  return x / jnp.maximum(norm, _NORM_EPS)


@functools.partial(jax.jit, static_argnames=("metric", "padded_rows"))
def _prepare(database: jax.Array, *, metric: str, padded_rows: int) -> tuple[jax.Array, jax.Array]:
  """(rows, bias): the database as searched (normalised for cosine) and its per-entry score bias.

  Rows past N (padding up to `padded_rows`) are zero with bias -inf, so they never win.
  """
  n = database.shape[0]
  if metric == "cosine":
    rows = _normalise(database)
    bias = jnp.zeros((n,), rows.dtype)
  else:
    rows = database
    bias = -jnp.sum(jnp.square(database), axis=-1)
  if padded_rows > n:
    rows = jnp.pad(rows, ((0, padded_rows - n), (0, 0)))
    bias = jnp.pad(bias, (0, padded_rows - n), constant_values=-jnp.inf)
  return rows, bias


def _query_side(queries: jax.Array, metric: str) -> jax.Array:
  """What multiplies the database rows: 2q for l2 (exact in floating point), q / |q| for cosine."""
  return _normalise(queries) if metric == "cosine" else 2 * queries


def _local_topk(q: jax.Array, rows: jax.Array, bias: jax.Array, *, k: int, chunk: int, approx: bool,
                recall_target: float, reduction_size: int, precision) -> tuple[jax.Array, jax.Array]:
  """Top-k of (q @ rows.T + bias) per query over these rows, `chunk` queries at a time.

  Returns:
    (scores (Q, k), local row indices (Q, k) int32).
  """
  num_q, dim = q.shape

  def one(qc):
    s = jnp.matmul(qc, rows.T, precision=precision) + bias
    if approx:
      return jax.lax.approx_max_k(s, k, recall_target=recall_target,
                                  reduction_input_size_override=reduction_size)
    return jax.lax.top_k(s, k)

  if chunk >= num_q:
    return one(q)
  chunks = math.ceil(num_q / chunk)
  # Zero queries pad the last chunk; their rows are cut off below.
  qp = jnp.pad(q, ((0, chunks * chunk - num_q), (0, 0))).reshape(chunks, chunk, dim)
  s, i = jax.lax.map(one, qp)
  return s.reshape(-1, k)[:num_q], i.reshape(-1, k)[:num_q]


def _finish(q: jax.Array, scores: jax.Array, metric: str) -> jax.Array:
  """Ranking scores -> reported scores: for l2 subtract |q|^2, giving -|q - d|^2 (clamped to <= 0)."""
  if metric == "cosine":
    return scores
  return jnp.minimum(scores - jnp.sum(jnp.square(q), axis=-1, keepdims=True), 0.0)


@functools.partial(jax.jit, static_argnames=("k", "metric", "chunk", "approx", "recall_target",
                                             "precision"))
def _search_single(queries, rows, bias, *, k, metric, chunk, approx, recall_target, precision):
  """Unsharded search over prepared rows; returns (scores, indices)."""
  q = _query_side(queries, metric)
  s, i = _local_topk(q, rows, bias, k=k, chunk=chunk, approx=approx, recall_target=recall_target,
                     reduction_size=-1, precision=precision)
  return _finish(queries, s, metric), i


@functools.partial(jax.jit, static_argnames=("k", "metric", "chunk", "approx", "recall_target",
                                             "precision", "mesh"))
def _search_sharded(queries, rows, bias, *, k, metric, chunk, approx, recall_target, precision, mesh):
  """Search over rows split on `mesh`'s 'data' axis: local top-k, then an all-gather + top-k merge."""
  n_dev = mesh.devices.size
  local_rows = rows.shape[0] // n_dev
  # A shard may hold fewer rows than k; the n_dev * local_k >= k candidates still contain the top k
  # (k <= N <= padded rows = n_dev * local_rows).
  local_k = min(k, local_rows)

  def per_shard(qs, rows_s, bias_s):
    s, i = _local_topk(_query_side(qs, metric), rows_s, bias_s, k=local_k, chunk=chunk, approx=approx,
                       recall_target=recall_target, reduction_size=rows.shape[0], precision=precision)
    return s, i + jax.lax.axis_index(_AXIS).astype(i.dtype) * local_rows

  # Each shard's (Q, local_k) candidates become one column block of (Q, n_dev * local_k); the merge below
  # runs outside shard_map, where XLA gathers the small candidate arrays (this keeps shard_map's
  # replication check on: a P() output of all_gather inside would need check_vma=False).
  s_all, i_all = jax.shard_map(per_shard, mesh=mesh, in_specs=(P(), P(_AXIS), P(_AXIS)),
                               out_specs=(P(None, _AXIS), P(None, _AXIS)))(queries, rows, bias)
  replicated = NamedSharding(mesh, P())
  s_all = jax.lax.with_sharding_constraint(s_all, replicated)
  i_all = jax.lax.with_sharding_constraint(i_all, replicated)
  top_s, pos = jax.lax.top_k(s_all, k)
  return _finish(queries, top_s, metric), jnp.take_along_axis(i_all, pos, axis=1)


# ---------------------------------------------------------------------------------------------------------
# Public API.


class Retriever:
  """A database of shape vectors kept on device, searched by `search(queries, k)`.

  Attributes:
    metric: 'l2' or 'cosine'.
    num_entries: N, real database entries (padding excluded).
    dim: D.
    mesh: the 1-D mesh the rows are split over, or None (one device).
    rows, bias: the prepared database (normalised for cosine) and per-entry bias, padded when sharded.
  """

  def __init__(self, database, *, metric: Metric = "l2", num_devices: int | None = 1,
               mesh: jax.sharding.Mesh | None = None, approx: bool = False, recall_target: float = 0.95,
               max_scores_bytes: int = DEFAULT_MAX_SCORES_BYTES,
               precision: jax.lax.Precision | str | None = "highest"):
    """Prepares the database and puts it on its device(s) once.

    Args:
      database: (N, D) canonical shape vectors (numpy or jax).
      metric: 'l2' (scores are -squared distance) or 'cosine' (scores are cosine similarity).
      num_devices: devices to split the rows over (None: all); 1 keeps the database on the default
        device, unsharded. Ignored when `mesh` is given.
      mesh: an explicit 1-D mesh with axis 'data'.
      approx: search with `jax.lax.approx_max_k` by default (see `search`).
      recall_target: the approximate search's recall target, in (0, 1].
      max_scores_bytes: budget of one query chunk's score matrix (see the module docstring).
      precision: matmul precision; 'highest' keeps float32 scores exact on GPU/TPU (whose default
        would round inputs to bf16/tf32 and reorder near neighbours).

    Raises:
      ConfigError: bad metric, shape, recall target, device count or mesh.
    """
    _check_metric(metric)
    _check_recall_target(recall_target)
    database = _as_matrix(database, "database")
    if database.shape[0] < 1:
      raise ConfigError("the retrieval database is empty")
    if mesh is None and num_devices != 1:
      mesh = make_mesh(num_devices)
    if mesh is not None and mesh.axis_names != (_AXIS,):
      raise ConfigError(f"a retrieval mesh must be 1-D with axis {_AXIS!r}, got {mesh.axis_names}")
    self.metric = metric
    self.num_entries, self.dim = int(database.shape[0]), int(database.shape[1])
    self.mesh = mesh
    self.approx = bool(approx)
    self.recall_target = float(recall_target)
    self.max_scores_bytes = int(max_scores_bytes)
    self.precision = precision
    n_dev = 1 if mesh is None else mesh.devices.size
    padded = math.ceil(self.num_entries / n_dev) * n_dev
    self._local_rows = padded // n_dev
    if mesh is None:
      self.rows, self.bias = _prepare(database, metric=metric, padded_rows=padded)
    else:
      sharding = NamedSharding(mesh, P(_AXIS))
      self.rows, self.bias = jax.jit(functools.partial(_prepare, metric=metric, padded_rows=padded),
                                     out_shardings=(sharding, sharding))(database)

  def search(self, queries, k: int, *, approx: bool | None = None) -> tuple[jax.Array, jax.Array]:
    """The k nearest database entries of every query.

    Args:
      queries: (Q, D) shape vectors.
      k: neighbours per query, 1 <= k <= N.
      approx: override the constructor's `approx`.

    Returns:
      (scores (Q, k), indices (Q, k) int32), best first; see the module docstring for the scores.

    Raises:
      ConfigError: bad shapes or k.
    """
    queries = _as_matrix(queries, "queries")
    k = _check_search(queries.shape, self.num_entries, self.dim, k)
    approx = self.approx if approx is None else bool(approx)
    chunk = query_chunk_size(queries.shape[0], self._local_rows, self.max_scores_bytes)
    kwargs = dict(k=k, metric=self.metric, chunk=chunk, approx=approx, recall_target=self.recall_target,
                  precision=self.precision)
    if self.mesh is None:
      return _search_single(queries, self.rows, self.bias, **kwargs)
    queries = jax.device_put(queries, NamedSharding(self.mesh, P()))
    return _search_sharded(queries, self.rows, self.bias, mesh=self.mesh, **kwargs)

  def __repr__(self) -> str:
    where = "1 device" if self.mesh is None else f"{self.mesh.devices.size} devices"
    return f"Retriever({self.num_entries} x {self.dim}, metric={self.metric!r}, {where})"


def exact_topk(queries, database, k: int, *, metric: Metric = "l2",
               max_scores_bytes: int = DEFAULT_MAX_SCORES_BYTES,
               precision: jax.lax.Precision | str | None = "highest") -> tuple[jax.Array, jax.Array]:
  """Exact k nearest database entries of every query (matmul + `jax.lax.top_k`), on one device.

  Args:
    queries: (Q, D) query vectors.
    database: (N, D) database vectors.
    k: neighbours per query, 1 <= k <= N.
    metric: 'l2' or 'cosine'.
    max_scores_bytes: budget of one query chunk's score matrix.
    precision: matmul precision.

  Returns:
    (scores (Q, k), indices (Q, k) int32), best first.

  Raises:
    ConfigError: bad metric, shapes or k.
  """
  return Retriever(database, metric=metric, max_scores_bytes=max_scores_bytes,
                   precision=precision).search(queries, k)


def approx_topk(queries, database, k: int, *, metric: Metric = "l2", recall_target: float = 0.95,
                max_scores_bytes: int = DEFAULT_MAX_SCORES_BYTES,
                precision: jax.lax.Precision | str | None = "highest") -> tuple[jax.Array, jax.Array]:
  """Approximate k nearest entries with `jax.lax.approx_max_k` (exact fallback on CPU/GPU).

  Args:
    queries: (Q, D) query vectors.
    database: (N, D) database vectors.
    k: neighbours per query, 1 <= k <= N.
    metric: 'l2' or 'cosine'.
    recall_target: expected recall of the true top-k, in (0, 1].
    max_scores_bytes: budget of one query chunk's score matrix.
    precision: matmul precision.

  Returns:
    (scores (Q, k), indices (Q, k) int32), best first.

  Raises:
    ConfigError: bad metric, shapes, k or recall target.
  """
  return Retriever(database, metric=metric, approx=True, recall_target=recall_target,
                   max_scores_bytes=max_scores_bytes, precision=precision).search(queries, k)


def sharded_topk(queries, database, k: int, *, metric: Metric = "l2", num_devices: int | None = None,
                 mesh: jax.sharding.Mesh | None = None, approx: bool = False, recall_target: float = 0.95,
                 max_scores_bytes: int = DEFAULT_MAX_SCORES_BYTES,
                 precision: jax.lax.Precision | str | None = "highest") -> tuple[jax.Array, jax.Array]:
  """k nearest entries with the database rows split over devices (see the module docstring).

  Args:
    queries: (Q, D) query vectors (replicated to every device).
    database: (N, D) database vectors; N need not divide by the device count.
    k: neighbours per query, 1 <= k <= N.
    metric: 'l2' or 'cosine'.
    num_devices: devices of the mesh (None: all); ignored when `mesh` is given.
    mesh: an explicit 1-D mesh with axis 'data'.
    approx: local top-k by `approx_max_k` (the merge is exact).
    recall_target: the approximate search's recall target.
    max_scores_bytes: budget of one query chunk's score matrix per device.
    precision: matmul precision.

  Returns:
    (scores (Q, k), indices (Q, k) int32) with global database indices, replicated.

  Raises:
    ConfigError: bad metric, shapes, k, recall target or device count.
  """
  if mesh is None:
    mesh = make_mesh(num_devices)
  return Retriever(database, metric=metric, mesh=mesh, approx=approx, recall_target=recall_target,
                   max_scores_bytes=max_scores_bytes, precision=precision).search(queries, k)
