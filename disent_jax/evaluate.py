"""Evaluation of the whole method (Stage I + II) on an image split, in the paper's protocol.

`evaluate(config, workdir)` restores both stages read-only (`inference.load`: an unreadable latest step is
skipped with a warning), runs every example of `config.evaluation.split` once (in order, padded batches
masked out) and returns a JSON-ready dict; `write_report` writes `<workdir>/results.json`, `results.md`
(the paper's Tables 1, 2 and 4: categories as columns, a Mean column) and PNG figures.

Protocol (paper 4, design notes):
  * rotation: geodesic error of the arg-max anchor + residual against the ground-truth rotation; MedErr and
    Acc_pi/6 per category and their mean over categories, on the objects that are neither occluded,
    truncated nor difficult (`evaluation.pose_on_clean_only`);
  * retrieval: top-1 (predicted CAD model == ground-truth CAD model) for the shape classifier (the paper's)
    and for the nearest neighbour of the predicted shape vector among the canonical-pose database vectors,
    on every object whose CAD model is in the database (renders of another CAD database: pose only);
  * translation: median error of the crop-relative translation (x, y: fraction of the crop side; z: depth
    label), and of the camera-frame position relative to the true distance when the intrinsics are known;
  * Table 4 breakdown (default / small / large / occluded / truncated);
  * beyond the paper: the rotation table again up to each CAD model's rotational symmetry
    ('rotation_up_to_symmetry': min over the rotations that map the model onto itself, `cad.zoo.SYMMETRIES`;
    a bottle's turn about its own axis cannot be seen), for databases that record symmetries (the zoo).
The evaluated instance ids are written with the results, so runs can be compared example by example.
"""

from __future__ import annotations

from collections.abc import Sequence
import json
import logging
import os
import time

import jax
import ml_collections
import numpy as np
import tqdm

from disent_jax import config_check
from disent_jax import geometry
from disent_jax import inference
from disent_jax import input_pipeline
from disent_jax import metrics
from disent_jax import train_regressor
from disent_jax.cad import voxels
from disent_jax.cad import zoo


def _dataset_dir(config: ml_collections.ConfigDict, workdir: str, data_dir: str | None) -> str:
  return data_dir or train_regressor.image_dataset_dir(config, workdir)


def predict_split(method: inference.Method, data_dir: str, split: str, batch_size: int
                  ) -> dict[str, np.ndarray]:
  """Runs every example of a split through the method once; returns per-example arrays (host)."""
  it = input_pipeline.make_pipeline(
      data_dir, split, batch_size=batch_size, image_size=method.input_size, shuffle=False,
      num_epochs=1, drop_remainder=False, augment=None, process_index=0, process_count=1,
      model_index_fn=train_regressor.BankIndex(method.bank.categories, method.bank.cad_indices,
                                               strict=False))
  keep = ("category", "cad_index", "quaternion", "translation", "translation_camera", "bbox",
          "intrinsics", "occluded", "truncated", "difficult", "bbox_area", "instance_id", "model_index")
  rows: dict[str, list] = {}
  try:
    for batch in tqdm.tqdm(it, total=it.steps_per_epoch, desc=f"evaluate {split}", unit="batch", mininterval=2.0):
      pred = method.predict_normalized(batch["image"])
      m = batch["mask"]
      for k in keep:
        rows.setdefault(k, []).append(np.asarray(batch[k])[m])
      for k, v in pred.items():
        if k in ("shape_vec", "pose_vec"):
          continue
        rows.setdefault("pred_" + k, []).append(np.asarray(v)[m])
  finally:
    it.close()
  out = {k: np.concatenate(v, 0) for k, v in rows.items()}
  out["category_name"] = np.asarray([it.categories[c] for c in out["category"]])
  return out


