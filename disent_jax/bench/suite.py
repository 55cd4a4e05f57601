"""The benchmark suite: every "ours vs the alternative" measurement, in one run, as a table and JSON.

`python -m launch.benchmark [--rows=...] [--out=bench.json] [--quick]` is the command; this module is its
library (no flags here).

Design.
  * A row function takes the `SuiteSettings` and returns a list of `Row`s (one measurement each: ours, the
    alternative, the unit, which direction is better, compile time, a note). Registering it under a name
    (`@register("name")`) is all it takes to add it to the suite; `ROWS` keeps registration order, which
    is the order of the table.
  * Every row times its candidates with `timing.time_interleaved`: the first (compiling) call apart, then
    interleaved repeats of ours and the alternative, so load from other users of a shared machine hits
    both alike; the median is reported, and "compile s" is first call minus steady-state median.
  * `ratio` is always "how many times better ours is": alternative / ours for latencies, ours /
    alternative for rates. Above 1, ours wins.
  * Optional alternatives (PyTorch) are imported inside the row; when missing, the row still measures ours
    and its note says "torch not installed". A row function that raises becomes one row carrying the
    error, and the rest of the suite still runs (the launcher then exits non-zero).
  * The JSON holds the date, the machine (CPU count, load average before and after, jax / jaxlib / numpy /
    scipy / torch versions, backend, device kind and count), the settings and every row.

Rows now: rotation, anchor_labels, stage1, pipeline, retrieval, stage2, inference; when both pipeline and
stage2 run, derived "feed" rows compare the pipeline's rate with the step's consumption (`feed_rows`).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import pathlib
import platform
import sys
import traceback
from typing import Any, Callable

from disent_jax.errors import ConfigError

DEFAULT_CACHE = "/tmp/disent_jax_bench_cache"
# Untimed rounds before the timed ones for the train-step and inference rows (`timing` says why).
STEP_WARMUP = 2


@dataclasses.dataclass
class Row:
  """One measurement: ours against an alternative doing the same work.

  Attributes:
    name: what is measured, with its sizes ('rotation b64 32^3').
    unit: unit of `ours` and `alternative` ('volumes/s', 'ms', ...).
    ours: our median value; None when not measured (see note / error).
    alternative: the alternative's median value; None when there is none or it is unavailable.
    higher_is_better: True for rates, False for latencies.
    ours_label: what "ours" is ('jit(rotate_voxels)').
    alternative_label: what the alternative is ('scipy affine_transform loop').
    ours_compile_s: our first call minus our steady-state median (compilation), seconds.
    alternative_compile_s: the same for the alternative.
    note: one line for the table (parameter counts, recall, agreement, 'torch not installed').
    extra: anything else worth keeping in the JSON.
    error: the exception, when the row function failed.
  """
  name: str
  unit: str
  ours: float | None
  alternative: float | None = None
  higher_is_better: bool = True
  ours_label: str = ""
  alternative_label: str = ""
  ours_compile_s: float | None = None
  alternative_compile_s: float | None = None
  note: str = ""
  extra: dict[str, Any] = dataclasses.field(default_factory=dict)
  error: str | None = None

  @property
  def ratio(self) -> float | None:
    """How many times better ours is (>1: ours wins); None without both values."""
    if not self.ours or not self.alternative:
      return None
    return self.ours / self.alternative if self.higher_is_better else self.alternative / self.ours

  def to_json(self) -> dict[str, Any]:
    return {**dataclasses.asdict(self), "ratio": self.ratio}


@dataclasses.dataclass
class SuiteSettings:
  """Sizes of every row (the defaults are the full run; see `quick_settings`).

  Attributes:
    repeats: timed repeats per measurement (the median is reported).
    cache_dir: voxel banks and the synthetic pipeline dataset are cached here.
    quick: recorded in the JSON; the sizes below are what it changes.
    rotation_batch, rotation_resolution: voxel rotation batch and grid size.
    label_batch, anchor_n: anchor-labelling quaternions per call and anchor grid (7: 259 anchors).
    stage1_batch, stage1_resolution, stage1_steps: Stage I train step batch, grid, steps per timed call.
    torch_threads: PyTorch threads (None: the CPU count, as XLA uses every core).
    pipeline_data_dir: a finished dataset to read; None renders a synthetic one into cache_dir with
      pipeline_num_train examples of pipeline_render_size px (crops of pipeline_crop_size px).
    pipeline_batch, pipeline_batches, pipeline_image_size, pipeline_workers: what is read and how.
    retrieval_sizes, retrieval_dim, retrieval_queries, retrieval_k: database entries (one row group per
      size), vector dimension, queries per call, neighbours.
    recall_target: the approximate search's target.
    retrieval_max_seconds: time budget of one size's timed repeats (at least 3 repeats).
    stage2_backbone, stage2_batch, stage2_image_sizes, stage2_steps: the Stage II train step rows (one per
      image size; steps per timed call).
    inference_backbone, inference_image_size, inference_batch: the inference rows (batch 1, and this
      batch).
  """
  repeats: int = 5
  cache_dir: str = DEFAULT_CACHE
  quick: bool = False
  rotation_batch: int = 64
  rotation_resolution: int = 32
  label_batch: int = 4096
  anchor_n: int = 7
  stage1_batch: int = 64
  stage1_resolution: int = 32
  stage1_steps: int = 3
  torch_threads: int | None = None
  pipeline_data_dir: str | None = None
  pipeline_num_train: int = 256
  pipeline_render_size: int = 128
  pipeline_crop_size: int = 64
  pipeline_batch: int = 32
  pipeline_batches: int = 16
  pipeline_image_size: int = 64
  pipeline_workers: tuple[int, ...] = (0,)
  retrieval_sizes: tuple[int, ...] = (10_000, 100_000, 1_000_000)
  retrieval_dim: int = 512
  retrieval_queries: int = 256
  retrieval_k: int = 10
  recall_target: float = 0.95
  retrieval_max_seconds: float = 30.0
  stage2_backbone: str = "resnet50"
  stage2_batch: int = 32
  stage2_image_sizes: tuple[int, ...] = (64, 224)
  stage2_steps: int = 1
  inference_backbone: str = "resnet50"
  inference_image_size: int = 224
  inference_batch: int = 32


def quick_settings(**overrides) -> SuiteSettings:
  """The --quick run: fewer repeats, no 1e6 retrieval, a tiny pipeline dataset, ResNet-18 for Stage II.

  Stage I keeps its model size; the Stage II and inference rows use ResNet-18 (a ResNet-50 step at 224 px
  takes 13-20 s on a 2-core CPU).
  """
  settings = SuiteSettings(repeats=3, quick=True, stage1_steps=2, pipeline_num_train=16,
                           pipeline_render_size=64, pipeline_crop_size=32, pipeline_batch=8,
                           pipeline_batches=4, pipeline_image_size=32, retrieval_sizes=(10_000, 100_000),
                           retrieval_max_seconds=10.0, stage2_backbone="resnet18",
                           inference_backbone="resnet18")
  return dataclasses.replace(settings, **overrides)


RowFn = Callable[[SuiteSettings], list[Row]]
ROWS: dict[str, RowFn] = {}


def register(name: str) -> Callable[[RowFn], RowFn]:
  """Decorator adding a row function to the suite under `name` (the --rows name)."""

  def wrap(fn: RowFn) -> RowFn:
    if name in ROWS:
      raise ValueError(f"benchmark row {name!r} is registered twice")
    ROWS[name] = fn
    return fn

  return wrap


def torch_version() -> str | None:
  """PyTorch's version, or None when it is not importable (it is an optional extra)."""
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None
  return str(torch.__version__)


