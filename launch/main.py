"""Entry point: `python -m launch.main --config=configs/<file>.py --workdir=DIR [--config.x.y=...]`.

This is the only module with training flags. `config.stage` selects the stage; every stage is a plain
function `fn(config, workdir)` in the library, callable from a notebook as well.
"""

import logging as py_logging
import os

from launch import _malloc  # before jax: the malloc settings must be in place at process start

if __name__ == "__main__":
  _malloc.reexec_with_malloc_tunables("launch.main")

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from disent_jax import errors

_CONFIG = config_flags.DEFINE_config_file("config", None, "Configuration file (configs/*.py).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder; a second launch resumes from it.")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False,
                                 "Call jax.distributed.initialize() (multi-host GPU/TPU).")
flags.mark_flags_as_required(["config", "workdir"])


def _stages():
  # Imported here so `--helpfull` stays fast and a typo in one stage cannot break the others' flags.
  from disent_jax import end_to_end
  from disent_jax import eval_embedder
  from disent_jax import evaluate
  from disent_jax import train_embedder
  from disent_jax import train_regressor
  return {
      "embedder": train_embedder.train_and_evaluate,
      "embedder_eval": lambda c, w: eval_embedder.write_results(eval_embedder.evaluate(c, w), w),
      "regressor": train_regressor.train_and_evaluate,
      "eval": evaluate.run,
      "all": end_to_end.run,
  }


class _DropLibraryChatter(py_logging.Filter):
  """Orbax logs several INFO lines per checkpoint; keep its warnings, drop the rest."""

  def filter(self, record: py_logging.LogRecord) -> bool:
    return record.levelno >= py_logging.WARNING or "orbax" not in record.pathname


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _DISTRIBUTED.value:
    jax.distributed.initialize()  # before any other JAX call
  logging.set_verbosity(logging.INFO)
  for handler in py_logging.getLogger().handlers + py_logging.getLogger("absl").handlers:
    handler.addFilter(_DropLibraryChatter())
  logging.get_absl_handler().addFilter(_DropLibraryChatter())
  config = _CONFIG.value
  stages = _stages()
  if config.stage not in stages:
    raise app.UsageError(f"unknown config.stage {config.stage!r}; choose from {sorted(stages)}")
  logging.info("process %d/%d, devices: %s", jax.process_index(), jax.process_count(),
               jax.devices())
  os.makedirs(_WORKDIR.value, exist_ok=True)
  try:
    stages[config.stage](config, _WORKDIR.value)
  except errors.DisentError as e:  # bad input: a clear message, not a traceback
    raise SystemExit(f"error: {e}") from e


if __name__ == "__main__":
  app.run(main)
