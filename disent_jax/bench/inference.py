"""Inference speed of the full Stage II model: ours (the Predictor's jitted path) vs the backbone in PyTorch.

Ours is `inference.Method.predict_normalized`, the call `Predictor.predict` ends in: the `ImageRegressor`
forward in eval mode, the decoding (top-k rotation anchors with their residuals, the shape classifier's
top-k, nearest-neighbour retrieval among the database's shape vectors, translation) and the copy of the
results to the host. It is built with random weights and random database vectors (speed does not depend
on their values), so no trained workdir is needed. The alternative is the same ResNet backbone alone in
PyTorch, eval mode under `torch.inference_mode`: it does less work than ours (no heads, no decoding), so
the comparison is, if anything, in its favour.

PyTorch is optional (`pip install torch==2.13.0`): without it `make_torch_predict` returns None. Used by
the benchmark suite's "inference" rows.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from configs import default
from disent_jax import geometry
from disent_jax import inference
from disent_jax import train_lib
from disent_jax import train_regressor
from disent_jax.bench import torch_resnet
from disent_jax.cad import zoo


def make_ours_predict(backbone: str, image_size: int, batches: tuple[int, ...], *,
                      num_models: int | None = None,
                      seed: int = 0) -> tuple[dict[int, Callable[[], Any]], dict[str, int]]:
  """Our full Stage II prediction of batches of normalised crops, randomly initialised.

  Args:
    backbone: a `resnet.BACKBONES` name (the rest of the model is the default config's).
    image_size: square crop side in pixels.
    batches: batch sizes to predict (one model for all: initialising it compiles, seconds even when tiny).
    num_models: CAD models in the database (shape classes); None: the procedural zoo's, the default
      config's database.
    seed: initialisation and input seed.

  Returns:
    (runs, params): `runs[batch]()` predicts a batch and waits for the results on the host (its first
    call compiles); params holds 'backbone' and 'model' (everything) parameter counts.
  """
  config = default.get_config()
  config.regressor.backbone = backbone
  anchors = np.asarray(geometry.rotation_anchors(config.anchors.n))
  grid = train_regressor.translation_grid(config)
  num_models = num_models or len(zoo.procedural_zoo(0))
  model = train_regressor.create_model(config, num_models, len(anchors), grid.num_anchors)
  # Jitted (an eager init compiles every primitive on its own) with an 'rbg' key (threefry's init program
  # takes twice as long to compile); the values do not matter here.
  variables = jax.jit(functools.partial(model.init, train=False))(
      jax.random.key(seed, impl="rbg"), jnp.zeros((1, image_size, image_size, 3), jnp.float32))
  rng = np.random.default_rng(seed)
  database = rng.standard_normal((num_models, config.model.shape_dim)).astype(np.float32)
  # `predict_normalized` never reads the voxel bank (only the Predictor's decoding to names and meshes
  # does), so none is built.
  method = inference.Method(config=config, regressor=model, regressor_variables=variables, bank=None,
                            anchors=anchors, grid=grid, input_size=image_size, database_vectors=database,
                            steps={})
  params = {"backbone": train_lib.param_count(variables["params"]["backbone"]),
            "model": train_lib.param_count(variables["params"])}

  def make_run(batch: int) -> Callable[[], Any]:
    images = rng.standard_normal((batch, image_size, image_size, 3)).astype(np.float32)
    # device_get inside predict_normalized: it returns once the results are on the host.
    return lambda: method.predict_normalized(images)

  return {b: make_run(b) for b in batches}, params


def make_torch_predict(backbone: str, image_size: int, batches: tuple[int, ...],
                       threads: int | None = None) -> tuple[dict[int, Callable[[], Any]], int] | None:
  """The same ResNet backbone's eval-mode forward in PyTorch, or None when PyTorch is not importable.

  Args:
    backbone: a `resnet.BACKBONES` name.
    image_size: square input side in pixels.
    batches: batch sizes to run.
    threads: `torch.set_num_threads` (None: torch's default).

  Returns:
    (runs: batch -> callable, parameter count of the backbone), or None.
  """
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None
  torch.manual_seed(0)
  model = torch_resnet.make_resnet(backbone, threads).eval()
  def make_run(batch: int) -> Callable[[], Any]:
    images = torch.randn(batch, 3, image_size, image_size)

    def run():
      with torch.inference_mode():
        model(images).numpy()  # to a host array, as ours ends

    return run

  return {b: make_run(b) for b in batches}, torch_resnet.param_count(model)