TORCH_MISSING = "torch not installed (pip install torch==2.13.0)"


# ---------------------------------------------------------------------------------------------------------
# Rows. Heavy imports live inside the row functions: the suite module stays cheap to import, and a row
# whose dependencies are broken fails alone.


@register("rotation")
def rotation_rows(s: SuiteSettings) -> list[Row]:
  """Voxel rotation of a batch: jit(rotate_voxels) vs a scipy affine_transform loop (volumes/s)."""
  from disent_jax.bench import rotation  # pylint: disable=import-outside-toplevel
  b, r = s.rotation_batch, s.rotation_resolution
  res = rotation.bench_rotation(b, r, s.repeats)
  return [Row(f"rotation b{b} {r}^3", "volumes/s", b / res["jax_s"], b / res["scipy_s"],
              ours_label="jit(rotate_voxels), trilinear",
              alternative_label="scipy.ndimage.affine_transform loop (order=1)",
              ours_compile_s=res["compile_s"],
              alternative_compile_s=max(res["scipy_first_s"] - res["scipy_s"], 0.0),
              note=f"max |ours - scipy| {res['max_abs_diff']:.1e}", extra=res)]


@register("anchor_labels")
def anchor_label_rows(s: SuiteSettings) -> list[Row]:
  """Rotation-anchor labels (paper Eq. 3): matmul + argmax vs a cKDTree over +-anchors (labels/s)."""
  from disent_jax.bench import rotation  # pylint: disable=import-outside-toplevel
  n = s.label_batch
  res = rotation.bench_labels(n, s.anchor_n, s.repeats)
  return [Row(f"anchor labels {n} q, {res['anchors']} anchors", "labels/s", n / res["ours_s"],
              n / res["kdtree_s"], ours_label="jit(assign_rotation_anchor)",
              alternative_label="scipy cKDTree over +-anchors", ours_compile_s=res["compile_s"],
              note=f"labels agree {res['agree'] * 100:.2f}%", extra=res)]


