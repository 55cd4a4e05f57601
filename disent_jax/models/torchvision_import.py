"""ImageNet weights for the Stage II backbone from a torchvision ResNet state dict the user supplies.

The paper starts its image network from ImageNet weights. We read a torchvision-layout state dict (e.g.
`torchvision.models.resnet50(weights="IMAGENET1K_V2").state_dict()` saved by the user) from:
  .pth / .pt      via torch.load(weights_only=True) when PyTorch is installed (it is not a dependency; the
                  error says how to convert to .npz elsewhere);
  .npz            numpy archive keyed by the torchvision names;
  .safetensors    read by the small pure-numpy reader below (no new dependency): an 8-byte little-endian
                  header length, a JSON header {name: {dtype, shape, data_offsets}}, then the raw
                  little-endian tensor bytes.

Name mapping (mechanical, because `resnet.ResNet` names its submodules after torchvision's keys):
  conv1.weight                      -> params/conv1/kernel            OIHW -> HWIO (transpose(2, 3, 1, 0))
  bn1.{weight,bias}                 -> params/bn1/{scale,bias}
  bn1.{running_mean,running_var}    -> batch_stats/bn1/{mean,var}
  layer2.0.conv1.weight             -> params/layer2_0/conv1/kernel
  layer2.0.downsample.0.weight      -> params/layer2_0/downsample_conv/kernel
  layer2.0.downsample.1.*           -> .../layer2_0/downsample_bn/*
`fc.*` (the ImageNet classifier) and `*.num_batches_tracked` are ignored. The expected keys and shapes are
derived from our own module (resnet.variable_shapes), so every backbone in resnet.BACKBONES converts, and
a file is checked completely: every missing, unexpected and mis-shaped key is reported in one
CheckpointError naming the file.

Note: torchvision's ResNet-50 weights are v1.5 (stride on the 3x3 conv) since torchvision 0.3; v1 weights
(Caffe-era) have the same shapes and cannot be told apart by shape, so they would load and work worse.
"""

from __future__ import annotations

import json
import os
import pathlib
import zipfile
from typing import Any, Mapping

from flax import traverse_util
import jax
import numpy as np

from disent_jax import errors
from disent_jax.models import resnet

_SUFFIXES = (".pth", ".pt", ".npz", ".safetensors")
_IGNORED_PREFIXES = ("fc.",)
_IGNORED_SUFFIXES = (".num_batches_tracked",)
# Leaf renames per collection: ours -> torchvision's.
_LEAF_NAMES = {("params", "kernel"): "weight", ("params", "scale"): "weight", ("params", "bias"): "bias",
               ("batch_stats", "mean"): "running_mean", ("batch_stats", "var"): "running_var"}
_MAX_LISTED = 12  # keys listed per problem kind; a wrong-architecture file would otherwise list hundreds


