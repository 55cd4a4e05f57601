"""The evaluation report's figures (PNG): rotation-error CDF, per-category bars, the qualitative grid.

`evaluate._write_figures` calls the three public drawing functions after scoring a split; each writes one
PNG atomically (a hidden temporary file in the same folder, then `os.replace`), so a report folder never
holds a half-written figure, and returns its path.

  * `rotation_error_cdf`: per category (and pooled), the fraction of objects whose geodesic rotation error
    is below x, for x in [0, 180] degrees, with the Acc_pi/6 threshold (30 degrees) marked. The value of a
    curve at 30 degrees is exactly the Acc_pi/6 of `metrics.pose_metrics` (same strict `<`).
  * `category_bars`: the per-category numbers of results.json as bars (MedErr, Acc_pi/6, retrieval top-1
    of the classifier and, when present, of the nearest shape vector), with the mean over categories.
  * `qualitative_from_predictions`: the paper's Figure 3: one row per example, columns input crop |
    ground-truth CAD model at the ground-truth pose | retrieved CAD model at the predicted pose, both drawn
    over the crop with the crop's exact camera (`crops.crop_camera` of the dataset's intrinsics), so a good
    prediction lies on top of the object.

Rows of the qualitative grid are picked deterministically (`choose_examples`): round-robin over the
categories present (the paper's order), the earliest examples of each category first, so a grid of N rows
covers min(N, #categories) categories and the same evaluation always shows the same objects.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # headless: no display on training machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from disent_jax import categories as categories_lib  # noqa: E402
from disent_jax import geometry  # noqa: E402

ACC_THRESHOLD_DEG = 30.0  # Acc_pi/6
GT_COLOR = (0.25, 0.85, 0.35)  # green: ground truth
PRED_COLOR = (1.0, 0.55, 0.15)  # orange: prediction
DISPLAY_SIZE = 96  # pixels per panel of the qualitative grid: sharp enough to judge a pose, fast to render


def _ordered_categories(categories: Sequence[str]) -> list[str]:
  """Categories present, in the paper's order first, then any others alphabetically (as metrics.py)."""
  present = {str(c) for c in categories}
  known = [c for c in categories_lib.CATEGORIES if c in present]
  return known + sorted(present - set(known))


def _save(fig, out_png: str, dpi: int = 110) -> str:
  """Writes the figure atomically and closes it."""
  out_dir = os.path.dirname(os.path.abspath(out_png))
  os.makedirs(out_dir, exist_ok=True)
  tmp = os.path.join(out_dir, "." + os.path.basename(out_png) + ".tmp")
  try:
    fig.savefig(tmp, dpi=dpi, format="png")
  finally:
    plt.close(fig)
  os.replace(tmp, out_png)
  return out_png


# ---------------------------------------------------------------------------------------------------------
# Rotation-error CDF.


def cdf_points(errors_deg: Sequence[float], thresholds_deg: Sequence[float]) -> np.ndarray:
  """Fraction of errors strictly below each threshold (the CDF curve's values).

  Args:
    errors_deg: (N,) rotation errors in degrees.
    thresholds_deg: (T,) thresholds in degrees.

  Returns:
    (T,) float64 fractions in [0, 1]; NaN everywhere when there are no errors.
  """
  e = np.asarray(errors_deg, np.float64).reshape(-1)
  x = np.asarray(thresholds_deg, np.float64).reshape(-1)
  if e.size == 0:
    return np.full(x.shape, np.nan)
  # Sorted errors + searchsorted: O((N + T) log N) instead of an N x T comparison matrix.
  return np.searchsorted(np.sort(e), x, side="left") / e.size


