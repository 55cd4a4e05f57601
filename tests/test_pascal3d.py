"""Tests of the PASCAL3D+ reader and TFDS builder.

Fixtures are written with `scipy.io.savemat` in the upstream layout (a 1x1 `record` struct, a 1xN
`objects` struct array, nested 1x1 `viewpoint`/`bndbox`/`size` structs, `[]` for empty fields, VOC objects
of other classes with empty viewpoints), into a miniature PASCAL3D+_release1.1 tree. Object boxes are
computed by projecting the CAD meshes with PASCAL3D+'s own `project_3d.m`, re-written here independently
of disent_jax.geometry, so the derived conventions (bbox, principal point, translation) are checked
against the upstream projection, not against themselves.
"""

from __future__ import annotations

import collections
import math
import pathlib
import shutil
import tempfile

import hypothesis
import hypothesis.strategies as st
import jax
import numpy as np
import pytest
import scipy.io
import tensorflow_datasets as tfds
from PIL import Image

from disent_jax import geometry as g
from disent_jax.cad import mesh_io
from disent_jax.datasets import crops
from disent_jax.datasets import pascal3d
from disent_jax.datasets import pascal3d_annotations as ann
from disent_jax.errors import AnnotationError, ImageError

import _helpers

EMPTY = np.zeros((0, 0))


# ---------------------------------------------------------------------------------------------------------
# Upstream-layout .mat writing.


def num(x) -> np.ndarray:
  """A MATLAB 1x1 double."""
  return np.array([[x]], dtype=np.float64)


def struct(**fields) -> np.ndarray:
  """A MATLAB 1x1 struct."""
  return struct_array([fields])


def struct_array(items: list[dict]) -> np.ndarray:
  """A MATLAB 1xN struct array; fields missing in an element are [] (as MATLAB fills them)."""
  names: list[str] = []
  for item in items:
    names += [k for k in item if k not in names]
  out = np.zeros((1, len(items)), dtype=[(n, object) for n in names])
  for i, item in enumerate(items):
    for n in names:
      out[0, i][n] = item.get(n, EMPTY)
  return out


def rot_x(a):
  c, s = math.cos(a), math.sin(a)
  return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def rot_z(a):
  c, s = math.cos(a), math.sin(a)
  return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def project_3d(x3d: np.ndarray, az_deg, el_deg, theta_deg, distance, focal, viewport, px, py) -> np.ndarray:
  """PASCAL3D+ `project_3d.m`, line by line: (N, 3) CAD points -> (N, 2) MATLAB image coordinates."""
  a, e, theta = math.radians(az_deg), math.radians(el_deg), math.radians(theta_deg)
  d = distance
  c = np.array([d * math.cos(e) * math.sin(a), -d * math.cos(e) * math.cos(a), d * math.sin(e)])
  a, e = -a, -(math.pi / 2 - e)
  rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
  rx = np.array([[1, 0, 0], [0, math.cos(e), -math.sin(e)], [0, math.sin(e), math.cos(e)]])
  r = rx @ rz
  m = viewport
  p = np.diag([m * focal, m * focal, -1.0]) @ np.hstack([r, (-r @ c)[:, None]])
  x = p @ np.hstack([x3d, np.ones((len(x3d), 1))]).T
  x = x[:2] / x[2]
  r2d = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
  x = (r2d @ x).T
  x[:, 1] = -x[:, 1]
  return x + np.array([px, py])


def voc_box(uv: np.ndarray, width: int, height: int) -> tuple[list[float], bool]:
  """The VOC box (1-based inclusive pixel indices) of MATLAB-coordinate points, clipped to the image.

  MATLAB pixel i covers [i - 0.5, i + 0.5), so a point at u lies in pixel floor(u + 0.5).
  """
  lo = np.floor(uv.min(axis=0) + 0.5)
  hi = np.floor(uv.max(axis=0) + 0.5)
  box = [max(lo[0], 1), max(lo[1], 1), min(hi[0], width), min(hi[1], height)]
  truncated = box != [lo[0], lo[1], hi[0], hi[1]]
  return [float(b) for b in box], truncated


def viewpoint_struct(az, el, theta, distance, px, py, focal=1.0, viewport=3000.0) -> np.ndarray:
  """A fine viewpoint with every field upstream has (degrees)."""
  return struct(azimuth_coarse=num(round(az / 15) * 15 % 360), elevation_coarse=num(round(el / 15) * 15),
                azimuth=num(az), elevation=num(el), distance=num(distance), focal=num(focal), px=num(px),
                py=num(py), theta=num(theta), error=num(3.2), interval_azimuth=num(10.0),
                interval_elevation=num(15.0), num_anchor=num(6), viewport=num(viewport))


def coarse_viewpoint_struct(az, el) -> np.ndarray:
  """A viewpoint without CAD alignment: distance 0, only coarse angles (fine fields 0)."""
  return struct(azimuth_coarse=num(az), elevation_coarse=num(el), azimuth=num(0.0), elevation=num(0.0),
                distance=num(0.0), focal=num(1.0), px=num(0.0), py=num(0.0), theta=num(0.0), error=EMPTY,
                interval_azimuth=EMPTY, interval_elevation=EMPTY, num_anchor=num(0), viewport=num(3000.0))


def object_dict(cls, box, viewpoint=EMPTY, cad_index=EMPTY, truncated=0, occluded=0, difficult=0) -> dict:
  xmin, ymin, xmax, ymax = box
  return {
      "class": cls, "view": "Frontal" if cls != "person" else "", "truncated": num(truncated),
      "occluded": num(occluded), "difficult": num(difficult), "label": EMPTY, "orglabel": EMPTY,
      "bbox": np.array([[xmin, ymin, xmax, ymax]], float),
      "bndbox": struct(xmin=str(int(xmin)), ymin=str(int(ymin)), xmax=str(int(xmax)), ymax=str(int(ymax))),
      "polygon": EMPTY, "mask": EMPTY, "hasparts": num(0), "part": EMPTY, "viewpoint": viewpoint,
      "cad_index": cad_index,
      "anchors": struct(left_wing=struct(location=EMPTY, status=num(0)),
                        nose=struct(location=np.array([[10.0, 12.0]]), status=num(1)))
      if viewpoint is not EMPTY else EMPTY,
  }


