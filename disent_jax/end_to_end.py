"""The whole method in one call (config.stage 'all', README's demo): Stage I, Stage II, evaluation.

Each finished stage is reused: the voxel bank and the image dataset come from their caches, a Stage I or
Stage II run whose latest checkpoint has reached its `num_steps` is not trained again (a shorter one
resumes), and the final evaluation always runs on the latest checkpoints and rewrites the report.
"""

from __future__ import annotations

import logging
import os
import time

import jax
import ml_collections

from disent_jax import config_check
from disent_jax import evaluate
from disent_jax import train_embedder
from disent_jax import train_lib
from disent_jax import train_regressor


def _finished(directory: str, stage: str, num_steps: int) -> bool:
  if not os.path.isdir(directory):
    return False
  ckpt = train_lib.Checkpoints(directory, stage, read_only=True)
  try:
    latest = ckpt.latest_step()
  finally:
    ckpt.close()
  return latest is not None and latest >= num_steps


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains (or reuses) Stage I and Stage II in `workdir`, evaluates, writes and prints the report.

  Args:
    config: a full configuration (configs/default.py fields).
    workdir: output folder: `embedder/`, `regressor/`, `data/`, `cache/`, `results.{json,md}`, figures.

  Returns:
    The evaluation results (JSON-ready part).
  """
  config_check.validate(config, stage="all")  # before any bank, render or compile
  t0 = time.perf_counter()
  timings = {}
  if config.regressor.use_embedding:
    if _finished(os.path.join(train_embedder.stage_dir(workdir), "checkpoints"), train_embedder.STAGE,
                 config.train.num_steps):
      logging.info("Stage I already trained in %s: reusing it", workdir)
    else:
      t = time.perf_counter()
      out = train_embedder.train_and_evaluate(config, workdir)
      timings["stage1_s"] = time.perf_counter() - t
      if "stopped_at_step" in out:
        return out
  t = time.perf_counter()
  with config.unlocked():
    after = config.evaluation.after_training
    config.evaluation.after_training = False  # evaluated once below, finished or not
  try:
    if _finished(os.path.join(train_regressor.stage_dir(workdir), "checkpoints"),
                 train_regressor.STAGE, config.regressor_train.num_steps):
      logging.info("Stage II already trained in %s: reusing it", workdir)
    else:
      out = train_regressor.train_and_evaluate(config, workdir)
      timings["stage2_s"] = time.perf_counter() - t
      if "stopped_at_step" in out:
        return out
  finally:
    with config.unlocked():
      config.evaluation.after_training = after
  t = time.perf_counter()
  results = evaluate.evaluate(config, workdir)
  report = evaluate.write_report(results, workdir, config) if jax.process_index() == 0 else None
  timings["eval_s"] = time.perf_counter() - t
  timings["total_s"] = time.perf_counter() - t0
  results = evaluate.json_ready(results)
  results["timings"] = timings
  print(evaluate.tables_markdown(results))
  print(f"\n{evaluate.summary_line(results)}\nreport: {report}\ntimings: "
        + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
  return results
