"""Writing every member of a sweep (or one run) to a file: CSV, JSON or NPZ, by the suffix.

CSV and JSON hold one record per member, learning rate major (member `i * n_x0 + j` is
learning rate `i` from starting point `j`); NPZ is the file of `sweep(..., out=...)`, which
`gdkernel.load_sweep` reads back (see `_store`). Numbers are written in the shortest form
that reads back to the same value in the run's dtype. A run is written as a grid of one
learning rate and one starting point, so every file has one layout.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from . import _store
from ._result import Result, Status, SweepResult

SUFFIXES = (".csv", ".json", ".npz")
_ROWS_PER_WRITE = 1 << 16
_NOT_FINITE = frozenset({"nan", "inf", "-inf"})


def number(value: Any) -> str:
    """The shortest text that reads back to `value` in its dtype, e.g. `0.1` for float32 0.1."""
    return str(np.asarray(value)[()])


def json_value(value: Any) -> Any:
    """A number as JSON (a list for a vector): the shortest text that reads back to it in its
    dtype, `None` (null) when not finite."""
    value = np.asarray(value)
    if value.ndim:
        return [json_value(v) for v in value]
    value = value[()]
    if np.issubdtype(value.dtype, np.integer):
        return int(value)
    out = float(number(value))
    return out if math.isfinite(out) else None


def _texts(values: np.ndarray) -> list[str]:
    """`number` of every element of a 1-D array, without a Python call per element where
    possible: float64 and integers through Python's own shortest `repr`."""
    if values.dtype.kind in "iub":
        return list(map(str, values.tolist()))
    if values.dtype == np.float64:
        return list(map(repr, values.tolist()))  # the same text as NumPy's, 10x faster
    return values.astype(str).tolist()


class Column(NamedTuple):
    """One field of every member as text: a list of strings per component."""

    name: str
    parts: list[list[str]]
    vector: bool  # `x0` or `x` of a vector problem: several components

    def headers(self) -> list[str]:
        return [f"{self.name}_{k}" for k in range(len(self.parts))] if self.vector else [self.name]


def _numbers(values: Any, members_axes: int) -> tuple[list[list[str]], bool]:
    values = np.asarray(values)
    flat = values.reshape(int(np.prod(values.shape[:members_axes])), -1)
    return [_texts(flat[:, k]) for k in range(flat.shape[1])], values.ndim > members_axes


def columns(grid: SweepResult) -> list[Column]:
    """The grid flattened into one row per member, learning rate major, as text:
    `learning_rate`, `x0`, `x`, `cost`, `iterations` and `status` (names).

    Each distinct learning rate and starting point is formatted once, each member's numbers
    once per component.
    """
    status = np.asarray(grid.status)
    n_lr, n_g = status.shape
    lr, _ = _numbers(grid.learning_rate, 1)
    x0, x0_vector = _numbers(grid.initial_guess, 1)
    x, x_vector = _numbers(grid.x, 2)
    codes, index = np.unique(status.ravel(), return_inverse=True)
    names = np.array([Status(int(c)).name for c in codes], dtype=object)[index].tolist()
    return [
        Column("learning_rate", [[t for t in part for _ in range(n_g)] for part in lr], False),
        Column("x0", [part * n_lr for part in x0], x0_vector),
        Column("x", x, x_vector),
        Column("cost", _numbers(grid.cost, 2)[0], False),
        Column("iterations", _numbers(grid.iterations, 2)[0], False),
        Column("status", [names], False),
    ]


def write_csv(grid: SweepResult, path: Path) -> None:
    """One row per member; a vector `x0` or `x` is spread over columns `x0_0, x0_1, ...`."""
    cols = columns(grid)
    with path.open("w", newline="") as f:
        csv.writer(f).writerow([h for col in cols for h in col.headers()])
        cells = [part for col in cols for part in col.parts]
        for start in range(0, len(cells[0]), _ROWS_PER_WRITE):
            rows = zip(*(part[start : start + _ROWS_PER_WRITE] for part in cells), strict=True)
            f.write("\r\n".join(map(",".join, rows)) + "\r\n")


def _json_texts(part: list[str]) -> list[str]:
    return [t if t not in _NOT_FINITE else "null" for t in part]


