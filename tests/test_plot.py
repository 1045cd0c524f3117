"""`gdkernel.plot`: what is drawn, checked against plain-Python loops and closed forms."""

from __future__ import annotations

import sys

import jax.numpy as jnp
import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.colors import Normalize, to_rgba

import gdkernel as gd
from gdkernel import plot
from gdkernel._result import Status
from tests.helpers import closed_form_square_iterations, reference_gd


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def save(ax, tmp_path, name: str) -> None:
    """Render to PNG and check a real image was written."""
    path = tmp_path / f"{name}.png"
    ax.figure.savefig(path, dpi=60)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 2000


def labelled(ax, label: str):
    lines = [line for line in ax.get_lines() if line.get_label() == label]
    assert len(lines) == 1, [line.get_label() for line in ax.get_lines()]
    return lines[0]


def square(x):
    return x**2


def tutorial(x):
    return 3 * x**2 - 2 * x - 3


def diverging_square_series(x0: float, lr: float) -> list[float]:
    """x**2 from x0 in float64 until the cost overflows: the finite iterates only (the plots
    frame such members; the sweeps below turn the divergence rule off to make them)."""
    series = [x0]
    with np.errstate(over="ignore"):
        while True:
            new = series[-1] - lr * 2 * series[-1]
            if not np.isfinite(np.float64(new) ** 2):
                return series
            series.append(new)


def overflowing_grid() -> gd.SweepResult:
    """x**2 from 3 at rates 0.1 (converges) and 3.0 (grows until float64 overflows: the rule
    off)."""
    return gd.sweep(
        square,
        jnp.array([3.0]),
        jnp.array([0.1, 3.0]),
        max_iter=1000,
        history=True,
        divergence=None,
    )


def test_trajectory_1d_draws_the_iterates_on_the_cost_curve(x64, tmp_path):
    res = gd.gradient_descent(tutorial, 8.0, 0.05, precision=1e-5, max_iter=500, history=True)
    _, iterations, status, series = reference_gd(lambda x: 6 * x - 2, 8.0, 0.05, 1e-5, 500)
    assert status == "converged" and int(res.iterations) == iterations
    series = np.array(series)
    ax = plot.trajectory(res, tutorial)
    save(ax, tmp_path, "trajectory_1d")

    path = labelled(ax, "iterates")
    np.testing.assert_allclose(path.get_xdata(), series, rtol=1e-12)
    np.testing.assert_allclose(path.get_ydata(), 3 * series**2 - 2 * series - 3, rtol=1e-12)
    np.testing.assert_allclose(labelled(ax, "start").get_xydata(), [[8.0, 3 * 64 - 16 - 3]])
    np.testing.assert_allclose(labelled(ax, "end: converged").get_xdata(), series[-1:], rtol=1e-12)
    assert labelled(ax, "end: converged").get_marker() == "*"
    assert ax.get_title() == f"path: CONVERGED after {iterations} iterations"

    curve = labelled(ax, "cost")
    cx = np.asarray(curve.get_xdata())
    np.testing.assert_allclose(curve.get_ydata(), 3 * cx**2 - 2 * cx - 3, rtol=1e-12)
    assert cx.min() < series.min() and cx.max() > series.max()
    assert ax.get_xlabel() == "x" and ax.get_ylabel() == "cost"


