"""Where a chunked sweep's results land: host arrays, or an `.npz` file written as chunks finish.

The file is a plain NumPy `.npz` (uncompressed): `numpy.load(path)["cost"]` works without
gdkernel. Each field is one array with the grid axes in front; a pytree-valued field (`x`,
`grad`, the history's `x`, `initial_guess`) is stored leaf by leaf as `x.0`, `x.1`, ... and its
structure in the `__tree__` entry. `load_sweep` reads it back as a `SweepResult`, optionally
memory-mapped so a grid larger than host memory can be read piece by piece. It is gdkernel's
one results file: `save_sweep` writes a `SweepResult` in memory the same way (the command
line's `--out FILE.npz`), and `out=` refuses any other suffix before the sweep runs.

While the sweep runs, every array is a memory-mapped `.npy` file in a hidden folder beside the
target, written one chunk at a time; at the end they are packed into the `.npz` (streamed,
never whole in memory) and the folder is removed.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import struct
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import jax
import numpy as np

from ._result import Axes, History, Result, SweepResult

PyTree = Any

FORMAT = "gdkernel.sweep/1"
_TREE_FIELDS = ("x", "grad", "history", "initial_guess")


# ------------------------------------------------------------------------ pytree structure


def _encode(node: Any, leaves: list[Any], name: str) -> Any:
    """A JSON description of a pytree of dicts, lists, tuples and `History`; leaves appended."""
    if node is None:
        return None
    if isinstance(node, History):
        return {"history": [_encode(node.x, leaves, name), _encode(node.cost, leaves, name)]}
    if type(node) is dict:
        if not all(isinstance(key, str) for key in node):
            raise TypeError(f"`out=` stores dicts with string keys only; `{name}` has others")
        return {"dict": [[key, _encode(value, leaves, name)] for key, value in node.items()]}
    if type(node) in (list, tuple):
        return {type(node).__name__: [_encode(item, leaves, name) for item in node]}
    if isinstance(node, (np.ndarray, np.generic, jax.Array)):
        leaves.append(node)
        return len(leaves) - 1
    raise TypeError(
        f"`out=` stores starting points that are arrays or dicts, lists and tuples of arrays; "
        f"`{name}` holds a {type(node).__name__}"
    )


def _decode(spec: Any, leaves: list[Any]) -> Any:
    if spec is None:
        return None
    if isinstance(spec, int):
        return leaves[spec]
    ((kind, items),) = spec.items()
    if kind == "history":
        return History(_decode(items[0], leaves), _decode(items[1], leaves))
    if kind == "dict":
        return {key: _decode(value, leaves) for key, value in items}
    parts = [_decode(item, leaves) for item in items]
    return parts if kind == "list" else tuple(parts)


def _keys(field: str, n_leaves: int) -> list[str]:
    return [field] if n_leaves == 1 else [f"{field}.{k}" for k in range(n_leaves)]


def check_storable(initial_guess: PyTree) -> None:
    """Raise at call time if `out=` could not store this starting point's structure."""
    _encode(initial_guess, [], "initial_guesses")


# ------------------------------------------------------------------------------- writing


def _pack(path: Path, fields: dict[str, Any], spooled: dict[int, Path]) -> None:
    """Write the fields of a `SweepResult` to `path` (via `path.part`, replaced at the end).

    A leaf whose `id` is in `spooled` is a memory-mapped `.npy` file, copied as it is (never
    whole in memory); every other leaf is written from memory.
    """
    tree: dict[str, Any] = {}
    axes: Axes = fields.get("grid_axes") or Axes()
    part = path.with_name(path.name + ".part")
    try:
        with zipfile.ZipFile(part, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            for field in SweepResult._fields:
                value = fields[field]
                leaves: list[Any] = []
                if field in _TREE_FIELDS:
                    tree[field] = _encode(value, leaves, field)
                elif field == "grid_axes":
                    leaves = list(axes.values)
                elif value is not None:
                    leaves = [value]
                keys = (
                    [f"{field}.{k}" for k in range(len(leaves))]
                    if field == "grid_axes"
                    else _keys(field, len(leaves))
                )
                for key, leaf in zip(keys, leaves, strict=True):
                    file = spooled.get(id(leaf))
                    with zf.open(f"{key}.npy", "w", force_zip64=True) as dst:
                        if file is not None:
                            leaf.flush()
                            with open(file, "rb") as src:
                                shutil.copyfileobj(src, dst, 1 << 24)
                        else:
                            np.lib.format.write_array(dst, np.asarray(leaf))
            meta = {"format": FORMAT, "tree": tree, "axes": list(axes.names)}
            with zf.open("__tree__.npy", "w") as dst:
                np.lib.format.write_array(dst, np.array(json.dumps(meta)))
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)


