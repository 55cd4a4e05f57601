"""The Stage II ResNet backbone in PyTorch, layer for layer as `disent_jax.models.resnet.ResNet`, for speed
comparisons and as an independent reference in the converter tests.

Written with torch.nn alone (torchvision is not installed): v1.5 blocks, the same stem, padding, BatchNorm
eps and init as ours, and state_dict keys identical to torchvision's (conv1, bn1, layer1.0.conv1, ...,
layer2.0.downsample.0/1), so `torchvision_import.convert_state_dict` reads its state dicts. There is no
`fc`: like ours, the module ends at the pooled features (same parameter count as ours). PyTorch is imported
lazily: it is an optional benchmark extra.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from disent_jax.bench import timing
from disent_jax.models import resnet


def make_resnet(backbone: str, threads: int | None = None):
  """The torch module for a `resnet.BACKBONES` name: NCHW images -> (B, feature_dim) pooled features."""
  import torch  # pylint: disable=import-outside-toplevel
  from torch import nn

  if threads:
    torch.set_num_threads(threads)
  spec = dict(resnet.BACKBONES[backbone]) if backbone in resnet.BACKBONES else None
  if spec is None:
    resnet.create_backbone(backbone)  # raises the ConfigError listing the valid names

  def conv(cin, cout, k, stride=1):
    return nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, bias=False)

  def shortcut(cin, cout, stride):
    """torchvision's `downsample` (1x1 conv + BN) where the shape changes, else None (identity)."""
    if stride == 1 and cin == cout:
      return None
    return nn.Sequential(conv(cin, cout, 1, stride), nn.BatchNorm2d(cout))

  class Basic(nn.Module):
    expansion = 1

    def __init__(self, cin, width, stride):
      super().__init__()
      self.conv1, self.bn1 = conv(cin, width, 3, stride), nn.BatchNorm2d(width)
      self.conv2, self.bn2 = conv(width, width, 3), nn.BatchNorm2d(width)
      self.relu = nn.ReLU(inplace=True)
      self.downsample = shortcut(cin, width, stride)

    def forward(self, x):
      y = self.relu(self.bn1(self.conv1(x)))
      y = self.bn2(self.conv2(y))
      return self.relu(y + (x if self.downsample is None else self.downsample(x)))

  class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, width, stride):
      super().__init__()
      out = width * 4
      self.conv1, self.bn1 = conv(cin, width, 1), nn.BatchNorm2d(width)
      self.conv2, self.bn2 = conv(width, width, 3, stride), nn.BatchNorm2d(width)  # v1.5: stride here
      self.conv3, self.bn3 = conv(width, out, 1), nn.BatchNorm2d(out)
      self.relu = nn.ReLU(inplace=True)
      self.downsample = shortcut(cin, out, stride)

    def forward(self, x):
      y = self.relu(self.bn1(self.conv1(x)))
      y = self.relu(self.bn2(self.conv2(y)))
      y = self.bn3(self.conv3(y))
      return self.relu(y + (x if self.downsample is None else self.downsample(x)))

  class ResNet(nn.Module):

    def __init__(self, stage_sizes, block, num_filters=64):
      super().__init__()
      block_cls = {"basic": Basic, "bottleneck": Bottleneck}[block]
      self.conv1, self.bn1 = conv(3, num_filters, 7, 2), nn.BatchNorm2d(num_filters)
      self.relu = nn.ReLU(inplace=True)
      self.maxpool = nn.MaxPool2d(3, 2, 1)
      cin = num_filters
      self.num_stages = len(stage_sizes)
      for i, size in enumerate(stage_sizes):
        blocks = []
        for j in range(size):
          width = num_filters * 2 ** i
          blocks.append(block_cls(cin, width, 2 if i > 0 and j == 0 else 1))
          cin = width * block_cls.expansion
        setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
      # torchvision's init (the momentum 0.1 default is flax's 0.9).
      for m in self.modules():
        if isinstance(m, nn.Conv2d):
          nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
      x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
      for i in range(self.num_stages):
        x = getattr(self, f"layer{i + 1}")(x)
      return x.mean(dim=(2, 3))

  return ResNet(**spec)


def param_count(model) -> int:
  """Number of trainable parameters (BatchNorm running statistics excluded)."""
  return int(sum(np.prod(p.shape) for p in model.parameters()))


def numpy_state_dict(model) -> dict[str, np.ndarray]:
  """The model's state dict as numpy arrays (what `torchvision_import.convert_state_dict` takes)."""
  return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def make_train_step(backbone: str, image_size: int, batch_size: int, threads: int | None = None,
                    num_classes: int = 1000) -> tuple[Callable[[], Any], int]:
  """Builds a PyTorch training step of `backbone` (float32, NCHW, eager) on a fixed random batch.

  The step: forward in train mode, a linear classifier + cross-entropy on random labels, backward, Adam;
  what `disent_jax.bench.flax_resnet.make_train_step` builds for ours.

  Args:
    backbone: a `resnet.BACKBONES` name.
    image_size: square input size in pixels.
    batch_size: images per step.
    threads: torch intra-op threads (None: torch's default).
    num_classes: width of the linear head.

  Returns:
    (step, params): `step()` runs one optimizer step; params is the backbone's parameter count.
  """
  import torch  # pylint: disable=import-outside-toplevel
  import torch.nn.functional as F

  torch.manual_seed(0)
  model = make_resnet(backbone, threads)
  head = torch.nn.Linear(resnet.feature_dim(backbone), num_classes)
  model.train()
  opt = torch.optim.Adam(list(model.parameters()) + list(head.parameters()), 1e-4)
  images = torch.randn(batch_size, 3, image_size, image_size)
  labels = torch.randint(0, num_classes, (batch_size,))

  def step():
    loss = F.cross_entropy(head(model(images)), labels)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())

  return step, param_count(model)


def time_train_step(backbone: str, image_size: int, batch_size: int, steps: int,
                    threads: int | None = None, num_classes: int = 1000) -> dict:
  """Images per second of a PyTorch training step of `backbone` (float32, NCHW, eager).

  The step is `make_train_step`'s. Mirrors `disent_jax.bench.flax_resnet.time_train_step`. On a machine
  shared with other work, PyTorch's OpenMP threads degrade badly: with 2 threads on our loaded 2-core
  machine a step took 11 s against 1.3 s with 1 thread (and 0.8 s with 2 threads when it was quiet), so
  compare at threads=1 there.

  Args:
    backbone: a `resnet.BACKBONES` name.
    image_size: square input size in pixels.
    batch_size: images per step.
    steps: timed steps (after one untimed warm-up step).
    threads: torch intra-op threads (None: torch's default).
    num_classes: width of the linear head.

  Returns:
    dict with images_per_s (from the median step), step_s (median), min_s (fastest step), first_s (the
    warm-up step), steps_s (all timed steps), cpu_s (median process CPU seconds per step: on a shared
    machine less sensitive than wall time to others' load), params (backbone parameters), threads and the
    arguments.
  """
  import torch  # pylint: disable=import-outside-toplevel

  step, params = make_train_step(backbone, image_size, batch_size, threads, num_classes)
  t = timing.time_steps(step, steps)
  return {"framework": "torch", "backbone": backbone, "image_size": image_size, "batch_size": batch_size,
          "threads": torch.get_num_threads(), "params": params, **t,
          "images_per_s": batch_size / t["step_s"]}
