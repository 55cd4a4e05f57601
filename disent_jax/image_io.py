"""Loading images as (H, W, 3) uint8 RGB arrays, and checking object boxes against them.

`load_image` is the one place where photos (Pascal3D+/ImageNet JPEGs, user images for inference) become
arrays, so every odd format is turned into the same thing here:

  * sources: a path (str / os.PathLike), the encoded file as bytes, a PIL image, or a numpy array;
  * EXIF orientation is applied (`ImageOps.exif_transpose`), so a phone photo comes out the way viewers
    show it (and the way boxes drawn on it in any viewer are meant);
  * grey ('1', 'L', 'I;16', ...) is repeated to 3 channels; palette images are expanded; CMYK, YCbCr, LAB
    and HSV are converted to RGB by Pillow;
  * alpha (RGBA, LA, PA, palette transparency, (H, W, 2) and (H, W, 4) arrays) is composited ON BLACK,
    rgb * alpha / 255: the crops pad outside the image with zeros (black), so a transparent pixel reads
    the same as "no image there";
  * 16 bit (PIL 'I;16*' / 'I' images with values in 0..65535, uint16 arrays) is scaled to 8 bit by
    round(x * 255 / 65535); float arrays (and PIL 'F' images) must lie in [0, 1] and are scaled by
    round(x * 255); bool arrays give 0 / 255.

Every problem raises `ImageError` with a message '<source>: <problem>': a missing or unreadable file, a file
that is not an image or is truncated, a zero-size image, an array of a bad shape or dtype, NaN/inf or
out-of-range values.

`check_bbox` validates an object box (x1, y1, x2, y2) in the project's continuous pixel coordinates
(`disent_jax.datasets.crops`) against an image size: a box that sticks out of the image is kept as it is
(`crops.square_crop` pads with zeros), but a non-finite box, an empty one, or one entirely outside the image
is an error.
"""

from __future__ import annotations

import io
import os
from typing import Sequence

import numpy as np
from PIL import Image, ImageOps

from disent_jax.datasets import crops
from disent_jax.errors import ImageError

PathLike = str | os.PathLike
ImageLike = PathLike | bytes | bytearray | memoryview | Image.Image | np.ndarray

# Pillow modes whose samples are 16-bit (or wider) integers: scaled to 8 bit.
_WIDE_INT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")


def load_image(image: ImageLike, *, name: str | None = None) -> np.ndarray:
  """Loads an image as (H, W, 3) uint8 RGB (see the module docstring for the conversions).

  Args:
    image: a path, the encoded file's bytes, a PIL image, or a numpy array (H, W), (H, W, 1),
      (H, W, 2) (grey + alpha), (H, W, 3) or (H, W, 4) (RGBA) of dtype uint8, uint16, bool or float
      (values in [0, 1]).
    name: what to call the image in error messages; default: the path, `image.filename` of a PIL image
      read from a file, or '<bytes>' / '<PIL image>' / '<array>'.

  Returns:
    A new C-contiguous (H, W, 3) uint8 array.

  Raises:
    ImageError: the message names the source and the problem.
  """
  if isinstance(image, np.ndarray):
    return _from_array(image, name or "<array>")
  if isinstance(image, Image.Image):
    source = name or getattr(image, "filename", "") or "<PIL image>"
    return _from_pil(image, source)
  if isinstance(image, (bytes, bytearray, memoryview)):
    source = name or "<bytes>"
    data = bytes(image)
    if not data:
      raise ImageError(f"{source}: empty data (0 bytes)")
    return _from_pil(_open(io.BytesIO(data), source), source)
  if isinstance(image, (str, os.PathLike)):
    path = os.fspath(image)
    source = name or path
    if not os.path.exists(path):
      raise ImageError(f"{source}: no such image file")
    if not os.path.isfile(path):
      raise ImageError(f"{source}: not a regular file")
    if os.path.getsize(path) == 0:
      raise ImageError(f"{source}: empty file (0 bytes)")
    try:
      with open(path, "rb") as f:
        data = f.read()
    except OSError as e:
      raise ImageError(f"{source}: cannot read image file ({e.strerror or e})") from e
    return _from_pil(_open(io.BytesIO(data), source), source)
  raise ImageError(f"{name or '<image>'}: cannot load an image from a {type(image).__name__} (expected a "
                   "path, bytes, a PIL image or a numpy array)")


def check_bbox(bbox: Sequence[float] | np.ndarray, image_shape: Sequence[int], *, source: str) -> np.ndarray:
  """Checks an object box against its image; a box partly outside the image is kept, not clipped.

  Args:
    bbox: (x1, y1, x2, y2) in continuous pixel coordinates (pixel column i spans [i, i + 1)).
    image_shape: the image's (H, W) or (H, W, C), e.g. `load_image(...).shape`.
    source: what the box belongs to (an annotation file and object), named in error messages.

  Returns:
    The box as (4,) float64, unchanged.

  Raises:
    ImageError: non-finite or malformed box, zero area (x2 <= x1 or y2 <= y1), no overlap with the image,
      or a bad image shape; the message names `source` and the box.
  """
  try:
    shape = tuple(image_shape)
    ok = len(shape) in (2, 3) and all(not isinstance(d, bool) and int(d) == d and d >= 1 for d in shape[:2])
  except (TypeError, ValueError, OverflowError):
    shape, ok = image_shape, False
  if not ok:
    raise ImageError(f"{source}: bad image shape {shape} for the bbox check (expected (H, W) or (H, W, C) "
                     "with H, W >= 1)")
  height, width = int(shape[0]), int(shape[1])
  # Shape, finiteness and positive area: the crops' own check, so boxes are judged the same everywhere.
  b = crops._check_bbox(bbox, f"{source}: bbox")  # pylint: disable=protected-access
  x1, y1, x2, y2 = b
  # Sharing only an edge with the image (x2 == 0) leaves no pixel of the object in it.
  if x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
    raise ImageError(f"{source}: bbox {tuple(b.tolist())} lies entirely outside the {width}x{height} image "
                     f"(x must overlap [0, {width}], y [0, {height}])")
  return b


