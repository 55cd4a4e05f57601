"""The evaluation report's figures: CDF values by hand, PNGs written atomically, the qualitative grid's rows
(deterministic, covering the categories) and panels (drawn at the poses they are given).

No training here: the qualitative grid is fed the ground truth of a tiny rendered dataset as "predictions",
with a stand-in for `inference.Method` (only `.bank` and `.config` are read).
"""

from __future__ import annotations

import os
import types

import ml_collections
import numpy as np
import pytest
from PIL import Image

import _helpers
from disent_jax import geometry
from disent_jax import input_pipeline
from disent_jax import metrics
from disent_jax import report_figures
from disent_jax.cad import collections as collections_lib
from disent_jax.datasets import synthetic

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_size(path) -> tuple[int, int]:
  with open(path, "rb") as f:
    assert f.read(8) == PNG_SIGNATURE
  with Image.open(path) as im:
    return im.size


def _no_temporaries(folder) -> None:
  assert not [n for n in os.listdir(folder) if n.endswith(".tmp")]


def test_cdf_points_by_hand():
  errors = [10.0, 30.0, 30.0, 50.0, 179.0]
  got = report_figures.cdf_points(errors, [0.0, 10.0, 10.5, 30.0, 31.0, 180.0])
  # Strictly below x: nothing below 0 or 10; one below 10.5 and 30; three below 31; all below 180.
  np.testing.assert_array_equal(got, [0.0, 0.0, 0.2, 0.2, 0.6, 1.0])
  # The curve at 30 degrees is exactly Acc_pi/6 as the metrics compute it.
  acc = metrics.pose_metrics(errors, ["car"] * 5)["per_category"]["car"]["acc_pi_6"]
  assert report_figures.cdf_points(errors, [30.0])[0] == acc
  assert np.isnan(report_figures.cdf_points([], [1.0, 2.0])).all()


def test_rotation_error_cdf_png(tmp_path):
  rng = np.random.default_rng(0)
  errors = rng.uniform(0, 180, 40)
  cats = np.array(["car", "chair", "aeroplane", "boat"] * 10)
  out = report_figures.rotation_error_cdf(errors, cats, str(tmp_path / "cdf.png"))
  assert out == str(tmp_path / "cdf.png")
  assert _png_size(out) == (704, 462)  # 6.4 x 4.2 in at 110 dpi
  _no_temporaries(tmp_path)
  with pytest.raises(ValueError, match="40 errors but 3 categories"):
    report_figures.rotation_error_cdf(errors, cats[:3], str(tmp_path / "x.png"))


def _results(with_nn: bool) -> dict:
  cats = ["aeroplane", "car", "chair"]
  rot = metrics.pose_metrics([5.0, 40.0, 90.0, 10.0, 170.0, 20.0], ["aeroplane", "aeroplane", "car", "car",
                                                                    "chair", "chair"])
  ret = metrics.retrieval_metrics([1, 2, 3, 4, 5, 6], [1, 2, 0, 4, 0, 0], cats * 2)
  results = {"rotation": rot, "retrieval": ret}
  if with_nn:
    results["retrieval_nn"] = metrics.retrieval_metrics([1, 0, 3, 4, 5, 6], [1, 2, 3, 4, 0, 0], cats * 2)
  return results


@pytest.mark.parametrize("with_nn", [False, True])
def test_category_bars_png(tmp_path, with_nn):
  out = report_figures.category_bars(_results(with_nn), str(tmp_path / "bars.png"))
  width, height = _png_size(out)
  assert (width, height) == (660, 924)  # 6 x 8.4 in at 110 dpi (3 categories: the minimum width)
  _no_temporaries(tmp_path)


def test_choose_examples_round_robin_in_paper_order():
  cats = ["car", "chair", "car", "aeroplane", "chair", "car", "zebra"]
  # Round 1: aeroplane, car, chair (paper order), then unknown classes alphabetically; round 2: car, chair.
  np.testing.assert_array_equal(report_figures.choose_examples(cats, 6), [3, 0, 1, 6, 2, 4])
  np.testing.assert_array_equal(report_figures.choose_examples(cats, 100), [3, 0, 1, 6, 2, 4, 5])
  np.testing.assert_array_equal(report_figures.choose_examples(cats, 2), [3, 0])
  assert report_figures.choose_examples([], 5).size == 0


# ---------------------------------------------------------------------------------------------------------
# Qualitative grid.


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  settings = _helpers.tiny_synthetic_settings(seed=11, p_occlude=0.0, p_truncate=0.0)
  return synthetic.build_synthetic(tmp_path_factory.mktemp("figs"), settings, progress=False)


@pytest.fixture(scope="module")
def fake_method():
  models = collections_lib.load_collection("zoo")
  bank = types.SimpleNamespace(categories=[m.category for m in models],
                               cad_indices=np.array([m.cad_index for m in models]),
                               names=[m.name for m in models])
  config = ml_collections.ConfigDict({"data": {"cad_source": "zoo"},
                                      "images": {"render_backend": "raycast"}})
  return types.SimpleNamespace(bank=bank, config=config)


