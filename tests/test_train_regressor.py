"""Stage II end to end on the tiny config: train on Stage I, checkpoint, resume, evaluate; 1 vs 8 devices."""

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from disent_jax import errors
from disent_jax import evaluate
from disent_jax import geometry
from disent_jax import losses
from disent_jax import train_embedder
from disent_jax import train_lib
from disent_jax import train_regressor


@pytest.fixture(scope="module")
def shared_dirs(tmp_path_factory):
  """One voxel cache, one rendered dataset and one trained Stage I for the module."""
  root = tmp_path_factory.mktemp("stage2")
  cache, data, stage1 = str(root / "cache"), str(root / "data"), str(root / "stage1")
  config = _config(cache, data)
  train_embedder.train_and_evaluate(config, stage1)
  return cache, data, stage1


def _config(cache, data, **train):
  config = tiny.get_config()
  config.data.cache_dir = cache
  config.images.data_dir = data
  config.eval.after_training = False
  for k, v in train.items():
    setattr(config.regressor_train, k, v)
  return config


def _workdir(tmp_path, stage1):
  """A fresh workdir holding a copy of the module's Stage I checkpoints."""
  import shutil
  shutil.copytree(os.path.join(stage1, "embedder"), tmp_path / "embedder")
  return str(tmp_path)


def test_train_resume_and_evaluate(tmp_path, shared_dirs):
  cache, data, stage1 = shared_dirs
  workdir = _workdir(tmp_path, stage1)
  config = _config(cache, data, num_steps=3, checkpoint_every=2, num_devices=1)
  results = train_regressor.train_and_evaluate(config, workdir)
  ckpts = os.path.join(workdir, "regressor", "checkpoints")
  assert sorted(int(d) for d in os.listdir(ckpts) if d.isdigit()) == [2, 3]
  assert results["train"]["steps"] == 3
  logged = [json.loads(l) for l in open(os.path.join(workdir, "regressor", "tb", "metrics.jsonl"))]
  assert [r["step"] for r in logged] == [1, 2, 3]
  assert {"embedding_l1", "cell_acc", "anchor_acc", "shape_acc"} <= set(logged[0])

  saved = json.load(open(os.path.join(workdir, "results.json")))
  assert saved["n_instances"] == config.images.num_test
  assert saved["checkpoint_steps"] == {"embedder": 3, "regressor": 3}
  assert len(saved["instance_ids"]) == config.images.num_test
  for key in ("rotation", "retrieval", "retrieval_nn", "translation", "breakdown", "config"):
    assert key in saved
  cats = saved["rotation"]["per_category"]
  assert all({"mederr_deg", "acc_pi_6"} <= set(v) for v in cats.values())
  # Forgiving the models' rotational symmetries can only lower the errors (the identity is in every group).
  sym = saved["rotation_up_to_symmetry"]["per_category"]
  assert set(sym) == set(cats)
  assert all(sym[c]["mederr_deg"] <= cats[c]["mederr_deg"] + 1e-9 for c in cats)
  md = open(os.path.join(workdir, "results.md")).read()
  assert "Table 1" in md and "Table 2" in md and "Table 4" in md

  # A second launch with a longer schedule continues from step 3.
  config.regressor_train.num_steps = 5
  results2 = train_regressor.train_and_evaluate(config, workdir)
  assert results2["train"]["steps"] == 5 and results2["train"]["steps_this_run"] == 2

  # The 'eval' stage restores the checkpoints on its own and reproduces the post-training figures.
  again = evaluate.evaluate(config, workdir)
  assert again["checkpoint_steps"]["regressor"] == 5
  assert again["rotation"]["mean"] == results2["rotation"]["mean"]


