"""Tests of disent_jax/config_check.py: shipped configs pass, every kind of mistake is named precisely."""

from __future__ import annotations

import importlib
import math
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import default
from disent_jax import config_check
from disent_jax.errors import ConfigError

_CONFIG_DIR = pathlib.Path(__file__).resolve().parents[1] / "configs"
_SHIPPED = sorted(p.stem for p in _CONFIG_DIR.glob("*.py") if p.stem != "__init__")


def _problems(config, stage: str = "all", **kwargs) -> str:
  with pytest.raises(ConfigError) as info:
    config_check.validate(config, stage=stage, **kwargs)
  return str(info.value)


def _set(config, path: str, value) -> None:
  """config[path] = value on a plain-dict copy's nested level (bypasses ConfigDict's type safety)."""
  *parents, key = path.split(".")
  node = config
  for p in parents:
    node = node[p]
  node[key] = value


def _plain(config: ml_collections.ConfigDict) -> dict:
  return config.to_dict()


# ---------------------------------------------------------------------------------------------------------
# Shipped configs.


@pytest.mark.parametrize("name", _SHIPPED)
@pytest.mark.parametrize("stage", config_check.STAGES)
def test_every_shipped_config_validates(name, stage):
  config = importlib.import_module(f"configs.{name}").get_config()
  config_check.validate(config, stage=stage)
  config_check.validate(ml_collections.FrozenConfigDict(config), stage=stage)
  config_check.validate(config.to_dict(), stage=stage)  # A plain nested dict works too.


def test_shipped_configs_were_found():
  assert {"default", "tiny", "embedder_cpu", "embedder_paper", "regressor_paper"} <= set(_SHIPPED)


# ---------------------------------------------------------------------------------------------------------
# Keys and types.


def test_unknown_keys_are_named_with_suggestions():
  config = _plain(default.get_config())
  config["train"]["batchsize"] = 32
  config["lerning_rate"] = 1e-3
  config["model"]["zzz"] = 1
  msg = _problems(config)
  assert "train.batchsize=32: unknown key; allowed: did you mean train.batch_size?" in msg
  assert "lerning_rate=0.001: unknown key" in msg
  assert "model.zzz=1: unknown key; allowed: known keys here:" in msg and "shape_dim" in msg
  assert "3 problems" in msg


def test_missing_keys_and_sub_configs():
  config = _plain(default.get_config())
  del config["anchors"]["n"]
  del config["eval"]
  config["loss"] = 3
  msg = _problems(config)
  assert "anchors.n: missing key; allowed: a value like the default 7" in msg
  assert "eval: missing key" in msg
  assert "loss=3: wrong type int; allowed: a sub-config" in msg


@pytest.mark.parametrize("path,value,expected", [
    ("train.batch_size", "64", "train.batch_size='64': wrong type str; allowed: an int"),
    ("train.batch_size", 64.0, "train.batch_size=64.0: wrong type float; allowed: an int"),
    ("train.batch_size", True, "train.batch_size=True: wrong type bool; allowed: an int"),
    ("model.disentangle", 1, "model.disentangle=1: wrong type int; allowed: a bool"),
    ("model.disentangle", "yes", "model.disentangle='yes': wrong type str; allowed: a bool"),
    ("train.learning_rate", "1e-3",
     "train.learning_rate='1e-3': wrong type str; allowed: a float (or an int)"),
    ("train.learning_rate", False, "train.learning_rate=False: wrong type bool"),
    ("train.learning_rate", math.nan, "train.learning_rate=nan: not finite; allowed: a finite number"),
    ("translation.lower", (0.0, 0.0), "translation.lower=(0.0, 0.0): wrong length 2; allowed: a tuple of 3"),
    ("translation.cells", (7, 7, 2.5), "translation.cells=(7, 7, 2.5): element 2: wrong type float"),
    ("translation.upper", (1.0, math.inf, 2.0), "element 1: not finite"),
    ("model.conv_features", 32, "model.conv_features=32: wrong type int; allowed: a tuple of 2"),
    ("data.cad_source", None, "data.cad_source=None: wrong type NoneType; allowed: a string"),
])
def test_wrong_types_are_named(path, value, expected):
  config = _plain(default.get_config())
  _set(config, path, value)
  assert expected in _problems(config)


