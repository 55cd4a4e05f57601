"""Azimuth / elevation check of a trained Predictor on labelled photos (issue 7).

    labels = read_labels("../shared/data/pascal3d_imagenet_aeroplane_samples/labels.csv")
    result = evaluate(Predictor.from_workdir("runs/x"), labels, root=csv_folder,
                      kinds=["real_pascal3d_imagenet_val"])
    write_report(result, "runs/x/viewpoint_check")

The labels CSV has the columns image, kind, gt_azimuth_deg, gt_elevation_deg and, optionally, a reference
model's pred_azimuth_deg, pred_elevation_deg (summarised beside ours, so a table shows what another method
gets on the same images). Images are paths relative to the CSV's folder and are predicted whole (no box):
the shared samples are whole images stretched to 224 x 224.

Errors, all in degrees: azimuth with wrap-around (350 vs 10 is 20), absolute elevation difference, and the
angle between the two viewing directions on the unit sphere (x = cos el cos az, y = cos el sin az,
z = sin el), which, unlike the azimuth error, does not blow up near the poles. In-plane rotation (theta) is
not labelled, so it is reported but not scored.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import pathlib
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from disent_jax import errors
from disent_jax.cad import voxels

REQUIRED_COLUMNS = ("image", "kind", "gt_azimuth_deg", "gt_elevation_deg")
REFERENCE_COLUMNS = ("pred_azimuth_deg", "pred_elevation_deg")
ACC_THRESHOLD_DEG = 30.0  # "azimuth within 30 degrees": the pi/6 threshold of the Pascal3D+ literature


@dataclasses.dataclass(frozen=True)
class Label:
  """One labelled image.

  Attributes:
    image: path relative to the labels' root folder.
    kind: the row's group (e.g. real_pascal3d_imagenet_val); summaries are per kind.
    azimuth_deg, elevation_deg: the ground-truth viewpoint.
    ref_azimuth_deg, ref_elevation_deg: a reference model's prediction, or None when the CSV has none.
  """
  image: str
  kind: str
  azimuth_deg: float
  elevation_deg: float
  ref_azimuth_deg: float | None = None
  ref_elevation_deg: float | None = None


class AngleErrors(NamedTuple):
  """Viewpoint errors in degrees (arrays of the inputs' broadcast shape)."""
  azimuth: np.ndarray
  elevation: np.ndarray
  direction: np.ndarray


def _angle(value: str, column: str, where: str, *, optional: bool = False) -> float | None:
  """A finite angle parsed from a CSV cell, or an AnnotationError naming the file, row and column."""
  value = (value or "").strip()
  if optional and not value:
    return None
  try:
    x = float(value)
  except ValueError:
    x = math.nan
  if not math.isfinite(x):
    raise errors.AnnotationError(f"{where}: {column} must be a finite number of degrees, got {value!r}")
  if column.endswith("elevation_deg") and abs(x) > 90.0:
    raise errors.AnnotationError(f"{where}: {column} must lie in [-90, 90], got {x}")
  return x


def read_labels(csv_path: str | os.PathLike, root: str | os.PathLike | None = None) -> list[Label]:
  """Reads and checks a labels CSV.

  Args:
    csv_path: the CSV (header row first; see the module docstring for its columns).
    root: the folder the image paths are relative to; None for the CSV's folder.

  Returns:
    One `Label` per data row, in file order.

  Raises:
    AnnotationError: no such file, a missing column, an empty image or kind, a non-numeric or out-of-range
      angle, or an image file that does not exist (the message names the file, and the row as its line
      number).
  """
  csv_path = pathlib.Path(csv_path)
  root = csv_path.parent if root is None else pathlib.Path(root)
  if not csv_path.is_file():
    raise errors.AnnotationError(f"{csv_path}: no such labels file")
  with open(csv_path, newline="") as f:
    reader = csv.DictReader(f)
    columns = reader.fieldnames or []
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
      raise errors.AnnotationError(f"{csv_path}: missing column(s) {', '.join(missing)} "
                                   f"(header: {', '.join(columns) or 'none'})")
    # The reference columns go together: one without the other is a broken file, not "no reference".
    has_ref = [c in columns for c in REFERENCE_COLUMNS]
    if any(has_ref) and not all(has_ref):
      raise errors.AnnotationError(f"{csv_path}: reference columns {' and '.join(REFERENCE_COLUMNS)} "
                                   "must both be present or both absent")
    labels = []
    for row in reader:
      where = f"{csv_path} line {reader.line_num}"
      image, kind = (row.get("image") or "").strip(), (row.get("kind") or "").strip()
      if not image or not kind:
        raise errors.AnnotationError(f"{where}: empty image or kind")
      if not (root / image).is_file():
        raise errors.AnnotationError(f"{where}: image file {root / image} does not exist")
      ref = [_angle(row.get(c), c, where, optional=True) if all(has_ref) else None for c in REFERENCE_COLUMNS]
      labels.append(Label(image, kind, _angle(row.get("gt_azimuth_deg"), "gt_azimuth_deg", where),
                          _angle(row.get("gt_elevation_deg"), "gt_elevation_deg", where), *ref))
  if not labels:
    raise errors.AnnotationError(f"{csv_path}: no data rows")
  return labels


def angle_errors(pred_az: Any, pred_el: Any, gt_az: Any, gt_el: Any) -> AngleErrors:
  """Viewpoint errors between predicted and true azimuth / elevation (degrees in, degrees out).

  Args:
    pred_az, pred_el, gt_az, gt_el: broadcastable arrays (or scalars) of angles in degrees.

  Returns:
    `AngleErrors`: azimuth error in [0, 180] with wrap-around, absolute elevation error, and the angle in
    [0, 180] between the viewing directions (cos el cos az, cos el sin az, sin el).
  """
  pred_az, pred_el, gt_az, gt_el = np.broadcast_arrays(
      *(np.asarray(a, np.float64) for a in (pred_az, pred_el, gt_az, gt_el)))
  d = np.abs(pred_az - gt_az) % 360.0
  az = np.minimum(d, 360.0 - d)
  el = np.abs(pred_el - gt_el)
  pa, pe, ga, ge = (np.radians(a) for a in (pred_az, pred_el, gt_az, gt_el))
  u = np.stack([np.cos(pe) * np.cos(pa), np.cos(pe) * np.sin(pa), np.sin(pe)], -1)
  v = np.stack([np.cos(ge) * np.cos(ga), np.cos(ge) * np.sin(ga), np.sin(ge)], -1)
  # atan2(|u x v|, u . v) rather than arccos(u . v): exact near 0 and 180 degrees, where arccos loses digits.
  direction = np.degrees(np.arctan2(np.linalg.norm(np.cross(u, v), axis=-1), np.sum(u * v, -1)))
  return AngleErrors(az, el, direction)


def summarize(az_err: Sequence[float], el_err: Sequence[float], dir_err: Sequence[float]) -> dict[str, Any]:
  """Summary of per-image errors (degrees).

  Args:
    az_err, el_err, dir_err: azimuth, elevation and viewing-direction errors of the same images.

  Returns:
    {n, median_azimuth_error_deg, mean_azimuth_error_deg, median_elevation_error_deg, azimuth_acc_30,
    median_direction_error_deg}; the statistics are None when n is 0 (JSON has no NaN).
  """
  az, el, dr = (np.asarray(x, np.float64) for x in (az_err, el_err, dir_err))
  n = int(az.size)

  def stat(fn, x):
    return float(fn(x)) if n else None
  return {"n": n, "median_azimuth_error_deg": stat(np.median, az), "mean_azimuth_error_deg": stat(np.mean, az),
          "median_elevation_error_deg": stat(np.median, el),
          "azimuth_acc_30": stat(np.mean, az <= ACC_THRESHOLD_DEG),
          "median_direction_error_deg": stat(np.median, dr)}


def _kinds_in_order(labels: Sequence[Label]) -> list[str]:
  return list(dict.fromkeys(lab.kind for lab in labels))


def select_kinds(labels: Sequence[Label], kinds: Sequence[str] | None) -> list[Label]:
  """The labels of the given kinds, in order.

  Args:
    labels: from `read_labels`.
    kinds: the kinds to keep; None keeps all.

  Returns:
    The selected labels.

  Raises:
    AnnotationError: a kind no label has (a typo should fail, not give an empty table).
  """
  if kinds is None:
    return list(labels)
  known = _kinds_in_order(labels)
  unknown = [k for k in kinds if k not in known]
  if unknown:
    raise errors.AnnotationError(f"unknown kind(s) {', '.join(unknown)}; the labels have {', '.join(known)}")
  return [lab for lab in labels if lab.kind in kinds]


def reference_summary(labels: Sequence[Label], kinds: Sequence[str] | None = None) -> dict[str, dict]:
  """Per-kind `summarize` of the reference predictions (the CSV's pred_* columns).

  Args:
    labels: from `read_labels`.
    kinds: the kinds to summarise; None for all.

  Returns:
    {kind: summary} over the rows that have a reference prediction; kinds without any are left out.
  """
  out = {}
  for kind in _kinds_in_order(select_kinds(labels, kinds)):
    rows = [lab for lab in labels if lab.kind == kind and lab.ref_azimuth_deg is not None]
    if rows:
      e = angle_errors([r.ref_azimuth_deg for r in rows], [r.ref_elevation_deg for r in rows],
                       [r.azimuth_deg for r in rows], [r.elevation_deg for r in rows])
      out[kind] = summarize(*e)
  return out


def evaluate(predictor, labels: Sequence[Label], root: str | os.PathLike, kinds: Sequence[str] | None = None,
             top_k: int = 3) -> dict[str, Any]:
  """Predicts every selected image whole (no box) and scores the viewpoints against the labels.

  Args:
    predictor: a `predictor.Predictor` (its own top_k bounds how many pose hypotheses exist).
    labels: from `read_labels`.
    root: the folder the labels' image paths are relative to.
    kinds: the kinds to evaluate; None for all.
    top_k: how many of the (deduplicated) pose hypotheses the best-of-k azimuth error looks at.

  Returns:
    {"rows": one dict per image (image, kind, gt and predicted angles, errors, the retrieved model and its
    score, best_topk_azimuth_error_deg), "summary": {kind: `summarize` + median_best_topk_azimuth_error_deg},
    "reference_summary": `reference_summary`, "top_k": top_k}.
  """
  selected = select_kinds(labels, kinds)
  root = pathlib.Path(root)
  preds = predictor.predict_batch([str(root / lab.image) for lab in selected])
  rows = []
  for lab, p in zip(selected, preds):
    vp = p.viewpoint
    e = angle_errors(vp["azimuth_deg"], vp["elevation_deg"], lab.azimuth_deg, lab.elevation_deg)
    hyps = p.pose_hypotheses[:top_k]
    best = angle_errors([h["viewpoint"]["azimuth_deg"] for h in hyps], 0.0, lab.azimuth_deg, 0.0).azimuth
    rows.append({
        "image": lab.image, "kind": lab.kind, "gt_azimuth_deg": lab.azimuth_deg,
        "gt_elevation_deg": lab.elevation_deg, "pred_azimuth_deg": vp["azimuth_deg"],
        "pred_elevation_deg": vp["elevation_deg"], "pred_theta_deg": vp["theta_deg"],
        "azimuth_error_deg": float(e.azimuth), "elevation_error_deg": float(e.elevation),
        "direction_error_deg": float(e.direction), "category": p.category, "cad_index": p.cad_index,
        "model_name": p.model_name, "score": p.score, "best_topk_azimuth_error_deg": float(best.min()),
        "n_hypotheses": len(hyps)})
  summary = {}
  for kind in _kinds_in_order(selected):
    rs = [r for r in rows if r["kind"] == kind]
    summary[kind] = summarize(*([r[k] for r in rs] for k in ("azimuth_error_deg", "elevation_error_deg",
                                                               "direction_error_deg")))
    summary[kind]["median_best_topk_azimuth_error_deg"] = float(
        np.median([r["best_topk_azimuth_error_deg"] for r in rs]))
  return {"rows": rows, "summary": summary, "reference_summary": reference_summary(labels, kinds),
          "top_k": int(top_k)}


def _fmt(x: Any, spec: str = ".1f") -> str:
  return "-" if x is None else format(x, spec)


def markdown(result: dict[str, Any]) -> str:
  """The result of `evaluate` as markdown: a per-kind summary table (ours and the reference) and a
  per-image table."""
  lines = ["## Viewpoint summary (degrees)", "",
           "| kind | method | n | median az err | mean az err | az err <= 30 | median el err "
           f"| median direction err | median best-of-{result['top_k']} az err |",
           "|---|---|---|---|---|---|---|---|---|"]
  for name, summaries in (("ours", result["summary"]), ("reference (CSV pred_*)", result["reference_summary"])):
    for kind, s in summaries.items():
      lines.append(f"| {kind} | {name} | {s['n']} | {_fmt(s['median_azimuth_error_deg'])} "
                   f"| {_fmt(s['mean_azimuth_error_deg'])} | {_fmt(s['azimuth_acc_30'], '.2f')} "
                   f"| {_fmt(s['median_elevation_error_deg'])} | {_fmt(s['median_direction_error_deg'])} "
                   f"| {_fmt(s.get('median_best_topk_azimuth_error_deg'))} |")
  lines += ["", "## Per image", "",
            "| image | kind | gt az | gt el | pred az | pred el | pred theta | az err | el err | dir err "
            "| best-of-k az err | model | score |", "|---" * 13 + "|"]
  for r in result["rows"]:
    lines.append(f"| {r['image']} | {r['kind']} | {r['gt_azimuth_deg']:.1f} | {r['gt_elevation_deg']:.1f} "
                 f"| {r['pred_azimuth_deg']:.1f} | {r['pred_elevation_deg']:.1f} | {r['pred_theta_deg']:.1f} "
                 f"| {r['azimuth_error_deg']:.1f} | {r['elevation_error_deg']:.1f} "
                 f"| {r['direction_error_deg']:.1f} | {r['best_topk_azimuth_error_deg']:.1f} "
                 f"| {r['category']}/{r['cad_index']:02d} | {r['score']:.3f} |")
  return "\n".join(lines) + "\n"


def write_report(result: dict[str, Any], out_dir: str | os.PathLike) -> tuple[str, str]:
  """Writes results.json and results.md into `out_dir`, each atomically (readers never see half a file).

  Args:
    result: from `evaluate`.
    out_dir: the folder; created if needed.

  Returns:
    (json path, markdown path).
  """
  out_dir = pathlib.Path(out_dir)
  json_path, md_path = out_dir / "results.json", out_dir / "results.md"
  voxels.write_atomic(json_path, json.dumps(result, indent=1).encode())
  voxels.write_atomic(md_path, markdown(result).encode())
  return str(json_path), str(md_path)
