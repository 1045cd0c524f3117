"""Progress of a long sweep: counts from inside the compiled loop, and after every chunk.

Two sources feed one `Tracker`:

- inside the compiled loop, `monitor` (traced into the batched loop when
  `Options.progress_every` is `k > 0`) sends a few counts of its batch to the host with
  `jax.debug.callback` every `k` trips of the loop: members still running, converged,
  diverged, and the lowest converged cost. Under `shard_map` each device sends its own; of
  the host threads that share one device, only the first thread's part sends, and stands for
  the chunk.
- after every chunk, the exact counts of the finished members.

The tracker turns them into a `Progress` and hands it to the user's callback, or to a tqdm bar
(`progress=True`, extra `gdkernel[progress]`). Nothing is traced or sent when progress is off.
"""

from __future__ import annotations

import contextlib
import math
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array, lax

from ._result import RUNNING, Status

# When in-loop reports come: every `REPORT_SHARE` steps per member, and never closer than
# the floor of (member-steps, trips) of the platform ("cpu", else "accelerator"). A report
# costs a host round trip and a refill of the lanes (a pass over them): on a CPU 2**22
# member-steps between reports hide it; on an accelerator a trip takes microseconds, so
# thousands of trips do (see docs/progress.md).
REPORT_SHARE = 400
REPORT_FLOOR = {"cpu": (2**22, 1), "accelerator": (2**26, 4096)}


class Progress(NamedTuple):
    """Where a sweep stands, as handed to a `progress=` callback.

    Attributes:
        chunks_done: chunks finished so far.
        chunks_total: chunks in the sweep (1 when it runs in one piece).
        members_done: members that have stopped (any status).
        members_total: members in the grid (`n_learning_rates * n_guesses`).
        running: members still iterating (an estimate between in-loop reports).
        converged: members stopped with `Status.CONVERGED`.
        diverged: members stopped with `Status.DIVERGED`.
        best_cost: the lowest cost among converged members of the chunks finished so far
            (`inf` before any; with `history=True`, also of members converged in the
            running chunk).

    After every chunk the counts are exact. Inside a chunk that host threads share on one
    CPU device (a sweep's default there), they are the first thread's part scaled to the
    chunk: an estimate, since each part is a like share of the grid.
    """

    chunks_done: int
    chunks_total: int
    members_done: int
    members_total: int
    running: int
    converged: int
    diverged: int
    best_cost: float


Report = Callable[[Progress], Any]

_sink: Callable[..., None] | None = None


def _deliver(
    due: Any,
    device: Any,
    trips: Any,
    running: Any,
    converged: Any,
    diverged: Any,
    best_cost: Any,
) -> None:
    sink = _sink
    if sink is not None and bool(due):
        sink(int(device), int(trips), int(running), int(converged), int(diverged), float(best_cost))


def batch_counts(status: Array, cost: Array) -> tuple[Array, Array, Array, Array]:
    """(running, converged, diverged, lowest converged cost) of a batch."""
    converged = status == Status.CONVERGED
    return (
        jnp.sum(status == RUNNING),
        jnp.sum(converged),
        jnp.sum(status == Status.DIVERGED),
        jnp.min(jnp.where(converged, cost, jnp.inf)),
    )


def monitor(
    counts: tuple[Array, Array, Array, Any],
    trips: Array,
    every: int,
    part: Array | int = 0,
    axes: tuple[str, ...] = (),
) -> None:
    """Inside the loop: every `every` trips (not at 0), send the batch's `counts` (running,
    converged, diverged, lowest converged cost: `batch_counts`) to the host.

    The counts are reduced on the device; only five numbers travel. Traced
    under `shard_map` over the mesh axes `axes`, each device reports its own share with its index;
    else the report carries `part`, the part of a chunk that host threads share.
    Under a user's `jax.vmap` the trip test is batched, so the call runs every trip and the
    host drops the calls that are not due: reports stay correct, only slower.
    """
    due = (trips > 0) & (trips % every == 0)

    def send() -> None:
        device = lax.axis_index(axes) if axes else jnp.asarray(part, jnp.int32)
        jax.debug.callback(_deliver, due, device, trips, *counts)

    lax.cond(due, send, lambda: None)


def trips_between_reports(members: int, per_trip: int, platform: str) -> int:
    """Trips between two reports of a loop over `members` that steps `per_trip` of them per
    trip: enough that a report costs about 1% of the work."""
    steps, trips = REPORT_FLOOR["cpu" if platform == "cpu" else "accelerator"]
    steps = max(steps, REPORT_SHARE * members)
    return max(trips, math.ceil(steps / max(1, per_trip)))


