"""CAD collections: whole CAD databases read from disk (or built procedurally) as lists of `CadModel`.

Sources (see `load_collection` for the spec strings):
  * `load_pascal3d_cad_dir`: a Pascal3D+ `CAD/` directory, `<category>/NN.off` per model or, as in the
    original release, `<category>.mat` struct arrays.
  * `load_modelnet_tree`: a ModelNet-style tree `<class>/{train,test}/*.off`.
  * `load_mesh_folder`: any folder of `.off`/`.obj`/`.ply` meshes.
  * the procedural zoo (`disent_jax.cad.zoo`), the built-in default.

Every model is normalised once, here, by `disent_jax.cad.model.normalize_mesh`, and carries its category,
1-based `cad_index`, `normalization`, `source` path and a name `'<category>/<cad_index:02d>'`.

Bad files do not stop a build: every file is tried, and at the end ONE `CollectionError` lists every bad
file with its problem (in `.problems` and in the message). With `skip_bad=True` each bad file is logged as a
warning instead and the good models are returned.
"""

from __future__ import annotations

import logging
import os
import pathlib
import re
from collections.abc import Sequence

import trimesh

from disent_jax import categories as categories_lib
from disent_jax.cad import mesh_io
from disent_jax.cad import model as model_lib
from disent_jax.errors import CollectionError, ConfigError, MeshError

PathLike = str | os.PathLike

MODELNET_SPLITS: tuple[str, ...] = ("train", "test", "all")

# Pascal3D+ names models NN.off (01, 02, ...); anything else in a category folder is not a CAD model.
_CAD_INDEX_RE = re.compile(r"^\d+$")


class _Problems:
  """Collects (path, problem) pairs while a collection is built, and reports them once at the end."""

  def __init__(self, what: str):
    self.what = what
    self.items: list[tuple[str, str]] = []

  def add(self, path: str, err: Exception) -> None:
    message = str(err)
    # MeshError messages start with '<path>: '; store the problem alone next to the path.
    prefix = f"{path}: "
    self.items.append((path, message[len(prefix):] if message.startswith(prefix) else message))

  def finish(self, models: list[model_lib.CadModel], skip_bad: bool) -> list[model_lib.CadModel]:
    """Returns `models`, or raises one CollectionError listing every bad file (unless skip_bad)."""
    if not self.items:
      return models
    if skip_bad:
      for path, problem in self.items:
        logging.warning("skipping bad CAD file %s: %s", path, problem)
      logging.warning("%s: skipped %d bad file(s), kept %d model(s)", self.what, len(self.items),
                      len(models))
      return models
    lines = "\n".join(f"  {path}: {problem}" for path, problem in self.items)
    raise CollectionError(
        f"{self.what}: {len(self.items)} bad file(s) ({len(models)} good); pass skip_bad=True to skip "
        f"them:\n{lines}", self.items)


def _make_model(category: str, cad_index: int, mesh: trimesh.Trimesh, norm: model_lib.Normalization,
                source: str) -> model_lib.CadModel:
  return model_lib.CadModel(category=category, cad_index=cad_index, mesh=mesh, normalization=norm,
                            source=source, name=f"{category}/{cad_index:02d}")


def _check_root(root: PathLike) -> pathlib.Path:
  root = pathlib.Path(os.path.expanduser(os.fspath(root)))
  if not root.is_dir():
    raise CollectionError(f"{root}: no such directory", [(str(root), "no such directory")])
  return root


def _load_files(entries: list[tuple[str, int, pathlib.Path]],
                problems: _Problems) -> list[model_lib.CadModel]:
  """Loads (category, cad_index, path) entries, recording bad files in `problems`."""
  models = []
  for category, cad_index, path in entries:
    try:
      mesh, norm = mesh_io.load_mesh_with_normalization(path)
    except MeshError as e:
      problems.add(str(path), e)
      continue
    models.append(_make_model(category, cad_index, mesh, norm, str(path)))
  return models


# ---------------------------------------------------------------------------------------------------------
# Pascal3D+.