@register("stage1")
def stage1_rows(s: SuiteSettings) -> list[Row]:
  """Stage I train step (default config): ours vs the same network and step in PyTorch (samples/s)."""
  from disent_jax.bench import stage1  # pylint: disable=import-outside-toplevel
  bank = stage1.load_bank(s.stage1_resolution, s.cache_dir)
  b = s.stage1_batch
  res = stage1.bench_stage1(bank, b, s.stage1_steps, s.repeats, torch_threads=s.torch_threads)
  ours = next(v for k, v in res["variants"].items() if k.startswith("jax"))
  torch_res = res["variants"].get("pytorch")
  if torch_res is None:
    note = f"params ours {ours['params']:,}; {TORCH_MISSING}"
  else:
    same = "equal" if ours["params"] == torch_res["params"] else "MISMATCH"
    note = f"params ours {ours['params']:,} / torch {torch_res['params']:,} ({same})"
  threads = s.torch_threads or os.cpu_count()
  return [Row(f"stage1 train step b{b} {s.stage1_resolution}^3", "samples/s", b / ours["step_s"],
              b / torch_res["step_s"] if torch_res else None, ours_label="jit(train_embedder.train_step)",
              alternative_label=f"PyTorch {threads} threads (disent_jax/bench/torch_voxnet.py)",
              ours_compile_s=ours["compile_s"],
              alternative_compile_s=torch_res["compile_s"] if torch_res else None, note=note,
              extra={"models": bank.num_models, "steps_per_call": s.stage1_steps, **res})]


@register("pipeline")
def pipeline_rows(s: SuiteSettings) -> list[Row]:
  """Input pipeline examples/s (plain and augmented); `feed_rows` compares them with the Stage II step."""
  from disent_jax.bench import pipeline  # pylint: disable=import-outside-toplevel
  data_dir = s.pipeline_data_dir
  if data_dir is None:
    data_dir = pipeline.ensure_dataset(
        os.path.join(s.cache_dir, "pipeline"),
        pipeline.bench_settings(s.pipeline_num_train, image_size=s.pipeline_render_size,
                                crop_size=s.pipeline_crop_size))
  rows = []
  for workers in s.pipeline_workers:
    # Streaming plain and augmented crops, and augmented crops from the split decoded into memory
    # (`images.cache_decoded`, the CPU recipe's setting).
    for augment, cached in ((False, False), (True, False), (True, True)):
      res = pipeline.pipeline_rate(data_dir, batch=s.pipeline_batch, image_size=s.pipeline_image_size,
                                   augment=augment, workers=workers, batches=s.pipeline_batches,
                                   repeats=s.repeats, cache_decoded=cached)
      kind = ("augmented" if augment else "plain") + (" cached" if cached else "")
      rows.append(Row(f"pipeline {kind} b{s.pipeline_batch} {s.pipeline_image_size}px w{workers}",
                      "examples/s", res["rate"], ours_label="input_pipeline.make_pipeline",
                      ours_compile_s=res["startup_s"],
                      note="start-up in compile column" + (" (incl. decoding the split)" if cached else ""),
                      extra={"data_dir": str(data_dir), "augment": augment, "cache_decoded": cached,
                             "workers": workers, "batch": s.pipeline_batch,
                             "image_size": s.pipeline_image_size, **res}))
  return rows