def score(p: dict[str, np.ndarray], *, pose_on_clean_only: bool = True,
          symmetries: Sequence[str | None] | None = None) -> dict:
  """Metrics of `predict_split`'s arrays (see the module docstring).

  Args:
    p: `predict_split`'s per-example arrays.
    pose_on_clean_only: score rotation on clean objects only (the paper's protocol).
    symmetries: the database models' rotational symmetries (`VoxelBank.symmetries`, names of
      `cad.zoo.SYMMETRIES`); when given, 'rotation_up_to_symmetry' is added (see `metrics`).

  Returns:
    The results dict (keys starting with '_' are host-side extras for the figures).
  """
  cats = p["category_name"]
  r_gt = np.asarray(geometry.quat_to_matrix(p["quaternion"].astype(np.float64)))
  err = metrics.rotation_errors_deg(p["pred_rotation"], r_gt)
  clean = ~(p["occluded"] | p["truncated"] | p["difficult"]) if pose_on_clean_only else np.ones_like(
      p["occluded"])
  gt = p["model_index"]
  known = gt >= 0  # objects whose CAD model is in the database (all, unless renders of another one)
  hit_cls = p["pred_model_cls"] == gt
  results = {
      "n_instances": int(len(cats)),
      "n_pose_instances": int(clean.sum()),
      "instance_ids": [str(s) for s in p["instance_id"]],
      "pose_instance_ids": [str(s) for s in p["instance_id"][clean]],
      "rotation": metrics.pose_metrics(err[clean], cats[clean]),
      "n_retrieval_instances": int(known.sum()),
      "retrieval": metrics.retrieval_metrics(p["pred_model_cls"][known], gt[known], cats[known]),
      "breakdown": metrics.breakdown_metrics(err, hit_cls, p["bbox_area"], p["occluded"],
                                             p["truncated"]),
  }
  if np.all(p["pred_model_nn"] >= 0):
    results["retrieval_nn"] = metrics.retrieval_metrics(p["pred_model_nn"][known], gt[known],
                                                        cats[known])
  t_err = np.abs(p["pred_translation"] - p["translation"])
  cam_pred = np.asarray(geometry.crop_to_camera_translation(
      p["pred_translation"].astype(np.float64), p["bbox"].astype(np.float64),
      p["intrinsics"].astype(np.float64)))
  dist = np.linalg.norm(p["translation_camera"], axis=-1)
  rel = np.linalg.norm(cam_pred - p["translation_camera"], axis=-1) / np.maximum(dist, 1e-9)
  results["translation"] = {
      "median_abs_error": {"x": float(np.median(t_err[:, 0])), "y": float(np.median(t_err[:, 1])),
                           "z": float(np.median(t_err[:, 2]))},
      "median_relative_camera_error": float(np.median(rel)),
      "within_10_percent": float(np.mean(rel < 0.1)),
      "units": "x, y: fraction of the crop side; z: depth label (geometry.camera_to_crop_translation); "
               "camera error: |T_pred - T_gt| / |T_gt|",
  }
  if symmetries is not None:
    # The paper scores the rotation as annotated; for models whose shape is rotationally symmetric (the
    # zoo records it) that rotation is partly unobservable, so the error up to the symmetry is reported too.
    names = sorted({symmetries[i] for i in gt[gt >= 0]} | {None}, key=str)
    groups = [zoo.symmetry_rotations(n, n=360) for n in names]
    index = np.asarray([names.index(symmetries[i] if i >= 0 else None) for i in gt])
    err_sym = metrics.symmetric_rotation_errors_deg(p["pred_rotation"], r_gt, groups, index)
    results["rotation_up_to_symmetry"] = metrics.pose_metrics(err_sym[clean], cats[clean])
  results["_errors_deg"] = err  # host-side extras for the figures; dropped from the JSON
  results["_clean"] = clean
  return results


def evaluate(config: ml_collections.ConfigDict, workdir: str, *, setup_=None, regressor_state=None,
             regressor_step: int | None = None, split: str | None = None,
             data_dir: str | None = None) -> dict:
  """Evaluates the workdir's Stage I + II on an image split.

  Args:
    config: the configuration (`evaluation`, `images`, and the model fields).
    workdir: the training workdir (checkpoints are read, never written).
    setup_, regressor_state, regressor_step: a live Stage II setup and state (after training) instead
      of restoring from checkpoints.
    split: the split; default `config.evaluation.split`.
    data_dir: a finished dataset directory; default the one of `config.images`.

  Returns:
    The results dict (see the module docstring), JSON-ready except for keys starting with '_'.
  """
  t0 = time.perf_counter()
  if regressor_state is not None:
    method = inference.from_setup(config, setup_, regressor_state, regressor_step)
  else:
    method = inference.load(config, workdir)
  split = split or config.evaluation.split
  data_dir = _dataset_dir(config, workdir, data_dir)
  p = predict_split(method, data_dir, split, config.evaluation.batch_size)
  results = score(p, pose_on_clean_only=config.evaluation.pose_on_clean_only,
                  symmetries=method.bank.symmetries)
  results.update({
      "split": split, "dataset": data_dir, "checkpoint_steps": method.steps,
      "config": config.to_dict(), "seconds": time.perf_counter() - t0,
  })
  results["_predictions"] = p
  results["_method"] = method
  return results


def tables_markdown(results: dict) -> str:
  """results.md: the paper's Tables 1, 2 and 4 on this split, plus translation."""
  steps = results["checkpoint_steps"]
  rot, ret = results["rotation"], results["retrieval"]
  retrieval_rows = {"classifier (paper)": ret}
  if "retrieval_nn" in results:
    retrieval_rows["nearest shape vector"] = results["retrieval_nn"]
  t = results["translation"]
  lines = [
      f"# Evaluation on `{results['split']}` ({results['n_instances']} objects, "
      f"{results['n_pose_instances']} for pose)", "",
      f"Checkpoints: Stage I step {steps.get('embedder')}, Stage II step {steps.get('regressor')}; "
      f"dataset {results['dataset']}.", "",
      "## Table 1: shape retrieval, top-1 accuracy", "",
      metrics.markdown_table(retrieval_rows, "top1", digits=3), "",
      "## Table 2: rotation", "",
      metrics.markdown_table({"MedErr (deg)": rot}, "mederr_deg", digits=1), "",
      metrics.markdown_table({"Acc_pi/6": rot}, "acc_pi_6", digits=3), "",
      *_symmetry_tables(results),
      "## Table 4: by object characteristics", "",
      metrics.breakdown_markdown(results["breakdown"]), "",
      "## Translation (up to scale, crop-relative)", "",
      f"- median |error|: x {t['median_abs_error']['x']:.3f}, y {t['median_abs_error']['y']:.3f} "
      f"(fractions of the crop side), z {t['median_abs_error']['z']:.3f} (depth label)",
      f"- camera-frame position: median relative error {t['median_relative_camera_error']:.3f}, "
      f"{100 * t['within_10_percent']:.1f} % within 10 %", ""]
  return "\n".join(lines)


