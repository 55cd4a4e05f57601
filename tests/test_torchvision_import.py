"""ImageNet weight import: torchvision state dicts (.npz, .safetensors, .pth) -> our ResNet variables.

The random state dicts are built here from torchvision's architecture (key names and OIHW shapes as
torchvision/models/resnet.py makes them), not from our converter's own mapping and not from torch, and
the converted network is checked against an independent NumPy forward pass.
"""

from __future__ import annotations

import functools
import json
import pathlib
import sys

from flax import traverse_util
import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np
import pytest

from disent_jax import errors
from disent_jax.models import resnet
from disent_jax.models import torchvision_import as tvi

# ------------------------------------------------------------------ torchvision's layout, written out


def torchvision_shapes(stage_sizes, block, num_filters=64, num_classes=1000) -> dict[str, tuple]:
  """Key -> shape of torchvision's ResNet(...).state_dict(), as its constructor builds it."""
  shapes = {}

  def bn(name, c):
    for leaf in ("weight", "bias", "running_mean", "running_var"):
      shapes[f"{name}.{leaf}"] = (c,)
    shapes[f"{name}.num_batches_tracked"] = ()

  shapes["conv1.weight"] = (num_filters, 3, 7, 7)
  bn("bn1", num_filters)
  expansion = 4 if block == "bottleneck" else 1
  inplanes = num_filters
  for i, size in enumerate(stage_sizes):
    planes = num_filters * 2 ** i
    for j in range(size):
      p = f"layer{i + 1}.{j}"
      stride = 2 if i > 0 and j == 0 else 1
      if block == "bottleneck":
        convs = [(planes, inplanes, 1), (planes, planes, 3), (planes * 4, planes, 1)]
      else:
        convs = [(planes, inplanes, 3), (planes, planes, 3)]
      for k, (o, c, ks) in enumerate(convs, start=1):
        shapes[f"{p}.conv{k}.weight"] = (o, c, ks, ks)
        bn(f"{p}.bn{k}", o)
      if stride != 1 or inplanes != planes * expansion:
        shapes[f"{p}.downsample.0.weight"] = (planes * expansion, inplanes, 1, 1)
        bn(f"{p}.downsample.1", planes * expansion)
      inplanes = planes * expansion
  shapes["fc.weight"] = (num_classes, inplanes)
  shapes["fc.bias"] = (num_classes,)
  return shapes


def random_state_dict(name: str, seed: int = 0) -> dict[str, np.ndarray]:
  spec = resnet.BACKBONES[name]
  rng = np.random.default_rng(seed)
  out = {}
  for key, shape in torchvision_shapes(spec["stage_sizes"], spec["block"],
                                       spec.get("num_filters", 64)).items():
    if key.endswith("num_batches_tracked"):
      out[key] = np.array(7, np.int64)
    elif key.endswith("running_var"):
      out[key] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
    elif key.endswith("weight") and len(shape) == 4:
      out[key] = (rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))).astype(np.float32)
    elif key.endswith("weight") and not key.startswith("fc"):  # BN scale
      out[key] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
    else:
      out[key] = (0.1 * rng.standard_normal(shape)).astype(np.float32)
  return out


def write_safetensors(path: pathlib.Path, tensors: dict[str, np.ndarray], dtypes: dict[str, str] = {}):
  """A minimal safetensors writer: F32 / I64 by default, 'F16' or 'BF16' (truncated) per key on request."""
  header, chunks, offset = {"__metadata__": {"format": "pt"}}, [], 0
  for name, value in tensors.items():
    tag = dtypes.get(name, {"f": "F32", "i": "I64"}[value.dtype.kind])
    if tag == "BF16":
      raw = (np.ascontiguousarray(value, "<f4").view("<u4") >> 16).astype("<u2").tobytes()
    else:
      raw = np.ascontiguousarray(value, {"F32": "<f4", "F16": "<f2", "I64": "<i8"}[tag]).tobytes()
    header[name] = {"dtype": tag, "shape": list(value.shape), "data_offsets": [offset, offset + len(raw)]}
    chunks.append(raw)
    offset += len(raw)
  head = json.dumps(header).encode()
  head += b" " * (-len(head) % 8)  # the format pads the header to 8 bytes with spaces
  path.write_bytes(len(head).to_bytes(8, "little") + head + b"".join(chunks))


# ---------------------------------------------------------------------- an independent NumPy forward


def np_conv(x, w, stride, pad):
  """NHWC x, OIHW w -> NHWC, as a sum over kernel taps of strided slices (no im2col library)."""
  x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  kh, kw = w.shape[2:]
  ho = (x.shape[1] - kh) // stride + 1
  wo = (x.shape[2] - kw) // stride + 1
  out = np.zeros((x.shape[0], ho, wo, w.shape[0]), np.float64)
  for i in range(kh):
    for j in range(kw):
      patch = x[:, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride, :]
      out += patch @ w[:, :, i, j].T  # (b, h, w, c) @ (c, o): a BLAS product per tap
  return out