def rotation_error_cdf(errors_deg: Sequence[float], categories: Sequence[str], out_png: str) -> str:
  """Plots, per category and pooled, the fraction of objects with rotation error below x degrees.

  Args:
    errors_deg: (N,) geodesic rotation errors in degrees.
    categories: (N,) category name of each object.
    out_png: the PNG to write.

  Returns:
    `out_png`.
  """
  errors = np.asarray(errors_deg, np.float64).reshape(-1)
  cats = np.asarray([str(c) for c in categories])
  if cats.shape != errors.shape:
    raise ValueError(f"{errors.size} errors but {cats.size} categories")
  xs = np.linspace(0.0, 180.0, 361)
  fig, ax = plt.subplots(figsize=(6.4, 4.2))
  order = _ordered_categories(cats)
  cmap = plt.get_cmap("tab20" if len(order) > 10 else "tab10")
  for i, c in enumerate(order):
    sel = errors[cats == c]
    ax.plot(xs, cdf_points(sel, xs), lw=1.0, color=cmap(i % cmap.N),
            label=f"{categories_lib.SHORT_NAMES.get(c, c)} ({sel.size})")
  if errors.size:
    ax.plot(xs, cdf_points(errors, xs), lw=2.4, color="black", label=f"all ({errors.size})")
    acc = float(np.mean(errors < ACC_THRESHOLD_DEG))
    ax.set_title(f"Rotation error CDF: Acc_pi/6 = {acc:.3f}, MedErr = {np.median(errors):.1f} deg")
  else:
    ax.set_title("Rotation error CDF (no objects)")
  ax.axvline(ACC_THRESHOLD_DEG, color="grey", ls="--", lw=1.0)
  ax.text(ACC_THRESHOLD_DEG + 2, 0.02, "pi/6", color="grey")
  ax.set_xlim(0, 180)
  ax.set_ylim(0, 1.0)
  ax.set_xticks(np.arange(0, 181, 30))
  ax.set_xlabel("geodesic rotation error (degrees)")
  ax.set_ylabel("fraction of objects with error < x")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, ncol=2, loc="lower right")
  fig.tight_layout()
  return _save(fig, out_png)


# ---------------------------------------------------------------------------------------------------------
# Per-category bars.


def _bar_panel(ax, names: list[str], series: list[tuple[str, dict, str]], title: str,
               ylim: tuple[float, float] | None) -> None:
  """Grouped bars of `series` [(label, {category: value}, 'mean' value key)], a 'Mean' group last."""
  width = 0.8 / max(1, len(series))
  xs = np.arange(len(names) + 1)
  for j, (label, per_cat, mean) in enumerate(series):
    vals = [per_cat.get(c, math.nan) for c in names] + [mean]
    ax.bar(xs + (j - (len(series) - 1) / 2) * width, vals, width, label=label)
    if not math.isnan(mean):
      ax.axhline(mean, color=f"C{j}", ls="--", lw=0.8)
  ax.set_xticks(xs)
  ax.set_xticklabels([categories_lib.SHORT_NAMES.get(c, c) for c in names] + ["Mean"], fontsize=8)
  ax.set_title(title)
  if ylim is not None:
    ax.set_ylim(*ylim)
  ax.grid(axis="y", alpha=0.3)
  if len(series) > 1:
    ax.legend(fontsize=7)


def category_bars(results: dict, out_png: str) -> str:
  """Per-category bars of the evaluation results (MedErr, Acc_pi/6, retrieval top-1), mean last.

  Args:
    results: the JSON-ready results of `evaluate.evaluate` (keys 'rotation' and 'retrieval' with
      'per_category' and 'mean'; 'retrieval_nn' optional).
    out_png: the PNG to write.

  Returns:
    `out_png`.
  """
  rot, ret = results["rotation"], results["retrieval"]

  def per(block: dict, key: str) -> tuple[dict, float]:
    vals = {c: float(v[key]) for c, v in block["per_category"].items() if v.get("n", 1) > 0}
    mean = block.get("mean", {}).get(key)
    return vals, (float(mean) if mean is not None else math.nan)

  names = _ordered_categories(list(rot["per_category"]) + list(ret["per_category"]))
  med, med_mean = per(rot, "mederr_deg")
  acc, acc_mean = per(rot, "acc_pi_6")
  top1, top1_mean = per(ret, "top1")
  retrieval = [("classifier", top1, top1_mean)]
  if "retrieval_nn" in results:
    nn, nn_mean = per(results["retrieval_nn"], "top1")
    retrieval.append(("nearest shape vector", nn, nn_mean))
  # Stacked panels sharing the category axis: 12 categories x 3 panels side by side would be ~20 in wide.
  fig, axes = plt.subplots(3, 1, figsize=(max(6.0, 0.5 * len(names) + 2.0), 8.4), sharex=True)
  _bar_panel(axes[0], names, [("MedErr", med, med_mean)],
             f"rotation MedErr (deg), mean {med_mean:.1f}", (0.0, 180.0))
  _bar_panel(axes[1], names, [("Acc_pi/6", acc, acc_mean)], f"rotation Acc_pi/6, mean {acc_mean:.3f}",
             (0.0, 1.0))
  _bar_panel(axes[2], names, retrieval, f"retrieval top-1, mean {top1_mean:.3f}", (0.0, 1.0))
  fig.tight_layout()
  return _save(fig, out_png)


# ---------------------------------------------------------------------------------------------------------
# Qualitative grid (paper Figure 3).