def _symmetry_tables(results: dict) -> list[str]:
  """Table 2 again, forgiving each model's rotational symmetry (only when some model has one)."""
  sym = results.get("rotation_up_to_symmetry")
  if sym is None or sym == results["rotation"]:
    return []
  return ["Up to each CAD model's rotational symmetry (min over the rotations that map the model onto "
          "itself; the paper's protocol above does not forgive them):", "",
          metrics.markdown_table({"MedErr (deg)": sym}, "mederr_deg", digits=1), "",
          metrics.markdown_table({"Acc_pi/6": sym}, "acc_pi_6", digits=3), ""]


def summary_line(results: dict) -> str:
  """One line for logs: retrieval top-1, rotation MedErr / Acc_pi/6 (means over categories)."""
  s = (f"retrieval top-1 {results['retrieval']['mean']['top1']:.3f}"
       + (f" (NN {results['retrieval_nn']['mean']['top1']:.3f})" if "retrieval_nn" in results else "")
       + f", rotation MedErr {results['rotation']['mean']['mederr_deg']:.1f} deg, Acc_pi/6 "
       f"{results['rotation']['mean']['acc_pi_6']:.3f}"
       + (f" (up to symmetry {results['rotation_up_to_symmetry']['mean']['mederr_deg']:.1f} deg, "
          f"{results['rotation_up_to_symmetry']['mean']['acc_pi_6']:.3f})"
          if "rotation_up_to_symmetry" in results else "")
       + f", translation rel. error "
       f"{results['translation']['median_relative_camera_error']:.3f}")
  return s


def json_ready(results: dict) -> dict:
  """The results without the host-side extras (keys starting with '_')."""
  return {k: v for k, v in results.items() if not k.startswith("_")}


def write_report(results: dict, workdir: str, config: ml_collections.ConfigDict | None = None,
                 out_dir: str | None = None) -> str:
  """Writes results.json, results.md and the figures into `out_dir` (default: the workdir).

  Returns:
    The path of results.md.
  """
  out_dir = out_dir or workdir
  os.makedirs(out_dir, exist_ok=True)
  voxels.write_atomic(os.path.join(out_dir, "results.json"),
                      json.dumps(json_ready(results), indent=1).encode())
  md = tables_markdown(results)
  figures = _write_figures(results, out_dir, config)
  if figures:
    md += "\n## Figures\n\n" + "\n".join(f"![{name}]({name})" for name in figures) + "\n"
  path = os.path.join(out_dir, "results.md")
  voxels.write_atomic(path, md.encode())
  logging.info("evaluation: %s; report %s", summary_line(results), path)
  return path


def _write_figures(results: dict, out_dir: str, config) -> list[str]:
  """The PNG figures (rotation-error CDF, per-category bars, qualitative grid); names written."""
  try:
    from disent_jax import report_figures
  except ImportError:  # pragma: no cover -- figures are optional extras of the report
    return []
  names = []
  p, method = results.get("_predictions"), results.get("_method")
  try:
    if "_errors_deg" in results:
      clean = results["_clean"]
      report_figures.rotation_error_cdf(results["_errors_deg"][clean],
                                        p["category_name"][clean], os.path.join(out_dir, "rotation_cdf.png"))
      names.append("rotation_cdf.png")
    report_figures.category_bars(json_ready(results), os.path.join(out_dir, "per_category.png"))
    names.append("per_category.png")
    n = config.evaluation.num_qualitative if config is not None else 12
    if n and p is not None and method is not None:
      report_figures.qualitative_from_predictions(p, method, results["dataset"], results["split"],
                                                  os.path.join(out_dir, "qualitative.png"), num=n)
      names.append("qualitative.png")
  except Exception as e:  # noqa: BLE001 -- a figure must never cost the run its numbers
    logging.warning("could not draw the evaluation figures: %s: %s", type(e).__name__, e)
  return names


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """The 'eval' stage: evaluate the workdir's checkpoints and write the report."""
  config_check.validate(config, stage="eval")  # before any bank, render or compile
  results = evaluate(config, workdir)
  if jax.process_index() == 0:
    write_report(results, workdir, config)
  print(tables_markdown(results))
  return results