def test_accepted_type_variants():
  config = _plain(default.get_config())
  _set(config, "train.learning_rate", 1)  # int for float
  _set(config, "loss.shape_weight", np.float32(0.5))
  _set(config, "train.batch_size", np.int64(32))
  _set(config, "model.disentangle", np.bool_(False))
  _set(config, "model.conv_features", [16, 16])  # list for tuple
  _set(config, "translation.lower", (0, 0, 0))  # ints for floats inside a tuple
  config_check.validate(config, stage="all")


# ---------------------------------------------------------------------------------------------------------
# Ranges.


@pytest.mark.parametrize("path,value,allowed", [
    ("stage", "train", "one of 'embedder', 'embedder_eval', 'regressor', 'eval', 'all'"),
    ("seed", -1, "an integer in 0..2**63-1"),
    ("data.resolution", 10, "an integer >= 11"),
    ("data.resolution", 0, "an integer >= 11"),
    ("model.shape_dim", 0, "an integer >= 1"),
    ("model.conv_features", (32, 0), "2 integers >= 1"),
    ("model.norm", "layer", "one of 'batch', 'none'"),
    ("model.embedding_activation", "gelu", "one of 'none', 'relu', 'tanh'"),
    ("model.conv_impl", "cudnn", "one of 'auto', 'lax', 's2d', 'im2col'"),
    ("model.layout", "NCDHW", "one of 'auto', 'channels_last', 'channels_first'"),
    ("model.dtype", "float16", "one of 'float32', 'bfloat16'"),
    ("anchors.n", 0, "an integer in 1..12"),
    ("anchors.n", 13, "an integer in 1..12"),
    ("loss.shape", "hinge", "one of 'ce', 'triplet'"),
    ("loss.anchor_weight", -0.5, "a finite number >= 0"),
    ("loss.huber_delta", 0.0, "a finite number > 0"),
    ("loss.residual_radius_deg", 190.0, "an angle in [0, 180] degrees"),
    ("train.batch_size", 0, "an integer >= 1"),
    ("train.batch_size", -8, "an integer >= 1"),
    ("train.learning_rate", 0.0, "a finite number > 0"),
    ("train.learning_rate", -1e-4, "a finite number > 0"),
    ("train.schedule", "linear", "one of 'constant', 'cosine'"),
    ("train.parallel", "shard_map", "one of 'jit', 'pmap'"),
    ("train.keep_checkpoints", 0, "an integer >= 1"),
    ("eval.num_rotations", 0, "an integer >= 1"),
    ("images.source", "s3://bucket", "'synthetic' or 'dir:/path/to/dataset'"),
    ("images.render_backend", "vulkan", "one of 'auto', 'gl', 'raycast'"),
    ("translation.cells", (7, 0, 10), "3 integers >= 1"),
    ("regressor.backbone", "vgg16", "one of 'resnet18', 'resnet34', 'resnet50', 'resnet_tiny'"),
    ("regressor.backbone_width", -1, "an integer >= 0"),
    ("regressor.backbone_layout", "nchw", "one of 'auto', 'channels_last', 'channels_first'"),
    ("regressor.backbone_stages", (2, 0), "() or a tuple of integers >= 1"),
    ("regressor.backbone_stages", (2, "2"), "() or a tuple of integers >= 1"),
    ("regressor.cell_weight", -1.0, "a finite number >= 0"),
    ("regressor_train.batch_size", 0, "an integer >= 1"),
    ("regressor_train.learning_rate", -1.0, "a finite number > 0"),
    ("regressor_train.parallel", "xmap", "one of 'jit', 'pmap'"),
    ("evaluation.batch_size", 0, "an integer >= 1"),
    ("evaluation.split", " ", "a non-empty split name"),
])
def test_out_of_range_values_are_named(path, value, allowed):
  config = _plain(default.get_config())
  _set(config, path, value)
  msg = _problems(config)
  assert f"{path}={value!r}: out of range; allowed: {allowed}" in msg, msg


