"""TFDS's dataset writer without TensorFlow, for splits of any size.

TFDS 4.9.10 writes array_record datasets without TensorFlow except in one place: its `Shuffler` keeps a
split's serialized examples in memory up to `shuffle.MAX_MEM_BUFFER_SIZE` (1 GB) and then spills them to
temporary "bucket" files through `tf.io.gfile`, which imports TensorFlow. A split larger than 1 GB then
fails with `ModuleNotFoundError: No module named 'tensorflow'` after rendering or reading most of it (found
when 30,000 synthetic training images, ~1.2 GB of PNGs, failed at ~25,000; a full PASCAL3D+ or
ModelNet40 download is larger still).

`use_local_bucket_files()` swaps TFDS's bucket class for one that writes and reads the same file format
with Python's own files. It changes nothing when TensorFlow is importable (its `gfile` also serves remote
paths), and is idempotent. The dataset builders of this package call it before `download_and_prepare`.
"""

from __future__ import annotations

import errno
import importlib.util
import os
import struct

from tensorflow_datasets.core import shuffle


class LocalBucket(shuffle._Bucket):  # pylint: disable=protected-access
  """`shuffle._Bucket` on local files: records of (16-byte key, 8-byte size, data), as TFDS writes them."""

  def add(self, key: int, data: bytes) -> None:
    """Appends one (key, data) record to the bucket's file."""
    if not self._fobj:
      os.makedirs(os.path.dirname(os.fspath(self._path)), exist_ok=True)
      self._fobj = self._open_for_append()
    self._fobj.write(shuffle._hkey_to_bytes(key))  # pylint: disable=protected-access
    # '=Q': standard 8-byte size, the same as TFDS's reader expects.
    self._fobj.write(struct.pack("=Q", len(data)))
    self._fobj.write(data)
    self._length += 1
    self._size += len(data)

  def _open_for_append(self):
    try:
      return open(self._path, "ab")
    except OSError as e:
      # Up to 1000 buckets are open at once (hashed keys): TFDS raises the limit on the same error.
      if e.errno != errno.EMFILE:
        raise
      shuffle._increase_open_files_limit()  # pylint: disable=protected-access
      return open(self._path, "ab")

  def flush(self) -> None:
    """Closes the file (a later `add` appends: bucket files have unique names)."""
    if self._fobj:
      self._fobj.close()
      self._fobj = None

  def read_values(self):
    """Yields the (hkey, data) records in the order they were added."""
    self.flush()
    if not os.path.exists(self._path):  # created but never written
      return
    with open(self._path, "rb") as f:
      while True:
        buff = f.read(shuffle.HKEY_SIZE_BYTES)
        if not buff:
          break
        size = struct.unpack("=Q", f.read(8))[0]
        yield shuffle._read_hkey(buff), f.read(size)  # pylint: disable=protected-access

  def del_file(self) -> None:
    """Removes the bucket's file, if any."""
    self.flush()
    try:
      os.remove(self._path)
    except FileNotFoundError:
      pass


def tensorflow_available() -> bool:
  """Whether TensorFlow can be imported (without importing it)."""
  return importlib.util.find_spec("tensorflow") is not None


def use_local_bucket_files() -> bool:
  """Makes TFDS's shuffler spill to local files without TensorFlow (see the module docstring).

  Returns:
    True when the local bucket class is in use after the call (TensorFlow absent), False when TFDS's own
    is kept (TensorFlow present).
  """
  if tensorflow_available():
    return False
  shuffle._Bucket = LocalBucket  # pylint: disable=protected-access
  return True