def test_resumed_run_equals_uninterrupted_run(tmp_path, shared_dirs):
  """2 + 2 steps in two launches give the parameters of 4 steps in one (data order restored)."""
  cache, data, stage1 = shared_dirs
  config = _config(cache, data, num_steps=4, checkpoint_every=100, num_devices=1)
  config.evaluation.after_training = False
  config.images.augment = True  # the augmentation randomness must be restored too
  one = _workdir(tmp_path / "one", stage1)
  train_regressor.train_and_evaluate(config, one)
  two = _workdir(tmp_path / "two", stage1)
  config.regressor_train.num_steps = 2
  train_regressor.train_and_evaluate(config, two)
  config.regressor_train.num_steps = 4
  train_regressor.train_and_evaluate(config, two)

  def params(workdir):
    s = train_regressor.setup(config, workdir, need_data=False)
    from disent_jax import inference
    state, step = inference.restore_regressor(config, workdir, s)
    assert step == 4
    return jax.device_get(state.params)
  for a, b in zip(jax.tree.leaves(params(one)), jax.tree.leaves(params(two))):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_targets_are_the_frozen_embedding_of_the_rotated_voxels(shared_dirs, tmp_path):
  """The L1 targets equal the Stage I embedder applied to the GT model's voxels at the GT rotation."""
  cache, data, stage1 = shared_dirs
  config = _config(cache, data, num_devices=1)
  s = train_regressor.setup(config, stage1)
  it = train_regressor.make_train_iterator(config, s)
  batch = next(it)
  it.close()
  bank = jnp.asarray(s.stage1.bank.volumes)
  labels = train_regressor.make_targets(
      {k: jnp.asarray(batch[k]) for k in train_regressor.STEP_KEYS}, bank,
      jnp.asarray(s.stage1.anchors, jnp.float32), s.grid, s.stage1.model.apply, s.embedder_variables)
  from disent_jax.cad import rotate
  i = 3
  row = s.stage1.bank.index(it.categories[batch["category"][i]], batch["cad_index"][i])
  assert row == batch["model_index"][i]
  vol = rotate.rotate_voxels(bank[row:row + 1].astype(jnp.float32), jnp.asarray(batch["quaternion"][i:i + 1]))
  ref = s.stage1.model.apply(s.embedder_variables, vol, train=False)
  np.testing.assert_allclose(labels["target_shape"][i], ref["shape_vec"][0], rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(labels["target_pose"][i], ref["pose_vec"][0], rtol=1e-4, atol=1e-5)
  # Rotation and translation labels decode back to the ground truth.
  q = geometry.decode_rotation(labels["anchor"], labels["residual"], jnp.asarray(s.stage1.anchors))
  np.testing.assert_allclose(np.abs(np.sum(np.asarray(q) * batch["quaternion"], -1)), 1.0, atol=1e-5)
  t = geometry.decode_translation(labels["cell"], labels["cell_residual"], s.grid)
  inside = np.all((batch["translation"] >= s.grid.lower) & (batch["translation"] <= s.grid.upper), -1)
  np.testing.assert_allclose(np.asarray(t)[inside], batch["translation"][inside], atol=1e-5)


def _run_steps(config, workdir, num_steps, return_step_fn=False):
  s = train_regressor.setup(config, workdir)
  repl = train_lib.replicated_sharding(s.mesh)
  state = train_regressor.initial_state(config, s, repl)
  step_fn, state = train_regressor._compile_step(config, s, state, repl, train_lib.data_sharding(s.mesh))
  it = train_regressor.make_train_iterator(config, s)
  bank = jax.device_put(jnp.asarray(s.stage1.bank.volumes), repl)
  anchors = jax.device_put(jnp.asarray(s.stage1.anchors, jnp.float32), repl)
  emb = jax.device_put(s.embedder_variables, repl)
  for _ in range(num_steps):
    state, m = step_fn(state, next(it), bank, anchors, emb)
  it.close()
  if config.regressor_train.parallel == "pmap":
    import flax
    state = flax.jax_utils.unreplicate(state)
  out = jax.device_get(state.params), jax.device_get(state.batch_stats), m
  return out + (step_fn,) if return_step_fn else out


def test_step_compiles_once(shared_dirs):
  """A fresh state (heads copied from Stage I on the host) has the step's output types: one compile."""
  cache, data, stage1 = shared_dirs
  config = _config(cache, data, num_devices=1)
  config.regressor.init_heads_from_embedder = True
  *_, m, step_fn = _run_steps(config, stage1, 3, return_step_fn=True)
  assert bool(m["finite"])
  assert step_fn.jitted._cache_size() == 1


@pytest.mark.parametrize("parallel", ["jit", "pmap"])
def test_eight_devices_agree_with_one(shared_dirs, parallel):
  cache, data, stage1 = shared_dirs
  assert jax.device_count() == 8
  ref_p, ref_s, m = _run_steps(_config(cache, data, num_devices=1), stage1, 2)
  assert bool(m["finite"])
  p, s, _ = _run_steps(_config(cache, data, num_devices=8, parallel=parallel), stage1, 2)
  for a, b in zip(jax.tree.leaves(ref_p), jax.tree.leaves(p)):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
  for a, b in zip(jax.tree.leaves(ref_s), jax.tree.leaves(s)):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)


