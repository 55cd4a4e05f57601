"""Writes a PNG contact sheet of dataset crops with their ground-truth model outlines drawn over them.

  python -m launch.dataset_sheet --data_dir=DIR --split=train --out=crops.png [--n=48]

DIR is a finished dataset directory (what `launch.prepare_synthetic` prints). Each tile is a stored crop
(scaled to --tile) with the annotated CAD model rendered at the annotated pose through the crop's camera
(`datasets.crops.crop_camera`: the full camera shifted to the crop square and scaled by its size) using
the `translation` label decoded with the box and K. A tile whose outline does not sit on the object shows
a convention bug in the labels, the crop or the camera. The caption gives the category/CAD index, the
azimuth/elevation in degrees and O/T flags (occluded, truncated).
"""

import math
import time

import numpy as np
from absl import app
from absl import flags
from absl import logging
from PIL import Image, ImageDraw

_DATA_DIR = flags.DEFINE_string("data_dir", None, "Dataset directory.", required=True)
_SPLIT = flags.DEFINE_string("split", "train", "Split to draw from.")
_OUT = flags.DEFINE_string("out", "crops.png", "Output PNG path.")
_N = flags.DEFINE_integer("n", 48, "Number of crops.", lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 0, "Which random crops.")
_TILE = flags.DEFINE_integer("tile", 128, "Tile size in pixels.", lower_bound=16)
_COLUMNS = flags.DEFINE_integer("columns", 8, "Tiles per row.", lower_bound=1)
_CAD_SOURCE = flags.DEFINE_string(
    "cad_source", None, "CAD database of the models; default: the one in the dataset's metadata.")
_BACKEND = flags.DEFINE_enum("backend", "auto", ["auto", "gl", "raycast"], "Renderer for the outlines.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  # Heavy imports after flag parsing, so --help is instant.
  import jax  # pylint: disable=import-outside-toplevel
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  from disent_jax import geometry  # pylint: disable=import-outside-toplevel
  from disent_jax import render  # pylint: disable=import-outside-toplevel
  from disent_jax.datasets import crops  # pylint: disable=import-outside-toplevel
  from disent_jax.datasets import synthetic  # pylint: disable=import-outside-toplevel
  from disent_jax.render import overlay as overlay_lib  # pylint: disable=import-outside-toplevel

  start = time.perf_counter()
  builder = tfds.builder_from_directory(_DATA_DIR.value)
  cad_source = _CAD_SOURCE.value or (builder.info.metadata or {}).get("settings", {}).get("cad_source")
  if not cad_source:
    raise app.UsageError("the dataset's metadata names no CAD source; pass --cad_source")
  models = {(m.category, m.cad_index): m for m in synthetic.load_database(cad_source)}
  names = builder.info.features["category"].names
  src = builder.as_data_source(_SPLIT.value)
  rng = np.random.default_rng(_SEED.value)
  picks = np.sort(rng.choice(len(src), size=min(_N.value, len(src)), replace=False))
  renderer = render.make_renderer(_BACKEND.value)
  tile, cols = _TILE.value, _COLUMNS.value
  cap = 12
  rows = math.ceil(len(picks) / cols)
  sheet = Image.new("RGB", (cols * tile, rows * (tile + cap)), (255, 255, 255))
  draw = ImageDraw.Draw(sheet)
  for n, i in enumerate(picks):
    ex = src[int(i)]
    cat = names[ex["category"]]
    model = models.get((cat, int(ex["cad_index"])))
    if model is None:
      raise app.UsageError(f"{cad_source!r} has no model {cat}/{ex['cad_index']:02d}")
    full_h, full_w = ex["image"].shape[:2]
    cam = render.Camera.from_K(ex["intrinsics"], full_w, full_h)
    # The pose as training sees it: R from the quaternion, T decoded from the crop translation label.
    R = np.asarray(geometry.quat_to_matrix(ex["quaternion"]), np.float64)
    with jax.enable_x64(True):
      t = np.asarray(geometry.crop_to_camera_translation(np.float64(ex["translation"]),
                                                         np.float64(ex["bbox"]),
                                                         np.float64(ex["intrinsics"])))
    crop = np.asarray(Image.fromarray(ex["crop"]).resize((tile, tile), Image.Resampling.BILINEAR))
    over = overlay_lib.overlay(crop, model.mesh, R, t, crops.crop_camera(cam, ex["bbox"], tile),
                               alpha=0.25, renderer=renderer)
    x, y = (n % cols) * tile, (n // cols) * (tile + cap)
    sheet.paste(Image.fromarray(over), (x, y))
    az, el, _ = np.degrees(ex["viewpoint"])
    flags_txt = ("O" if ex["occluded"] else "") + ("T" if ex["truncated"] else "")
    draw.text((x + 2, y + tile), f"{cat[:6]}{int(ex['cad_index'])} {az:.0f}/{el:.0f} {flags_txt}",
              fill=(0, 0, 0))
  sheet.save(_OUT.value)
  logging.info("drew %d crops in %.1f s", len(picks), time.perf_counter() - start)
  print(f"wrote {_OUT.value} ({len(picks)} crops of {_DATA_DIR.value} {_SPLIT.value})")


if __name__ == "__main__":
  app.run(main)
