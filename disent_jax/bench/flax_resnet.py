"""Training-step speed of our Flax ResNet backbone, mirroring `disent_jax.bench.torch_resnet.time_train_step`
so a benchmark suite can call both with the same arguments.

The step: forward in train mode (BatchNorm batch statistics, running averages updated), a linear
classifier + cross-entropy on random labels, backward, optax.adam; jitted, with the state donated so XLA
updates parameters and optimizer moments in place, as PyTorch's Adam does.

Measured on the 2-core dev machine (ResNet-50, batch 32, 64 px, one pinned core so that other people's
load matters less): 1.40 s/step (22.8 img/s) vs PyTorch's 1.29 s (24.9 img/s) with
`disent_jax.bench.torch_resnet`; at 224 px 20.6 s vs 13.0-13.6 s. Process settings matter as much as the
code: glibc malloc tunables (GLIBC_TUNABLES=glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:
glibc.malloc.trim_threshold=100000000000, which launch/main.py sets) take the step from 1.69 to 1.40 s,
because XLA's large fresh buffers otherwise come from mmap and page-fault every step; the same settings
through mallopt(3) at run time gave 1.44 s. They do not change PyTorch's step (1.30 s either way). Run
benchmarks with them set.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from disent_jax.bench import timing
from disent_jax.models import resnet


class _Classifier(nn.Module):
  backbone: str
  num_classes: int
  dtype: jnp.dtype = jnp.float32
  overrides: tuple[tuple[str, object], ...] = ()

  @nn.compact
  def __call__(self, x, *, train: bool):
    backbone = resnet.create_backbone(self.backbone, dtype=self.dtype, **dict(self.overrides))
    features = backbone.clone(parent=self, name="backbone")(x, train=train)
    return nn.Dense(self.num_classes, dtype=self.dtype, name="fc")(features).astype(jnp.float32)


def make_train_step(backbone: str, image_size: int, batch_size: int, num_classes: int = 1000,
                    dtype: jnp.dtype = jnp.float32, **overrides) -> tuple[Callable[[], Any], int]:
  """Builds our jitted training step of `backbone` (NHWC) on a fixed random batch, on the default device.

  Args:
    backbone: a `resnet.BACKBONES` name.
    image_size: square input size in pixels.
    batch_size: images per step.
    num_classes: width of the linear head.
    dtype: computation dtype.
    **overrides: other `resnet.ResNet` attributes (e.g. conv_impl='lax'), to compare variants.

  Returns:
    (step, params): `step()` runs one optimizer step and waits for it (the first call compiles); params
    is the backbone's parameter count.
  """
  model = _Classifier(backbone, num_classes, dtype, tuple(sorted(overrides.items())))
  tx = optax.adam(1e-4)
  images = jax.random.normal(jax.random.key(1), (batch_size, image_size, image_size, 3), jnp.float32)
  labels = jax.random.randint(jax.random.key(2), (batch_size,), 0, num_classes)

  @jax.jit
  def init():
    # An 'rbg' key: threefry's init program takes twice as long to compile, and the values do not matter.
    variables = model.init(jax.random.key(0, impl="rbg"), images[:1], train=False)
    return variables["params"], variables["batch_stats"], tx.init(variables["params"])

  def loss_fn(params, batch_stats, images, labels):
    logits, updates = model.apply({"params": params, "batch_stats": batch_stats}, images, train=True,
                                  mutable=["batch_stats"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), updates["batch_stats"]

  @functools.partial(jax.jit, donate_argnums=0)
  def train_step(state, images, labels):
    params, batch_stats, opt_state = state
    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, batch_stats, images, labels)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), batch_stats, opt_state), loss

  # The state is donated every step, so it lives in a holder the closure updates.
  holder = {"state": init()}
  params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(holder["state"][0]["backbone"]))

  def step():
    holder["state"], loss = train_step(holder["state"], images, labels)
    jax.block_until_ready((holder["state"], loss))

  return step, params


def time_train_step(backbone: str, image_size: int, batch_size: int, steps: int,
                    num_classes: int = 1000, dtype: jnp.dtype = jnp.float32, **overrides) -> dict:
  """Images per second of our jitted training step of `backbone` (NHWC) on the default device.

  Args:
    backbone: a `resnet.BACKBONES` name.
    image_size: square input size in pixels.
    batch_size: images per step.
    steps: timed steps (after one untimed step that includes compilation).
    num_classes: width of the linear head.
    dtype: computation dtype.
    **overrides: other `resnet.ResNet` attributes (e.g. conv_impl='lax'), to compare variants.

  Returns:
    dict with images_per_s (from the median step), step_s (median), min_s (fastest step), first_s
    (compile + first step), compile_s (first_s - step_s), steps_s (all timed steps), cpu_s (median
    process CPU seconds per step: on a shared machine less sensitive than wall time to others' load),
    params (backbone parameters), devices and the arguments.
  """
  step, params = make_train_step(backbone, image_size, batch_size, num_classes, dtype, **overrides)
  t = timing.time_steps(step, steps)
  return {"framework": "flax", "backbone": backbone, "image_size": image_size, "batch_size": batch_size,
          **overrides, "devices": jax.device_count(), "params": params, **t,
          "images_per_s": batch_size / t["step_s"]}