@register("retrieval")
def retrieval_rows(s: SuiteSettings) -> list[Row]:
  """Top-k shape retrieval per database size: exact vs numpy, approx vs exact, sharded vs unsharded (ms)."""
  import jax  # pylint: disable=import-outside-toplevel
  from disent_jax.bench import retrieval as bench_retrieval  # pylint: disable=import-outside-toplevel
  rows = []
  k, q, d = s.retrieval_k, s.retrieval_queries, s.retrieval_dim
  backend = jax.default_backend()
  for n in s.retrieval_sizes:
    res = bench_retrieval.bench_retrieval(n, d, q, k, s.repeats, recall_target=s.recall_target,
                                          max_seconds=s.retrieval_max_seconds)
    t = res["timings"]
    size = f"N={n:.0e}".replace("e+0", "e")
    what = f"top-{k} {q}q x {d}d {size}"
    ms = {name: tim.median_s * 1e3 for name, tim in t.items()}
    common = {"entries": n, "dim": d, "queries": q, "k": k,
              "repeats": len(t["exact"].times_s)}
    rows.append(Row(f"retrieval exact {what}", "ms", ms["exact"], ms.get("numpy"), higher_is_better=False,
                    ours_label="Retriever.search (matmul + lax.top_k)",
                    alternative_label="numpy matmul + argpartition",
                    ours_compile_s=t["exact"].compile_s,
                    note=f"top-{k} agree {res['numpy_agrees'] * 100:.1f}%", extra={**common, "timings": t}))
    fallback = "" if backend == "tpu" else f"; exact fallback on {backend}"
    rows.append(Row(f"retrieval approx {what}", "ms", ms["approx"], ms["exact"], higher_is_better=False,
                    ours_label="Retriever.search(approx=True) (lax.approx_max_k)",
                    alternative_label="our exact search", ours_compile_s=t["approx"].compile_s,
                    alternative_compile_s=t["exact"].compile_s,
                    note=f"recall@1 {res['recall_at_1']:.3f} (target {s.recall_target}){fallback}",
                    extra={**common, "recall_at_1": res["recall_at_1"]}))
    if "sharded" in t:
      rows.append(Row(f"retrieval sharded {what}", "ms", ms["sharded"], ms["exact"],
                      higher_is_better=False, ours_label=f"Retriever over {res['devices']} devices",
                      alternative_label="our exact search, 1 device", ours_compile_s=t["sharded"].compile_s,
                      alternative_compile_s=t["exact"].compile_s,
                      note=f"{res['devices']} devices; top-{k} agree {res['sharded_agrees'] * 100:.1f}%",
                      extra={**common, "devices": res["devices"]}))
    else:
      rows.append(Row(f"retrieval sharded {what}", "ms", None, ms["exact"], higher_is_better=False,
                      note="1 device: nothing to shard over", extra=common))
  return rows