def record_struct(filename: str, width: int, height: int, objects: list[dict], source: str) -> np.ndarray:
  database = "ImageNet" if source == "imagenet" else "The VOC2012 Database"
  return struct(folder="VOC2012" if source == "pascal" else filename.split("_")[0], filename=filename,
                source=struct(database=database, annotation="PASCAL3D+", image="flickr"),
                size=struct(width=num(width), height=num(height), depth=num(3)), segmented=num(0),
                imgname=filename, imgsize=np.array([[width, height, 3]], float), database=database,
                objects=struct_array(objects))


def write_mat(path: pathlib.Path, record: np.ndarray) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  scipy.io.savemat(str(path), {"record": record})


def write_jpeg(path: pathlib.Path, width: int, height: int, seed: int, mode: str = "RGB") -> None:
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:height, 0:width]
  img = np.stack([xx * 255 // width, yy * 255 // height, rng.integers(0, 255, (height, width))], -1)
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(img.astype(np.uint8)).convert(mode).save(path, format="JPEG", quality=90)


def r_cv_reference(az_deg, el_deg, theta_deg) -> np.ndarray:
  """project_3d.m's rotation in CV axes: diag(1, -1, -1) Rz(theta) Rx(el - pi/2) Rz(-az)."""
  a, e, t = math.radians(az_deg), math.radians(el_deg), math.radians(theta_deg)
  return np.diag([1.0, -1.0, -1.0]) @ rot_z(t) @ rot_x(e - math.pi / 2) @ rot_z(-a)


# ---------------------------------------------------------------------------------------------------------
# The miniature PASCAL3D+ tree.

W, H = 80, 60
MESHES = {("aeroplane", 1): ((0.8, 0.5, 0.2), (0.05, -0.02, 0.01)),
          ("aeroplane", 2): ((0.6, 0.6, 0.3), (0.0, 0.0, 0.0)),
          ("chair", 1): ((0.4, 0.4, 0.8), (0.0, 0.03, 0.1))}
CAMERA = dict(distance=5.0, focal=1.0, viewport=120.0)


def posed(cls, cad_index, az, el, theta, px, py, **flags) -> dict:
  """An object of `cls` whose box is the projection of its mesh (truncated if clipped)."""
  v, _ = _helpers.box_mesh(*MESHES[(cls, cad_index)])
  uv = project_3d(v, az, el, theta, CAMERA["distance"], CAMERA["focal"], CAMERA["viewport"], px, py)
  box, truncated = voc_box(uv, W, H)
  vp = viewpoint_struct(az, el, theta, CAMERA["distance"], px, py, CAMERA["focal"], CAMERA["viewport"])
  flags.setdefault("truncated", int(truncated))
  obj = object_dict(cls, box, vp, num(cad_index), **flags)
  obj["_expected"] = dict(cls=cls, cad_index=cad_index, az=az, el=el, theta=theta, px=px, py=py, box=box,
                          truncated=bool(flags["truncated"]), occluded=bool(flags.get("occluded", 0)),
                          difficult=bool(flags.get("difficult", 0)))
  return obj


def person(box=(2, 3, 20, 40)) -> dict:
  return object_dict("person", box)


def make_tree(root: pathlib.Path) -> dict[str, dict[str, dict]]:
  """Writes a miniature PASCAL3D+_release1.1 tree; returns {split: {instance_id: expected}}."""
  for (cat, idx), (extent, offset) in MESHES.items():
    _helpers.write_off(root / "CAD" / cat / f"{idx:02d}.off", *_helpers.box_mesh(extent, offset))
  voc_sets = root / pascal3d.VOC_DIR / "ImageSets" / "Main"
  voc_sets.mkdir(parents=True)
  (root / "Image_sets").mkdir(parents=True)
  (root / pascal3d.VOC_DIR / "JPEGImages").mkdir(parents=True)
  images: dict[tuple[str, str, str], list[dict]] = {
      # ImageNet aeroplane train: one object; val: two objects, one occluded.
      ("aeroplane", "imagenet", "n02690373_1"): [posed("aeroplane", 1, 30.0, 10.0, 5.0, 40.5, 30.5)],
      ("aeroplane", "imagenet", "n02690373_2"): [posed("aeroplane", 2, 200.0, -5.0, 0.0, 25.0, 30.0),
                                                 posed("aeroplane", 1, 300.0, 20.0, -10.0, 55.0, 28.0,
                                                       occluded=1)],
      ("chair", "imagenet", "n03001627_1"): [posed("chair", 1, 120.0, 15.0, 0.0, 40.0, 30.0)],
      # VOC train: an aeroplane and a person.
      ("aeroplane", "pascal", "2008_000001"): [person(), posed("aeroplane", 2, 90.0, 30.0, 8.0, 45.0, 35.0)],
      # VOC val: easy aeroplane, truncated aeroplane, coarse-only aeroplane, and a chair.
      ("aeroplane", "pascal", "2008_000002"): [
          posed("aeroplane", 1, 45.0, 12.0, 3.0, 30.0, 25.0),
          posed("aeroplane", 2, 150.0, 5.0, 0.0, 3.0, 30.0),
          object_dict("aeroplane", (50, 40, 70, 55), coarse_viewpoint_struct(30.0, 15.0), num(1)),
          posed("chair", 1, 10.0, 25.0, -4.0, 60.0, 40.0)],
      # VOC val with only a difficult aeroplane (image-set label 0).
      ("aeroplane", "pascal", "2008_000004"): [posed("aeroplane", 1, 270.0, 8.0, 0.0, 40.0, 30.0,
                                                     difficult=1)],
  }
  # The chair folder holds the same VOC record as the aeroplane folder (VOC records list every object).
  images[("chair", "pascal", "2008_000002")] = images[("aeroplane", "pascal", "2008_000002")]
  seed = 0
  for (cat, source, image_id), objects in images.items():
    ext = ".JPEG" if source == "imagenet" else ".jpg"
    clean = [{k: v for k, v in o.items() if k != "_expected"} for o in objects]
    write_mat(root / "Annotations" / f"{cat}_{source}" / f"{image_id}.mat",
              record_struct(image_id + ext, W, H, clean, source))
    seed += 1
    if source == "pascal":
      # 2008_000004 exists only in the VOC devkit (the builder's fallback location).
      folder = (root / pascal3d.VOC_DIR / "JPEGImages" if image_id == "2008_000004"
                else root / "Images" / f"{cat}_pascal")
    else:
      folder = root / "Images" / f"{cat}_imagenet"
    # One ImageNet image is CMYK, as some real ones are: it must be converted, not passed through.
    write_jpeg(folder / (image_id + ext), W, H, seed, mode="CMYK" if image_id == "n02690373_2" else "RGB")
  (root / "Image_sets" / "aeroplane_imagenet_train.txt").write_text("n02690373_1\nn02690373_3\n")
  (root / "Image_sets" / "aeroplane_imagenet_val.txt").write_text("n02690373_2\n")
  (root / "Image_sets" / "chair_imagenet_train.txt").write_text("n03001627_1\n")
  (root / "Image_sets" / "chair_imagenet_val.txt").write_text("")
  (voc_sets / "aeroplane_train.txt").write_text("2008_000001  1\n2008_000009 -1\n")
  (voc_sets / "aeroplane_val.txt").write_text("2008_000002  1\n2008_000003 -1\n2008_000004  0\n")
  (voc_sets / "chair_train.txt").write_text("2008_000001 -1\n")
  (voc_sets / "chair_val.txt").write_text("2008_000002  1\n2008_000004 -1\n")

  def expect(keys, split):
    out = {}
    for cat, source, image_id in keys:
      for index, obj in enumerate(images[(cat, source, image_id)]):
        e = obj.get("_expected")
        if e is None or e["cls"] != cat or (split == "test" and (e["truncated"] or e["occluded"] or
                                                                  e["difficult"])):
          continue
        image_dir = (root / pascal3d.VOC_DIR / "JPEGImages" if image_id == "2008_000004" else
                     root / "Images" / f"{cat}_{source}")
        out[f"{image_id}/{index}"] = dict(e, image=image_dir / (image_id + (".JPEG" if source == "imagenet"
                                                                             else ".jpg")))
    return out

  train = [("aeroplane", "imagenet", "n02690373_1"), ("aeroplane", "imagenet", "n02690373_2"),
           ("aeroplane", "pascal", "2008_000001"), ("chair", "imagenet", "n03001627_1")]
  test = [("aeroplane", "pascal", "2008_000002"), ("aeroplane", "pascal", "2008_000004"),
          ("chair", "pascal", "2008_000002")]
  return {"train": expect(train, "train"), "test": expect(test, "test"), "test_all": expect(test, "test_all")}


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
  root = tmp_path_factory.mktemp("p3d") / "PASCAL3D+_release1.1"
  expected = make_tree(root)
  return root, expected


# ---------------------------------------------------------------------------------------------------------
# Conventions, checked against project_3d.m.


def _project_ours(points_norm, k, r, t):
  x = points_norm @ r.T + t
  return np.stack([k[0, 0] * x[:, 0] / x[:, 2] + k[0, 2], k[1, 1] * x[:, 1] / x[:, 2] + k[1, 2]], -1)


def test_reference_projection_agrees_with_geometry():
  # The test's own transcription of project_3d.m, and geometry's R_cv with t = (0, 0, d), are one camera.
  rng = np.random.default_rng(0)
  pts = rng.uniform(-0.5, 0.5, (50, 3))
  for _ in range(10):
    az, el, th = rng.uniform(0, 360), rng.uniform(-80, 80), rng.uniform(-30, 30)
    uv = project_3d(pts, az, el, th, 7.0, 1.0, 3000.0, 250.0, 180.0)
    with jax.enable_x64(True):
      r = np.asarray(g.viewpoint_to_camera_rotation(*np.radians([az, el, th])))
    np.testing.assert_allclose(r, r_cv_reference(az, el, th), atol=1e-12)
    k = np.array([[3000.0, 0, 250.0], [0, 3000.0, 180.0], [0, 0, 1]])
    np.testing.assert_allclose(_project_ours(pts, k, r, np.array([0, 0, 7.0])), uv, atol=1e-8)


@pytest.mark.parametrize("cat,idx,az,el,th,dist", [("aeroplane", 1, 35.0, 12.0, 4.0, 9.0),
                                                   ("chair", 2, 200.0, 25.0, -8.0, 14.0),
                                                   ("car", 3, 310.0, 3.0, 0.0, 11.0)])
def test_real_mesh_projection_fits_annotated_box(shared_data, tmp_path, cat, idx, az, el, th, dist):
  off = shared_data / "pascal3d_cad_off" / cat / f"{idx:02d}.off"
  raw, _ = mesh_io.read_raw_mesh(off)
  mesh, norm = mesh_io.load_mesh_with_normalization(off)
  width, height, px, py = 500, 375, 251.0, 190.0
  uv = project_3d(raw, az, el, th, dist, 1.0, 3000.0, px, py)
  box, truncated = voc_box(uv, width, height)
  assert not truncated
  path = tmp_path / f"{cat}_pascal" / "2010_000001.mat"
  write_mat(path, record_struct("2010_000001.jpg", width, height,
                                [object_dict(cat, box, viewpoint_struct(az, el, th, dist, px, py), num(idx))],
                                "pascal"))
  obj = ann.read_annotation(path).objects[0]
  labels = ann.pose_labels(obj, norm)
  ours = _project_ours(np.asarray(mesh.vertices), labels.intrinsics, labels.rotation,
                       labels.translation_camera)
  # The same image points as upstream, shifted by our half-pixel convention.
  np.testing.assert_allclose(ours, uv - 0.5, atol=1e-6)
  # ... and the projected extent fills the converted box to within one pixel on every side.
  x1, y1, x2, y2 = obj.bbox
  lo, hi = ours.min(axis=0), ours.max(axis=0)
  assert x1 <= lo[0] < x1 + 1 and y1 <= lo[1] < y1 + 1
  assert x2 - 1 <= hi[0] < x2 and y2 - 1 <= hi[1] < y2
  # The translation label inverts back to t_norm, and the rotation is R_cv of the viewpoint.
  with jax.enable_x64(True):
    back = np.asarray(g.crop_to_camera_translation(labels.translation, obj.bbox, labels.intrinsics))
    np.testing.assert_allclose(g.quat_to_matrix(labels.quaternion), labels.rotation, atol=1e-12)
  np.testing.assert_allclose(back, labels.translation_camera, rtol=1e-9)
  np.testing.assert_allclose(labels.rotation, r_cv_reference(az, el, th), atol=1e-12)
  # The object's origin projects near its box centre: the label's x, y lie well inside the box.
  assert 0.2 < labels.translation[0] < 0.8 and 0.2 < labels.translation[1] < 0.8


def test_real_voc_viewpoints_reproduce_annotated_rotations(shared_data, tmp_path):
  """865 real VOC aeroplane viewpoints, written in the upstream layout, parse to the stored `rot`."""
  data = scipy.io.loadmat(shared_data / "pascal3d_aeroplane_voc_rotations" / "aeroplanetrue.mat")
  data = data["rotationData"][0]
  rng = np.random.default_rng(1)
  objects, rots, boxes, has_vp = [], [], [], []
  for d in data:
    theta, elevation, azimuth = np.degrees(np.asarray(d["euler"], float).ravel())
    box = np.asarray(d["bbox"], float).ravel()
    no_viewpoint = not np.any(np.asarray(d["euler"], float))
    vp = (coarse_viewpoint_struct(0.0, 0.0) if no_viewpoint else
          viewpoint_struct(azimuth, elevation, theta, rng.uniform(3, 30), *(box[:2] + box[2:]) / 2))
    objects.append(object_dict("aeroplane", box, vp, num(int(np.asarray(d["subtype"]).ravel()[0])),
                               truncated=int(np.asarray(d["truncated"]).ravel()[0]),
                               occluded=int(np.asarray(d["occluded"]).ravel()[0])))
    rots.append(np.asarray(d["rot"], float))
    boxes.append(box)
    has_vp.append(not no_viewpoint)
  objects.insert(3, object_dict("person", (1, 1, 5, 5)))  # VOC records list other classes too.
  path = tmp_path / "aeroplane_pascal" / "2008_000021.mat"
  write_mat(path, record_struct("2008_000021.jpg", 500, 375, objects, "pascal"))
  rec = ann.read_annotation(path)
  assert rec.num_other_class == 1 and len(rec.objects) == 865
  assert [o.index for o in rec.objects[2:5]] == [2, 4, 5]  # Indices count every object of the record.
  assert sum(o.has_pose for o in rec.objects) == sum(has_vp) == 790
  for obj, rot, box, vp_ok in zip(rec.objects, rots, boxes, has_vp):
    np.testing.assert_array_equal(obj.bbox, [box[0] - 1, box[1] - 1, box[2], box[3]])
    if not vp_ok:
      assert obj.viewpoint.coarse and not obj.has_pose
      continue
    r_vk = (np.diag([1.0, -1.0, -1.0]) @ obj.viewpoint.camera_rotation()).T
    np.testing.assert_allclose(r_vk, rot, atol=1e-9)
  assert sum(o.truncated for o in rec.objects) == 256 and sum(o.occluded for o in rec.objects) == 111


# ---------------------------------------------------------------------------------------------------------
# Parsing the layout variants.


def test_parse_fixture_record(tree):
  root, expected = tree
  rec = ann.read_annotation(root / "Annotations" / "aeroplane_pascal" / "2008_000002.mat")
  assert (rec.category, rec.source, rec.image_id, rec.filename) == ("aeroplane", "pascal", "2008_000002",
                                                                     "2008_000002.jpg")
  assert (rec.width, rec.height, rec.depth, rec.num_other_class) == (W, H, 3, 1)
  assert [o.index for o in rec.objects] == [0, 1, 2]
  easy, trunc, coarse = rec.objects
  assert easy.easy and easy.has_pose and trunc.truncated and not trunc.easy
  assert coarse.viewpoint.coarse and not coarse.has_pose and coarse.cad_index == 1
  np.testing.assert_allclose([coarse.viewpoint.azimuth, coarse.viewpoint.elevation], np.radians([30, 15]))
  e = expected["test"]["2008_000002/0"]
  np.testing.assert_array_equal(easy.bbox, np.array(e["box"]) - [1, 1, 0, 0])
  vp = easy.viewpoint
  np.testing.assert_allclose([vp.azimuth, vp.elevation, vp.theta], np.radians([e["az"], e["el"], e["theta"]]))
  np.testing.assert_allclose(vp.intrinsics(), [[120, 0, e["px"] - 0.5], [0, 120, e["py"] - 0.5], [0, 0, 1]])
  np.testing.assert_allclose(vp.camera_translation(), [0, 0, 5.0])
  assert rec.posed_objects == (easy, trunc)
  chair = ann.read_annotation(root / "Annotations" / "chair_pascal" / "2008_000002.mat")
  assert [o.index for o in chair.objects] == [3] and chair.num_other_class == 3


@pytest.mark.parametrize("squeeze,as_record", [(False, True), (True, False), (True, True), (False, False)])
def test_parse_record_any_loadmat_mode(tree, squeeze, as_record):
  root, _ = tree
  path = root / "Annotations" / "aeroplane_pascal" / "2008_000002.mat"
  raw = scipy.io.loadmat(str(path), squeeze_me=squeeze, struct_as_record=as_record)["record"]
  rec = ann.parse_record(raw, path=str(path), category="aeroplane", source="pascal", image_id="2008_000002")
  ref = ann.read_annotation(path)
  assert len(rec.objects) == len(ref.objects) == 3
  for a, b in zip(rec.objects, ref.objects):
    np.testing.assert_array_equal(a.bbox, b.bbox)
    assert a.viewpoint == b.viewpoint and a.cad_index == b.cad_index


def test_parse_layout_variants(tmp_path):
  """A single object (1x1 struct), `bndbox` instead of `bbox`, `size` instead of `imgsize`, cells of structs,
  strings as char arrays, logical flags, ImageNet records without `difficult`."""
  vp = viewpoint_struct(10.0, 5.0, 0.0, 4.0, 20.0, 20.0)
  obj = {"class": np.array(["chair"]), "bndbox": struct(xmin=num(3), ymin=num(4), xmax=num(9), ymax=num(12)),
         "viewpoint": vp, "cad_index": np.array([[2]], np.uint8), "truncated": np.array([[True]]),
         "occluded": EMPTY}
  rec = struct(filename="n03001627_7.JPEG", size=struct(width=num(40), height=num(30), depth=EMPTY),
               objects=struct_array([obj]))
  path = tmp_path / "chair_imagenet" / "n03001627_7.mat"
  write_mat(path, rec)
  r = ann.read_annotation(path)
  (o,) = r.objects
  np.testing.assert_array_equal(o.bbox, [2, 3, 9, 12])
  assert (r.width, r.height, r.depth, o.cad_index) == (40, 30, 3, 2)
  assert o.truncated and not o.occluded and not o.difficult and o.has_pose
  # Objects as a cell array of 1x1 structs (a layout MATLAB produces from {s1, s2}).
  cell = np.empty((1, 2), object)
  cell[0, 0], cell[0, 1] = struct(**obj), struct(**dict(obj, cad_index=num(1)))
  write_mat(path, struct(filename="x.JPEG", imgsize=np.array([[40, 30]]), objects=cell))
  assert [o.cad_index for o in ann.read_annotation(path).objects] == [2, 1]
  # No objects at all, and an object without viewpoint.
  write_mat(path, struct(filename="x.JPEG", imgsize=np.array([[40, 30, 3]]), objects=EMPTY))
  assert ann.read_annotation(path).objects == ()
  write_mat(path, struct(filename="x.JPEG", imgsize=np.array([[40, 30, 3]]),
                         objects=struct_array([object_dict("chair", (1, 1, 4, 4))])))
  (o,) = ann.read_annotation(path).objects
  assert o.viewpoint is None and o.cad_index == 0 and not o.has_pose


# ---------------------------------------------------------------------------------------------------------
# Bad files.


def _good_object() -> dict:
  return object_dict("aeroplane", (5, 6, 30, 20), viewpoint_struct(30.0, 10.0, 2.0, 5.0, 20.0, 15.0), num(1))


def _with(d: dict, **changes) -> dict:
  out = dict(d)
  for k, v in changes.items():
    if v is None:
      out.pop(k, None)
    else:
      out[k] = v
  return out


def _vp(**changes) -> np.ndarray:
  fields = {n: viewpoint_struct(30.0, 10.0, 2.0, 5.0, 20.0, 15.0)[0, 0][n]
            for n in viewpoint_struct(1, 1, 1, 1, 1, 1).dtype.names}
  return struct(**_with(fields, **changes))


def _record(objects=None, **changes) -> np.ndarray:
  fields = {"filename": "2008_000100.jpg", "imgsize": np.array([[64, 48, 3]], float), "database": "VOC",
            "objects": struct_array(objects if objects is not None else [_good_object()])}
  return struct(**_with(fields, **changes))


BAD_RECORDS = {
    "no_filename": (lambda: _record(filename=None), "record.filename"),
    "filename_number": (lambda: _record(filename=num(3)), "record.filename"),
    "no_imgsize": (lambda: _record(imgsize=None), "record.imgsize"),
    "imgsize_text": (lambda: _record(imgsize="64x48"), "record.imgsize"),
    "imgsize_fraction": (lambda: _record(imgsize=np.array([[64.5, 48, 3]])), "record.imgsize"),
    "no_objects": (lambda: _without_objects(), "record.objects"),
    "no_class": (lambda: _record([_with(_good_object(), **{"class": None})]), "record.objects(1).class"),
    "class_number": (lambda: _record([_with(_good_object(), **{"class": num(1)})]), "objects(1).class"),
    "no_bbox": (lambda: _record([_with(_good_object(), bbox=None, bndbox=None)]), "objects(1).bbox"),
    "bbox_3": (lambda: _record([_with(_good_object(), bbox=np.array([[1.0, 2, 3]]))]), "objects(1).bbox"),
    "bbox_nan": (lambda: _record([_with(_good_object(), bbox=np.array([[1.0, np.nan, 3, 4]]))]),
                 "objects(1).bbox"),
    "bbox_inverted": (lambda: _record([_with(_good_object(), bbox=np.array([[9.0, 2, 3, 4]]))]),
                      "objects(1).bbox"),
    "bbox_string": (lambda: _record([_with(_good_object(), bbox="1 2 3 4")]), "objects(1).bbox"),
    "az_missing": (lambda: _record([_with(_good_object(), viewpoint=_vp(azimuth=None))]),
                   "objects(1).viewpoint.azimuth"),
    "az_empty": (lambda: _record([_with(_good_object(), viewpoint=_vp(azimuth=EMPTY))]),
                 "objects(1).viewpoint.azimuth"),
    "az_nan": (lambda: _record([_with(_good_object(), viewpoint=_vp(azimuth=num(np.nan)))]),
               "objects(1).viewpoint.azimuth"),
    "el_text": (lambda: _record([_with(_good_object(), viewpoint=_vp(elevation="up"))]),
                "objects(1).viewpoint.elevation"),
    "theta_vector": (lambda: _record([_with(_good_object(), viewpoint=_vp(theta=np.array([[1.0, 2.0]])))]),
                     "objects(1).viewpoint.theta"),
    "focal_missing": (lambda: _record([_with(_good_object(), viewpoint=_vp(focal=None))]),
                      "objects(1).viewpoint.focal"),
    "viewport_zero": (lambda: _record([_with(_good_object(), viewpoint=_vp(viewport=num(0)))]),
                      "objects(1).viewpoint.viewport"),
    "px_inf": (lambda: _record([_with(_good_object(), viewpoint=_vp(px=num(np.inf)))]),
               "objects(1).viewpoint.px"),
    "distance_negative": (lambda: _record([_with(_good_object(), viewpoint=_vp(distance=num(-2)))]),
                          "objects(1).viewpoint.distance"),
    "viewpoint_number": (lambda: _record([_with(_good_object(), viewpoint=num(3))]), "objects(1).viewpoint"),
    "cad_missing": (lambda: _record([_with(_good_object(), cad_index=EMPTY)]), "objects(1).cad_index"),
    "cad_fraction": (lambda: _record([_with(_good_object(), cad_index=num(1.5))]), "objects(1).cad_index"),
    "truncated_text": (lambda: _record([_with(_good_object(), truncated="yes")]), "objects(1).truncated"),
    "second_object_bad": (lambda: _record([_good_object(), _with(_good_object(), bbox=EMPTY, bndbox=EMPTY)]),
                          "objects(2).bbox"),
}


def _without_objects() -> np.ndarray:
  return struct(filename="2008_000100.jpg", imgsize=np.array([[64, 48, 3]], float))


@pytest.mark.parametrize("name", sorted(BAD_RECORDS))
def test_bad_record_names_file_and_field(tmp_path, name):
  make, field = BAD_RECORDS[name]
  record = make()
  path = tmp_path / "aeroplane_pascal" / "2008_000100.mat"
  write_mat(path, record)
  with pytest.raises(AnnotationError) as info:
    ann.read_annotation(path)
  assert str(path) in str(info.value) and field in str(info.value), str(info.value)


def test_good_record_parses(tmp_path):
  path = tmp_path / "aeroplane_pascal" / "2008_000100.mat"
  write_mat(path, _record())
  assert ann.read_annotation(path).objects[0].has_pose


@pytest.mark.parametrize("content,field", [(b"", "not a readable"), (b"\x00garbage" * 40, "not a readable"),
                                           ("truncate", "not a readable"), ("no_record", "record")])
def test_unreadable_files(tmp_path, content, field):
  path = tmp_path / "aeroplane_pascal" / "2008_000100.mat"
  write_mat(path, _record())
  if content == "truncate":
    path.write_bytes(path.read_bytes()[:300])
  elif content == "no_record":
    scipy.io.savemat(str(path), {"rec": _record()})
  else:
    path.write_bytes(content)
  with pytest.raises(AnnotationError) as info:
    ann.read_annotation(path)
  assert str(path) in str(info.value) and field in str(info.value)


def test_missing_file_and_bad_folder(tmp_path):
  with pytest.raises(AnnotationError, match="no such annotation file"):
    ann.read_annotation(tmp_path / "aeroplane_pascal" / "x.mat")
  with pytest.raises(AnnotationError, match="folder name"):
    ann.read_annotation(tmp_path / "weird" / "x.mat")


# Mutations for the property test: a field path and a replacement value (None deletes the field).
_FIELD_PATHS = [("filename",), ("imgsize",), ("database",), ("objects",), ("objects", "class"),
                ("objects", "bbox"), ("objects", "bndbox"), ("objects", "truncated"), ("objects", "occluded"),
                ("objects", "difficult"), ("objects", "cad_index"), ("objects", "viewpoint")] + [
                    ("objects", "viewpoint", n)
                    for n in ("azimuth", "elevation", "theta", "distance", "focal", "px", "py", "viewport",
                              "azimuth_coarse", "elevation_coarse")]
_values = st.one_of(
    st.none(), st.just(EMPTY), st.text(max_size=5),
    st.floats(allow_nan=True, allow_infinity=True).map(num),
    st.integers(-5, 5).map(lambda i: np.array([[i]], np.int32)),
    st.lists(st.floats(-1e3, 1e3), min_size=0, max_size=6).map(lambda x: np.array([x], float)),
    st.just(np.array([[True]])),
    st.just(np.array([[1, 2, 3, 4]], np.uint8)),
    st.builds(lambda: struct(a=num(1))),
    st.builds(lambda: np.array([["x", "y"]], object)),
)


def _mutate(path: tuple[str, ...], value, n_objects: int) -> np.ndarray:
  objects = [_good_object() for _ in range(n_objects)]
  rec = {"filename": "2008_000100.jpg", "imgsize": np.array([[64, 48, 3]], float), "database": "VOC"}
  if path[0] != "objects":
    rec = _with(rec, **{path[0]: value})
    return struct(**rec, objects=struct_array(objects))
  if len(path) == 1:
    return struct(**rec) if value is None else struct(**rec, objects=value)
  if len(path) == 2:
    objects[0] = _with(objects[0], **{path[1]: value})
  else:
    objects[0] = _with(objects[0], viewpoint=_vp(**{path[2]: value}))
  return struct(**rec, objects=struct_array(objects))


@hypothesis.settings(max_examples=100, deadline=None, derandomize=True)
@hypothesis.given(paths=st.lists(st.sampled_from(_FIELD_PATHS), min_size=1, max_size=3),
                  values=st.lists(_values, min_size=3, max_size=3), n_objects=st.integers(1, 2),
                  flip=st.one_of(st.none(), st.tuples(st.integers(0, 2000), st.integers(1, 255))))
def test_property_mutated_records_parse_or_raise_annotation_error(paths, values, n_objects, flip):
  with tempfile.TemporaryDirectory() as tmp:
    path = pathlib.Path(tmp) / "aeroplane_pascal" / "2008_000100.mat"
    record = _mutate(paths[0], values[0], n_objects)
    write_mat(path, record)
    if flip is not None:  # Corrupt one byte of the file as well.
      data = bytearray(path.read_bytes())
      pos = flip[0] % len(data)
      data[pos] ^= flip[1]
      path.write_bytes(bytes(data))
    try:
      rec = ann.read_annotation(path)
    except AnnotationError as e:
      assert str(path) in str(e)
      return
    norm = mesh_io.mesh_from_arrays(*_helpers.box_mesh((0.5, 0.4, 0.3), (0.01, 0, 0)))[1]
    for obj in rec.posed_objects:
      labels = ann.pose_labels(obj, norm)
      assert labels.quaternion.shape == (4,)
    for other_path, value in zip(paths[1:], values[1:]):  # Several mutations at once.
      write_mat(path, _mutate(other_path, value, n_objects))
      try:
        ann.read_annotation(path)
      except AnnotationError as e:
        assert str(path) in str(e)


# ---------------------------------------------------------------------------------------------------------
# Image sets, splits, manual dir.


def test_read_image_set(tmp_path):
  p = tmp_path / "aeroplane_train.txt"
  p.write_text("2008_000008 -1\n2008_000021  1\n\n2008_000033  0\n")
  assert pascal3d.read_image_set(p) == ["2008_000021", "2008_000033"]
  p.write_text("n02690373_1000\nn02690373_1001\n")
  assert pascal3d.read_image_set(p) == ["n02690373_1000", "n02690373_1001"]
  p.write_text("2008_000008 2\n")
  with pytest.raises(AnnotationError, match=r"aeroplane_train.txt:1: label"):
    pascal3d.read_image_set(p)
  p.write_text("a b c\n")
  with pytest.raises(AnnotationError, match="aeroplane_train.txt:1"):
    pascal3d.read_image_set(p)


def test_split_images_and_object_filters(tree):
  root, expected = tree
  cats = ("aeroplane", "chair")
  images = pascal3d.split_images(root, cats)
  assert [(r.category, r.source, r.image_id) for r in images["train"]] == [
      ("aeroplane", "imagenet", "n02690373_1"), ("aeroplane", "imagenet", "n02690373_3"),
      ("aeroplane", "imagenet", "n02690373_2"), ("aeroplane", "pascal", "2008_000001"),
      ("chair", "imagenet", "n03001627_1")]
  assert [(r.category, r.image_id) for r in images["test"]] == [
      ("aeroplane", "2008_000002"), ("aeroplane", "2008_000004"), ("chair", "2008_000002")]
  norms = pascal3d.cad_normalizations(root, cats)
  for split, refs in (("train", images["train"]), ("test", images["test"]), ("test_all", images["test"])):
    stats = collections.Counter()
    ids = [k for k, _ in pascal3d.object_examples(root, refs, split, 16, norms, stats)]
    assert ids == list(expected[split]), split
    if split == "train":
      assert stats["images without annotation file"] == 1 and stats["objects of other classes"] == 1
    else:
      assert stats["objects with a coarse viewpoint only"] == 1
  assert set(expected["test"]) == {"2008_000002/0", "2008_000002/3"}
  assert set(expected["test_all"]) == {"2008_000002/0", "2008_000002/1", "2008_000002/3", "2008_000004/0"}
  assert len(expected["train"]) == 5


def _copy_tree(root: pathlib.Path, dest: pathlib.Path) -> pathlib.Path:
  shutil.copytree(root, dest)
  return dest


def test_manual_dir_errors(tree, tmp_path):
  root, _ = tree
  with pytest.raises(pascal3d.ManualDirError, match="does not exist") as info:
    pascal3d.check_manual_dir(tmp_path / "nowhere")
  assert "PASCAL3D+_release1.1" in str(info.value)
  broken = _copy_tree(root, tmp_path / "broken")
  shutil.rmtree(broken / "Image_sets")
  shutil.rmtree(broken / "Annotations" / "chair_pascal")
  (broken / pascal3d.VOC_DIR / "ImageSets" / "Main" / "aeroplane_val.txt").unlink()
  with pytest.raises(pascal3d.ManualDirError) as info:
    pascal3d.check_manual_dir(broken, ("aeroplane", "chair"))
  msg = str(info.value)
  for missing in ("Image_sets/", "Annotations/chair_pascal/", "ImageSets/Main/aeroplane_val.txt"):
    assert missing in msg, msg
  assert "Image_sets/aeroplane_imagenet_train.txt" not in msg  # Implied by the missing folder.
  # All 12 categories by default: the miniature tree lacks the other ten.
  with pytest.raises(pascal3d.ManualDirError, match="Annotations/bicycle_pascal/"):
    pascal3d.check_manual_dir(root)
  with pytest.raises(pascal3d.ManualDirError, match="incomplete"):
    pascal3d.build_pascal3d(broken, tmp_path / "data", crop_size=16, categories=("aeroplane", "chair"))
  assert not (tmp_path / "data" / "pascal3d").exists()


def test_tfds_manual_dir_empty_gives_instructions(tmp_path):
  empty = tmp_path / "empty"
  empty.mkdir()
  builder = pascal3d.Pascal3d(config=pascal3d.make_config(16, ("chair",)), data_dir=str(tmp_path / "d"))
  with pytest.raises(Exception) as info:
    builder.download_and_prepare(file_format="array_record", download_config=tfds.download.DownloadConfig(
        manual_dir=str(empty), try_download_gcs=False))
  assert "PASCAL3D+_release1.1" in str(info.value)


def test_missing_image_is_an_error(tree, tmp_path):
  root, _ = tree
  broken = _copy_tree(root, tmp_path / "noimg")
  (broken / "Images" / "chair_imagenet" / "n03001627_1.JPEG").unlink()
  refs = [pascal3d.ImageRef("chair", "imagenet", "n03001627_1")]
  norms = pascal3d.cad_normalizations(broken, ("chair",))
  with pytest.raises(ImageError, match="n03001627_1.JPEG"):
    list(pascal3d.object_examples(broken, refs, "train", 16, norms))


# ---------------------------------------------------------------------------------------------------------
# The builder, end to end.


def test_build_round_trip(tree, tmp_path):
  root, expected = tree
  crop = 24
  out = pascal3d.build_pascal3d(root, tmp_path / "data", crop_size=crop, categories=("chair", "aeroplane"))
  assert out == str(tmp_path / "data" / "pascal3d" / "crop24-aeroplane-chair" / "1.0.0")
  assert not [p for p in (tmp_path / "data").iterdir() if p.name.startswith(".")]  # Temp dir removed.
  # A second call reuses the prepared dataset.
  assert pascal3d.build_pascal3d(root, tmp_path / "data", crop_size=crop,
                                 categories=("aeroplane", "chair")) == out
  builder = tfds.builder_from_directory(out)
  cats = builder.info.features["category"].names
  norms = pascal3d.cad_normalizations(root, ("aeroplane", "chair"))
  for split, exp in expected.items():
    src = builder.as_data_source(split)
    got = {src[i]["instance_id"].decode() if isinstance(src[i]["instance_id"], bytes)
           else src[i]["instance_id"]: src[i] for i in range(len(src))}
    assert set(got) == set(exp), split
    for iid, e in exp.items():
      ex = got[iid]
      assert cats[ex["category"]] == e["cls"] and ex["cad_index"] == e["cad_index"]
      assert (bool(ex["truncated"]), bool(ex["occluded"]), bool(ex["difficult"])) == (
          e["truncated"], e["occluded"], e["difficult"])
      box = np.array(e["box"]) - [1, 1, 0, 0]
      np.testing.assert_array_equal(ex["bbox"], box.astype(np.float32))
      np.testing.assert_allclose(ex["bbox_area"], (box[2] - box[0]) * (box[3] - box[1]))
      with Image.open(e["image"]) as im:
        pixels = np.asarray(im.convert("RGB"))
      np.testing.assert_array_equal(ex["image"], pixels)  # JPEG passed through, CMYK converted losslessly.
      np.testing.assert_array_equal(ex["crop"], crops.square_crop(pixels, box, crop))
      r = r_cv_reference(e["az"], e["el"], e["theta"])
      np.testing.assert_allclose(g.quat_to_matrix(ex["quaternion"]), r, atol=1e-5)
      with jax.enable_x64(True):
        vp_r = g.viewpoint_to_camera_rotation(*np.asarray(ex["viewpoint"], np.float64))
      np.testing.assert_allclose(vp_r, r, atol=1e-5)
      k = np.array([[120.0, 0, e["px"] - 0.5], [0, 120.0, e["py"] - 0.5], [0, 0, 1]])
      np.testing.assert_allclose(ex["intrinsics"], k, rtol=1e-6)
      norm = norms[(e["cls"], e["cad_index"])]
      t_norm = norm.scale * (r @ np.asarray(norm.center) + [0, 0, 5.0])
      np.testing.assert_allclose(ex["translation_camera"], t_norm, rtol=1e-5)
      np.testing.assert_allclose(ex["translation"], g.camera_to_crop_translation(t_norm, box, k), rtol=1e-5)
      # The stored pose projects the normalised mesh onto the upstream projection of the raw mesh.
      v, _ = _helpers.box_mesh(*MESHES[(e["cls"], e["cad_index"])])
      uv = project_3d(v, e["az"], e["el"], e["theta"], 5.0, 1.0, 120.0, e["px"], e["py"])
      t_back = np.asarray(g.crop_to_camera_translation(ex["translation"], ex["bbox"], ex["intrinsics"]))
      ours = _project_ours(norm.apply(v), np.asarray(ex["intrinsics"], float),
                           np.asarray(g.quat_to_matrix(ex["quaternion"]), float), t_back)
      np.testing.assert_allclose(ours, uv - 0.5, atol=2e-3)
  # RGB JPEG files are stored byte for byte; the CMYK one was converted to PNG.
  raw = builder.as_data_source("train", decoders={"image": tfds.decode.SkipDecoding()})
  for i in range(len(raw)):
    ex = raw[i]
    iid = ex["instance_id"].decode() if isinstance(ex["instance_id"], bytes) else ex["instance_id"]
    file_bytes = expected["train"][iid]["image"].read_bytes()
    if iid.startswith("n02690373_2/"):
      assert ex["image"].startswith(b"\x89PNG") and ex["image"] != file_bytes
    else:
      assert ex["image"] == file_bytes
