"""Which devices a sweep runs on, and how its members are dealt to them.

A sweep on several devices runs one program per device over a one-axis view of a
`jax.sharding.Mesh`; every device gets the same number of members (the batch is padded with
members that do no work).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

DEALS = ("interleaved", "contiguous")
AXIS = "members"

# How a sweep deals members to devices. Each device runs its members in lock step until its
# slowest one stops, so neighbours in the grid (similar learning rates, similar run lengths)
# are best kept together: a device of fast members then stops early and frees its share of
# the machine. Interleaving would put a slow member on every device. On W3 with 4 CPU devices
# it measured 2.56 s contiguous vs 3.98 s interleaved (benchmarks/test_scale_bench.py).
# Interleaving pays when a device's time tracks its useful iterations instead (a loop that
# compacts its running members).
DEFAULT_DEAL = "contiguous"


def as_mesh(devices: Any) -> Mesh | None:
    """The mesh a sweep shards its members over, or None for a run on one device.

    Args:
        devices: None (the default: every device of every process when JAX runs several
            processes, else every local device of the default backend when there are two or
            more), a sequence of `jax.Device`, or a `jax.sharding.Mesh` (its members are
            split over all its axes).

    Returns:
        A mesh of two or more devices, or None when the sweep runs on a single device (see
        `single_device`).

    Raises:
        TypeError: `devices` is not None, a mesh or a sequence of devices.
        ValueError: the sequence is empty or holds a device twice.
    """
    if devices is None:
        found = jax.devices() if jax.process_count() > 1 else jax.local_devices()
        return Mesh(np.array(found), (AXIS,)) if len(found) > 1 else None
    if isinstance(devices, Mesh):
        return devices if devices.devices.size > 1 else None
    found = _device_list(devices)
    return Mesh(np.array(found), (AXIS,)) if len(found) > 1 else None


def single_device(devices: Any) -> jax.Device | None:
    """The one device a sweep was pinned to (`devices=[d]`), or None for JAX's default."""
    if devices is None:
        return None
    if isinstance(devices, Mesh):
        return devices.devices.flat[0] if devices.devices.size == 1 else None
    found = _device_list(devices)
    return found[0] if len(found) == 1 else None


def _device_list(devices: Any) -> list[jax.Device]:
    if isinstance(devices, (str, bytes)) or not isinstance(devices, Sequence):
        raise TypeError(
            "`devices` must be None, a sequence of jax.Device or a jax.sharding.Mesh, "
            f"got {type(devices).__name__}"
        )
    found = list(devices)
    if not found:
        raise ValueError("`devices` must name at least one device")
    for device in found:
        if not isinstance(device, jax.Device):
            raise TypeError(
                f"`devices` must hold jax.Device objects (e.g. jax.devices()), got "
                f"{type(device).__name__}"
            )
    if len(set(found)) != len(found):
        raise ValueError("`devices` names a device more than once")
    return found


def axis_names(mesh: Mesh) -> tuple[str, ...]:
    """All the mesh's axes: the members are split over every one of them."""
    return tuple(mesh.axis_names)


def spans_processes(mesh: Mesh) -> bool:
    """True when some devices of the mesh belong to other processes (a multi-host run)."""
    here = jax.process_index()
    return any(device.process_index != here for device in mesh.devices.flat)


def deal(size: int, n_devices: int, scheme: str = DEFAULT_DEAL) -> np.ndarray:
    """The order in which a chunk's members are laid out so that device `d` gets block `d`.

    `shard_map` hands device `d` the `d`-th contiguous block of the leading axis. With
    `"interleaved"`, device `d` gets members `d, d + n, d + 2n, ...` (`n` devices): neighbours in
    the grid (similar learning rates, similar run lengths) are spread over all devices. With
    `"contiguous"`, device `d` gets the `d`-th block of the grid as is.

    Args:
        size: the chunk size, a multiple of `n_devices`.
        n_devices: how many devices share the chunk.
        scheme: `"interleaved"` or `"contiguous"`.

    Returns:
        `order`, a permutation of `range(size)`: position `k` of the laid-out chunk holds member
        `order[k]`. `np.argsort(order)` undoes it.

    Example:
        >>> deal(6, 2, "interleaved").tolist()
        [0, 2, 4, 1, 3, 5]
    """
    if scheme not in DEALS:
        raise ValueError(f"`deal` must be one of {DEALS}, got {scheme!r}")
    if size % n_devices:
        raise ValueError(f"chunk size {size} is not a multiple of {n_devices} devices")
    order = np.arange(size)
    if scheme == "interleaved":
        order = order.reshape(size // n_devices, n_devices).T.ravel()
    return order
