"""A tiny configuration for tests and notebooks: 16^3 voxels, a few steps, small embedding, 1-block ResNet."""

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
  # Stage II: a 1-block ResNet on 32 px crops of a few dozen renders.
  config.images.image_size = 48
  config.images.crop_size = 32
  config.images.num_train = 48
  config.images.num_validation = 0
  config.images.num_test = 24
  config.images.augment = False
  config.images.render_backend = "raycast"  # no GL context needed in test processes
  config.regressor.backbone = "resnet_tiny"
  config.translation.cells = (2, 2, 2)
  config.regressor_train.batch_size = 8
  config.regressor_train.num_steps = 3
  config.regressor_train.learning_rate = 1e-3
  config.regressor_train.log_every = 1
  config.regressor_train.checkpoint_every = 2
  config.evaluation.batch_size = 16
  config.evaluation.num_qualitative = 4
  return config
