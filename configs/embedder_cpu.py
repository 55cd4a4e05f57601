"""Stage I sized for a 2-core CPU (see README for wall times and figures): the paper's network at 32^3,
trained with a faster recipe than the paper's (BatchNorm, Adam 1e-3 with warmup + cosine decay)."""

from configs import default


def get_config():
  config = default.get_config()
  config.stage = "embedder"
  config.train.batch_size = 64
  config.train.num_steps = 4000
  config.train.learning_rate = 1e-3
  config.train.schedule = "cosine"
  config.train.warmup_steps = 200
  config.train.log_every = 50
  config.train.checkpoint_every = 500
  config.eval.num_rotations = 32
  return config
