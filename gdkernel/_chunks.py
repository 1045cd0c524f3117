"""Splitting a sweep's members into equal chunks that fit a memory budget.

Every chunk has the same number of members (the last one is padded with members that do no
work), so it compiles once and every later chunk reuses the program. The chunk size is given,
or derived from a per-device memory budget and an estimate of the bytes one member needs.
"""

from __future__ import annotations

import math
import numbers
import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import numpy as np

from ._optimizers import velocity_copies
from ._validate import as_count

if TYPE_CHECKING:
    from ._kernel import Params

PyTree = Any

# Device bytes of one member: the loop carry (state) exists as the carry in, the carry out
# and the step's temporaries (new iterate, gradient, masked select); four copies bound what XLA
# allocates for the batched loop, history buffers included (checked against
# `Compiled.memory_analysis()` in tests/test_chunks.py).
WORK_FACTOR = 4

# Share of the free memory a sweep takes when no budget is given.
DEFAULT_SHARE = 0.5

# Below this many bytes (device working set, or host result) no memory is queried.
SMALL = 2**26

_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


class Plan(NamedTuple):
    """How a sweep of `n_members` runs: `n_chunks` chunks of `chunk_size` members each."""

    chunk_size: int
    n_chunks: int
    member_bytes: int


def as_chunk_size(value: Any) -> int | None:
    return as_count(value, "chunk_size")


def as_memory_budget(value: Any) -> int | None:
    """Bytes from an int (`2**30`) or a string with a unit (`"512MB"`, `"4GiB"`)."""
    if value is None:
        return None
    if isinstance(value, str):
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", value)
        if match is None or match.group(2).lower() not in _UNITS:
            raise ValueError(
                f"`memory_budget` must be bytes (an int) or a size like '512MB' or '4GiB', "
                f"got {value!r}"
            )
        value = float(match.group(1)) * _UNITS[match.group(2).lower()]
    elif isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"`memory_budget` must be bytes (an int) or a size like '4GiB', got "
            f"{type(value).__name__}"
        )
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"`memory_budget` must be > 0 bytes, got {value}")
    return int(value)


def _member(x0: PyTree, dtype: Any, batched: bool = True) -> tuple[int, int]:
    """(bytes of one member's iterate, bytes of one number of `dtype`); `batched`: the leaves
    of `x0` have the batch on their leading axis."""
    x = sum(
        math.prod(np.shape(leaf)[1:] if batched else np.shape(leaf)) * np.dtype(leaf.dtype).itemsize
        for leaf in jax.tree.leaves(x0)
    )
    return x, np.dtype(dtype).itemsize


def _history(x: int, f: int, rows: int) -> int:
    """Bytes of `rows` history rows, an iterate of `x` bytes and a cost of `f` each."""
    return rows * (x + f)


def result_bytes(x0: PyTree, dtype: Any, history_rows: int) -> int:
    """Host bytes of one member's `Result`: x, grad, cost, step size, iterations, status, history."""
    x, f = _member(x0, dtype)
    return 2 * x + 2 * f + 8 + _history(x, f, history_rows)


def member_bytes(x0: PyTree, dtype: Any, method: Any, history_rows: int) -> int:
    """Estimated device bytes of one member while a chunk runs (loop state, inputs, output).

    With `b_x` the bytes of one iterate and `f` of one float, the state is
    `b_x (2 + v) + 2f + 8 + rows (b_x + f)` (iterate, gradient, `v` velocity copies, cost, step
    size, iteration count, status, history rows); the estimate is `WORK_FACTOR` times that
    plus the member's inputs.
    """
    x, f = _member(x0, dtype)
    state = x * (2 + velocity_copies(method)) + 2 * f + 8 + _history(x, f, history_rows)
    return WORK_FACTOR * state + x + f


# Where Linux shows this process's memory-control group (cgroup v2; v1 under `memory/`).
CGROUP = "/sys/fs/cgroup"


def available_host_bytes() -> int | None:
    """Host memory available to new allocations, or None if unknown: Linux `MemAvailable`,
    lowered to what this process's limits leave it (its control group's, as in a container
    or a batch job, and `ulimit -v`)."""
    found = [b for b in (_machine_bytes(), _cgroup_bytes(), _address_space_bytes()) if b]
    return min(found) if found else None


def _read(path: str) -> str | None:
    try:
        with open(path) as fh:
            return fh.read()
    except OSError:
        return None


def _kib(text: str | None, field: str) -> int | None:
    """The `field:  N kB` line of a /proc file, in bytes."""
    match = re.search(rf"^{field}:\s+(\d+) kB", text or "", re.M)
    return int(match.group(1)) * 1024 if match else None


def _machine_bytes() -> int | None:
    found = _kib(_read("/proc/meminfo"), "MemAvailable")
    if found is not None:
        return found
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _cgroup_bytes() -> int | None:
    """The control group's limit less its use (None: no limit)."""
    for limit, usage in (
        ("memory.max", "memory.current"),
        ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes"),
    ):
        cap, used = _read(os.path.join(CGROUP, limit)), _read(os.path.join(CGROUP, usage))
        if cap is None or used is None:
            continue
        cap, used = cap.strip(), used.strip()
        if cap.isdigit() and used.isdigit() and int(cap) < 2**60:  # v1 writes no limit huge
            return max(int(cap) - int(used), 1)
    return None


def _address_space_bytes() -> int | None:
    """What `ulimit -v` (RLIMIT_AS) leaves this process (None: no limit)."""
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    soft = resource.getrlimit(resource.RLIMIT_AS)[0]
    size = _kib(_read("/proc/self/status"), "VmSize")
    if soft == resource.RLIM_INFINITY or size is None:
        return None
    return max(soft - size, 1)


