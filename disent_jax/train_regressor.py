"""Stage II: train the image regressor into the frozen Stage I embedding (paper 3.3, 3.4).

`train_and_evaluate(config, workdir)` is the entry point (also callable from a notebook). It needs the
workdir's Stage I checkpoint (unless `config.regressor.use_embedding` is False: the single-stage "w/o
embedding" ablation), builds or reuses the image dataset (`images.source`), and trains with one jitted,
state-donating step per batch:
  * targets on device, inside the step: the ground-truth model's voxels from the bank, rotated to the
    ground-truth rotation (`cad.rotate.rotate_voxels`), through the frozen embedder -> shape and pose
    vectors; rotation anchor + residual by matmul; translation cell + normalised residual. No precomputed
    table that could go stale when Stage I is retrained.
  * losses: `losses.stage2_loss` (L1 to the embedding, shape CE, rotation and translation anchor+residual).
Checkpoints go to `<workdir>/regressor/checkpoints` with the input iterator's state, so a resumed run sees
exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from disent_jax import config_check
from disent_jax import errors
from disent_jax import geometry
from disent_jax import input_pipeline
from disent_jax import losses
from disent_jax import plots
from disent_jax import train_embedder
from disent_jax import train_lib
from disent_jax.cad import rotate
from disent_jax.datasets import synthetic
from disent_jax.models import regressor as regressor_lib

STAGE = "regressor"
# Batch keys the step reads (the rest of a pipeline batch stays on the host).
STEP_KEYS = ("image", "quaternion", "translation", "model_index", "mask")


def stage_dir(workdir: str) -> str:
  return os.path.join(workdir, STAGE)


def translation_grid(config: ml_collections.ConfigDict) -> geometry.TranslationGrid:
  t = config.translation
  try:
    return geometry.TranslationGrid(tuple(map(float, t.lower)), tuple(map(float, t.upper)),
                                    tuple(map(int, t.cells)))
  except ValueError as e:
    raise errors.ConfigError(f"config.translation: {e}") from e


def synthetic_settings(config: ml_collections.ConfigDict) -> synthetic.SyntheticSettings:
  """The synthetic dataset of `config.images` (renders of `config.data.cad_source`)."""
  i = config.images
  return synthetic.SyntheticSettings(
      cad_source=config.data.cad_source, image_size=i.image_size, crop_size=i.crop_size,
      num_train=i.num_train, num_validation=i.num_validation, num_test=i.num_test, seed=i.seed,
      backend=i.render_backend)


def image_dataset_dir(config: ml_collections.ConfigDict, workdir: str) -> str:
  """The finished image dataset directory of `config.images.source` (rendering it once if synthetic)."""
  source = config.images.source
  if source == "synthetic":
    data_dir = config.images.data_dir or os.path.join(workdir, "data")
    return synthetic.build_synthetic(data_dir, synthetic_settings(config),
                                     num_workers=config.images.render_workers)
  if source.startswith("dir:"):
    path = source[4:]
    if not os.path.isfile(os.path.join(path, "dataset_info.json")):
      raise errors.ConfigError(f"images.source {source!r}: {path} is not a finished dataset directory "
                               "(no dataset_info.json); build one with launch.prepare_synthetic or "
                               "launch.prepare_pascal3d")
    return path
  raise errors.ConfigError(f"unknown images.source {source!r} (use 'synthetic' or 'dir:/path')")


class BankIndex:
  """(category, cad_index) -> row of the voxel bank; picklable for grain worker processes.

  strict=False maps models that are not in the bank to -1 (evaluation on renders of another CAD database:
  pose is still scored, retrieval cannot be).
  """

  def __init__(self, categories, cad_indices, strict: bool = True):
    self.rows = {(c, int(i)): k for k, (c, i) in enumerate(zip(categories, cad_indices))}
    self.strict = strict

  def __call__(self, category: str, cad_index: int) -> int:
    try:
      return self.rows[(category, int(cad_index))]
    except KeyError:
      if not self.strict:
        return -1
      raise errors.DisentError(
          f"the image dataset shows {category} CAD model {cad_index}, which is not in the voxel bank "
          "(the images and config.data.cad_source must describe the same CAD database)") from None


def create_model(config: ml_collections.ConfigDict, num_models: int, num_anchors: int, num_cells: int,
                 bn_axis_name: str | None = None) -> regressor_lib.ImageRegressor:
  """The Stage II regressor of `config.regressor` (embedding sizes and rotation head from `config.model`)."""
  r, m = config.regressor, config.model
  # r.get: configs written before backbone_layout existed.
  return regressor_lib.ImageRegressor(
      backbone=r.backbone, num_models=num_models, num_anchors=num_anchors, num_cells=num_cells,
      shape_dim=m.shape_dim, pose_dim=m.pose_dim, disentangle=m.disentangle, head_hidden=m.head_hidden,
      translation_hidden=r.translation_hidden, backbone_width=r.backbone_width,
      backbone_stages=tuple(r.backbone_stages), backbone_layout=r.get("backbone_layout", "auto"),
      bn_axis_name=bn_axis_name, dtype=jnp.dtype(r.dtype))


def loss_kwargs(config: ml_collections.ConfigDict) -> dict:
  r = config.regressor
  return dict(use_embedding=r.use_embedding, embedding_weight=r.embedding_weight,
              shape_weight=r.shape_weight, anchor_weight=r.anchor_weight,
              residual_weight=r.residual_weight, cell_weight=r.cell_weight,
              cell_residual_weight=r.cell_residual_weight, huber_delta=config.loss.huber_delta,
              soft_sigma_deg=r.anchor_soft_sigma_deg, residual_radius_deg=r.residual_radius_deg)


@dataclasses.dataclass
class Stage2Setup:
  """Everything the Stage II loop and the evaluation need, built once."""
  stage1: train_embedder.Stage1Setup
  embedder_variables: dict | None  # frozen Stage I variables (None for the "w/o embedding" ablation)
  embedder_step: int | None
  model: regressor_lib.ImageRegressor
  grid: geometry.TranslationGrid
  mesh: jax.sharding.Mesh
  tx: optax.GradientTransformation
  init_key: jax.Array
  data_dir: str | None
  input_size: int


def setup(config: ml_collections.ConfigDict, workdir: str, *, need_data: bool = True) -> Stage2Setup:
  """Restores Stage I, builds the image dataset, model, mesh and optimiser; checks the config first."""
  t = config.regressor_train
  mesh = train_lib.make_mesh(t.num_devices)
  train_lib.check_batch_divisible(t.batch_size, mesh.size, "regressor_train.batch_size")
  grid = translation_grid(config)
  if config.regressor.use_embedding:
    try:
      s1, state1, step1 = train_embedder.restore_state(config, workdir)
    except errors.CheckpointError as e:
      raise errors.CheckpointError(
          f"Stage II needs the trained Stage I of this workdir ({e}); train it first "
          "(config.stage='embedder', or 'all' for both stages), or set regressor.use_embedding=False "
          "for the single-stage ablation") from e
    embedder_vars = {"params": state1.params, "batch_stats": state1.batch_stats}
  else:
    s1, embedder_vars, step1 = train_embedder.setup(config, workdir), None, None
  data_dir = image_dataset_dir(config, workdir) if need_data else None
  input_size = config.images.input_size or config.images.crop_size
  if data_dir is not None and not config.images.input_size:
    input_size = _stored_crop_size(data_dir)
  model = create_model(config, s1.bank.num_models, len(s1.anchors), grid.num_anchors)
  tx = optax.adam(train_lib.learning_rate_schedule(t))
  init_key = jax.random.fold_in(jax.random.key(config.seed), 2)  # distinct from Stage I's keys
  return Stage2Setup(stage1=s1, embedder_variables=embedder_vars, embedder_step=step1, model=model,
                     grid=grid, mesh=mesh, tx=tx, init_key=init_key, data_dir=data_dir,
                     input_size=input_size)


def _stored_crop_size(data_dir: str) -> int:
  source = input_pipeline.open_source(data_dir, "train" if _has_split(data_dir, "train") else "test")
  return int(input_pipeline._decode_png(source[0]["crop"]).shape[0])  # pylint: disable=protected-access


def _has_split(data_dir: str, split: str) -> bool:
  try:
    return len(input_pipeline.open_source(data_dir, split)) > 0
  except Exception:  # noqa: BLE001 -- a missing split
    return False


def create_train_state(rng: jax.Array, model: regressor_lib.ImageRegressor, input_size: int,
                       tx: optax.GradientTransformation) -> train_lib.TrainState:
  variables = model.init(rng, jnp.zeros((1, input_size, input_size, 3), jnp.float32), train=False)
  return train_lib.TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx,
                                     batch_stats=variables.get("batch_stats", {}))


def initial_state(config: ml_collections.ConfigDict, s: Stage2Setup,
                  sharding: jax.sharding.Sharding) -> train_lib.TrainState:
  """A fresh state: random init, then ImageNet backbone weights and Stage I heads when configured."""
  state = jax.jit(functools.partial(create_train_state, model=s.model, input_size=s.input_size,
                                    tx=s.tx), out_shardings=sharding)(s.init_key)
  params, batch_stats = state.params, state.batch_stats
  r = config.regressor
  if r.imagenet_weights:
    from disent_jax.models import torchvision_import
    backbone = torchvision_import.load_imagenet_backbone(r.imagenet_weights, r.backbone)
    merged = torchvision_import.merge_backbone({"params": params, "batch_stats": batch_stats}, backbone,
                                               prefix="backbone")
    params, batch_stats = merged["params"], merged["batch_stats"]
    logging.info("Stage II backbone initialised from ImageNet weights %s", r.imagenet_weights)
  else:
    logging.warning("no regressor.imagenet_weights given: the %s backbone trains from scratch "
                    "(the paper starts from ImageNet weights)", r.backbone)
  if r.init_heads_from_embedder and s.embedder_variables is not None:
    params = dict(params)
    for head in ("shape_head", "rotation_head"):
      src = s.embedder_variables["params"][head]
      if jax.tree.map(jnp.shape, src) != jax.tree.map(jnp.shape, params[head]):
        raise errors.ConfigError(f"regressor.init_heads_from_embedder: Stage I's {head} has another shape")
      params[head] = src
    logging.info("Stage II shape and rotation heads initialised from Stage I's")
  params, batch_stats = jax.device_put((params, batch_stats), sharding)
  # A fresh optimiser state for the final parameters (Adam's moments are zeros either way). Every leaf,
  # the step counters included, is put on the step's sharding: a counter created on the host has another
  # type than the step's output, and the second step would compile the whole step again (~20 s on a CPU).
  state = train_lib.TrainState.create(apply_fn=s.model.apply, params=params, tx=s.tx,
                                      batch_stats=batch_stats)
  return jax.device_put(state, sharding)


def abstract_state(s: Stage2Setup) -> Any:
  return jax.eval_shape(functools.partial(create_train_state, model=s.model, input_size=s.input_size,
                                          tx=s.tx), s.init_key)


def make_targets(batch: dict, bank: jax.Array, anchors: jax.Array, grid: geometry.TranslationGrid,
                 embedder_apply, embedder_variables: dict | None) -> dict:
  """Labels of a batch, on device: rotation anchor/residual, translation cell/residual, embedding targets.

  Args:
    batch: 'quaternion' (B, 4), 'translation' (B, 3), 'model_index' (B,), 'mask' (B,).
    bank: (K, R, R, R) voxel bank.
    anchors: (A, 4) rotation anchors.
    grid: the translation anchor grid.
    embedder_apply: the frozen embedder's `apply`.
    embedder_variables: its variables, or None ("w/o embedding": zero targets of width 1, which the loss
      does not use; its logged 'embedding_l1' is then just the vectors' mean magnitude).

  Returns:
    The label dict `losses.stage2_loss` reads.
  """
  quat = batch["quaternion"]
  model = batch["model_index"]
  anchor, residual = geometry.encode_rotation(quat, anchors)
  cell, cell_residual, _ = geometry.encode_translation(batch["translation"], grid)
  if embedder_variables is not None:
    vols = rotate.rotate_voxels(bank[model].astype(jnp.float32), quat)
    out = embedder_apply(embedder_variables, vols, train=False)
    target_shape = jax.lax.stop_gradient(out["shape_vec"])
    target_pose = jax.lax.stop_gradient(out["pose_vec"])
  else:
    target_shape = target_pose = jnp.zeros((quat.shape[0], 1), jnp.float32)
  return {"model": model, "quat": quat, "anchor": anchor, "residual": residual, "cell": cell,
          "cell_residual": cell_residual, "target_shape": target_shape, "target_pose": target_pose,
          "mask": batch["mask"]}


def _grads_and_metrics(state, batch, bank, anchors, embedder_variables, *, grid, embedder_apply,
                       loss_kw):
  labels = make_targets(batch, bank, anchors, grid, embedder_apply, embedder_variables)

  def objective(params):
    outputs, new_vars = state.apply_fn({"params": params, "batch_stats": state.batch_stats},
                                       batch["image"], train=True, mutable=["batch_stats"])
    loss, aux = losses.stage2_loss(outputs, labels, anchors=anchors, **loss_kw)
    return loss, (aux, new_vars.get("batch_stats", {}))
  (_, (aux, batch_stats)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
  return grads, aux, batch_stats


def train_step(state: train_lib.TrainState, batch: dict, bank: jax.Array, anchors: jax.Array,
               embedder_variables: dict | None, *, grid: geometry.TranslationGrid, embedder_apply,
               loss_kw: dict):
  """One Stage II update (pure; jit it with the state donated).

  Args:
    state: the regressor's train state.
    batch: `STEP_KEYS` arrays, batch-sharded.
    bank: (K, R, R, R) voxel bank, replicated.
    anchors: (A, 4) rotation anchors.
    embedder_variables: the frozen Stage I variables (None for the "w/o embedding" ablation).
    grid, embedder_apply, loss_kw: static settings.

  Returns:
    (new state, dict of scalar metrics incl. 'finite').
  """
  grads, aux, batch_stats = _grads_and_metrics(state, batch, bank, anchors, embedder_variables,
                                               grid=grid, embedder_apply=embedder_apply, loss_kw=loss_kw)
  return train_lib.apply_gradients(state, grads, aux, batch_stats)


def pmap_train_step(state, batch, bank, anchors, embedder_variables, *, grid, embedder_apply, loss_kw,
                    axis_name: str = "batch"):
  """`train_step` for `jax.pmap`: per-device batch slices, gradients and metrics averaged with pmean."""
  grads, aux, batch_stats = _grads_and_metrics(state, batch, bank, anchors, embedder_variables,
                                               grid=grid, embedder_apply=embedder_apply, loss_kw=loss_kw)
  grads = jax.lax.pmean(grads, axis_name)
  aux = jax.lax.pmean(aux, axis_name)
  return train_lib.apply_gradients(state, grads, aux, batch_stats)


def make_train_iterator(config: ml_collections.ConfigDict, s: Stage2Setup) -> input_pipeline.BatchIterator:
  """The shuffled, augmented, resumable training batches of this process."""
  t = config.regressor_train
  return input_pipeline.make_pipeline(
      s.data_dir, "train", batch_size=t.batch_size // jax.process_count(), image_size=s.input_size,
      seed=config.seed % 2**32, shuffle=True, augment=bool(config.images.augment),
      worker_count=config.images.loader_workers, cache_decoded=config.images.cache_decoded,
      model_index_fn=BankIndex(s.stage1.bank.categories, s.stage1.bank.cad_indices))


def _compile_step(config, s: Stage2Setup, state, repl, batch_sharding):
  """(step_fn(state, host batch) -> (state, metrics), state in the matching layout)."""
  kw = dict(grid=s.grid, embedder_apply=s.stage1.model.apply, loss_kw=loss_kwargs(config))
  parallel = config.regressor_train.parallel
  if parallel == "jit":
    fn = jax.jit(functools.partial(train_step, **kw),
                 in_shardings=(repl, batch_sharding, repl, repl, repl), out_shardings=(repl, repl),
                 donate_argnums=(0,))

    def step_fn(st, host_batch, bank, anchors, emb):
      batch = {k: jax.make_array_from_process_local_data(batch_sharding, host_batch[k])
               for k in STEP_KEYS}
      return fn(st, batch, bank, anchors, emb)
    step_fn.jitted = fn  # for tests: fn._cache_size() counts its compilations
    return step_fn, state
  if parallel == "pmap":
    devices = list(s.mesh.devices.flat)
    n = len(devices)
    model = create_model(config, s.stage1.bank.num_models, len(s.stage1.anchors), s.grid.num_anchors,
                         bn_axis_name="batch")
    state = flax.jax_utils.replicate(state.replace(apply_fn=model.apply), devices=devices)
    pmapped = jax.pmap(functools.partial(pmap_train_step, **kw), axis_name="batch",
                       in_axes=(0, 0, None, None, None), donate_argnums=(0,), devices=devices)

    def step_fn(st, host_batch, bank, anchors, emb):
      batch = {k: np.reshape(host_batch[k], (n, -1) + host_batch[k].shape[1:]) for k in STEP_KEYS}
      st, m = pmapped(st, batch, bank, anchors, emb)
      return st, jax.tree.map(lambda x: x[0], m)
    return step_fn, state
  raise errors.ConfigError(f"unknown regressor_train.parallel {parallel!r} (use 'jit' or 'pmap')")


def _check_resume_meta(old: dict, new: dict, directory: str) -> None:
  for key in ("bank_fingerprint", "num_models", "num_anchors", "num_cells", "dataset", "input_size"):
    if key in old and old[key] != new[key]:
      raise errors.CheckpointError(
          f"the checkpoints in {directory} were trained with {key}={old[key]!r}, but this run has "
          f"{new[key]!r}; use another workdir")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains Stage II (resuming from `workdir` when possible), then evaluates the whole method.

  Args:
    config: see configs/default.py (`regressor`, `regressor_train`, `images`, `translation`).
    workdir: holds Stage I in `<workdir>/embedder`; Stage II writes `<workdir>/regressor/`.

  Returns:
    The evaluation results (also written to `<workdir>/results.{json,md}`), plus a 'train' entry.
  """
  config_check.validate(config, stage="regressor")  # before any bank, render or compile
  s = setup(config, workdir)
  t = config.regressor_train
  out_dir = stage_dir(workdir)
  os.makedirs(out_dir, exist_ok=True)
  repl = train_lib.replicated_sharding(s.mesh)
  batch_sharding = train_lib.data_sharding(s.mesh)
  ckpt = train_lib.Checkpoints(os.path.join(out_dir, "checkpoints"), STAGE,
                               save_every=t.checkpoint_every, keep=t.keep_checkpoints)
  it = make_train_iterator(config, s)
  meta = {"config": config.to_dict(), "bank_fingerprint": s.stage1.bank.fingerprint,
          "num_models": s.stage1.bank.num_models, "num_anchors": int(len(s.stage1.anchors)),
          "num_cells": s.grid.num_anchors, "dataset": it.fingerprint["dataset"],
          "input_size": s.input_size, "embedder_step": s.embedder_step}

  restored = ckpt.restore_latest(train_lib.abstract_with_sharding(abstract_state(s), repl))
  if restored is not None:
    state, start_step, old_meta = restored
    _check_resume_meta(old_meta, meta, ckpt.directory)
    if "data_state" in old_meta:
      it.set_state(old_meta["data_state"])
    if old_meta.get("embedder_step") not in (None, s.embedder_step):
      logging.warning("Stage II resumes on Stage I step %s, but it started on step %s",
                      s.embedder_step, old_meta.get("embedder_step"))
    logging.info("resuming Stage II from step %d in %s", start_step, ckpt.directory)
  else:
    state = initial_state(config, s, repl)
    start_step = 0
  logging.info("Stage II: %s backbone, %d px crops, %s parameters, %d devices (%s), images from %s",
               config.regressor.backbone, s.input_size, f"{train_lib.param_count(state.params):,}",
               s.mesh.size, t.parallel, s.data_dir)

  bank = jax.device_put(jnp.asarray(s.stage1.bank.volumes), repl)
  anchors = jax.device_put(jnp.asarray(s.stage1.anchors, jnp.float32), repl)
  emb = jax.device_put(s.embedder_variables, repl) if s.embedder_variables is not None else None
  step_fn, state = _compile_step(config, s, state, repl, batch_sharding)
  unrep = ((lambda st: flax.jax_utils.unreplicate(st)) if t.parallel == "pmap" else (lambda st: st))

  writer = train_lib.MetricWriter(os.path.join(out_dir, "tb"))
  t0 = time.perf_counter()
  try:
    state, step, stopped = train_lib.train_loop(
        step_fn=lambda st, _: step_fn(st, next(it), bank, anchors, emb),
        state=state, start_step=start_step, num_steps=t.num_steps, ckpt=ckpt, writer=writer,
        batch_size=t.batch_size, log_every=t.log_every, lr_fn=train_lib.learning_rate_schedule(t),
        desc="Stage II", meta_fn=lambda _: dict(meta, data_state=it.get_state()), to_save=unrep,
        postfix={"loss": "loss", "shape": "shape_acc", "anchor": "anchor_acc", "cell": "cell_acc"})
  finally:
    it.close()
    ckpt.close()
    writer.close()
  train_time = time.perf_counter() - t0
  if jax.process_index() == 0 and step > start_step:
    try:
      plots.plot_learning_curve(os.path.join(out_dir, "tb", "metrics.jsonl"),
                                os.path.join(out_dir, "learning_curve.png"), t.batch_size,
                                keys=("loss", "shape_acc", "anchor_acc", "cell_acc"))
    except (OSError, ValueError, TypeError) as e:  # a figure must never cost the run its evaluation
      logging.warning("could not plot the learning curve: %s", e)
  if stopped:
    return {"stopped_at_step": step}
  logging.info("Stage II trained %d steps in %.1f s", step - start_step, train_time)
  train_info = {"steps": step, "steps_this_run": step - start_step, "seconds_this_run": train_time,
                "images_per_s": (step - start_step) * t.batch_size / max(train_time, 1e-9)}
  if not config.evaluation.after_training:
    return {"train": train_info}
  from disent_jax import evaluate  # the evaluation module imports this one
  results = evaluate.evaluate(config, workdir, setup_=s, regressor_state=unrep(state), regressor_step=step)
  results["train"] = train_info
  if jax.process_index() == 0:
    evaluate.write_report(results, workdir, config)
  return results