class Tracker:
    """Host side: folds in-loop reports and finished chunks into `Progress` for `report`.

    In-loop reports arrive on runtime threads; a lock keeps the counts and the calls to
    `report` in order. An exception from `report` there is kept and raised by `check`.

    Each of the `n_devices` parts of a chunk (devices, or host threads) runs `chunk_size //
    n_devices` members. With `sampled`, only the first part reports from inside its loop, and
    its counts stand for the whole chunk (scaled by the chunk's members over the part's): the
    parts are dealt the members in turn, so each is a like share of the grid. Else a part not
    heard from yet counts as running.
    """

    def __init__(
        self,
        report: Report,
        chunks_total: int,
        members_total: int,
        chunk_size: int,
        n_devices: int,
        sampled: bool = False,
    ) -> None:
        self.report = report
        self.sampled = sampled
        self.chunks_total = chunks_total
        self.members_total = members_total
        self.share = chunk_size // n_devices
        self.lock = threading.Lock()
        self.error: BaseException | None = None
        self.chunks_done = 0
        self.finished = 0
        self.converged = 0
        self.diverged = 0
        self.best = math.inf
        self.chunk_real = 0
        self.live: dict[int, tuple[int, int, int, float]] = {}

    def begin(self) -> None:
        """The first report, before any work: nothing done yet."""
        with self.lock:
            self.report(self._snapshot())

    def start_chunk(self, real: int) -> None:
        with self.lock:
            self.chunk_real = real
            self.live = {}

    def in_loop(
        self, device: int, trips: int, running: int, converged: int, diverged: int, best: float
    ) -> None:
        del trips
        with self.lock:
            if self.error is not None:  # the callback raised: no more reports, the
                return  # error reaches the caller when the running chunk ends
            self.live[device] = (running, converged, diverged, best)
            try:
                self.report(self._snapshot())
            except BaseException as err:  # raised again on the main thread by `check`
                if self.error is None:
                    self.error = err

    def end_chunk(self, status: np.ndarray, cost: np.ndarray) -> None:
        """Fold in the exact statuses and costs of a finished chunk's real members."""
        status = np.asarray(status).ravel()
        converged = status == Status.CONVERGED
        # in the cost's own dtype, without a copy of the chunk (a few ms a million members)
        best = float(np.min(np.asarray(cost).ravel(), where=converged, initial=np.inf))
        with self.lock:
            self.chunks_done += 1
            self.finished += status.size
            self.converged += int(np.count_nonzero(converged))
            self.diverged += int(np.count_nonzero(status == Status.DIVERGED))
            self.best = min(self.best, best)
            self.chunk_real = 0
            self.live = {}
            if self.error is None:
                self.report(self._snapshot())

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def finish_chunk(self, status: Any, cost: Any) -> None:
        """After a chunk's program: wait for its in-loop reports, raise what the callback
        raised, then fold in the chunk's exact counts (`end_chunk`)."""
        jax.effects_barrier()
        self.check()
        self.end_chunk(status, cost)

    def _snapshot(self) -> Progress:
        live = list(self.live.values())
        running = sum(v[0] for v in live)
        converged = sum(v[1] for v in live)
        diverged = sum(v[2] for v in live)
        heard = self.share * len(live)  # members of the parts heard from
        if self.sampled and live:

            def scaled(count: int) -> int:  # rounded down: converged + diverged <= done
                return min(self.chunk_real, count * self.chunk_real // heard)

            converged, diverged = scaled(converged), scaled(diverged)
            running = self.chunk_real - scaled(heard - running)
        else:
            running = min(self.chunk_real, max(0, self.chunk_real - heard) + running)
        return Progress(
            chunks_done=self.chunks_done,
            chunks_total=self.chunks_total,
            members_done=self.finished + self.chunk_real - running,
            members_total=self.members_total,
            running=running,
            converged=self.converged + converged,
            diverged=self.diverged + diverged,
            best_cost=min([self.best, *(v[3] for v in live)]),
        )


@contextlib.contextmanager
def reporting(tracker: Tracker | None) -> Iterator[None]:
    """Route in-loop reports to `tracker` while a sweep runs; wait for the last ones at exit,
    and close a bar however the sweep ends."""
    global _sink
    if tracker is None:
        yield
        return
    previous, _sink = _sink, tracker.in_loop
    try:
        yield
        jax.effects_barrier()
    finally:
        _sink = previous
        if isinstance(tracker.report, Bar):
            tracker.report.close()


class Bar:
    """`progress=True`: a tqdm bar on stderr, members done out of the grid, counts alongside.

    Raises:
        ImportError: tqdm is not installed (the `progress` extra).
    """

    def __init__(self, disable: bool = False) -> None:
        try:
            from tqdm import tqdm
        except ImportError:
            raise ImportError(
                "`progress=True` needs tqdm: pip install 'gdkernel[progress]' "
                "(or pass a callable as `progress`)"
            ) from None
        self._tqdm = tqdm
        self._bar: Any = None
        self.disable = disable

    def __call__(self, p: Progress) -> None:
        if self._bar is None:
            self._bar = self._tqdm(
                total=p.members_total,
                unit="member",
                desc="sweep",
                file=sys.stderr,
                disable=self.disable,
                dynamic_ncols=True,
            )
        best = f"{p.best_cost:.4g}" if math.isfinite(p.best_cost) else "-"
        # the counts first: `update` draws the bar, with the counts set before it
        self._bar.set_postfix_str(
            f"chunk {p.chunks_done}/{p.chunks_total}, running {p.running}, "
            f"converged {p.converged}, diverged {p.diverged}, best {best}",
            refresh=False,
        )
        self._bar.update(p.members_done - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def as_report(progress: Any) -> Report | None:
    """`progress=` as a callable taking `Progress`, or None when off.

    Args:
        progress: None or False (off), True (a tqdm bar on stderr, shown by process 0 only in
            a multi-process run), or a callable `progress(p: Progress)`.
    """
    if progress is None or progress is False:
        return None
    if progress is True:
        return Bar(disable=jax.process_index() != 0)
    if callable(progress):
        return progress
    raise TypeError(
        f"`progress` must be None, True or a callable taking a gdkernel.Progress, got "
        f"{type(progress).__name__}"
    )
