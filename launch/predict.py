"""Predict the CAD model and 6D pose of the object in one photo with a trained workdir.

  python -m launch.predict --workdir=runs/demo --image=photo.jpg [--bbox=x1,y1,x2,y2] [--out=overlay.png]
                           [--top_k=5] [--intrinsics=fx,fy,cx,cy] [--step=N]

Prints the `Prediction` as JSON on stdout (plus the overlay's path under "overlay") and writes the overlay
PNG (the retrieved model drawn at the predicted pose) to --out, default `<image stem>_prediction.png` in the
current directory. Bad input (missing file, unreadable image, empty or outside box, no checkpoint) ends
with a one-line `error: ...` and exit status 1, no traceback.
"""

from __future__ import annotations

import json
import os
import pathlib

from absl import app
from absl import flags
from absl import logging

from disent_jax import errors
from disent_jax import image_io

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir with Stage I + II checkpoints.")
_IMAGE = flags.DEFINE_string("image", None, "The photo (PNG, JPEG, ...).")
_BBOX = flags.DEFINE_string("bbox", None, "Object box x1,y1,x2,y2 in pixels (default: the whole image).")
_OUT = flags.DEFINE_string("out", None, "Overlay PNG (default: <image stem>_prediction.png here).")
_TOP_K = flags.DEFINE_integer("top_k", 5, "Alternative models and pose hypotheses.", lower_bound=1)
_INTRINSICS = flags.DEFINE_string("intrinsics", None,
                                  "fx,fy,cx,cy of the photo (cx = W/2 is the image centre) for an exact "
                                  "camera-frame translation; default: focal 1.25 x the longest side, "
                                  "principal point at the image centre (the synthetic renders' camera).")
_STEP = flags.DEFINE_integer("step", None, "Stage II checkpoint step (default: the latest).")
# Required flags are checked in `main`, not with flags.mark_flags_as_required: a global validator would make
# every later parse of absl's FLAGS in the same process (tests, notebooks) fail without them.


def _numbers(value: str, n: int, flag: str, form: str) -> list[float]:
  """`n` comma-separated numbers, or a DisentError naming the flag."""
  try:
    out = [float(v) for v in value.split(",")]
  except ValueError:
    out = []
  if len(out) != n:
    raise errors.ImageError(f"--{flag} must be {n} numbers {form}, got {value!r}")
  return out


def _write_png(image, path: str) -> None:
  from PIL import Image  # pylint: disable=import-outside-toplevel
  path = os.path.abspath(path)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".tmp")
  Image.fromarray(image).save(tmp, format="PNG")
  os.replace(tmp, path)


def run(workdir: str, image: str, *, bbox: str | None = None, out: str | None = None, top_k: int = 5,
        intrinsics: str | None = None, step: int | None = None) -> dict:
  """Predicts, writes the overlay, and returns the JSON-ready prediction (with its 'overlay' path).

  Args:
    workdir: the training workdir.
    image: path of the photo.
    bbox: 'x1,y1,x2,y2' or None.
    out: overlay PNG path, or None for `<image stem>_prediction.png` in the current directory.
    top_k: alternatives and pose hypotheses.
    intrinsics: 'fx,fy,cx,cy' or None.
    step: Stage II checkpoint step, or None for the latest.

  Returns:
    `Prediction.to_dict()` plus 'overlay'.

  Raises:
    DisentError: bad input (the message says which and why).
  """
  from disent_jax import predictor as predictor_lib  # pylint: disable=import-outside-toplevel
  box = None if bbox is None else _numbers(bbox, 4, "bbox", "x1,y1,x2,y2")
  k = None
  if intrinsics is not None:
    fx, fy, cx, cy = _numbers(intrinsics, 4, "intrinsics", "fx,fy,cx,cy")
    k = [[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]]
  # The image and the box are checked before the (slow) restore, so a typo fails at once.
  if not os.path.isfile(image):
    raise errors.ImageError(f"{image}: no such file")
  rgb = image_io.load_image(image)
  if box is not None:
    image_io.check_bbox(box, rgb.shape, source=image)
  predictor = predictor_lib.Predictor.from_workdir(workdir, step=step, top_k=top_k)
  prediction = predictor.predict(image, box, intrinsics=k)
  out = out or f"{pathlib.Path(image).stem}_prediction.png"
  _write_png(predictor.overlay(image, prediction), out)
  result = prediction.to_dict()
  result["overlay"] = os.path.abspath(out)
  return result


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    # The JSON goes to stdout; keep stderr to warnings (checkpoint restores log a dozen INFO lines).
    logging.set_verbosity(logging.WARNING)
  missing = [f"--{f.name}" for f in (_WORKDIR, _IMAGE) if not f.value]
  if missing:
    raise app.UsageError(f"missing required flag(s): {', '.join(missing)}")
  try:
    result = run(_WORKDIR.value, _IMAGE.value, bbox=_BBOX.value, out=_OUT.value, top_k=_TOP_K.value,
                 intrinsics=_INTRINSICS.value, step=_STEP.value)
  except errors.DisentError as e:  # bad input: a clear message, not a traceback
    raise SystemExit(f"error: {e}") from e
  print(json.dumps(result, indent=1))


if __name__ == "__main__":
  app.run(main)