# ------------------------------------------------------------------------------------------------ reading


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads a torchvision-layout state dict from a .pth/.pt, .npz or .safetensors file.

  Args:
    path: the file.

  Returns:
    name -> array. Half and bfloat16 floats come back as float32 (numpy has no bfloat16).

  Raises:
    errors.CheckpointError: the file is missing, has an unsupported suffix, is unreadable or corrupt,
      or is a .pth/.pt file and PyTorch is not installed. The message names the file.
  """
  path = pathlib.Path(path)
  suffix = path.suffix.lower()
  if suffix not in _SUFFIXES:
    raise errors.CheckpointError(f"{path}: unsupported weight file suffix {path.suffix!r}; "
                                 f"expected one of {', '.join(_SUFFIXES)}")
  if not path.is_file():
    raise errors.CheckpointError(f"{path}: weight file not found")
  if suffix == ".npz":
    return _load_npz(path)
  if suffix == ".safetensors":
    return read_safetensors(path)
  return _load_torch(path)


def _load_npz(path: pathlib.Path) -> dict[str, np.ndarray]:
  try:
    with np.load(path, allow_pickle=False) as archive:
      out = {name: np.asarray(archive[name]) for name in archive.files}
  except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
    raise errors.CheckpointError(f"{path}: not a readable .npz archive ({e})") from e
  for name, value in out.items():
    if value.dtype.kind not in "fiub":
      raise errors.CheckpointError(f"{path}: entry {name!r} has non-numeric dtype {value.dtype}")
  return out


def _load_torch(path: pathlib.Path) -> dict[str, np.ndarray]:
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise errors.CheckpointError(
        f"{path}: reading .pth/.pt files needs PyTorch, which is not installed. Convert the file to .npz "
        "where torch is available: python -c \"import sys, numpy, torch; sd = torch.load(sys.argv[1], "
        "map_location='cpu'); numpy.savez(sys.argv[2], **{k: v.float().numpy() if v.is_floating_point() "
        "else v.numpy() for k, v in sd.items()})\" IN.pth OUT.npz") from e
  try:
    obj = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # torch raises many types (pickle, zip, RuntimeError) for a bad file
    raise errors.CheckpointError(f"{path}: torch.load failed: {e}") from e
  # Training checkpoints often wrap the weights: {'state_dict': ...} or {'model': ...}.
  for wrapper in ("state_dict", "model"):
    if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
      obj = obj[wrapper]
  if not isinstance(obj, Mapping):
    raise errors.CheckpointError(f"{path}: expected a state dict (name -> tensor), got {type(obj).__name__}")
  out = {}
  for name, value in obj.items():
    if not isinstance(value, torch.Tensor):
      raise errors.CheckpointError(f"{path}: entry {name!r} is a {type(value).__name__}, not a tensor")
    value = value.detach().cpu()
    # numpy has no bfloat16; float32 holds every half/bfloat16 value exactly.
    if value.is_floating_point() and value.dtype != torch.float64:
      value = value.float()
    out[str(name)] = value.numpy()
  return out


# safetensors dtype tag -> little-endian numpy dtype; BF16 is read as raw uint16 and widened below.
_SAFETENSORS_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4",
                       "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?"}


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads a .safetensors file with numpy alone.

  Args:
    path: the file.

  Returns:
    name -> array (native byte order). F16 and BF16 tensors come back as float32.

  Raises:
    errors.CheckpointError: bad header, unsupported dtype, or data offsets outside the file.
  """
  path = pathlib.Path(path)
  try:
    data = path.read_bytes()
  except OSError as e:
    raise errors.CheckpointError(f"{path}: cannot read ({e})") from e
  if len(data) < 8:
    raise errors.CheckpointError(f"{path}: too short for a safetensors file ({len(data)} bytes)")
  header_len = int.from_bytes(data[:8], "little")
  if header_len > len(data) - 8:
    raise errors.CheckpointError(f"{path}: safetensors header length {header_len} exceeds the file size "
                                 f"{len(data)} (not a safetensors file, or truncated)")
  try:
    header = json.loads(data[8:8 + header_len].decode("utf-8"))
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise errors.CheckpointError(f"{path}: safetensors header is not valid JSON ({e})") from e
  if not isinstance(header, dict):
    raise errors.CheckpointError(f"{path}: safetensors header is not a JSON object")
  body = memoryview(data)[8 + header_len:]
  out = {}
  for name, info in header.items():
    if name == "__metadata__":
      continue
    try:
      dtype_tag, shape, (begin, end) = info["dtype"], [int(d) for d in info["shape"]], info["data_offsets"]
      begin, end = int(begin), int(end)
    except (KeyError, TypeError, ValueError) as e:
      raise errors.CheckpointError(f"{path}: tensor {name!r} has a malformed header entry {info!r}") from e
    if dtype_tag not in _SAFETENSORS_DTYPES:
      raise errors.CheckpointError(f"{path}: tensor {name!r} has unsupported dtype {dtype_tag!r}; "
                                   f"supported: {', '.join(_SAFETENSORS_DTYPES)}")
    dtype = np.dtype(_SAFETENSORS_DTYPES[dtype_tag])
    size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if min(shape, default=0) < 0 or not 0 <= begin <= end <= len(body) or end - begin != size:
      raise errors.CheckpointError(f"{path}: tensor {name!r} ({dtype_tag} {shape}) has data offsets "
                                   f"[{begin}, {end}) that do not fit it or the file "
                                   f"({len(body)} data bytes)")
    value = np.frombuffer(body[begin:end], dtype=dtype).reshape(shape)
    if dtype_tag == "BF16":
      # bfloat16 is the top half of a float32: shift the 16 bits up and reinterpret.
      value = (value.astype(np.uint32) << 16).view(np.float32)
    elif dtype_tag == "F16":
      value = value.astype(np.float32)
    else:
      value = value.astype(dtype.newbyteorder("="), copy=True)  # own the memory, native byte order
    out[name] = value
  return out


