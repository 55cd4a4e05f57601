"""Training machinery shared by both stages: train state, device mesh, checkpoints, logging, preemption.

Checkpoints (orbax): each stage writes `<workdir>/<stage>/checkpoints/<step>/` with two items, `state` (the
TrainState, saved with StandardSave) and `meta` (JSON: stage name, config, data fingerprint). Orbax commits a
step by an atomic rename, so a save killed midway leaves only a `*.orbax-checkpoint-tmp` folder that later
runs ignore; a finished step whose files were truncated afterwards is *not* detected by orbax, so
`restore_latest` walks back from the newest step and warns, naming each step it could not read.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import time
from typing import Any

from absl import logging as absl_logging
import flax
from flax.training import train_state
import jax
import numpy as np
import optax
import orbax.checkpoint as ocp

from disent_jax import errors

PyTree = Any


class TrainState(train_state.TrainState):
  """Flax TrainState plus BatchNorm statistics (an empty dict for models without BatchNorm)."""
  batch_stats: PyTree = flax.struct.field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------------
# Devices.


def make_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
  """A 1-D data-parallel mesh over the first `num_devices` devices (all by default).

  `jax.make_mesh` defaults to Explicit axis types in this JAX; a plain `Mesh` gives the Auto (GSPMD) axes
  that `jit` with `in_shardings`/`with_sharding_constraint` expects.
  """
  devices = jax.devices()
  n = len(devices) if num_devices in (None, 0) else int(num_devices)
  if n > len(devices):
    raise errors.ConfigError(f"asked for {n} devices but only {len(devices)} are available")
  return jax.sharding.Mesh(np.asarray(devices[:n]), ("data",))


def replicated_sharding(mesh: jax.sharding.Mesh) -> jax.sharding.NamedSharding:
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())


def data_sharding(mesh: jax.sharding.Mesh) -> jax.sharding.NamedSharding:
  """Leading (batch) axis split over the 'data' mesh axis."""
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))


def check_batch_divisible(batch_size: int, num_devices: int, what: str = "train.batch_size") -> None:
  """Raises ConfigError when a global batch cannot be split evenly over the devices."""
  if batch_size <= 0 or batch_size % num_devices:
    raise errors.ConfigError(
        f"{what}={batch_size} must be a positive multiple of the device count ({num_devices})")


def param_count(params: PyTree) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))


def tree_all_finite(tree: PyTree) -> jax.Array:
  """True when every leaf of a pytree of floating arrays is finite (jit-able)."""
  leaves = [jax.numpy.all(jax.numpy.isfinite(x)) for x in jax.tree.leaves(tree)
            if jax.numpy.issubdtype(x.dtype, jax.numpy.floating)]
  return jax.numpy.all(jax.numpy.stack(leaves)) if leaves else jax.numpy.array(True)


# ---------------------------------------------------------------------------------------------------------
# Checkpoints.


class Checkpoints:
  """Orbax CheckpointManager for one stage, with metadata, stage checks and fallback on corrupt steps.

  Args:
    directory: the stage's checkpoint folder (e.g. `<workdir>/embedder/checkpoints`).
    stage: the stage name recorded in (and checked against) every checkpoint's metadata.
    save_every: periodic save interval in steps (0 disables periodic saves; `save(force=True)` still saves).
    keep: how many checkpoints to keep.
    read_only: open for restore only (evaluation).
  """

  def __init__(self, directory: str, stage: str, *, save_every: int = 0, keep: int = 3,
               read_only: bool = False):
    self.directory = os.path.abspath(directory)
    self.stage = stage
    self.save_every = save_every
    if read_only and not os.path.isdir(self.directory):
      raise errors.CheckpointError(f"no checkpoints for stage '{stage}' in {self.directory}")
    options = ocp.CheckpointManagerOptions(
        max_to_keep=None if read_only else keep, create=not read_only, read_only=read_only,
        cleanup_tmp_directories=not read_only,
        # Saving is decided here (periodic or forced), not by orbax's own interval.
        save_interval_steps=0 if read_only else 1)
    with _quiet_absl():
      self.manager = ocp.CheckpointManager(self.directory, options=options,
                                           item_names=("state", "meta"))

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def should_save(self, step: int) -> bool:
    return bool(self.save_every) and step % self.save_every == 0

  def save(self, step: int, state: PyTree, meta: dict, *, force: bool = False) -> bool:
    """Saves `state` at `step` if due (or forced); returns whether a save was started."""
    if not (force or self.should_save(step)) or step in self.manager.all_steps():
      return False
    meta = dict(meta, stage=self.stage, step=int(step))
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(_jsonable(meta))))
    return True

  def read_meta(self, step: int) -> dict:
    return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

  def restore(self, step: int, abstract_state: PyTree) -> tuple[PyTree, dict]:
    """Restores one step into `abstract_state`'s structure and shardings, checking its stage.

    Raises:
      CheckpointError: the step is missing, unreadable, or belongs to another stage.
    """
    if step not in self.manager.all_steps():
      raise errors.CheckpointError(f"no checkpoint step {step} in {self.directory} "
                                   f"(have {self.all_steps()})")
    try:
      meta = self.read_meta(step)
    except Exception as e:  # noqa: BLE001
      raise errors.CheckpointError(f"checkpoint step {step} in {self.directory} is unreadable: "
                                   f"{_short(e)}") from e
    self._check_stage(meta)
    try:
      restored = self.manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state)))
    except Exception as e:  # noqa: BLE001
      raise errors.CheckpointError(f"checkpoint step {step} in {self.directory} is unreadable: "
                                   f"{_short(e)}") from e
    return restored["state"], meta

  def _check_stage(self, meta: dict) -> None:
    if meta.get("stage") != self.stage:
      raise errors.CheckpointError(
          f"{self.directory} holds checkpoints of stage '{meta.get('stage')}', not '{self.stage}'; "
          "use another workdir")

  def restore_latest(self, abstract_state: PyTree) -> tuple[PyTree, int, dict] | None:
    """Restores the newest readable checkpoint into `abstract_state`'s structure and shardings.

    Args:
      abstract_state: a pytree of `jax.ShapeDtypeStruct` carrying the target shardings (see
        `abstract_with_sharding`).

    Returns:
      (state, step, meta), or None when the folder has no checkpoint at all.

    Raises:
      CheckpointError: checkpoints exist but none is readable (never silently starts from scratch), or
        they were written by another stage.
    """
    steps = sorted(self.manager.all_steps(), reverse=True)
    if not steps:
      return None
    failures = []
    for step in steps:
      try:
        meta = self.read_meta(step)
      except Exception as e:  # noqa: BLE001 -- any unreadable step falls back to the previous one
        failures.append((step, e))
        logging.warning("checkpoint step %d in %s is unreadable (%s: %s); trying the previous step",
                        step, self.directory, type(e).__name__, _short(e))
        continue
      self._check_stage(meta)
      try:
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state)))
        self._drop_unreadable([s for s, _ in failures])
        return restored["state"], step, meta
      except Exception as e:  # noqa: BLE001
        failures.append((step, e))
        logging.warning("checkpoint step %d in %s is unreadable (%s: %s); trying the previous step",
                        step, self.directory, type(e).__name__, _short(e))
    raise errors.CheckpointError(
        f"none of the checkpoints in {self.directory} could be restored (steps "
        f"{[s for s, _ in failures]}); last error: {_short(failures[-1][1])}")

  def _drop_unreadable(self, steps: list[int]) -> None:
    """Deletes unreadable steps newer than the one restored, so training can save them again."""
    if self.manager._options.read_only:  # pylint: disable=protected-access
      return
    for step in steps:
      logging.warning("deleting unreadable checkpoint step %d in %s", step, self.directory)
      self.manager.delete(step)

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def abstract_with_sharding(tree: PyTree, sharding: jax.sharding.Sharding) -> PyTree:
  """ShapeDtypeStructs of `tree` (arrays or abstract values) that all carry `sharding`."""
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), tree)


def _short(e: BaseException, limit: int = 300) -> str:
  s = str(e).replace("\n", " ")
  return s if len(s) <= limit else s[:limit] + "..."


def _jsonable(obj: Any) -> Any:
  """Round-trips through json with numpy scalars/arrays and tuples converted."""
  return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


@contextlib.contextmanager
def _quiet_absl():
  """Orbax logs benign INFO/WARNING lines on construction; keep the console readable."""
  old = absl_logging.get_verbosity()
  absl_logging.set_verbosity(absl_logging.ERROR)
  try:
    yield
  finally:
    absl_logging.set_verbosity(old)


# ---------------------------------------------------------------------------------------------------------
# Preemption.


class PreemptionGuard:
  """Turns SIGTERM (and SIGINT) into a flag the training loop polls, so it can save and exit cleanly.

  Use as a context manager around the loop; the previous handlers are restored on exit. Only installs
  handlers in the main thread (signal handlers cannot be set elsewhere, e.g. in a notebook worker thread).
  """

  def __init__(self, signals=(signal.SIGTERM, signal.SIGINT)):
    self.signals = signals
    self.received: int | None = None
    self._old = {}

  def __enter__(self) -> "PreemptionGuard":
    import threading
    if threading.current_thread() is threading.main_thread():
      for s in self.signals:
        self._old[s] = signal.signal(s, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    self.received = signum
    logging.warning("received signal %d: saving a checkpoint at the current step, then exiting", signum)

  def __exit__(self, *exc):
    for s, h in self._old.items():
      signal.signal(s, h)
    return False

  @property
  def requested(self) -> bool:
    return self.received is not None


# ---------------------------------------------------------------------------------------------------------
# Logging.


class MetricWriter:
  """TensorBoard scalars (tensorboardX, no TensorFlow) plus a JSON-lines copy readable without TensorBoard.

  Only process 0 writes.
  """

  def __init__(self, logdir: str):
    self.enabled = jax.process_index() == 0
    self.logdir = logdir
    self._tb = None
    if self.enabled:
      os.makedirs(logdir, exist_ok=True)
      from tensorboardX import SummaryWriter  # imported lazily: only the writing process needs it
      self._tb = SummaryWriter(logdir)
      self._jsonl = open(os.path.join(logdir, "metrics.jsonl"), "a")

  def write_scalars(self, step: int, scalars: dict[str, float]) -> None:
    if not self.enabled:
      return
    clean = {k: float(v) for k, v in scalars.items()}
    for k, v in clean.items():
      self._tb.add_scalar(k, v, step)
    self._jsonl.write(json.dumps({"step": int(step), **clean}) + "\n")
    self._jsonl.flush()

  def write_text(self, tag: str, text: str, step: int = 0) -> None:
    if self.enabled:
      self._tb.add_text(tag, text, step)

  def close(self) -> None:
    if self.enabled:
      self._tb.flush()
      self._tb.close()
      self._jsonl.close()


class Throughput:
  """Samples/s over the steps since the last call (host wall clock, after blocking on the step)."""

  def __init__(self):
    self._t = time.perf_counter()
    self._n = 0

  def add(self, n: int) -> None:
    self._n += n

  def rate(self) -> float:
    now = time.perf_counter()
    r = self._n / max(now - self._t, 1e-9)
    self._t, self._n = now, 0
    return r


# ---------------------------------------------------------------------------------------------------------
# The training loop shared by both stages.


def apply_gradients(state: TrainState, grads: PyTree, aux: dict, batch_stats: PyTree
                    ) -> tuple[TrainState, dict]:
  """One optimiser update inside a jitted step; adds 'finite' and 'grad_norm' to the step's metrics.

  The update is applied even when it is not finite: the loop checks 'finite' at the next log and stops
  without saving that state (`flush_metrics`), so the step itself needs no host sync.
  """
  finite = tree_all_finite(grads) & jax.numpy.isfinite(aux["loss"])
  new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  return new_state, dict(aux, finite=finite, grad_norm=optax.tree.norm(grads))


def learning_rate_schedule(t) -> optax.Schedule:
  """The schedule of a stage's train config (`config.train` or `config.regressor_train`)."""
  if t.schedule == "constant":
    return optax.constant_schedule(t.learning_rate) if not t.warmup_steps else optax.join_schedules(
        [optax.linear_schedule(0.0, t.learning_rate, t.warmup_steps),
         optax.constant_schedule(t.learning_rate)], [t.warmup_steps])
  if t.schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(0.0, t.learning_rate, max(t.warmup_steps, 1),
                                              max(t.num_steps, t.warmup_steps + 1))
  raise errors.ConfigError(f"unknown schedule {t.schedule!r} (use 'constant' or 'cosine')")