def _time_train_steps(backbone: str, px: int, b: int, n: int, repeats: int,
                      threads: int) -> tuple[dict[str, Any], int, int | None]:
  """Times ours and (when installed) PyTorch's ResNet train step, interleaved.

  A function of its own so that both models' buffers are freed on return, before the next (larger) size.

  Args:
    backbone: a `resnet.BACKBONES` name.
    px: square image side.
    b: batch size.
    n: steps per timed call.
    repeats: timed repeats (interleaved; the median is reported).
    threads: PyTorch's thread count.

  Returns:
    (name -> timing.Timing of `n` steps, our backbone's parameter count, PyTorch's or None).
  """
  from disent_jax.bench import flax_resnet  # pylint: disable=import-outside-toplevel
  from disent_jax.bench import timing  # pylint: disable=import-outside-toplevel
  from disent_jax.bench import torch_resnet  # pylint: disable=import-outside-toplevel
  ours_step, params = flax_resnet.make_train_step(backbone, px, b)
  runners = {"ours": lambda: [ours_step() for _ in range(n)]}
  torch_params = None
  if torch_version() is not None:
    torch_step, torch_params = torch_resnet.make_train_step(backbone, px, b, threads)
    runners["torch"] = lambda: [torch_step() for _ in range(n)]
  return timing.time_interleaved(runners, repeats, warmup=STEP_WARMUP), params, torch_params


@register("stage2")
def stage2_rows(s: SuiteSettings) -> list[Row]:
  """Stage II train step per image size: ours vs the same ResNet and step in PyTorch (images/s)."""
  b, n, backbone = s.stage2_batch, s.stage2_steps, s.stage2_backbone
  threads = s.torch_threads or os.cpu_count()
  rows = []
  for px in s.stage2_image_sizes:
    t, params, torch_params = _time_train_steps(backbone, px, b, n, s.repeats, threads)
    if torch_params is None:
      note = f"params ours {params:,}; {TORCH_MISSING}"
    else:
      same = "equal" if params == torch_params else "MISMATCH"
      note = f"params ours {params:,} / torch {torch_params:,} ({same})"
    alt = t.get("torch")
    rows.append(Row(f"stage2 train step b{b} {px}px {backbone}", "images/s", b * n / t["ours"].median_s,
                    b * n / alt.median_s if alt else None,
                    ours_label="jit(train step) of bench/flax_resnet.py (ResNet + linear head, Adam)",
                    alternative_label=f"PyTorch {threads} threads (disent_jax/bench/torch_resnet.py)",
                    ours_compile_s=t["ours"].compile_s, alternative_compile_s=alt.compile_s if alt else None,
                    note=note, extra={"backbone": backbone, "image_size": px, "batch": b,
                                      "steps_per_call": n, "params": params, "torch_params": torch_params,
                                      "timings": t}))
  return rows


@register("inference")
def inference_rows(s: SuiteSettings) -> list[Row]:
  """Full Stage II prediction: 1 image (ms/image) and a batch (images/s), ours vs the PyTorch backbone."""
  from disent_jax.bench import inference as bench_inference  # pylint: disable=import-outside-toplevel
  from disent_jax.bench import timing  # pylint: disable=import-outside-toplevel
  backbone, px = s.inference_backbone, s.inference_image_size
  threads = s.torch_threads or os.cpu_count()
  batches = (1, s.inference_batch)
  ours, params = bench_inference.make_ours_predict(backbone, px, batches)
  alt_runs = bench_inference.make_torch_predict(backbone, px, batches, threads)
  if alt_runs is None:
    note = f"backbone params ours {params['backbone']:,}; {TORCH_MISSING}"
  else:
    same = "equal" if params["backbone"] == alt_runs[1] else "MISMATCH"
    note = f"backbone params ours {params['backbone']:,} / torch {alt_runs[1]:,} ({same})"
  note += f"; ours adds heads + decoding ({params['model']:,} params in all)"
  rows = []
  for b in batches:
    runners = {"ours": ours[b]} if alt_runs is None else {"ours": ours[b], "torch": alt_runs[0][b]}
    t = timing.time_interleaved(runners, s.repeats, warmup=STEP_WARMUP)
    alt = t.get("torch")
    if b == 1:  # a latency
      unit, ours_v, alt_v = "ms/image", t["ours"].median_s * 1e3, alt.median_s * 1e3 if alt else None
    else:  # a throughput
      unit, ours_v, alt_v = "images/s", b / t["ours"].median_s, b / alt.median_s if alt else None
    rows.append(Row(f"inference b{b} {px}px {backbone}", unit, ours_v, alt_v, higher_is_better=b > 1,
                    ours_label="inference.Method.predict_normalized (the Predictor's jitted path)",
                    alternative_label=f"PyTorch {threads} threads, backbone eval forward, inference_mode",
                    ours_compile_s=t["ours"].compile_s, alternative_compile_s=alt.compile_s if alt else None,
                    note=note, extra={"backbone": backbone, "image_size": px, "batch": b, "params": params,
                                      "timings": t}))
  return rows


