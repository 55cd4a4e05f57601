"""The shared body of the `prepare_*` dataset commands: build, report bad input without a traceback,
print the dataset path, the time taken and the split sizes."""

import logging as py_logging
import time
from collections.abc import Callable

from absl import app
from absl import logging
import tensorflow_datasets as tfds

from disent_jax.errors import DisentError


def run(argv: list[str], build: Callable[[], str], title: str, unit: str, name_width: int,
        count_width: int) -> None:
  """Runs `build()` (returns the dataset directory) and prints its splits.

  Args:
    argv: the absl argv (no positional arguments allowed).
    build: builds (or reuses) the dataset and returns its directory.
    title: what the dataset is called in the printout.
    unit: what one example is (e.g. 'objects').
    name_width, count_width: column widths of the split table.
  """
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  py_logging.getLogger().setLevel(py_logging.INFO)
  logging.set_verbosity(logging.INFO)
  start = time.perf_counter()
  try:
    path = build()
  except DisentError as e:  # Bad input: the message says what and where; no traceback.
    raise SystemExit(f"error: {e}") from None
  builder = tfds.builder_from_directory(path)
  print(f"{title}: {path} ({time.perf_counter() - start:.0f} s)")
  for name, split in sorted(builder.info.splits.items()):
    print(f"  {name:{name_width}s} {split.num_examples:{count_width}d} {unit}")