def np_bn(x, sd, name):
  return ((x - sd[f"{name}.running_mean"]) / np.sqrt(sd[f"{name}.running_var"] + 1e-5)
          * sd[f"{name}.weight"] + sd[f"{name}.bias"])


def np_maxpool(x):
  x = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
  ho, wo = (x.shape[1] - 3) // 2 + 1, (x.shape[2] - 3) // 2 + 1
  windows = [x[:, i:i + 2 * (ho - 1) + 1:2, j:j + 2 * (wo - 1) + 1:2] for i in range(3) for j in range(3)]
  return np.max(windows, axis=0)


def np_basic_block(x, sd, p, stride):
  relu = lambda v: np.maximum(v, 0)
  y = relu(np_bn(np_conv(x, sd[f"{p}.conv1.weight"], stride, 1), sd, f"{p}.bn1"))
  y = np_bn(np_conv(y, sd[f"{p}.conv2.weight"], 1, 1), sd, f"{p}.bn2")
  if f"{p}.downsample.0.weight" in sd:
    x = np_bn(np_conv(x, sd[f"{p}.downsample.0.weight"], stride, 0), sd, f"{p}.downsample.1")
  return relu(y + x)


def np_stem(x, sd):
  return np_maxpool(np.maximum(np_bn(np_conv(x, sd["conv1.weight"], 2, 3), sd, "bn1"), 0))


# ------------------------------------------------------------------------------------------- tests


def test_layout_written_out_here_matches_torchvision_counts():
  shapes = torchvision_shapes((2, 2, 2, 2), "basic")
  total = sum(int(np.prod(s)) for k, s in shapes.items()
              if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
  assert total == 11_689_512  # torchvision.models.resnet18().parameters()
  assert len(shapes) == 122  # len(resnet18().state_dict())


@pytest.fixture(scope="module")
def resnet18_sd():
  return random_state_dict("resnet18")


@pytest.fixture(scope="module")
def reference_activations(resnet18_sd):
  x = np.random.default_rng(1).standard_normal((2, 32, 32, 3)).astype(np.float32)
  stem = np_stem(x.astype(np.float64), resnet18_sd)
  layer1_0 = np_basic_block(stem, resnet18_sd, "layer1.0", 1)
  layer1_1 = np_basic_block(layer1_0, resnet18_sd, "layer1.1", 1)
  layer2_0 = np_basic_block(layer1_1, resnet18_sd, "layer2.0", 2)  # has a downsample shortcut
  return x, {"layer1_0": layer1_0, "layer2_0": layer2_0}


# ResNet-18 in eval mode returning the outputs of layer1_0 and layer2_0 too; module-level so that the
# numpy and torch tests share one compilation (most of their cost).
# Channels-last, so that the captured block outputs are (B, H, W, C) like the reference's (the default
# layout on CPU keeps them (C, B, H, W); the two layouts compute the same function, tests/test_resnet.py).
_RESNET18_EVAL = jax.jit(functools.partial(
    resnet.create_backbone("resnet18", layout="channels_last").apply, train=False,
    capture_intermediates=lambda m, method: m.name in ("layer1_0", "layer2_0") and method == "__call__"))


def _check_against_numpy(variables, reference_activations):
  x, ref = reference_activations
  _, state = _RESNET18_EVAL(variables, x)
  for name, expected in ref.items():
    got = np.asarray(state["intermediates"][name]["__call__"][0])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max(),
                               err_msg=name)


@pytest.mark.parametrize("fmt", ["npz", "safetensors"])
def test_converted_file_matches_numpy_forward(tmp_path, fmt, resnet18_sd, reference_activations):
  path = tmp_path / f"resnet18.{fmt}"
  if fmt == "npz":
    np.savez(path, **resnet18_sd)
  else:
    write_safetensors(path, resnet18_sd)
  loaded = tvi.load_state_dict(path)
  assert set(loaded) == set(resnet18_sd)
  assert loaded["layer1.0.bn1.num_batches_tracked"].dtype == np.int64
  variables = tvi.load_imagenet_backbone(path, "resnet18")
  shapes = resnet.variable_shapes("resnet18")
  flat = {(c, *k): v for c in variables for k, v in
          traverse_util.flatten_dict(variables[c]).items()}
  assert {k: v.shape for k, v in flat.items()} == shapes
  assert all(v.dtype == np.float32 for v in flat.values())
  # Same tree as init (not only the same flattened keys).
  init = jax.eval_shape(lambda: resnet.create_backbone("resnet18").init(
      jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))
  assert jax.tree.structure(variables) == jax.tree.structure(dict(init))
  _check_against_numpy(variables, reference_activations)


