"""Writes a PNG contact sheet of the procedural CAD zoo: one captioned rendering per model.

  python -m launch.zoo_sheet --out=zoo_sheet.png [--seed=0] [--size=160]
  python -m launch.zoo_sheet --out=chairs.png --categories=chair,sofa --azimuth=90

The view is a Pascal3D+ viewpoint (default azimuth 35 deg, elevation 20 deg: a 3/4 front view from slightly
above), so the sheet also shows the frame: fronts face -y, i.e. towards the viewer and to the left.
"""

import time

from absl import app
from absl import flags
from absl import logging

from disent_jax.cad import zoo
from disent_jax.categories import CATEGORIES

_OUT = flags.DEFINE_string("out", "zoo_sheet.png", "Output PNG path.")
_SEED = flags.DEFINE_integer("seed", 0, "Zoo seed.", lower_bound=0)
_SIZE = flags.DEFINE_integer("size", 160, "Tile size in pixels.", lower_bound=16)
_COLUMNS = flags.DEFINE_integer("columns", 10, "Tiles per row.", lower_bound=1)
_CATEGORIES = flags.DEFINE_list("categories", [], "Only these categories (default: all 12).")
_AZIMUTH = flags.DEFINE_float("azimuth", 35.0, "Pascal3D+ azimuth of the view, degrees.")
_ELEVATION = flags.DEFINE_float("elevation", 20.0, "Pascal3D+ elevation of the view, degrees.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  unknown = sorted(set(_CATEGORIES.value) - set(CATEGORIES))
  if unknown:
    raise app.UsageError(f"unknown categories {unknown}; expected some of {list(CATEGORIES)}")
  start = time.perf_counter()
  models = zoo.procedural_zoo(_SEED.value)
  built = time.perf_counter()
  if _CATEGORIES.value:
    models = [m for m in models if m.category in _CATEGORIES.value]
  zoo.contact_sheet(models, _OUT.value, size=_SIZE.value, columns=_COLUMNS.value,
                    azimuth_deg=_AZIMUTH.value, elevation_deg=_ELEVATION.value)
  logging.info("built the zoo (seed %d) in %.2f s, rendered %d models in %.2f s", _SEED.value,
               built - start, len(models), time.perf_counter() - built)
  print(f"wrote {_OUT.value} ({len(models)} models)")


if __name__ == "__main__":
  app.run(main)