# --------------------------------------------------------------------------------------------- converting


def torchvision_name(path: tuple[str, ...]) -> str:
  """The torchvision key of one of our variables, e.g. ('params', 'layer1_0', 'downsample_bn', 'scale')
  -> 'layer1.0.downsample.1.weight'."""
  collection, *modules, leaf = path
  parts = []
  for m in modules:
    if m.startswith("layer"):
      parts.append(m.replace("_", "."))
    elif m.startswith("downsample_"):
      parts.append({"downsample_conv": "downsample.0", "downsample_bn": "downsample.1"}[m])
    else:
      parts.append(m)
  return ".".join(parts + [_LEAF_NAMES[(collection, leaf)]])


def _expected(backbone: str) -> dict[str, tuple[tuple[str, ...], tuple[int, ...]]]:
  """torchvision key -> (our path, torchvision's shape) for `backbone`."""
  out = {}
  for path, shape in resnet.variable_shapes(backbone).items():
    torch_shape = tuple(shape[i] for i in (3, 2, 0, 1)) if path[-1] == "kernel" else shape  # HWIO -> OIHW
    out[torchvision_name(path)] = (path, torch_shape)
  return out


def _ignored(name: str) -> bool:
  return name.startswith(_IGNORED_PREFIXES) or name.endswith(_IGNORED_SUFFIXES)


def _strip_module_prefix(state_dict: Mapping[str, Any]) -> Mapping[str, Any]:
  # nn.DataParallel / DistributedDataParallel save every key under 'module.'.
  if state_dict and all(k.startswith("module.") for k in state_dict):
    return {k[len("module."):]: v for k, v in state_dict.items()}
  return state_dict


def _problems(state_dict: Mapping[str, Any], backbone: str) -> tuple[list[str], list[str], list[str]]:
  expected = _expected(backbone)
  missing = [k for k in expected if k not in state_dict]
  unexpected = [k for k in state_dict if k not in expected and not _ignored(k)]
  misshaped = [f"{k}: {tuple(np.shape(state_dict[k]))}, expected {expected[k][1]}"
               for k in expected if k in state_dict and tuple(np.shape(state_dict[k])) != expected[k][1]]
  return missing, unexpected, misshaped


def _listing(kind: str, items: list[str]) -> str:
  shown = ", ".join(items[:_MAX_LISTED])
  more = f", ... ({len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else ""
  return f"{len(items)} {kind}: {shown}{more}"


def convert_state_dict(state_dict: Mapping[str, Any], backbone: str, *,
                       source: str = "<state dict>") -> dict:
  """Converts a torchvision ResNet state dict to our backbone's variables.

  Args:
    state_dict: torchvision key -> array (numpy, or anything np.asarray takes). `fc.*` and
      `*.num_batches_tracked` are ignored; a 'module.' prefix on every key (DataParallel) is stripped.
    backbone: a `resnet.BACKBONES` name.
    source: what to call the state dict in error messages (the file name).

  Returns:
    {'params': ..., 'batch_stats': ...} of float32 numpy arrays, the same tree (keys and shapes) as
    `resnet.create_backbone(backbone).init(...)`.

  Raises:
    errors.CheckpointError: keys missing, unexpected or mis-shaped (all listed in one message naming
      `source`, with the backbone the file seems to hold when it is another one), or non-finite values.
    errors.ConfigError: unknown backbone name.
  """
  expected = _expected(backbone)
  state_dict = _strip_module_prefix(state_dict)
  missing, unexpected, misshaped = _problems(state_dict, backbone)
  if missing or unexpected or misshaped:
    parts = [_listing(kind, items) for kind, items in
             (("missing keys", missing), ("unexpected keys", unexpected), ("mis-shaped keys", misshaped))
             if items]
    fits = [name for name in resnet.BACKBONES
            if name != backbone and not any(_problems(state_dict, name))]
    hint = f" The file looks like a {' / '.join(fits)} state dict." if fits else ""
    raise errors.CheckpointError(f"{source}: not a torchvision {backbone} state dict: "
                                 + "; ".join(parts) + "." + hint)
  flat = {}
  for key, (path, _) in expected.items():
    value = np.asarray(state_dict[key], dtype=np.float32)
    if not np.all(np.isfinite(value)):
      raise errors.CheckpointError(f"{source}: {key} has non-finite values")
    flat[path] = np.ascontiguousarray(value.transpose(2, 3, 1, 0)) if path[-1] == "kernel" else value
  return traverse_util.unflatten_dict(flat)


