"""Progress reports: after every chunk, from inside the compiled loop, and as a tqdm bar."""

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import reference_gd

import gdkernel as gd
from gdkernel import _lanes, _progress
from gdkernel._batch import solve_batch
from gdkernel._kernel import make_value_and_grad
from gdkernel._solve import make_options, make_params


def square(x):
    return x**2


GUESSES = np.linspace(1.0, 3.0, 6)
RATES = np.array([0.1, 0.4, 1.5])  # 1.5 doubles |x| every step: diverges


def test_a_report_after_every_chunk_with_exact_counts(x64):
    reports = []
    grid = gd.sweep(square, GUESSES, RATES, max_iter=1000, chunk_size=4, progress=reports.append)
    # A first report before any work, then one per chunk: 18 members, 4 at a time.
    assert reports[0] == gd.Progress(0, 5, 0, 18, 0, 0, 0, np.inf)
    assert [p.chunks_done for p in reports] == [0, 1, 2, 3, 4, 5]
    last = reports[-1]
    assert isinstance(last, gd.Progress)
    assert (last.chunks_total, last.members_total, last.members_done) == (5, 18, 18)
    assert (last.running, last.converged, last.diverged) == (0, 12, 6)
    costs = [
        reference_gd(lambda x: 2 * x, x0, lr, 1e-4, 1000)[0] ** 2
        for lr in RATES[:2]
        for x0 in GUESSES
    ]
    np.testing.assert_allclose(last.best_cost, min(costs), rtol=1e-9)
    np.testing.assert_allclose(float(grid.best().result.cost), min(costs), rtol=1e-9)


def _report_every_trip(monkeypatch):
    monkeypatch.setattr(_progress, "REPORT_FLOOR", {"cpu": (1, 1), "accelerator": (1, 1)})
    monkeypatch.setattr(_progress, "REPORT_SHARE", 0)


def test_reports_from_inside_the_loop(monkeypatch, x64):
    _report_every_trip(monkeypatch)
    reports = []
    rates = np.array([1e-3, 0.2])  # the first takes thousands of iterations
    gd.sweep(square, GUESSES, rates, max_iter=20_000, progress=reports.append)
    inside = [p for p in reports[1:] if p.chunks_done == 0]
    assert len(inside) > 10
    assert any(0 < p.running < 12 for p in inside)
    assert all(p.running + p.members_done == 12 for p in reports[1:])  # one chunk
    done = [p.members_done for p in reports]
    assert done == sorted(done)
    slowest = max(reference_gd(lambda x: 2 * x, x0, 1e-3, 1e-4, 20_000)[1] for x0 in GUESSES)
    assert len(inside) <= slowest  # at most one report a trip, and a trip is >= 1 step
    assert reports[-1] == gd.Progress(1, 1, 12, 12, 0, 12, 0, reports[-1].best_cost)


@pytest.mark.parametrize("chunk_size", [None, 6])
def test_with_host_threads_the_first_part_reports_for_the_chunk(monkeypatch, x64, chunk_size):
    _report_every_trip(monkeypatch)
    parts = []
    original = _progress.Tracker.in_loop

    def seen(self, device, *counts):
        parts.append(device)
        original(self, device, *counts)

    monkeypatch.setattr(_progress.Tracker, "in_loop", seen)
    reports = []
    rates = np.array([1e-3, 0.2])
    grid = gd.sweep(
        square,
        GUESSES,
        rates,
        max_iter=20_000,
        threads=2,
        chunk_size=chunk_size,
        progress=reports.append,
    )
    assert len(parts) > 10 and set(parts) == {0}  # the second thread's part runs quietly
    assert any(0 < p.running < 12 for p in reports[1:-1])
    assert all(p.converged + p.diverged <= p.members_done for p in reports)
    done = [p.members_done for p in reports]
    assert done == sorted(done)
    chunks = 1 if chunk_size is None else 2
    assert reports[-1] == gd.Progress(chunks, chunks, 12, 12, 0, 12, 0, reports[-1].best_cost)
    want = [
        reference_gd(lambda x: 2 * x, x0, lr, 1e-4, 20_000)[1] for lr in rates for x0 in GUESSES
    ]
    np.testing.assert_array_equal(np.asarray(grid.iterations).ravel(), want)


def test_a_sampled_report_stands_for_the_chunk():
    reports = []
    tracker = _progress.Tracker(reports.append, 1, 10, 10, 2, sampled=True)
    tracker.start_chunk(10)
    # the first part (5 members): 3 running, 1 converged, 1 diverged; the chunk: twice that
    tracker.in_loop(0, 8, 3, 1, 1, np.inf)
    assert reports[-1] == gd.Progress(0, 1, 4, 10, 6, 2, 2, np.inf)
    tracker.end_chunk(np.array([0] * 7 + [2] * 3), np.zeros(10))
    assert reports[-1] == gd.Progress(1, 1, 10, 10, 0, 7, 3, 0.0)


def test_results_do_not_depend_on_progress():
    plain = gd.sweep(square, GUESSES, RATES, chunk_size=5)
    watched = gd.sweep(square, GUESSES, RATES, chunk_size=5, progress=lambda p: None)
    for a, b in zip(jax.tree.leaves(tuple(plain)), jax.tree.leaves(tuple(watched)), strict=True):
        np.testing.assert_array_equal(a, b)
    assert _progress._sink is None


