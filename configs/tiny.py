"""A tiny configuration for tests and notebooks: 16^3 voxels, a few steps, small embedding."""

from configs import default


def get_config():
  config = default.get_config()
  config.stage = "embedder"
  config.data.resolution = 16
  config.model.shape_dim = 32
  config.model.pose_dim = 32
  config.model.conv_features = (8, 8)
  config.anchors.n = 4
  config.train.batch_size = 16
  config.train.num_steps = 3
  config.train.learning_rate = 1e-3
  config.train.log_every = 1
  config.train.checkpoint_every = 2
  config.eval.num_rotations = 4
  config.eval.batch_size = 64
  return config