def feed_rows(pipeline: list[Row], stage2: list[Row]) -> list[Row]:
  """Does the input pipeline keep up with the Stage II step? Derived from rows already measured.

  Args:
    pipeline: the "pipeline" rows (their augmented rows are compared: training reads augmented crops).
    stage2: the "stage2" rows; each pipeline row is compared with the step at its image size, or else at
      the smallest measured size (the CPU recipe's 64 px).

  Returns:
    One row per augmented pipeline row: ours = pipeline examples/s, alternative = the step's images/s,
    so ratio > 1 means the pipeline produces faster than the step consumes. Empty when either is missing.
  """
  steps = sorted((r for r in stage2 if r.ours and not r.error), key=lambda r: r.extra["image_size"])
  rows = []
  for p in pipeline:
    if not steps or not p.ours or p.error or not p.extra.get("augment"):
      continue
    px = p.extra["image_size"]
    step = next((r for r in steps if r.extra["image_size"] == px), steps[0])
    ratio = p.ours / step.ours
    verdict = "keeps up" if ratio >= 1 else "too slow: the step would wait for data"
    cached = " cached" if p.extra.get("cache_decoded") else ""
    rows.append(Row(f"feed pipeline{cached} b{p.extra['batch']} {px}px w{p.extra['workers']} vs "
                    f"stage2 step b{step.extra['batch']} {step.extra['image_size']}px", "examples/s",
                    p.ours, step.ours, ours_label="input_pipeline.make_pipeline, augmented",
                    alternative_label=f"our Stage II train step's consumption ({step.extra['backbone']})",
                    note=f"pipeline {verdict} ({ratio:.2f}x); no timing of its own: from the rows above"))
  return rows


# ---------------------------------------------------------------------------------------------------------
# Running, reporting.


@dataclasses.dataclass
class Report:
  """The result of one suite run (what the JSON holds)."""
  date: str
  machine: dict[str, Any]
  settings: dict[str, Any]
  rows: list[Row]

  @property
  def errors(self) -> list[Row]:
    return [r for r in self.rows if r.error]

  def to_json(self) -> dict[str, Any]:
    return {"date": self.date, "machine": self.machine, "settings": self.settings,
            "rows": [r.to_json() for r in self.rows]}


def machine_facts() -> dict[str, Any]:
  """CPU count, load, library versions and the JAX device, for comparing runs."""
  import jax  # pylint: disable=import-outside-toplevel
  import jaxlib  # pylint: disable=import-outside-toplevel
  import numpy  # pylint: disable=import-outside-toplevel
  import scipy  # pylint: disable=import-outside-toplevel
  devices = jax.devices()
  return {
      "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
      "python": sys.version.split()[0], "cpu_count": os.cpu_count(),
      "cpus_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
      "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
      "jax": jax.__version__, "jaxlib": jaxlib.__version__, "numpy": numpy.__version__,
      "scipy": scipy.__version__, "torch": torch_version(), "backend": jax.default_backend(),
      "device_kind": devices[0].device_kind, "device_count": len(devices),
      # launch/benchmark.py times under the allocator settings training uses (see launch/main.py).
      "glibc_tunables": os.environ.get("GLIBC_TUNABLES"),
  }


def check_row_names(names: list[str] | None) -> list[str]:
  """The row names to run (all when None), in registry order; unknown names raise ConfigError."""
  if names is None:
    return list(ROWS)
  unknown = [n for n in names if n not in ROWS]
  if unknown:
    raise ConfigError(f"unknown benchmark rows {unknown}; known: {list(ROWS)}")
  return [n for n in ROWS if n in names]


