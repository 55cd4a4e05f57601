"""Evaluation metrics in the paper's protocol: MedErr, Acc_pi/6, top-1 retrieval, and Table 4 breakdowns.

All functions are host-side NumPy on per-instance arrays and return plain dicts (JSON-serialisable), so a
results file can be compared by a script. `markdown_table` prints them in the paper's layout (categories as
columns, then the Mean column).

Definitions:
  * MedErr: median geodesic rotation error in degrees over a category's instances.
  * Acc_pi/6: fraction of instances with error < 30 degrees (strictly below, as "smaller than 30").
  * "mean": the paper's Mean column, the unweighted mean of the per-category figures.
  * "pooled": the figure over all instances together, whatever their category.
"""

from __future__ import annotations

from collections.abc import Sequence
import math

import numpy as np

from disent_jax import categories as categories_lib

ACC_THRESHOLD_DEG = 30.0  # pi / 6


def rotation_errors_deg(r_pred: np.ndarray, r_gt: np.ndarray) -> np.ndarray:
  """Per-instance geodesic errors (degrees) between rotation matrices (N, 3, 3), in float64 NumPy."""
  rel = np.asarray(r_pred, np.float64) @ np.swapaxes(np.asarray(r_gt, np.float64), -1, -2)
  cos = 0.5 * (np.trace(rel, axis1=-2, axis2=-1) - 1.0)
  vee = np.stack([rel[..., 2, 1] - rel[..., 1, 2], rel[..., 0, 2] - rel[..., 2, 0],
                  rel[..., 1, 0] - rel[..., 0, 1]], -1)
  return np.degrees(np.arctan2(0.5 * np.linalg.norm(vee, axis=-1), cos))


def symmetric_rotation_errors_deg(r_pred: np.ndarray, r_gt: np.ndarray, groups: Sequence[np.ndarray],
                                  group_index: np.ndarray) -> np.ndarray:
  """Per-instance geodesic errors forgiving the model's rotational symmetry: min_S d(R_pred, R_gt S).

  A bottle turned about its axis, or a table turned half way round, is the same object in the same place:
  its rotation is only defined up to the rotations S (object frame) that map the model onto itself.

  Args:
    r_pred, r_gt: (N, 3, 3) object -> camera rotations.
    groups: symmetry groups, each (K_g, 3, 3) rotation matrices (the identity included), e.g.
      `cad.zoo.symmetry_rotations`.
    group_index: (N,) int, the group of each instance.

  Returns:
    (N,) errors in degrees, never larger than `rotation_errors_deg(r_pred, r_gt)` when every group holds the
    identity.
  """
  r_pred, r_gt = np.asarray(r_pred, np.float64), np.asarray(r_gt, np.float64)
  group_index = np.asarray(group_index)
  out = np.full(len(r_gt), np.inf)
  for g, rotations in enumerate(groups):
    rows = np.flatnonzero(group_index == g)
    if rows.size == 0:
      continue
    for s in np.asarray(rotations, np.float64):
      out[rows] = np.minimum(out[rows], rotation_errors_deg(r_pred[rows], r_gt[rows] @ s))
  if np.isinf(out).any():
    raise ValueError(f"group_index holds values outside [0, {len(groups)})")
  return out


def _pose_summary(errors: np.ndarray) -> dict:
  if errors.size == 0:
    return {"mederr_deg": math.nan, "acc_pi_6": math.nan, "n": 0}
  return {"mederr_deg": float(np.median(errors)),
          "acc_pi_6": float(np.mean(errors < ACC_THRESHOLD_DEG)), "n": int(errors.size)}


def _ordered_categories(categories: Sequence[str]) -> list[str]:
  """Categories present, in the paper's order first, then any others alphabetically."""
  present = set(categories)
  known = [c for c in categories_lib.CATEGORIES if c in present]
  return known + sorted(present - set(known))


def _mean_over(per_cat: dict, key: str) -> float:
  vals = [v[key] for v in per_cat.values() if v["n"] > 0]
  return float(np.mean(vals)) if vals else math.nan


def pose_metrics(errors_deg: Sequence[float], categories: Sequence[str]) -> dict:
  """Per-category and mean MedErr / Acc_pi/6.

  Args:
    errors_deg: (N,) per-instance rotation errors in degrees.
    categories: (N,) category name of each instance.

  Returns:
    {"per_category": {cat: {"mederr_deg", "acc_pi_6", "n"}}, "mean": {"mederr_deg", "acc_pi_6"} (the
    paper's Mean column: mean of the per-category figures), "pooled": {"mederr_deg", "acc_pi_6", "n"}}.
  """
  errors = np.asarray(errors_deg, np.float64).ravel()
  cats = np.asarray(categories).ravel()
  if errors.shape != cats.shape:
    raise ValueError(f"{errors.shape[0]} errors but {cats.shape[0]} categories")
  if not np.all(np.isfinite(errors)):
    raise ValueError("rotation errors contain NaN or inf")
  per_cat = {c: _pose_summary(errors[cats == c]) for c in _ordered_categories(cats.tolist())}
  return {"per_category": per_cat,
          "mean": {"mederr_deg": _mean_over(per_cat, "mederr_deg"),
                   "acc_pi_6": _mean_over(per_cat, "acc_pi_6")},
          "pooled": _pose_summary(errors)}