def choose_examples(category_names: Sequence[str], num: int) -> np.ndarray:
  """Deterministic rows of the qualitative grid: round-robin over categories, earliest examples first.

  Args:
    category_names: (N,) category of every evaluated example, in evaluation order.
    num: how many rows to pick (at most N).

  Returns:
    (min(num, N),) int64 example indices, grouped by round (one example of each category per round, the
    categories in the paper's order).
  """
  cats = [str(c) for c in category_names]
  queues = {c: [i for i, x in enumerate(cats) if x == c] for c in _ordered_categories(cats)}
  out: list[int] = []
  depth = 0
  while len(out) < min(num, len(cats)):
    for c, q in queues.items():
      if depth < len(q) and len(out) < num:
        out.append(q[depth])
    depth += 1
  return np.asarray(out, np.int64)


def _find_examples(source, instance_ids: Sequence[str], guesses: Sequence[int]) -> list[int]:
  """Source indices of `instance_ids`: the guessed position when its id matches, else a scan."""
  from disent_jax import input_pipeline  # pylint: disable=import-outside-toplevel
  found: list[int | None] = []
  for iid, g in zip(instance_ids, guesses):
    ok = 0 <= g < len(source) and input_pipeline._as_str(source[g]["instance_id"]) == iid  # noqa: SLF001
    found.append(int(g) if ok else None)
  if any(f is None for f in found):
    # The evaluation pipeline reads the split in order, so this only runs for datasets written in another
    # order: one pass over the ids (images stay encoded) maps them all.
    index = {input_pipeline._as_str(source[k]["instance_id"]): k for k in range(len(source))}  # noqa: SLF001
    missing = [iid for iid, f in zip(instance_ids, found) if f is None and iid not in index]
    if missing:
      raise KeyError(f"instance ids {missing[:3]} are not in the dataset split")
    found = [f if f is not None else index[iid] for f, iid in zip(found, instance_ids)]
  return found  # type: ignore[return-value]


def _panel_overlay(crop: np.ndarray, mesh, rotation: np.ndarray, t_cam: np.ndarray, camera,
                   color, backend: str) -> np.ndarray:
  """The mesh drawn over the crop; the plain crop if the pose cannot be rendered (e.g. Z <= 0)."""
  from disent_jax.render import overlay as overlay_lib  # pylint: disable=import-outside-toplevel
  try:
    return overlay_lib.overlay(crop, mesh, np.asarray(rotation, np.float64), np.asarray(t_cam, np.float64),
                               camera, color=color, alpha=0.6, backend=backend)
  except Exception as e:  # noqa: BLE001 -- one bad pose must not cost the whole figure
    logging.warning("qualitative figure: could not render a pose (%s: %s)", type(e).__name__, e)
    return crop


@dataclasses.dataclass
class QualitativeRow:
  """One row of the qualitative grid: three (size, size, 3) uint8 panels and their titles."""
  index: int  # position in the predictions
  instance_id: str
  crop: np.ndarray
  ground_truth: np.ndarray
  prediction: np.ndarray
  titles: tuple[str, str, str]
  rotation_error_deg: float