def default_budget(devices: list[Any]) -> int | None:
    """Per-device bytes a sweep may use when no budget is given: half of what is free.

    An accelerator reports its own limit (`Device.memory_stats()`); CPU devices share the
    host's available memory.
    """
    stats = devices[0].memory_stats() if hasattr(devices[0], "memory_stats") else None
    if stats and "bytes_limit" in stats:
        free = min(
            d.memory_stats()["bytes_limit"] - d.memory_stats().get("bytes_in_use", 0)
            for d in devices
        )
        return int(DEFAULT_SHARE * max(free, 0))
    host = available_host_bytes()
    return None if host is None else int(DEFAULT_SHARE * host / len(devices))


def _size(n: int) -> str:
    """Bytes in MB, or in kB or bytes below a megabyte (a small budget reads as it is)."""
    if n >= 1e6:
        return f"{n / 1e6:,.1f} MB"
    return f"{n / 1e3:,.1f} kB" if n >= 1e3 else f"{int(n):,} bytes"


def plan(
    n_members: int,
    n_devices: int,
    per_member: int,
    chunk_size: int | None,
    budget: int | None,
    budget_given: bool,
    history_rows: int,
) -> Plan:
    """The chunk size (a multiple of `n_devices`) and count for a sweep.

    Args:
        n_members: members in the grid.
        n_devices: devices sharing every chunk.
        per_member: `member_bytes` of one member.
        chunk_size: the user's `chunk_size` (rounded up to a multiple of `n_devices`), or None.
        budget: bytes per device a chunk may use, or None for no limit.
        budget_given: whether `budget` came from the user (for the error message).
        history_rows: rows of the history buffer per member (0 when off), for the message.

    Raises:
        ValueError: one member does not fit in the budget.
    """
    whole = -(-n_members // n_devices) * n_devices
    if chunk_size is not None:
        size = -(-chunk_size // n_devices) * n_devices
    elif budget is None:
        size = whole
    else:
        per_device = budget // per_member
        if per_device < 1:
            source = "`memory_budget`" if budget_given else "half the free memory"
            detail = (
                f" (its history buffer has {history_rows} rows; raise `history_every` or lower "
                "`max_iter`)"
                if history_rows
                else ""
            )
            raise ValueError(
                f"one member needs about {_size(per_member)} of device memory{detail}, more "
                f"than {source} ({_size(budget)} per device)"
            )
        size = per_device * n_devices
    size = min(size, whole)
    return Plan(size, -(-n_members // size), per_member)


def check_host(n_members: int, per_result: int, history_rows: int) -> None:
    """Raise when a result held in host memory would not fit there.

    Raises:
        ValueError: naming the bytes needed and `out=` as the way out.
    """
    host = available_host_bytes()
    need = n_members * per_result
    if host is not None and need > host:
        what = f" ({history_rows} history rows per member)" if history_rows else ""
        raise ValueError(
            f"the sweep's result needs about {_size(need)} of host memory{what}, but about "
            f"{_size(host)} is available; stream it to a file with `out='sweep.npz'`"
            + (" or record less history" if history_rows else "")
        )


def check_disk(path: Any, n_members: int, per_result: int) -> None:
    """Raise when the disk holding `path` (`out=`) lacks room for the results twice: the
    spool files they are written to as chunks finish, then the `.npz` packed from them.

    Raises:
        ValueError: naming `out`, the bytes needed and the bytes free.
    """
    need = 2 * n_members * per_result
    free = shutil.disk_usage(Path(path).parent).free
    if need > free:
        raise ValueError(
            f"`out`: the results take about {_size(need // 2)}, written twice (spool files "
            f"beside {str(path)!r} as chunks finish, then the .npz packed from them): "
            f"{_size(need)} in all, but {_size(free)} is free there; free some space, point "
            "`out` at a larger disk, or record less (`history`)"
        )


def check_history(x0: PyTree, dtype: Any, history_rows: int) -> None:
    """Raise when one run's history (`history_rows` iterates and costs of `x0`) would not fit
    in host memory.

    Raises:
        ValueError: naming the bytes needed and `history_every` and `max_iter`.
    """
    need = _history(*_member(x0, dtype, batched=False), history_rows)
    host = available_host_bytes()
    if host is not None and need > host:
        raise ValueError(
            f"`history=True` keeps {history_rows:,} rows, about {_size(need)}, but about "
            f"{_size(host)} of memory is available: raise `history_every` or lower `max_iter`"
        )


def members(x0: PyTree, rows: Params, start: int, stop: int, size: int) -> tuple[PyTree, Params]:
    """Host arrays of members `start..stop` of the grid, padded to `size` members.

    Member `k` is row `k // n_guesses` of `rows` (its learning rate and any other number the
    sweep grids over) from guess `k % n_guesses`. Padding repeats the last real member with
    learning rate 0: such a member is `INVALID` at `init` and never iterates.
    """
    n_guesses = np.shape(jax.tree.leaves(x0)[0])[0]
    k = np.minimum(np.arange(start, start + size), stop - 1)
    xs = jax.tree.map(lambda leaf: np.asarray(leaf)[k % n_guesses], x0)
    params = jax.tree.map(
        lambda leaf: np.asarray(leaf)[k // n_guesses] if np.ndim(leaf) else leaf, rows
    )
    rates = np.array(params.learning_rate)
    rates[stop - start :] = 0
    return xs, params._replace(learning_rate=rates)
