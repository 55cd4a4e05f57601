"""launch/demo_colab.ipynb runs headless (nbclient) on the tiny config and writes the report.

The notebook trains nothing here: it gets a copy of the session's tiny workdir trained by
`test_predictor.trained_tiny_workdir` (trained once per session), so `end_to_end.run` in the notebook
reuses both stages and re-runs the evaluation, the report and the figures; then the Predictor cells run.
"""

from __future__ import annotations

import os
import pathlib
import shutil

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

from test_predictor import trained_tiny_workdir  # noqa: E402  (tests/ is on sys.path, see _helpers)

REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "launch" / "demo_colab.ipynb"
KERNEL = "disent-test-python3"


def _kernel_for_this_interpreter(prefix: pathlib.Path, monkeypatch) -> str:
  """Registers a kernel spec running THIS interpreter in a private folder (a user's python3 spec may point
  at another Python), and makes Jupyter look there first."""
  from ipykernel import kernelspec
  kernelspec.install(kernel_name=KERNEL, prefix=str(prefix))
  monkeypatch.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
  return KERNEL


def test_demo_notebook_runs(tmp_path_factory, tmp_path, monkeypatch):
  nb = nbformat.read(NOTEBOOK, as_version=4)
  nbformat.validate(nb)
  workdir = tmp_path / "workdir"
  shutil.copytree(trained_tiny_workdir(tmp_path_factory), workdir)
  # The notebook must write these again (the stages are reused, the evaluation is not).
  for name in ("results.json", "results.md", "rotation_cdf.png", "per_category.png", "qualitative.png"):
    (workdir / name).unlink(missing_ok=True)
  monkeypatch.setenv("DISENT_NOTEBOOK_WORKDIR", str(workdir))
  monkeypatch.setenv("DISENT_CONFIG", "tiny")
  monkeypatch.setenv("DISENT_REPO", str(REPO))
  # The kernel sees one CPU device, as a user's would (conftest.py gives this process 8 fake ones).
  monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", "").replace(
      "--xla_force_host_platform_device_count=8", "").strip())
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  kernel = _kernel_for_this_interpreter(tmp_path / "kernel", monkeypatch)
  client = nbclient.NotebookClient(nb, timeout=300, kernel_name=kernel,
                                   resources={"metadata": {"path": str(tmp_path)}})
  client.execute()  # raises CellExecutionError (with the cell's traceback) if any cell fails

  assert (workdir / "results.json").is_file() and (workdir / "results.md").is_file()
  for name in ("rotation_cdf.png", "per_category.png", "qualitative.png"):
    assert (workdir / name).is_file(), name
  outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
  assert not [o for o in outputs if o.output_type == "error"]
  text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
  assert "retrieval top-1" in text  # end_to_end's summary line
  assert '"category"' in text and "ground truth:" in text  # the Predictor on a test-split image
  images = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.get("data", {})]
  # Three report figures, two learning curves, the test-split overlay (+ Pascal3D+ overlays if present).
  assert len(images) >= 6
  shared = REPO.parent / "shared" / "data" / "pascal3d_imagenet_aeroplane_samples"
  if shared.is_dir() and "DISENT_SHARED_DATA" not in os.environ:
    assert len(images) >= 9 and "val-sample-0:" in text
  else:
    assert "skipped" in text or len(images) >= 9
