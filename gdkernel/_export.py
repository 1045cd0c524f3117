"""Writing every member of a sweep to a file: CSV, JSON or NPZ, chosen by the suffix.

CSV and JSON hold one record per member, learning rate major (member `i * n_x0 + j` is
learning rate `i` from starting point `j`); NPZ keeps the grid axes `(n_lr, n_x0, ...)`.
Numbers are written in the shortest form that reads back to the same value in the run's
dtype.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ._result import Status, SweepResult

SUFFIXES = (".csv", ".json", ".npz")


def number(value: Any) -> str:
    """The shortest text that reads back to `value` in its dtype, e.g. `0.1` for float32 0.1."""
    return str(np.asarray(value)[()])


def _json_number(value: Any) -> float | int | None:
    value = np.asarray(value)[()]
    if np.issubdtype(value.dtype, np.integer):
        return int(value)
    out = float(number(value))
    return out if math.isfinite(out) else None


def members(grid: SweepResult) -> dict[str, np.ndarray]:
    """The grid flattened into one row per member: `learning_rate`, `x0`, `x`, `cost`,
    `iterations` and `status` (names), learning rate major."""
    status = np.asarray(grid.status)
    n_lr, n_g = status.shape
    x0 = np.asarray(grid.initial_guess)
    x = np.asarray(grid.x)
    return {
        "learning_rate": np.repeat(np.asarray(grid.learning_rate), n_g),
        "x0": np.tile(x0, (n_lr,) + (1,) * (x0.ndim - 1)),
        "x": x.reshape(n_lr * n_g, *x.shape[2:]),
        "cost": np.asarray(grid.cost).ravel(),
        "iterations": np.asarray(grid.iterations).ravel(),
        "status": np.array([Status(int(c)).name for c in status.ravel()]),
    }


def _header(name: str, value: np.ndarray) -> list[str]:
    if value.ndim == 1:
        return [name]
    return [f"{name}_{k}" for k in range(value.shape[1])]


def _cells(value: np.ndarray) -> list[str]:
    if value.ndim == 0:
        return [value.item() if value.dtype.kind == "U" else number(value)]
    return [number(v) for v in value]


def write_csv(grid: SweepResult, path: Path) -> None:
    """One row per member; a vector `x0` or `x` is spread over columns `x0_0, x0_1, ...`."""
    cols = members(grid)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([h for name, value in cols.items() for h in _header(name, value)])
        for r in range(cols["cost"].shape[0]):
            writer.writerow([c for value in cols.values() for c in _cells(value[r])])


def write_json(grid: SweepResult, path: Path, meta: dict[str, Any]) -> None:
    """`meta` (function, dtype, options), the status counts and a list of members.

    A vector `x0` or `x` is a list; a non-finite number is written as `null`.
    """
    cols = members(grid)
    records = []
    for r in range(cols["cost"].shape[0]):
        record: dict[str, Any] = {}
        for name, value in cols.items():
            v = value[r]
            if name == "status":
                record[name] = str(v)
            elif np.ndim(v):
                record[name] = [_json_number(e) for e in v]
            else:
                record[name] = _json_number(v)
        records.append(record)
    doc = {
        **meta,
        "counts": {s.name: n for s, n in grid.counts().items()},
        "members": records,
    }
    path.write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n")


def write_npz(grid: SweepResult, path: Path) -> None:
    """The grid as arrays: `learning_rate (n_lr,)`, `x0 (n_x0, ...)`, `x (n_lr, n_x0, ...)`,
    `cost`, `iterations`, `status` (codes) and `status_name` (strings), all `(n_lr, n_x0)`."""
    status = np.asarray(grid.status)
    names = np.array([Status(int(c)).name for c in status.ravel()]).reshape(status.shape)
    with path.open("wb") as f:
        np.savez(
            f,
            learning_rate=np.asarray(grid.learning_rate),
            x0=np.asarray(grid.initial_guess),
            x=np.asarray(grid.x),
            cost=np.asarray(grid.cost),
            iterations=np.asarray(grid.iterations),
            status=status,
            status_name=names,
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