def load_pascal3d_cad_dir(root: PathLike, *, categories: tuple[str, ...] | list[str] | None = None,
                          skip_bad: bool = False) -> list[model_lib.CadModel]:
  """Loads a Pascal3D+ `CAD/` directory.

  Per category (in `disent_jax.categories.CATEGORIES` order) the models come from `<category>/NN.off`
  (cad_index = NN; gaps such as a missing `car/02.off` keep the real numbers), or, when that folder has no
  `NN.off`, from the original release's `<category>.mat` struct array (cad_index = 1-based position; the
  source is recorded as `<category>.mat#<cad_index>`, which `mesh_io.load_mesh` reads back). A category with
  neither is absent. If `root` holds no category but has a `CAD/` subfolder (the release root), that is used.

  Args:
    root: the `CAD/` directory.
    categories: restrict to these categories (default: all 12).
    skip_bad: log and skip bad files instead of raising.

  Returns:
    The models, ordered by category then cad_index.

  Raises:
    CollectionError: `root` is missing or holds no Pascal3D+ model, or (unless skip_bad) some files are bad;
      the error lists every bad file.
    ConfigError: an unknown category was requested.
  """
  root = _check_root(root)
  wanted = tuple(categories) if categories is not None else categories_lib.CATEGORIES
  unknown = [c for c in wanted if c not in categories_lib.CATEGORIES]
  if unknown:
    raise ConfigError(f"unknown Pascal3D+ categories {unknown} (known: {list(categories_lib.CATEGORIES)})")
  if not any((root / c).is_dir() or (root / f"{c}.mat").is_file() for c in categories_lib.CATEGORIES):
    if (root / "CAD").is_dir():
      root = root / "CAD"
  problems = _Problems(f"Pascal3D+ CAD directory {root}")
  models: list[model_lib.CadModel] = []
  found_any = False
  for category in categories_lib.CATEGORIES:
    if category not in wanted:
      continue
    folder, mat = root / category, root / f"{category}.mat"
    offs = []
    if folder.is_dir():
      offs = sorted((int(p.stem), p) for p in folder.iterdir()
                    if p.suffix.lower() == ".off" and _CAD_INDEX_RE.match(p.stem) and p.is_file())
    if offs:
      found_any = True
      models += _load_files([(category, idx, p) for idx, p in offs], problems)
    elif mat.is_file():
      found_any = True
      models += _load_mat(category, mat, problems)
  if not found_any:
    raise CollectionError(f"{root}: no Pascal3D+ CAD models (expected <category>/NN.off or <category>.mat "
                          f"for one of {list(wanted)})", [(str(root), "no Pascal3D+ CAD models")])
  return problems.finish(models, skip_bad)


def _load_mat(category: str, mat: pathlib.Path, problems: _Problems) -> list[model_lib.CadModel]:
  """The models of one `<category>.mat`; a bad file or a bad model is recorded in `problems`."""
  try:
    entries = mesh_io.read_pascal3d_cad_mat(mat)
  except MeshError as e:
    problems.add(str(mat), e)
    return []
  models = []
  for cad_index, (vertices, faces) in enumerate(entries, start=1):
    source = f"{mat}#{cad_index}"
    try:
      mesh, norm = mesh_io.mesh_from_arrays(vertices, faces, source)
    except MeshError as e:
      problems.add(source, e)
      continue
    models.append(_make_model(category, cad_index, mesh, norm, source))
  return models


# ---------------------------------------------------------------------------------------------------------
# ModelNet and plain folders.


def modelnet_entries(root: PathLike, split: str, classes: Sequence[str] | None = None
                     ) -> list[tuple[str, int, pathlib.Path]]:
  """(class, cad_index, path) of the `.off` files of a ModelNet-style tree's split, without loading them.

  The numbering of `load_modelnet_tree` (which reads its models from here): cad_index = 1-based position
  of the file among the class's train AND test files sorted by name, so a model has the same index
  whichever split is read.

  Args:
    root: the tree's root (not checked: it must be an existing directory).
    split: 'train', 'test' or 'all' (not checked; another value selects nothing).
    classes: read only these class folders (default: every folder).

  Returns:
    The entries, ordered by class name then cad_index.
  """
  root = pathlib.Path(root)
  out = []
  for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
    if classes is not None and class_dir.name not in classes:
      continue
    files = []
    for part in ("train", "test"):
      if (class_dir / part).is_dir():
        files += [(p.name, part, p) for p in (class_dir / part).iterdir()
                  if p.suffix.lower() == ".off" and p.is_file()]
    for cad_index, (_, part, path) in enumerate(sorted(files), start=1):
      if split in ("all", part):
        out.append((class_dir.name, cad_index, path))
  return out


def load_modelnet_tree(root: PathLike, split: str = "train", *,
                       skip_bad: bool = False) -> list[model_lib.CadModel]:
  """Loads a ModelNet-style tree `<class>/{train,test}/*.off`.

  category = the class folder name. cad_index = 1-based position of the file within its class, counting
  the files of BOTH splits sorted by file name (ModelNet numbers test models after train models, so this
  follows the file numbering), so a model has the same cad_index whichever split is loaded.

  Args:
    root: the tree's root (e.g. `ModelNet40/`).
    split: 'train', 'test' or 'all'.
    skip_bad: log and skip bad files instead of raising.

  Returns:
    The models of the split, ordered by class name then cad_index.

  Raises:
    ConfigError: unknown split.
    CollectionError: `root` is missing or holds no `<class>/{train,test}/*.off`, or (unless skip_bad)
      some files are bad; the error lists every bad file.
  """
  if split not in MODELNET_SPLITS:
    raise ConfigError(f"unknown ModelNet split {split!r} (expected one of {MODELNET_SPLITS})")
  root = _check_root(root)
  entries = modelnet_entries(root, split)
  if not entries:
    raise CollectionError(f"{root}: no ModelNet meshes for split {split!r} (expected "
                          "<class>/{train,test}/*.off)", [(str(root), "no ModelNet meshes")])
  problems = _Problems(f"ModelNet tree {root} (split {split})")
  return problems.finish(_load_files(entries, problems), skip_bad)


