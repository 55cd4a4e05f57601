"""Stage I train-step throughput: ours (each conv implementation) vs the same network in PyTorch.

`python -m launch.bench_stage1 [--batch=64] [--resolution=32] [--repeats=5]` prints samples/s (median of
interleaved repeats, so both frameworks see the same machine load), the ratio to PyTorch, compile time and
parameter counts. Without PyTorch (`pip install torch==2.13.0`) its rows say so.
"""

import functools
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from configs import default
from disent_jax import geometry
from disent_jax import train_embedder
from disent_jax import train_lib
from disent_jax.cad import zoo
from disent_jax.cad import voxel_bank as voxel_bank_lib
from disent_jax.bench import torch_voxnet

_BATCH = flags.DEFINE_integer("batch", 64, "Global batch size.", lower_bound=1)
_RESOLUTION = flags.DEFINE_integer("resolution", 32, "Voxels per axis.", lower_bound=8)
_REPEATS = flags.DEFINE_integer("repeats", 5, "Interleaved timed repeats.", lower_bound=1)
_STEPS = flags.DEFINE_integer("steps", 3, "Steps per timed repeat.", lower_bound=1)
_IMPLS = flags.DEFINE_list("impls", ["lax", "auto"], "Our conv implementations to time.")
_CACHE = flags.DEFINE_string("cache_dir", "/tmp/disent_jax_bench_cache", "Voxel bank cache.")


def _ours(bank, impl):
  config = default.get_config()
  config.data.resolution = bank.resolution
  config.train.batch_size = _BATCH.value
  config.model.conv_impl = impl
  anchors = geometry.rotation_anchors(config.anchors.n)
  model = train_embedder.create_model(config, bank.num_models, len(anchors))
  import optax  # pylint: disable=import-outside-toplevel
  tx = optax.adam(config.train.learning_rate)
  mesh = train_lib.make_mesh(1)
  repl = train_lib.replicated_sharding(mesh)
  state = jax.jit(functools.partial(train_embedder.create_train_state, model=model,
                                    resolution=bank.resolution, tx=tx), out_shardings=repl)(
                                        jax.random.key(0))
  step = jax.jit(functools.partial(train_embedder.train_step, batch_size=_BATCH.value,
                                   loss_kwargs=train_embedder._loss_kwargs(config)),  # pylint: disable=protected-access
                 donate_argnums=(0,))
  vols = jnp.asarray(bank.volumes)
  anc = jnp.asarray(anchors, jnp.float32)
  holder = {"state": state, "i": 0}

  def run():
    for _ in range(_STEPS.value):
      holder["state"], m = step(holder["state"], jax.random.key(holder["i"]), vols, anc)
      holder["i"] += 1
    jax.block_until_ready(m["loss"])

  t0 = time.perf_counter()
  run()
  compile_s = time.perf_counter() - t0
  return run, compile_s, train_lib.param_count(state.params)


def _torch(bank, num_anchors):
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None
  model, step = torch_voxnet.make_step(bank.num_models, num_anchors, bank.resolution, threads=2)
  rng = np.random.default_rng(0)
  b = _BATCH.value
  idx = rng.integers(0, bank.num_models, b)
  q = np.asarray(geometry.random_quaternions(jax.random.key(1), (b,)))
  rot = np.asarray(geometry.quat_to_matrix(q))
  anchors = geometry.rotation_anchors(7)
  a, res = (np.asarray(x) for x in geometry.encode_rotation(jnp.asarray(q), anchors))
  args = (torch.tensor(bank.volumes[idx]), torch.tensor(rot, dtype=torch.float32),
          torch.tensor(idx).long(), torch.tensor(a).long(), torch.tensor(res, dtype=torch.float32))

  def run():
    for _ in range(_STEPS.value):
      step(*args)

  t0 = time.perf_counter()
  run()
  return run, time.perf_counter() - t0, torch_voxnet.param_count(model)


def main(argv):
  del argv
  bank = voxel_bank_lib.build_voxel_bank(zoo.procedural_zoo(0), _RESOLUTION.value, _CACHE.value)
  runners = {f"jax conv_impl={impl}": _ours(bank, impl) for impl in _IMPLS.value}
  t = _torch(bank, len(geometry.rotation_anchors(7)))
  if t is None:
    print("PyTorch: not installed (pip install torch==2.13.0) - no reference rows")
  else:
    runners["pytorch (2 threads)"] = t
  times = {k: [] for k in runners}
  for _ in range(_REPEATS.value):
    for k, (run, _, _) in runners.items():
      t0 = time.perf_counter()
      run()
      times[k].append((time.perf_counter() - t0) / _STEPS.value)
  ref = np.median(times["pytorch (2 threads)"]) if t is not None else None
  print(f"Stage I train step, batch {_BATCH.value}, {_RESOLUTION.value}^3, {bank.num_models} models, "
        f"{jax.devices()[0].platform}")
  print(f"{'variant':28s} {'params':>10s} {'compile s':>10s} {'ms/step':>9s} {'samples/s':>10s} "
        f"{'vs torch':>9s}")
  for k, (_, compile_s, params) in runners.items():
    med = float(np.median(times[k]))
    ratio = f"{ref / med:9.2f}" if ref is not None else "        -"
    print(f"{k:28s} {params:10,d} {compile_s:10.1f} {med * 1e3:9.1f} {_BATCH.value / med:10.1f} {ratio}")


if __name__ == "__main__":
  app.run(main)
