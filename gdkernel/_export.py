"""Writing every member of a sweep (or one run) to a file: CSV, JSON or NPZ, by the suffix.

CSV and JSON hold one record per member in the grid's order, learning rate major and
starting point minor (member `i * n_x0 + j` is learning rate `i` from starting point `j`),
with a column for each other grid axis (`b1`, `momentum`, ...) between `learning_rate` and
`x0`; NPZ is the file of `sweep(..., out=...)`, which `gdkernel.load_sweep` reads back (see
`_store`). Every format keeps the grid's axes. Numbers are written in the shortest form
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
from ._result import Axes, Result, Status, SweepResult

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
    """The grid flattened into one row per member, in the grid's order (learning rate major,
    starting point minor), as text: `learning_rate`, a column per other grid axis (by name),
    `x0`, `x`, `cost`, `iterations` and `status` (names).

    Each distinct axis value is formatted once, each member's numbers once per component.
    """
    status = np.asarray(grid.status)
    shape = status.shape
    n_rows = math.prod(shape[:-1])
    axes = [
        ("learning_rate", grid.learning_rate),
        *zip(grid.grid_axes.names, grid.grid_axes.values, strict=True),
    ]
    out = []
    for k, (name, values) in enumerate(axes):
        (part,), _ = _numbers(values, 1)
        inner = math.prod(shape[k + 1 :])  # members per value, in a row of the axes before
        out.append(
            Column(name, [[t for t in part for _ in range(inner)] * math.prod(shape[:k])], False)
        )
    x0, x0_vector = _numbers(grid.initial_guess, 1)
    x, x_vector = _numbers(grid.x, status.ndim)
    codes, index = np.unique(status.ravel(), return_inverse=True)
    names = np.array([Status(int(c)).name for c in codes], dtype=object)[index].tolist()
    return [
        *out,
        Column("x0", [part * n_rows for part in x0], x0_vector),
        Column("x", x, x_vector),
        Column("cost", _numbers(grid.cost, status.ndim)[0], False),
        Column("iterations", _numbers(grid.iterations, status.ndim)[0], False),
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


def _axis_names(keys: list[str], path: Path) -> list[str]:
    """The grid axes a table's columns name: those between `learning_rate` and `x0`."""
    first = next(
        (k for k, key in enumerate(keys) if key == "x0" or key.startswith("x0_")), len(keys)
    )
    if not keys or keys[0] != "learning_rate" or first == len(keys):
        raise ValueError(f"{str(path)!r} is not a table of gdkernel (learning_rate, ..., x0, ...)")
    return keys[1:first]


def _grid_shape(columns: list[np.ndarray], path: Path) -> tuple[int, ...]:
    """The grid's shape, read off the axis columns of its members (in the grid's order): an
    axis's next value starts where it or an axis before it changes."""
    n = len(columns[0])
    changed = np.zeros(max(n - 1, 0), dtype=bool)
    shape: list[int] = []
    rows = 1
    for column in columns:
        changed |= column[1:] != column[:-1]
        runs = 1 + int(np.count_nonzero(changed))
        if runs % rows:
            raise ValueError(f"{str(path)!r} is not a grid of its axes")
        shape.append(runs // rows)
        rows = runs
    if n % rows:
        raise ValueError(f"{str(path)!r} is not a grid of its axes")
    shape.append(n // rows)
    for k, column in enumerate(columns):  # every column: the mesh of the axes' values
        inner = math.prod(shape[k + 1 :])
        values = column[::inner][: shape[k]]
        if not np.array_equal(np.tile(np.repeat(values, inner), math.prod(shape[:k])), column):
            raise ValueError(f"{str(path)!r} is not a grid of its axes")
    return tuple(shape)


def read_table(path: Path) -> SweepResult:
    """A CSV or JSON file of `write_csv` / `write_json` back as a `SweepResult` of NumPy
    arrays, its grid axes (`learning_rate`, any other, `initial_guess`) restored. Those files
    hold `x`, `cost`, `iterations` and `status` per member, not the gradient or the last
    step: `grad` and `step_size` come back NaN. JSON records its dtype; CSV does not, and its
    numbers come back as float64.

    Raises:
        ValueError: the file is not such a table (another JSON document, a truncated one, a
            member without one of the columns).
    """
    try:
        return _read_table(path)
    except (json.JSONDecodeError, KeyError, TypeError, IndexError, AttributeError) as err:
        raise ValueError(
            f"{str(path)!r} is not a table written by gdkernel's command line "
            f"({type(err).__name__}: {err})"
        ) from None


def _read_table(path: Path) -> SweepResult:
    if path.suffix.lower() == ".json":
        with open(path) as f:
            doc = json.load(f)
        dtype = np.dtype(doc.get("dtype", "float64"))
        records = doc["members"]

        def value(record: dict, name: str) -> Any:
            return np.nan if record[name] is None else record[name]

        x0 = [value(r, "x0") for r in records]
        x = [value(r, "x") for r in records]
        scalar = value
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

        def scalar(record: dict, name: str) -> Any:
            return float(record[name])

    if not records:
        raise ValueError(f"{str(path)!r} holds no members")
    names = _axis_names(list(records[0]), path)
    columns = [
        np.array([scalar(r, name) for r in records], dtype) for name in ("learning_rate", *names)
    ]
    shape = _grid_shape(columns, path)
    xs = np.asarray(x, dtype).reshape(*shape, *np.shape(x[0]))
    try:
        statuses = [Status[str(r["status"])] for r in records]
    except KeyError as err:
        raise ValueError(f"{str(path)!r} holds an unknown status {err}") from None
    # each axis's values: its column at the first member of each of its steps
    strides = [math.prod(shape[k + 1 :]) for k in range(len(columns))]
    values = [c[::stride][:n] for c, stride, n in zip(columns, strides, shape, strict=False)]
    return SweepResult(
        x=xs,
        cost=np.asarray([scalar(r, "cost") for r in records], dtype).reshape(shape),
        grad=np.full_like(xs, np.nan),
        step_size=np.full(shape, np.nan, dtype),
        iterations=np.asarray([int(r["iterations"]) for r in records], np.int32).reshape(shape),
        status=np.asarray(statuses, np.int32).reshape(shape),
        history=None,
        learning_rate=values[0],
        initial_guess=np.asarray(x0[: shape[-1]], dtype),
        grid_axes=Axes(tuple(names), tuple(values[1:])),
    )
