"""Tests of disent_jax/image_io.py: every conversion against an expected array computed here, independently.

Images are generated in the test with PIL (PNG, JPEG with an EXIF orientation tag, 16-bit PNG, palette,
CMYK, ...). The error cases of `load_image` and `check_bbox` (missing, truncated, non-image files, bad
arrays, boxes outside the image) are in the bad-input catalogue, tests/test_bad_inputs.py.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from disent_jax import image_io
from disent_jax.datasets import crops

_RNG = np.random.default_rng(0)
_RGB = _RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)
_ALPHA = _RNG.integers(0, 256, (5, 7), dtype=np.uint8)
_ALPHA[0, 0], _ALPHA[0, 1] = 0, 255  # Both ends of the range, where compositing must be exact.


def _encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
  buf = io.BytesIO()
  img.save(buf, format=fmt, **kwargs)
  return buf.getvalue()


def _on_black(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
  """rgb * alpha / 255 rounded half up: compositing over black, in float64."""
  return np.floor(rgb.astype(np.float64) * alpha[..., None].astype(np.float64) / 255.0 + 0.5).astype(np.uint8)


def _check(out: np.ndarray, expected: np.ndarray) -> None:
  assert out.dtype == np.uint8 and out.shape == expected.shape and out.flags.c_contiguous
  np.testing.assert_array_equal(out, expected)


# ---------------------------------------------------------------------------------------------------------
# Sources.


def test_path_str_bytes_pil_and_array_give_the_same_pixels(tmp_path):
  path = tmp_path / "rgb.png"
  Image.fromarray(_RGB).save(path)
  for source in (path, str(path), path.read_bytes(), bytearray(path.read_bytes()), Image.open(path), _RGB):
    _check(image_io.load_image(source), _RGB)


def test_result_is_a_copy():
  before = _RGB.copy()
  out = image_io.load_image(_RGB)
  out[...] = 0
  assert not np.shares_memory(out, _RGB)
  np.testing.assert_array_equal(_RGB, before)


def test_tiny_1x1_image(tmp_path):
  path = tmp_path / "one.png"
  Image.fromarray(np.array([[[10, 20, 30]]], np.uint8)).save(path)
  _check(image_io.load_image(path), np.array([[[10, 20, 30]]], np.uint8))
  _check(image_io.load_image(np.array([[0.5]])), np.full((1, 1, 3), 128, np.uint8))


# ---------------------------------------------------------------------------------------------------------
# Modes.


def test_grayscale_png_is_repeated_to_three_channels():
  grey = _RGB[..., 0]
  _check(image_io.load_image(_encode(Image.fromarray(grey), "PNG")), np.repeat(grey[..., None], 3, axis=2))


def test_one_bit_png_gives_0_and_255():
  bits = _RGB[..., 0] > 127
  expected = np.repeat(np.where(bits, 255, 0).astype(np.uint8)[..., None], 3, axis=2)
  _check(image_io.load_image(_encode(Image.fromarray(bits), "PNG")), expected)


def test_rgba_png_is_composited_on_black():
  rgba = np.dstack([_RGB, _ALPHA])
  out = image_io.load_image(_encode(Image.fromarray(rgba, "RGBA"), "PNG"))
  _check(out, _on_black(_RGB, _ALPHA))
  assert (out[0, 0] == 0).all() and (out[0, 1] == _RGB[0, 1]).all()  # alpha 0 -> black, 255 -> unchanged


def test_grey_alpha_png_is_composited_on_black():
  grey = _RGB[..., 1]
  out = image_io.load_image(_encode(Image.fromarray(np.dstack([grey, _ALPHA]), "LA"), "PNG"))
  _check(out, np.repeat(_on_black(grey[..., None], _ALPHA), 3, axis=2))


def test_palette_png_with_and_without_transparency():
  index = _RNG.integers(0, 4, (5, 7), dtype=np.uint8)
  colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [200, 100, 50]], np.uint8)
  img = Image.fromarray(index, "P")
  img.putpalette(colours.ravel().tolist())
  _check(image_io.load_image(_encode(img, "PNG")), colours[index])
  # Palette entry 2 transparent (tRNS): its pixels become black, the others keep their colour.
  out = image_io.load_image(_encode(img, "PNG", transparency=2))
  expected = colours[index].copy()
  expected[index == 2] = 0
  _check(out, expected)


def test_16_bit_png_is_scaled_to_8_bit():
  values = np.array([[0, 1, 128, 129, 257, 32767], [32768, 40000, 65278, 65279, 65534, 65535]], np.uint16)
  data = _encode(Image.fromarray(values), "PNG")
  assert Image.open(io.BytesIO(data)).mode.startswith("I")  # Really a 16-bit file.
  expected = np.floor(values.astype(np.float64) * 255.0 / 65535.0 + 0.5).astype(np.uint8)
  assert expected.tolist() == [[0, 0, 0, 1, 1, 127], [128, 156, 254, 254, 255, 255]]
  _check(image_io.load_image(data), np.repeat(expected[..., None], 3, axis=2))
  # The same scaling for a uint16 array (grey or RGB).
  _check(image_io.load_image(values), np.repeat(expected[..., None], 3, axis=2))
  rgb16 = np.dstack([values, values[::-1], values[:, ::-1]])
  exp_rgb = np.floor(rgb16.astype(np.float64) * 255.0 / 65535.0 + 0.5).astype(np.uint8)
  _check(image_io.load_image(rgb16), exp_rgb)
  _check(image_io.load_image(rgb16.astype(">u2")), exp_rgb)  # Big-endian arrays too.


def test_cmyk_jpeg_and_image_are_converted():
  # Pure inks, where every CMYK -> RGB formula agrees: white, black, cyan, magenta, yellow.
  cmyk = np.array([[[0, 0, 0, 0], [0, 0, 0, 255], [255, 0, 0, 0], [0, 255, 0, 0], [0, 0, 255, 0]]],
                  np.uint8)
  expected = np.array([[[255, 255, 255], [0, 0, 0], [0, 255, 255], [255, 0, 255], [255, 255, 0]]], np.uint8)
  _check(image_io.load_image(Image.fromarray(cmyk, "CMYK")), expected)
  big = np.repeat(np.repeat(cmyk, 16, axis=0), 16, axis=1)  # Flat 16x16 blocks survive JPEG.
  out = image_io.load_image(_encode(Image.fromarray(big, "CMYK"), "JPEG", quality=95))
  centres = out[8, 8::16].astype(int)
  assert np.abs(centres - expected[0]).max() <= 12, centres


def test_ycbcr_and_hsv_images_are_converted():
  img = Image.fromarray(_RGB)
  for mode in ("YCbCr", "HSV"):
    out = image_io.load_image(img.convert(mode)).astype(int)
    assert np.abs(out - _RGB.astype(int)).max() <= 8, mode  # Lossy round trips through 8-bit spaces.


# ---------------------------------------------------------------------------------------------------------
# EXIF orientation.


def _blocks() -> np.ndarray:
  """A 2x3 grid of flat 16x16 colour blocks: asymmetric, so every rotation/flip is distinguishable."""
  colours = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]], [[255, 255, 0], [0, 0, 0], [255, 255, 255]]],
                     np.uint8)
  return np.repeat(np.repeat(colours, 16, axis=0), 16, axis=1)


@pytest.mark.parametrize("orientation,transform", [
    (1, lambda a: a),
    (2, np.fliplr),
    (3, lambda a: np.rot90(a, 2)),
    (6, lambda a: np.rot90(a, -1)),  # stored rotated: display = 90 degrees clockwise
    (8, lambda a: np.rot90(a, 1)),  # display = 90 degrees counter-clockwise
])
def test_exif_orientation_of_a_jpeg_is_applied(tmp_path, orientation, transform):
  stored = _blocks()
  exif = Image.Exif()
  exif[0x0112] = orientation  # Orientation tag
  path = tmp_path / f"o{orientation}.jpg"
  Image.fromarray(stored).save(path, format="JPEG", quality=95, exif=exif)
  assert Image.open(path).getexif()[0x0112] == orientation
  out = image_io.load_image(path)
  expected = np.ascontiguousarray(transform(stored))
  assert out.shape == expected.shape
  # JPEG is lossy: compare the block centres, far from the block edges.
  centres = (slice(8, None, 16), slice(8, None, 16))
  assert np.abs(out[centres].astype(int) - expected[centres].astype(int)).max() <= 12


def test_exif_orientation_of_a_pil_image_is_applied():
  img = Image.fromarray(_blocks())
  exif = Image.Exif()
  exif[0x0112] = 6
  reopened = Image.open(io.BytesIO(_encode(img, "PNG", exif=exif)))
  _check(image_io.load_image(reopened), np.ascontiguousarray(np.rot90(_blocks(), -1)))


# ---------------------------------------------------------------------------------------------------------
# Arrays.


def test_float_arrays_in_unit_range_are_scaled():
  f = np.array([[0.0, 1.0, 0.5, 0.25], [1 / 510, 1 / 510 - 1e-9, 0.998, 0.999]])
  expected = np.floor(f * 255 + 0.5).astype(np.uint8)
  assert expected.tolist() == [[0, 255, 128, 64], [1, 0, 254, 255]]
  _check(image_io.load_image(f), np.repeat(expected[..., None], 3, axis=2))
  _check(image_io.load_image(np.dstack([f, f, f]).astype(np.float32)),
         np.floor(np.dstack([f, f, f]).astype(np.float32).astype(np.float64) * 255 + 0.5).astype(np.uint8))


def test_array_channel_layouts():
  grey = _RGB[..., 2]
  _check(image_io.load_image(grey[..., None]), np.repeat(grey[..., None], 3, axis=2))
  _check(image_io.load_image(np.dstack([grey, _ALPHA])), np.repeat(_on_black(grey[..., None], _ALPHA), 3, 2))
  _check(image_io.load_image(np.dstack([_RGB, _ALPHA])), _on_black(_RGB, _ALPHA))
  bits = _RGB[..., 0] > 100
  _check(image_io.load_image(bits), np.repeat(np.where(bits, 255, 0).astype(np.uint8)[..., None], 3, 2))
  # Non-contiguous views are fine.
  _check(image_io.load_image(_RGB[:, ::-2]), np.ascontiguousarray(_RGB[:, ::-2]))


def test_float_pil_image_follows_the_array_rule():
  f = np.array([[0.0, 0.5], [0.75, 1.0]], np.float32)
  _check(image_io.load_image(Image.fromarray(f, "F")),
         np.repeat(np.floor(f.astype(np.float64) * 255 + 0.5).astype(np.uint8)[..., None], 3, axis=2))


# ---------------------------------------------------------------------------------------------------------
# check_bbox.


def test_check_bbox_keeps_boxes_partly_outside_the_image():
  for box in ([-5.0, -5.0, 3.0, 4.0], [5.5, 1.0, 12.0, 9.0], [-100, -100, 100, 100], [0, 0, 7, 5]):
    out = image_io.check_bbox(box, (5, 7, 3), source="img.jpg#0")
    assert out.dtype == np.float64 and out.shape == (4,)
    np.testing.assert_array_equal(out, np.asarray(box, np.float64))  # Kept, not clipped.
  # (H, W) shapes work too, and the crop of a partly outside box pads with zeros, as documented.
  box = image_io.check_bbox((-2, -2, 2, 2), (5, 7), source="x")
  crop = crops.square_crop(np.full((5, 7, 3), 200, np.uint8), box, 4)
  assert (crop[:2, :2] == 0).all() and (crop[2:, 2:] == 200).all()


def test_check_bbox_accepts_tuples_arrays_and_numpy_shapes():
  shape = np.zeros((5, 7, 3)).shape
  for box in ((1, 1, 2, 2), np.array([1, 1, 2, 2], np.int32), [np.float32(1), 1, 2, 2.0]):
    np.testing.assert_array_equal(image_io.check_bbox(box, shape, source="s"), [1, 1, 2, 2])
  np.testing.assert_array_equal(image_io.check_bbox([0, 0, 1, 1], (np.int64(1), np.int64(1)), source="s"),
                                [0, 0, 1, 1])