def test_all_problems_are_reported_at_once():
  config = default.get_config()
  config.anchors.n = 0
  config.train.learning_rate = -1.0
  config.model.norm = "layer"
  msg = _problems(config)
  assert "3 problems" in msg and "anchors.n" in msg and "train.learning_rate" in msg and "model.norm" in msg


def test_min_resolution_is_what_the_embedder_accepts():
  """11 is the smallest R for which the real embedder's feature map survives (checked by tracing it)."""
  from disent_jax.models import embedder  # pylint: disable=import-outside-toplevel
  assert config_check.min_resolution() == 11
  model = embedder.VoxelEmbedder(num_models=3, num_anchors=4, shape_dim=2, pose_dim=2, conv_features=(2, 2),
                                 norm="none")

  def init(r):
    return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, r, r, r)), train=False))
  init(11)
  with pytest.raises(Exception):
    init(10)


# ---------------------------------------------------------------------------------------------------------
# CAD source specs, paths and cross-field rules.


def test_cad_source_specs(tmp_path):
  config = default.get_config()
  for spec in ("zoo", "zoo:7", f"pascal3d:{tmp_path}", f"folder:{tmp_path}", f"modelnet:{tmp_path}",
               f"modelnet:{tmp_path}:test", f"Folder:{tmp_path}"):
    config.data.cad_source = spec
    config_check.validate(config, stage="embedder")
  for spec, problem in (("zoo:abc", "out of range"), ("shapenet:/x", "out of range"),
                        ("folder:", "out of range"), ("", "out of range"),
                        (f"folder:{tmp_path / 'absent'}", "does not exist"),
                        (f"modelnet:{tmp_path / 'absent'}:train", "does not exist")):
    config.data.cad_source = spec
    msg = _problems(config, stage="embedder")
    assert f"data.cad_source={spec!r}" in msg and problem in msg and "'zoo:SEED'" in msg, msg
  assert f"directory {tmp_path / 'absent'} does not exist" in msg  # ':train' is the split, not the path


def test_image_dataset_and_weights_paths_are_checked_only_for_the_stages_that_read_them(tmp_path):
  config = default.get_config()
  config.images.source = f"dir:{tmp_path / 'absent'}"
  config.regressor.imagenet_weights = str(tmp_path / "resnet50.pth")
  config_check.validate(config, stage="embedder")
  config_check.validate(config, stage="embedder_eval")
  msg = _problems(config, stage="eval")
  assert "images.source" in msg and "does not exist" in msg and "imagenet_weights" not in msg
  for stage in ("regressor", "all"):
    msg = _problems(config, stage=stage)
    weights = str(tmp_path / "resnet50.pth")
    assert "images.source" in msg and f"regressor.imagenet_weights={weights!r}: no such file" in msg
  (tmp_path / "absent").mkdir()
  (tmp_path / "resnet50.pth").write_bytes(b"")
  config_check.validate(config, stage="all")


def test_s2d_needs_an_even_resolution():
  config = default.get_config()
  config.model.conv_impl = "s2d"
  config.data.resolution = 17
  assert "model.conv_impl='s2d' with data.resolution=17" in _problems(config)
  config.data.resolution = 16
  config_check.validate(config, stage="all")


def test_channels_first_takes_only_its_convolutions():
  config = default.get_config()
  config.model.layout = "channels_first"
  config.model.conv_impl = "lax"
  assert "model.layout='channels_first' with model.conv_impl='lax'" in _problems(config)
  for impl in ("auto", "im2col", "planes"):
    config.model.conv_impl = impl
    config_check.validate(config, stage="all")


