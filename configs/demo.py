"""README's demo: the whole method on the built-in procedural zoo, on a 2-core CPU in under 20 minutes.

  python -m launch.main --config=configs/demo.py --workdir=runs/demo

Builds the zoo's voxel bank, renders the synthetic dataset, trains Stage I (configs/embedder_cpu.py) and
Stage II (configs/regressor_cpu.py), evaluates, and prints the tables with the path of the report. A second
launch reuses everything already built or trained.
"""

from configs import regressor_cpu


def get_config():
  config = regressor_cpu.get_config()
  config.stage = "all"
  config.images.render_workers = 2  # rendering is the one embarrassingly parallel step
  # Shorter schedules than the two recipes so that the whole demo fits 20 minutes of a 2-core CPU with
  # minutes to spare: this machine's speed wanders by +-25 % from one quarter hour to the next. With
  # Stage I 8,000 / Stage II 4,000 steps it took 20 min 16 s from a fresh clone (Stage I 345 s at 16^3,
  # rendering 72 s, Stage II 731 s at ~175 images/s); README "Demo results" has this setting's figures.
  config.train.num_steps = 7_000
  # Stage I on 16^3 voxels directly instead of embedder_cpu's 32^3 + 2x box filter: ~1.5x faster per step
  # (1,015 vs ~670 samples/s: the 32^3 rotation), and Stage II's on-device targets skip it too. What it
  # costs (README "Stage I results"): nearest-neighbour retrieval of the shape vector 0.72 vs 0.85 at 10,000
  # steps, rotation 11.6 vs 12.8 deg; Stage II's classifier retrieval reads neither.
  config.data.resolution = 16
  config.model.input_pool = 1
  config.regressor_train.num_steps = 3_000
  # 10,000 training renders, not regressor_cpu's 30,000: rendering and decoding the extra 20,000 would take
  # ~2.5 of the demo's minutes, and 3,000 steps of 32 see each of 10,000 images ~10 times already.
  config.images.num_train = 10_000
  return config