def test_progress_true_draws_a_bar(capsys):
    gd.sweep(square, GUESSES, RATES, chunk_size=8, progress=True)
    err = capsys.readouterr().err
    assert "sweep" in err and "18/18" in err and "chunk 3/3" in err


def test_the_bar_draws_each_report_with_its_own_counts(capsys):
    pytest.importorskip("tqdm")
    bar = _progress.Bar()
    bar(gd.Progress(0, 2, 0, 10, 0, 0, 0, np.inf))
    time.sleep(0.2)  # past tqdm's least interval between two draws
    bar(gd.Progress(1, 2, 5, 10, 0, 4, 1, 0.5))
    bar.close()
    lines = capsys.readouterr().err.replace("\r", "\n").splitlines()
    drawn = [line for line in lines if "5/10" in line]
    assert drawn and all("chunk 1/2" in line and "converged 4" in line for line in drawn)


def test_progress_true_without_tqdm_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    with pytest.raises(ImportError, match=r"gdkernel\[progress\]"):
        gd.sweep(square, GUESSES, RATES, progress=True)


def test_bad_progress_argument():
    with pytest.raises(TypeError, match="`progress`"):
        gd.sweep(square, GUESSES, RATES, progress="yes")


@pytest.mark.parametrize("inside", [False, True])
def test_an_error_in_the_callback_reaches_the_caller(monkeypatch, tmp_path, inside):
    if inside:
        _report_every_trip(monkeypatch)

    calls = []

    def fail(p):
        calls.append(p)
        if p.running or p.chunks_done:  # past the first report, made before any work
            raise RuntimeError(f"stop at {p.chunks_done}")

    with pytest.raises(RuntimeError, match="stop at 0" if inside else "stop at 1"):
        gd.sweep(
            square, GUESSES, [1e-3], max_iter=5000, chunk_size=3, progress=fail, out=tmp_path / "g"
        )
    assert len(calls) == 2  # the callback is not called again once it raised
    assert list(tmp_path.iterdir()) == []  # nothing half-written is left behind
    assert _progress._sink is None


def test_reports_stay_throttled_under_vmap(monkeypatch, x64):
    """Under a user's vmap the trip test is batched: only due reports reach the host."""
    got = []
    monkeypatch.setattr(_progress, "_sink", lambda *counts: got.append(counts))
    # a report every third look at the lanes
    opts = make_options("l1", "gd", False, None, 500)._replace(
        progress_every=3 * _lanes.CHECK_EVERY
    )
    value_and_grad = make_value_and_grad(square, None)
    x0 = jnp.linspace(1.0, 3.0, 4)

    def solve(lr):
        params = make_params(jnp.float64, 1.0, 1e-4, jnp.inf, 0.9, 500)
        return solve_batch(
            value_and_grad, x0, params._replace(learning_rate=jnp.full(4, lr)), (), opts
        )

    result = jax.jit(jax.vmap(solve))(jnp.array([0.01, 0.3]))
    jax.effects_barrier()
    looks = [counts[1] for counts in got]
    assert looks and all(t % 3 == 0 for t in looks)
    assert max(c[2] for c in got) <= 4  # counts are per vmapped batch of 4
    assert int(result.iterations[0].max()) == max(
        reference_gd(lambda x: 2 * x, x, 0.01, 1e-4, 500)[1] for x in np.linspace(1, 3, 4)
    )


def test_trips_between_reports():
    share = _progress.REPORT_SHARE  # steps per member between two reports
    # a loop stepping every member per trip: the floor of member-steps, or `share` trips
    assert _progress.trips_between_reports(2**22, 2**22, "cpu") == share
    assert _progress.trips_between_reports(1000, 1000, "cpu") == 4195  # ceil(2**22 / 1000)
    # an accelerator: at least 4,096 trips, and 2**26 member-steps
    assert _progress.trips_between_reports(2**20, 2**20, "gpu") == 4096
    assert _progress.trips_between_reports(2**10, 2**10, "gpu") == 2**16  # 2**26 / 2**10
    assert _progress.trips_between_reports(2**24, 2**16, "gpu") == share * 2**8
    # lanes: `share` steps per member between reports, whatever the lanes
    assert _progress.trips_between_reports(10**6, 2**15, "cpu") == -(-(share * 10**6) // 2**15)


def test_members_that_stop_at_their_start_come_back_with_progress_on():
    """With reports, a loop whose members all stop at `init` (`max_iter=0`) runs no look
    after the refill that loads them: every member still comes back, at its starting
    point."""
    guesses = np.linspace(-2, 2, 64, dtype=np.float32)
    reports = []
    grid = gd.sweep(lambda x: x**2, guesses, [0.1, 0.2], max_iter=0, progress=reports.append)
    assert (np.asarray(grid.status) == gd.Status.MAX_ITER).all()
    assert (np.asarray(grid.iterations) == 0).all()
    np.testing.assert_array_equal(np.asarray(grid.x), np.broadcast_to(guesses, (2, 64)))
    np.testing.assert_allclose(np.asarray(grid.cost), np.broadcast_to(guesses**2, (2, 64)))
    assert reports