def test_input_pool_must_divide_the_resolution_and_leave_enough_voxels():
  config = default.get_config()
  config.data.resolution = 30
  config.model.input_pool = 4
  assert "model.input_pool=4 with data.resolution=30" in _problems(config)
  config.data.resolution = 32  # 8^3 left: below the embedder's minimum of 11
  assert "the network would see 8^3 voxels" in _problems(config)
  config.model.input_pool = 0
  msg = _problems(config)
  assert "model.input_pool=0: out of range" in msg and "1 problem" in msg
  config.model.input_pool = 2
  config_check.validate(config, stage="all")
  config.data.resolution, config.model.input_pool = 10, 1  # reported once, by the resolution's own rule
  msg = _problems(config)
  assert "data.resolution=10: out of range" in msg and "1 problem" in msg and "input_pool" not in msg
  config.data.resolution, config.model.input_pool, config.model.conv_impl = 66, 2, "s2d"  # 33^3: odd
  assert "model.conv_impl='s2d' with data.resolution=66 and input_pool=2" in _problems(config)


def test_translation_range_must_be_increasing():
  config = default.get_config()
  config.translation.upper = (1.5, -0.5, 2.75)
  assert "translation.upper=(1.5, -0.5, 2.75): not above translation.lower=(-0.25, -0.25, 0.25)" in _problems(
      config)


def test_synthetic_dataset_split_names():
  config = default.get_config()
  config.evaluation.split = "val"
  msg = _problems(config)
  assert "evaluation.split='val'" in msg and "'validation'" in msg
  config.images.source = "dir:/"  # A finished dataset may have other splits (Pascal3D+: 'test_all').
  config_check.validate(config, stage="embedder")


def test_unknown_stage_argument():
  with pytest.raises(ConfigError, match="stage='train': unknown stage"):
    config_check.validate(default.get_config(), stage="train")


# ---------------------------------------------------------------------------------------------------------
# The reference.


def test_reference_argument_new_sections_get_generic_checks_only():
  reference = default.get_config()
  reference.stage2 = ml_collections.ConfigDict({"width": 4, "rate": 0.5, "mode": "a"})
  config = default.get_config()
  config.stage2 = ml_collections.ConfigDict({"width": -100, "rate": 3, "mode": "anything"})
  config_check.validate(config, stage="all", reference=reference)  # No rules for stage2: ranges unchecked.
  plain = config.to_dict()  # A ConfigDict would refuse the int below itself.
  plain["stage2"]["mode"] = 5
  plain["stage2"]["extra"] = 1
  msg = _problems(plain, reference=reference)
  assert "stage2.mode=5: wrong type int; allowed: a string" in msg and "stage2.extra=1: unknown key" in msg


def test_rules_for_paths_missing_from_the_reference_are_skipped():
  reference = default.get_config()
  del reference.loss["huber_delta"]  # As if the lead removed the field.
  config = default.get_config()
  del config.loss["huber_delta"]
  config_check.validate(config, stage="all", reference=reference)


def test_rule_table_paths_exist_in_the_default_config():
  known = set()

  def walk(node, prefix):
    for k in node.keys():
      if isinstance(node[k], ml_collections.ConfigDict):
        walk(node[k], f"{prefix}{k}.")
      else:
        known.add(f"{prefix}{k}")
  walk(default.get_config(), "")
  assert set(config_check.RULES) <= known, set(config_check.RULES) - known


def test_value_tables_match_the_modules():
  from disent_jax.cad import collections as cols  # pylint: disable=import-outside-toplevel
  from disent_jax.datasets import synthetic  # pylint: disable=import-outside-toplevel
  from disent_jax.models import resnet  # pylint: disable=import-outside-toplevel
  assert set(config_check.BACKBONES) == set(resnet.BACKBONES)
  assert config_check.MODELNET_SPLITS == cols.MODELNET_SPLITS
  assert config_check.SYNTHETIC_SPLITS == synthetic.SPLITS
