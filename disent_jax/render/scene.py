"""Photo-like compositing of rendered CAD models for the synthetic image dataset.

`compose_scene` renders one object over a random procedural background with a random colour scheme and
light, optionally places a random occluder between the camera and the object, and reports what an
annotator of a real photo would: the visible mask and box, the amodal box, and occluded/truncated flags.
`random_rotation` and `random_translation` sample poses (the latter optionally truncated).

Everything draws from the `np.random.Generator` passed in, so a fixed seed gives the same image (both
backends are deterministic). The cost is dominated by numpy at 64 px: a few thousand images/s with GL.

Definitions used by the flags (all in this module's output):
  * bbox: amodal box of the projected vertices (unclipped), None if some vertex is behind the camera.
  * truncated: bbox extends more than `TRUNCATION_TOLERANCE_PX` beyond the image (or is None). Less
    than half a pixel beyond cannot hide any pixel centre, so it does not count.
  * visible_fraction: visible object pixels / object pixels inside the image without occluders.
  * occluded: visible_fraction < 1 - occlusion_threshold.
"""

from __future__ import annotations

import colorsys
import functools
import math
from typing import Any, Sequence

import numpy as np
import scipy.ndimage
import trimesh

from disent_jax.render import _cache
from disent_jax.render.base import Renderer, RenderResult
from disent_jax.render.camera import Camera, mask_bbox, projected_bbox

TRUNCATION_TOLERANCE_PX = 0.5
OBJECT_RADIUS = 0.5  # every normalised CAD model lies within this radius of its origin.


# ---------------------------------------------------------------------------------------------- poses


def random_rotation(rng: np.random.Generator) -> np.ndarray:
  """A uniformly random rotation matrix (3, 3) (Shoemake's method on a uniform quaternion)."""
  u1, u2, u3 = rng.random(3)
  a, b = math.sqrt(1 - u1), math.sqrt(u1)
  w, x, y, z = (b * math.cos(2 * math.pi * u3), a * math.sin(2 * math.pi * u2),
                a * math.cos(2 * math.pi * u2), b * math.sin(2 * math.pi * u3))
  return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                   [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                   [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def random_translation(rng: np.random.Generator, camera: Camera, *,
                       z_range: tuple[float, float] = (2.0, 3.0), p_truncate: float = 0.0,
                       truncation_range: tuple[float, float] = (0.15, 0.5),
                       radius: float = OBJECT_RADIUS) -> np.ndarray:
  """A random object position t (camera frame) that keeps the object in view, or truncates it.

  The object's bounding sphere (radius `radius` about its origin) projects to a disc of radius about
  rho = f * radius / Z. Untruncated, the disc centre is uniform over the positions that keep the disc
  inside the image. Truncated (probability `p_truncate`), one random side of the image cuts a fraction
  c ~ U(truncation_range) of the disc's diameter.

  Args:
    rng: the random generator.
    camera: the camera.
    z_range: depth range of the object origin.
    p_truncate: probability of a truncated placement.
    truncation_range: range of the cut fraction of the projected diameter.
    radius: the object's bounding radius.

  Returns:
    (3,) float64 t.
  """
  z = rng.uniform(*z_range)
  rho = (camera.fx * radius / z, camera.fy * radius / z)
  size = (camera.width, camera.height)
  uv = []
  for k in range(2):  # Centre range per axis; an object larger than the image stays centred.
    lo, hi = min(rho[k], size[k] / 2), max(size[k] - rho[k], size[k] / 2)
    uv.append(rng.uniform(lo, hi))
  if rng.random() < p_truncate:
    side = rng.integers(4)
    c = rng.uniform(*truncation_range)
    k = side % 2  # 0: left/right (u), 1: top/bottom (v)
    # Sides 0/1: the disc pokes out of the left/top edge by 2 rho c; sides 2/3: out of the right/bottom.
    if side < 2:
      uv[k] = -rho[k] + 2 * rho[k] * (1 - c)
    else:
      uv[k] = size[k] + rho[k] - 2 * rho[k] * (1 - c)
  return np.array([(uv[0] - camera.cx) * z / camera.fx, (uv[1] - camera.cy) * z / camera.fy, z])


# ----------------------------------------------------------------------------------------- backgrounds


@functools.lru_cache(maxsize=16)
def _grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
  """Pixel-centre coordinates in [0, 1): x (1, W), y (H, 1), for broadcasting."""
  x = ((np.arange(width) + 0.5) / width).astype(np.float32)[None, :]
  y = ((np.arange(height) + 0.5) / height).astype(np.float32)[:, None]
  return x, y


def random_color(rng: np.random.Generator, saturation: tuple[float, float] = (0.0, 0.9),
                 value: tuple[float, float] = (0.15, 1.0)) -> np.ndarray:
  """A random RGB colour (3,) float32 drawn uniformly in HSV boxes (any hue)."""
  return np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(*saturation), rng.uniform(*value)),
                  np.float32)