def write_json(grid: SweepResult, path: Path, meta: dict[str, Any]) -> None:
    """`meta` (function, dtype, the grid's values, options), the status counts and a list of
    members, one per line.

    A vector `x0` or `x` is a list; a non-finite number is written as `null`.
    """
    fields = []
    for col in columns(grid):
        if col.name == "status":
            fields.append((col.name, [json.dumps(t) for t in col.parts[0]]))
        elif col.vector:
            parts = [_json_texts(part) for part in col.parts]
            fields.append((col.name, ["[" + ", ".join(v) + "]" for v in zip(*parts, strict=True)]))
        else:
            fields.append((col.name, _json_texts(col.parts[0])))
    keys = [f'"{name}": ' for name, _ in fields]
    head = {**meta, "counts": {s.name: n for s, n in grid.counts().items()}}
    text = json.dumps(head, indent=1, allow_nan=False)
    with path.open("w") as f:
        f.write(text[:-2] + ',\n "members": [\n')  # `head` without its closing "\n}"
        n = len(fields[0][1])
        for start in range(0, n, _ROWS_PER_WRITE):
            rows = zip(*(v[start : start + _ROWS_PER_WRITE] for _, v in fields), strict=True)
            records = (
                "  {" + ", ".join(k + v for k, v in zip(keys, row, strict=True)) + "}"
                for row in rows
            )
            f.write(",\n".join(records))
            f.write(",\n" if start + _ROWS_PER_WRITE < n else "\n")
        f.write(" ]\n}\n")


def write_npz(grid: SweepResult, path: Path) -> None:
    """The grid in the layout of `sweep(..., out=path)`: `gdkernel.load_sweep` reads it."""
    _store.save_sweep(grid, path)


def as_grid(res: Result, learning_rate: Any, initial_guess: Any) -> SweepResult:
    """One run as a sweep of one learning rate and one starting point (grid axes of 1)."""
    res = jax.tree.map(lambda leaf: np.asarray(leaf)[None, None], res)
    guess = np.asarray(initial_guess)
    return SweepResult(
        *res,
        learning_rate=np.asarray([learning_rate], guess.dtype),
        initial_guess=guess[None],
    )


def write(grid: SweepResult, path: str | Path, meta: dict[str, Any]) -> None:
    """Write every member of `grid` to `path`, in the format its suffix names.

    Args:
        grid: a `SweepResult` whose starting points are plain arrays (not pytrees).
        path: a file name ending in `.csv`, `.json` or `.npz`.
        meta: what the JSON file records about the run (ignored by the other formats).

    Raises:
        ValueError: the suffix is not one of `.csv`, `.json`, `.npz`.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        write_csv(grid, path)
    elif suffix == ".json":
        write_json(grid, path, meta)
    elif suffix == ".npz":
        write_npz(grid, path)
    else:
        raise ValueError(f"`--out` must end in {', '.join(SUFFIXES)}; got {str(path)!r}")


def read_table(path: Path) -> SweepResult:
    """A CSV or JSON file of `write_csv` / `write_json` back as a `SweepResult` of NumPy
    arrays. Those files hold `x`, `cost`, `iterations` and `status` per member, not the
    gradient or the last step: `grad` and `step_size` come back NaN. JSON records its dtype;
    CSV does not, and its numbers come back as float64."""
    if path.suffix.lower() == ".json":
        with open(path) as f:
            doc = json.load(f)
        dtype = np.dtype(doc.get("dtype", "float64"))
        records = doc["members"]

        def value(record: dict, name: str) -> Any:
            return np.nan if record[name] is None else record[name]

        x0 = [value(r, "x0") for r in records]
        x = [value(r, "x") for r in records]
    else:
        dtype = np.dtype(np.float64)
        with open(path, newline="") as f:
            records = list(csv.DictReader(f))

        def vector(record: dict, name: str) -> Any:
            if name in record:
                return float(record[name])
            parts = sorted(
                (int(k[len(name) + 1 :]), float(v))
                for k, v in record.items()
                if k.startswith(f"{name}_") and k[len(name) + 1 :].isdigit()
            )
            return [v for _, v in parts]

        x0 = [vector(r, "x0") for r in records]
        x = [vector(r, "x") for r in records]
    if not records:
        raise ValueError(f"{str(path)!r} holds no members")
    rates = np.array([float(r["learning_rate"]) for r in records], dtype)
    n_lr = 1 + int(np.count_nonzero(rates[1:] != rates[:-1]))
    n_g = len(records) // n_lr
    if n_lr * n_g != len(records):
        raise ValueError(f"{str(path)!r} is not a learning-rate x starting-point grid")
    shape = (n_lr, n_g)
    xs = np.asarray(x, dtype).reshape(*shape, *np.shape(x[0]))
    try:
        statuses = [Status[str(r["status"])] for r in records]
    except KeyError as err:
        raise ValueError(f"{str(path)!r} holds an unknown status {err}") from None
    return SweepResult(
        x=xs,
        cost=np.asarray([float(r["cost"]) for r in records], dtype).reshape(shape),
        grad=np.full_like(xs, np.nan),
        step_size=np.full(shape, np.nan, dtype),
        iterations=np.asarray([int(r["iterations"]) for r in records], np.int32).reshape(shape),
        status=np.asarray(statuses, np.int32).reshape(shape),
        history=None,
        learning_rate=rates[::n_g],
        initial_guess=np.asarray(x0[:n_g], dtype),
    )