def test_safetensors_half_and_bfloat16_are_widened(tmp_path):
  rng = np.random.default_rng(0)
  tensors = {"a": rng.standard_normal((3, 4)).astype(np.float32),
             "b": rng.standard_normal((5,)).astype(np.float32), "n": np.array(3, np.int64)}
  path = tmp_path / "t.safetensors"
  write_safetensors(path, tensors, {"a": "F16", "b": "BF16"})
  got = tvi.read_safetensors(path)
  assert all(got[k].dtype == np.float32 for k in "ab") and got["n"] == 3 and got["n"].dtype == np.int64
  np.testing.assert_array_equal(got["a"], tensors["a"].astype(np.float16).astype(np.float32))
  truncated = (tensors["b"].view(np.uint32) & 0xFFFF0000).view(np.float32)
  np.testing.assert_array_equal(got["b"], truncated)


def test_corrupt_safetensors_names_the_file(tmp_path):
  path = tmp_path / "bad.safetensors"
  path.write_bytes((10 ** 9).to_bytes(8, "little") + b"{}")
  with pytest.raises(errors.CheckpointError, match="bad.safetensors.*header length"):
    tvi.load_state_dict(path)
  write_safetensors(path, {"w": np.zeros((4, 4), np.float32)})
  data = path.read_bytes()
  path.write_bytes(data[:-8])  # truncated tensor data
  with pytest.raises(errors.CheckpointError, match="bad.safetensors.*'w'"):
    tvi.load_state_dict(path)


def _npz(tmp_path, sd, name="weights.npz"):
  path = tmp_path / name
  np.savez(path, **sd)
  return path


def test_missing_key_names_file_and_key(tmp_path, resnet18_sd):
  sd = dict(resnet18_sd)
  del sd["layer3.1.bn2.running_var"]
  path = _npz(tmp_path, sd)
  with pytest.raises(errors.CheckpointError) as e:
    tvi.load_imagenet_backbone(path, "resnet18")
  assert str(path) in str(e.value) and "missing" in str(e.value)
  assert "layer3.1.bn2.running_var" in str(e.value)


def test_wrong_shape_names_file_key_and_shapes(tmp_path, resnet18_sd):
  sd = dict(resnet18_sd, **{"layer2.0.downsample.0.weight": np.zeros((128, 64, 3, 3), np.float32)})
  path = _npz(tmp_path, sd)
  with pytest.raises(errors.CheckpointError) as e:
    tvi.load_imagenet_backbone(path, "resnet18")
  msg = str(e.value)
  assert str(path) in msg and "layer2.0.downsample.0.weight: (128, 64, 3, 3), expected (128, 64, 1, 1)" in msg


def test_unexpected_key_names_file_and_key_but_fc_is_ignored(tmp_path, resnet18_sd):
  sd = dict(resnet18_sd, **{"layer1.0.conv1.bias": np.zeros(64, np.float32),
                            "fc.extra": np.zeros(3, np.float32)})
  path = _npz(tmp_path, sd)
  with pytest.raises(errors.CheckpointError) as e:
    tvi.load_imagenet_backbone(path, "resnet18")
  assert str(path) in str(e.value) and "layer1.0.conv1.bias" in str(e.value)
  assert "fc.extra" not in str(e.value)


def test_other_architecture_is_named_in_the_error(tmp_path, resnet18_sd):
  path = _npz(tmp_path, resnet18_sd, "r18.npz")
  with pytest.raises(errors.CheckpointError, match=r"r18\.npz.*looks like a resnet18"):
    tvi.load_imagenet_backbone(path, "resnet34")


def test_unknown_suffix_and_missing_file(tmp_path):
  path = tmp_path / "resnet50.h5"
  path.write_bytes(b"\x89HDF")
  with pytest.raises(errors.CheckpointError, match=r"resnet50\.h5.*suffix.*\.safetensors"):
    tvi.load_state_dict(path)
  with pytest.raises(errors.CheckpointError, match=r"nothere\.npz.*not found"):
    tvi.load_state_dict(tmp_path / "nothere.npz")
  with pytest.raises(errors.ConfigError, match="resnet18"):
    tvi.load_imagenet_backbone(tmp_path / "nothere.npz", "resnet19")


def test_pth_without_torch_says_convert_to_npz(tmp_path, monkeypatch):
  path = tmp_path / "resnet50.pth"
  path.write_bytes(b"PK")
  monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
  with pytest.raises(errors.CheckpointError, match=r"resnet50\.pth.*PyTorch.*\.npz"):
    tvi.load_state_dict(path)


