"""Input-pipeline throughput: `python -m launch.bench_pipeline --data_dir=DATASET [--workers=0,2]`.

Prints examples/s of `disent_jax.input_pipeline.make_pipeline` (plain and augmented) for each worker count,
to compare with the training step's consumption rate.
"""

import time

from absl import app
from absl import flags

from disent_jax import input_pipeline

_DATA_DIR = flags.DEFINE_string("data_dir", None, "A finished dataset directory.", required=True)
_SPLIT = flags.DEFINE_string("split", "train", "Split to read.")
_BATCH = flags.DEFINE_integer("batch", 32, "Batch size.", lower_bound=1)
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 64, "Crop size fed to the network.", lower_bound=8)
_BATCHES = flags.DEFINE_integer("batches", 40, "Timed batches (after 3 warm-up batches).", lower_bound=1)
_WORKERS = flags.DEFINE_list("workers", ["0", "2"], "Worker process counts to time.")


def main(argv):
  del argv
  print(f"input pipeline, {_SPLIT.value} split, batch {_BATCH.value}, {_IMAGE_SIZE.value} px crops")
  for workers in (int(w) for w in _WORKERS.value):
    for augment in (False, True):
      it = input_pipeline.make_pipeline(_DATA_DIR.value, _SPLIT.value, batch_size=_BATCH.value,
                                        image_size=_IMAGE_SIZE.value, augment=augment,
                                        worker_count=workers)
      for _ in range(3):
        next(it)
      t0 = time.perf_counter()
      for _ in range(_BATCHES.value):
        next(it)
      rate = _BATCHES.value * _BATCH.value / (time.perf_counter() - t0)
      if hasattr(it, "close"):
        it.close()
      print(f"  workers={workers} augment={str(augment):5s} {rate:8.0f} examples/s")


if __name__ == "__main__":
  app.run(main)