def retrieval_metrics(pred_ids: Sequence, gt_ids: Sequence, categories: Sequence[str]) -> dict:
  """Top-1 retrieval accuracy (predicted CAD model == annotated CAD model), per category and mean.

  Args:
    pred_ids: (N,) predicted model identifiers (e.g. 'chair/03' keys or global indices).
    gt_ids: (N,) ground-truth identifiers, same kind.
    categories: (N,) category of each instance (ground truth).

  Returns:
    {"per_category": {cat: {"top1", "n"}}, "mean": {"top1"}, "pooled": {"top1", "n"}}.
  """
  pred, gt = np.asarray(pred_ids).ravel(), np.asarray(gt_ids).ravel()
  cats = np.asarray(categories).ravel()
  if not pred.shape == gt.shape == cats.shape:
    raise ValueError(f"shape mismatch: {pred.shape}, {gt.shape}, {cats.shape}")
  hit = pred == gt
  per_cat = {}
  for c in _ordered_categories(cats.tolist()):
    sel = cats == c
    per_cat[c] = {"top1": float(hit[sel].mean()), "n": int(sel.sum())}
  vals = [v["top1"] for v in per_cat.values()]
  return {"per_category": per_cat, "mean": {"top1": float(np.mean(vals)) if vals else math.nan},
          "pooled": {"top1": float(hit.mean()) if hit.size else math.nan, "n": int(hit.size)}}


def size_terciles(bbox_area: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Masks of the bottom third ('small') and top third ('large') of instances sorted by box area.

  Ties are broken by instance order (stable sort), so the split is deterministic.
  """
  area = np.asarray(bbox_area, np.float64).ravel()
  order = np.argsort(area, kind="stable")
  n = area.size
  small, large = np.zeros(n, bool), np.zeros(n, bool)
  small[order[: n // 3]] = True
  large[order[n - n // 3:]] = True
  return small, large


def breakdown_metrics(errors_deg: np.ndarray, retrieval_correct: np.ndarray, bbox_area: np.ndarray,
                      occluded: np.ndarray, truncated: np.ndarray) -> dict:
  """The paper's Table 4: pose and retrieval figures by object characteristics.

  'default' is the standard protocol (neither occluded nor truncated); 'small'/'large' are the bottom/top
  third by bounding-box area among those default instances; 'occluded' and 'truncated' are evaluated on
  their own instances, which the default protocol excludes.

  Args:
    errors_deg: (N,) rotation errors (degrees) for all instances, occluded/truncated included.
    retrieval_correct: (N,) bool, top-1 retrieval hit.
    bbox_area: (N,) box areas in pixels.
    occluded, truncated: (N,) bool flags.

  Returns:
    {setting: {"mederr_deg", "acc_pi_6", "top1", "n"}} for default, small, large, occluded, truncated.
  """
  err = np.asarray(errors_deg, np.float64).ravel()
  hit = np.asarray(retrieval_correct, bool).ravel()
  occ, trunc = np.asarray(occluded, bool).ravel(), np.asarray(truncated, bool).ravel()
  default = ~occ & ~trunc
  small_d, large_d = size_terciles(np.asarray(bbox_area, np.float64).ravel()[default])
  idx_default = np.flatnonzero(default)
  small = np.zeros_like(default)
  large = np.zeros_like(default)
  small[idx_default[small_d]] = True
  large[idx_default[large_d]] = True
  out = {}
  for name, sel in (("default", default), ("small", small), ("large", large), ("occluded", occ),
                    ("truncated", trunc)):
    summary = _pose_summary(err[sel])
    summary["top1"] = float(hit[sel].mean()) if sel.any() else math.nan
    out[name] = summary
  return out


def _fmt(v: float, digits: int) -> str:
  return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def markdown_table(rows: dict[str, dict], key: str, *, digits: int = 2,
                   categories: Sequence[str] | None = None) -> str:
  """A Markdown table in the paper's layout: one row per method/setting, categories as columns, Mean last.

  Args:
    rows: {row label: metrics dict as returned by `pose_metrics` or `retrieval_metrics`}.
    key: which figure to print, e.g. 'mederr_deg', 'acc_pi_6' or 'top1'.
    digits: decimals.
    categories: column order; defaults to the categories present, paper order first.

  Returns:
    The table as a string.
  """
  if categories is None:
    present = [c for r in rows.values() for c in r["per_category"]]
    categories = _ordered_categories(present)
  header = ["", *(categories_lib.SHORT_NAMES.get(c, c) for c in categories), "Mean"]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for label, m in rows.items():
    cells = [_fmt(m["per_category"].get(c, {}).get(key, math.nan), digits) for c in categories]
    lines.append("| " + " | ".join([label, *cells, _fmt(m["mean"][key], digits)]) + " |")
  return "\n".join(lines)


def breakdown_markdown(breakdown: dict) -> str:
  """Table 4 layout: setting | Top-1-Acc | MedErr | Acc_pi/6."""
  lines = ["| Setting | Top-1-Acc | MedErr | Acc_pi/6 | n |", "|---|---|---|---|---|"]
  for name, m in breakdown.items():
    lines.append(f"| {name} | {_fmt(m['top1'], 3)} | {_fmt(m['mederr_deg'], 2)} | "
                 f"{_fmt(m['acc_pi_6'], 3)} | {m['n']} |")
  return "\n".join(lines)
