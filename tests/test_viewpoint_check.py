"""viewpoint_check (issue 7): angle errors, the labels CSV, the reference summary, and evaluate() end to end
on a few real Pascal3D+ aeroplane photos with the session's tiny trained workdir."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from disent_jax import errors
from disent_jax import predictor as predictor_lib
from disent_jax import viewpoint_check as vc
from test_predictor import trained_tiny_workdir  # tests/ is on sys.path, see _helpers

SAMPLES = "pascal3d_imagenet_aeroplane_samples"
REAL = "real_pascal3d_imagenet_val"
HEADER = "image,kind,gt_azimuth_deg,gt_elevation_deg,pred_azimuth_deg,pred_elevation_deg"


@pytest.mark.parametrize("pred_az, pred_el, gt_az, gt_el, az, el, direction", [
    (350.0, 0.0, 10.0, 0.0, 20.0, 0.0, 20.0),  # wrap-around through 0
    (10.0, 0.0, 350.0, 0.0, 20.0, 0.0, 20.0),
    (-10.0, 0.0, 710.0, 0.0, 0.0, 0.0, 0.0),  # -10 and 710 are both 350
    (0.0, 0.0, 180.0, 0.0, 180.0, 0.0, 180.0),  # opposite sides
    (40.0, 20.0, 40.0, -10.0, 0.0, 30.0, 30.0),  # same azimuth: the direction error is the elevation error
    (0.0, 90.0, 123.0, 90.0, 123.0, 0.0, 0.0),  # both at the pole: any azimuth is the same direction
    (0.0, 0.0, 90.0, 45.0, 90.0, 45.0, 90.0),  # (1, 0, 0) . (0, c, c) = 0
])
def test_angle_errors_by_hand(pred_az, pred_el, gt_az, gt_el, az, el, direction):
  e = vc.angle_errors(pred_az, pred_el, gt_az, gt_el)
  assert (float(e.azimuth), float(e.elevation), float(e.direction)) == pytest.approx((az, el, direction),
                                                                                       abs=1e-9)


def test_direction_error_matches_scipy():
  rng = np.random.default_rng(0)
  pa, ga = rng.uniform(-360, 720, (2, 200))
  pe, ge = rng.uniform(-90, 90, (2, 200))

  def direction(az, el):
    # Independent construction: x-axis tilted up by el (about -y), then turned by az about z.
    return Rotation.from_euler("yz", np.stack([-el, az], -1), degrees=True).apply([1.0, 0.0, 0.0])
  expected = np.degrees(np.arccos(np.clip(np.sum(direction(pa, pe) * direction(ga, ge), -1), -1, 1)))
  e = vc.angle_errors(pa, pe, ga, ge)
  np.testing.assert_allclose(e.direction, expected, atol=1e-6)
  assert e.azimuth.shape == (200,) and np.all((e.azimuth >= 0) & (e.azimuth <= 180))
  np.testing.assert_allclose(np.cos(np.radians(e.azimuth)), np.cos(np.radians(pa - ga)), atol=1e-9)
  # Scalars broadcast against arrays (evaluate() scores k hypotheses against one label this way).
  np.testing.assert_allclose(vc.angle_errors([350.0, 20.0], 0.0, 10.0, 0.0).direction, [20.0, 10.0])


def _csv_rows(path):
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


def test_read_labels_on_the_shared_samples(shared_data):
  path = shared_data / SAMPLES / "labels.csv"
  labels = vc.read_labels(path)
  rows = _csv_rows(path)
  assert [lab.kind for lab in labels].count(REAL) == 11
  assert [lab.kind for lab in labels].count("synthetic_shapenet_render") == 22 and len(labels) == 33
  for lab, row in zip(labels, rows):
    assert (lab.image, lab.kind) == (row["image"], row["kind"])
    assert (lab.azimuth_deg, lab.elevation_deg, lab.ref_azimuth_deg, lab.ref_elevation_deg) == tuple(
        float(row[c]) for c in ("gt_azimuth_deg", "gt_elevation_deg", "pred_azimuth_deg", "pred_elevation_deg"))


def test_reference_summary_matches_numpy(shared_data):
  path = shared_data / SAMPLES / "labels.csv"
  real = [r for r in _csv_rows(path) if r["kind"] == REAL]
  pa, pe, ga, ge = (np.array([float(r[c]) for r in real]) for c in
                    ("pred_azimuth_deg", "pred_elevation_deg", "gt_azimuth_deg", "gt_elevation_deg"))
  d = np.mod(pa - ga, 360.0)
  az = np.minimum(d, 360.0 - d)

  def unit(a, e):
    a, e = np.radians(a), np.radians(e)
    return np.stack([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)], -1)
  direction = np.degrees(np.arccos(np.clip(np.sum(unit(pa, pe) * unit(ga, ge), -1), -1, 1)))
  s = vc.reference_summary(vc.read_labels(path), kinds=[REAL])
  assert list(s) == [REAL]
  assert s[REAL] == pytest.approx({
      "n": 11, "median_azimuth_error_deg": np.median(az), "mean_azimuth_error_deg": np.mean(az),
      "median_elevation_error_deg": np.median(np.abs(pe - ge)), "azimuth_acc_30": np.mean(az <= 30),
      "median_direction_error_deg": np.median(direction)}, abs=1e-6)
  # Hand check of one row: sample-5 predicts 136.97 for 326.30, an error of 170.68 degrees (wrap-around).
  assert az[5] == pytest.approx(360.0 - (326.2966 - 136.9727), abs=1e-4)


@pytest.mark.parametrize("case, text, expected", [
    ("missing_column", "image,kind,gt_azimuth_deg\na.png,k,10\n", "missing column(s) gt_elevation_deg"),
    ("non_numeric", HEADER + "\na.png,k,10,abc,1,2\n", "line 2: gt_elevation_deg must be a finite number"),
    ("nan", HEADER + "\na.png,k,10,5,1,2\na.png,k,nan,5,1,2\n", "line 3: gt_azimuth_deg"),
    ("elevation_range", HEADER + "\na.png,k,10,95,1,2\n", "line 2: gt_elevation_deg must lie in [-90, 90]"),
    ("bad_reference", HEADER + "\na.png,k,10,5,x,2\n", "line 2: pred_azimuth_deg"),
    ("half_reference", "image,kind,gt_azimuth_deg,gt_elevation_deg,pred_azimuth_deg\na.png,k,1,2,3\n",
     "both be present"),
    ("missing_image", HEADER + "\na.png,k,10,5,1,2\nnope.png,k,10,5,1,2\n", "line 3: image file"),
    ("empty", HEADER + "\n", "no data rows"),
])
def test_read_labels_bad_csv(tmp_path, case, text, expected):
  (tmp_path / "a.png").write_bytes(b"")  # read_labels only checks that the file exists
  path = tmp_path / "labels.csv"
  path.write_text(text)
  with pytest.raises(errors.AnnotationError) as e:
    vc.read_labels(path)
  assert str(path) in str(e.value) and expected in str(e.value)


def test_read_labels_without_reference_and_missing_file(tmp_path):
  (tmp_path / "img").mkdir()
  (tmp_path / "img" / "a.png").write_bytes(b"")
  path = tmp_path / "labels.csv"
  path.write_text("kind,image,gt_elevation_deg,gt_azimuth_deg\nk,img/a.png, -3.5 ,370\n")  # any column order
  (lab,) = vc.read_labels(path)
  assert lab == vc.Label("img/a.png", "k", 370.0, -3.5, None, None)
  assert vc.reference_summary([lab]) == {}
  with pytest.raises(errors.AnnotationError, match="unknown kind.*the labels have k"):
    vc.select_kinds([lab], ["real"])
  with pytest.raises(errors.AnnotationError, match="no such labels file"):
    vc.read_labels(tmp_path / "nope.csv")


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
  return predictor_lib.Predictor.from_workdir(trained_tiny_workdir(tmp_path_factory), top_k=3)


def test_evaluate_end_to_end(predictor, shared_data, tmp_path):
  root = shared_data / SAMPLES
  labels = vc.read_labels(root / "labels.csv")
  picked = [lab for lab in labels if lab.kind == REAL][:3]
  result = vc.evaluate(predictor, picked + labels[-1:], root, kinds=[REAL], top_k=3)
  rows = result["rows"]
  assert [r["image"] for r in rows] == [lab.image for lab in picked]  # the synthetic row is filtered out
  for lab, r in zip(picked, rows):
    p = predictor.predict(str(root / lab.image))  # the whole image, as evaluate() predicts it
    assert (r["pred_azimuth_deg"], r["pred_elevation_deg"], r["pred_theta_deg"]) == pytest.approx(
        (p.viewpoint["azimuth_deg"], p.viewpoint["elevation_deg"], p.viewpoint["theta_deg"]), abs=1e-4)
    assert (r["category"], r["cad_index"], r["model_name"]) == (p.category, p.cad_index, p.model_name)
    assert r["score"] == pytest.approx(p.score, abs=1e-5)
    e = vc.angle_errors(r["pred_azimuth_deg"], r["pred_elevation_deg"], lab.azimuth_deg, lab.elevation_deg)
    assert (r["azimuth_error_deg"], r["elevation_error_deg"], r["direction_error_deg"]) == pytest.approx(
        (e.azimuth, e.elevation, e.direction))
    # The first hypothesis is the prediction itself, so the best of k is never worse than it.
    assert 1 <= r["n_hypotheses"] <= 3 and r["best_topk_azimuth_error_deg"] <= r["azimuth_error_deg"] + 1e-3
  s = result["summary"][REAL]
  assert s["n"] == 3 and s["median_azimuth_error_deg"] == pytest.approx(
      np.median([r["azimuth_error_deg"] for r in rows]))
  assert result["reference_summary"][REAL]["n"] == 3
  json_path, md_path = vc.write_report(result, tmp_path / "report")
  assert json.load(open(json_path)) == json.loads(json.dumps(result))
  md = open(md_path).read()
  assert "| real_pascal3d_imagenet_val | ours | 3 |" in md and picked[0].image in md
  assert sorted(p.name for p in (tmp_path / "report").iterdir()) == ["results.json", "results.md"]  # no temps


def test_launch_eval_viewpoints(tmp_path_factory, shared_data, tmp_path):
  """The command line as a user runs it (a child process: launch modules each define --workdir)."""
  import os
  import pathlib
  import subprocess
  import sys
  # A 2-image labels file beside copies of two real images keeps the restore + predict short.
  root = shared_data / SAMPLES
  rows = [r for r in _csv_rows(root / "labels.csv") if r["kind"] == REAL][:2]
  for r in rows:
    (tmp_path / r["image"]).parent.mkdir(parents=True)
    (tmp_path / r["image"]).write_bytes((root / r["image"]).read_bytes())
  with open(tmp_path / "labels.csv", "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=HEADER.split(","))
    writer.writeheader()
    writer.writerows(rows)
  workdir = trained_tiny_workdir(tmp_path_factory)
  repo = pathlib.Path(__file__).resolve().parents[1]
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(repo), XLA_FLAGS="")

  def cli(*args):
    return subprocess.run([sys.executable, "-m", "launch.eval_viewpoints", f"--workdir={workdir}",
                           f"--labels={tmp_path / 'labels.csv'}", *args], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=600)

  ok = cli(f"--kinds={REAL}", f"--out={tmp_path / 'out'}", "--top_k=2")
  assert ok.returncode == 0, ok.stderr[-2000:]
  assert "| real_pascal3d_imagenet_val | ours | 2 |" in ok.stdout
  assert len(json.load(open(tmp_path / "out" / "results.json"))["rows"]) == 2
  bad = cli("--kinds=nope")
  assert bad.returncode == 1
  assert "error: unknown kind" in bad.stderr and "Traceback" not in bad.stderr
