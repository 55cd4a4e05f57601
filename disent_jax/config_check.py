"""Early validation of a configuration, before any voxel bank is built or any image rendered.

A typo in a key (`config.train.batchsize`), a value of the wrong type (a notebook user's plain ConfigDict
holding '64' or 1 for a bool), or an out-of-range value (`anchors.n = 0`, a negative learning rate) would
otherwise surface minutes later, deep in a stage, or never (an unknown key is silently ignored).
`validate(config, stage=...)` checks everything at once and raises ONE `ConfigError` listing every problem,
each as `<key>=<value>: <problem>; allowed: <what is allowed>`.

The checks, against a reference config (`configs/default.py`'s `get_config()` unless one is passed):
  1. Keys: every key of `config` must exist in the reference (unknown keys are reported with the closest
     known names), and every key of the reference must exist in `config`.
  2. Types: each value must have the type of the reference's default (an int is accepted for a float, a
     bool never counts as a number, tuples and lists are interchangeable but must have the reference's
     length and element types); floats must be finite.
  3. Ranges: `RULES`, a table keyed by dotted path (`'train.learning_rate'`), checked for the paths the
     reference has. Sub-dicts of the reference without rules (new Stage II fields, say) still get the key
     and type checks of 1 and 2.
  4. Cross-field and file-system checks (`_cross_checks`): the directory of a file CAD source must exist;
     for the stages that read them, the image dataset directory and the ImageNet weights file must exist;
     a 's2d' convolution needs an even resolution; a synthetic dataset only has the splits it renders.

How a stage calls it (first thing, before building anything):
    config_check.validate(config, stage="embedder")
`stage` is the stage about to run ('embedder', 'embedder_eval', 'regressor', 'eval' or 'all'); it decides
which paths must exist (Stage II's image dataset and ImageNet weights only for the stages that read them).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from disent_jax.errors import ConfigError

STAGES: tuple[str, ...] = ("embedder", "embedder_eval", "regressor", "eval", "all")
# The stages that read the image dataset / train Stage II (see configs/default.py).
_IMAGE_STAGES = ("regressor", "eval", "all")
_REGRESSOR_TRAIN_STAGES = ("regressor", "all")

# Values accepted by the code that reads these fields; tests/test_config_check.py checks them against the
# modules' own tables where the modules expose one (backbones, ModelNet splits, synthetic splits).
NORMS = ("batch", "none")
EMBEDDING_ACTIVATIONS = ("none", "relu", "tanh")
CONV_IMPLS = ("auto", "lax", "s2d", "im2col", "planes")
LAYOUTS = ("auto", "channels_last", "channels_first")
CHANNELS_FIRST_CONV_IMPLS = ("auto", "im2col", "planes")  # models/conv3d.py CHANNELS_FIRST_IMPLS
DTYPES = ("float32", "bfloat16")
SHAPE_LOSSES = ("ce", "triplet")
SCHEDULES = ("constant", "cosine")
PARALLEL = ("jit", "pmap")
RENDER_BACKENDS = ("auto", "gl", "raycast")
BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet_tiny")
MODELNET_SPLITS = ("train", "test", "all")
SYNTHETIC_SPLITS = ("train", "validation", "test")
CAD_SOURCE_FORMS = ("'zoo', 'zoo:SEED', 'pascal3d:/path/CAD', 'modelnet:/path[:train|test|all]' or "
                    "'folder:/path'")


def min_resolution() -> int:
  """The smallest voxel resolution R the Stage I embedder accepts.

  `disent_jax.models.embedder`: Conv3D 5^3 stride 2 VALID -> (R - 5) // 2 + 1, Conv3D 3^3 VALID -> minus
  2, max-pool 2 (VALID) -> halved, and at least one voxel must be left: R = 11 gives 4 -> 2 -> 1.

  Returns:
    The smallest R (11).
  """
  r = 1
  while not ((((r - 5) // 2 + 1) - 2) // 2 >= 1 and r >= 5):
    r += 1
  return r


# ---------------------------------------------------------------------------------------------------------
# Range rules.


@dataclasses.dataclass(frozen=True)
class Rule:
  """A check of one value (already of the reference's type) and what it allows, for the message."""
  check: Callable[[Any], bool]
  allowed: str


def _one_of(*values: str) -> Rule:
  return Rule(lambda v: v in values, "one of " + ", ".join(repr(v) for v in values))


def _int_at_least(lo: int) -> Rule:
  return Rule(lambda v: v >= lo, f"an integer >= {lo}")


def _int_between(lo: int, hi: int) -> Rule:
  return Rule(lambda v: lo <= v <= hi, f"an integer in {lo}..{hi}")


def _positive_float() -> Rule:
  return Rule(lambda v: math.isfinite(v) and v > 0, "a finite number > 0")


def _non_negative_float() -> Rule:
  return Rule(lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0")


def _angle_deg() -> Rule:
  return Rule(lambda v: math.isfinite(v) and 0 <= v <= 180, "an angle in [0, 180] degrees")


def _positive_ints(n: int) -> Rule:
  return Rule(lambda v: len(v) == n and all(x >= 1 for x in v), f"{n} integers >= 1")


# jax.random.key takes any int64 seed; numpy's default_rng rejects negative ones.
_SEED_RULE = Rule(lambda v: 0 <= v < 2 ** 63, "an integer in 0..2**63-1")


def _train_rules(section: str) -> dict[str, Rule]:
  """The rules of a training section (`train`, `regressor_train`: the same fields)."""
  return {
      f"{section}.batch_size": _int_at_least(1),
      f"{section}.num_steps": _int_at_least(0),
      f"{section}.learning_rate": _positive_float(),
      f"{section}.schedule": _one_of(*SCHEDULES),
      f"{section}.warmup_steps": _int_at_least(0),
      f"{section}.parallel": _one_of(*PARALLEL),
      f"{section}.num_devices": _int_at_least(0),
      f"{section}.log_every": _int_at_least(1),
      f"{section}.checkpoint_every": _int_at_least(0),
      f"{section}.keep_checkpoints": _int_at_least(1),
  }


# Keyed by dotted path; applied only where the reference has the path (so a rule for a field the lead
# renames or removes is skipped, not an error).
RULES: dict[str, Rule] = {
    "stage": _one_of(*STAGES),
    "seed": _SEED_RULE,
    "data.cad_source": Rule(lambda v: _cad_source_syntax(v) is None, CAD_SOURCE_FORMS),
    "data.resolution": Rule(lambda v: v >= min_resolution(),
                            f"an integer >= {min_resolution()} (the embedder's 5^3 stride-2 and 3^3 VALID "
                            "convolutions and 2x pooling need it)"),
    "model.shape_dim": _int_at_least(1),
    "model.pose_dim": _int_at_least(1),
    "model.conv_features": _positive_ints(2),
    "model.norm": _one_of(*NORMS),
    "model.embedding_activation": _one_of(*EMBEDDING_ACTIVATIONS),
    "model.head_hidden": _int_at_least(0),
    "model.conv_impl": _one_of(*CONV_IMPLS),
    "model.layout": _one_of(*LAYOUTS),
    "model.input_pool": _int_at_least(1),
    "model.dtype": _one_of(*DTYPES),
    "anchors.n": _int_between(1, 12),
    "loss.shape": _one_of(*SHAPE_LOSSES),
    "loss.shape_weight": _non_negative_float(),
    "loss.anchor_weight": _non_negative_float(),
    "loss.residual_weight": _non_negative_float(),
    "loss.huber_delta": _positive_float(),
    "loss.triplet_margin": _non_negative_float(),
    "loss.anchor_soft_sigma_deg": _non_negative_float(),
    "loss.residual_radius_deg": _angle_deg(),
    "loss.shape_invariance_weight": _non_negative_float(),
    **_train_rules("train"),
    "eval.num_rotations": _int_at_least(1),
    "eval.seed": _SEED_RULE,
    "eval.batch_size": _int_at_least(1),
    "images.source": Rule(lambda v: v == "synthetic" or (v.startswith("dir:") and len(v) > 4),
                          "'synthetic' or 'dir:/path/to/dataset'"),
    "images.image_size": _int_at_least(1),
    "images.crop_size": _int_at_least(1),
    "images.num_train": _int_at_least(1),
    "images.num_validation": _int_at_least(0),
    "images.num_test": _int_at_least(0),
    "images.seed": _SEED_RULE,
    "images.render_workers": _int_at_least(0),
    "images.render_backend": _one_of(*RENDER_BACKENDS),
    "images.input_size": _int_at_least(0),
    "images.loader_workers": _int_at_least(0),
    "translation.cells": _positive_ints(3),
    "regressor.backbone": _one_of(*BACKBONES),
    "regressor.backbone_width": _int_at_least(0),
    "regressor.backbone_layout": _one_of(*LAYOUTS),
    # The reference default is (), so the generic check cannot know the element type: checked here.
    "regressor.backbone_stages": Rule(lambda v: all(_is_int(x) and x >= 1 for x in v),
                                      "() or a tuple of integers >= 1 (blocks per stage)"),
    "regressor.translation_hidden": _int_at_least(0),
    "regressor.dtype": _one_of(*DTYPES),
    "regressor.embedding_weight": _non_negative_float(),
    "regressor.shape_weight": _non_negative_float(),
    "regressor.anchor_weight": _non_negative_float(),
    "regressor.residual_weight": _non_negative_float(),
    "regressor.cell_weight": _non_negative_float(),
    "regressor.cell_residual_weight": _non_negative_float(),
    "regressor.anchor_soft_sigma_deg": _non_negative_float(),
    "regressor.residual_radius_deg": _angle_deg(),
    **_train_rules("regressor_train"),
    "evaluation.split": Rule(lambda v: bool(v.strip()), "a non-empty split name"),
    "evaluation.batch_size": _int_at_least(1),
    "evaluation.num_qualitative": _int_at_least(0),
}


# ---------------------------------------------------------------------------------------------------------
# Public API.


def validate(config: Mapping[str, Any], *, stage: str, reference: Mapping[str, Any] | None = None) -> None:
  """Checks a configuration before a stage runs; raises one ConfigError listing every problem.

  Args:
    config: the configuration (an `ml_collections.ConfigDict`, a `FrozenConfigDict` or nested dicts).
    stage: the stage about to run, one of `STAGES`; selects the file-system checks (module docstring).
    reference: the config that defines the known keys and their types; default
      `configs.default.get_config()` (importable from the repository root).

  Raises:
    ConfigError: unknown or missing keys, wrong types, out-of-range values, a malformed CAD source spec or
      a missing path; the message names each key, its value and what is allowed.
  """
  if stage not in STAGES:
    raise ConfigError(f"stage={stage!r}: unknown stage; allowed: one of {', '.join(map(repr, STAGES))}")
  if reference is None:
    reference = _default_reference()
  problems: list[str] = []
  valid: dict[str, Any] = {}  # dotted path -> value, for the values whose key and type are right.
  _walk(config, reference, "", problems, valid)
  for path, rule in RULES.items():
    if path in valid and not _passes(rule, valid[path]):
      problems.append(f"{path}={valid[path]!r}: out of range; allowed: {rule.allowed}")
  problems += _cross_checks(valid, stage)
  if problems:
    lines = "\n".join(f"  - {p}" for p in problems)
    raise ConfigError(f"invalid configuration for stage {stage!r} ({len(problems)} problem"
                      f"{'s' if len(problems) > 1 else ''}):\n{lines}")


def _passes(rule: Rule, value: Any) -> bool:
  """rule.check(value); a check that cannot even compare the value (e.g. a str inside a tuple) fails."""
  try:
    return bool(rule.check(value))
  except (TypeError, ValueError):
    return False


# ---------------------------------------------------------------------------------------------------------
# Keys and types.


def _default_reference() -> Mapping[str, Any]:
  try:
    from configs import default  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ConfigError("cannot import configs.default to validate against (run from the repository root, "
                      "or pass reference=default.get_config())") from e
  return default.get_config()


def _is_mapping(x: Any) -> bool:
  # ConfigDict is not a collections.abc.Mapping, but has keys() and item access.
  return isinstance(x, Mapping) or (hasattr(x, "keys") and hasattr(x, "__getitem__")
                                    and not isinstance(x, (str, bytes)))


def _walk(config: Any, reference: Any, prefix: str, problems: list[str], valid: dict[str, Any]) -> None:
  """Key and type checks of `config` against `reference`, recursively; fills `valid` with good leaves."""
  keys, ref_keys = list(config.keys()), list(reference.keys())
  for key in keys:
    if key not in ref_keys:
      close = difflib.get_close_matches(str(key), [str(k) for k in ref_keys], n=3, cutoff=0.6)
      hint = f"did you mean {' or '.join(prefix + c for c in close)}?" if close else \
          f"known keys here: {', '.join(sorted(map(str, ref_keys)))}"
      problems.append(f"{prefix}{key}={_show(config[key])}: unknown key; allowed: {hint}")
  for key in ref_keys:
    path = f"{prefix}{key}"
    ref_value = reference[key]
    if key not in keys:
      problems.append(f"{path}: missing key; allowed: a value like the default {_show(ref_value)}")
      continue
    value = config[key]
    if _is_mapping(ref_value):
      if not _is_mapping(value):
        problems.append(f"{path}={_show(value)}: wrong type {type(value).__name__}; allowed: a sub-config "
                        f"(ConfigDict) with keys {', '.join(sorted(map(str, ref_value.keys())))}")
      else:
        _walk(value, ref_value, path + ".", problems, valid)
      continue
    problem = _type_problem(value, ref_value)
    if problem:
      problems.append(f"{path}={_show(value)}: {problem}")
    else:
      valid[path] = value


def _type_name(ref: Any) -> str:
  if isinstance(ref, bool):
    return "a bool"
  if isinstance(ref, int):
    return "an int"
  if isinstance(ref, float):
    return "a float (or an int)"
  if isinstance(ref, str):
    return "a string"
  return f"a {type(ref).__name__}"


def _type_problem(value: Any, ref: Any) -> str | None:
  """None when `value` has the type of the reference default `ref`, else the problem and what is allowed."""
  if ref is None:
    return None
  if isinstance(ref, (tuple, list)):
    if not isinstance(value, (tuple, list)):
      return f"wrong type {type(value).__name__}; allowed: a tuple of {len(ref)} like {ref!r}"
    if ref and len(value) != len(ref):
      return f"wrong length {len(value)}; allowed: a tuple of {len(ref)} like {ref!r}"
    for i, (v, r) in enumerate(zip(value, ref)):
      problem = _type_problem(v, r)
      if problem:
        return f"element {i}: {problem}"
    return None
  if isinstance(ref, bool):
    ok = isinstance(value, (bool, np.bool_))
  elif isinstance(ref, int):
    ok = _is_int(value)
  elif isinstance(ref, float):
    ok = _is_int(value) or isinstance(value, (float, np.floating))
    if ok and not math.isfinite(float(value)):
      return "not finite; allowed: a finite number"
  else:
    ok = isinstance(value, type(ref))
  if not ok:
    return f"wrong type {type(value).__name__}; allowed: {_type_name(ref)}"
  return None


def _is_int(value: Any) -> bool:
  """An int (Python or numpy), never a bool."""
  return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _show(value: Any) -> str:
  text = repr(value)
  return text if len(text) <= 80 else text[:77] + "..."


# ---------------------------------------------------------------------------------------------------------
# Cross-field and file-system checks.


def _cad_source_syntax(spec: str) -> str | None:
  """None for a well-formed CAD source spec (`collections.load_collection`), else the problem."""
  kind, sep, arg = spec.strip().partition(":")
  kind = kind.lower()
  if kind == "zoo":
    if sep:
      try:
        int(arg)
      except ValueError:
        return f"bad zoo seed {arg!r}"
    return None
  if kind not in ("pascal3d", "modelnet", "folder"):
    return f"unknown kind {kind!r}"
  if not arg.strip():
    return "no path"
  return None


def _cad_source_path(spec: str) -> str | None:
  """The directory a file CAD source reads (None for the zoo)."""
  kind, _, arg = spec.strip().partition(":")
  kind = kind.lower()
  if kind == "zoo":
    return None
  if kind == "modelnet":
    head, colon, tail = arg.rpartition(":")
    if colon and tail in MODELNET_SPLITS:  # As load_collection: only a known split name counts.
      arg = head
  return os.path.expanduser(arg)


def _cross_checks(valid: dict[str, Any], stage: str) -> list[str]:
  problems = []
  spec = valid.get("data.cad_source")
  if spec is not None and _cad_source_syntax(spec) is None:
    path = _cad_source_path(spec)
    if path is not None and not os.path.isdir(path):
      problems.append(f"data.cad_source={spec!r}: directory {path} does not exist; allowed: "
                      f"{CAD_SOURCE_FORMS} with an existing directory")
  lower, upper = valid.get("translation.lower"), valid.get("translation.upper")
  if lower is not None and upper is not None and not all(u > l for l, u in zip(lower, upper)):
    problems.append(f"translation.upper={tuple(upper)!r}: not above translation.lower={tuple(lower)!r} on "
                    "every axis; allowed: upper[i] > lower[i] (geometry.TranslationGrid)")
  resolution, impl = valid.get("data.resolution"), valid.get("model.conv_impl")
  pool = valid.get("model.input_pool", 1)
  pool = pool if isinstance(pool, int) and pool >= 1 else 1  # out of range: reported by its own rule
  # With pool 1 both pool checks would repeat the data.resolution range rule's report.
  if pool > 1 and resolution is not None and resolution % pool:
    problems.append(f"model.input_pool={pool} with data.resolution={resolution}: the pooled input needs a "
                    f"resolution divisible by the factor; allowed: a data.resolution that is a multiple of "
                    f"{pool}, or input_pool 1")
  elif pool > 1 and resolution is not None and resolution // pool < min_resolution():
    problems.append(f"model.input_pool={pool} with data.resolution={resolution}: the network would see "
                    f"{resolution // pool}^3 voxels; allowed: data.resolution / input_pool >= "
                    f"{min_resolution()}")
  elif impl == "s2d" and resolution is not None and (resolution // pool) % 2:
    problems.append(f"model.conv_impl='s2d' with data.resolution={resolution} and input_pool={pool}: the "
                    "space-to-depth convolution needs an even (pooled) resolution; allowed: an even "
                    "data.resolution / input_pool, or conv_impl 'auto' (which falls back by itself)")
  if valid.get("model.layout") == "channels_first" and impl not in (None, *CHANNELS_FIRST_CONV_IMPLS):
    problems.append(f"model.layout='channels_first' with model.conv_impl={impl!r}: the channels-first "
                    f"convolutions are {', '.join(map(repr, CHANNELS_FIRST_CONV_IMPLS))}; allowed: one of "
                    "those, or layout 'auto' / 'channels_last'")
  split = valid.get("evaluation.split")
  if valid.get("images.source") == "synthetic" and split is not None and split not in SYNTHETIC_SPLITS:
    problems.append(f"evaluation.split={split!r}: the synthetic dataset has no such split; allowed: one of "
                    f"{', '.join(map(repr, SYNTHETIC_SPLITS))}")
  if stage in _IMAGE_STAGES:
    source = valid.get("images.source", "")
    if source.startswith("dir:") and len(source) > 4:
      path = os.path.expanduser(source[4:])
      if not os.path.isdir(path):
        problems.append(f"images.source={source!r}: directory {path} does not exist; allowed: 'synthetic' or "
                        "'dir:' and an existing dataset directory")
  if stage in _REGRESSOR_TRAIN_STAGES:
    weights = valid.get("regressor.imagenet_weights", "")
    if weights and not os.path.isfile(os.path.expanduser(weights)):
      problems.append(f"regressor.imagenet_weights={weights!r}: no such file; allowed: '' (train from "
                      "scratch) or an existing torchvision state dict (.pth/.npz/.safetensors)")
  return problems