def _ground_truth_predictions(data_dir, split, bank) -> dict:
  """`predict_split`-like arrays whose predictions are the ground truth."""
  source = input_pipeline.open_source(data_dir, split)
  names = input_pipeline.category_names(data_dir)
  rows = {(c, int(i)): k for k, (c, i) in enumerate(zip(bank.categories, bank.cad_indices))}
  p: dict[str, list] = {k: [] for k in ("instance_id", "category_name", "cad_index", "quaternion",
                                        "translation", "translation_camera", "bbox", "intrinsics",
                                        "model_index")}
  for k in range(len(source)):
    raw = source[k]
    p["instance_id"].append(input_pipeline._as_str(raw["instance_id"]))  # noqa: SLF001
    p["category_name"].append(names[int(raw["category"])])
    p["cad_index"].append(int(raw["cad_index"]))
    for key in ("quaternion", "translation", "translation_camera", "bbox", "intrinsics"):
      p[key].append(np.asarray(raw[key], np.float64))
    p["model_index"].append(rows[(p["category_name"][-1], p["cad_index"][-1])])
  out = {k: np.asarray(v) for k, v in p.items()}
  out["pred_model_cls"] = out["model_index"].copy()
  out["pred_rotation"] = np.asarray(geometry.quat_to_matrix(out["quaternion"]), np.float64)
  out["pred_translation"] = out["translation"].copy()
  return out


def _drawn(panel: np.ndarray, crop: np.ndarray) -> np.ndarray:
  return np.any(panel != crop, axis=-1)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
  return float((a & b).sum() / max(1, (a | b).sum()))


def test_qualitative_rows_draw_the_given_poses(dataset, fake_method, tmp_path):
  p = _ground_truth_predictions(dataset, "train", fake_method.bank)
  # Example 1 gets a wrong model and a rotation 90 degrees off; the others are exact.
  other = (int(p["model_index"][1]) + 1) % len(fake_method.bank.names)
  p["pred_model_cls"][1] = other
  p["pred_rotation"][1] = p["pred_rotation"][1] @ np.asarray(geometry.rot_z(np.pi / 2), np.float64)
  rows = report_figures.qualitative_rows(p, fake_method, dataset, "train", num=6, size=64)
  chosen = report_figures.choose_examples(p["category_name"], 6)
  assert [r.index for r in rows] == chosen.tolist()
  # Rows cover min(6, #categories) categories.
  assert len({p["category_name"][r.index] for r in rows}) == min(6, len(set(p["category_name"])))
  for r in rows:
    assert r.crop.shape == r.ground_truth.shape == r.prediction.shape == (64, 64, 3)
    gt, pred = _drawn(r.ground_truth, r.crop), _drawn(r.prediction, r.crop)
    assert gt.sum() > 20  # the ground-truth model is drawn over the object
    if r.index == 1:
      assert r.rotation_error_deg == pytest.approx(90.0, abs=1e-3)
      assert _iou(gt, pred) < 0.9 and "(correct)" not in r.titles[2]
      assert fake_method.bank.names[other] in r.titles[2]
    else:
      # The prediction IS the ground truth: the same silhouette, drawn in another colour.
      assert r.rotation_error_deg == pytest.approx(0.0, abs=1e-3)
      assert _iou(gt, pred) > 0.97 and "(correct)" in r.titles[2]
      assert np.any(r.ground_truth[gt] != r.prediction[gt])


def test_qualitative_png_and_id_lookup(dataset, fake_method, tmp_path):
  p = _ground_truth_predictions(dataset, "test", fake_method.bank)
  # Rows in another order than the dataset: found by instance id, not by position.
  order = np.arange(len(p["instance_id"]))[::-1]
  shuffled = {k: v[order] for k, v in p.items()}
  n_all = len(order)  # every example, so both orders draw the same set
  a = report_figures.qualitative_rows(p, fake_method, dataset, "test", num=n_all, size=48)
  b = report_figures.qualitative_rows(shuffled, fake_method, dataset, "test", num=n_all, size=48)
  by_id = {r.instance_id: r for r in b}
  assert sorted(by_id) == sorted(r.instance_id for r in a) and len(a) == n_all
  for r in a:
    np.testing.assert_array_equal(by_id[r.instance_id].crop, r.crop)
  out = report_figures.qualitative_from_predictions(p, fake_method, dataset, "test",
                                                    str(tmp_path / "q.png"), num=3)
  n = len(report_figures.choose_examples(p["category_name"], 3))
  assert _png_size(out) == (570, 200 * n)  # 3 x 1.9 in wide, 2 in per row, 100 dpi
  _no_temporaries(tmp_path)
  bad = dict(p, instance_id=np.array(["nope"] * len(p["instance_id"])))
  with pytest.raises(KeyError, match="not in the dataset split"):
    report_figures.qualitative_rows(bad, fake_method, dataset, "test", num=2)
