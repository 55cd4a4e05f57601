"""The trained method as one object: restore Stage I + II, run crops through it, decode the predictions.

Shared by the evaluation (`evaluate.py`) and the user-facing `Predictor` (`predictor.py`), so both decode
exactly the same way:
  * rotation: the arg-max anchor's residual applied to it (`geometry.decode_rotation`), plus the top-k
    anchors with their probabilities, each decoded with its own residual (pose hypotheses: an object
    that looks alike front and back shows two modes);
  * retrieval: the shape classifier's arg-max (the paper) and the nearest neighbour (L2) of the predicted
    shape vector among the database's canonical-pose shape vectors from the frozen embedder;
  * translation: the arg-max cell's centre plus its residual (`geometry.decode_translation`), crop-relative.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from disent_jax import errors
from disent_jax import geometry
from disent_jax import train_lib
from disent_jax.cad import voxel_bank as voxel_bank_lib


@dataclasses.dataclass
class Method:
  """A restored Stage I + II model, ready to predict.

  Attributes:
    config: the configuration the model was trained with.
    regressor: the Stage II module; regressor_variables its params and batch_stats.
    bank: the CAD database's voxel bank (row k = model k of the classifier).
    anchors: (A, 4) rotation anchors.
    grid: the translation anchor grid.
    input_size: crop side the network was trained on.
    database_vectors: (K, S) canonical-pose shape vectors of the database (None without Stage I).
    steps: checkpoint steps used, {'embedder': int | None, 'regressor': int}.
  """
  config: ml_collections.ConfigDict
  regressor: object
  regressor_variables: dict
  bank: voxel_bank_lib.VoxelBank
  anchors: np.ndarray
  grid: geometry.TranslationGrid
  input_size: int
  database_vectors: np.ndarray | None
  steps: dict
  top_k: int = 5

  def __post_init__(self):
    self._predict = jax.jit(functools.partial(
        _predict, apply_fn=self.regressor.apply, grid=self.grid, top_k=self.top_k))
    self._anchors = jnp.asarray(self.anchors, jnp.float32)
    self._db = None if self.database_vectors is None else jnp.asarray(self.database_vectors)

  def predict_normalized(self, images: np.ndarray) -> dict[str, np.ndarray]:
    """Predictions for a batch of normalised crops (B, S, S, 3) (`input_pipeline.normalize_image`).

    Jitted; compiles once per batch shape.

    Returns:
      numpy arrays: 'quaternion' (B, 4), 'rotation' (B, 3, 3), 'anchor_topk' (B, k), 'anchor_probs_topk'
      (B, k), 'quaternion_topk' (B, k, 4), 'model_cls' (B,), 'model_topk' (B, k), 'model_scores_topk'
      (B, k), 'model_nn' (B,) (-1 without database vectors), 'nn_distance' (B,), 'translation' (B, 3)
      crop-relative, 'shape_vec', 'pose_vec'.
    """
    out = self._predict(self.regressor_variables, jnp.asarray(images, jnp.float32), self._anchors,
                        self._db)
    return jax.device_get(out)


def _predict(variables, images, anchors, database, *, apply_fn, grid, top_k):
  out = apply_fn(variables, images, train=False)
  probs = jax.nn.softmax(out["anchor_logits"], axis=-1)
  k = min(top_k, anchors.shape[0])
  p_top, a_top = jax.lax.top_k(probs, k)
  res_top = jnp.take_along_axis(out["residuals"], a_top[..., None], axis=1)  # (B, k, 4)
  q_top = geometry.decode_rotation(a_top, res_top, anchors)
  shape_probs = jax.nn.softmax(out["shape_logits"], axis=-1)
  s_top, m_top = jax.lax.top_k(shape_probs, min(top_k, shape_probs.shape[-1]))
  cell = jnp.argmax(out["cell_logits"], axis=-1)
  cell_res = jnp.take_along_axis(out["cell_residuals"], cell[:, None, None], axis=1)[:, 0]
  translation = geometry.decode_translation(cell, cell_res, grid)
  b = images.shape[0]
  if database is not None:
    d2 = (jnp.sum(out["shape_vec"] ** 2, -1, keepdims=True) - 2.0 * out["shape_vec"] @ database.T
          + jnp.sum(database ** 2, -1)[None])
    model_nn = jnp.argmin(d2, axis=-1)
    nn_dist = jnp.sqrt(jnp.maximum(jnp.min(d2, axis=-1), 0.0))
  else:
    model_nn = jnp.full((b,), -1, jnp.int32)
    nn_dist = jnp.full((b,), jnp.nan, jnp.float32)
  return {"quaternion": q_top[:, 0], "rotation": geometry.quat_to_matrix(q_top[:, 0]),
          "anchor_topk": a_top, "anchor_probs_topk": p_top, "quaternion_topk": q_top,
          "model_cls": m_top[:, 0], "model_topk": m_top, "model_scores_topk": s_top,
          "model_nn": model_nn, "nn_distance": nn_dist, "translation": translation,
          "shape_vec": out["shape_vec"], "pose_vec": out["pose_vec"]}


def database_vectors(embedder, embedder_variables: dict, volumes: np.ndarray,
                     batch_size: int = 256) -> np.ndarray:
  """Canonical-pose (identity rotation) shape vectors (K, S) of the database volumes (K, R, R, R)."""
  fn = jax.jit(lambda v, x: embedder.apply(v, x, train=False)["shape_vec"])
  out = [np.asarray(fn(embedder_variables, jnp.asarray(volumes[i:i + batch_size], jnp.float32)))
         for i in range(0, len(volumes), batch_size)]
  return np.concatenate(out, 0)


def from_setup(config: ml_collections.ConfigDict, s, regressor_state, regressor_step: int) -> Method:
  """A `Method` from a Stage II setup (`train_regressor.Stage2Setup`) and its trained state."""
  db = None
  if s.embedder_variables is not None:
    db = database_vectors(s.stage1.model, s.embedder_variables, s.stage1.bank.volumes)
  variables = {"params": regressor_state.params, "batch_stats": regressor_state.batch_stats}
  return Method(config=config, regressor=s.model, regressor_variables=variables, bank=s.stage1.bank,
                anchors=np.asarray(s.stage1.anchors), grid=s.grid, input_size=s.input_size,
                database_vectors=db, steps={"embedder": s.embedder_step, "regressor": regressor_step})


def restore_regressor(config: ml_collections.ConfigDict, workdir: str, s, step: int | None = None):
  """Restores the workdir's Stage II state (read-only; falls back past unreadable steps with a warning).

  Returns:
    (state, step).
  """
  from disent_jax import train_regressor
  directory = os.path.join(train_regressor.stage_dir(workdir), "checkpoints")
  ckpt = train_lib.Checkpoints(directory, train_regressor.STAGE, read_only=True)
  repl = train_lib.replicated_sharding(s.mesh)
  target = train_lib.abstract_with_sharding(train_regressor.abstract_state(s), repl)
  try:
    if step is None:
      restored = ckpt.restore_latest(target)
      if restored is None:
        raise errors.CheckpointError(f"no Stage II checkpoint in {directory}")
      state, step, _ = restored
    else:
      state, _ = ckpt.restore(step, target)
  finally:
    ckpt.close()
  return state, step


def load(config: ml_collections.ConfigDict | None, workdir: str, *, step: int | None = None) -> Method:
  """Restores the trained method of a workdir (Stage I and II checkpoints).

  Args:
    config: the configuration; None reads the one saved with the latest Stage II checkpoint.
    workdir: the training workdir.
    step: a Stage II step; None for the latest readable one.

  Returns:
    The `Method`.
  """
  from disent_jax import train_regressor
  if config is None:
    config = saved_config(workdir)
  s = train_regressor.setup(config, workdir, need_data=False)
  state, step = restore_regressor(config, workdir, s, step)
  logging.info("restored Stage II step %d (Stage I step %s) from %s", step, s.embedder_step, workdir)
  return from_setup(config, s, state, step)


def _over_defaults(saved: dict) -> ml_collections.ConfigDict:
  """The saved values laid over today's defaults, so a checkpoint written before a field existed loads
  (the new field takes its default, which reproduces the old behaviour by construction)."""
  from configs import default  # pylint: disable=import-outside-toplevel
  config = default.get_config()

  def merge(target: ml_collections.ConfigDict, values: dict) -> None:
    for key, value in values.items():
      if isinstance(value, dict) and key in target and isinstance(target[key], ml_collections.ConfigDict):
        merge(target[key], value)
      elif key in target and isinstance(target[key], tuple) and isinstance(value, list):
        target[key] = tuple(value)  # JSON turned tuples into lists
      else:
        with target.ignore_type():
          target[key] = value
  merge(config, saved)
  return config


def saved_config(workdir: str) -> ml_collections.ConfigDict:
  """The configuration stored with the workdir's latest readable Stage II checkpoint."""
  from disent_jax import train_regressor
  directory = os.path.join(train_regressor.stage_dir(workdir), "checkpoints")
  ckpt = train_lib.Checkpoints(directory, train_regressor.STAGE, read_only=True)
  try:
    for step in reversed(ckpt.all_steps()):
      try:
        meta = ckpt.read_meta(step)
      except Exception as e:  # noqa: BLE001 -- an unreadable step: try the previous one
        logging.warning("checkpoint step %d in %s is unreadable (%s); trying the previous step",
                        step, directory, e)
        continue
      return _over_defaults(meta["config"])
  finally:
    ckpt.close()
  raise errors.CheckpointError(f"no readable Stage II checkpoint in {directory}")
