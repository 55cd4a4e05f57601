"""Default configuration: every field of every stage, documented. Other config files override a few.

`config.stage` selects what `launch/main.py` runs:
  'embedder'       train + evaluate Stage I (the voxel embedding);
  'embedder_eval'  evaluate the latest Stage I checkpoint of the workdir;
  'regressor'      train Stage II (image -> embedding, rotation, translation) on top of the workdir's Stage I,
                   then evaluate it;
  'eval'           evaluate the workdir's Stage I + II checkpoints on an image split (results.json/md, figures);
  'all'            the whole method: Stage I, Stage II, evaluation (each finished stage is reused).
Load in a notebook by import (`from configs import default; cfg = default.get_config()`), not through flags.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.stage = "embedder"  # 'embedder' | 'embedder_eval' | 'regressor' | 'eval' | 'all'
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
  config.model.conv_impl = "auto"  # 'auto' | 'lax' | 's2d' | 'im2col' | 'planes' (disent_jax/models/conv3d.py)
  # 'auto' | 'channels_last' | 'channels_first' for the convolutional features (models/embedder.py): the
  # same network; 'auto' is channels_first on CPU (faster there), channels_last elsewhere.
  config.model.layout = "auto"
  # Box-filter the R^3 input by this factor before conv1 (1: the paper); see models/embedder.py.
  config.model.input_pool = 1
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
  # Beyond the paper (0 = off): draw each model twice per batch under two rotations and penalise how far
  # its shape vector moves, relative to the spread across the batch (losses.pair_invariance).
  config.loss.shape_invariance_weight = 0.0

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
  config.eval.symmetric_categories = ""

  # --- image dataset (Stage II and evaluation) ---
  config.images = ml_collections.ConfigDict()
  # 'synthetic': renders of config.data.cad_source, built (once, cached) under images.data_dir;
  # 'dir:/path': a finished dataset directory of the project's features (e.g. from launch.prepare_pascal3d).
  config.images.source = "synthetic"
  config.images.data_dir = ""  # '' -> <workdir>/data
  config.images.image_size = 128  # synthetic: side of the full render
  config.images.crop_size = 64  # synthetic: side of the stored object crop
  config.images.num_train = 10_000  # synthetic split sizes
  config.images.num_validation = 500
  config.images.num_test = 1_000
  config.images.seed = 0  # synthetic dataset seed
  config.images.render_workers = 0  # synthetic: rendering processes (0: in this process)
  config.images.render_backend = "auto"  # synthetic: 'auto' (GL if EGL works) | 'gl' | 'raycast'
  config.images.input_size = 0  # crop side fed to the network; 0: the dataset's crop size
  config.images.augment = True  # box jitter + photometric jitter on training crops
  config.images.loader_workers = 0  # grain worker processes for training batches
  # Decode the training split once into memory (input_pipeline.decode_split): ~2x less pipeline work per
  # example, which on a small CPU is time taken from the training step. Costs RAM (~0.46 GiB for the
  # synthetic default's 10,000 examples; skipped with a warning above half the physical memory).
  config.images.cache_decoded = False

  # --- translation anchors (paper 3.3; see geometry.TranslationGrid) ---
  config.translation = ml_collections.ConfigDict()
  config.translation.lower = (-0.25, -0.25, 0.25)
  config.translation.upper = (1.5, 1.5, 2.75)
  config.translation.cells = (7, 7, 10)

  # --- Stage II model and losses ---
  config.regressor = ml_collections.ConfigDict()
  config.regressor.backbone = "resnet50"  # 'resnet50' (paper) | 'resnet34' | 'resnet18' | 'resnet_tiny'
  config.regressor.backbone_width = 0  # > 0: override the backbone's base width (num_filters, 64)
  config.regressor.backbone_stages = ()  # non-empty: override its blocks per stage, e.g. (1, 1, 1, 1)
  # 'auto' (channels-first to train on CPU, faster there) | 'channels_last' | 'channels_first' (resnet.ResNet.layout)
  config.regressor.backbone_layout = "auto"
  config.regressor.imagenet_weights = ""  # torchvision ResNet state dict (.pth/.npz/.safetensors); '' = scratch
  config.regressor.use_embedding = True  # False: the paper's "w/o embedding" ablation (single stage)
  config.regressor.init_heads_from_embedder = False  # start shape/rotation heads from Stage I's
  config.regressor.translation_hidden = 0  # hidden width of the translation head
  config.regressor.dtype = "float32"
  config.regressor.embedding_weight = 1.0  # L1 to the frozen embedder's shape and pose vectors
  config.regressor.shape_weight = 1.0
  config.regressor.anchor_weight = 1.0
  config.regressor.residual_weight = 1.0
  config.regressor.cell_weight = 1.0  # translation anchor-cell cross-entropy
  config.regressor.cell_residual_weight = 1.0  # translation residual Huber
  config.regressor.anchor_soft_sigma_deg = 0.0  # as config.loss, for Stage II's rotation head
  config.regressor.residual_radius_deg = 0.0

  # --- Stage II training (same fields as config.train) ---
  config.regressor_train = ml_collections.ConfigDict()
  config.regressor_train.batch_size = 32
  config.regressor_train.num_steps = 5_000  # paper: 16 epochs of 10,000 images / 32
  config.regressor_train.learning_rate = 1e-4  # Adam (paper)
  config.regressor_train.schedule = "constant"  # 'constant' | 'cosine' (with warmup)
  config.regressor_train.warmup_steps = 0
  config.regressor_train.parallel = "jit"  # 'jit' | 'pmap'
  config.regressor_train.num_devices = 0  # 0: all devices
  config.regressor_train.log_every = 50
  config.regressor_train.checkpoint_every = 500
  config.regressor_train.keep_checkpoints = 3

  # --- evaluation of the whole method (config.stage 'eval', and after Stage II) ---
  config.evaluation = ml_collections.ConfigDict()
  config.evaluation.split = "test"
  config.evaluation.batch_size = 64
  config.evaluation.after_training = True  # evaluate at the end of Stage II training
  config.evaluation.num_qualitative = 12  # rows of the qualitative figure (0: none)
  # Pose is scored on objects that are neither occluded, truncated nor difficult (paper protocol);
  # retrieval and Table 4 use every object.
  config.evaluation.pose_on_clean_only = True
  return config
