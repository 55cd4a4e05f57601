"""Stage I end to end on the tiny config: train, checkpoint, resume, evaluate; one compile; 1 vs 8 devices."""

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from disent_jax import errors
from disent_jax import eval_embedder
from disent_jax import train_embedder
from disent_jax import train_lib


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
  """One voxel-bank cache for the module: the zoo is voxelised once."""
  return str(tmp_path_factory.mktemp("voxel_cache"))


def _config(cache_dir, **train):
  config = tiny.get_config()
  config.data.cache_dir = cache_dir
  for k, v in train.items():
    setattr(config.train, k, v)
  return config


def test_train_checkpoint_resume_and_evaluate(tmp_path, cache_dir):
  workdir = str(tmp_path)
  config = _config(cache_dir, num_steps=3, checkpoint_every=2, num_devices=1)
  results = train_embedder.train_and_evaluate(config, workdir)
  ckpt_dir = os.path.join(workdir, "embedder", "checkpoints")
  assert sorted(int(d) for d in os.listdir(ckpt_dir) if d.isdigit()) == [2, 3]
  assert results["train"]["steps"] == 3 and results["train"]["steps_this_run"] == 3
  assert os.path.exists(os.path.join(workdir, "embedder", "eval.json"))
  assert os.path.exists(os.path.join(workdir, "embedder", "eval.md"))
  with open(os.path.join(workdir, "embedder", "learning_curve.png"), "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  logged = [json.loads(l) for l in open(os.path.join(workdir, "embedder", "tb", "metrics.jsonl"))]
  assert [r["step"] for r in logged] == [1, 2, 3]
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(os.path.join(workdir, "embedder", "tb")))

  # A second launch with a longer schedule continues from step 3, it does not restart.
  config.train.num_steps = 5
  results2 = train_embedder.train_and_evaluate(config, workdir)
  assert results2["train"]["steps"] == 5 and results2["train"]["steps_this_run"] == 2

  # Evaluation restores the latest checkpoint on its own.
  restored = eval_embedder.evaluate(config, workdir)
  assert restored["step"] == 5
  n = restored["num_models"] * restored["rotations_per_model"]
  assert restored["n_instances"] == n
  assert 0.0 <= restored["shape"]["classifier"]["mean"]["top1"] <= 1.0
  assert restored["disentanglement"]["shape_vec"]["ratio"] > 0


def test_workdir_of_another_stage_is_refused(tmp_path, cache_dir):
  config = _config(cache_dir, num_steps=1, num_devices=1)
  ckpt = train_lib.Checkpoints(os.path.join(tmp_path, "embedder", "checkpoints"), "regressor")
  ckpt.save(1, {"x": jnp.zeros(2)}, {}, force=True)
  ckpt.close()
  with pytest.raises(errors.CheckpointError, match="stage 'regressor'"):
    train_embedder.train_and_evaluate(config, str(tmp_path))


def test_batch_not_divisible_by_devices(tmp_path, cache_dir):
  config = _config(cache_dir, batch_size=12, num_devices=8)
  with pytest.raises(errors.ConfigError, match="multiple of the device count"):
    train_embedder.train_and_evaluate(config, str(tmp_path))


def _run_steps(config, workdir, num_steps):
  """Runs the compiled step directly and returns (params, the step function)."""
  s = train_embedder.setup(config, workdir)
  repl = train_lib.replicated_sharding(s.mesh)
  state = jax.jit(functools.partial(train_embedder.create_train_state, model=s.model,
                                    resolution=config.data.resolution, tx=s.tx),
                  out_shardings=repl)(s.init_key)
  step_fn, state = train_embedder._compile_step(config, s, state, repl,
                                                train_lib.data_sharding(s.mesh))
  bank = jax.device_put(jnp.asarray(s.bank.volumes), repl)
  anchors = jax.device_put(jnp.asarray(s.anchors, jnp.float32), repl)
  for step in range(num_steps):
    state, m = step_fn(state, jax.random.fold_in(s.loop_key, step), bank, anchors)
  state = train_embedder._unreplicate(state, config)
  return jax.device_get(state.params), jax.device_get(state.batch_stats), step_fn, m


def test_step_compiles_once(tmp_path, cache_dir):
  config = _config(cache_dir, num_devices=1)
  _, _, step_fn, m = _run_steps(config, str(tmp_path), 3)
  assert step_fn._cache_size() == 1
  assert bool(m["finite"])


@pytest.mark.parametrize("parallel", ["jit", "pmap"])
def test_eight_devices_agree_with_one(tmp_path, cache_dir, parallel):
  assert jax.device_count() == 8
  ref_params, ref_stats, _, _ = _run_steps(_config(cache_dir, num_devices=1), str(tmp_path), 2)
  params, stats, _, _ = _run_steps(_config(cache_dir, num_devices=8, parallel=parallel),
                                   str(tmp_path), 2)
  for a, b in zip(jax.tree.leaves(ref_params), jax.tree.leaves(params)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  for a, b in zip(jax.tree.leaves(ref_stats), jax.tree.leaves(stats)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_rotation_sampler_follows_the_first_layers_input():
  """The gather sampler where conv1 reads the rotated volume directly on CPU; map_coordinates where the
  box filter reads it (both samplers compute the same volumes: tests/test_rotate.py)."""
  from configs import default as default_config
  config = default_config.get_config()
  assert jax.default_backend() == "cpu"
  config.model.input_pool = 1
  assert train_embedder.rotation_sampler(config) == "gather"
  config.model.input_pool = 2
  assert train_embedder.rotation_sampler(config) == "map_coordinates"