def test_trajectory_2d_draws_the_path_over_contours_of_the_cost(x64, tmp_path):
    centre = np.array([1.0, -2.0])
    weights = np.array([1.0, 4.0])

    def bowl(x):
        return jnp.sum(weights * (x - centre) ** 2)

    res = gd.gradient_descent(bowl, jnp.array([-2.0, 1.5]), 0.05, precision=1e-6, history=True)
    _, _, status, series = reference_gd(
        lambda x: 2 * weights * (x - centre), [-2.0, 1.5], 0.05, 1e-6, 100
    )
    assert status == "max_iter"  # 100 iterations are not enough for precision 1e-6
    series = np.array(series)
    ax = plot.trajectory(res, bowl)
    save(ax, tmp_path, "trajectory_2d")

    path = labelled(ax, "iterates")
    np.testing.assert_allclose(path.get_xydata(), series, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(labelled(ax, "start").get_xydata(), series[:1])
    end = labelled(ax, "end: max-iter")  # not the star of a minimum
    np.testing.assert_allclose(end.get_xydata(), series[-1:], rtol=1e-12)
    assert end.get_marker() == "D"
    (lo_x, hi_x), (lo_y, hi_y) = ax.get_xlim(), ax.get_ylim()
    assert lo_x < series[:, 0].min() and series[:, 0].max() < hi_x
    assert lo_y < series[:, 1].min() and series[:, 1].max() < hi_y

    # Every contour line lies on its level of the cost.
    (contours,) = [c for c in ax.collections if hasattr(c, "levels")]
    assert len(contours.levels) >= 5
    for level, segments in zip(contours.levels, contours.allsegs, strict=True):
        assert segments
        for seg in segments:
            cost = np.sum(weights * (seg - centre) ** 2, axis=1)
            np.testing.assert_allclose(cost, level, rtol=0.02)


def test_trajectory_2d_labels_pytree_parameters_and_passes_args(x64, tmp_path):
    X = np.array([0.0, 1.0, 2.0, 3.0])
    y = np.array([1.0, 2.9, 5.2, 7.1])

    def mse(p, X, y):
        return jnp.mean((y - p["b0"] - p["b1"] * X) ** 2)

    guess = {"b0": 0.0, "b1": 0.0}
    res = gd.gradient_descent(mse, guess, 0.05, args=(X, y), precision=1e-6, history=True)

    def grad(b):
        r = y - b[0] - b[1] * X
        return np.array([-2 * r.mean(), -2 * (r * X).mean()])

    _, _, _, series = reference_gd(grad, [0.0, 0.0], 0.05, 1e-6, 100)
    ax = plot.trajectory(res, mse, args=(X, y))
    save(ax, tmp_path, "trajectory_line")
    np.testing.assert_allclose(labelled(ax, "iterates").get_xydata(), series, rtol=1e-10)
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("b0", "b1")


def test_trajectory_draws_one_path_per_member_of_a_sweep(x64, tmp_path):
    guesses, lrs = [-2.0, 3.0], [0.05, 0.3]
    grid = gd.sweep(square, jnp.array(guesses), jnp.array(lrs), history=True)
    ax = plot.trajectory(grid, square)
    save(ax, tmp_path, "trajectory_sweep")
    for lr in lrs:
        for x0 in guesses:
            _, _, _, series = reference_gd(lambda x: 2 * x, x0, lr, 1e-4, 100)
            line = labelled(ax, f"lr={lr:.3g}, x0={x0:.3g}")
            np.testing.assert_allclose(line.get_xdata(), series, rtol=1e-12)
            np.testing.assert_allclose(line.get_ydata(), np.square(series), rtol=1e-12)
    paths = [line for line in ax.get_lines() if line.get_label().startswith("lr=")]
    assert len(paths) == len(lrs) * len(guesses)

    one = plot.trajectory(grid, square, member=(1, 0), ax=plt.figure().add_subplot())
    paths = [
        line for line in one.get_lines() if line.get_marker() == "o" and len(line.get_xdata()) > 1
    ]
    assert len(paths) == 1
    _, _, _, series = reference_gd(lambda x: 2 * x, -2.0, 0.3, 1e-4, 100)
    np.testing.assert_allclose(paths[0].get_xdata(), series, rtol=1e-12)


def test_trajectory_marks_a_diverged_member_and_frames_the_others(x64, tmp_path):
    grid = overflowing_grid()
    assert int(grid.status[1, 0]) == Status.DIVERGED
    series = diverging_square_series(3.0, 3.0)
    ax = plot.trajectory(grid, square)
    save(ax, tmp_path, "trajectory_diverged")
    red = to_rgba(plot.STATUS_COLORS[Status.DIVERGED])
    crosses = [line for line in ax.get_lines() if line.get_marker() == "x"]
    assert len(crosses) == 1
    assert to_rgba(crosses[0].get_color()) == red
    np.testing.assert_allclose(crosses[0].get_xdata(), series[-1:], rtol=1e-12)
    # The view frames the converged member, not the diverged one's huge iterates.
    lo, hi = ax.get_xlim()
    assert -1 < lo < 0 and 3 < hi < 4


def test_trajectory_errors(x64):
    res = gd.gradient_descent(square, 3.0, 0.1)
    with pytest.raises(ValueError, match=r"history=True"):
        plot.trajectory(res, square)
    with pytest.raises(ValueError, match=r"history=True"):
        plot.convergence(res)
    three = gd.gradient_descent(lambda x: jnp.sum(x**2), jnp.ones(3), 0.1, history=True)
    with pytest.raises(ValueError, match=r"1 or 2 parameters"):
        plot.trajectory(three, lambda x: jnp.sum(x**2))
    grid = gd.sweep(square, jnp.array([1.0, 2.0]), 0.1, history=True)
    with pytest.raises(ValueError, match=r"`member`"):
        plot.trajectory(grid, square, member=(0, 5))
    with pytest.raises(TypeError, match=r"`res`"):
        plot.trajectory({"x": 1.0}, square)


def test_convergence_draws_the_history_costs_one_line_per_member(x64, tmp_path):
    guesses, lrs = [-2.0, 3.0], [0.05, 0.3, 0.9]
    grid = gd.sweep(square, jnp.array(guesses), jnp.array(lrs), history=True)
    ax = plot.convergence(grid)
    save(ax, tmp_path, "convergence")
    lines = [line for line in ax.get_lines() if line.get_label().startswith("lr=")]
    ends = [line for line in ax.get_lines() if line.get_label() == "_end"]
    assert len(lines) == len(ends) == len(lrs) * len(guesses)
    assert len(ax.get_lines()) == 2 * len(lines)
    for lr in lrs:
        for x0 in guesses:
            _, iterations, _, series = reference_gd(lambda x: 2 * x, x0, lr, 1e-4, 100)
            line = labelled(ax, f"lr={lr:.3g}, x0={x0:.3g}")
            np.testing.assert_array_equal(line.get_xdata(), np.arange(iterations + 1))
            np.testing.assert_allclose(line.get_ydata(), np.square(series), rtol=1e-12)
    assert ax.get_yscale() == "log"
    assert ax.get_xlabel() == "iteration"


def test_convergence_marks_diverged_members(x64, tmp_path):
    grid = overflowing_grid()
    series = diverging_square_series(3.0, 3.0)
    ax = plot.convergence(grid)
    save(ax, tmp_path, "convergence_diverged")
    (cross,) = [line for line in ax.get_lines() if line.get_marker() == "x"]
    assert to_rgba(cross.get_color()) == to_rgba(plot.STATUS_COLORS[Status.DIVERGED])
    # The frame is set by the converged member (cost 9 down to ~1e-9); the diverged line
    # (float64 overflow, cost beyond 1e300) is cut at its top, the cross at its last iteration.
    *_, kept = reference_gd(lambda x: 2 * x, 3.0, 0.1, 1e-4, 1000)
    assert ax.get_yscale() == "log" and series[-1] ** 2 > 1e300
    lo, hi = ax.get_ylim()
    assert lo < kept[-1] ** 2 and 9 < hi < 1e3
    np.testing.assert_allclose(cross.get_xydata(), [[len(series) - 1, hi]], rtol=1e-12)
    (line,) = [ln for ln in ax.get_lines() if ln.get_label() == "lr=0.1, x0=3"]
    np.testing.assert_allclose(line.get_ydata(), np.square(kept), rtol=1e-12)
    assert "diverged" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_convergence_step_sizes_and_history_every(x64, tmp_path):
    res = gd.gradient_descent(tutorial, 8.0, 0.01, precision=1e-5, max_iter=500, history=True)
    _, _, _, series = reference_gd(lambda x: 6 * x - 2, 8.0, 0.01, 1e-5, 500)
    series = np.array(series)
    ax = plot.convergence(res, show_step=True)
    save(ax, tmp_path, "convergence_step")
    assert ax.get_yscale() == "linear"  # the tutorial's cost goes negative
    np.testing.assert_allclose(labelled(ax, "cost").get_ydata(), tutorial(series), rtol=1e-12)
    step_ax = ax.figure.axes[-1]
    assert step_ax is not ax and step_ax.get_yscale() == "log"
    (steps,) = step_ax.get_lines()
    np.testing.assert_array_equal(steps.get_xdata(), np.arange(1, len(series)))
    np.testing.assert_allclose(steps.get_ydata(), np.abs(np.diff(series)), rtol=1e-10)

    shifted = plot.convergence(res, minimum=-10 / 3, ax=plt.figure().add_subplot())
    assert shifted.get_yscale() == "log"
    excess = tutorial(series) + 10 / 3
    line = labelled(shifted, "cost - minimum")
    np.testing.assert_allclose(line.get_ydata(), np.where(excess > 0, excess, np.nan), rtol=1e-9)

    every = gd.gradient_descent(
        tutorial, 8.0, 0.01, precision=1e-5, max_iter=500, history=True, history_every=5
    )
    kept = np.arange(0, len(series), 5)
    for given in (5, None):  # None: read off the rows (the run took 175 iterations)
        ax = plot.convergence(every, history_every=given, ax=plt.figure().add_subplot())
        line = labelled(ax, "cost")
        np.testing.assert_array_equal(line.get_xdata(), kept)
        np.testing.assert_allclose(line.get_ydata(), tutorial(series[kept]), rtol=1e-12)
    with pytest.raises(ValueError, match=r"`history_every=1` does not fit .* not 175"):
        plot.convergence(every, history_every=1)


def test_convergence_asks_for_history_every_when_the_rows_fit_several(x64):
    # 37 iterations recorded every 10: rows 0-3, which every value from 10 to 12 also gives
    grid = gd.sweep(
        square, np.array([3.0, -2.0]), [1e-3, 1e-4], max_iter=37, history=True, history_every=10
    )
    assert (np.asarray(grid.iterations) == 37).all()
    with pytest.raises(ValueError, match=r"every value from 10 to 12"):
        plot.convergence(grid)
    ax = plot.convergence(grid, history_every=10)
    np.testing.assert_array_equal(ax.get_lines()[0].get_xdata(), [0, 10, 20, 30])


def test_convergence_options_are_checked(x64):
    res = gd.gradient_descent(square, 3.0, 0.1, history=True)
    with pytest.raises(ValueError, match=r"`yscale`"):
        plot.convergence(res, yscale="loglog")
    with pytest.raises(ValueError, match=r"`history_every`"):
        plot.convergence(res, history_every=0)
    with pytest.raises(ValueError, match=r"`norm`"):
        plot.convergence(res, norm="l3")


def pixel(ax, x: float, y: float) -> np.ndarray:
    """The rendered RGBA (0-1) at data point (x, y)."""
    image = np.asarray(ax.figure.canvas.buffer_rgba())
    px, py = ax.transData.transform((x, y))
    return image[int(image.shape[0] - py), int(px)] / 255.0


def test_sweep_map_colours_each_cell_by_status_and_iterations(tmp_path):
    # x**2: diverges for lr > 1 (|1 - 2 lr| > 1) unless x0 = 0; small lr runs out of iterations.
    guesses = [3.0, -3.0, 0.0, 1.5, -1.0]  # unsorted on purpose: the map sorts them
    lrs = [1.5, 0.003, 0.03, 0.3, 3.0]
    max_iter = 300
    grid = gd.sweep(square, jnp.array(guesses), jnp.array(lrs), max_iter=max_iter)
    expected_status, expected_iters = {}, {}
    for lr in lrs:
        for x0 in guesses:
            if lr > 1 and x0 != 0:
                expected_status[lr, x0] = Status.DIVERGED
                continue
            k = 1 if x0 == 0 else closed_form_square_iterations(x0, lr, 1e-4, max_iter)
            expected_status[lr, x0] = Status.MAX_ITER if k == max_iter else Status.CONVERGED
            expected_iters[lr, x0] = k
    counts = {s: list(expected_status.values()).count(s) for s in Status}
    assert counts[Status.DIVERGED] and counts[Status.MAX_ITER] and counts[Status.CONVERGED]

    ax = plot.sweep_map(grid)
    save(ax, tmp_path, "sweep_map")
    ax.figure.canvas.draw()
    assert ax.get_xscale() == "log"
    converged = [k for lr_x0, k in expected_iters.items() if expected_status[lr_x0] == 0]
    norm = Normalize(min(converged), max(converged))
    for (lr, x0), status in expected_status.items():
        if status == Status.CONVERGED:
            want = plt.get_cmap("viridis")(norm(expected_iters[lr, x0]))
        else:
            want = to_rgba(plot.STATUS_COLORS[status])
        np.testing.assert_allclose(pixel(ax, lr, x0), want, atol=2 / 255, err_msg=f"{lr}, {x0}")
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == [
        f"max-iter ({counts[Status.MAX_ITER]})",
        f"diverged ({counts[Status.DIVERGED]})",
    ]
    assert ax.figure.axes[-1].get_ylabel() == f"iterations ({counts[Status.CONVERGED]} converged)"


def test_sweep_map_final_cost_and_vector_guesses(x64, tmp_path):
    guesses, lrs = [-2.0, 1.0, 3.0], [0.05, 0.2]
    grid = gd.sweep(square, jnp.array(guesses), jnp.array(lrs))
    ax = plot.sweep_map(grid, value="cost")
    save(ax, tmp_path, "sweep_map_cost")
    mesh = ax.collections[0]
    want = []
    for x0 in guesses:  # rows: starting points; columns: learning rates
        row = []
        for lr in lrs:
            k = closed_form_square_iterations(x0, lr, 1e-4, 100)
            row.append((x0 * (1 - 2 * lr) ** k) ** 2)
        want.append(row)
    np.testing.assert_allclose(np.ma.getdata(mesh.get_array()).reshape(3, 2), want, rtol=1e-9)
    assert "final cost" in ax.figure.axes[-1].get_ylabel()

    centre = jnp.array([1.0, 2.0])
    vectors = gd.sweep(
        lambda x: jnp.sum((x - centre) ** 2), jnp.zeros((4, 2)), jnp.array([0.1, 0.2])
    )
    ax = plot.sweep_map(vectors, ax=plt.figure().add_subplot(), colorbar=False)
    assert "index" in ax.get_ylabel()
    np.testing.assert_allclose(ax.get_ylim(), (-0.5, 3.5))


def test_sweep_map_errors():
    res = gd.gradient_descent(square, 3.0, 0.1)
    with pytest.raises(TypeError, match=r"`grid`"):
        plot.sweep_map(res)
    grid = gd.sweep(square, jnp.array([1.0]), 0.1)
    with pytest.raises(ValueError, match=r"`value`"):
        plot.sweep_map(grid, value="status")


def test_plots_draw_into_the_given_axes_and_leave_the_backend(x64):
    backend = matplotlib.get_backend()
    grid = gd.sweep(square, jnp.array([1.0, 2.0]), jnp.array([0.1, 0.2]), history=True)
    _, axes = plt.subplots(1, 3)
    figures = plt.get_fignums()
    assert plot.trajectory(grid, square, ax=axes[0]) is axes[0]
    assert plot.convergence(grid, ax=axes[1]) is axes[1]
    assert plot.sweep_map(grid, ax=axes[2]) is axes[2]
    assert plt.get_fignums() == figures
    assert matplotlib.get_backend() == backend


def test_missing_matplotlib_names_the_extra(monkeypatch, x64):
    res = gd.gradient_descent(square, 3.0, 0.1, history=True)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r"pip install 'gdkernel\[plot\]'"):
        plot.convergence(res)


