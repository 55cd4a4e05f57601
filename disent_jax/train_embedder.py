"""Stage I: train the disentangled shape/pose embedding on voxels rotated on the fly (paper 3.2, 3.4).

`train_and_evaluate(config, workdir)` is the entry point (also callable from a notebook). It builds or
reuses the voxel bank, creates the model and Adam optimiser, resumes from `<workdir>/embedder/checkpoints`
when checkpoints exist, runs one jitted, state-donating step per batch (examples generated on device), logs
TensorBoard scalars and a progress bar, saves periodically and on SIGTERM, then evaluates the embedding.
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
from disent_jax import losses
from disent_jax import plots
from disent_jax import stage1_data
from disent_jax import train_lib
from disent_jax.cad import collections as cad_collections
from disent_jax.cad import voxel_bank as voxel_bank_lib
from disent_jax.models import embedder as embedder_lib

STAGE = "embedder"


def stage_dir(workdir: str) -> str:
  return os.path.join(workdir, STAGE)


def load_voxel_bank(config: ml_collections.ConfigDict, workdir: str) -> voxel_bank_lib.VoxelBank:
  """Builds (or reuses from the cache) the voxel bank of `config.data.cad_source`."""
  cache_dir = config.data.cache_dir or os.path.join(workdir, "cache")
  models = cad_collections.load_collection(config.data.cad_source,
                                           skip_bad=config.data.skip_bad_files)
  return voxel_bank_lib.build_voxel_bank(models, config.data.resolution, cache_dir,
                                         fill=config.data.fill)


def create_model(config: ml_collections.ConfigDict, num_models: int, num_anchors: int,
                 bn_axis_name: str | None = None) -> embedder_lib.VoxelEmbedder:
  """The Stage I embedder described by `config.model`."""
  m = config.model
  return embedder_lib.VoxelEmbedder(
      num_models=num_models, num_anchors=num_anchors, shape_dim=m.shape_dim, pose_dim=m.pose_dim,
      conv_features=tuple(m.conv_features), disentangle=m.disentangle, norm=m.norm,
      embedding_activation=m.embedding_activation, head_hidden=m.head_hidden,
      bn_axis_name=bn_axis_name, conv_impl=m.conv_impl, input_pool=m.input_pool,
      layout=m.get("layout", "auto"),  # .get: configs written before the key existed
      dtype=jnp.dtype(m.dtype))


def learning_rate_fn(config: ml_collections.ConfigDict) -> optax.Schedule:
  return train_lib.learning_rate_schedule(config.train)


def create_train_state(rng: jax.Array, model: embedder_lib.VoxelEmbedder, resolution: int,
                       tx: optax.GradientTransformation) -> train_lib.TrainState:
  variables = model.init(rng, jnp.zeros((1, resolution, resolution, resolution), jnp.float32),
                         train=False)
  return train_lib.TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx,
                                     batch_stats=variables.get("batch_stats", {}))


def _loss_kwargs(config: ml_collections.ConfigDict) -> dict:
  l = config.loss
  return dict(shape_loss=l.shape, shape_weight=l.shape_weight, anchor_weight=l.anchor_weight,
              residual_weight=l.residual_weight, huber_delta=l.huber_delta,
              triplet_margin=l.triplet_margin, soft_sigma_deg=l.anchor_soft_sigma_deg,
              residual_radius_deg=l.residual_radius_deg, invariance_weight=l.shape_invariance_weight)


def _grads_and_metrics(state: train_lib.TrainState, batch: dict, anchors: jax.Array,
                       loss_kwargs: dict):
  def objective(params):
    variables = {"params": params, "batch_stats": state.batch_stats}
    outputs, new_vars = state.apply_fn(variables, batch["volume"], train=True,
                                       mutable=["batch_stats"])
    # Looked up at call time (not bound at import) so tests can substitute the loss.
    loss, aux = losses.stage1_loss(outputs, batch, anchors=anchors, **loss_kwargs)
    return loss, (aux, new_vars.get("batch_stats", {}))
  (_, (aux, batch_stats)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
  return grads, aux, batch_stats


def rotation_sampler(config: ml_collections.ConfigDict) -> str:
  """The rotation's trilinear sampler for this config (`rotate.rotate_voxels`; same values either way).

  'gather' where the rotated volume goes straight into the first convolution on XLA:CPU (input_pool 1):
  the Stage I step at 32^3, batch 64, went from 735 to 642 ms with it and an im2col first convolution
  (2026-11-25, 2 cores, interleaved); with the channels-first features 534 against 1029 ms. With
  input_pool > 1 the box filter's matmul reads the volume once and map_coordinates' fused loop is cheaper
  (33 vs 46 ms per step for the CPU recipe's network, batch 32).
  """
  if config.model.input_pool == 1 and jax.default_backend() == "cpu":
    return "gather"
  return "map_coordinates"


def train_step(state: train_lib.TrainState, key: jax.Array, volumes_bank: jax.Array,
               anchors: jax.Array, *, batch_size: int, loss_kwargs: dict,
               batch_sharding: jax.sharding.Sharding | None = None, sampler: str = "map_coordinates"):
  """One Stage I update (pure): sample a batch on device, rotate, label, step Adam.

  Args:
    state: the train state (donated by the caller's jit).
    key: this step's key (`fold_in(loop_key, step)`), so a resumed run sees the same examples.
    volumes_bank: (K, R, R, R) database volumes, replicated.
    anchors: (A, 4) rotation anchors.
    batch_size: global batch size.
    loss_kwargs: `losses.stage1_loss` settings.
    batch_sharding: the data-parallel sharding the generated batch is constrained to.
    sampler: the rotation's trilinear sampler (`rotation_sampler`).

  Returns:
    (new state, dict of scalar metrics incl. 'finite', False when loss or gradients had NaN/inf).
  """
  paired = loss_kwargs["invariance_weight"] > 0
  models, quats = stage1_data.sample_labels(key, volumes_bank.shape[0], batch_size, paired)
  if batch_sharding is not None:
    models, quats = jax.lax.with_sharding_constraint((models, quats), batch_sharding)
  batch = stage1_data.make_examples(volumes_bank, anchors, models, quats, sampler)
  grads, aux, batch_stats = _grads_and_metrics(state, batch, anchors, loss_kwargs)
  return train_lib.apply_gradients(state, grads, aux, batch_stats)


def pmap_train_step(state, key, volumes_bank, anchors, *, batch_size: int, num_devices: int,
                    loss_kwargs: dict, axis_name: str = "batch", sampler: str = "map_coordinates"):
  """The same update as `train_step` for `jax.pmap` (in maintenance mode in JAX; `jit` is preferred).

  Each device draws the global batch's labels from the same key, keeps its slice, and gradients and
  metrics are averaged with `pmean`; BatchNorm statistics are averaged by the model's `bn_axis_name`.
  """
  index = jax.lax.axis_index(axis_name)
  batch = stage1_data.sample_batch(key, volumes_bank, anchors, batch_size, shard=(index, num_devices),
                                   paired=loss_kwargs["invariance_weight"] > 0, sampler=sampler)
  grads, aux, batch_stats = _grads_and_metrics(state, batch, anchors, loss_kwargs)
  grads = jax.lax.pmean(grads, axis_name)
  aux = jax.lax.pmean(aux, axis_name)
  return train_lib.apply_gradients(state, grads, aux, batch_stats)


@dataclasses.dataclass
class Stage1Setup:
  """Everything the loop and the evaluation need, built once."""
  bank: voxel_bank_lib.VoxelBank
  anchors: np.ndarray
  model: embedder_lib.VoxelEmbedder
  mesh: jax.sharding.Mesh
  tx: optax.GradientTransformation
  init_key: jax.Array
  loop_key: jax.Array


def setup(config: ml_collections.ConfigDict, workdir: str) -> Stage1Setup:
  """Builds the bank, anchors, model, mesh and optimiser; checks the config against the devices."""
  mesh = train_lib.make_mesh(config.train.num_devices)
  train_lib.check_batch_divisible(config.train.batch_size, mesh.size)
  if config.loss.shape_invariance_weight > 0 and (config.train.batch_size // mesh.size) % 2:
    raise errors.ConfigError(
        f"loss.shape_invariance_weight > 0 draws models in pairs: train.batch_size "
        f"({config.train.batch_size}) / devices ({mesh.size}) must be even")
  bank = load_voxel_bank(config, workdir)
  anchors = geometry.rotation_anchors(config.anchors.n)
  model = create_model(config, bank.num_models, len(anchors))
  tx = optax.adam(learning_rate_fn(config))
  root = jax.random.key(config.seed)
  init_key, loop_key = jax.random.split(root)
  return Stage1Setup(bank=bank, anchors=anchors, model=model, mesh=mesh, tx=tx, init_key=init_key,
                     loop_key=loop_key)


def abstract_state(s: Stage1Setup, config: ml_collections.ConfigDict) -> Any:
  return jax.eval_shape(functools.partial(create_train_state, model=s.model,
                                          resolution=config.data.resolution, tx=s.tx), s.init_key)


def restore_state(config: ml_collections.ConfigDict, workdir: str, s: Stage1Setup | None = None,
                  step: int | None = None):
  """Restores a Stage I state for evaluation or Stage II (read-only, single-device or replicated).

  Returns:
    (setup, state, step).
  """
  s = s or setup(config, workdir)
  ckpt = train_lib.Checkpoints(os.path.join(stage_dir(workdir), "checkpoints"), STAGE, read_only=True)
  target = train_lib.abstract_with_sharding(abstract_state(s, config),
                                            train_lib.replicated_sharding(s.mesh))
  try:
    if step is None:
      restored = ckpt.restore_latest(target)
    else:
      state, meta = ckpt.restore(step, target)
      restored = (state, step, meta)
  finally:
    ckpt.close()
  if restored is None:
    raise errors.CheckpointError(f"no Stage I checkpoint in {stage_dir(workdir)}")
  state, step, meta = restored
  if meta.get("bank_fingerprint") not in (None, s.bank.fingerprint):
    logging.warning("the Stage I checkpoint was trained on another voxel bank (fingerprint %s, now %s)",
                    meta.get("bank_fingerprint"), s.bank.fingerprint)
  return s, state, step


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains Stage I (resuming from `workdir` when possible), then evaluates it.

  Args:
    config: see configs/default.py.
    workdir: output folder; `<workdir>/embedder/` receives checkpoints, TensorBoard logs and eval results.

  Returns:
    The evaluation results dict (also written to `<workdir>/embedder/eval.json`).
  """
  config_check.validate(config, stage="embedder")  # before any bank, render or compile
  from disent_jax import eval_embedder  # the evaluation module imports this one
  s = setup(config, workdir)
  out_dir = stage_dir(workdir)
  os.makedirs(out_dir, exist_ok=True)
  repl = train_lib.replicated_sharding(s.mesh)
  batch_sharding = train_lib.data_sharding(s.mesh)
  ckpt = train_lib.Checkpoints(os.path.join(out_dir, "checkpoints"), STAGE,
                               save_every=config.train.checkpoint_every,
                               keep=config.train.keep_checkpoints)
  meta = {"config": config.to_dict(), "bank_fingerprint": s.bank.fingerprint,
          "num_models": s.bank.num_models, "num_anchors": int(len(s.anchors))}

  abstract = train_lib.abstract_with_sharding(abstract_state(s, config), repl)
  restored = ckpt.restore_latest(abstract)
  if restored is not None:
    state, start_step, old_meta = restored
    _check_resume_meta(old_meta, meta, ckpt.directory)
    logging.info("resuming Stage I from step %d in %s", start_step, ckpt.directory)
  else:
    state = jax.jit(functools.partial(create_train_state, model=s.model,
                                      resolution=config.data.resolution, tx=s.tx),
                    out_shardings=repl)(s.init_key)
    start_step = 0
  logging.info("Stage I: %d models, %d anchors, %s parameters, %d devices (%s)", s.bank.num_models,
               len(s.anchors), f"{train_lib.param_count(state.params):,}", s.mesh.size,
               config.train.parallel)

  bank = jax.device_put(jnp.asarray(s.bank.volumes), repl)
  anchors = jax.device_put(jnp.asarray(s.anchors, jnp.float32), repl)
  step_fn, state = _compile_step(config, s, state, repl, batch_sharding)

  writer = train_lib.MetricWriter(os.path.join(out_dir, "tb"))
  t0 = time.perf_counter()
  state, step, stopped = train_lib.train_loop(
      step_fn=lambda st, i: step_fn(st, jax.random.fold_in(s.loop_key, i), bank, anchors),
      state=state, start_step=start_step, num_steps=config.train.num_steps, ckpt=ckpt, writer=writer,
      batch_size=config.train.batch_size, log_every=config.train.log_every,
      lr_fn=learning_rate_fn(config), desc="Stage I", meta_fn=lambda _: meta,
      to_save=lambda st: _unreplicate(st, config),
      postfix={"loss": "loss", "shape": "shape_acc", "anchor": "anchor_acc"})
  ckpt.close()
  writer.close()
  if jax.process_index() == 0 and step > start_step:
    try:
      plots.plot_learning_curve(os.path.join(out_dir, "tb", "metrics.jsonl"),
                                os.path.join(out_dir, "learning_curve.png"), config.train.batch_size)
    except (OSError, ValueError) as e:  # a figure must never cost the run its evaluation
      logging.warning("could not plot the learning curve: %s", e)
  train_time = time.perf_counter() - t0
  if stopped:
    return {"stopped_at_step": step}
  logging.info("Stage I trained %d steps in %.1f s", step - start_step, train_time)
  results = (eval_embedder.evaluate(config, workdir, setup_=s, state=_unreplicate(state, config),
                                    step=step) if config.eval.after_training else {})
  results["train"] = {"steps": step, "steps_this_run": step - start_step,
                      "seconds_this_run": train_time,
                      "samples_per_s": (step - start_step) * config.train.batch_size / max(train_time, 1e-9)}
  if config.eval.after_training and jax.process_index() == 0:
    eval_embedder.write_results(results, workdir)
  return results


def _check_resume_meta(old: dict, new: dict, directory: str) -> None:
  """Refuses to continue a run on another voxel bank or another anchor/model count."""
  for key in ("bank_fingerprint", "num_models", "num_anchors"):
    if key in old and old[key] != new[key]:
      raise errors.CheckpointError(
          f"the checkpoints in {directory} were trained with {key}={old[key]!r}, but this run has "
          f"{new[key]!r} (another CAD source, resolution or anchor grid); use another workdir")


def _compile_step(config, s: Stage1Setup, state, repl, batch_sharding):
  """The jitted (or pmapped) step with the state donated, and the state in the matching layout."""
  loss_kwargs = _loss_kwargs(config)
  if config.train.parallel == "jit":
    fn = functools.partial(train_step, batch_size=config.train.batch_size, loss_kwargs=loss_kwargs,
                           batch_sharding=batch_sharding, sampler=rotation_sampler(config))
    step_fn = jax.jit(fn, in_shardings=(repl, repl, repl, repl), out_shardings=(repl, repl),
                      donate_argnums=(0,))
    return step_fn, state
  if config.train.parallel == "pmap":
    n = s.mesh.size
    model = create_model(config, s.bank.num_models, len(s.anchors), bn_axis_name="batch")
    state = state.replace(apply_fn=model.apply)
    fn = functools.partial(pmap_train_step, batch_size=config.train.batch_size, num_devices=n,
                           loss_kwargs=loss_kwargs, sampler=rotation_sampler(config))
    pmapped = jax.pmap(fn, axis_name="batch", in_axes=(0, None, None, None), donate_argnums=(0,),
                       devices=list(s.mesh.devices.flat))
    state = flax.jax_utils.replicate(state, devices=list(s.mesh.devices.flat))

    def step_fn(st, key, bank, anchors):
      st, m = pmapped(st, key, bank, anchors)
      return st, jax.tree.map(lambda x: x[0], m)
    return step_fn, state
  raise errors.ConfigError(f"unknown train.parallel {config.train.parallel!r} (use 'jit' or 'pmap')")


def _unreplicate(state, config):
  """The single-copy state (pmap keeps one copy per device; checkpoints store one)."""
  return flax.jax_utils.unreplicate(state) if config.train.parallel == "pmap" else state
