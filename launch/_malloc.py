"""glibc malloc settings for the launch commands that run XLA:CPU steps (training, benchmarks).

XLA:CPU takes every large temporary buffer fresh from malloc, and glibc serves those with mmap/munmap, so
each step page-faults its buffers in again (a fresh 382 MB buffer: ~120 ms of faults vs ~20 ms reused).
These settings keep freed memory in the heap; measured on the Stage I step: 923 -> 676 ms, ResNet-50 at
64 px: 1.69 -> 1.40 s. They must be in the environment before the process starts, hence a one-time re-exec
(Linux only; set DISENT_KEEP_MALLOC=1 to opt out). Imports nothing heavy: it runs before jax is imported.
"""

import os
import sys

MALLOC_TUNABLES = ("glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:"
                   "glibc.malloc.trim_threshold=100000000000")


def reexec_with_malloc_tunables(module: str) -> None:
  """Re-executes `python -m module argv...` once with MALLOC_TUNABLES set (no-op when set or opted out)."""
  if (sys.platform.startswith("linux") and "GLIBC_TUNABLES" not in os.environ
      and not os.environ.get("DISENT_KEEP_MALLOC")):
    os.environ["GLIBC_TUNABLES"] = MALLOC_TUNABLES
    os.execv(sys.executable, [sys.executable, "-m", module, *sys.argv[1:]])