# ---------------------------------------------------------------------------------------------------------
# Helpers.


def _open(stream: io.BytesIO, source: str) -> Image.Image:
  """Decodes an image fully (so truncation shows here, not later), as ImageError on any failure."""
  try:
    img = Image.open(stream)
    img.load()
  except Image.DecompressionBombError as e:
    raise ImageError(f"{source}: image too large ({e})") from e
  except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, struct.error... on bad data.
    if isinstance(e, Image.UnidentifiedImageError):
      raise ImageError(f"{source}: not an image file (or an unsupported format)") from e
    raise ImageError(f"{source}: cannot decode image, truncated or corrupt ({type(e).__name__}: "
                     f"{e})") from e
  return img


def _from_pil(img: Image.Image, source: str) -> np.ndarray:
  """RGB uint8 of a PIL image: EXIF orientation, then mode conversions (module docstring)."""
  try:
    img.load()
  except Exception as e:  # A lazily opened PIL image from the caller may still fail to decode.
    raise ImageError(f"{source}: cannot decode image ({type(e).__name__}: {e})") from e
  if img.width < 1 or img.height < 1:
    raise ImageError(f"{source}: zero-size image ({img.width}x{img.height})")
  try:
    img = ImageOps.exif_transpose(img)
  except Exception as e:  # Malformed EXIF blocks make Pillow raise assorted errors.
    raise ImageError(f"{source}: cannot apply the EXIF orientation ({type(e).__name__}: {e})") from e
  mode = img.mode
  try:
    if mode in _WIDE_INT_MODES:
      return _from_array(np.asarray(img), source, wide=True)
    if mode == "F":
      return _from_array(np.asarray(img), source)
    if mode == "P":
      # Palette transparency (tRNS) becomes alpha; without it the palette colours are all there is.
      img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode == "La":  # Premultiplied alpha: Pillow converts it to straight alpha only within LA.
      img = img.convert("LA")
    elif mode in ("RGBa", "PA"):
      img = img.convert("RGBA")
    elif mode == "1":
      img = img.convert("L")
    elif mode not in ("L", "LA", "RGB", "RGBA"):
      img = img.convert("RGB")  # CMYK, YCbCr, LAB, HSV, RGBX, ...
    arr = np.asarray(img)
  except ImageError:
    raise
  except Exception as e:
    raise ImageError(f"{source}: cannot convert {mode} image to RGB ({type(e).__name__}: {e})") from e
  return _from_array(arr, source)


def _from_array(arr: np.ndarray, source: str, *, wide: bool = False) -> np.ndarray:
  """RGB uint8 of an (H, W[, C]) array (C = 1 grey, 2 grey + alpha, 3 RGB, 4 RGBA)."""
  a = np.asarray(arr)
  if a.ndim == 2:
    a = a[..., None]
  if a.ndim != 3 or a.shape[2] not in (1, 2, 3, 4):
    raise ImageError(f"{source}: image array has shape {a.shape}; expected (H, W), (H, W, 1), (H, W, 2), "
                     "(H, W, 3) or (H, W, 4)")
  if a.shape[0] < 1 or a.shape[1] < 1:
    raise ImageError(f"{source}: zero-size image (shape {a.shape})")
  a = _to_uint8(a, source, wide)
  alpha = None
  if a.shape[2] in (2, 4):
    a, alpha = a[..., :-1], a[..., -1:]
  if a.shape[2] == 1:
    a = np.repeat(a, 3, axis=2)
  if alpha is not None:
    # Composite on black: rgb * alpha / 255, rounded half up in integers (exact for alpha 0 and 255).
    a = ((a.astype(np.uint32) * alpha + 127) // 255).astype(np.uint8)
  return np.array(a, dtype=np.uint8, order="C", copy=True)


def _to_uint8(a: np.ndarray, source: str, wide: bool) -> np.ndarray:
  """The array's samples as uint8 (dtype rules in the module docstring)."""
  if a.dtype == np.uint8:
    return a
  if a.dtype == np.bool_:
    return a.astype(np.uint8) * 255
  # Any byte order: Pillow's 'I;16B' gives big-endian '>u2' arrays, which are not == np.uint16.
  if (a.dtype.kind == "u" and a.dtype.itemsize == 2) or (wide and a.dtype.kind in "iu"):
    lo, hi = int(a.min()), int(a.max())
    if lo < 0 or hi > 65535:
      raise ImageError(f"{source}: 16-bit image values must lie in [0, 65535], got [{lo}, {hi}]")
    return ((a.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
  if np.issubdtype(a.dtype, np.floating):
    f = a.astype(np.float64)
    if not np.isfinite(f).all():
      raise ImageError(f"{source}: float image has {int(np.size(f) - np.isfinite(f).sum())} NaN/inf values")
    lo, hi = float(f.min()), float(f.max())
    if lo < 0.0 or hi > 1.0:
      raise ImageError(f"{source}: float image values must lie in [0, 1], got [{lo:.6g}, {hi:.6g}]")
    return np.floor(f * 255.0 + 0.5).astype(np.uint8)
  raise ImageError(f"{source}: unsupported image dtype {a.dtype} (expected uint8, uint16, bool or float "
                   "in [0, 1])")