def qualitative_rows(predictions: dict, method, data_dir: str, split: str, num: int = 12, *,
                     size: int = DISPLAY_SIZE) -> list[QualitativeRow]:
  """The panels of the qualitative grid (see `qualitative_from_predictions`), without drawing the figure.

  Args: as `qualitative_from_predictions`.

  Returns:
    One `QualitativeRow` per chosen example, in `choose_examples` order.
  """
  from disent_jax import input_pipeline  # pylint: disable=import-outside-toplevel
  from disent_jax.cad import collections as collections_lib  # pylint: disable=import-outside-toplevel
  from disent_jax.datasets import crops  # pylint: disable=import-outside-toplevel
  from disent_jax.render.camera import Camera  # pylint: disable=import-outside-toplevel

  chosen = choose_examples(predictions["category_name"], num)
  if chosen.size == 0:
    return []
  source = input_pipeline.open_source(data_dir, split)
  ids = [str(predictions["instance_id"][i]) for i in chosen]
  positions = _find_examples(source, ids, chosen)
  models = collections_lib.load_collection(method.config.data.cad_source)
  meshes = {(m.category, int(m.cad_index)): m.mesh for m in models}
  bank = method.bank
  images_cfg = method.config.get("images", None)
  backend = str((images_cfg.get("render_backend", "auto") if images_cfg is not None else "auto") or "auto")

  sel = np.asarray(chosen)
  r_gt = np.asarray(geometry.quat_to_matrix(np.asarray(predictions["quaternion"], np.float64)[sel]))
  r_pred = np.asarray(predictions["pred_rotation"], np.float64)[sel]
  boxes = np.asarray(predictions["bbox"], np.float64)[sel]
  ks = np.asarray(predictions["intrinsics"], np.float64)[sel]
  # The predicted crop-relative translation placed with the example's own camera and box (exact).
  t_pred = np.asarray(geometry.crop_to_camera_translation(
      np.asarray(predictions["pred_translation"], np.float64)[sel], boxes, ks))
  t_gt = np.asarray(predictions["translation_camera"], np.float64)[sel]
  err = np.asarray(geometry.geodesic_deg(r_pred, r_gt))

  rows = []
  for r, (i, pos) in enumerate(zip(chosen, positions)):
    raw = source[pos]
    full = input_pipeline._decode_png(raw["image"])  # noqa: SLF001
    crop = crops.square_crop(full, boxes[r], size)
    # The crop's camera: the photo's camera shifted and scaled, same extrinsics, so camera-frame poses
    # render as they are.
    camera = crops.crop_camera(Camera.from_K(ks[r], full.shape[1], full.shape[0]), boxes[r], size)
    cat, cad = str(predictions["category_name"][i]), int(predictions["cad_index"][i])
    gt_row = int(predictions["model_index"][i]) if "model_index" in predictions else -1
    gt_name = bank.names[gt_row] if gt_row >= 0 else f"{cat}/{cad:02d}"
    gt_mesh = meshes.get((cat, cad))
    gt_panel = (_panel_overlay(crop, gt_mesh, r_gt[r], t_gt[r], camera, GT_COLOR, backend)
                if gt_mesh is not None else _grey(crop))
    k = int(predictions["pred_model_cls"][i])
    pred_mesh = meshes.get((bank.categories[k], int(bank.cad_indices[k])))
    pred_panel = (_panel_overlay(crop, pred_mesh, r_pred[r], t_pred[r], camera, PRED_COLOR, backend)
                  if pred_mesh is not None else _grey(crop))
    titles = (ids[r], f"GT {gt_name}" + ("" if gt_mesh is not None else " (not in DB)"),
              f"{bank.names[k]}{' (correct)' if gt_row == k else ''}\nrot. error {err[r]:.0f} deg")
    rows.append(QualitativeRow(index=int(i), instance_id=ids[r], crop=crop, ground_truth=gt_panel,
                               prediction=pred_panel, titles=titles, rotation_error_deg=float(err[r])))
  return rows


def qualitative_from_predictions(predictions: dict, method, data_dir: str, split: str, out_png: str,
                                 num: int = 12, *, size: int = DISPLAY_SIZE) -> str:
  """The paper's Figure 3: input crop | ground-truth model at the true pose | retrieved model at the
  predicted pose, one row per example.

  Args:
    predictions: the per-example arrays of `evaluate.predict_split` (keys 'instance_id', 'category_name',
      'cad_index', 'quaternion', 'translation_camera', 'bbox', 'intrinsics', 'model_index',
      'pred_model_cls', 'pred_rotation', 'pred_translation').
    method: the `inference.Method` that made them (its bank names the retrieved models, its
      `config.data.cad_source` gives the meshes).
    data_dir: the dataset directory the split was read from.
    split: the split name.
    out_png: the PNG to write.
    num: number of rows (examples), chosen by `choose_examples`.
    size: side of each panel in pixels.

  Returns:
    `out_png`.
  """
  rows = qualitative_rows(predictions, method, data_dir, split, num, size=size)
  if not rows:
    raise ValueError("no examples to draw")
  fig, axes = plt.subplots(len(rows), 3, figsize=(3 * 1.9, len(rows) * 2.0), squeeze=False)
  for ax_row, row in zip(axes, rows):
    for ax, img, title in zip(ax_row, (row.crop, row.ground_truth, row.prediction), row.titles):
      ax.imshow(img, interpolation="nearest")
      ax.set_title(title, fontsize=7)
      ax.set_xticks([])
      ax.set_yticks([])
  for ax, head in zip(axes[0], ("input crop", "ground truth", "prediction")):
    ax.set_title(head + "\n" + ax.get_title(), fontsize=7)
  fig.tight_layout(pad=0.4, h_pad=0.6, w_pad=0.3)
  return _save(fig, out_png, dpi=100)


def _grey(crop: np.ndarray) -> np.ndarray:
  """A dimmed crop: the panel of a model that is not in the CAD database."""
  return (0.35 * crop.astype(np.float32) + 0.65 * 128).astype(np.uint8)
