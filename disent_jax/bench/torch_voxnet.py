"""The Stage I network and step in PyTorch, layer for layer as `disent_jax.models.embedder.VoxelEmbedder`
with the default config (BatchNorm, no conv bias, linear heads), for speed comparisons only.

Rotation uses `affine_grid` + `grid_sample` (trilinear, zero padding, align_corners=True), which matches
`disent_jax.cad.rotate.rotate_voxels` to ~1e-5 once the (x, y, z) -> (W, H, D) index order is flipped:
M = P R^T P with P swapping x and z. PyTorch is imported lazily: it is an optional benchmark extra.
"""

from __future__ import annotations

import numpy as np


def make_step(num_models: int, num_anchors: int, resolution: int = 32, features=(32, 32),
              embed_dim: int = 1024, lr: float = 1e-4, threads: int | None = None):
  """Returns (module, step(vox uint8 (B,R,R,R), R (B,3,3), model, anchor, residual) -> loss)."""
  import torch  # pylint: disable=import-outside-toplevel
  from torch import nn
  import torch.nn.functional as F

  if threads:
    torch.set_num_threads(threads)
  c1, c2 = features
  n1 = (resolution - 5) // 2 + 1
  n2 = (n1 - 2) // 2
  flat = c2 * n2 ** 3

  class VoxNet(nn.Module):

    def __init__(self):
      super().__init__()
      self.conv1 = nn.Conv3d(1, c1, 5, 2, bias=False)
      self.bn1 = nn.BatchNorm3d(c1, momentum=0.1, eps=1e-5)
      self.conv2 = nn.Conv3d(c1, c2, 3, 1, bias=False)
      self.bn2 = nn.BatchNorm3d(c2, momentum=0.1, eps=1e-5)
      self.embedding = nn.Linear(flat, embed_dim)
      self.shape = nn.Linear(embed_dim // 2, num_models)
      self.anchor = nn.Linear(embed_dim // 2, num_anchors)
      self.residual = nn.Linear(embed_dim // 2, num_anchors * 4)

    def forward(self, x):
      x = F.leaky_relu(self.bn1(self.conv1(x)), 0.1)
      x = F.leaky_relu(self.bn2(self.conv2(x)), 0.1)
      # Flax flattens channels-last; the order does not change the cost.
      x = F.max_pool3d(x, 2).flatten(1)
      h = self.embedding(x)
      s, p = h[:, :embed_dim // 2], h[:, embed_dim // 2:]
      res = self.residual(p).view(-1, num_anchors, 4)
      res = res / res.norm(dim=-1, keepdim=True).clamp_min(1e-6)
      return self.shape(s), self.anchor(p), res

  model = VoxNet()
  opt = torch.optim.Adam(model.parameters(), lr)
  swap = torch.tensor([[0.0, 0, 1], [0, 1, 0], [1, 0, 0]])

  def step(vox, rot, model_idx, anchor, residual):
    b = vox.shape[0]
    m = swap @ rot.transpose(1, 2) @ swap
    theta = torch.cat([m, torch.zeros(b, 3, 1)], 2)
    grid = F.affine_grid(theta, (b, 1) + tuple(vox.shape[1:]), align_corners=True)
    x = F.grid_sample(vox[:, None].float(), grid, mode="bilinear", padding_mode="zeros",
                      align_corners=True)
    shape_logits, anchor_logits, res = model(x)
    loss = F.cross_entropy(shape_logits, model_idx) + F.cross_entropy(anchor_logits, anchor)
    pred = res[torch.arange(b), anchor]
    loss = loss + F.huber_loss(pred, residual, reduction="none", delta=1.0).sum(-1).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss

  return model, step


def param_count(model) -> int:
  return int(sum(np.prod(p.shape) for p in model.parameters()))
