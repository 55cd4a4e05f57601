"""Wall-clock timing shared by the benchmarks: first call apart, interleaved repeats, medians.

Every benchmark times several things that do the same work (ours and an alternative). They are timed
interleaved (a, b, a, b, ...) rather than one after the other, so that a burst of load from someone else
on a shared machine hits all of them alike, and the median of the repeats is reported. The first call of
each is timed on its own: for jitted code it includes tracing and compilation, so "compile time" is
reported as first call minus the steady-state median. Rows whose steady state takes a few calls to reach
(the train steps: under the launchers' malloc settings the heap grows over the first steps, measured 1.03
and 0.95 s for the ResNet-50 64 px step's first two timed calls against 0.70-0.73 s after) ask for untimed
warm-up rounds; training runs thousands of steps, so the steady state is what a user gets.

The callables must block until their work is done (`jax.block_until_ready`), or only dispatch is timed.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any, Callable, Mapping


@dataclasses.dataclass(frozen=True)
class Timing:
  """Seconds of one timed callable.

  Attributes:
    first_s: the first call (tracing + compilation + one run, for jitted code).
    times_s: the steady-state repeats.
  """
  first_s: float
  times_s: tuple[float, ...]

  @property
  def median_s(self) -> float:
    return statistics.median(self.times_s)

  @property
  def compile_s(self) -> float:
    """First call minus the steady-state median (never negative)."""
    return max(self.first_s - self.median_s, 0.0)


def time_interleaved(fns: Mapping[str, Callable[[], Any]], repeats: int, *, warmup: int = 0,
                     max_seconds: float | None = None, min_repeats: int = 3) -> dict[str, Timing]:
  """Times each callable's first call, then `warmup` untimed and `repeats` timed interleaved rounds.

  Args:
    fns: name -> callable doing (and waiting for) one unit of work.
    repeats: timed rounds.
    warmup: untimed rounds after the first calls, before the timed ones.
    max_seconds: stop after the round during which this many seconds of timed rounds have passed, once at
      least `min_repeats` rounds are done (long rows, e.g. retrieval over 1e6 entries, stay bounded).
    min_repeats: see max_seconds.

  Returns:
    name -> Timing.
  """
  if repeats < 1:
    raise ValueError(f"repeats must be >= 1, got {repeats}")
  first = {}
  for name, fn in fns.items():
    start = time.perf_counter()
    fn()
    first[name] = time.perf_counter() - start
  for _ in range(warmup):
    for fn in fns.values():
      fn()
  times: dict[str, list[float]] = {name: [] for name in fns}
  began = time.perf_counter()
  for r in range(repeats):
    for name, fn in fns.items():
      start = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - start)
    if (max_seconds is not None and r + 1 >= min(min_repeats, repeats)
        and time.perf_counter() - began > max_seconds):
      break
  return {name: Timing(first[name], tuple(times[name])) for name in fns}


def time_one(fn: Callable[[], Any], repeats: int, **kwargs) -> Timing:
  """`time_interleaved` of a single callable."""
  return time_interleaved({"fn": fn}, repeats, **kwargs)["fn"]


def time_steps(step: Callable[[], Any], steps: int) -> dict[str, Any]:
  """Times `step` once (compile + first call), then `steps` more times, wall and process CPU time.

  Args:
    step: a callable that returns when its work is done (blocks on device results).
    steps: timed calls after the first.

  Returns:
    dict with first_s (compile + first call), steps_s (every timed call), step_s (median), min_s, cpu_s
    (median process CPU seconds per call: on a shared machine less sensitive than wall time to others'
    load) and compile_s (first_s - step_s, at least 0).
  """
  start = time.perf_counter()
  step()
  first = time.perf_counter() - start
  times, cpu_times = [], []
  for _ in range(steps):
    start, cpu = time.perf_counter(), time.process_time()
    step()
    times.append(time.perf_counter() - start)
    cpu_times.append(time.process_time() - cpu)
  median = statistics.median(times)
  return {"first_s": first, "steps_s": times, "step_s": median, "min_s": min(times),
          "cpu_s": statistics.median(cpu_times), "compile_s": max(first - median, 0.0)}