def _mix(a: np.ndarray, c0: np.ndarray, c1: np.ndarray) -> np.ndarray:
  """Per-pixel blend of two colours by a scalar field a (H, W) in [0, 1] -> (H, W, 3)."""
  return c0 + a[..., None] * (c1 - c0)


def _rotated(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
  """Image coordinate along a random direction (H, W), aspect-correct, roughly in [-1, 1]."""
  x, y = _grid(height, width)
  ang = rng.uniform(0, 2 * np.pi)
  aspect = width / height
  return (x - 0.5) * aspect * np.cos(ang) + (y - 0.5) * np.sin(ang)


@functools.lru_cache(maxsize=256)
def _interp_weights(n_out: int, n_grid: int) -> tuple[np.ndarray, np.ndarray]:
  """Left lattice node (n_out,) and smoothstep weight of the right node (n_out, 1) for each pixel centre."""
  pos = (np.arange(n_out) + 0.5) / n_out * n_grid
  i = np.minimum(pos.astype(np.int64), n_grid - 1)
  f = pos - i
  f = (f * f * (3 - 2 * f)).astype(np.float32)[:, None]  # Smoothstep hides the lattice's creases.
  i.flags.writeable = False
  f.flags.writeable = False
  return i, f


def value_noise(rng: np.random.Generator, height: int, width: int, *, base_cells: int = 3,
                octaves: int = 4, channels: int = 1, persistence: float = 0.5) -> np.ndarray:
  """Fractal value noise (Perlin-like), (H, W, channels) float32 normalised to [0, 1].

  Each octave is a random lattice interpolated to the pixels separably (rows, then columns) with
  gathers and elementwise arithmetic. No BLAS: OpenBLAS threads spin badly on our shared 2-core machines
  (a batched matmul version took 40 ms instead of 1 ms under load).
  """
  out = np.zeros((channels, height, width), np.float32)  # channel-first: gathers along contiguous rows
  amp = 1.0
  for k in range(octaves):
    cells = base_cells * 2 ** k
    gy = max(1, round(cells * height / max(height, width)))
    gx = max(1, round(cells * width / max(height, width)))
    lattice = rng.random((channels, gy + 1, gx + 1), dtype=np.float32)
    iy, fy = _interp_weights(height, gy)
    ix, fx = _interp_weights(width, gx)
    rows = lattice[:, iy] * (1 - fy) + lattice[:, iy + 1] * fy  # (c, H, gx + 1), small
    out += rows[:, :, ix] * (amp * (1 - fx[:, 0])) + rows[:, :, ix + 1] * (amp * fx[:, 0])
    amp *= persistence
  lo, hi = out.min(), out.max()
  return ((out - lo) / max(hi - lo, 1e-6)).transpose(1, 2, 0)


def _bg_gradient(rng, h, w):
  return _mix(np.clip(_rotated(rng, h, w) * rng.uniform(0.7, 1.5) + 0.5, 0, 1), random_color(rng),
              random_color(rng))


def _bg_noise(rng, h, w):
  if rng.random() < 0.3:  # Colourful: independent noise per channel, tinted.
    return value_noise(rng, h, w, base_cells=int(rng.integers(2, 6)), channels=3) * \
        random_color(rng, value=(0.6, 1.0))
  n = value_noise(rng, h, w, base_cells=int(rng.integers(2, 8)),
                  persistence=rng.uniform(0.35, 0.7))[..., 0]
  return _mix(n, random_color(rng), random_color(rng))


def _bg_stripes(rng, h, w):
  freq = rng.uniform(2, 12)
  s = 0.5 + 0.5 * np.sin(2 * np.pi * freq * _rotated(rng, h, w) + rng.uniform(0, 2 * np.pi))
  if rng.random() < 0.5:  # Hard-edged stripes (fabric, blinds) or soft waves.
    s = (s > 0.5).astype(np.float32)
  return _mix(s.astype(np.float32), random_color(rng), random_color(rng))


def _bg_checker(rng, h, w):
  x, y = _grid(h, w)
  ang = rng.uniform(0, np.pi / 2)
  cells = rng.uniform(3, 12)
  aspect = w / h
  xr = (x * aspect * np.cos(ang) + y * np.sin(ang)) * cells
  yr = (-x * aspect * np.sin(ang) + y * np.cos(ang)) * cells
  c = ((np.floor(xr) + np.floor(yr)) % 2).astype(np.float32)
  return _mix(c, random_color(rng), random_color(rng))


def _bg_clutter(rng, h, w):
  img = np.array((_bg_gradient if rng.random() < 0.5 else _bg_noise)(rng, h, w), np.float32)
  x, y = _grid(h, w)
  aspect = w / h
  for _ in range(int(rng.integers(3, 13))):
    cx, cy = rng.random(2)
    a, b = (float(v) for v in rng.uniform(0.03, 0.35, size=2))
    ang = rng.uniform(0, np.pi)
    dx, dy = (x - cx) * aspect, y - cy
    xr = dx * np.cos(ang) + dy * np.sin(ang)
    yr = -dx * np.sin(ang) + dy * np.cos(ang)
    kind = rng.integers(3)
    if kind == 0:  # ellipse
      m = (xr / a) ** 2 + (yr / b) ** 2 < 1
    elif kind == 1:  # rectangle
      m = (np.abs(xr) < a) & (np.abs(yr) < b)
    else:  # thin bar (poles, table edges)
      m = (np.abs(xr) < a * 3) & (np.abs(yr) < 0.01 + 0.02 * b)
    col = random_color(rng)
    # A linear shading ramp across the shape, so it reads as a lit solid rather than a flat sticker.
    shade = 1.0 + 0.3 * rng.uniform(-1, 1) * np.clip(yr[m] / max(b, 1e-3), -1, 1)
    img[m] = np.clip(col * shade[:, None].astype(np.float32), 0, 1)
  return img


_BACKGROUNDS = (_bg_gradient, _bg_noise, _bg_stripes, _bg_checker, _bg_clutter)
_BACKGROUND_P = np.array([0.15, 0.25, 0.1, 0.1, 0.4])


def random_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
  """A random procedural background (H, W, 3) float32 in [0, 1].

  One of: linear gradient, fractal value noise, stripes, checkerboard, or clutter (random ellipses,
  rectangles and bars over a gradient/noise), often with a faint noise texture on top.
  """
  img = _BACKGROUNDS[rng.choice(len(_BACKGROUNDS), p=_BACKGROUND_P)](rng, height, width)
  if rng.random() < 0.5:
    tex = value_noise(rng, height, width, base_cells=int(rng.integers(4, 16)), octaves=2)
    img = img + rng.uniform(0.03, 0.15) * (tex - 0.5)
  return np.clip(img, 0, 1).astype(np.float32)


# ------------------------------------------------------------------------------------ object appearance


def _part_labels(mesh: trimesh.Trimesh) -> np.ndarray:
  """Connected-component label per face (the parts of a CAD model: legs, seat, wheels...)."""
  if len(mesh.faces) == 0:
    return np.zeros(0, np.int64)
  return np.asarray(trimesh.graph.connected_component_labels(mesh.face_adjacency,
                                                             node_count=len(mesh.faces)))


_PARTS: _cache.PerMeshCache[np.ndarray] = _cache.PerMeshCache(_part_labels, max_size=512)


def random_appearance(rng: np.random.Generator, mesh: trimesh.Trimesh, *,
                      p_uniform: float = 0.3, p_parts: float = 0.35) -> dict[str, Any]:
  """Random colours for a mesh: one colour, per-face jitter, or a colour per connected part.

  Args:
    rng: the random generator.
    mesh: the mesh (only its faces and connectivity are used).
    p_uniform: probability of a single flat colour.
    p_parts: probability of one colour per connected component (else per-face jitter of one colour).

  Returns:
    {'color': (3,), 'face_colors': (F, 3) float32 or None}, ready as renderer keyword arguments.
  """
  base = random_color(rng)
  r = rng.random()
  if r < p_uniform:
    return {"color": base, "face_colors": None}
  n_faces = len(mesh.faces)
  if r < p_uniform + p_parts:
    labels = _PARTS.get(mesh)
    n_parts = int(labels.max()) + 1 if labels.size else 1
    # Parts mostly share a hue family (painted objects), sometimes are unrelated colours.
    if rng.random() < 0.5:
      part = np.stack([random_color(rng) for _ in range(n_parts)])
    else:
      part = np.clip(base * rng.uniform(0.6, 1.3, size=(n_parts, 1)), 0, 1)
    fc = part[labels] if labels.size else np.zeros((0, 3), np.float32)
  else:
    fc = np.broadcast_to(base, (n_faces, 3))
  jitter = rng.uniform(0.0, 0.12)
  fc = fc * (1 + jitter * rng.standard_normal((n_faces, 1)))  # brightness per face
  fc = fc + 0.5 * jitter * rng.standard_normal((n_faces, 3))  # and a little hue
  return {"color": base, "face_colors": np.clip(fc, 0, 1).astype(np.float32)}


def random_lighting(rng: np.random.Generator) -> dict[str, Any]:
  """Random directional light (towards the camera side), ambient and diffuse terms (renderer kwargs)."""
  d = rng.standard_normal(3)
  d /= max(np.linalg.norm(d), 1e-9)
  d[2] = -abs(d[2]) - rng.uniform(0.0, 1.0)  # light from the camera's side of the object, mostly
  d /= np.linalg.norm(d)
  ambient = rng.uniform(0.15, 0.55)
  diffuse = (1 - ambient) * rng.uniform(0.7, 1.3)
  return {"light_dir": d, "ambient": ambient, "diffuse": diffuse}


# ------------------------------------------------------------------------------------------ distractors


@functools.lru_cache(maxsize=1)
def builtin_distractors() -> tuple[trimesh.Trimesh, ...]:
  """Simple occluder shapes (box, plate, ball, cylinder, cone, capsule), each of radius 0.5 at the origin."""
  shapes = [
      trimesh.creation.box((1.0, 0.6, 0.8)),
      trimesh.creation.box((1.0, 1.0, 0.1)),
      trimesh.creation.icosphere(subdivisions=2),
      trimesh.creation.cylinder(radius=0.3, height=1.0, sections=16),
      trimesh.creation.cone(radius=0.5, height=1.0, sections=16),
      trimesh.creation.capsule(height=0.8, radius=0.25, count=(8, 8)),
  ]
  out = []
  for m in shapes:
    v = np.asarray(m.vertices, np.float64)
    c = (v.min(0) + v.max(0)) / 2
    r = np.sqrt(((v - c) ** 2).sum(1)).max()
    out.append(trimesh.Trimesh((v - c) * (OBJECT_RADIUS / r), m.faces, process=False))
  return tuple(out)


_RADII: _cache.PerMeshCache[float] = _cache.PerMeshCache(
    lambda m: float(np.sqrt((np.asarray(m.vertices) ** 2).sum(1).max())) if len(m.vertices) else 0.0)


def _render_distractor(rng: np.random.Generator, renderer: Renderer, dmesh: trimesh.Trimesh,
                       t: np.ndarray, camera: Camera, obj: RenderResult,
                       shading: dict[str, Any]) -> tuple[RenderResult, np.ndarray] | None:
  """Renders `dmesh` in front of the object, overlapping its silhouette; returns (render, true depth).

  The occluder's apparent size is a = U(0.35, 1) times the object's; it sits at depth z_d between the
  camera and the object's bounding sphere, centred near a random silhouette pixel. Its physical radius
  rho = 0.5 a z_d / t_z follows from a and z_d. Rendering the unscaled mesh at t / s (s = rho / r_mesh) gives
  the same image as the mesh scaled by s at t, with depths divided by s.
  """
  tz = float(t[2])
  room = tz - OBJECT_RADIUS - 0.02
  r_mesh = _RADII.get(dmesh)
  ys, xs = np.nonzero(obj.mask)
  if room <= 0.1 or r_mesh <= 0 or xs.size == 0:
    return None
  a = rng.uniform(0.35, 1.0)
  zd = rng.uniform(0.4, 0.95) * room / (1 + OBJECT_RADIUS * a / tz)
  rho = OBJECT_RADIUS * a * zd / tz
  k = rng.integers(xs.size)
  ang = rng.uniform(0, 2 * np.pi)
  f = 0.5 * (camera.fx + camera.fy)
  off = rng.uniform(0.2, 1.1) * f * rho / zd  # in pixels, relative to the occluder's projected radius
  u, v = xs[k] + 0.5 + off * np.cos(ang), ys[k] + 0.5 + off * np.sin(ang)
  pos = np.array([(u - camera.cx) * zd / camera.fx, (v - camera.cy) * zd / camera.fy, zd])
  s = rho / r_mesh
  res = renderer.render(dmesh, random_rotation(rng), pos / s, camera, color=random_color(rng), **shading)
  return res, res.depth * np.float32(s)


# ------------------------------------------------------------------------------------------ composition


def _block_mean(x: np.ndarray, s: int) -> np.ndarray:
  """Mean over non-overlapping s x s blocks of the first two axes."""
  if s == 1:
    return x.astype(np.float32)
  h, w = x.shape[0] // s, x.shape[1] // s
  return x.reshape(h, s, w, s, *x.shape[2:]).astype(np.float32).mean(axis=(1, 3))


def compose_scene(rng: np.random.Generator, mesh: trimesh.Trimesh, R: np.ndarray, t: np.ndarray,
                  camera: Camera, renderer: Renderer, *,
                  distractor_meshes: Sequence[trimesh.Trimesh] = (), p_occlude: float = 0.3,
                  occlusion_threshold: float = 0.05, min_visible: float = 0.3,
                  supersample: int = 1, background: np.ndarray | None = None,
                  p_blur: float = 0.3, max_noise: float = 0.03) -> dict[str, Any]:
  """Renders a photo-like image of `mesh` at pose (R, t).

  Args:
    rng: the random generator (the only source of randomness).
    mesh: the (normalised) object mesh.
    R: (3, 3) rotation, object -> camera.
    t: (3,) object origin in the camera frame (see `random_translation`).
    camera: intrinsics and image size.
    renderer: a `GLRenderer` or `RaycastRenderer` (create GL renderers inside worker processes).
    distractor_meshes: occluder shapes to draw from; empty for `builtin_distractors()`.
    p_occlude: probability of trying to place an occluder in front of the object.
    occlusion_threshold: the object counts as occluded when more than this fraction is hidden.
    min_visible: an occluder hiding more than 1 - min_visible of the object is re-placed (up to 3 tries),
      else dropped.
    supersample: render at this factor and average down (anti-aliased edges; the mask is coverage >= 1/2).
    background: optional (H, W, 3) image (uint8, or float in [0, 1]) to use instead of a procedural one.
    p_blur: probability of a slight Gaussian blur of the final image.
    max_noise: the pixel noise std is drawn from U(0, max_noise).

  Returns:
    A dict with
      image: (H, W, 3) uint8;
      mask: (H, W) bool, visible object pixels;
      amodal_mask: (H, W) bool, object pixels inside the image ignoring occluders;
      depth: (H, W) float32 object depth at `mask` pixels, 0 elsewhere;
      visible_bbox: (4,) float64 (x1, y1, x2, y2) of `mask`, or None when nothing is visible;
      bbox: (4,) float64 amodal box of the projected vertices, or None (vertex behind the camera);
      visible_fraction: float; occluded: bool; truncated: bool (see the module docstring);
      color, face_colors, light_dir, ambient, diffuse: the appearance used.
  """
  height, width = camera.height, camera.width
  s = int(supersample)
  cam = camera.scaled(s) if s > 1 else camera
  R = np.asarray(R, np.float64)
  t = np.asarray(t, np.float64).reshape(3)

  if background is None:
    bg = random_background(rng, height, width)
  else:
    bg = np.asarray(background)
    if bg.shape != (height, width, 3):
      raise ValueError(f"background must be {(height, width, 3)}, got {bg.shape}")
    bg = bg.astype(np.float32) / 255.0 if bg.dtype == np.uint8 else bg.astype(np.float32)

  appearance = random_appearance(rng, mesh)
  lighting = random_lighting(rng)
  obj = renderer.render(mesh, R, t, cam, **appearance, **lighting)
  obj_vis = obj.mask
  layer = obj.rgb
  alpha = obj.mask

  n_amodal = int(obj.mask.sum())
  if rng.random() < p_occlude and n_amodal:
    pool = tuple(distractor_meshes) or builtin_distractors()
    for _ in range(3):
      dmesh = pool[rng.integers(len(pool))]
      placed = _render_distractor(rng, renderer, dmesh, t, cam, obj, lighting)
      if placed is None:
        break
      dres, ddepth = placed
      # Per-pixel depth test: the occluder wins where it is closer (it may also stick out beside).
      in_front = dres.mask & (~obj.mask | (ddepth < obj.depth))
      vis = obj.mask & ~in_front
      if vis.sum() >= min_visible * n_amodal:
        obj_vis = vis
        layer = np.where(in_front[..., None], dres.rgb, obj.rgb)
        alpha = obj.mask | dres.mask
        break

  # Premultiplied downsampling: edges blend with the background (anti-aliasing when s > 1).
  a_lo = _block_mean(alpha, s)[..., None]
  img = bg * (1 - a_lo) + _block_mean(layer * alpha[..., None], s)
  cov = _block_mean(obj_vis, s)
  mask = cov >= 0.5
  amodal = _block_mean(obj.mask, s) >= 0.5
  dsum = _block_mean(np.where(obj_vis, obj.depth, 0), s)
  depth = np.where(mask, dsum / np.maximum(cov, 1e-6), 0).astype(np.float32)

  if rng.random() < p_blur:  # Mild defocus / motion softness of real photos.
    img = scipy.ndimage.gaussian_filter(img, sigma=(rng.uniform(0.3, 1.0),) * 2 + (0,))
  img = img + rng.uniform(0, max_noise) * rng.standard_normal(img.shape, dtype=np.float32)
  image = np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)

  try:
    bbox = projected_bbox(mesh.vertices, R, t, camera)
  except ValueError:  # Some vertex behind the camera: the object is cut by the image plane.
    bbox = None
  tol = TRUNCATION_TOLERANCE_PX
  truncated = bbox is None or bool(bbox[0] < -tol or bbox[1] < -tol or bbox[2] > width + tol or
                                   bbox[3] > height + tol)
  n_amodal_lo = int(amodal.sum())
  visible_fraction = float(mask.sum()) / n_amodal_lo if n_amodal_lo else 0.0
  return {
      "image": image,
      "mask": mask,
      "amodal_mask": amodal,
      "depth": depth,
      "visible_bbox": mask_bbox(mask),
      "bbox": bbox,
      "visible_fraction": visible_fraction,
      "occluded": bool(n_amodal_lo and visible_fraction < 1 - occlusion_threshold),
      "truncated": truncated,
      **appearance,
      **lighting,
  }
