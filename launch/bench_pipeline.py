"""Input-pipeline throughput: `python -m launch.bench_pipeline --data_dir=DATASET [--workers=0,2]`.

Prints examples/s of `disent_jax.input_pipeline.make_pipeline` (plain and augmented) for each worker count,
to compare with the training step's consumption rate. The measuring code lives in
`disent_jax/bench/pipeline.py` (shared with `launch.benchmark`'s 'pipeline' row, which renders a small
synthetic dataset when given none).
"""

from absl import app
from absl import flags

from disent_jax.bench import pipeline

_DATA_DIR = flags.DEFINE_string("data_dir", None, "A finished dataset directory.", required=True)
_SPLIT = flags.DEFINE_string("split", "train", "Split to read.")
_BATCH = flags.DEFINE_integer("batch", 32, "Batch size.", lower_bound=1)
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 64, "Crop size fed to the network.", lower_bound=8)
_BATCHES = flags.DEFINE_integer("batches", 40, "Timed batches (after 3 warm-up batches).", lower_bound=1)
_WORKERS = flags.DEFINE_list("workers", ["0", "2"], "Worker process counts to time.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  print(f"input pipeline, {_SPLIT.value} split, batch {_BATCH.value}, {_IMAGE_SIZE.value} px crops")
  for workers in (int(w) for w in _WORKERS.value):
    for augment in (False, True):
      res = pipeline.pipeline_rate(_DATA_DIR.value, split=_SPLIT.value, batch=_BATCH.value,
                                   image_size=_IMAGE_SIZE.value, augment=augment, workers=workers,
                                   batches=_BATCHES.value)
      print(f"  workers={workers} augment={str(augment):5s} {res['rate']:8.0f} examples/s")


if __name__ == "__main__":
  app.run(main)
