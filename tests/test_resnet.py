"""The Stage II ResNet backbone: torchvision's parameter counts, shapes, small inputs, and BatchNorm
statistics that are global under a sharded jit and under pmap."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np
import pytest

from disent_jax import errors
from disent_jax.models import resnet


def _normal(seed, shape):
  # numpy, not jax.random: an eager jax.random.normal compiles a program per shape (~0.5 s each here).
  return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _init(model, x, seed=0):
  # Jitted (an eager init compiles every primitive on its own), with an 'rbg' key: the default threefry
  # random bits compile 3-4x slower (4 s against 1.2 s for resnet_tiny's init here).
  return jax.jit(functools.partial(model.init, train=False))(jax.random.key(seed, impl="rbg"), x)


def _tiny(**kw):
  """resnet_tiny with lax convolutions, for the tests of everything but the convolutions: lax compiles
  several times faster than the CPU default (im2col), and the two are checked equal below."""
  return resnet.create_backbone("resnet_tiny", conv_impl="lax", **kw)


@pytest.fixture(scope="module")
def tiny_variables():
  """resnet_tiny's variables: they depend on neither the batch nor the image size, so one init serves all
  (compiling an init costs seconds on the loaded 2-core machine)."""
  return _init(_tiny(), jnp.zeros((1, 8, 8, 3)), seed=1)


def _train_apply(model, variables, x):
  out, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
  return out, updates["batch_stats"]


def _params(name):
  return sum(int(np.prod(s)) for path, s in resnet.variable_shapes(name).items() if path[0] == "params")


@pytest.mark.parametrize("name,total,fc", [("resnet18", 11_689_512, 513_000),
                                           ("resnet34", 21_797_672, 513_000),
                                           ("resnet50", 25_557_032, 2_049_000)])
def test_param_counts_equal_torchvision_without_fc(name, total, fc):
  assert _params(name) == total - fc


@pytest.mark.parametrize("name,dim", [("resnet50", 2048), ("resnet34", 512), ("resnet18", 512),
                                      ("resnet_tiny", 16)])
def test_feature_dim_and_output_shape(name, dim):
  assert resnet.feature_dim(name) == dim
  model = resnet.create_backbone(name)
  x = jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
  out = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
  assert out.shape == (2, dim) and out.dtype == jnp.float32
  assert set(variables) == {"params", "batch_stats"}


def test_feature_dim_follows_width_and_depth_overrides():
  overrides = dict(num_filters=32, stage_sizes=(1, 1))
  model = resnet.create_backbone("resnet18", **overrides)
  x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
  out = jax.eval_shape(lambda x: model.init_with_output(jax.random.key(0), x, train=False)[0], x)
  assert out.shape == (1, resnet.feature_dim("resnet18", **overrides)) == (1, 64)


def test_torchvision_layout_names():
  names = {"/".join(p) for p in resnet.variable_shapes("resnet50")}
  assert "params/conv1/kernel" in names and "batch_stats/bn1/mean" in names
  assert "params/layer1_0/downsample_conv/kernel" in names  # 64 -> 256 channels
  assert "params/layer4_2/conv3/kernel" in names and "params/layer4_2/bn3/scale" in names
  assert not any(n.startswith("params/layer1_1/downsample") for n in names)
  assert resnet.variable_shapes("resnet50")[("params", "layer2_0", "conv2", "kernel")] == (3, 3, 128, 128)


def test_unknown_backbone_lists_valid_names():
  with pytest.raises(errors.ConfigError, match="resnet50.*resnet_tiny|resnet_tiny.*resnet50"):
    resnet.create_backbone("resnet101")
  with pytest.raises(errors.ConfigError, match="resnet18"):
    resnet.feature_dim("vgg16")


@pytest.mark.parametrize("size", [1, 33])  # 1 px: every stride-2 layer and the max-pool at size 1
def test_tiny_inputs(size, tiny_variables):
  model = resnet.create_backbone("resnet_tiny")
  x = _normal(0, (2, size, size, 3))
  variables = tiny_variables
  out, updates = jax.jit(functools.partial(_train_apply, model))(variables, x)
  assert out.shape == (2, 16) and bool(jnp.all(jnp.isfinite(out)))
  assert jax.tree.structure(updates) == jax.tree.structure(variables["batch_stats"])


def test_init_matches_torchvision_and_zero_init_option(tiny_variables):
  params = tiny_variables["params"]
  np.testing.assert_array_equal(params["layer1_0"]["bn2"]["scale"], 1.0)
  np.testing.assert_array_equal(params["bn1"]["bias"], 0.0)
  # Kaiming normal, fan_out: std sqrt(2 / (3 * 3 * 16)) = 0.118.
  assert 0.09 < float(jnp.std(params["layer1_0"]["conv1"]["kernel"])) < 0.14
  zero = _tiny(zero_init_residual=True)
  params = _init(zero, jnp.zeros((1, 8, 8, 3)))["params"]
  np.testing.assert_array_equal(params["layer1_0"]["bn2"]["scale"], 0.0)
  np.testing.assert_array_equal(params["layer1_0"]["bn1"]["scale"], 1.0)


def test_bfloat16_compute_keeps_float32_params_and_output(tiny_variables):
  model = _tiny(dtype=jnp.bfloat16)
  x = _normal(0, (2, 32, 32, 3))
  shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(1), x)
  assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(shapes))
  variables = tiny_variables
  out, updates = jax.jit(functools.partial(_train_apply, model))(variables, x)
  assert out.dtype == jnp.float32
  assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(updates))
  ref, _ = jax.jit(functools.partial(_train_apply, _tiny()))(variables, x)
  np.testing.assert_allclose(out, ref, rtol=0.05, atol=0.05)


def test_batchnorm_statistics_are_global_under_sharded_jit_and_pmap(tiny_variables):
  n = jax.device_count()
  assert n == 8, "tests/conftest.py sets 8 fake CPU devices"
  model = _tiny()
  # Per-device batches differ in scale, so device-local statistics would give visibly different outputs.
  x = _normal(0, (2 * n, 16, 16, 3)) * (1.0 + np.arange(2 * n, dtype=np.float32)[:, None, None, None] / 4)
  variables = tiny_variables
  step = jax.jit(functools.partial(_train_apply, model))
  ref_out, ref_stats = step(variables, jax.device_put(x, jax.devices()[0]))

  mesh = Mesh(np.array(jax.devices()), ("batch",))
  xs = jax.device_put(x, NamedSharding(mesh, P("batch")))
  vs = jax.device_put(variables, NamedSharding(mesh, P()))
  out, stats = step(vs, xs)
  np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-5)
  for a, b in zip(jax.tree.leaves(stats), jax.tree.leaves(ref_stats)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

  pmodel = _tiny(bn_axis_name="batch")
  replicated = jax.tree.map(lambda v: jnp.broadcast_to(v, (n,) + v.shape), variables)
  out, stats = jax.pmap(functools.partial(_train_apply, pmodel), axis_name="batch")(
      replicated, x.reshape((n, 2) + x.shape[1:]))
  np.testing.assert_allclose(np.asarray(out).reshape(ref_out.shape), ref_out, rtol=1e-5, atol=1e-5)
  for a, b in zip(jax.tree.leaves(stats), jax.tree.leaves(ref_stats)):
    for replica in np.asarray(a):
      np.testing.assert_allclose(replica, b, rtol=1e-5, atol=1e-6)

  # Sanity check of the check: without the axis name, pmap's statistics are per device and differ.
  local, _ = jax.pmap(functools.partial(_train_apply, model), axis_name="batch")(
      replicated, x.reshape((n, 2) + x.shape[1:]))
  assert not np.allclose(np.asarray(local).reshape(ref_out.shape), ref_out, atol=1e-3)


# kernel, stride, odd/even size; the 3x3 stride-1 ones are Winograd's (an odd size pads one more row).
_CONV_CASES = [(1, 1, 6), (1, 2, 7), (3, 1, 5), (3, 1, 8), (3, 2, 8), (7, 2, 9)]


def test_conv_impls_compute_the_same_function():
  def run(conv):
    # All cases in one jitted function: one compilation per implementation instead of one per case.
    def f(xs, ws):
      outs = []
      for (k, stride, _), x, w in zip(_CONV_CASES, xs, ws):
        fn = lambda x, w: conv(x, w, stride, (k - 1) // 2)
        outs.append((fn(x, w), jax.grad(lambda x, w: jnp.sum(jnp.sin(fn(x, w))), (0, 1))(x, w)))
      return outs
    return jax.jit(f)

  xs = [_normal(2 * i, (2, size, size, 3)) for i, (_, _, size) in enumerate(_CONV_CASES)]
  ws = [_normal(2 * i + 1, (k, k, 3, 4)) for i, (k, _, _) in enumerate(_CONV_CASES)]
  refs = run(resnet.conv_lax)(xs, ws)
  channels_first = [
      functools.wraps(cm)(lambda x, w, s, p, cm=cm: cm(x.transpose(3, 0, 1, 2), w, s, p).transpose(1, 2, 3, 0))
      for cm in (resnet.conv_im2col_cm, resnet.conv_winograd_cm)]
  for conv in (resnet.conv_im2col, resnet.conv_winograd, *channels_first):
    for case, (out, grads), (ref, ref_grads) in zip(_CONV_CASES, run(conv)(xs, ws), refs):
      np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5, err_msg=f"{conv.__name__} {case}")
      for a, b in zip(grads, ref_grads):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4, err_msg=f"{conv.__name__} {case}")


def test_conv_impl_does_not_change_the_network(tiny_variables):
  x = _normal(0, (2, 16, 16, 3))
  lax_model = resnet.create_backbone("resnet_tiny", conv_impl="lax")
  variables = tiny_variables
  ref, _ = jax.jit(functools.partial(_train_apply, lax_model))(variables, x)
  for impl in ("im2col", "winograd"):
    for layout in ("channels_last", "channels_first"):
      model = resnet.create_backbone("resnet_tiny", conv_impl=impl, layout=layout)
      out, _ = jax.jit(functools.partial(_train_apply, model))(variables, x)
      np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5, err_msg=f"{impl} {layout}")
  for kw, match in [(dict(conv_impl="fft", layout="channels_last"), "conv impl"),
                    (dict(conv_impl="fft", layout="auto"), "conv impl"),
                    (dict(conv_impl="lax", layout="channels_first"), "layout 'channels_first' takes conv_impl"),
                    (dict(layout="nchw"), "layout must be")]:
    with pytest.raises(errors.ConfigError, match=match):
      jax.eval_shape(lambda: resnet.create_backbone("resnet_tiny", **kw).init(
          jax.random.key(1), x, train=False))


def test_layout_auto_is_channels_first_for_training_on_cpu_unless_lax():
  assert jax.default_backend() == "cpu"
  assert resnet.create_backbone("resnet_tiny")._channels_first(train=True)
  assert resnet.create_backbone("resnet_tiny", conv_impl="winograd")._channels_first(train=True)
  assert not resnet.create_backbone("resnet_tiny")._channels_first(train=False)
  assert not resnet.create_backbone("resnet_tiny", conv_impl="lax")._channels_first(train=True)
  assert not resnet.create_backbone("resnet_tiny", layout="channels_last")._channels_first(train=True)
  assert resnet.create_backbone("resnet_tiny", layout="channels_first")._channels_first(train=False)


def test_matmul_cm_and_its_gradients():
  w, x, g = _normal(0, (3, 5, 4)), _normal(1, (3, 5, 7)), _normal(2, (3, 4, 7))

  @jax.jit
  def both(w, x):
    return [jax.vjp(f, w, x) for f in (resnet.matmul_cm, lambda w, x: jnp.einsum("bko,bkn->bon", w, x))]

  (out, vjp), (ref, ref_vjp) = both(w, x)
  np.testing.assert_allclose(out, np.einsum("bko,bkn->bon", w, x), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
  for a, b in zip(jax.jit(lambda g: vjp(g))(g), ref_vjp(g)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


# resnet18's first stage (4 Winograd layers behind the stem) at 48 px: the configuration in which XLA:CPU's
# YNNPACK reduce fusions gave the first block ~1e-2 relative gradient errors before BatchNorm read its input
# behind a barrier (resnet.BatchNorm; float64 confirmed channels-last right). It shows with these values
# only (jax.random draws of seed 0, not of seeds 1-3; parameters from an eager init, not from a jitted one,
# which differ in the last bits) and the inputs as constants of the program, as here. Also a bottleneck
# network with projection shortcuts and strides ('slow': 21 s here; its convolutions' channels-first forms
# are checked one by one in test_conv_impls_compute_the_same_function).
@pytest.mark.parametrize("name,overrides,size,eager_init", [
    ("resnet18", dict(stage_sizes=(2,)), 48, True),
    pytest.param("resnet50", dict(stage_sizes=(1, 1), num_filters=8), 32, False, marks=pytest.mark.slow)])
def test_channels_first_matches_channels_last(name, overrides, size, eager_init):
  models = [resnet.create_backbone(name, layout=layout, **overrides)
            for layout in ("channels_last", "channels_first")]
  x = jax.random.normal(jax.random.key(1), (4, size, size, 3))
  init = functools.partial(models[0].init, train=False)
  variables = (init if eager_init else jax.jit(init))(jax.random.key(0), x)
  ct = jax.random.normal(jax.random.key(7), (4, resnet.feature_dim(name, **overrides)))
  assert jax.tree.structure(jax.eval_shape(functools.partial(models[1].init, train=False),
                                           jax.random.key(0), x)) == jax.tree.structure(variables)

  def run(model):
    # The gradient on its own, as a training step computes it (with the outputs in the same program, or
    # both layouts in one, XLA fuses differently and the bug above did not show).
    def loss(params):
      return jnp.sum(_train_apply(model, {**variables, "params": params}, x)[0] * ct)

    outputs = jax.jit(lambda v: (*_train_apply(model, v, x), model.apply(v, x, train=False)))(variables)
    return *outputs, jax.jit(jax.grad(loss))(variables["params"])

  refs, ours = map(run, models)
  for got, ref, what in zip(ours, refs, ("output", "batch_stats", "eval", "gradient")):
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(ref)):
      scale = float(np.max(np.abs(b))) + 1e-6
      np.testing.assert_allclose(a, b, rtol=0, atol=1e-4 * scale, err_msg=f"{what} {path}")


@pytest.mark.parametrize("size,channels", [(8, 64), (7, 64), (6, 64), (8, 16)])
def test_conv_auto_is_the_lax_convolution(size, channels):
  # On CPU 'auto' takes Winograd for the first two layers (>= 7x7 outputs, >= 64x64 channels) and im2col for
  # the others; whichever it takes, the function is the convolution.
  x = _normal(3, (2, size, size, channels))
  conv = resnet.Conv(64, 3, impl="auto")
  params = conv.init(jax.random.key(0), x)
  ref = resnet.conv_lax(x, params["params"]["kernel"], 1, 1)
  np.testing.assert_allclose(jax.jit(conv.apply)(params, x), ref, rtol=1e-4, atol=1e-4)


def test_batchnorm_matches_flax_batchnorm():
  # Channels with a large mean, so the fast variance's cancellation would show if it were computed badly.
  x = _normal(0, (8, 5, 5, 6)) * np.arange(1, 7, dtype=np.float32) + np.arange(6, dtype=np.float32) * 3
  ours = resnet.BatchNorm(use_running_average=False, momentum=0.8)
  ref = nn.BatchNorm(use_running_average=False, momentum=0.8, epsilon=1e-5)
  variables = jax.jit(ref.init)(jax.random.key(1, impl="rbg"), x)
  assert jax.tree.structure(jax.eval_shape(ours.init, jax.random.key(1), x)) == jax.tree.structure(variables)
  variables = jax.tree.map(lambda v: v + 0.3, variables)  # non-trivial scale, bias and running stats

  def both(v, x, axis_name=None):
    o = resnet.BatchNorm(use_running_average=False, momentum=0.8, axis_name=axis_name)
    r = nn.BatchNorm(use_running_average=False, momentum=0.8, epsilon=1e-5, axis_name=axis_name)
    return (o.apply(v, x, mutable=["batch_stats"]), r.apply(v, x, mutable=["batch_stats"]),
            o.copy(use_running_average=True).apply(v, x), r.copy(use_running_average=True).apply(v, x))

  (out, upd), (ref_out, ref_upd), ev, ref_ev = jax.jit(both)(variables, x)
  np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(ev, ref_ev, rtol=1e-5, atol=1e-5)
  for a, b in zip(jax.tree.leaves(upd), jax.tree.leaves(ref_upd)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  # Under pmap, the statistics are the global batch's, as nn.BatchNorm's.
  (out, upd), (ref_out, ref_upd), _, _ = jax.pmap(functools.partial(both, axis_name="b"), axis_name="b")(
      jax.tree.map(lambda v: jnp.broadcast_to(v, (4,) + v.shape), variables), x.reshape(4, 2, 5, 5, 6))
  np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(out).reshape(x.shape), np.asarray(jax.jit(both)(variables, x)[0][0]),
                             rtol=1e-5, atol=1e-5)


def test_batchnorm_channel_axis_first_is_the_same_normalisation():
  x = _normal(1, (4, 3, 5, 6)) * np.arange(1, 7, dtype=np.float32) + 2.0
  last, first = resnet.BatchNorm(use_running_average=False), resnet.BatchNorm(use_running_average=False, axis=0)
  variables = jax.tree.map(lambda v: v + 0.3, jax.jit(last.init)(jax.random.key(0), x))
  xt = x.transpose(3, 0, 1, 2)
  assert jax.tree.structure(jax.eval_shape(first.init, jax.random.key(0), xt)) == jax.tree.structure(variables)

  @jax.jit
  def both(v):
    return [(m.apply(v, a, mutable=["batch_stats"]), m.copy(use_running_average=True).apply(v, a))
            for m, a in ((last, x), (first, xt))]

  ((out, upd), ev), ((out_t, upd_t), ev_t) = both(variables)
  np.testing.assert_allclose(out_t.transpose(1, 2, 3, 0), out, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(ev_t.transpose(1, 2, 3, 0), ev, rtol=1e-5, atol=1e-5)
  for a, b in zip(jax.tree.leaves(upd_t), jax.tree.leaves(upd)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  # The statistics are per channel: normalised, each channel of the output has its bias as mean.
  np.testing.assert_allclose(out.mean((0, 1, 2)), variables["params"]["bias"], atol=1e-4)
