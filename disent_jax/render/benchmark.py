"""Throughput of the render backends and of full scene composition (single process).

  python -m disent_jax.render.benchmark [--sizes 64 224] [--seconds 2] [--lp-threads 1]

Prints images/s for: GL render, ray-cast render, and `compose_scene` (background, colours, light, 30%
occluders) with each backend, on a chair-like test mesh of about 2,100 faces, at random poses.
"""

from __future__ import annotations

import argparse
import time
from typing import Callable, Sequence

import numpy as np
import trimesh

from disent_jax.render.camera import Camera
from disent_jax.render.raycast import RaycastRenderer
from disent_jax.render.scene import compose_scene, random_rotation, random_translation


def demo_mesh() -> trimesh.Trimesh:
  """A chair-like mesh (seat, back, 4 legs, a cushion), normalised to radius 0.5 about the origin."""
  parts = [trimesh.creation.box((0.8, 0.08, 0.8)), trimesh.creation.box((0.8, 0.8, 0.08))]
  parts[1].apply_translation((0, -0.4, 0.36))
  for x in (-0.35, 0.35):
    for z in (-0.35, 0.35):
      leg = trimesh.creation.cylinder(radius=0.04, height=0.7, sections=48)
      leg.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, (1, 0, 0)))
      leg.apply_translation((x, 0.39, z))
      parts.append(leg)
  cushion = trimesh.creation.icosphere(subdivisions=3, radius=0.35)
  cushion.vertices *= (1.0, 0.12, 1.0)
  cushion.apply_translation((0, -0.06, 0))
  parts.append(cushion)
  m = trimesh.util.concatenate(parts)
  v = np.asarray(m.vertices)
  c = (v.min(0) + v.max(0)) / 2
  return trimesh.Trimesh((v - c) * (0.5 / np.sqrt(((v - c) ** 2).sum(1)).max()), m.faces, process=False)


def _rate(fn: Callable[[int], None], seconds: float) -> float:
  """Calls fn(i) for about `seconds` (after one warm-up call) and returns calls per second."""
  fn(0)
  n, t0 = 0, time.perf_counter()
  while time.perf_counter() - t0 < seconds:
    fn(n)
    n += 1
  return n / (time.perf_counter() - t0)


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
  """Runs the benchmark, prints one line per measurement and returns {name: images/s}."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sizes", type=int, nargs="+", default=[64, 224])
  parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
  parser.add_argument("--lp-threads", type=int, default=None,
                      help="llvmpipe threads (LP_NUM_THREADS); default: the environment's / one per core")
  args = parser.parse_args(argv)

  mesh = demo_mesh()
  renderers = {"raycast": RaycastRenderer()}
  try:
    from disent_jax.render.gl import GLRenderer  # pylint: disable=import-outside-toplevel
    renderers["gl"] = GLRenderer(lp_threads=args.lp_threads)
    print(f"GL: {renderers['gl'].info.get('GL_RENDERER')}")
  except Exception as e:  # pylint: disable=broad-except
    print(f"GL unavailable ({e}); ray casting only")
  print(f"mesh: {len(mesh.faces)} faces")
  results = {}
  for size in args.sizes:
    cam = Camera.default(size)
    rng = np.random.default_rng(0)
    poses = [(random_rotation(rng), random_translation(rng, cam, z_range=(2.0, 2.6))) for _ in range(64)]
    for name, r in sorted(renderers.items()):
      def render(i, r=r):
        R, t = poses[i % len(poses)]
        r.render(mesh, R, t, cam)

      def compose(i, r=r, rng=np.random.default_rng(1)):
        R, t = poses[i % len(poses)]
        compose_scene(rng, mesh, R, t, cam, r)

      for what, fn in (("render", render), ("compose", compose)):
        key = f"{what}/{name}/{size}px"
        results[key] = _rate(fn, args.seconds)
        print(f"{key:24s} {results[key]:8.0f} img/s", flush=True)
  return results


if __name__ == "__main__":
  main()
