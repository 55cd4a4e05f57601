"""Square object crops of full images, the crops' cameras, and detection-like box noise.

THE crop of a bounding box (see disent_jax/datasets/features.py): the square of side s = max(w, h)
centred on the box centre, zero padding outside the image, resized to `size` x `size`. Coordinates are the
project's continuous pixel coordinates (pixel i spans [i, i + 1), its centre is i + 0.5, see
disent_jax/render/camera.py), so the crop's pixel (row j, column i) samples the full image at
  u = X0 + (i + 0.5) * s / size,   v = Y0 + (j + 0.5) * s / size,
where (X0, Y0) = box centre - s / 2 is the square's top-left corner (`square_box`). `crop_camera` is the
camera that renders that crop directly, so overlays and the translation label agree with the crop.

Resampling is Pillow's `Image.resize(..., box=...)` with a bilinear filter: exact bilinear interpolation
when enlarging, and a triangle filter widened by the shrink factor (antialiased) when shrinking, which a
plain 2x2 bilinear lookup is not (large Pascal3D+ boxes shrink 5-10x to 64 px and would alias).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from PIL import Image

from disent_jax.errors import ImageError
from disent_jax.render.camera import Camera

BBoxLike = Sequence[float] | np.ndarray


def _check_bbox(bbox: BBoxLike, what: str = "bbox") -> np.ndarray:
  """Returns the box as (4,) float64, or raises ImageError naming the problem."""
  try:
    b = np.asarray(bbox, np.float64).reshape(-1)
  except (TypeError, ValueError) as e:
    raise ImageError(f"{what} must be 4 numbers (x1, y1, x2, y2), got {bbox!r}") from e
  if b.shape != (4,) or not np.all(np.isfinite(b)):
    raise ImageError(f"{what} must be 4 finite numbers (x1, y1, x2, y2), got {bbox!r}")
  if not (b[2] > b[0] and b[3] > b[1]):
    raise ImageError(f"{what} {tuple(b.tolist())} is empty: need x2 > x1 and y2 > y1")
  return b


def _check_size(size: int) -> int:
  if isinstance(size, bool) or int(size) != size or size < 1:
    raise ImageError(f"crop size must be a positive integer, got {size!r}")
  return int(size)


def square_box(bbox: BBoxLike) -> np.ndarray:
  """The square region (X0, Y0, X1, Y1) that `square_crop` samples for `bbox`.

  Args:
    bbox: (x1, y1, x2, y2) in continuous pixel coordinates.

  Returns:
    (4,) float64: side max(w, h), centred on the box centre (may extend outside the image).
  """
  x1, y1, x2, y2 = _check_bbox(bbox)
  s = max(x2 - x1, y2 - y1)
  cx, cy = 0.5 * (x1 + x2), 0.5 * (y1 + y2)
  return np.array([cx - 0.5 * s, cy - 0.5 * s, cx + 0.5 * s, cy + 0.5 * s])


def _as_rgb(image: np.ndarray) -> np.ndarray:
  """(H, W, 3) uint8 view/copy of an RGB, RGBA, grayscale (H, W) or (H, W, 1) uint8 image."""
  img = np.asarray(image)
  if img.dtype != np.uint8:
    raise ImageError(f"image must be uint8, got dtype {img.dtype}")
  if img.ndim == 2:
    img = img[..., None]
  if img.ndim != 3 or img.shape[2] not in (1, 3, 4) or img.shape[0] < 1 or img.shape[1] < 1:
    raise ImageError(f"image must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {img.shape}")
  if img.shape[2] == 1:
    img = np.repeat(img, 3, axis=2)
  elif img.shape[2] == 4:
    img = img[..., :3]  # Alpha is not part of an object crop.
  return np.ascontiguousarray(img)


def square_crop(image: np.ndarray, bbox: BBoxLike, size: int) -> np.ndarray:
  """THE object crop: the square of side max(w, h) about the box centre, zero-padded, resized.

  Args:
    image: (H, W, 3) uint8 full image ((H, W), (H, W, 1) grey and (H, W, 4) RGBA are accepted too).
    bbox: (x1, y1, x2, y2) object box in continuous pixel coordinates of `image`.
    size: side of the output crop in pixels.

  Returns:
    (size, size, 3) uint8. An axis-aligned square box on the integer grid whose side equals `size` gives
    an exact copy of those pixels (zeros where the box leaves the image).

  Raises:
    ImageError: for a non-uint8 or badly shaped image, an empty or non-finite box, or a bad size.
  """
  size = _check_size(size)
  img = _as_rgb(image)
  x0, y0, x1, y1 = square_box(bbox)
  # Integer window around the square; Image.crop fills the part outside the image with zeros, which is
  # the padding the definition asks for. resize(box=...) then samples that window with sub-pixel offsets.
  ix0, iy0 = math.floor(x0), math.floor(y0)
  ix1, iy1 = max(math.ceil(x1), ix0 + 1), max(math.ceil(y1), iy0 + 1)
  window = Image.fromarray(img).crop((ix0, iy0, ix1, iy1))
  box = (x0 - ix0, y0 - iy0, min(x1 - ix0, ix1 - ix0), min(y1 - iy0, iy1 - iy0))
  out = window.resize((size, size), resample=Image.Resampling.BILINEAR, box=box)
  return np.asarray(out, np.uint8)


def crop_camera(camera: Camera, bbox: BBoxLike, size: int) -> Camera:
  """The camera whose image is `square_crop(image, bbox, size)` of `camera`'s image.

  The full camera shifted to the square's corner (X0, Y0) and scaled by size / s:
  fx' = fx size / s, cx' = (cx - X0) size / s (same for y); continuous coordinates make this exact.

  Args:
    camera: the full image's camera.
    bbox: the object box in the full image.
    size: the crop size.

  Returns:
    A `Camera` of size `size` x `size`.
  """
  size = _check_size(size)
  x0, y0, x1, _ = square_box(bbox)
  k = size / (x1 - x0)
  return Camera(fx=camera.fx * k, fy=camera.fy * k, cx=(camera.cx - x0) * k, cy=(camera.cy - y0) * k,
                width=size, height=size)


def jitter_bbox(rng: np.random.Generator, bbox: BBoxLike, *, scale: float = 0.1, shift: float = 0.1,
                image_size: tuple[int, int] | None = None, min_size: float = 2.0) -> np.ndarray:
  """A randomly perturbed box, like a detector's output around a ground-truth box.

  Width and height are multiplied by exp(U(-scale, scale)) independently, and the centre moves by
  U(-shift, shift) times the box's own width (height) in x (y): the relative errors of a good detector
  (IoU with the original box is >= ~0.7 for the defaults).

  Args:
    rng: the random generator.
    bbox: (x1, y1, x2, y2).
    scale: maximum log-scale change of width and height.
    shift: maximum centre shift as a fraction of the box's width/height.
    image_size: optional (height, width); the jittered box is then clipped to the image (a detection
      never leaves the photo) while keeping at least `min_size` pixels per side.
    min_size: minimum width and height of the result in pixels.

  Returns:
    (4,) float64 jittered box.
  """
  x1, y1, x2, y2 = _check_bbox(bbox)
  if scale < 0 or shift < 0:
    raise ImageError(f"jitter scale and shift must be >= 0, got scale={scale}, shift={shift}")
  w, h = x2 - x1, y2 - y1
  cx, cy = 0.5 * (x1 + x2), 0.5 * (y1 + y2)
  ds = rng.uniform(-scale, scale, size=2) if scale > 0 else np.zeros(2)
  dc = rng.uniform(-shift, shift, size=2) if shift > 0 else np.zeros(2)
  cx, cy = cx + dc[0] * w, cy + dc[1] * h
  w, h = max(w * math.exp(ds[0]), min_size), max(h * math.exp(ds[1]), min_size)
  out = np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
  if image_size is not None:
    height, width = image_size
    out[[0, 2]] = np.clip(out[[0, 2]], 0.0, float(width))
    out[[1, 3]] = np.clip(out[[1, 3]], 0.0, float(height))
    # Clipping may squeeze a box at the border below min_size: grow it back inwards.
    for lo, hi, lim in ((0, 2, float(width)), (1, 3, float(height))):
      if out[hi] - out[lo] < min_size:
        c = min(max(0.5 * (out[lo] + out[hi]), min_size / 2), lim - min_size / 2)
        out[lo], out[hi] = c - min_size / 2, c + min_size / 2
  return out


def box_iou(a: BBoxLike, b: BBoxLike) -> float:
  """Intersection over union of two boxes (x1, y1, x2, y2)."""
  a, b = _check_bbox(a, "box a"), _check_bbox(b, "box b")
  iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
  ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
  inter = iw * ih
  union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
  return float(inter / union) if union > 0 else 0.0