# x**2 from 3, max_iter 50, grad_tol 1e-3: one learning rate per status, by closed form.
# lr 1e-6: the first step (6e-6) is below precision while the slope is 6: STALLED.
# lr 1e-3: steps of about 0.006 * x stay above 1e-4 for 50 iterations: MAX_ITER.
# lr 0.1: x shrinks by 0.8 until the step 0.2 x < 1e-4, where the slope is < 1e-3: CONVERGED.
# lr 3: x grows by -5 each step, the cost by 25: DIVERGED.
EVERY_STATUS = {
    1e-6: Status.STALLED,
    1e-3: Status.MAX_ITER,
    0.1: Status.CONVERGED,
    3.0: Status.DIVERGED,
}


def every_status_grid():
    lrs = list(EVERY_STATUS)
    grid = gd.sweep(
        square, jnp.array([3.0]), jnp.array(lrs), max_iter=50, grad_tol=1e-3, history=True
    )
    assert [Status(int(s)) for s in grid.status[:, 0]] == list(EVERY_STATUS.values())
    return grid


def end_markers(ax) -> dict[str, list]:
    """The status markers drawn, by marker shape."""
    shapes = {style["marker"]: [] for style in plot.STATUS_MARKERS.values()}
    for line in ax.get_lines():
        if len(line.get_xdata()) == 1 and line.get_marker() in shapes:
            shapes[line.get_marker()].append(line)
    return shapes