def save_sweep(grid: SweepResult, path: str | os.PathLike) -> None:
    """Write a `SweepResult` to an `.npz` file in the layout of `sweep(..., out=path)`.

    The one results file of gdkernel, whoever writes it (`sweep(out=...)`, the command line's
    `--out FILE.npz`): `load_sweep` reads it back, `numpy.load` reads its arrays.

    Args:
        grid: the result of `sweep` (or a run given grid axes of length 1).
        path: the file, ending in `.npz`.

    Raises:
        ValueError: `path` does not end in `.npz`, or its folder does not exist.
    """
    target = as_out_path(path)
    assert target is not None
    host = jax.device_get(grid)
    _pack(target, host._asdict(), {})


# ------------------------------------------------------------------------------- stores


class HostStore:
    """Results of a chunked sweep in host (NumPy) arrays, filled chunk by chunk."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape  # the grid's: (n_learning_rates, *other settings, n_guesses)
        self.flat: Result | None = None

    def _allocate(self, leaf: np.ndarray) -> np.ndarray:
        return np.empty((math.prod(self.shape), *leaf.shape[1:]), leaf.dtype)

    def write(self, start: int, chunk: Result) -> None:
        """Store `chunk` (host arrays, members on the leading axis) from member `start` on."""
        if self.flat is None:
            self.flat = jax.tree.map(self._allocate, chunk)
        for dst, src in zip(jax.tree.leaves(self.flat), jax.tree.leaves(chunk), strict=True):
            dst[start : start + len(src)] = src

    def finish(
        self, learning_rate: np.ndarray, initial_guess: PyTree, axes: Axes
    ) -> SweepResult | None:
        assert self.flat is not None
        grid = jax.tree.map(lambda a: a.reshape(*self.shape, *a.shape[1:]), self.flat)
        return SweepResult(
            **grid._asdict(),
            learning_rate=learning_rate,
            initial_guess=initial_guess,
            grid_axes=axes,
        )

    def abort(self) -> None:
        self.flat = None


class NpzStore(HostStore):
    """Results streamed to memory-mapped spool files, packed into an `.npz` at the end."""

    def __init__(self, path: Path, shape: tuple[int, ...]) -> None:
        super().__init__(shape)
        self.path = path
        self.spool = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        self.files: dict[int, Path] = {}  # id of a spooled array -> its file

    def _allocate(self, leaf: np.ndarray) -> np.ndarray:
        file = self.spool / f"{len(self.files)}.npy"
        grid = np.lib.format.open_memmap(
            file, mode="w+", dtype=leaf.dtype, shape=(*self.shape, *leaf.shape[1:])
        )
        flat = grid.reshape(math.prod(self.shape), *leaf.shape[1:])
        _reserve(file)
        self.files[id(flat)] = file
        return flat

    def finish(
        self, learning_rate: np.ndarray, initial_guess: PyTree, axes: Axes
    ) -> SweepResult | None:
        assert self.flat is not None
        fields = dict(zip(Result._fields, self.flat, strict=True))
        fields.update(learning_rate=learning_rate, initial_guess=initial_guess, grid_axes=axes)
        try:
            _pack(self.path, fields, self.files)
        finally:
            fields.clear()  # let go of the memory maps before removing their files
            self.abort()
        return load_sweep(self.path, mmap=True)

    def abort(self) -> None:
        self.flat = None
        shutil.rmtree(self.spool, ignore_errors=True)


def _reserve(file: Path) -> None:
    """Claim the disk blocks of a spool file at once, so that a disk without room for it
    fails here, with `OSError`, and not later, when a chunk is written to its memory map (the
    system then kills the process with a bus error). File systems that cannot reserve are
    left to the memory map as before."""
    if not hasattr(os, "posix_fallocate"):
        return
    with open(file, "r+b") as fh:
        try:
            os.posix_fallocate(fh.fileno(), 0, os.fstat(fh.fileno()).st_size)
        except OSError as err:
            if err.errno == errno.ENOSPC:
                raise OSError(
                    errno.ENOSPC, f"`out`: no space left on the disk for the spool file {file}"
                ) from err


class NullStore(HostStore):
    """Another process writes the file (multi-process run): keep nothing, return None."""

    def write(self, start: int, chunk: Result) -> None:
        del start, chunk

    def finish(
        self, learning_rate: np.ndarray, initial_guess: PyTree, axes: Axes
    ) -> SweepResult | None:
        return None


def cannot_write(path: Path) -> str | None:
    """Why a file cannot be written at `path` (the system's reason), or None. Tried by
    opening it to append (nothing an existing file holds changes; a file made for the trial
    is removed): a permission bit alone misses read-only file systems, immutable files and
    folders such as `/proc`."""
    existed = path.exists()
    try:
        with open(path, "ab"):
            pass
    except OSError as err:
        return err.strerror or type(err).__name__
    if not existed:
        path.unlink(missing_ok=True)
    return None


def missing_folder(path: Path) -> str | None:
    """Why the folder of `path` cannot hold it (it does not exist, or a file stands where a
    folder is named), or None."""
    folder = path.parent
    if folder.is_dir():
        return None
    # the nearest part of it that exists: a file there blocks the rest
    found = folder if folder.exists() else next((p for p in folder.parents if p.exists()), None)
    if found is not None and not found.is_dir():
        return f"{str(found)!r} is a file, not a folder"
    return f"the folder {str(folder)!r} does not exist"


def as_out_path(out: Any) -> Path | None:
    """`out=` as a path ending in `.npz` (added when there is no suffix, as `numpy.savez`
    does), checked before any work: the format, the folder, the permission to write there.

    Raises:
        TypeError: `out` is not a path.
        ValueError: `out` ends in another suffix (only `.npz` is written), is a folder, or
            its folder does not exist or cannot be written to.
    """
    if out is None:
        return None
    if not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"`out` must be a file path (str or os.PathLike), got {type(out).__name__}")
    path = Path(out)
    if path.is_dir():  # (before a suffix is added: `out="results"` names a file next to it)
        raise ValueError(f"`out` is a folder: {str(path)!r}; name a file in it, ending in .npz")
    if not path.suffix:
        path = path.with_name(path.name + ".npz")
    elif path.suffix.lower() != ".npz":
        raise ValueError(f"`out` must end in .npz, the one format `sweep` writes; got {str(out)!r}")
    if path.is_dir():
        raise ValueError(f"`out` is a folder: {str(path)!r}")
    missing = missing_folder(path)
    if missing is not None:
        raise ValueError(f"`out`: {missing}")
    reason = cannot_write(path)
    if reason is not None:
        raise ValueError(f"`out`: cannot write {str(path)!r} ({reason})")
    return path


# ------------------------------------------------------------------------------ loading


def _memmap(path: Path, info: zipfile.ZipInfo) -> np.ndarray | None:
    """A read-only memory map of an uncompressed `.npy` member of a zip, or None."""
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        local = fh.read(30)
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        fh.seek(info.header_offset + 30 + name_len + extra_len)
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        offset = fh.tell()
    if dtype.hasobject:
        return None
    if 0 in shape:
        return np.empty(shape, dtype)
    return np.memmap(path, dtype, "r", offset, shape, "F" if fortran else "C")


def load_sweep(path: str | os.PathLike, *, mmap: bool = False) -> SweepResult:
    """Read a sweep written with `sweep(..., out=path)` back as a `SweepResult`.

    The command line's `--out` files read back too: its `.npz` is this file; its `.csv` and
    `.json` tables hold `x`, `cost`, `iterations` and `status` per member (`grad` and
    `step_size` come back NaN; CSV numbers as float64, JSON's in its recorded dtype).

    Args:
        path: the `.npz` file (or the command line's `.csv` or `.json`).
        mmap: memory-map the arrays instead of reading them (read-only `numpy.memmap`s):
            nothing is read until it is indexed, so a grid larger than host memory can be
            read piece by piece.

    Returns:
        A `SweepResult` of NumPy arrays with every grid axis it was written with (`axes`,
        `coords`), and `best()`, `member(*index)` and `counts()`.

    Raises:
        ValueError: the file was not written by `sweep(..., out=...)`.

    Example:
        >>> import gdkernel as gd, numpy as np
        >>> grid = gd.sweep(lambda x: x**2, np.linspace(-3, 3, 4), [0.1, 0.2], out="/tmp/g.npz")
        >>> gd.load_sweep("/tmp/g.npz").status.shape
        (2, 4)
    """
    path = Path(path)
    if path.suffix.lower() not in (".npz", ".csv", ".json"):
        raise ValueError(
            f"`path` must be a .npz file of gdkernel.sweep (or the command line's .csv or "
            f".json), got {str(path)!r}"
        )
    if path.suffix.lower() in (".csv", ".json"):  # the command line's tables
        from ._export import read_table

        return read_table(path)
    with np.load(path, allow_pickle=False) as npz, zipfile.ZipFile(path) as zf:
        if "__tree__" not in npz.files:
            raise ValueError(f"{str(path)!r} was not written by gdkernel.sweep(..., out=...)")
        meta = json.loads(str(npz["__tree__"]))
        if meta.get("format") != FORMAT:
            raise ValueError(f"{str(path)!r} has format {meta.get('format')!r}, not {FORMAT!r}")

        def read(key: str) -> np.ndarray:
            if mmap:
                mapped = _memmap(path, zf.getinfo(f"{key}.npy"))
                if mapped is not None:
                    return mapped
            return npz[key]

        fields = {}
        for field in SweepResult._fields:
            if field in _TREE_FIELDS:
                spec = meta["tree"][field]
                leaves = [read(key) for key in _keys(field, _count_leaves(spec))]
                fields[field] = _decode(spec, leaves)
            elif field == "grid_axes":
                names = tuple(meta.get("axes", ()))
                values = tuple(read(f"{field}.{k}") for k in range(len(names)))
                fields[field] = Axes(names, values)
            else:
                fields[field] = read(field)
    return SweepResult(**fields)


def _count_leaves(spec: Any) -> int:
    if spec is None:
        return 0
    if isinstance(spec, int):
        return 1
    ((kind, items),) = spec.items()
    if kind == "dict":
        return sum(_count_leaves(value) for _, value in items)
    return sum(_count_leaves(item) for item in items)
