"""Stage II as in the paper (3.3, 3.4), for a GPU/TPU: ResNet50 on 224 px crops, Adam 1e-4, 16 epochs.

Run after Stage I in the same workdir (configs/embedder_paper.py), or use config.stage='all':
  python -m launch.main --config=configs/regressor_paper.py --workdir=DIR
`--config.regressor.imagenet_weights=/path/resnet50.pth` starts the backbone from ImageNet as the paper
does (a torchvision state dict; nothing is downloaded). The synthetic dataset: 10,000 training renders of
320 px with 224 px object crops.
"""

from configs import embedder_paper


def get_config():
  config = embedder_paper.get_config()
  config.stage = "regressor"
  config.images.image_size = 320
  config.images.crop_size = 224
  config.images.num_train = 10_000
  config.regressor.backbone = "resnet50"
  config.regressor_train.batch_size = 32
  config.regressor_train.num_steps = 16 * 10_000 // 32  # 16 epochs
  config.regressor_train.learning_rate = 1e-4
  config.regressor_train.schedule = "constant"
  return config
