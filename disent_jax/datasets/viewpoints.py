"""Viewpoint samplers for synthetic renders: photo-like (Pascal3D+-like) or uniform over SO(3).

Photos of objects are not taken from random directions: the camera is usually at about the object's height
or a little above it, rarely below, and roughly upright. Pascal3D+'s annotations show this (elevation mostly
0-30 degrees, in-plane rotation theta within a few degrees, azimuth spread over the whole circle), so a
model trained on uniformly random rotations wastes capacity on views that never occur, and one trained only
on such views cannot be evaluated on arbitrary rotations. Both are offered:

  * 'photo'   azimuth ~ U[0, 2 pi), elevation ~ N(mean, std) truncated to [min, max], theta ~ N(0, std)
              truncated to +-limit (truncated by resampling, so there are no spikes at the limits).
  * 'uniform' R_cv Haar-distributed over SO(3); (azimuth, elevation, theta) are then read off R_cv.

Angles are Pascal3D+ viewpoints in radians (disent_jax/geometry.py), and R_cv is the object-to-camera
rotation of `geometry.viewpoint_to_camera_rotation`, the rotation of every pose label.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import numpy as np

from disent_jax import geometry
from disent_jax.errors import ConfigError

MODES = ("photo", "uniform")


@dataclasses.dataclass(frozen=True)
class ViewpointDistribution:
  """Parameters of the viewpoint sampler. Angles in degrees (readable in configs and dataset names).

  Attributes:
    mode: 'photo' or 'uniform' (see the module docstring).
    elevation_mean: mean of the elevation's normal, degrees.
    elevation_std: its standard deviation, degrees.
    elevation_min: lower truncation limit, degrees (>= -90).
    elevation_max: upper truncation limit, degrees (<= 90).
    theta_std: standard deviation of the in-plane rotation, degrees (0 for upright cameras).
    theta_limit: theta is truncated to [-theta_limit, theta_limit], degrees.
  """
  mode: str = "photo"
  elevation_mean: float = 10.0
  elevation_std: float = 12.0
  elevation_min: float = -15.0
  elevation_max: float = 60.0
  theta_std: float = 5.0
  theta_limit: float = 20.0

  def __post_init__(self):
    if self.mode not in MODES:
      raise ConfigError(f"viewpoint mode must be one of {MODES}, got {self.mode!r}")
    if not -90.0 <= self.elevation_min < self.elevation_max <= 90.0:
      raise ConfigError(f"need -90 <= elevation_min < elevation_max <= 90, got "
                        f"[{self.elevation_min}, {self.elevation_max}]")
    if self.elevation_std < 0 or self.theta_std < 0 or not 0 <= self.theta_limit <= 180:
      raise ConfigError(f"viewpoint stds must be >= 0 and theta_limit in [0, 180]: {self}")
    if not self.elevation_min <= self.elevation_mean <= self.elevation_max and self.elevation_std == 0:
      raise ConfigError(f"elevation_mean {self.elevation_mean} lies outside [{self.elevation_min}, "
                        f"{self.elevation_max}] with elevation_std 0")


@dataclasses.dataclass(frozen=True)
class Viewpoint:
  """One sampled view.

  Attributes:
    azimuth: radians in [0, 2 pi).
    elevation: radians in [-pi/2, pi/2].
    theta: in-plane rotation, radians in (-pi, pi].
    rotation: (3, 3) float64 R_cv, object -> camera (`geometry.viewpoint_to_camera_rotation`).
  """
  azimuth: float
  elevation: float
  theta: float
  rotation: np.ndarray

  @property
  def angles(self) -> np.ndarray:
    """(3,) float64 (azimuth, elevation, theta) in radians, the dataset's `viewpoint` feature."""
    return np.array([self.azimuth, self.elevation, self.theta])


def _truncated_normal(rng: np.random.Generator, mean: float, std: float, lo: float, hi: float) -> float:
  """A draw from N(mean, std) conditioned on [lo, hi], by resampling (clipped after 64 misses)."""
  if std == 0:
    return float(min(max(mean, lo), hi))
  for _ in range(64):
    x = rng.normal(mean, std)
    if lo <= x <= hi:
      return float(x)
  # Only reached for a window far in the tail; clipping keeps the sampler total rather than looping.
  return float(min(max(rng.normal(mean, std), lo), hi))


# The geometry functions are jax.numpy. Jitted once, a call costs ~20 us instead of dozens of eager op
# dispatches; they run in float64 (jax.enable_x64 scoped to the call, the project does not enable x64
# globally) on the CPU, because a data generator must not place arrays on an accelerator.
@functools.lru_cache(maxsize=None)
def _jitted():
  return (jax.devices("cpu")[0], jax.jit(geometry.viewpoint_to_camera_rotation),
          jax.jit(geometry.camera_rotation_to_viewpoint))


def viewpoint_rotation(azimuth: float, elevation: float, theta: float) -> np.ndarray:
  """R_cv (3, 3) float64 of a Pascal3D+ viewpoint in radians (`geometry.viewpoint_to_camera_rotation`)."""
  cpu, to_r, _ = _jitted()
  with jax.enable_x64(True), jax.default_device(cpu):
    return np.asarray(to_r(np.float64(azimuth), np.float64(elevation), np.float64(theta)), np.float64)


def rotation_viewpoint(r_cv: np.ndarray) -> tuple[float, float, float]:
  """(azimuth, elevation, theta) in radians of R_cv (`geometry.camera_rotation_to_viewpoint`)."""
  cpu, _, to_vp = _jitted()
  with jax.enable_x64(True), jax.default_device(cpu):
    a, e, t = to_vp(np.asarray(r_cv, np.float64))
  return float(a), float(e), float(t)


def haar_rotation(rng: np.random.Generator) -> np.ndarray:
  """A Haar-uniform random rotation (3, 3) float64: a normalised 4-D normal is uniform on S^3."""
  q = rng.standard_normal(4)
  w, x, y, z = q / np.linalg.norm(q)
  return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                   [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                   [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def sample_viewpoint(rng: np.random.Generator,
                     dist: ViewpointDistribution = ViewpointDistribution()) -> Viewpoint:
  """Draws one viewpoint.

  Args:
    rng: the random generator (the only source of randomness).
    dist: the distribution's parameters.

  Returns:
    The `Viewpoint` (angles in radians and R_cv).
  """
  if dist.mode == "uniform":
    r = haar_rotation(rng)
    a, e, t = rotation_viewpoint(r)
    return Viewpoint(a, e, t, r)
  az = float(rng.uniform(0.0, 2.0 * math.pi))
  el = math.radians(_truncated_normal(rng, dist.elevation_mean, dist.elevation_std, dist.elevation_min,
                                      dist.elevation_max))
  th = math.radians(_truncated_normal(rng, 0.0, dist.theta_std, -dist.theta_limit, dist.theta_limit))
  return Viewpoint(az, el, th, viewpoint_rotation(az, el, th))
