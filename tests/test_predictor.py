"""The user-facing Predictor and `launch.predict` on a tiny model trained end to end once per session.

`trained_tiny_workdir` (also used by test_notebook.py and test_viewpoint_check.py) trains the tiny config end
to end (Stage I, the rendered dataset, Stage II, evaluation) once per pytest session under the session's base
temp folder; under pytest-xdist, once for all workers (the folder their base temps share, behind a lock).
"""

from __future__ import annotations

import dataclasses
import fcntl
import io
import json
import math
import os

import numpy as np
import pytest
from PIL import Image

from configs import tiny
from disent_jax import end_to_end
from disent_jax import errors
from disent_jax import geometry
from disent_jax import input_pipeline
from disent_jax import predictor as predictor_lib
from disent_jax import train_regressor
from disent_jax.datasets import crops
from disent_jax.render.camera import Camera


def tiny_config():
  """The tiny config as the tests train it (voxel cache and data inside the workdir, so it can be copied)."""
  config = tiny.get_config()
  config.eval.after_training = False  # Stage I's own retrieval report is not needed here: saves ~10 s
  return config


def trained_tiny_workdir(tmp_path_factory) -> str:
  """A workdir with the tiny config trained end to end; built once per session, then reused.

  Under pytest-xdist each worker has its own base temp inside one folder per session: the workdir lives
  there and the first worker to need it trains it while the others wait on the lock (~60 s, which every
  worker spent on its own copy before).
  """
  base = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    base = base.parent
  root = base / "tiny_end_to_end"
  root.mkdir(parents=True, exist_ok=True)
  workdir = root / "workdir"
  done = root / "done"
  with open(root / "lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not done.exists():
      workdir.mkdir(exist_ok=True)
      end_to_end.run(tiny_config(), str(workdir))
      done.write_text("ok")
  return str(workdir)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  return trained_tiny_workdir(tmp_path_factory)


@pytest.fixture(scope="module")
def predictor(workdir):
  return predictor_lib.Predictor.from_workdir(workdir, top_k=5)


@pytest.fixture(scope="module")
def test_split(workdir, predictor):
  """(source, dataset dir) of the workdir's rendered test split."""
  data_dir = train_regressor.image_dataset_dir(predictor.method.config, workdir)
  return input_pipeline.open_source(data_dir, "test"), data_dir


def _example(source, k):
  raw = source[k]
  return (input_pipeline._decode_png(raw["image"]), np.asarray(raw["bbox"], np.float64),  # noqa: SLF001
          np.asarray(raw["intrinsics"], np.float64), input_pipeline._decode_png(raw["crop"]))  # noqa: SLF001


def _assert_same(a: predictor_lib.Prediction, b: predictor_lib.Prediction, atol=1e-5):
  assert (a.category, a.cad_index, a.model_row) == (b.category, b.cad_index, b.model_row)
  np.testing.assert_allclose(a.quaternion, b.quaternion, atol=atol)
  np.testing.assert_allclose(a.translation_crop, b.translation_crop, atol=atol)
  np.testing.assert_allclose(a.score, b.score, atol=atol)
  np.testing.assert_allclose(a.bbox, b.bbox)


def test_end_to_end_wrote_the_report_and_figures(workdir):
  results = json.load(open(os.path.join(workdir, "results.json")))
  assert results["n_instances"] == tiny.get_config().images.num_test
  md = open(os.path.join(workdir, "results.md")).read()
  for name in ("rotation_cdf.png", "per_category.png", "qualitative.png"):
    # evaluate._write_figures only logs a failed figure, so its absence is the failure signal.
    with open(os.path.join(workdir, name), "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert f"![{name}]({name})" in md


def test_prediction_fields_are_consistent(predictor, test_split):
  source, _ = test_split
  full, bbox, k, _ = _example(source, 0)
  p = predictor.predict(full, bbox, intrinsics=k)
  bank = predictor.method.bank
  # The classifier's top-1 alternative is the retrieved model.
  assert p.alternatives[0] == {"category": p.category, "cad_index": p.cad_index, "name": p.model_name,
                               "score": p.score}
  assert len(p.alternatives) == 5 and all(0 <= a["score"] <= 1 for a in p.alternatives)
  assert [a["score"] for a in p.alternatives] == sorted((a["score"] for a in p.alternatives), reverse=True)
  assert (bank.categories[p.model_row], int(bank.cad_indices[p.model_row])) == (p.category, p.cad_index)
  assert p.nearest_neighbour is not None and p.nearest_neighbour["distance"] >= 0
  # Rotation: orthonormal, equal to the quaternion's matrix, and to the viewpoint's (round trip).
  r = p.rotation_matrix
  np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-5)
  assert np.linalg.det(r) == pytest.approx(1.0, abs=1e-5)
  assert np.linalg.norm(p.quaternion) == pytest.approx(1.0, abs=1e-5)
  np.testing.assert_allclose(np.asarray(geometry.quat_to_matrix(p.quaternion)), r, atol=1e-5)
  v = p.viewpoint
  r_vp = geometry.viewpoint_to_camera_rotation(math.radians(v["azimuth_deg"]),
                                               math.radians(v["elevation_deg"]), math.radians(v["theta_deg"]))
  np.testing.assert_allclose(np.asarray(r_vp), r, atol=1e-4)
  # Exact camera translation with the given K; the first hypothesis is the prediction itself.
  assert p.camera == "intrinsics"
  np.testing.assert_allclose(p.translation_camera, np.asarray(geometry.crop_to_camera_translation(
      p.translation_crop, bbox, k)), rtol=1e-6)
  assert abs(float(np.dot(p.pose_hypotheses[0]["quaternion"], p.quaternion))) == pytest.approx(1.0, abs=1e-6)
  assert p.pose_hypotheses[0]["viewpoint"] == pytest.approx(p.viewpoint, abs=1e-3)
  qs = [h["quaternion"] for h in p.pose_hypotheses]
  for i in range(len(qs)):
    for j in range(i):
      assert float(geometry.quat_geodesic_deg(qs[i], qs[j])) >= predictor_lib.DEDUPE_DEG - 1e-3
  assert sum(h["probability"] for h in p.pose_hypotheses) <= 1.0 + 1e-5
  d = json.loads(json.dumps(p.to_dict()))
  assert d["category"] == p.category and len(d["rotation_matrix"]) == 3 and d["bbox"] == list(bbox)
  assert d["image_size"] == [full.shape[0], full.shape[1]]


def test_equals_the_evaluation_decode_path(predictor, test_split):
  """A test-split crop gives exactly what `Method.predict_normalized` gives on the pipeline's crop."""
  source, data_dir = test_split
  it = input_pipeline.make_pipeline(data_dir, "test", batch_size=len(source), image_size=predictor.input_size,
                                    shuffle=False, num_epochs=1, drop_remainder=False, augment=None,
                                    process_index=0, process_count=1)
  try:
    batch = next(iter(it))
  finally:
    it.close()
  ref = predictor.method.predict_normalized(batch["image"][:1])
  full, bbox, k, crop = _example(source, 0)
  assert batch["instance_id"][0] == input_pipeline._as_str(source[0]["instance_id"])  # noqa: SLF001
  # The stored crop as the whole image, and the full render with the example's box: the same crop.
  np.testing.assert_array_equal(input_pipeline.normalize_image(crop), batch["image"][0])
  for p in (predictor.predict(crop), predictor.predict(full, bbox, intrinsics=k)):
    assert p.model_row == int(ref["model_cls"][0])
    np.testing.assert_allclose(p.quaternion, ref["quaternion"][0], atol=1e-5)
    np.testing.assert_allclose(p.translation_crop, ref["translation"][0], atol=1e-5)
    np.testing.assert_allclose([h["probability"] for h in p.pose_hypotheses][:1],
                               ref["anchor_probs_topk"][0][:1], atol=1e-5)


def test_image_types_give_the_same_prediction(predictor, test_split, tmp_path):
  source, _ = test_split
  full, bbox, _, _ = _example(source, 1)
  base = predictor.predict(full, bbox)
  path = tmp_path / "photo.png"
  Image.fromarray(full).save(path)
  buf = io.BytesIO()
  Image.fromarray(full).save(buf, format="PNG")
  rgba = Image.fromarray(np.concatenate([full, np.full(full.shape[:2] + (1,), 255, np.uint8)], -1), "RGBA")
  for image in (str(path), path, buf.getvalue(), Image.fromarray(full), rgba):
    _assert_same(predictor.predict(image, bbox), base)
  # Grey and 16-bit grey: the same as the grey image repeated to RGB.
  grey = np.asarray(Image.fromarray(full).convert("L"))
  grey_rgb = predictor.predict(np.repeat(grey[..., None], 3, -1), bbox)
  _assert_same(predictor.predict(Image.fromarray(grey), bbox), grey_rgb)
  p16 = tmp_path / "grey16.png"
  Image.fromarray(grey.astype(np.uint16) * 257).save(p16)  # 257 * v maps back to v exactly
  assert Image.open(p16).mode.startswith("I;16")
  _assert_same(predictor.predict(str(p16), bbox), grey_rgb)
  # Without a box the whole image is the crop.
  whole = predictor.predict(str(path))
  np.testing.assert_array_equal(whole.bbox, [0, 0, full.shape[1], full.shape[0]])
  assert whole.camera == "assumed"
  # A tiny image still works (upsampled to the input size).
  assert predictor.predict(full[:3, :2]).image_size == (3, 2)


def test_assumed_camera_translation(predictor, test_split):
  source, _ = test_split
  full, bbox, k, _ = _example(source, 2)
  p = predictor.predict(full, bbox)
  # Without intrinsics: render.Camera.default of the image, which is exactly the renders' camera.
  h, w = full.shape[:2]
  np.testing.assert_allclose(p.intrinsics, Camera.default(w, h).K)
  np.testing.assert_allclose(p.intrinsics, k)
  np.testing.assert_allclose(p.translation_camera, np.asarray(geometry.crop_to_camera_translation(
      p.translation_crop, bbox, Camera.default(w, h).K)), rtol=1e-6)
  with_k = predictor.predict(full, bbox, intrinsics=k)
  np.testing.assert_allclose(p.translation_camera, with_k.translation_camera, rtol=1e-6)
  # The whole image as the crop: Z = 0.625 z and (X, Y) = (x - 0.5, y - 0.5) Z / 1.25 (focal 1.25 x side).
  sq = full[:, :h] if w >= h else full[:w]
  pw = predictor.predict(sq)
  x, y, z = pw.translation_crop
  big_z = z * 0.5 * 1.25
  expected = [(x - 0.5) * big_z / 1.25, (y - 0.5) * big_z / 1.25, big_z]
  np.testing.assert_allclose(pw.translation_camera, expected, rtol=1e-6, atol=1e-9)


def test_predict_batch_equals_predict_and_compiles_once_per_bucket(workdir, test_split):
  source, _ = test_split
  fresh = predictor_lib.Predictor.from_workdir(workdir, top_k=3)  # its own jitted function
  jitted = fresh.method._predict  # noqa: SLF001
  examples = [_example(source, k) for k in range(3)]
  singles = [fresh.predict(full, bbox, intrinsics=k) for full, bbox, k, _ in examples]
  # Three images of different sizes, one compiled shape (the crop size is fixed): bucket 1.
  fresh.predict(examples[0][0][:20, :31])
  assert jitted._cache_size() == 1  # noqa: SLF001
  batch = fresh.predict_batch([e[0] for e in examples], [e[1] for e in examples],
                              intrinsics=[e[2] for e in examples])
  assert jitted._cache_size() == 2  # noqa: SLF001  -- bucket 4 (3 images + 1 padding row)
  for a, b in zip(batch, singles):
    _assert_same(a, b)
    np.testing.assert_allclose(a.translation_camera, b.translation_camera, rtol=1e-5)
    assert len(a.alternatives) == 3
  # One K for every image, and mixed boxes (None = whole image).
  mixed = fresh.predict_batch([examples[0][0], examples[0][3], examples[1][0], examples[2][0]],
                              [examples[0][1], None, examples[1][1], examples[2][1]], intrinsics=examples[0][2])
  _assert_same(mixed[0], singles[0])
  assert mixed[1].camera == "intrinsics"
  assert jitted._cache_size() == 2  # noqa: SLF001  -- 4 images: bucket 4 again, no new compile
  assert fresh.predict_batch([]) == []


def test_dedupe_hypotheses_by_hand():
  def about_z(deg):
    return np.array([math.cos(math.radians(deg) / 2), 0.0, 0.0, math.sin(math.radians(deg) / 2)])
  qs = np.stack([about_z(0), about_z(5), -about_z(180), about_z(178), about_z(40)])
  kept = predictor_lib.dedupe_hypotheses(qs, np.array([0.4, 0.2, 0.15, 0.1, 0.05]))
  # 5 deg from the first: merged; 180 and 178 deg: one second mode (q ~ -q); 40 deg: its own.
  assert [p for _, p in kept] == pytest.approx([0.6, 0.25, 0.05])
  np.testing.assert_allclose(kept[1][0], -about_z(180))


def test_overlay(predictor, test_split):
  source, _ = test_split
  full, bbox, k, _ = _example(source, 0)
  p = predictor.predict(full, bbox, intrinsics=k)
  out = predictor.overlay(full, p)
  assert out.shape == full.shape and out.dtype == np.uint8
  assert np.any(out != full)
  # The box is outlined just outside its left edge.
  x1, y1, x2, y2 = bbox
  assert x1 >= 1
  np.testing.assert_array_equal(out[int(math.ceil(y1)), int(math.floor(x1)) - 1], [0, 220, 255])
  # A large photo is drawn at max_side, with the camera scaled to match.
  big = np.asarray(Image.fromarray(full).resize((full.shape[1] * 5, full.shape[0] * 5)))
  pb = predictor.predict(big, bbox * 5)
  small = predictor.overlay(big, pb, max_side=100)
  assert max(small.shape[:2]) == 100
  # A prediction made on a caller-cut crop, drawn back on the photo at the crop's box.
  pc = predictor.predict(crops.square_crop(full, bbox, 40))
  assert predictor.overlay(full, pc, bbox=bbox).shape == full.shape


def test_overlay_of_the_true_pose_covers_the_object(predictor, test_split):
  """The overlay's camera math: the ground-truth pose, put in a Prediction, is drawn inside the object's box,
  with the exact K and with the assumed camera (the renders' own, so both drawings are the same)."""
  source, data_dir = test_split
  names = input_pipeline.category_names(data_dir)
  clean = [k for k in range(len(source)) if not (source[k]["occluded"] or source[k]["truncated"]
                                                 or source[k]["difficult"]) and source[k]["bbox_area"] > 60]
  assert clean
  for k_clean in clean[:3]:
    raw = source[k_clean]
    full, bbox, k, _ = _example(source, k_clean)
    drawings = []
    for intrinsics in (k, None):
      p = predictor.predict(full, bbox, intrinsics=intrinsics)
      q = np.asarray(raw["quaternion"], np.float64)
      truth = dataclasses.replace(
          p, category=names[int(raw["category"])], cad_index=int(raw["cad_index"]), quaternion=q,
          rotation_matrix=np.asarray(geometry.quat_to_matrix(q), np.float64),
          translation_crop=np.asarray(raw["translation"], np.float64))
      drawings.append(predictor.overlay(full, truth))
    np.testing.assert_array_equal(drawings[0], drawings[1])
    drawn = np.any(drawings[0] != predictor_lib.draw_box(full, bbox), axis=-1)
    x1, y1, x2, y2 = bbox
    inside = np.zeros_like(drawn)
    inside[max(0, math.floor(y1) - 1):math.ceil(y2) + 1, max(0, math.floor(x1) - 1):math.ceil(x2) + 1] = True
    # Inside the (tight, visible-part) box, and filling a good part of it.
    assert (drawn & inside).sum() / drawn.sum() > 0.97
    assert drawn.sum() > 0.3 * (x2 - x1) * (y2 - y1)


@pytest.mark.parametrize("case", ["missing", "not_image", "empty_box", "outside_box", "bad_k", "bad_boxes"])
def test_bad_inputs_raise_image_error(predictor, tmp_path, case):
  img = np.zeros((20, 30, 3), np.uint8)
  text = tmp_path / "notes.png"
  text.write_text("not an image")
  with pytest.raises(errors.ImageError) as e:
    if case == "missing":
      predictor.predict(str(tmp_path / "nope.png"))
    elif case == "not_image":
      predictor.predict(str(text))
    elif case == "empty_box":
      predictor.predict(img, (5, 5, 5, 10))
    elif case == "outside_box":
      predictor.predict(img, (40, 0, 50, 10))
    elif case == "bad_k":
      predictor.predict(img, intrinsics=np.eye(2))
    else:
      predictor.predict_batch([img, img], [(0, 0, 5, 5)])
  message = str(e.value)
  expected = {"missing": "nope.png: no such image file", "not_image": "notes.png: not an image",
              "empty_box": "empty", "outside_box": "outside", "bad_k": "intrinsics",
              "bad_boxes": "bboxes: got 1 for 2 images"}[case]
  assert expected in message


def test_from_workdir_errors(tmp_path):
  with pytest.raises(errors.CheckpointError, match="no such directory"):
    predictor_lib.Predictor.from_workdir(tmp_path / "missing")
  with pytest.raises(errors.DisentError):
    predictor_lib.Predictor.from_workdir(tmp_path)  # exists, but holds no checkpoint


@pytest.fixture
def cli_flags():
  """Parses absl's FLAGS for launch.predict; restores them (and the absl verbosity main sets) after."""
  from absl import flags
  from absl import logging as absl_logging
  from launch import predict as cli
  verbosity = absl_logging.get_verbosity()

  def parse(*args):
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["predict", *args])
    return cli
  yield parse
  flags.FLAGS.unparse_flags()
  absl_logging.set_verbosity(verbosity)


