"""A sweep as a table (`pandas.DataFrame`) or a labelled array set (`xarray.Dataset`).

Both are optional extras, imported only here, when asked for.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from ._result import Status
from ._types import PyTree

if TYPE_CHECKING:
    from ._result import SweepResult


def _import(module: str, extra: str, what: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"`{what}` needs {module}: pip install 'gdkernel[{extra}]'") from None


def _components(name: str, tree: PyTree, lead: int) -> list[tuple[str, np.ndarray]]:
    """One `(column name, values)` per scalar component of `tree`, whose leaves carry `lead`
    leading axes: `x` for a scalar, `x[0]`, `x[1]`... for a vector, `x.b0` for a dict entry."""
    out = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        key = jax.tree_util.keystr(path, simple=True, separator=".")
        base = f"{name}.{key}" if key else name
        leaf = np.asarray(leaf)
        inner = leaf.shape[lead:]
        if not inner:
            out.append((base, leaf))
            continue
        flat = leaf.reshape(*leaf.shape[:lead], -1)
        for k, index in enumerate(np.ndindex(*inner)):
            out.append((f"{base}[{','.join(map(str, index))}]", flat[..., k]))
    return out


def _status_names(status: np.ndarray) -> np.ndarray:
    names = np.array([s.name for s in Status], dtype=object)
    codes = np.array([int(s) for s in Status])
    return names[np.searchsorted(codes, status)]


def to_dataframe(grid: SweepResult) -> Any:
    """One row per member: a column per grid axis (a vector or pytree starting point as one
    column per component), the final `x` likewise, `cost`, `iterations`, `step_size` and
    `status` by name. Rows in the grid's order (learning rate slowest, guess fastest)."""
    pandas = _import("pandas", "pandas", "SweepResult.to_dataframe")
    shape = np.shape(grid.status)
    index = np.indices(shape).reshape(len(shape), -1)
    columns: dict[str, Any] = {}
    for axis, (name, values) in enumerate(grid.coords.items()):
        for column, component in _components(name, values, 1):
            columns[column] = component[index[axis]]
    for column, component in _components("x", grid.x, len(shape)):
        columns[column] = component.reshape(-1)
    for field in ("cost", "iterations", "step_size"):
        columns[field] = np.asarray(getattr(grid, field)).reshape(-1)
    columns["status"] = _status_names(np.asarray(grid.status).reshape(-1))
    return pandas.DataFrame(columns)


def to_xarray(grid: SweepResult) -> Any:
    """A `Dataset` with the grid's axes as named dimensions: the settings axes carry their
    values as coordinates, `initial_guess` is numbered and its components are coordinates
    along it. Variables: each component of `x` (`x`, `x[0]`, ... or `x.b0`), `cost`,
    `iterations`, `step_size`, `status` (codes, with their names in the attributes)."""
    xarray = _import("xarray", "xarray", "SweepResult.to_xarray")
    dims = grid.axes
    shape = np.shape(grid.status)
    coords: dict[str, Any] = {
        name: (name, np.asarray(values))
        for name, values in grid.coords.items()
        if name != "initial_guess"
    }
    coords["initial_guess"] = ("initial_guess", np.arange(shape[-1]))
    for column, component in _components("initial_guess", grid.initial_guess, 1):
        if column != "initial_guess":
            coords[column] = ("initial_guess", component)
        else:
            coords["initial_guess_value"] = ("initial_guess", component)
    data: dict[str, Any] = {
        column: (dims, component) for column, component in _components("x", grid.x, len(shape))
    }
    for field in ("cost", "iterations", "step_size"):
        data[field] = (dims, np.asarray(getattr(grid, field)))
    data["status"] = (
        dims,
        np.asarray(grid.status),
        {
            "flag_values": [int(s) for s in Status],
            "flag_meanings": " ".join(s.name for s in Status),
        },
    )
    return xarray.Dataset(data, coords=coords)