@pytest.mark.parametrize("draw", ["trajectory", "convergence"])
def test_each_run_ends_in_the_marker_of_its_status(draw, x64, tmp_path):
    grid = every_status_grid()
    ax = plot.trajectory(grid, square) if draw == "trajectory" else plot.convergence(grid)
    save(ax, tmp_path, f"{draw}_statuses")
    shapes = end_markers(ax)
    for i, status in enumerate(EVERY_STATUS.values()):
        (mark,) = shapes[plot.STATUS_MARKERS[status]["marker"]]
        last = int(grid.iterations[i, 0])
        x_end = float(grid.history.x[i, 0, last])
        if draw == "trajectory":
            np.testing.assert_allclose(mark.get_xdata(), [x_end], rtol=1e-12)
        else:
            np.testing.assert_array_equal(mark.get_xdata(), [last])
        if status != Status.CONVERGED:
            assert to_rgba(mark.get_color()) == to_rgba(plot.STATUS_COLORS[status])
    # A star only where the run converged: one star, at the converged member's end.
    assert len(shapes["*"]) == 1
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[-4:] == ["converged", "max-iter", "diverged", "stalled"]
    assert ax.get_title().endswith("1 converged, 1 max-iter, 1 diverged, 1 stalled")


def test_the_step_rule_trap_is_drawn_as_stalled_not_as_a_minimum(x64, tmp_path):
    from gdkernel import functions

    res = gd.gradient_descent(
        functions.rosenbrock,
        jnp.array([-1.2, 1.0]),
        1e-3,
        max_iter=5000,
        grad_tol=1e-2,
        history=True,
    )
    x, y = np.asarray(res.x)
    # Rosenbrock's minimum is (1, 1); the slope where the step rule fired is still steep.
    slope = np.array([-2 * (1 - x) - 400 * x * (y - x**2), 200 * (y - x**2)])
    assert np.abs(slope).sum() > 1e-2 and np.hypot(x - 1, y - 1) > 0.1
    assert res.status == Status.STALLED

    ax = plot.trajectory(res, functions.rosenbrock)
    save(ax, tmp_path, "rosenbrock_stalled")
    shapes = end_markers(ax)
    assert not shapes["*"]
    (mark,) = shapes["s"]
    np.testing.assert_allclose(mark.get_xydata(), [[x, y]], rtol=1e-6)
    assert mark.get_label() == "end: stalled"
    assert ax.get_title() == f"path: STALLED after {int(res.iterations)} iterations"