def load_mesh_folder(root: PathLike, *, skip_bad: bool = False) -> list[model_lib.CadModel]:
  """Loads every `.off`/`.obj`/`.ply` file under `root` (recursively).

  category = the name of the file's immediate parent folder, or 'object' for files directly in `root`.
  cad_index = 1-based position within the category, in sorted order of the paths relative to `root`.

  Args:
    root: the folder.
    skip_bad: log and skip bad files instead of raising.

  Returns:
    The models, ordered by category then cad_index.

  Raises:
    CollectionError: `root` is missing or holds no mesh file, or (unless skip_bad) some files are bad;
      the error lists every bad file.
  """
  root = _check_root(root)
  paths = sorted((p for p in root.rglob("*")
                  if p.suffix.lower() in mesh_io.MESH_EXTENSIONS and p.is_file()),
                 key=lambda p: p.relative_to(root).as_posix())
  if not paths:
    raise CollectionError(f"{root}: no mesh files ({', '.join(mesh_io.MESH_EXTENSIONS)})",
                          [(str(root), "no mesh files")])
  by_category: dict[str, list[pathlib.Path]] = {}
  for p in paths:
    category = "object" if p.parent == root else p.parent.name
    by_category.setdefault(category, []).append(p)
  entries = [(category, cad_index, p)
             for category in sorted(by_category)
             for cad_index, p in enumerate(by_category[category], start=1)]
  problems = _Problems(f"mesh folder {root}")
  return problems.finish(_load_files(entries, problems), skip_bad)


# ---------------------------------------------------------------------------------------------------------
# Spec strings.


def load_collection(spec: str, *, skip_bad: bool = False) -> list[model_lib.CadModel]:
  """Builds a CAD collection from a spec string (as configs name it).

  Specs:
    'zoo'                     the procedural zoo with its default seed;
    'zoo:SEED'                the procedural zoo with an integer seed;
    'pascal3d:/path/to/CAD'   `load_pascal3d_cad_dir`;
    'modelnet:/path[:split]'  `load_modelnet_tree`, split 'train' (default), 'test' or 'all';
    'folder:/path'            `load_mesh_folder`.

  Args:
    spec: the spec string.
    skip_bad: for file collections, log and skip bad files instead of raising.

  Returns:
    The models.

  Raises:
    ConfigError: malformed or unknown spec.
    CollectionError: as for the loader the spec selects.
  """
  if not isinstance(spec, str) or not spec.strip():
    raise ConfigError(f"empty CAD collection spec {spec!r}; {_SPEC_HELP}")
  kind, sep, arg = spec.strip().partition(":")
  kind = kind.lower()
  if kind == "zoo":
    from disent_jax.cad import zoo  # Lazy: the zoo pulls in procedural-geometry code few callers need.
    if not sep:
      return zoo.procedural_zoo()
    try:
      seed = int(arg)
    except ValueError:
      raise ConfigError(f"bad zoo seed in CAD collection spec {spec!r}: expected 'zoo:<int>'") from None
    return zoo.procedural_zoo(seed)
  if kind not in ("pascal3d", "modelnet", "folder"):
    raise ConfigError(f"unknown CAD collection spec {spec!r}; {_SPEC_HELP}")
  if not arg:
    raise ConfigError(f"CAD collection spec {spec!r} has no path; {_SPEC_HELP}")
  if kind == "pascal3d":
    return load_pascal3d_cad_dir(arg, skip_bad=skip_bad)
  if kind == "folder":
    return load_mesh_folder(arg, skip_bad=skip_bad)
  path, split = arg, "train"
  head, colon, tail = arg.rpartition(":")
  if colon and tail in MODELNET_SPLITS:  # Only a known split name counts, so paths may contain ':'.
    path, split = head, tail
  return load_modelnet_tree(path, split, skip_bad=skip_bad)


_SPEC_HELP = ("expected 'zoo', 'zoo:SEED', 'pascal3d:/path/to/CAD', 'modelnet:/path[:train|test|all]' or "
              "'folder:/path'")
