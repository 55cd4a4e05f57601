"""Fast tests of the benchmark suite (disent_jax/bench/suite.py): tiny sizes, the JSON layout, with and
without torch.

Timings themselves are not checked (they depend on the machine); what is checked is that every row runs,
produces positive numbers where it measured something, and that the report is valid JSON with the keys
readers of bench.json rely on.
"""

from __future__ import annotations

import json
import math
import sys

import pytest

from disent_jax.bench import suite
from disent_jax.errors import ConfigError


def _tiny(tmp_path) -> suite.SuiteSettings:
  return suite.SuiteSettings(
      repeats=2, cache_dir=str(tmp_path / "cache"), quick=True, rotation_batch=4, rotation_resolution=16,
      label_batch=64, stage1_batch=4, stage1_resolution=16, stage1_steps=1, pipeline_num_train=8,
      pipeline_render_size=64, pipeline_crop_size=32, pipeline_batch=4, pipeline_batches=2,
      pipeline_image_size=32, retrieval_sizes=(1000,), retrieval_dim=32, retrieval_queries=16,
      retrieval_k=10, retrieval_max_seconds=5.0, stage2_backbone="resnet_tiny", stage2_batch=2,
      stage2_image_sizes=(32,), stage2_steps=1, inference_backbone="resnet_tiny",
      inference_image_size=32, inference_batch=4, torch_threads=1)


def _assert_measured(row: suite.Row) -> None:
  """Positive finite figures and compile times; the ratio is ours vs the alternative, as the table says."""
  assert not row.error, row.error
  for value in (row.ours, row.ours_compile_s + 1.0):
    assert value is not None and math.isfinite(value) and value > 0, row
  if row.alternative is not None:
    assert math.isfinite(row.alternative) and row.alternative > 0
    expected = row.ours / row.alternative if row.higher_is_better else row.alternative / row.ours
    assert row.ratio == pytest.approx(expected)


def test_quick_subset_writes_a_valid_report(tmp_path):
  report = suite.run_suite(["rotation", "anchor_labels", "pipeline", "retrieval"], _tiny(tmp_path),
                           log=None)
  assert not report.errors, [r.error for r in report.errors]
  names = [r.name for r in report.rows]
  assert names[:2] == ["rotation b4 16^3", "anchor labels 64 q, 259 anchors"]
  assert [n.split()[1:3] for n in names if n.startswith("pipeline")] == [
      ["plain", "b4"], ["augmented", "b4"], ["augmented", "cached"]]
  # conftest.py gives 8 CPU devices, so the sharded retrieval row is measured, not skipped.
  assert [n.split()[1] for n in names if n.startswith("retrieval")] == ["exact", "approx", "sharded"]
  for row in report.rows:
    assert row.ours is not None and row.ours > 0, row
    assert row.ours_compile_s is not None and row.ours_compile_s >= 0
  sharded = next(r for r in report.rows if r.name.startswith("retrieval sharded"))
  assert "top-10 agree 100.0%" in sharded.note
  approx = next(r for r in report.rows if r.name.startswith("retrieval approx"))
  assert approx.extra["recall_at_1"] >= 0.95

  path = suite.write_json(report, tmp_path / "out" / "bench.json")
  data = json.loads(path.read_text())
  assert set(data) == {"date", "machine", "settings", "rows"}
  for key in ("cpu_count", "jax", "torch", "device_kind", "backend", "device_count", "load_average"):
    assert key in data["machine"]
  assert data["settings"]["rotation_batch"] == 4
  for row in data["rows"]:
    for key in ("name", "unit", "ours", "alternative", "ratio", "ours_compile_s", "note", "error"):
      assert key in row
  table = suite.format_table(report)
  assert "rotation b4 16^3" in table and "ratio" in table


