"""Fast tests of the benchmark suite (disent_jax/bench/suite.py): tiny sizes, the JSON layout, no torch.

Timings themselves are not checked (they depend on the machine); what is checked is that every row runs,
produces positive numbers where it measured something, and that the report is valid JSON with the keys
readers of bench.json rely on.
"""

from __future__ import annotations

import json
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
      retrieval_k=10, retrieval_max_seconds=5.0)


def test_quick_subset_writes_a_valid_report(tmp_path):
  report = suite.run_suite(["rotation", "anchor_labels", "pipeline", "retrieval"], _tiny(tmp_path),
                           log=None)
  assert not report.errors, [r.error for r in report.errors]
  names = [r.name for r in report.rows]
  assert names[:2] == ["rotation b4 16^3", "anchor labels 64 q, 259 anchors"]
  assert sum(n.startswith("pipeline") for n in names) == 2
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


def test_a_failing_row_is_reported_not_raised(tmp_path, monkeypatch):
  def broken(settings):
    raise RuntimeError("boom")

  monkeypatch.setitem(suite.ROWS, "broken", broken)
  report = suite.run_suite(["broken"], _tiny(tmp_path), log=None)
  assert [r.error for r in report.errors] == ["RuntimeError: boom"]
  assert "ERROR RuntimeError: boom" in suite.format_table(report)


def test_row_registry():
  assert list(suite.ROWS)[:5] == ["rotation", "anchor_labels", "stage1", "pipeline", "retrieval"]
  assert suite.check_row_names(["retrieval", "rotation"]) == ["rotation", "retrieval"]
  with pytest.raises(ConfigError, match="unknown benchmark rows"):
    suite.check_row_names(["nope"])
  with pytest.raises(ValueError, match="registered twice"):
    suite.register("rotation")(lambda s: [])
  assert suite.quick_settings().retrieval_sizes == (10_000, 100_000)


def test_ratio_means_ours_is_better():
  assert suite.Row("a", "ms", 2.0, 6.0, higher_is_better=False).ratio == 3.0
  assert suite.Row("b", "volumes/s", 6.0, 2.0).ratio == 3.0
  assert suite.Row("c", "ms", 1.0, None).ratio is None
