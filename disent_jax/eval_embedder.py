"""Stage I evaluation: what the learned embedding shows on held-out rotations of every database model.

Protocol: one fixed set of M Haar-random rotations (seed `config.eval.seed`, disjoint from training keys)
is applied to every database model, giving a K x M grid of examples. Reported:
  * shape top-1 of the classifier head;
  * shape retrieval by nearest neighbour (L2) of each example's shape vector among the K *canonical-pose*
    shape vectors (identity rotation): this tests pose invariance of the shape vector;
  * rotation error (arg-max anchor + its residual) per category: MedErr and Acc_pi/6, with models marked
    symmetric (CadModel.symmetry) reported separately, since their rotation is ambiguous;
  * disentanglement ratios over the grid: for shape vectors, the mean distance between rotations of the
    same model over the mean distance between models at the same rotation (0 = perfectly pose-invariant);
    for pose vectors, the mean distance between models at the same rotation over the mean distance between
    rotations of the same model (0 = perfectly shape-invariant).
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import scipy.spatial

from disent_jax import geometry
from disent_jax import metrics
from disent_jax import train_embedder


# Large databases (e.g. ModelNet's ~10k models): the pairwise statistics use at most this many models.
_MAX_MODELS_FOR_PAIRS = 512


def _mean_pairwise(x: np.ndarray) -> float:
  """Mean L2 distance over distinct pairs of rows of x (N, D)."""
  return float(scipy.spatial.distance.pdist(x).mean()) if len(x) > 1 else 0.0


def disentanglement(vectors: np.ndarray, seed: int = 0) -> dict:
  """Within/between distance ratios of a (K models, M rotations, D) grid of vectors.

  Returns:
    {'across_rotations': mean over models of the mean pairwise distance among its M rotations,
     'across_models': mean over rotations of the mean pairwise distance among the K models}
    (over a fixed random subset of `_MAX_MODELS_FOR_PAIRS` models when K is larger).
  """
  k, m, _ = vectors.shape
  if k > _MAX_MODELS_FOR_PAIRS:
    vectors = vectors[np.random.default_rng(seed).choice(k, _MAX_MODELS_FOR_PAIRS, replace=False)]
    k = _MAX_MODELS_FOR_PAIRS
  return {"across_rotations": float(np.mean([_mean_pairwise(vectors[i]) for i in range(k)])),
          "across_models": float(np.mean([_mean_pairwise(vectors[:, j]) for j in range(m)]))}


def nearest_rows(queries: np.ndarray, database: np.ndarray, chunk: int = 4096) -> np.ndarray:
  """Index of the nearest (L2) database row for each query row, in chunks (no (N, K, D) temporary)."""
  db_sq = np.sum(database * database, axis=1)
  out = []
  for start in range(0, len(queries), chunk):
    q = queries[start:start + chunk]
    out.append(np.argmin(db_sq[None, :] - 2.0 * q @ database.T, axis=1))
  return np.concatenate(out) if out else np.zeros(0, int)


def evaluate(config: ml_collections.ConfigDict, workdir: str, *, setup_=None, state=None,
             step: int | None = None) -> dict:
  """Evaluates a Stage I state (restored from `workdir` when not given).

  Args:
    config: the Stage I config.
    workdir: the run's workdir.
    setup_: an existing `train_embedder.Stage1Setup` (avoids rebuilding the bank).
    state: a train state; restored from the latest readable checkpoint when None.
    step: the state's step, for the record.

  Returns:
    The results dict (see the module docstring).
  """
  if state is None:
    setup_, state, step = train_embedder.restore_state(config, workdir, setup_)
  elif setup_ is None:
    setup_ = train_embedder.setup(config, workdir)
  bank, anchors_np, model = setup_.bank, setup_.anchors, setup_.model
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  anchors = jnp.asarray(anchors_np, jnp.float32)
  k, m = bank.num_models, config.eval.num_rotations
  quats = np.asarray(geometry.random_quaternions(jax.random.key(config.eval.seed), (m,)))

  # Parameters are an argument, not a closure constant: constants would be baked into the compiled program.
  @jax.jit
  def forward_fn(variables, vols, q):
    rotated = train_embedder.stage1_data.make_examples(vols, anchors, jnp.arange(vols.shape[0]), q)
    out = model.apply(variables, rotated["volume"], train=False)
    a = jnp.argmax(out["anchor_logits"], -1)
    q_pred = geometry.decode_rotation(a, out["residuals"][jnp.arange(a.shape[0]), a], anchors)
    return {"shape_vec": out["shape_vec"], "pose_vec": out["pose_vec"],
            "shape_pred": jnp.argmax(out["shape_logits"], -1), "q_pred": q_pred}

  def forward(vols, q):
    return forward_fn(variables, vols, q)

  volumes = np.asarray(bank.volumes)
  # Examples ordered model-major: row i * m + j is model i under rotation j.
  model_idx = np.repeat(np.arange(k), m)
  rot_idx = np.tile(np.arange(m), k)
  outs = []
  bs = config.eval.batch_size
  for start in range(0, k * m, bs):
    sl = slice(start, min(start + bs, k * m))
    n = sl.stop - sl.start
    pad = bs - n  # fixed batch shape: one compilation
    vi = np.concatenate([model_idx[sl], np.zeros(pad, int)])
    qi = np.concatenate([quats[rot_idx[sl]], np.tile([[1.0, 0, 0, 0]], (pad, 1))])
    o = jax.device_get(forward(jnp.asarray(volumes[vi]), jnp.asarray(qi, jnp.float32)))
    outs.append({key: v[:n] for key, v in o.items()})
  out = {key: np.concatenate([o[key] for o in outs]) for key in outs[0]}
  ident = np.tile([[1.0, 0, 0, 0]], (bs, 1))
  canon = []
  for start in range(0, k, bs):
    n = min(bs, k - start)
    vi = np.concatenate([np.arange(start, start + n), np.zeros(bs - n, int)])
    canon.append(jax.device_get(forward(jnp.asarray(volumes[vi]),
                                        jnp.asarray(ident, jnp.float32)))["shape_vec"][:n])
  canon_vecs = np.concatenate(canon)

  cats = np.asarray(bank.categories)[model_idx]
  extra = {c.strip() for c in config.eval.symmetric_categories.split(",") if c.strip()}
  model_symmetric = [bank.symmetries[i] is not None or bank.categories[i] in extra for i in range(k)]
  symmetric = np.asarray(model_symmetric)[model_idx]
  errors = np.asarray(geometry.quat_geodesic_deg(jnp.asarray(out["q_pred"]),
                                                 jnp.asarray(quats[rot_idx], jnp.float32)))
  # Front/back confusion (a half turn about the object's up axis, z) is the dominant failure on vehicles and
  # screens whose voxels look alike from both ends; report the error with that one ambiguity forgiven too.
  half_turn_z = jnp.array([0.0, 0.0, 0.0, 1.0], jnp.float32)
  flipped = geometry.quat_multiply(jnp.asarray(quats[rot_idx], jnp.float32), half_turn_z)
  errors_fb = np.minimum(errors, np.asarray(geometry.quat_geodesic_deg(jnp.asarray(out["q_pred"]),
                                                                       flipped)))
  nn_pred = nearest_rows(out["shape_vec"], canon_vecs)

  keys = np.asarray([f"{c}/{i:02d}" for c, i in zip(bank.categories, bank.cad_indices)])
  results = {
      "step": None if step is None else int(step),
      "num_models": int(k), "rotations_per_model": int(m), "n_instances": int(k * m),
      "shape": {
          "classifier": metrics.retrieval_metrics(keys[out["shape_pred"]], keys[model_idx], cats),
          "nearest_neighbour": metrics.retrieval_metrics(keys[nn_pred], keys[model_idx], cats),
      },
      "rotation": {
          "non_symmetric": (metrics.pose_metrics(errors[~symmetric], cats[~symmetric])
                            if (~symmetric).any() else None),
          "symmetric": (metrics.pose_metrics(errors[symmetric], cats[symmetric])
                        if symmetric.any() else None),
          "all": metrics.pose_metrics(errors, cats),
          "non_symmetric_front_back_forgiven": (
              metrics.pose_metrics(errors_fb[~symmetric], cats[~symmetric])
              if (~symmetric).any() else None),
      },
      "disentanglement": {
          "shape_vec": disentanglement(out["shape_vec"].reshape(k, m, -1)),
          "pose_vec": disentanglement(out["pose_vec"].reshape(k, m, -1)),
      },
      "symmetric_models": [str(keys[i]) for i in range(k) if model_symmetric[i]],
  }
  sv, pv = results["disentanglement"]["shape_vec"], results["disentanglement"]["pose_vec"]
  sv["ratio"] = sv["across_rotations"] / max(sv["across_models"], 1e-12)
  pv["ratio"] = pv["across_models"] / max(pv["across_rotations"], 1e-12)
  return results


def summary_markdown(results: dict) -> str:
  """A human-readable summary of Stage I results (Markdown)."""
  lines = [f"# Stage I evaluation (step {results['step']}, {results['num_models']} models x "
           f"{results['rotations_per_model']} held-out rotations)", ""]
  sc, sn = results["shape"]["classifier"], results["shape"]["nearest_neighbour"]
  lines += ["## Shape top-1", "", metrics.markdown_table(
      {"classifier": sc, "nearest neighbour (canonical pose)": sn}, "top1", digits=3), ""]
  for name in ("non_symmetric", "symmetric", "non_symmetric_front_back_forgiven"):
    r = results["rotation"][name]
    if r is None:
      continue
    title = {"non_symmetric": "non-symmetric models", "symmetric": "symmetric models",
             "non_symmetric_front_back_forgiven":
                 "non-symmetric models, a half turn about the up axis forgiven"}[name]
    lines += [f"## Rotation ({title})", "",
              metrics.markdown_table({"MedErr (deg)": r}, "mederr_deg", digits=1), "",
              metrics.markdown_table({"Acc_pi/6": r}, "acc_pi_6", digits=3), "",
              f"pooled: MedErr {r['pooled']['mederr_deg']:.1f} deg, Acc_pi/6 "
              f"{r['pooled']['acc_pi_6']:.3f} over {r['pooled']['n']}", ""]
  d = results["disentanglement"]
  lines += ["## Disentanglement", "",
            f"- shape vector: distance across rotations / across models = {d['shape_vec']['ratio']:.3f}",
            f"- pose vector: distance across models / across rotations = {d['pose_vec']['ratio']:.3f}",
            ""]
  return "\n".join(lines)


def write_results(results: dict, workdir: str) -> str:
  """Writes eval.json and eval.md atomically into `<workdir>/embedder/`; returns the JSON path."""
  out_dir = train_embedder.stage_dir(workdir)
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, "eval.json")
  for name, text in (("eval.json", json.dumps(results, indent=2)),
                     ("eval.md", summary_markdown(results))):
    tmp = os.path.join(out_dir, f".{name}.tmp")
    with open(tmp, "w") as f:
      f.write(text)
    os.replace(tmp, os.path.join(out_dir, name))
  return path