def flush_metrics(pending: list[tuple[int, dict]], last_good_ckpt: int | None, ckpt_dir: str) -> dict:
  """Averages the pending steps' metrics on the host; stops on the first non-finite step.

  Metrics stay on device between logs (no per-step host sync); each step's dict carries 'finite'.

  Raises:
    FloatingPointError: naming the first non-finite step and the last good checkpoint.
  """
  host = jax.device_get([m for _, m in pending])
  for (step, _), m in zip(pending, host):
    if not bool(m["finite"]):
      where = (f"the last good checkpoint is step {last_good_ckpt} in {ckpt_dir}"
               if last_good_ckpt is not None else "no checkpoint has been saved yet")
      raise FloatingPointError(f"non-finite loss or gradients at step {step} (loss={m['loss']}); "
                               f"training stopped and this state was not saved; {where}")
  pending.clear()
  keys = [k for k in host[0] if k != "finite"]
  return {k: float(np.mean([m[k] for m in host])) for k in keys}


def train_loop(*, step_fn, state: PyTree, start_step: int, num_steps: int, ckpt: Checkpoints,
               writer: MetricWriter, batch_size: int, log_every: int, lr_fn, desc: str,
               meta_fn, to_save=lambda s: s, postfix: dict[str, str] | None = None
               ) -> tuple[PyTree, int, bool]:
  """Runs `step_fn` from `start_step` to `num_steps` with logging, checkpoints and preemption handling.

  Args:
    step_fn: (state, step) -> (new state, metrics dict on device incl. 'loss' and 'finite').
    state: the initial (restored or fresh) state.
    start_step, num_steps: the loop range.
    ckpt: the stage's checkpoints (periodic saves by its `save_every`, plus the last step).
    writer: scalar writer.
    batch_size: global batch size (for samples/s).
    log_every: steps between host syncs of the metrics (logs, progress postfix, NaN check).
    lr_fn: the learning-rate schedule (logged).
    desc: the progress bar's label.
    meta_fn: step -> metadata dict saved with the checkpoint of that step (called after the step, so
      e.g. an input iterator's state there is the state that continues with the next batch).
    to_save: state -> the state to checkpoint (e.g. unreplicate a pmapped state).
    postfix: progress-bar fields, {label: metric name}.

  Returns:
    (state, last step, stopped by a signal).
  """
  import tqdm  # the library's other modules do not need it
  postfix = postfix or {}
  step = start_step
  pending: list[tuple[int, dict]] = []
  last_good_ckpt = ckpt.latest_step()
  speed = Throughput()
  pbar = tqdm.tqdm(total=num_steps, initial=start_step, desc=desc, unit="step",
                   disable=jax.process_index() != 0, dynamic_ncols=True, mininterval=2.0)
  stop = False
  with PreemptionGuard() as guard:
    while step < num_steps:
      state, metrics = step_fn(state, step)
      step += 1
      pending.append((step, metrics))
      speed.add(batch_size)
      pbar.update(1)
      # Read the flag once: the signal may arrive at any moment, and deciding to stop without the save
      # decided before it would lose the current step.
      stop = guard.requested
      due_ckpt = ckpt.should_save(step) or step == num_steps or stop
      if step % log_every == 0 or due_ckpt:
        scalars = flush_metrics(pending, last_good_ckpt, ckpt.directory)
        scalars["samples_per_s"] = speed.rate()
        scalars["learning_rate"] = float(lr_fn(step))
        writer.write_scalars(step, scalars)
        pbar.set_postfix({k: f"{scalars[v]:.3g}" for k, v in postfix.items() if v in scalars}
                         | {"sps": f"{scalars['samples_per_s']:.0f}"})
      if due_ckpt and ckpt.save(step, to_save(state), meta_fn(step), force=True):
        last_good_ckpt = step
      if stop:
        ckpt.wait()
        logging.warning("stopped at step %d on signal %s; checkpoint saved", step, guard.received)
        break
  pbar.close()
  return state, step, stop
