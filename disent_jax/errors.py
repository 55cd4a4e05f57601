"""The project's own exception types.

Every error raised on bad user input derives from `DisentError`, so callers (and the fuzz tests) can tell
"this input is bad, and here is why" apart from a bug.
"""


class DisentError(Exception):
  """Base class of every error raised by disent_jax on bad input or state."""


class MeshError(DisentError, ValueError):
  """A CAD mesh file is unreadable or invalid. The message names the file and the problem."""


class CollectionError(DisentError):
  """A CAD collection has bad files. `problems` lists (path, message) for every bad file found."""

  def __init__(self, message: str, problems: list[tuple[str, str]] | None = None):
    super().__init__(message)
    self.problems = list(problems or [])


class AnnotationError(DisentError, ValueError):
  """An annotation file (e.g. a Pascal3D+ .mat) is unreadable or has wrong fields."""


class ImageError(DisentError, ValueError):
  """An image is unreadable, or a bounding box is invalid for it."""


class ManualDirError(DisentError, FileNotFoundError):
  """A dataset's manual download directory is missing or incomplete; the message lists what is missing."""


class VoxelBankError(DisentError, ValueError):
  """A voxel bank file is unreadable or inconsistent. The message names the file."""


class CheckpointError(DisentError):
  """Checkpoints in a workdir are missing, corrupt, or belong to another stage."""


class ConfigError(DisentError, ValueError):
  """A configuration value is invalid (e.g. batch size not divisible by the device count)."""
