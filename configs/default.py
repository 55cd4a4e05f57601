"""Default configuration: every field of every stage, documented. Other config files override a few.

`config.stage` selects what `launch/main.py` runs: 'embedder' (train + evaluate Stage I) or 'embedder_eval'
(evaluate the latest Stage I checkpoint of the workdir). Stage II and the full evaluation join later.
Load in a notebook by import (`from configs import default; cfg = default.get_config()`), not through flags.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.stage = "embedder"  # which stage launch/main.py runs: 'embedder' | 'embedder_eval'
  config.seed = 0  # the one seed: split into init, data and loop keys

  # --- CAD database and voxels ---
  config.data = ml_collections.ConfigDict()
  config.data.cad_source = "zoo"  # 'zoo[:SEED]' | 'pascal3d:/path/CAD' | 'modelnet:/path[:split]' | 'folder:/path'
  config.data.resolution = 32  # voxel grid size R (the paper: 32)
  config.data.fill = True  # solid occupancy (binvox-like); False: surface voxels only
  config.data.cache_dir = ""  # voxel bank cache; '' -> <workdir>/cache
  config.data.skip_bad_files = False  # True: warn and skip unreadable meshes instead of failing

  # --- Stage I model ---
  config.model = ml_collections.ConfigDict()
  config.model.shape_dim = 512  # shape vector size (paper: 512)
  config.model.pose_dim = 512  # pose vector size (paper: 512)
  config.model.conv_features = (32, 32)  # channels of the two 3D convolutions (VoxNet)
  config.model.disentangle = True  # False: the paper's joint 1024-d "w/o disentangling" ablation
  config.model.norm = "batch"  # 'batch' | 'none' (paper VoxNet has none)
  config.model.embedding_activation = "none"  # 'none' | 'relu' | 'tanh' on the embedding vector
  config.model.head_hidden = 0  # hidden width of the rotation head (0: linear)
  config.model.conv_impl = "auto"  # 'auto' | 'lax' | 's2d' | 'im2col' (disent_jax/models/conv3d.py)
  config.model.dtype = "float32"  # computation dtype: 'float32' | 'bfloat16'

  # --- rotation anchors (paper Eq. 1) ---
  config.anchors = ml_collections.ConfigDict()
  config.anchors.n = 7  # grid per dimension: 7 -> 259 anchors (paper); 1, 4, 9 for Table 3

  # --- Stage I losses ---
  config.loss = ml_collections.ConfigDict()
  config.loss.shape = "ce"  # 'ce' (paper, small databases) | 'triplet' (large databases)
  config.loss.shape_weight = 1.0
  config.loss.anchor_weight = 1.0
  config.loss.residual_weight = 1.0
  config.loss.huber_delta = 1.0  # Huber threshold of the residual loss
  config.loss.triplet_margin = 0.2
  # Beyond the paper (0 = the paper's loss): soft anchor labels exp(-d^2 / 2 sigma^2) over the geodesic
  # distance d to each anchor, and residual regression for every anchor within a radius of the rotation.
  config.loss.anchor_soft_sigma_deg = 0.0
  config.loss.residual_radius_deg = 0.0

  # --- Stage I training ---
  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 64  # global batch (split over devices)
  config.train.num_steps = 15_625  # paper: 100 epochs x 10,000 samples / 64
  config.train.learning_rate = 1e-4  # Adam (paper: 1e-4)
  config.train.schedule = "constant"  # 'constant' | 'cosine' (with warmup)
  config.train.warmup_steps = 0
  config.train.parallel = "jit"  # 'jit' (NamedSharding mesh) | 'pmap' (maintenance-mode JAX API)
  config.train.num_devices = 0  # 0: all devices
  config.train.log_every = 50  # steps between scalar logs / progress updates
  config.train.checkpoint_every = 500  # steps between checkpoints
  config.train.keep_checkpoints = 3

  # --- Stage I evaluation ---
  config.eval = ml_collections.ConfigDict()
  config.eval.num_rotations = 32  # held-out random rotations per database model
  config.eval.seed = 1_000_003  # distinct from training keys
  config.eval.batch_size = 256
  config.eval.after_training = True  # evaluate at the end of train_and_evaluate
  # Categories treated as symmetric in reports in addition to the models' own symmetry metadata (real CAD
  # collections carry none; e.g. 'bottle' for Pascal3D+). Comma-separated.
  config.eval.symmetric_categories = ""  # evaluate at the end of train_and_evaluate
  return config
