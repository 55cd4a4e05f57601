"""Measurement of the Stage I train step: ours (each conv implementation) vs the same network in PyTorch.

Each side is built as a `run()` callable doing `steps` optimizer steps and waiting for them, so both go
through `timing.time_interleaved` (interleaved repeats: both frameworks see the same machine load; the
first call, with compilation, timed apart). Our step samples its batch on device from the voxel bank
(`train_embedder.train_step`); the PyTorch step (`torch_voxnet.make_step`) gets a fixed host batch, so
PyTorch is spared the sampling and labelling work - the comparison is, if anything, in its favour.

PyTorch is optional (`pip install torch==2.13.0`): without it `make_torch_run` returns None. Used by
`launch/bench_stage1.py` and the benchmark suite.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from configs import default
from disent_jax import config_check
from disent_jax import geometry
from disent_jax import train_embedder
from disent_jax import train_lib
from disent_jax.bench import timing
from disent_jax.bench import torch_voxnet
from disent_jax.cad import voxel_bank as voxel_bank_lib
from disent_jax.cad import zoo

DEFAULT_CACHE = "/tmp/disent_jax_bench_cache"


def load_bank(resolution: int, cache_dir: str | None = DEFAULT_CACHE) -> voxel_bank_lib.VoxelBank:
  """The procedural zoo's voxel bank at `resolution` (cached in `cache_dir`)."""
  return voxel_bank_lib.build_voxel_bank(zoo.procedural_zoo(0), resolution, cache_dir, progress=False)


def step_config(resolution: int, batch: int, impl: str | None = None) -> ml_collections.ConfigDict:
  """The default config at this resolution and batch, with `impl` ('conv_impl' or 'conv_impl:layout').

  Raises:
    errors.ConfigError: an unknown implementation or layout (named with what is allowed).
  """
  config = default.get_config()
  config.data.resolution = resolution
  config.train.batch_size = batch
  if impl is not None:
    config.model.conv_impl, _, layout = impl.partition(":")
    if layout:
      config.model.layout = layout
  config_check.validate(config, stage="embedder")
  return config


def make_ours_run(bank: voxel_bank_lib.VoxelBank, batch: int, steps: int,
                  impl: str | None = None) -> tuple[Callable[[], Any], int]:
  """Our jitted Stage I step with the default config, on one device.

  Args:
    bank: the voxel bank (its resolution and model count shape the network).
    batch: global batch size.
    steps: steps per `run()` call.
    impl: `config.model.conv_impl` ('auto', 'lax', ...), optionally with `:layout` appended
      (`config.model.layout`, e.g. 'auto:channels_last'); None keeps the default config's.

  Returns:
    (run, parameter count).
  """
  import optax  # pylint: disable=import-outside-toplevel
  config = step_config(bank.resolution, batch, impl)
  anchors = geometry.rotation_anchors(config.anchors.n)
  model = train_embedder.create_model(config, bank.num_models, len(anchors))
  tx = optax.adam(config.train.learning_rate)
  mesh = train_lib.make_mesh(1)
  state = jax.jit(functools.partial(train_embedder.create_train_state, model=model,
                                    resolution=bank.resolution, tx=tx),
                  out_shardings=train_lib.replicated_sharding(mesh))(jax.random.key(0))
  loss_kwargs = train_embedder._loss_kwargs(config)  # pylint: disable=protected-access
  step = jax.jit(functools.partial(train_embedder.train_step, batch_size=batch, loss_kwargs=loss_kwargs,
                                   sampler=train_embedder.rotation_sampler(config)),
                 donate_argnums=(0,))
  vols = jnp.asarray(bank.volumes)
  anc = jnp.asarray(anchors, jnp.float32)
  # The state is donated every step, so it lives in a mutable holder the closure updates.
  holder = {"state": state, "i": 0}
  params = train_lib.param_count(state.params)

  def run():
    for _ in range(steps):
      holder["state"], metrics = step(holder["state"], jax.random.key(holder["i"]), vols, anc)
      holder["i"] += 1
    jax.block_until_ready(metrics["loss"])

  return run, params


def make_torch_run(bank: voxel_bank_lib.VoxelBank, batch: int, steps: int,
                   threads: int | None = None) -> tuple[Callable[[], Any], int] | None:
  """The PyTorch reference step (`torch_voxnet`), or None when PyTorch is not importable.

  Args:
    bank: the voxel bank.
    batch: batch size.
    steps: steps per `run()` call.
    threads: `torch.set_num_threads` (None: the CPU count, as XLA uses every core).

  Returns:
    (run, parameter count), or None.
  """
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None
  anchors = geometry.rotation_anchors(default.get_config().anchors.n)
  model, step = torch_voxnet.make_step(bank.num_models, len(anchors), bank.resolution,
                                       threads=threads or os.cpu_count())
  rng = np.random.default_rng(0)
  idx = rng.integers(0, bank.num_models, batch)
  q = np.asarray(geometry.random_quaternions(jax.random.key(1), (batch,)))
  rot = np.asarray(geometry.quat_to_matrix(q))
  a, res = (np.asarray(x) for x in geometry.encode_rotation(jnp.asarray(q), anchors))
  args = (torch.tensor(bank.volumes[idx]), torch.tensor(rot, dtype=torch.float32),
          torch.tensor(idx).long(), torch.tensor(a).long(), torch.tensor(res, dtype=torch.float32))

  def run():
    for _ in range(steps):
      step(*args)

  return run, torch_voxnet.param_count(model)


def bench_stage1(bank: voxel_bank_lib.VoxelBank, batch: int, steps: int, repeats: int,
                 impls: tuple[str | None, ...] = (None,), torch_threads: int | None = None,
                 warmup: int = 1) -> dict:
  """Seconds per step of ours (each impl) and PyTorch, interleaved.

  Args:
    bank: the voxel bank.
    batch: batch size.
    steps: steps per timed call.
    repeats: timed repeats (median reported).
    impls: our conv implementations, each optionally 'impl:layout' (None: the default config's).
    torch_threads: PyTorch's thread count (None: the CPU count).
    warmup: untimed interleaved rounds (of `steps` steps each) before the timed ones (`timing` says why).

  Returns:
    dict: variants -> {'step_s', 'compile_s', 'params'} (keys 'jax conv_impl=...' and, when PyTorch is
    installed, 'pytorch'), and 'torch_installed'.
  """
  runners = {f"jax conv_impl={impl or 'default'}": make_ours_run(bank, batch, steps, impl)
             for impl in impls}
  t = make_torch_run(bank, batch, steps, torch_threads)
  if t is not None:
    runners["pytorch"] = t
  times = timing.time_interleaved({k: run for k, (run, _) in runners.items()}, repeats, warmup=warmup)
  variants = {k: {"step_s": times[k].median_s / steps, "compile_s": times[k].compile_s,
                  "params": params} for k, (_, params) in runners.items()}
  return {"variants": variants, "torch_installed": t is not None}