def test_resnet50_bottleneck_keys_convert():
  # Zero-stride arrays: the full key and shape check of a 25M-parameter state dict without its memory.
  spec = resnet.BACKBONES["resnet50"]
  sd = {k: np.broadcast_to(np.float32(1.0), s)
        for k, s in torchvision_shapes(spec["stage_sizes"], spec["block"]).items()}
  variables = tvi.convert_state_dict(sd, "resnet50")
  assert variables["params"]["layer1_0"]["downsample_conv"]["kernel"].shape == (1, 1, 64, 256)
  assert variables["batch_stats"]["layer4_2"]["bn3"]["var"].shape == (2048,)
  name = tvi.torchvision_name(("params", "layer3_0", "downsample_bn", "scale"))
  assert name == "layer3.0.downsample.1.weight"


class _Wrapper(nn.Module):
  backbone: str

  @nn.compact
  def __call__(self, x, *, train):
    f = resnet.create_backbone(self.backbone).clone(parent=self, name="backbone")(x, train=train)
    return nn.Dense(3, name="head")(f)


def test_merge_backbone(resnet18_sd):
  converted = tvi.convert_state_dict(resnet18_sd, "resnet18")
  x = jnp.zeros((1, 32, 32, 3))
  model = _Wrapper("resnet18")
  # Placed zeros of init's shapes: merge_backbone reads only the tree (compiling init costs seconds).
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
  mesh = Mesh(np.array(jax.devices()), ("batch",))
  variables = jax.tree.map(lambda s: jax.device_put(np.zeros(s.shape, s.dtype), NamedSharding(mesh, P())),
                           dict(shapes))
  merged = tvi.merge_backbone(variables, converted)
  np.testing.assert_array_equal(merged["params"]["backbone"]["conv1"]["kernel"],
                                resnet18_sd["conv1.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(merged["batch_stats"]["backbone"]["layer2_0"]["downsample_bn"]["var"],
                                resnet18_sd["layer2.0.downsample.1.running_var"])
  assert merged["params"]["head"] is variables["params"]["head"]
  leaf = merged["params"]["backbone"]["layer1_0"]["conv1"]["kernel"]
  assert isinstance(leaf, jax.Array) and leaf.sharding == NamedSharding(mesh, P())
  # The input is not modified.
  assert not np.array_equal(variables["params"]["backbone"]["conv1"]["kernel"],
                            merged["params"]["backbone"]["conv1"]["kernel"])
  tiny = jax.eval_shape(lambda: _Wrapper("resnet_tiny").init(jax.random.key(0), x, train=False))
  with pytest.raises(errors.ConfigError, match="backbone.*only in the weights.*layer2_0"):
    tvi.merge_backbone(dict(tiny), converted)
  with pytest.raises(errors.ConfigError, match="no submodule 'encoder'"):
    tvi.merge_backbone(variables, converted, prefix="encoder")


# ------------------------------------------------------------------------------- against PyTorch


def test_torch_reference_network_matches(tmp_path):
  torch = pytest.importorskip("torch")
  from disent_jax.bench import torch_resnet  # pylint: disable=import-outside-toplevel

  torch.manual_seed(0)
  net = torch_resnet.make_resnet("resnet18")
  assert torch_resnet.param_count(net) == 11_176_512
  # Non-trivial running statistics, so eval mode exercises them.
  with torch.no_grad():
    for m in net.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        m.running_mean.uniform_(-0.2, 0.2)
        m.running_var.uniform_(0.5, 1.5)
        m.weight.uniform_(0.5, 1.5)
        m.bias.uniform_(-0.2, 0.2)
  path = tmp_path / "net.pth"
  torch.save(net.state_dict(), path)
  variables = tvi.load_imagenet_backbone(path, "resnet18")
  # Batch 4 in train mode: layer4 is 1x1 at 32 px, and statistics over 2 values are ill-conditioned.
  x = np.random.default_rng(0).standard_normal((4, 32, 32, 3)).astype(np.float32)
  net.eval()
  with torch.no_grad():
    ref = net(torch.from_numpy(x[:2].transpose(0, 3, 1, 2))).numpy()
  got, _ = _RESNET18_EVAL(variables, x[:2])
  np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
  # Train mode: batch statistics, and the running means move the same way (flax momentum 0.9 =
  # torch 0.1; running_var differs by design: torch stores the unbiased variance). The lax convolutions
  # compile 4x faster than the CPU default (im2col), whose equality to lax test_resnet.py checks.
  net.train()
  with torch.no_grad():
    ref = net(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
  ours = resnet.create_backbone("resnet18", conv_impl="lax")
  got, updates = jax.jit(functools.partial(ours.apply, train=True, mutable=["batch_stats"]))(variables, x)
  np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
  np.testing.assert_allclose(updates["batch_stats"]["layer3_0"]["bn1"]["mean"],
                             net.layer3[0].bn1.running_mean.numpy(), rtol=1e-4, atol=1e-5)
