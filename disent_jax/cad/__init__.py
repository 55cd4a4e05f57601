"""The CAD database: mesh reading, the procedural zoo, voxels, the cached voxel bank, rotation on device.

Public names (also importable from their modules):
  load_mesh(path) -> normalised trimesh.Trimesh          (disent_jax.cad.mesh_io)
  procedural_zoo(seed=0) -> list[CadModel]               (disent_jax.cad.zoo)
  voxelize(mesh, resolution=32) -> bool (R, R, R) grid   (disent_jax.cad.voxels)
  rotate_voxels(volumes, quaternions) -> float grids     (disent_jax.cad.rotate; batched, jit-able)
"""

from disent_jax.cad.mesh_io import load_mesh
from disent_jax.cad.model import CadModel
from disent_jax.cad.model import Normalization
from disent_jax.cad.rotate import rotate_voxels
from disent_jax.cad.voxels import voxelize
from disent_jax.cad.zoo import procedural_zoo

__all__ = ["CadModel", "Normalization", "load_mesh", "procedural_zoo", "rotate_voxels", "voxelize"]
