"""Azimuth / elevation errors of a trained workdir's Predictor on labelled photos (issue 7).

  python -m launch.eval_viewpoints --workdir=runs/x \
      --labels=../shared/data/pascal3d_imagenet_aeroplane_samples/labels.csv \
      [--kinds=real_pascal3d_imagenet_val] [--out=DIR] [--top_k=3] [--step=N]

Predicts every selected image whole (no box), prints the markdown table (ours beside the CSV's reference
predictions) and writes results.json + results.md to --out, default `<workdir>/viewpoint_check/`. Bad input
(missing labels, bad CSV row, unknown kind, no checkpoint) ends with a one-line `error: ...` and exit
status 1, no traceback.
"""

from __future__ import annotations

import os

from absl import app
from absl import flags
from absl import logging

from disent_jax import errors
from disent_jax import viewpoint_check

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir with Stage I + II checkpoints.")
_LABELS = flags.DEFINE_string("labels", None, "Labels CSV (image paths relative to its folder).")
_KINDS = flags.DEFINE_list("kinds", None, "Comma-separated kinds to evaluate (default: all).")
_OUT = flags.DEFINE_string("out", None, "Report folder (default: <workdir>/viewpoint_check).")
_TOP_K = flags.DEFINE_integer("top_k", 3, "Pose hypotheses for the best-of-k azimuth error.", lower_bound=1)
_STEP = flags.DEFINE_integer("step", None, "Stage II checkpoint step (default: the latest).")
# Required flags are checked in `main` (see launch/predict.py for why not mark_flags_as_required).


def run(workdir: str, labels: str, *, kinds: list[str] | None = None, out: str | None = None,
        top_k: int = 3, step: int | None = None) -> tuple[dict, str]:
  """Evaluates and writes the report.

  Args:
    workdir: the training workdir.
    labels: path of the labels CSV.
    kinds: kinds to evaluate, or None for all.
    out: report folder, or None for `<workdir>/viewpoint_check`.
    top_k: pose hypotheses considered by the best-of-k azimuth error.
    step: Stage II checkpoint step, or None for the latest.

  Returns:
    (the `viewpoint_check.evaluate` result, the markdown path).

  Raises:
    DisentError: bad input (the message says which and why).
  """
  from disent_jax import predictor as predictor_lib  # pylint: disable=import-outside-toplevel
  # The labels (and the kinds) are checked before the slow restore, so a typo fails at once.
  rows = viewpoint_check.read_labels(labels)
  kinds = kinds or None
  viewpoint_check.select_kinds(rows, kinds)  # raises on an unknown kind
  predictor = predictor_lib.Predictor.from_workdir(workdir, step=step, top_k=top_k)
  result = viewpoint_check.evaluate(predictor, rows, os.path.dirname(os.path.abspath(labels)),
                                    kinds=kinds, top_k=top_k)
  _, md_path = viewpoint_check.write_report(result, out or os.path.join(workdir, "viewpoint_check"))
  return result, md_path


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # the table goes to stdout; checkpoint restores log INFO lines
  missing = [f"--{f.name}" for f in (_WORKDIR, _LABELS) if not f.value]
  if missing:
    raise app.UsageError(f"missing required flag(s): {', '.join(missing)}")
  try:
    result, md_path = run(_WORKDIR.value, _LABELS.value, kinds=_KINDS.value, out=_OUT.value,
                          top_k=_TOP_K.value, step=_STEP.value)
  except errors.DisentError as e:  # bad input: a clear message, not a traceback
    raise SystemExit(f"error: {e}") from e
  print(viewpoint_check.markdown(result))
  print(f"report: {md_path}")


if __name__ == "__main__":
  app.run(main)