def test_without_embedding_needs_no_stage1(tmp_path, shared_dirs):
  """The paper's "w/o embedding" ablation is a single stage: it trains in a workdir without Stage I."""
  cache, data, _ = shared_dirs
  config = _config(cache, data, num_steps=2, num_devices=1)
  config.regressor.use_embedding = False
  config.evaluation.after_training = True
  results = train_regressor.train_and_evaluate(config, str(tmp_path))
  assert "retrieval_nn" not in results  # no embedding, no nearest-neighbour retrieval
  assert results["checkpoint_steps"]["embedder"] is None


def test_missing_stage1_is_a_clear_error(tmp_path, shared_dirs):
  cache, data, _ = shared_dirs
  with pytest.raises(errors.CheckpointError, match="Stage I"):
    train_regressor.train_and_evaluate(_config(cache, data), str(tmp_path))


def test_batch_not_divisible_by_devices(tmp_path, shared_dirs):
  cache, data, stage1 = shared_dirs
  config = _config(cache, data, batch_size=12, num_devices=8)
  with pytest.raises(errors.ConfigError, match="regressor_train.batch_size"):
    train_regressor.train_and_evaluate(config, _workdir(tmp_path, stage1))


def test_stage2_loss_hand_case():
  """L1 + CE + Huber terms against a hand computation on a 1-example batch."""
  out = {"shape_vec": jnp.array([[1.0, -1.0]]), "pose_vec": jnp.array([[0.5, 0.5]]),
         "shape_logits": jnp.array([[0.0, 0.0]]), "anchor_logits": jnp.array([[0.0, 0.0, 0.0]]),
         "residuals": jnp.tile(jnp.array([1.0, 0.0, 0.0, 0.0]), (1, 3, 1)),
         "cell_logits": jnp.array([[0.0, 0.0, 0.0, 0.0]]), "cell_residuals": jnp.full((1, 4, 3), 0.5)}
  batch = {"model": jnp.array([1]), "anchor": jnp.array([2]), "residual": jnp.array([[1.0, 0, 0, 0]]),
           "quat": jnp.array([[1.0, 0, 0, 0]]), "cell": jnp.array([0]),
           "cell_residual": jnp.array([[0.5, 0.5, 1.5]]), "target_shape": jnp.array([[0.0, 0.0]]),
           "target_pose": jnp.array([[0.5, 1.5]]), "mask": jnp.array([True])}
  kw = dict(embedding_weight=2.0, shape_weight=1.0, anchor_weight=1.0, residual_weight=1.0,
            cell_weight=1.0, cell_residual_weight=1.0, huber_delta=1.0)
  loss, aux = losses.stage2_loss(out, batch, use_embedding=True, **kw)
  l1 = 1.0 + 0.5  # mean |s - s*| = 1, mean |p - p*| = 0.5
  ce = np.log(2) + np.log(3) + np.log(4)
  huber = 0.5 * 1.0 ** 2  # one residual coordinate off by 1.0
  np.testing.assert_allclose(loss, 2.0 * l1 + ce + huber, rtol=1e-6)
  np.testing.assert_allclose(aux["embedding_l1"], l1, rtol=1e-6)
  loss_wo, _ = losses.stage2_loss(out, batch, use_embedding=False, **kw)
  np.testing.assert_allclose(loss_wo, ce + huber, rtol=1e-6)