def test_stage1_row_without_torch(tmp_path, monkeypatch):
  # None in sys.modules makes `import torch` raise ImportError, as if it were not installed.
  monkeypatch.setitem(sys.modules, "torch", None)
  assert suite.torch_version() is None
  report = suite.run_suite(["stage1"], _tiny(tmp_path), log=None)
  assert not report.errors, [r.error for r in report.errors]
  (row,) = report.rows
  assert row.ours > 0 and row.alternative is None and row.ratio is None
  assert "torch not installed" in row.note and "params ours" in row.note
  assert report.machine["torch"] is None
  assert "not installed" in suite.format_table(report)


def test_stage2_and_inference_rows(tmp_path):
  pytest.importorskip("torch")
  report = suite.run_suite(["stage2", "inference"], _tiny(tmp_path), log=None)
  assert not report.errors, [r.error for r in report.errors]
  assert [r.name for r in report.rows] == [
      "stage2 train step b2 32px resnet_tiny", "inference b1 32px resnet_tiny",
      "inference b4 32px resnet_tiny"]
  for row in report.rows:
    _assert_measured(row)
    assert row.alternative is not None and "(equal)" in row.note, row.note
  stage2, single, batch = report.rows
  assert (stage2.unit, stage2.higher_is_better) == ("images/s", True)
  assert stage2.extra["params"] == stage2.extra["torch_params"] > 0
  assert (single.unit, single.higher_is_better) == ("ms/image", False)
  assert (batch.unit, batch.higher_is_better) == ("images/s", True)
  assert single.extra["params"]["model"] > single.extra["params"]["backbone"]
  assert "stage2: ours = " in suite.format_table(report)
  json.loads((suite.write_json(report, tmp_path / "bench.json")).read_text())


def test_stage2_and_inference_rows_without_torch(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "torch", None)
  report = suite.run_suite(["stage2", "inference"], _tiny(tmp_path), log=None)
  assert not report.errors, [r.error for r in report.errors]
  assert len(report.rows) == 3
  for row in report.rows:
    _assert_measured(row)
    assert row.alternative is None and row.ratio is None and row.alternative_compile_s is None
    assert "torch not installed" in row.note and "params ours" in row.note


def test_feed_rows_compare_pipeline_with_the_step():
  def pipe(rate, augment, px=64):
    return suite.Row(f"pipeline b8 {px}px", "examples/s", rate,
                     extra={"augment": augment, "workers": 0, "batch": 8, "image_size": px})

  def step(rate, px):
    return suite.Row(f"stage2 {px}px", "images/s", rate,
                     extra={"image_size": px, "batch": 32, "backbone": "resnet50"})

  rows = suite.feed_rows([pipe(500.0, False), pipe(100.0, True)], [step(4.0, 224), step(25.0, 64)])
  (row,) = rows  # the augmented pipeline row only, against the step at its own size
  assert row.name == "feed pipeline b8 64px w0 vs stage2 step b32 64px"
  assert (row.ours, row.alternative, row.ratio) == (100.0, 25.0, 4.0)
  assert "keeps up" in row.note
  # Another pipeline size: the smallest step size; a slow pipeline is called so.
  (row,) = suite.feed_rows([pipe(10.0, True, px=32)], [step(4.0, 224), step(25.0, 64)])
  assert row.alternative == 25.0 and "too slow" in row.note
  cached = pipe(300.0, True)
  cached.extra["cache_decoded"] = True
  (row,) = suite.feed_rows([cached], [step(25.0, 64)])
  assert row.name == "feed pipeline cached b8 64px w0 vs stage2 step b32 64px" and row.ratio == 12.0
  assert suite.feed_rows([pipe(100.0, True)], []) == []
  assert suite.feed_rows([], [step(25.0, 64)]) == []


def test_a_failing_row_is_reported_not_raised(tmp_path, monkeypatch):
  def broken(settings):
    raise RuntimeError("boom")

  monkeypatch.setitem(suite.ROWS, "broken", broken)
  report = suite.run_suite(["broken"], _tiny(tmp_path), log=None)
  assert [r.error for r in report.errors] == ["RuntimeError: boom"]
  assert "ERROR RuntimeError: boom" in suite.format_table(report)