def test_launch_predict(workdir, test_split, tmp_path, cli_flags, capsys, monkeypatch):
  source, _ = test_split
  full, bbox, _, _ = _example(source, 0)
  path = tmp_path / "photo.png"
  Image.fromarray(full).save(path)
  monkeypatch.chdir(tmp_path)
  cli = cli_flags(f"--workdir={workdir}", f"--image={path}", "--bbox=" + ",".join(map(str, bbox.tolist())),
                  "--top_k=2")
  cli.main(["predict"])
  printed = json.loads(capsys.readouterr().out)
  assert printed["overlay"] == str(tmp_path / "photo_prediction.png")
  assert Image.open(printed["overlay"]).size == (full.shape[1], full.shape[0])
  assert len(printed["alternatives"]) == 2 and printed["bbox"] == pytest.approx(bbox.tolist())
  assert printed["camera"] == "assumed"
  out = tmp_path / "sub" / "o.png"
  cli = cli_flags(f"--workdir={workdir}", f"--image={path}", f"--out={out}", "--intrinsics=70,70,24,24")
  cli.main(["predict"])
  assert json.loads(capsys.readouterr().out)["camera"] == "intrinsics" and out.exists()
  # Bad input: one line starting with 'error:', no traceback.
  for args, expected in (([f"--image={tmp_path / 'nope.png'}"], "no such file"),
                         ([f"--image={path}", "--bbox=1,2,3"], "--bbox must be 4 numbers"),
                         ([f"--image={path}", "--bbox=100,100,120,120"], "outside")):
    cli = cli_flags(f"--workdir={workdir}", *args)
    with pytest.raises(SystemExit) as e:
      cli.main(["predict"])
    assert str(e.value).startswith("error: ") and expected in str(e.value) and "\n" not in str(e.value)
  cli = cli_flags(f"--workdir={tmp_path / 'nowhere'}", f"--image={path}")
  with pytest.raises(SystemExit, match="^error: .*no such directory"):
    cli.main(["predict"])