def test_a_batch_of_many_members_keeps_the_status_legend(x64):
    grid = gd.sweep(
        square, jnp.linspace(-3, 3, 6), jnp.array([0.1, 3.0]), max_iter=50, history=True
    )
    ax = plot.convergence(grid)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["converged", "diverged"]


# x**2 under momentum: a learning rate x momentum x starting point grid, in no order.
GRID3_LRS = [0.5, 0.01, 0.1, 1.5]
GRID3_MOMENTA = [0.0, 0.5, 0.9]
GRID3_GUESSES = [2.0, -3.0, 0.5, -1.0]


def momentum_grid(**options) -> gd.SweepResult:
    return gd.sweep(
        square,
        jnp.array(GRID3_GUESSES),
        jnp.array(GRID3_LRS),
        method="momentum",
        max_iter=200,
        **{"momentum": np.array(GRID3_MOMENTA), **options},
    )


def test_sweep_map_aggregates_the_axes_it_does_not_draw(x64, tmp_path):
    grid = momentum_grid()
    assert grid.axes == ("learning_rate", "momentum", "initial_guess")
    status, iterations = np.asarray(grid.status), np.asarray(grid.iterations)
    converged = status == Status.CONVERGED
    # lr 1.5 diverges from every start; lr 0.01 without momentum runs out of iterations.
    assert converged.any() and (~converged).any()
    lr_order, guess_order = np.argsort(GRID3_LRS), np.argsort(GRID3_GUESSES)

    # Default: learning rate x starting point, the fewest iterations over the momenta among
    # the converged members; a cell with none converged in its members' most common status.
    ax = plot.sweep_map(grid)
    save(ax, tmp_path, "sweep_map_min_over_momentum")
    fewest = np.where(converged, iterations, np.inf).min(axis=1)[np.ix_(lr_order, guess_order)].T
    got = ax.collections[0].get_array().reshape(fewest.shape)
    np.testing.assert_array_equal(np.ma.getmaskarray(got), np.isinf(fewest))
    np.testing.assert_array_equal(got.compressed(), fewest[np.isfinite(fewest)])
    overlay = ax.collections[1].get_array().reshape(fewest.shape)
    for row, j in enumerate(guess_order):
        for column, i in enumerate(lr_order):
            codes = list(status[i, :, j])
            if Status.CONVERGED in codes:
                assert overlay.mask[row, column]
            else:
                assert overlay[row, column] == max(set(codes), key=lambda c: (codes.count(c), -c))
    assert ax.get_title() == ("iterations: min over momentum (3 values), converged members only")
    assert ax.figure.axes[-1].get_ylabel() == "iterations (min over converged members)"

    # Learning rate (along y) x momentum: the fraction of starting points that converged.
    ax = plot.sweep_map(grid, x="momentum", y="learning_rate", value="converged")
    fraction = converged.mean(axis=2)[lr_order]
    np.testing.assert_allclose(ax.collections[0].get_array().reshape(4, 3), fraction)
    assert len(ax.collections) == 1  # no status overlay: every cell has a fraction
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_yscale()) == (
        "momentum",
        "learning rate",
        "log",
    )
    assert ax.get_title() == "fraction converged over starting points (4)"

    # Another reduction: the most iterations over the starting points.
    ax = plot.sweep_map(grid, y="momentum", reduce="max")
    most = np.where(converged, iterations, -np.inf).max(axis=2)[lr_order].T
    got = ax.collections[0].get_array().reshape(most.shape)
    np.testing.assert_array_equal(got.compressed(), most[np.isfinite(most)])
    assert ax.get_title().startswith("iterations: max over starting points (4)")


