"""Stage I train-step throughput: ours (each conv implementation) vs the same network in PyTorch.

`python -m launch.bench_stage1 [--batch=64] [--resolution=32] [--repeats=5]` prints samples/s (median of
interleaved repeats, so both frameworks see the same machine load), the ratio to PyTorch, compile time and
parameter counts. Without PyTorch (`pip install torch==2.13.0`) its rows say so. The measuring code lives
in `disent_jax/bench/stage1.py` (shared with `launch.benchmark`'s 'stage1' row).
"""

from absl import app
from absl import flags
import jax

from disent_jax.bench import stage1

_BATCH = flags.DEFINE_integer("batch", 64, "Global batch size.", lower_bound=1)
_RESOLUTION = flags.DEFINE_integer("resolution", 32, "Voxels per axis.", lower_bound=8)
_REPEATS = flags.DEFINE_integer("repeats", 5, "Interleaved timed repeats.", lower_bound=1)
_STEPS = flags.DEFINE_integer("steps", 3, "Steps per timed repeat.", lower_bound=1)
_IMPLS = flags.DEFINE_list("impls", ["lax", "auto"],
                           "Our conv implementations to time, each optionally with ':layout' appended "
                           "(config.model.layout), e.g. 'auto:channels_last'.")
_THREADS = flags.DEFINE_integer("torch_threads", 2, "PyTorch threads.", lower_bound=1)
_CACHE = flags.DEFINE_string("cache_dir", stage1.DEFAULT_CACHE, "Voxel bank cache.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  bank = stage1.load_bank(_RESOLUTION.value, _CACHE.value)
  res = stage1.bench_stage1(bank, _BATCH.value, _STEPS.value, _REPEATS.value, tuple(_IMPLS.value),
                            torch_threads=_THREADS.value)
  variants = res["variants"]
  if not res["torch_installed"]:
    print("PyTorch: not installed (pip install torch==2.13.0) - no reference rows")
  ref = variants["pytorch"]["step_s"] if "pytorch" in variants else None
  print(f"Stage I train step, batch {_BATCH.value}, {_RESOLUTION.value}^3, {bank.num_models} models, "
        f"{jax.devices()[0].platform}")
  print(f"{'variant':34s} {'params':>10s} {'compile s':>10s} {'ms/step':>9s} {'samples/s':>10s} "
        f"{'vs torch':>9s}")
  for k, v in variants.items():
    name = f"pytorch ({_THREADS.value} threads)" if k == "pytorch" else k
    med = float(v["step_s"])
    ratio = f"{ref / med:9.2f}" if ref is not None else "        -"
    print(f"{name:34s} {v['params']:10,d} {v['compile_s']:10.1f} {med * 1e3:9.1f} {_BATCH.value / med:10.1f} "
          f"{ratio}")


if __name__ == "__main__":
  app.run(main)
