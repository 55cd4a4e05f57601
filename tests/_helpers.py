"""Plain helpers shared by several test modules (fixtures live in conftest.py).

Test modules import it as `import _helpers`: tests/ has no __init__.py, so pytest puts it on sys.path.
"""

from __future__ import annotations

import pathlib

import numpy as np

from disent_jax.datasets import synthetic


def box_mesh(extent, offset) -> tuple[np.ndarray, np.ndarray]:
  """An axis-aligned box (8 vertices, 12 triangles) of size `extent` centred at `offset`."""
  corners = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)])
  v = corners * np.asarray(extent) + np.asarray(offset)
  f = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1], [2, 3, 7], [2, 7, 6],
                [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])
  return v, f


def write_off(path: pathlib.Path, v: np.ndarray, f: np.ndarray, *, decimals: int = 5, newline: str = "\n",
              one_line_header: bool = False) -> None:
  """Writes a triangle mesh as an OFF file, creating its folder.

  Args:
    path: the file.
    v: (V, 3) vertices.
    f: (F, 3) vertex indices of the triangles.
    decimals: digits after the point of the vertex coordinates.
    newline: the line ending, written after every line including the last ('\\r\\n' as in ModelNet).
    one_line_header: ModelNet's known quirk: the file starts with 'OFF<nv> <nf> 0' on one line.
  """
  path.parent.mkdir(parents=True, exist_ok=True)
  head = [f"OFF{len(v)} {len(f)} 0"] if one_line_header else ["OFF", f"{len(v)} {len(f)} 0"]
  lines = head + [f"{a:.{decimals}f} {b:.{decimals}f} {c:.{decimals}f}" for a, b, c in v]
  lines += [f"3 {a} {b} {c}" for a, b, c in f]
  path.write_text(newline.join(lines) + newline)


def tiny_synthetic_settings(*, seed: int, p_occlude: float, p_truncate: float) -> synthetic.SyntheticSettings:
  """Settings of a tiny synthetic dataset: 12/4/4 examples, 64 px renders, 32 px crops.

  It is rendered by ray casting (no GL context in the test process); callers make the occlusion and
  truncation flags frequent so that every branch appears among the 20 examples.

  Args:
    seed: the dataset seed.
    p_occlude: probability of an occluder.
    p_truncate: probability of truncation.

  Returns:
    The settings.
  """
  return synthetic.SyntheticSettings(num_train=12, num_validation=4, num_test=4, image_size=64,
                                     crop_size=32, seed=seed, p_occlude=p_occlude, p_truncate=p_truncate,
                                     backend="raycast")
