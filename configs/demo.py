"""README's demo: the whole method on the built-in procedural zoo, on a 2-core CPU in about 20 minutes.

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
  return config