def test_row_registry():
  assert list(suite.ROWS)[:7] == ["rotation", "anchor_labels", "stage1", "pipeline", "retrieval", "stage2",
                                  "inference"]
  assert suite.check_row_names(["retrieval", "rotation"]) == ["rotation", "retrieval"]
  with pytest.raises(ConfigError, match="unknown benchmark rows"):
    suite.check_row_names(["nope"])
  with pytest.raises(ValueError, match="registered twice"):
    suite.register("rotation")(lambda s: [])
  assert suite.quick_settings().retrieval_sizes == (10_000, 100_000)
  assert suite.SuiteSettings().stage2_image_sizes == (64, 224)
  assert suite.SuiteSettings().stage2_backbone == suite.SuiteSettings().inference_backbone == "resnet50"


def test_ratio_means_ours_is_better():
  assert suite.Row("a", "ms", 2.0, 6.0, higher_is_better=False).ratio == 3.0
  assert suite.Row("b", "volumes/s", 6.0, 2.0).ratio == 3.0
  assert suite.Row("c", "ms", 1.0, None).ratio is None


def test_time_interleaved_rounds_and_warmup():
  """First calls apart, then `warmup` untimed rounds, then timed rounds, alternating between callables."""
  import time
  from disent_jax.bench import timing
  order = []

  def make(name, slow_calls):
    def fn():
      # Slow for the first `slow_calls` calls (compile, then a heap that is still growing), fast after.
      time.sleep(0.04 if order.count(name) < slow_calls else 0.002)
      order.append(name)
    return fn

  t = timing.time_interleaved({"a": make("a", 3), "b": make("b", 1)}, 3, warmup=2)
  assert order == ["a", "b"] + ["a", "b"] * 5
  assert len(t["a"].times_s) == len(t["b"].times_s) == 3
  assert t["a"].first_s >= 0.04 and t["a"].median_s < 0.02  # the 2 slow calls after the first: untimed
  order.clear()
  t = timing.time_interleaved({"a": make("a", 3)}, 3)  # no warm-up: the slow calls are in the median
  assert t["a"].median_s >= 0.04


def test_time_steps_counts_the_first_call_apart():
  """The first call (compile) is timed on its own; the median is of the `steps` later calls."""
  import time
  from disent_jax.bench import timing
  calls = []

  def step():
    time.sleep(0.05 if not calls else 0.01)
    calls.append(1)

  t = timing.time_steps(step, 4)
  assert len(calls) == 5 and len(t["steps_s"]) == 4
  assert t["first_s"] >= 0.05 and 0.01 <= t["step_s"] < 0.05
  assert t["compile_s"] == pytest.approx(t["first_s"] - t["step_s"])
  assert t["min_s"] <= t["step_s"] and t["cpu_s"] >= 0


def test_stage1_variants_name_a_conv_impl_and_optionally_a_layout():
  from disent_jax.bench import stage1  # pylint: disable=import-outside-toplevel
  config = stage1.step_config(16, 8, "auto:channels_last")
  assert (config.model.conv_impl, config.model.layout, config.data.resolution, config.train.batch_size) == (
      "auto", "channels_last", 16, 8)
  config = stage1.step_config(32, 64, "planes")
  assert (config.model.conv_impl, config.model.layout) == ("planes", "auto")  # the default layout kept
  assert stage1.step_config(32, 64).model.conv_impl == "auto"
  with pytest.raises(ConfigError, match="model.layout='NCDHW'"):
    stage1.step_config(32, 64, "auto:NCDHW")
  with pytest.raises(ConfigError, match="model.layout='channels_first' with model.conv_impl='lax'"):
    stage1.step_config(32, 64, "lax:channels_first")
