"""The single benchmark command: ours vs the alternatives, measured in one run, as a table and JSON.

  python -m launch.benchmark                      # every row, full sizes (a few minutes on a CPU)
  python -m launch.benchmark --quick              # fewer repeats, no 1e6 retrieval, tiny pipeline data
  python -m launch.benchmark --rows=rotation,retrieval --out=/tmp/bench.json
  python -m launch.benchmark --rows=stage2,inference --backbone=resnet34

Rows (see `disent_jax/bench/suite.py`, which holds everything but the flags): rotation, anchor_labels,
stage1, pipeline, retrieval, stage2, inference (and "feed" rows, pipeline vs Stage II step, when both
pipeline and stage2 run). PyTorch is optional (`pip install torch==2.13.0`): without it the PyTorch
rows say "torch not installed". Exits with status 1 when a row failed (its error is in the table).

Like `launch.main`, the process re-executes itself once with glibc malloc tunables that keep freed memory
in the heap, so the steps are timed under the allocator settings training runs with (PyTorch runs in the
same process and gets the same allocator). DISENT_KEEP_MALLOC=1 opts out; the JSON records the setting.
"""

import sys

from launch import _malloc  # before jax: the malloc settings must be in place at process start

if __name__ == "__main__":
  _malloc.reexec_with_malloc_tunables("launch.benchmark")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from disent_jax import errors  # noqa: E402
from disent_jax.bench import suite  # noqa: E402

_ROWS = flags.DEFINE_list("rows", None, f"Rows to run (default: all): {', '.join(suite.ROWS)}.")
_OUT = flags.DEFINE_string("out", "bench.json", "Where to write the JSON report.")
_QUICK = flags.DEFINE_bool("quick", False, "Fewer repeats, no 1e6 retrieval row, a tiny pipeline dataset, "
                           "ResNet-18 for the stage2 and inference rows.")
_REPEATS = flags.DEFINE_integer("repeats", None, "Timed repeats per measurement (default 5, quick 3).",
                                lower_bound=1)
_CACHE_DIR = flags.DEFINE_string("cache_dir", suite.DEFAULT_CACHE,
                                 "Cache of voxel banks and the pipeline's synthetic dataset.")
_PIPELINE_DATA_DIR = flags.DEFINE_string("pipeline_data_dir", None,
                                         "A finished dataset for the pipeline row (default: render a "
                                         "synthetic one into --cache_dir).")
_TORCH_THREADS = flags.DEFINE_integer("torch_threads", None, "PyTorch threads (default: the CPU count).",
                                      lower_bound=1)
_RETRIEVAL_SIZES = flags.DEFINE_list("retrieval_sizes", None,
                                     "Retrieval database sizes (default 1e4,1e5,1e6; quick 1e4,1e5).")
_BACKBONE = flags.DEFINE_string("backbone", None, "ResNet of the stage2 and inference rows (default "
                                "resnet50, quick resnet18).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  overrides = {"cache_dir": _CACHE_DIR.value, "pipeline_data_dir": _PIPELINE_DATA_DIR.value,
               "torch_threads": _TORCH_THREADS.value}
  if _REPEATS.value is not None:
    overrides["repeats"] = _REPEATS.value
  if _RETRIEVAL_SIZES.value is not None:
    overrides["retrieval_sizes"] = tuple(int(float(x)) for x in _RETRIEVAL_SIZES.value)
  if _BACKBONE.value is not None:
    overrides["stage2_backbone"] = overrides["inference_backbone"] = _BACKBONE.value
  settings = (suite.quick_settings(**overrides) if _QUICK.value
              else suite.SuiteSettings(**overrides))
  try:
    names = suite.check_row_names(_ROWS.value)
  except errors.ConfigError as e:
    raise app.UsageError(str(e)) from e
  report = suite.run_suite(names, settings)
  print()
  print(suite.format_table(report))
  path = suite.write_json(report, _OUT.value)
  print(f"\nJSON: {path.resolve()}")
  if report.errors:
    print(f"{len(report.errors)} row(s) failed: {[r.name for r in report.errors]}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  app.run(main)
