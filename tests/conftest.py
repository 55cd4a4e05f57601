"""Test setup: JAX on the CPU with 8 fake devices, and the shared real-data folder.

XLA_FLAGS must be set before jax is first imported, which is why it lives here (pytest imports conftest.py
before any test module).
"""
import os
import pathlib

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flag = "--xla_force_host_platform_device_count=8"
if _flag not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()

# One persistent XLA compilation cache per test session: many tests build the same tiny models and steps
# (each training call jits a fresh function object), and on 2 CPU cores compiling dominates their time.
# A fresh directory per session, so no test ever sees programs compiled by another version of the code.
import tempfile  # noqa: E402

os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="disent_jax_xla_cache_"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import pytest  # noqa: E402

# ../shared/data beside the checkout (the layout of our machines and CI); override with DISENT_SHARED_DATA.
SHARED_DATA = pathlib.Path(
    os.environ.get("DISENT_SHARED_DATA",
                   pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
  """The real-data folder; skips the test cleanly when it is absent."""
  if not SHARED_DATA.is_dir():
    pytest.skip(f"real data folder {SHARED_DATA} is absent")
  return SHARED_DATA
