"""The user-facing API: one RGB image (and optionally a box) in, the retrieved CAD model and its 6D pose out.

    predictor = Predictor.from_workdir("runs/demo")
    p = predictor.predict("photo.jpg", bbox=(x1, y1, x2, y2))
    print(p.category, p.model_name, p.viewpoint, p.translation_camera)
    Image.fromarray(predictor.overlay("photo.jpg", p)).save("overlay.png")

Design:
  * Same decode path as the evaluation: the crop is THE training crop (`crops.square_crop` of the box, at
    the network's input size), normalised with `input_pipeline.normalize_image`, and decoded by
    `inference.Method.predict_normalized` (arg-max anchor + residual, classifier retrieval, translation
    cell + residual). So a prediction here equals the evaluation's prediction on the same crop.
  * Images: anything `image_io.load_image` reads (path, bytes, PIL image, array; grey, RGBA, 16-bit,
    EXIF-rotated). Without a box the whole image is the crop (its box is the full image).
  * Batching: `predict_batch` runs the crops in jitted calls of a padded bucket size (1, 2, 4, ... up to
    `max_batch`): the network sees a fixed crop size, so a process compiles once per bucket, whatever the
    images' sizes, and padding rows never change the others (BatchNorm runs on its stored statistics).
  * Translation: the network predicts the crop-relative (x, y, z) of `geometry.py`. The camera-frame
    position (X, Y, Z) needs the photo's camera: with `intrinsics` (K of the photo, this project's pixel
    convention: cx = W / 2 is the image centre; add 0.5 to an OpenCV K's cx, cy) it is exact; without, the
    photo is assumed to come from the synthetic renders' camera, `render.Camera.default(W, H)`: focal
    1.25 x max(W, H), principal point at the image centre (exact for the project's renders, a plausible
    ~44 degree field of view for a photo). `Prediction.camera` says which. Either way (X, Y, Z) is in units
    where the CAD model's bounding sphere has radius 0.5 (the paper's translation is up to scale).
    Why not a camera tied to the box (focal 1.25 x the crop side, principal point at the box centre): it
    gives the same projected centre and size, but for a box that is a fraction of the photo its field of
    view over the crop is far wider than the photo's, so the object sits much closer and a correct pose is
    drawn visibly distorted (the focal length is a property of the photo, not of the box).
  * Pose hypotheses: the top-k rotation anchors, each decoded with its own residual; hypotheses that decode
    within `DEDUPE_DEG` of a more probable one are merged into it (probabilities added), so two separate
    modes (front / back of a boat) show up as two entries and one mode spread over neighbouring anchors as
    one.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from disent_jax import errors
from disent_jax import geometry
from disent_jax import image_io
from disent_jax import inference
from disent_jax import input_pipeline
from disent_jax.datasets import crops

ASSUMED_FOCAL_SCALE = 1.25  # focal / longest image side without intrinsics (render.Camera.default's)
DEDUPE_DEG = 10.0  # pose hypotheses closer than this are one mode
MAX_BATCH = 64  # largest jitted batch; bigger inputs run in several calls


@dataclasses.dataclass
class Prediction:
  """What the method says about one object.

  Attributes:
    category: category of the retrieved CAD model.
    cad_index: its 1-based index within the category.
    model_name: its display name in the CAD database.
    model_row: its row in the database (the classifier's class).
    score: the classifier's softmax probability of that model.
    alternatives: the classifier's top-k models [{category, cad_index, name, score}], best first (the
      first equals the retrieved model).
    nearest_neighbour: the database model nearest (L2) to the predicted shape vector {category, cad_index,
      name, distance}, or None when the method has no Stage I database vectors.
    quaternion: (4,) object-to-camera rotation, scalar-first (w, x, y, z), canonical sign.
    rotation_matrix: (3, 3) the same rotation (X_c = R X_o + t, CV camera: X right, Y down, Z forward).
    viewpoint: Pascal3D+ viewpoint {azimuth_deg, elevation_deg, theta_deg} of that rotation
      (`geometry.camera_rotation_to_viewpoint`).
    translation_crop: (3,) crop-relative translation (x, y, z) (`geometry.py`'s definition).
    translation_camera: (3,) object origin (X, Y, Z) in the camera frame, in units of the normalised model
      (bounding-sphere radius 0.5); exact only when `camera` is 'intrinsics'.
    camera: 'intrinsics' (the given K) or 'assumed' (`render.Camera.default` of the image, see the module
      docstring).
    intrinsics: (3, 3) the K used for `translation_camera` and overlays.
    pose_hypotheses: up to k distinct rotations [{quaternion, probability, viewpoint}], most probable first.
    bbox: (4,) the box (x1, y1, x2, y2) the crop was cut from, in pixels of the (EXIF-rotated) image.
    image_size: (height, width) of the image.
  """
  category: str
  cad_index: int
  model_name: str
  model_row: int
  score: float
  alternatives: list[dict]
  nearest_neighbour: dict | None
  quaternion: np.ndarray
  rotation_matrix: np.ndarray
  viewpoint: dict
  translation_crop: np.ndarray
  translation_camera: np.ndarray
  camera: str
  intrinsics: np.ndarray
  pose_hypotheses: list[dict]
  bbox: np.ndarray
  image_size: tuple[int, int]

  def to_dict(self) -> dict[str, Any]:
    """A JSON-ready dict (lists and Python scalars only)."""
    return _json_ready(dataclasses.asdict(self))


def _json_ready(x: Any) -> Any:
  if isinstance(x, dict):
    return {k: _json_ready(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_json_ready(v) for v in x]
  if isinstance(x, np.ndarray):
    return _json_ready(x.tolist())
  if isinstance(x, np.generic):
    return x.item()
  return x


def _viewpoint_dict(az: float, el: float, th: float) -> dict[str, float]:
  return {"azimuth_deg": math.degrees(az), "elevation_deg": math.degrees(el), "theta_deg": math.degrees(th)}


def _angle_deg(q1: np.ndarray, q2: np.ndarray) -> float:
  """Rotation angle between two unit quaternions (q ~ -q), in degrees."""
  d = min(1.0, abs(float(np.dot(q1, q2))) / max(np.linalg.norm(q1) * np.linalg.norm(q2), 1e-12))
  return math.degrees(2.0 * math.acos(d))


def dedupe_hypotheses(quaternions: np.ndarray, probabilities: np.ndarray,
                      min_deg: float = DEDUPE_DEG) -> list[tuple[np.ndarray, float]]:
  """Merges rotation hypotheses that lie within `min_deg` of a more probable one.

  Args:
    quaternions: (k, 4) decoded hypotheses, most probable first.
    probabilities: (k,) their anchor probabilities.
    min_deg: hypotheses closer than this (geodesic angle) to a kept one are merged into it.

  Returns:
    [(quaternion, summed probability)] of the kept hypotheses, in order.
  """
  kept: list[list] = []
  for q, p in zip(np.asarray(quaternions, np.float64), np.asarray(probabilities, np.float64)):
    for k in kept:
      if _angle_deg(k[0], q) < min_deg:
        k[1] += float(p)
        break
    else:
      kept.append([q, float(p)])
  return [(q, p) for q, p in kept]


def assumed_intrinsics(image_size: tuple[int, int]) -> np.ndarray:
  """K assumed for a photo without intrinsics: `render.Camera.default` (focal 1.25 x the longest side,
  principal point at the image centre).

  Args:
    image_size: (height, width) in pixels.

  Returns:
    (3, 3) float64 K.
  """
  h, w = image_size
  f = ASSUMED_FOCAL_SCALE * max(h, w)
  return np.array([[f, 0.0, 0.5 * w], [0.0, f, 0.5 * h], [0.0, 0.0, 1.0]])


def _check_intrinsics(k: Any, what: str) -> np.ndarray:
  try:
    m = np.asarray(k, np.float64)
  except (TypeError, ValueError) as e:
    raise errors.ImageError(f"{what}: intrinsics must be a 3x3 matrix K, got {k!r}") from e
  if (m.shape != (3, 3) or not np.all(np.isfinite(m)) or m[0, 0] <= 0 or m[1, 1] <= 0
      or np.any(np.abs(m[2] - (0.0, 0.0, 1.0)) > 1e-9)):
    raise errors.ImageError(f"{what}: intrinsics must be a pinhole K [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] "
                            f"with fx, fy > 0, got {m.tolist() if m.size == 9 else k!r}")
  return m


def _source_name(image: Any, index: int | None) -> str | None:
  """How error messages name an input: its path, its position in a batch, or None (image_io's default)."""
  if isinstance(image, (str, os.PathLike)):
    return os.fspath(image)
  return None if index is None else f"image {index}"


def _per_image(value: Any, n: int, what: str, single_shape: tuple[int, ...]) -> list:
  """`value` for each of n images: None, one value for all (shape `single_shape`), or a sequence of n."""
  if value is None:
    return [None] * n
  try:
    arr = np.asarray(value, np.float64)
    if arr.shape == single_shape:
      return [arr] * n
  except (TypeError, ValueError):
    pass  # a sequence with None entries: handled below
  values = list(value)
  if len(values) != n:
    raise errors.ImageError(f"{what}: got {len(values)} for {n} images; give one per image, or None")
  return values


class Predictor:
  """A trained workdir's method, for photos (see the module docstring).

  Attributes:
    method: the restored `inference.Method`.
    max_batch: largest jitted batch.
  """

  def __init__(self, method: inference.Method, *, max_batch: int = MAX_BATCH):
    self.method = method
    self.max_batch = int(max_batch)
    self._meshes: dict[tuple[str, int], Any] | None = None

  @classmethod
  def from_workdir(cls, workdir: str | os.PathLike, *, config=None, step: int | None = None,
                   top_k: int = 5) -> "Predictor":
    """Restores the trained method of a workdir (Stage I + II checkpoints, `inference.load`).

    Args:
      workdir: the training workdir.
      config: the configuration; None reads the one saved with the Stage II checkpoint.
      step: a Stage II checkpoint step; None for the latest readable one.
      top_k: number of alternative models and pose hypotheses.

    Returns:
      The predictor.

    Raises:
      CheckpointError: no such workdir, or no readable Stage II checkpoint in it.
    """
    workdir = os.fspath(workdir)
    if not os.path.isdir(workdir):
      raise errors.CheckpointError(f"workdir {workdir}: no such directory")
    if isinstance(top_k, bool) or int(top_k) != top_k or top_k < 1:
      raise errors.ConfigError(f"top_k must be a positive integer, got {top_k!r}")
    method = inference.load(config, workdir, step=step)
    if method.top_k != top_k:
      method = dataclasses.replace(method, top_k=int(top_k))  # a fresh jitted decode with this k
    return cls(method)

  @property
  def input_size(self) -> int:
    """Side of the crops the network sees."""
    return self.method.input_size

  # ------------------------------------------------------------------------------------- inputs

  def _prepare(self, image: Any, bbox: Any, index: int | None
               ) -> tuple[np.ndarray, np.ndarray, str | None, tuple[int, int]]:
    """Loads one image and cuts its crop: (uint8 crop, box (4,) float64, source name, (H, W))."""
    name = _source_name(image, index)
    rgb = image_io.load_image(image, name=name)
    h, w = rgb.shape[:2]
    if bbox is None:
      box = np.array([0.0, 0.0, float(w), float(h)])
    else:
      box = image_io.check_bbox(bbox, rgb.shape, source=name or "image")
    return crops.square_crop(rgb, box, self.input_size), box, name, rgb.shape[:2]

  def _bucket(self, n: int) -> int:
    return min(self.max_batch, 1 << max(0, n - 1).bit_length())

  def _run(self, normalized: np.ndarray) -> dict[str, np.ndarray]:
    """`Method.predict_normalized` in padded buckets (a fixed set of compiled shapes)."""
    outs = []
    for start in range(0, len(normalized), self.max_batch):
      chunk = normalized[start:start + self.max_batch]
      size = self._bucket(len(chunk))
      if size > len(chunk):
        pad = np.zeros((size - len(chunk),) + chunk.shape[1:], chunk.dtype)
        chunk = np.concatenate([chunk, pad], 0)
      out = self.method.predict_normalized(chunk)
      n = min(self.max_batch, len(normalized) - start)
      outs.append({k: np.asarray(v)[:n] for k, v in out.items()})
    return {k: np.concatenate([o[k] for o in outs], 0) for k in outs[0]}

  # ------------------------------------------------------------------------------------- predict

  def predict(self, image: Any, bbox: Sequence[float] | None = None, *,
              intrinsics: np.ndarray | None = None) -> Prediction:
    """Retrieves the CAD model of one object and estimates its pose.

    Args:
      image: a path, encoded bytes, PIL image or array (`image_io.load_image`).
      bbox: the object's box (x1, y1, x2, y2) in pixels; None uses the whole image.
      intrinsics: the photo's 3x3 K (this project's pixel convention); None assumes
        `assumed_intrinsics` (the synthetic renders' camera).

    Returns:
      The `Prediction`.

    Raises:
      ImageError: an unreadable image, an empty box or one outside the image, bad intrinsics.
    """
    return self.predict_batch([image], None if bbox is None else [bbox],
                              intrinsics=None if intrinsics is None else [intrinsics])[0]

  def predict_batch(self, images: Sequence[Any], bboxes: Sequence[Sequence[float] | None] | None = None, *,
                    intrinsics: Any = None) -> list[Prediction]:
    """`predict` for several images in one jitted call per `max_batch` images.

    Args:
      images: the images (any mix of the types `predict` takes).
      bboxes: None, or one box (or None) per image.
      intrinsics: None, one K for every image, or one K (or None) per image.

    Returns:
      One `Prediction` per image, in order.
    """
    images = list(images)
    n = len(images)
    if n == 0:
      return []
    boxes = [None] * n if bboxes is None else list(bboxes)
    if len(boxes) != n:
      raise errors.ImageError(f"bboxes: got {len(boxes)} for {n} images; give one per image, or None")
    ks = _per_image(intrinsics, n, "intrinsics", (3, 3))
    crops_, box_list, k_list, cams, sizes = [], [], [], [], []
    for i, (img, box, k) in enumerate(zip(images, boxes, ks)):
      crop, b, name, hw = self._prepare(img, box, i if n > 1 else None)
      crops_.append(crop)
      box_list.append(b)
      sizes.append(tuple(int(v) for v in hw))
      if k is None:
        k_list.append(assumed_intrinsics(hw))
        cams.append("assumed")
      else:
        k_list.append(_check_intrinsics(k, name or "image"))
        cams.append("intrinsics")
    out = self._run(np.stack([input_pipeline.normalize_image(c) for c in crops_], 0))
    return self._decode(out, np.stack(box_list), np.stack(k_list), cams, sizes)

  def _decode(self, out: dict[str, np.ndarray], boxes: np.ndarray, ks: np.ndarray, cams: list[str],
              sizes: list[tuple[int, int]]) -> list[Prediction]:
    """Host-side assembly of `Prediction`s from the network's decoded arrays (one batched call per
    geometry conversion, not one per object)."""
    bank = self.method.bank
    t_crop = np.asarray(out["translation"], np.float64)
    t_cam = np.asarray(geometry.crop_to_camera_translation(t_crop, boxes, ks))
    q_top = np.asarray(out["quaternion_topk"], np.float64)  # (B, k, 4)
    r_top = np.asarray(geometry.quat_to_matrix(q_top))
    vp_top = np.stack([np.asarray(a, np.float64) for a in geometry.camera_rotation_to_viewpoint(r_top)], -1)
    rot = np.asarray(out["rotation"], np.float64)
    vp = np.stack([np.asarray(a, np.float64) for a in geometry.camera_rotation_to_viewpoint(rot)], -1)
    preds = []
    for i in range(len(boxes)):
      row = int(out["model_cls"][i])
      alternatives = [{"category": bank.categories[int(m)], "cad_index": int(bank.cad_indices[int(m)]),
                       "name": bank.names[int(m)], "score": float(s)}
                      for m, s in zip(out["model_topk"][i], out["model_scores_topk"][i])]
      nn = None
      if int(out["model_nn"][i]) >= 0:
        m = int(out["model_nn"][i])
        nn = {"category": bank.categories[m], "cad_index": int(bank.cad_indices[m]), "name": bank.names[m],
              "distance": float(out["nn_distance"][i])}
      # Viewpoints of the kept hypotheses: each merged mode keeps its first (most probable) member's.
      hyps = []
      for q, p in dedupe_hypotheses(q_top[i], out["anchor_probs_topk"][i]):
        j = int(np.argmax(np.abs(q_top[i] @ q)))
        hyps.append({"quaternion": q.astype(np.float64), "probability": p,
                     "viewpoint": _viewpoint_dict(*vp_top[i, j])})
      preds.append(Prediction(
          category=bank.categories[row], cad_index=int(bank.cad_indices[row]), model_name=bank.names[row],
          model_row=row, score=float(out["model_scores_topk"][i][0]), alternatives=alternatives,
          nearest_neighbour=nn, quaternion=np.asarray(out["quaternion"][i], np.float64),
          rotation_matrix=rot[i],
          viewpoint=_viewpoint_dict(*vp[i]), translation_crop=t_crop[i], translation_camera=t_cam[i],
          camera=cams[i], intrinsics=ks[i], pose_hypotheses=hyps, bbox=boxes[i], image_size=sizes[i]))
    return preds

  # ------------------------------------------------------------------------------------- overlay

  def mesh(self, category: str, cad_index: int):
    """The normalised mesh of a database model (the collection is loaded once, on first use)."""
    if self._meshes is None:
      from disent_jax.cad import collections as collections_lib  # pylint: disable=import-outside-toplevel
      models = collections_lib.load_collection(self.method.config.data.cad_source)
      self._meshes = {(m.category, int(m.cad_index)): m.mesh for m in models}
    key = (category, int(cad_index))
    if key not in self._meshes:
      raise errors.ConfigError(f"model {category}/{int(cad_index):02d} is not in the CAD collection "
                               f"{self.method.config.data.cad_source!r}")
    return self._meshes[key]

  def overlay(self, image: Any, prediction: Prediction, *, bbox: Sequence[float] | None = None,
              max_side: int | None = 1600) -> np.ndarray:
    """The retrieved model drawn at the predicted pose over the image, with the box outlined.

    The pose is placed with the prediction's camera (its `intrinsics`: the given K, or the camera assumed
    for the image) and its crop-relative translation for the box, so the model lands where the network saw
    the object. The box is outlined just outside its edges, so the outline never hides a thin object.

    Args:
      image: the image the prediction was made on (any type `predict` takes).
      prediction: the `Prediction`.
      bbox: where the prediction's crop lies in `image`, when that differs from `prediction.bbox` (e.g. the
        prediction was made on a crop the caller cut from this image at `bbox`); None: `prediction.bbox`.
      max_side: larger images are drawn downscaled to this longest side (None: full size).

    Returns:
      (H', W', 3) uint8 image.
    """
    from disent_jax.render import overlay as overlay_lib  # pylint: disable=import-outside-toplevel
    from disent_jax.render.camera import Camera  # pylint: disable=import-outside-toplevel
    name = _source_name(image, None)
    rgb = image_io.load_image(image, name=name)
    if bbox is None:
      box = np.asarray(prediction.bbox, np.float64)
      k = np.asarray(prediction.intrinsics, np.float64)
    else:
      box = image_io.check_bbox(bbox, rgb.shape, source=name or "image")
      k = (np.asarray(prediction.intrinsics, np.float64) if prediction.camera == "intrinsics"
           else assumed_intrinsics(rgb.shape[:2]))
    t = np.asarray(geometry.crop_to_camera_translation(np.asarray(prediction.translation_crop, np.float64),
                                                       box, k), np.float64)
    h, w = rgb.shape[:2]
    if max_side and max(h, w) > max_side:
      # Render at display size: a 12-megapixel photo would cost 12M rays for no visible gain. Continuous
      # pixel coordinates scale exactly: K' = diag(sx, sy, 1) K, and the box likewise.
      from PIL import Image  # pylint: disable=import-outside-toplevel
      nw, nh = max(1, round(w * max_side / max(h, w))), max(1, round(h * max_side / max(h, w)))
      sx, sy = nw / w, nh / h
      rgb = np.asarray(Image.fromarray(rgb).resize((nw, nh), Image.Resampling.BILINEAR))
      k = np.diag([sx, sy, 1.0]) @ k
      box = box * np.array([sx, sy, sx, sy])
      w, h = nw, nh
    camera = Camera.from_K(k, w, h)
    backend = str(self.method.config.get("images", {}).get("render_backend", "auto") or "auto")
    mesh = self.mesh(prediction.category, prediction.cad_index)
    out = overlay_lib.overlay(rgb, mesh, np.asarray(prediction.rotation_matrix, np.float64), t, camera,
                              color=(1.0, 0.55, 0.15), alpha=0.55, backend=backend)
    return draw_box(out, box)


def draw_box(image: np.ndarray, bbox: Sequence[float], color: Sequence[int] = (0, 220, 255),
             width: int = 2) -> np.ndarray:
  """The image with the box outlined just outside its edges (clipped to the image); a new array.

  Args:
    image: (H, W, 3) uint8.
    bbox: (x1, y1, x2, y2) in continuous pixel coordinates.
    color: RGB uint8 colour.
    width: line width in pixels.

  Returns:
    (H, W, 3) uint8.
  """
  out = np.array(image, np.uint8, copy=True)
  h, w = out.shape[:2]
  x1, y1, x2, y2 = np.asarray(bbox, np.float64)
  # Pixels the box touches, and the ring of `width` pixels around them.
  c0, c1, r0, r1 = math.floor(x1), math.ceil(x2), math.floor(y1), math.ceil(y2)
  ring = np.zeros((h, w), bool)
  ring[max(0, r0 - width):max(0, min(h, r1 + width)), max(0, c0 - width):max(0, min(w, c1 + width))] = True
  ring[max(0, r0):max(0, min(h, r1)), max(0, c0):max(0, min(w, c1))] = False
  out[ring] = np.asarray(color, np.uint8)
  return out
