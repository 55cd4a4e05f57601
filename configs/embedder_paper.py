"""Stage I at the paper's scale (GPU/TPU): 100 epochs x 10,000 samples, batch 64, Adam 1e-4, 32^3."""

from configs import default


def get_config():
  config = default.get_config()
  config.stage = "embedder"
  config.model.norm = "none"  # VoxNet as in the paper: no normalisation (the conv biases come back)
  return config
