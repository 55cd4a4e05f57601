"""Metrics: hand-computed cases and the real Pascal3D+ aeroplane predictions (median 16.38, Acc 0.665)."""

import json
import math

import numpy as np
import pytest
import scipy.io
from scipy.spatial.transform import Rotation

from disent_jax import metrics


def test_rotation_errors_match_scipy():
  rng = np.random.default_rng(1)
  r1, r2 = Rotation.random(100, random_state=rng), Rotation.random(100, random_state=rng)
  np.testing.assert_allclose(metrics.rotation_errors_deg(r1.as_matrix(), r2.as_matrix()),
                             np.degrees((r1 * r2.inv()).magnitude()), atol=1e-9)


def test_symmetric_errors_continuous_z_is_the_angle_between_up_axes():
  """min over rotations about the object's z of d(R_pred, R_gt Rz) = angle(R_pred e_z, R_gt e_z)."""
  from disent_jax.cad import zoo
  rng = np.random.default_rng(2)
  a = Rotation.random(300, random_state=rng).as_matrix()
  b = Rotation.random(300, random_state=rng).as_matrix()
  groups = [zoo.symmetry_rotations(None), zoo.symmetry_rotations("rotational-z", n=720)]
  index = np.arange(300) % 2
  err = metrics.symmetric_rotation_errors_deg(a, b, groups, index)
  up = np.degrees(np.arccos(np.clip(np.einsum("ni,ni->n", a[:, :, 2], b[:, :, 2]), -1.0, 1.0)))
  full = np.degrees((Rotation.from_matrix(a) * Rotation.from_matrix(b).inv()).magnitude())
  np.testing.assert_allclose(err[1::2], up[1::2], atol=0.3)  # 0.5 deg grid: at most 0.25 deg above
  np.testing.assert_allclose(err[0::2], full[0::2], atol=1e-9)  # no symmetry: the plain error
  assert np.all(err <= full + 1e-9)


def test_symmetric_errors_half_turn_hand_computed():
  from disent_jax.cad import zoo
  half = Rotation.from_euler("z", 180, degrees=True).as_matrix()
  tilt = Rotation.from_euler("x", 20, degrees=True).as_matrix()
  r_gt = np.stack([np.eye(3)] * 3)
  r_pred = np.stack([half, tilt @ half, tilt])
  groups = [zoo.symmetry_rotations("rotational-z-2")]
  np.testing.assert_allclose(metrics.symmetric_rotation_errors_deg(r_pred, r_gt, groups, [0, 0, 0]),
                             [0.0, 20.0, 20.0], atol=1e-9)
  np.testing.assert_allclose(metrics.rotation_errors_deg(r_pred[:1], r_gt[:1]), [180.0], atol=1e-9)
  with pytest.raises(ValueError, match="group_index"):
    metrics.symmetric_rotation_errors_deg(r_pred, r_gt, groups, [0, 1, 0])


def test_pose_metrics_hand_computed():
  errors = [10.0, 20.0, 40.0, 5.0, 50.0, 29.999, 30.0]
  cats = ["car", "car", "car", "aeroplane", "aeroplane", "bus", "bus"]
  m = metrics.pose_metrics(errors, cats)
  assert list(m["per_category"]) == ["aeroplane", "bus", "car"]  # paper order
  assert m["per_category"]["car"] == {"mederr_deg": 20.0, "acc_pi_6": 2 / 3, "n": 3}
  assert m["per_category"]["aeroplane"]["mederr_deg"] == 27.5
  assert m["per_category"]["aeroplane"]["acc_pi_6"] == 0.5
  assert m["per_category"]["bus"]["acc_pi_6"] == 0.5  # 30.0 is not < 30
  assert m["mean"]["mederr_deg"] == pytest.approx((20.0 + 27.5 + (29.999 + 30.0) / 2) / 3)
  assert m["mean"]["acc_pi_6"] == pytest.approx((2 / 3 + 0.5 + 0.5) / 3)
  assert m["pooled"]["mederr_deg"] == 29.999
  assert m["pooled"]["n"] == 7
  json.dumps(m)  # plain JSON


def test_pose_metrics_rejects_bad_input():
  with pytest.raises(ValueError, match="NaN"):
    metrics.pose_metrics([1.0, float("nan")], ["car", "car"])
  with pytest.raises(ValueError, match="2 errors but 1"):
    metrics.pose_metrics([1.0, 2.0], ["car"])


def test_retrieval_metrics():
  m = metrics.retrieval_metrics(["car/01", "car/02", "bus/01", "bus/03"],
                                ["car/01", "car/01", "bus/01", "bus/03"], ["car", "car", "bus", "bus"])
  assert m["per_category"]["car"]["top1"] == 0.5
  assert m["per_category"]["bus"]["top1"] == 1.0
  assert m["mean"]["top1"] == 0.75
  assert m["pooled"] == {"top1": 0.75, "n": 4}


def test_breakdown_terciles_and_flags():
  n = 9
  errors = np.arange(n, dtype=float) * 10  # 0..80
  area = np.array([5, 1, 9, 3, 7, 2, 8, 4, 6], float)
  occ = np.zeros(n, bool)
  trunc = np.zeros(n, bool)
  occ[8] = True
  hit = np.array([1, 0, 1, 1, 0, 1, 1, 0, 1], bool)
  b = metrics.breakdown_metrics(errors, hit, area, occ, trunc)
  # default: instances 0..7 (8 of them); small = 2 smallest areas (1 -> idx1, 2 -> idx5),
  # large = 2 largest among default (9 -> idx2, 8 -> idx6).
  assert b["default"]["n"] == 8
  assert b["small"]["n"] == 2 and b["small"]["mederr_deg"] == np.median([10.0, 50.0])
  assert b["large"]["n"] == 2 and b["large"]["mederr_deg"] == np.median([20.0, 60.0])
  assert b["occluded"]["n"] == 1 and b["occluded"]["top1"] == 1.0
  assert b["truncated"]["n"] == 0 and math.isnan(b["truncated"]["top1"])
  assert "| small |" in metrics.breakdown_markdown(b)


def test_markdown_table_layout():
  pose = metrics.pose_metrics([10.0, 20.0, 3.0], ["car", "aeroplane", "tvmonitor"])
  table = metrics.markdown_table({"Ours": pose}, "mederr_deg", digits=1)
  lines = table.splitlines()
  assert lines[0] == "|  | aero | car | tv | Mean |"
  assert lines[2] == "| Ours | 20.0 | 10.0 | 3.0 | 11.0 |"


def test_real_aeroplane_predictions_give_16_38_and_0_665(shared_data):
  folder = shared_data / "pascal3d_aeroplane_voc_rotations"
  true = scipy.io.loadmat(folder / "aeroplanetrue.mat")["rotationData"][0]
  pred = scipy.io.loadmat(folder / "aeroplanepred_rot.mat")["rots"][0]
  assert len(true) == len(pred) == 865
  errors = metrics.rotation_errors_deg(np.stack(list(pred)), np.stack([t["rot"] for t in true]))
  m = metrics.pose_metrics(errors, ["aeroplane"] * len(errors))
  assert round(m["mean"]["mederr_deg"], 2) == 16.38
  assert round(m["mean"]["acc_pi_6"], 3) == 0.665
  assert m["pooled"]["n"] == 865