def run_suite(names: list[str] | None = None, settings: SuiteSettings | None = None, *,
              log: Callable[[str], None] | None = print) -> Report:
  """Runs the named row functions (all by default) and collects their rows.

  Args:
    names: registry names; None for all.
    settings: sizes; None for the full run's defaults.
    log: progress messages (None: silent).

  Returns:
    The report. A row function that raised contributes one Row with `error` set.

  Raises:
    ConfigError: unknown row names.
  """
  settings = settings or SuiteSettings()
  names = check_row_names(names)
  date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
  machine = machine_facts()
  rows: list[Row] = []
  by_name: dict[str, list[Row]] = {}
  for name in names:
    if log:
      log(f"[benchmark] {name} ...")
    start = datetime.datetime.now()
    try:
      new = ROWS[name](settings)
    except Exception as e:  # pylint: disable=broad-except
      # One broken row must not cost the others' measurements; the error is in the table and JSON.
      new = [Row(name, "", None, error=f"{type(e).__name__}: {e}",
                 extra={"traceback": traceback.format_exc()})]
    if log:
      log(f"[benchmark] {name} done in {(datetime.datetime.now() - start).total_seconds():.1f} s")
    rows.extend(new)
    by_name[name] = new
  # Whether the pipeline keeps up with the Stage II step needs both rows: derived here, not measured again.
  rows.extend(feed_rows(by_name.get("pipeline", []), by_name.get("stage2", [])))
  machine["load_average_after"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
  return Report(date, machine, dataclasses.asdict(settings), rows)


def _fmt(x: float | None) -> str:
  if x is None:
    return "-"
  if abs(x) >= 1000:
    return f"{x:,.0f}"
  if abs(x) >= 10:
    return f"{x:.1f}"
  return f"{x:.3g}"


def format_table(report: Report) -> str:
  """The printed table: row, ours, alternative, ratio, unit, compile s, note; then a legend."""
  header = ("row", "ours", "alternative", "ratio", "unit", "compile s", "note")
  lines = []
  for r in report.rows:
    ratio = "-" if r.ratio is None else f"{r.ratio:.2f}x"
    note = f"ERROR {r.error}" if r.error else r.note
    lines.append((r.name, _fmt(r.ours), _fmt(r.alternative), ratio, r.unit, _fmt(r.ours_compile_s), note))
  widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h)
            for i, h in enumerate(header)]
  right = {1, 2, 3, 5}

  def render(cells):
    return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                     for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

  m = report.machine
  out = [f"{report.date}  {m['device_kind']} ({m['backend']}) x{m['device_count']}, {m['cpu_count']} CPUs, "
         f"load {m['load_average']}, jax {m['jax']}, torch {m['torch'] or 'not installed'}",
         "ratio = how many times better ours is (>1: ours wins); median of repeats; compile s = first call "
         "minus steady state", render(header), render(["-" * w for w in widths])]
  out += [render(line) for line in lines]
  legend = {}
  for r in report.rows:
    if r.ours_label or r.alternative_label:
      key = r.name.split()[0] + (" " + r.name.split()[1] if r.name.startswith("retrieval") else "")
      legend.setdefault(key, f"  {key}: ours = {r.ours_label or '-'}; alternative = "
                              f"{r.alternative_label or '-'}")
  return "\n".join(out + [""] + list(legend.values()))


def write_json(report: Report, path: str | os.PathLike) -> pathlib.Path:
  """Writes the report as indented JSON (creating the folder); returns the path."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(report.to_json(), indent=2, default=_json_default) + "\n")
  return path


def _json_default(x: Any) -> Any:
  """JSON for the values rows keep in `extra` (Timing dataclasses, numpy scalars, tuples)."""
  if dataclasses.is_dataclass(x):
    return {**dataclasses.asdict(x), **{p: getattr(x, p) for p in ("median_s", "compile_s")
                                        if hasattr(x, p)}}
  if hasattr(x, "item"):
    return x.item()
  return str(x)