def test_sweep_map_slices_an_axis_at_a_value_or_an_index(x64, tmp_path):
    grid = momentum_grid()
    status, cost = np.asarray(grid.status), np.asarray(grid.cost)
    lr_order, guess_order = np.argsort(GRID3_LRS), np.argsort(GRID3_GUESSES)
    for fixed, k in (({"at": {"momentum": 0.5}}, 1), ({"index": {"momentum": -1}}, 2)):
        ax = plot.sweep_map(grid, value="cost", **fixed)
        want = np.where(status[:, k] == Status.CONVERGED, cost[:, k], np.nan)
        want = want[np.ix_(lr_order, guess_order)].T
        got = ax.collections[0].get_array().reshape(want.shape)
        np.testing.assert_array_equal(np.ma.getmaskarray(got), np.isnan(want))
        np.testing.assert_array_equal(got.compressed(), want[~np.isnan(want)])
        assert ax.get_title() == f"momentum = {GRID3_MOMENTA[k]:g}"
    save(ax, tmp_path, "sweep_map_slice")

    # The slice at momentum 0.5 is the map of a sweep run with momentum 0.5 alone, which
    # has two axes: today's picture, with no title.
    alone = momentum_grid(momentum=0.5)
    assert alone.axes == ("learning_rate", "initial_guess")
    single = plot.sweep_map(alone, ax=plt.figure().add_subplot())
    sliced = plot.sweep_map(grid, at={"momentum": 0.5}, ax=plt.figure().add_subplot())
    np.testing.assert_array_equal(
        single.collections[0].get_array(), sliced.collections[0].get_array()
    )
    assert single.get_title() == ""

    # A starting point fixed by value, momentum against the learning rate.
    ax = plot.sweep_map(grid, y="momentum", at={"initial_guess": 0.5})
    j = GRID3_GUESSES.index(0.5)
    its = np.where(status[:, :, j] == Status.CONVERGED, grid.iterations[:, :, j], -1)
    got = ax.collections[0].get_array().reshape(3, 4)
    np.testing.assert_array_equal(np.ma.filled(got, -1), its[lr_order].T)
    assert ax.get_title() == "x0 = 0.5"


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"x": "b1"}, r"`x` must be an axis of the grid"),
        ({"y": "learning_rate"}, r"`x` and `y` must be two different axes"),
        ({"at": {"momentum": 0.7}}, r"`at` momentum=0.7 is not on the axis; its values: 0, 0.5"),
        ({"at": {"learning_rate": 0.1}}, r"an axis the map draws"),
        ({"index": {"momentum": 3}}, r"`index` 3 is outside the 3 entries of 'momentum'"),
        ({"index": {"b2": 0}}, r"`index` names 'b2', which is not an axis"),
        ({"at": {"momentum": 0.5}, "index": {"momentum": 1}}, r"fixed twice"),
        ({"reduce": "sum"}, r"`reduce` must be one of"),
    ],
)
def test_sweep_map_names_what_is_wrong_with_its_axes(options, says, x64):
    with pytest.raises(ValueError, match=says):
        plot.sweep_map(momentum_grid(), **options)


def test_paths_of_a_three_axis_sweep_name_every_axis(x64):
    grid = momentum_grid(history=True)
    ax = plot.convergence(grid, member=None)
    labels = [line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_")]
    assert "lr=0.1, momentum=0.5, x0=-3" in labels
