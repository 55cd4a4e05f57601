"""Figures (PNG) that a person would rather look at than read: learning curves."""

from __future__ import annotations

import json
import os

import matplotlib

matplotlib.use("Agg")  # headless: no display on training machines
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402


def plot_learning_curve(metrics_jsonl: str, out_png: str, batch_size: int | None = None,
                        keys: tuple[str, ...] = ("loss", "shape_acc", "anchor_acc")) -> str:
  """Plots scalars logged by `train_lib.MetricWriter` (metrics.jsonl) against steps (or samples).

  Args:
    metrics_jsonl: the JSON-lines file of logged scalars.
    out_png: where to write the PNG (atomically).
    batch_size: when given, the x axis is training samples instead of steps.
    keys: scalars to plot, one panel each (missing ones are skipped).

  Returns:
    The PNG path.
  """
  with open(metrics_jsonl) as f:
    # A resumed run appends again from its checkpoint step: keep the last row logged for each step.
    by_step = {r["step"]: r for r in (json.loads(line) for line in f if line.strip())}
  rows = [by_step[k] for k in sorted(by_step)]
  keys = tuple(k for k in keys if any(k in r for r in rows))
  if not keys:
    raise ValueError(f"{metrics_jsonl} has no logged values of {keys}")
  fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.2), squeeze=False)
  for ax, key in zip(axes[0], keys):
    pts = [(r["step"] * (batch_size or 1), r[key]) for r in rows if key in r]
    ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=1.2)
    ax.set_title(key)
    ax.set_xlabel("samples" if batch_size else "step")
    if batch_size:  # thousands, so long runs' tick labels do not collide
      ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x / 1000:g}k"))
    ax.grid(alpha=0.3)
  fig.tight_layout()
  tmp = os.path.join(os.path.dirname(os.path.abspath(out_png)), "." + os.path.basename(out_png) + ".tmp")
  fig.savefig(tmp, dpi=110, format="png")
  plt.close(fig)
  os.replace(tmp, out_png)
  return out_png