def load_imagenet_backbone(path: str | os.PathLike, backbone: str) -> dict:
  """`convert_state_dict(load_state_dict(path), backbone)`, errors naming `path`.

  Args:
    path: a .pth/.pt, .npz or .safetensors torchvision state dict.
    backbone: a `resnet.BACKBONES` name.

  Returns:
    {'params': ..., 'batch_stats': ...} of float32 numpy arrays for `resnet.create_backbone(backbone)`.
  """
  resnet.create_backbone(backbone)  # unknown name: ConfigError before reading a possibly large file
  return convert_state_dict(load_state_dict(path), backbone, source=str(path))


def merge_backbone(variables: Mapping[str, Any], backbone_vars: Mapping[str, Any],
                   prefix: str = "backbone") -> dict:
  """Puts converted backbone variables into a larger model's variables, under submodule `prefix`.

  Args:
    variables: the model's {'params': ..., 'batch_stats': ...} (or more collections, kept as they are).
    backbone_vars: `convert_state_dict` / `load_imagenet_backbone` output.
    prefix: the backbone submodule's name; 'a/b' for a nested one; '' when the model is the backbone.

  Returns:
    A new variables dict (inputs are not modified). Where a replaced leaf is a jax.Array the new value
    takes its dtype and sharding, so a state placed on a mesh stays placed.

  Raises:
    errors.ConfigError: the model has no such submodule, or its tree (keys or shapes) differs from
      backbone_vars' (e.g. another backbone architecture).
  """
  path = tuple(p for p in prefix.split("/") if p)
  out = {k: v for k, v in variables.items()}
  for collection, new in backbone_vars.items():
    node = out.get(collection)
    for p in path:
      node = node.get(p) if isinstance(node, Mapping) else None
    if node is None:
      raise errors.ConfigError(f"merge_backbone: the model's {collection!r} has no submodule {prefix!r}")
    old_flat = traverse_util.flatten_dict(dict(node))
    new_flat = traverse_util.flatten_dict(dict(new))
    if set(old_flat) != set(new_flat):
      only_model = sorted("/".join(k) for k in set(old_flat) - set(new_flat))
      only_new = sorted("/".join(k) for k in set(new_flat) - set(old_flat))
      raise errors.ConfigError(
          f"merge_backbone: {collection}/{prefix} of the model and the backbone weights differ: "
          f"{_listing('only in the model', only_model)}; {_listing('only in the weights', only_new)}")
    bad = [f"{'/'.join(k)}: model {tuple(np.shape(old_flat[k]))}, weights {tuple(np.shape(new_flat[k]))}"
           for k in old_flat if tuple(np.shape(old_flat[k])) != tuple(np.shape(new_flat[k]))]
    if bad:
      raise errors.ConfigError(f"merge_backbone: {collection}/{prefix}: {_listing('mis-shaped', bad)}")
    merged = traverse_util.unflatten_dict({k: _like(new_flat[k], old_flat[k]) for k in old_flat})
    out[collection] = _set_path(out[collection], path, merged) if path else merged
  return out


def _like(value: Any, target: Any) -> Any:
  """`value` with `target`'s dtype, and on `target`'s sharding when target is a jax.Array."""
  value = np.asarray(value, dtype=np.dtype(getattr(target, "dtype", np.float32)))
  if isinstance(target, jax.Array):
    # make_array_from_callback also works when the sharding spans processes (multi-host).
    return jax.make_array_from_callback(value.shape, target.sharding, lambda index: value[index])
  return value


def _set_path(tree: Mapping[str, Any], path: tuple[str, ...], value: Any) -> dict:
  out = dict(tree)
  out[path[0]] = value if len(path) == 1 else _set_path(tree[path[0]], path[1:], value)
  return out
