"""Preemption and restart safety of training: SIGTERM, SIGKILL + relaunch, corrupt checkpoints, NaN."""

import os
import pathlib
import random
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import tiny
from disent_jax import errors
from disent_jax import losses
from disent_jax import train_embedder
from disent_jax import train_lib

REPO = pathlib.Path(__file__).resolve().parents[1]


def _launch_cmd(workdir, cache_dir, num_steps, checkpoint_every=1):
  return [sys.executable, "-m", "launch.main", "--config=configs/tiny.py", f"--workdir={workdir}",
          f"--config.data.cache_dir={cache_dir}", f"--config.train.num_steps={num_steps}",
          f"--config.train.checkpoint_every={checkpoint_every}", "--config.train.num_devices=1",
          "--config.train.keep_checkpoints=2", "--config.eval.after_training=False"]


def _env():
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
  env["XLA_FLAGS"] = ""  # one device in the child, as in the reference run
  return env


def _final_params(workdir):
  ckpt = train_lib.Checkpoints(os.path.join(workdir, "embedder", "checkpoints"), "embedder",
                               read_only=True)
  step = ckpt.latest_step()
  state = ckpt.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  ckpt.close()
  return step, state["state"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("voxel_cache"))


def _steps_logged(workdir):
  path = os.path.join(workdir, "embedder", "tb", "metrics.jsonl")
  return sum(1 for _ in open(path)) if os.path.exists(path) else 0


def test_sigterm_saves_current_step_and_exits(tmp_path, cache_dir):
  workdir = str(tmp_path / "run")
  proc = subprocess.Popen(_launch_cmd(workdir, cache_dir, 100_000, checkpoint_every=100_000),
                          cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
  deadline = time.time() + 240
  while _steps_logged(workdir) < 3 and time.time() < deadline and proc.poll() is None:
    time.sleep(0.2)
  assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
  t0 = time.time()
  proc.send_signal(signal.SIGTERM)
  out = proc.communicate(timeout=60)[0].decode()
  assert proc.returncode == 0, out[-3000:]
  assert time.time() - t0 < 30
  assert os.listdir(os.path.join(workdir, "embedder", "checkpoints")), out[-3000:]
  step, _ = _final_params(workdir)
  assert step >= 3  # saved at the step it was at, although no periodic save was due
  assert "checkpoint saved" in out


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_equals_uninterrupted_run(tmp_path, cache_dir):
  num_steps = 60  # checkpoint every step: long enough for 3 kills at random moments
  ref_dir = str(tmp_path / "ref")
  subprocess.run(_launch_cmd(ref_dir, cache_dir, num_steps), cwd=REPO, env=_env(), check=True,
                 capture_output=True)
  run_dir = str(tmp_path / "killed")
  rng = random.Random(0)
  kills = 0
  while kills < 3:
    proc = subprocess.Popen(_launch_cmd(run_dir, cache_dir, num_steps), cwd=REPO, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Kill once training is under way (possibly mid-save: every step saves), at a random moment.
    start = _steps_logged(run_dir)
    while _steps_logged(run_dir) <= start and proc.poll() is None:
      time.sleep(0.05)
    time.sleep(rng.uniform(0.0, 1.0))
    if proc.poll() is not None:
      break
    proc.kill()
    proc.wait()
    kills += 1
  assert kills >= 3
  subprocess.run(_launch_cmd(run_dir, cache_dir, num_steps), cwd=REPO, env=_env(), check=True,
                 capture_output=True)
  ref_step, ref = _final_params(ref_dir)
  step, got = _final_params(run_dir)
  assert step == ref_step == num_steps
  for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(got)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _truncate_largest_file(step_dir):
  files = [p for p in pathlib.Path(step_dir).rglob("*") if p.is_file()]
  biggest = max(files, key=lambda p: p.stat().st_size)
  with open(biggest, "r+b") as f:
    f.truncate(max(biggest.stat().st_size // 3, 1))
  return biggest


def test_corrupt_latest_checkpoint_falls_back_with_warning(tmp_path, caplog):
  directory = str(tmp_path / "ckpt")
  state = {"w": jnp.arange(1000.0), "b": jnp.ones(3)}
  ckpt = train_lib.Checkpoints(directory, "embedder", keep=5)
  ckpt.save(2, state, {}, force=True)
  ckpt.save(4, jax.tree.map(lambda x: x + 1, state), {}, force=True)
  ckpt.close()
  _truncate_largest_file(os.path.join(directory, "4"))
  abstract = train_lib.abstract_with_sharding(state, jax.sharding.SingleDeviceSharding(jax.devices()[0]))
  ckpt = train_lib.Checkpoints(directory, "embedder")
  with caplog.at_level("WARNING"):
    restored, step, _ = ckpt.restore_latest(abstract)
  # The unreadable newer step is removed, so training can save that step again.
  assert ckpt.all_steps() == [2]
  assert ckpt.save(4, state, {}, force=True)
  ckpt.close()
  assert step == 2
  np.testing.assert_array_equal(restored["w"], state["w"])
  assert "checkpoint step 4" in caplog.text


def test_all_checkpoints_corrupt_is_an_error_not_a_fresh_start(tmp_path):
  directory = str(tmp_path / "ckpt")
  state = {"w": jnp.arange(1000.0)}
  ckpt = train_lib.Checkpoints(directory, "embedder")
  ckpt.save(1, state, {}, force=True)
  ckpt.close()
  _truncate_largest_file(os.path.join(directory, "1"))
  abstract = train_lib.abstract_with_sharding(state, jax.sharding.SingleDeviceSharding(jax.devices()[0]))
  with pytest.raises(errors.CheckpointError, match="none of the checkpoints"):
    train_lib.Checkpoints(directory, "embedder").restore_latest(abstract)


def test_nan_loss_stops_naming_step_and_last_good_checkpoint(tmp_path, cache_dir, monkeypatch):
  workdir = str(tmp_path)
  config = tiny.get_config()
  config.data.cache_dir = cache_dir
  config.train.num_devices = 1
  config.train.num_steps = 2
  config.train.checkpoint_every = 2
  config.eval.after_training = False
  train_embedder.train_and_evaluate(config, workdir)

  real_loss = losses.stage1_loss

  def nan_loss(*args, **kwargs):
    total, aux = real_loss(*args, **kwargs)
    return total * jnp.nan, dict(aux, loss=aux["loss"] * jnp.nan)
  monkeypatch.setattr(losses, "stage1_loss", nan_loss)
  config.train.num_steps = 4
  with pytest.raises(FloatingPointError, match=r"at step 3 .*last good checkpoint is step 2"):
    train_embedder.train_and_evaluate(config, workdir)
  steps = sorted(int(d) for d in os.listdir(os.path.join(workdir, "embedder", "checkpoints"))
                 if d.isdigit())
  assert steps == [2]  # the bad state was not saved
