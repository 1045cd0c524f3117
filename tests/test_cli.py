"""The command line, run as a user runs it (`python -m gdkernel` in a subprocess), checked
against plain-Python loops of the tutorials' algorithm. Argument errors and the progress bar
are also checked in-process through `cli.main`, which is cheaper."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import reference_gd, scalar_gd

import gdkernel as gd
from gdkernel import cli, functions

ROOT = Path(__file__).resolve().parents[1]


def gdkernel(*args: str, cwd: Path = ROOT, pythonpath: Path | None = None):
    env = dict(os.environ)
    paths = [str(ROOT)] + ([str(pythonpath)] if pythonpath else [])
    env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")])
    env.pop("JAX_ENABLE_X64", None)
    return subprocess.run(
        [sys.executable, "-m", "gdkernel", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def value(stdout: str, label: str) -> str:
    (match,) = re.findall(rf"^\s*{re.escape(label)}\s*(.+)$", stdout, flags=re.M)
    return match.strip()


def numbers(text: str) -> np.ndarray:
    return np.array([float(t) for t in text.strip("[]").split(",")])


def counts(stdout: str) -> dict[str, int]:
    return {m[0]: int(m[1]) for m in re.findall(r"^([A-Z_]+)\s+(\d+)$", stdout, flags=re.M)}


# ------------------------------------------------------------------------------- run


def test_run_prints_the_tutorial_lines():
    out = gdkernel(
        "run", "--function", "quadratic", "--x0", "8", "--lr", "0.001",
        "--precision", "1e-5", "--max-iter", "500",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    # The second tutorial's loop: f(x) = 3x^2 - 2x - 3, f'(x) = 6x - 2.
    ref_x, ref_it, ref_status = scalar_gd(lambda x: 6 * x - 2, 8.0, 0.001, 1e-5, 500)
    x = float(value(out.stdout, "Minimum occurs at x-value:"))
    slope = float(value(out.stdout, "Slope at the minimum is:"))
    cost = float(value(out.stdout, "Cost at the minimum is:"))
    assert x == pytest.approx(ref_x, rel=1e-4)  # float32
    assert slope == pytest.approx(6 * ref_x - 2, rel=1e-3)
    assert cost == pytest.approx(3 * ref_x**2 - 2 * ref_x - 3, rel=1e-4)
    assert int(value(out.stdout, "Iterations:")) == ref_it == 500
    assert ref_status == "max_iter"
    # the status message in the command line's terms: its flags, not the library's names
    assert value(out.stdout, "Status:") == (
        "MAX_ITER (stopped after `--max-iter` iterations without converging)"
    )


def test_a_diverged_run_is_told_in_flags_and_by_its_own_count():
    # 8 at rate 1 on 3x^2 - 2x - 3: x_{k+1} = 2 - 5 x_k grows 5-fold a step; the cost passes
    # the rule's ceiling on the fourth, and the run keeps 3 iterations.
    out = gdkernel("run", "--x0", "8", "--lr", "1")
    x, kept = 8.0, 0
    ceiling = (3 * 64 - 16 - 3) + 1e4 * max(abs(3 * 64 - 16 - 3), 1.0 * (6 * 8 - 2) ** 2)
    while 3 * (2 - 5 * x) ** 2 - 2 * (2 - 5 * x) - 3 <= ceiling:
        x, kept = 2 - 5 * x, kept + 1
    assert int(value(out.stdout, "Iterations:")) == kept == 3
    status = value(out.stdout, "Status:")
    assert status.startswith("DIVERGED") and "`--lr`" in status and "10000 times" in status
    assert "`learning_rate`" not in status and "after 0 iterations" not in status


def rosenbrock_grad(x):
    return np.array([-2 * (1 - x[0]) - 400 * x[0] * (x[1] - x[0] ** 2), 200 * (x[1] - x[0] ** 2)])


def test_run_vector_momentum_in_float64():
    # One coordinate given: x[1] comes from the built-in's default starting point (-1.2, 1).
    out = gdkernel(
        "run", "--function", "rosenbrock", "--x0", "-1.5", "--lr", "1e-3",
        "--method", "momentum", "--momentum", "0.8", "--norm", "l2",
        "--precision", "1e-5", "--max-iter", "3000", "--x64",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    ref_x, ref_it, ref_status, _ = reference_gd(
        rosenbrock_grad, [-1.5, 1.0], 1e-3, 1e-5, 3000, norm="l2", method="momentum", momentum=0.8
    )
    assert ref_status == "converged"
    np.testing.assert_allclose(
        numbers(value(out.stdout, "Minimum occurs at x-value:")), ref_x, rtol=1e-12
    )
    np.testing.assert_allclose(
        numbers(value(out.stdout, "Slope at the minimum is:")), rosenbrock_grad(ref_x), rtol=1e-9
    )
    assert int(value(out.stdout, "Iterations:")) == ref_it
    assert value(out.stdout, "Status:").startswith("CONVERGED (")


def test_run_own_function_from_module_attribute(tmp_path):
    (tmp_path / "my_costs.py").write_text(
        "import jax.numpy as jnp\n\n"
        "def bowl(x):\n"
        "    return jnp.sum(jnp.array([1.0, 3.0]) * (x - jnp.array([2.0, -1.0])) ** 2)\n"
    )
    out = gdkernel(
        "run", "--function", "my_costs:bowl", "--x0", "0,1", "--lr", "0.05",
        "--precision", "1e-8", "--max-iter", "1000", "--x64", pythonpath=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    w, c = np.array([1.0, 3.0]), np.array([2.0, -1.0])
    ref_x, ref_it, ref_status, _ = reference_gd(
        lambda x: 2 * w * (x - c), [0.0, 1.0], 0.05, 1e-8, 1000
    )
    assert ref_status == "converged"
    np.testing.assert_allclose(
        numbers(value(out.stdout, "Minimum occurs at x-value:")), ref_x, rtol=1e-12
    )
    assert int(value(out.stdout, "Iterations:")) == ref_it


def test_a_vector_function_given_one_number_names_x0(tmp_path):
    (tmp_path / "my_bowl.py").write_text("def bowl(x):\n    return (x[0] - 1) ** 2 + x[1] ** 2\n")
    out = gdkernel("run", "--function", "my_bowl:bowl", "--x0", "1", "--lr", "0.1",
                   pythonpath=tmp_path)  # fmt: skip
    assert out.returncode == 2
    assert out.stderr.strip().endswith(
        "(x is one number here: give `--x0` one entry per coordinate, e.g. `--x0 1,2`)"
    ), out.stderr
    assert "np.array" not in out.stderr and "Traceback" not in out.stderr


# ----------------------------------------------------------------------------- sweep


def reference_member(lr, x0, precision, max_iter):
    """The tutorial quadratic's loop in float64, with divergence detected as the kernel does."""
    x, lr = float(x0), float(lr)  # Python floats: overflow gives inf, not an error
    for it in range(1, max_iter + 1):
        new_x = x - lr * (6 * x - 2)
        cost = 3 * new_x * new_x - 2 * new_x - 3
        if not (math.isfinite(new_x) and math.isfinite(cost) and math.isfinite(6 * new_x - 2)):
            return "DIVERGED", None, None
        step, x = abs(new_x - x), new_x
        if step < precision:
            return "CONVERGED", x, it
    return "MAX_ITER", x, max_iter


def test_sweep_summary_and_every_output_format(tmp_path):
    lrs, x0s, precision, max_iter = np.geomspace(1e-3, 1, 4), np.linspace(-4, 4, 3), 1e-6, 1000
    outs = [tmp_path / f"members.{ext}" for ext in ("csv", "json", "npz")]
    out = gdkernel(
        "sweep", "--function", "quadratic", "--lr", "1e-3:1:4", "--x0", "-4:4:3",
        "--precision", "1e-6", "--max-iter", "1000", "--x64",
        "--chunk-size", "3",  # one learning rate per compiled call: 4 calls, joined
        *(a for p in outs for a in ("--out", str(p))),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""  # stderr is not a terminal: no progress output
    ref = [(lr, x0, *reference_member(lr, x0, precision, max_iter)) for lr in lrs for x0 in x0s]
    ref_counts = {s.name: sum(r[2] == s.name for r in ref) for s in gd.Status}
    assert ref_counts == {"CONVERGED": 6, "MAX_ITER": 3, "DIVERGED": 3, "STALLED": 0, "INVALID": 0}
    assert counts(out.stdout) == ref_counts
    assert float(value(out.stdout, "cost")) == pytest.approx(-10 / 3, abs=1e-5)  # 6 digits shown

    def check(row, lr, x0, status, x, iterations):
        assert row["learning_rate"] == pytest.approx(lr, rel=1e-12)
        assert row["x0"] == pytest.approx(x0, abs=1e-12)
        assert row["status"] == status
        if status != "DIVERGED":
            assert row["x"] == pytest.approx(x, rel=1e-12)
            assert row["cost"] == pytest.approx(3 * x**2 - 2 * x - 3, rel=1e-12)
            assert row["iterations"] == iterations

    with outs[0].open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["learning_rate", "x0", "x", "cost", "iterations", "status"]
    assert len(rows) == len(ref)
    for row, r in zip(rows, ref, strict=True):
        parsed = {k: (v if k == "status" else float(v)) for k, v in row.items()}
        check(parsed, *r)

    doc = json.loads(outs[1].read_text())
    assert doc["function"] == "quadratic" and doc["dtype"] == "float64"
    # The grid's values, not the ranges typed: `1e-3:1:4` log-spaced, `-4:4:3` linear.
    np.testing.assert_allclose(doc["learning_rates"], lrs, rtol=1e-12)
    np.testing.assert_allclose(doc["x0"], x0s, atol=1e-12)
    assert doc["counts"] == ref_counts
    for row, r in zip(doc["members"], ref, strict=True):
        check(row, *r)

    # One .npz layout, whoever writes it: the library reads the command line's file.
    grid = gd.load_sweep(outs[2])
    assert grid.status.shape == grid.cost.shape == (4, 3)
    np.testing.assert_allclose(grid.learning_rate, lrs, rtol=1e-12)
    np.testing.assert_allclose(grid.initial_guess, x0s, atol=1e-12)
    assert {s.name: n for s, n in grid.counts().items()} == ref_counts
    for i in range(len(lrs)):
        for j in range(len(x0s)):
            res = grid.member(i, j)
            check(
                {
                    "learning_rate": grid.learning_rate[i],
                    "x0": grid.initial_guess[j],
                    "status": gd.Status(int(res.status)).name,
                    "x": res.x,
                    "cost": res.cost,
                    "iterations": int(res.iterations),
                },
                *ref[i * 3 + j],
            )
    with np.load(outs[2]) as npz:  # plain arrays, readable without gdkernel
        np.testing.assert_array_equal(npz["cost"], grid.cost)


def test_sweep_without_options_runs_the_documented_default(capsys):
    # In-process: the same program as `gdkernel sweep`, without a second JAX start-up.
    assert cli.main(["sweep"]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith("rosenbrock: 32 learning rates x 64 starting points = 2048")
    # The default is `--lr 1e-4:1e-2:32 --x0 -2:2:64 --max-iter 10000 --precision 1e-5
    # --grad-tol 1e-2`, x[1] = 1.
    x0 = np.stack([np.linspace(-2, 2, 64), np.ones(64)], axis=-1).astype(np.float32)
    lrs = np.geomspace(1e-4, 1e-2, 32).astype(np.float32)
    grid = gd.sweep(functions.rosenbrock, x0, lrs, max_iter=10000, precision=1e-5, grad_tol=1e-2)
    expected = {s.name: n for s, n in grid.counts().items()}
    assert counts(shown) == expected
    assert all(expected[name] > 0 for name in ("CONVERGED", "MAX_ITER", "DIVERGED", "STALLED"))


def test_sweep_adam_with_a_b1_axis_to_a_table_and_a_plot(tmp_path):
    """`--method adam --hyperparam b1=lo:hi:n`: a grid axis in the summary, the CSV (read back
    by `gd.load_sweep` as the library's sweep, member by member) and the plot (a panel for
    b1 beside the map). Needs optax and the plot extra."""
    import matplotlib.image

    table, png = tmp_path / "adam.csv", tmp_path / "adam.png"
    out = gdkernel(
        "sweep", "--function", "rosenbrock", "--method", "adam",
        "--hyperparam", "b1=0.8:0.99:3", "--hyperparam", "eps=1e-7",
        "--lr", "1e-2:1e-1:3", "--x0", "-2:2:4", "--precision", "1e-4", "--max-iter", "500",
        "--out", str(table), "--plot", str(png),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert (
        lines[0] == "rosenbrock: 3 learning rates x 3 b1 x 4 starting points = 36 members (float32)"
    )
    assert lines[1:4] == [
        "  method           adam (eps=1e-07)",
        "  learning rates   1e-2 .. 1e-1, 3 log-spaced",
        "  b1               0.8 .. 0.99, 3 linear",  # two coefficients: linear
    ]
    assert out.stdout.endswith(f"wrote {table}\nwrote {png}\n")

    # The same grid from the library, b1 linear.
    rates = np.geomspace(1e-2, 1e-1, 3).astype(np.float32)
    b1 = np.linspace(0.8, 0.99, 3)
    guesses = np.stack([np.linspace(-2, 2, 4), np.ones(4)], axis=-1).astype(np.float32)
    want = gd.sweep(
        functions.rosenbrock, guesses, rates, method="adam",
        hyperparams={"b1": b1, "eps": 1e-7}, max_iter=500, precision=1e-4,
    )  # fmt: skip
    back = gd.load_sweep(table)
    assert back.axes == want.axes == ("learning_rate", "b1", "initial_guess")
    for name in ("learning_rate", "b1", "initial_guess"):  # float32 values, written shortest
        np.testing.assert_array_equal(back.coords[name].astype(np.float32), want.coords[name])
    assert back.status.shape == (3, 3, 4)
    for index in np.ndindex(*back.status.shape):
        got, ref = back.member(*index), want.member(*index)
        assert int(got.status) == int(ref.status), index
        assert int(got.iterations) == int(ref.iterations), index
        np.testing.assert_allclose(got.x, ref.x, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(got.cost, ref.cost, rtol=1e-6, atol=1e-12)
    best = want.best()
    assert want.counts()[gd.Status.CONVERGED] and want.counts()[gd.Status.MAX_ITER]
    assert back.best().index == best.index
    (shown_b1,) = re.findall(r"^  b1 {13}(\S+)$", out.stdout, flags=re.M)  # the best member's
    assert float(shown_b1) == pytest.approx(float(best.coords["b1"]), rel=1e-5)

    image = matplotlib.image.imread(png)
    assert image.shape[1] > 2 * image.shape[0]  # the map and the b1 panel side by side


def test_sweep_ranges_of_momentum_and_precision_are_grid_axes(tmp_path, capsys, x64):
    """Each setting given a range is an axis: momentum linear, precision (three decades)
    log-spaced; every member as the tutorials' momentum loop in float64 runs it."""
    path = tmp_path / "grid.json"
    args = ["sweep", "--function", "quadratic", "--method", "momentum"]
    args += ["--lr", "1e-3:1:3", "--momentum", "0.5:0.9:2", "--precision", "1e-6:1e-3:2"]
    # float64 through the fixture: `--x64` would switch it on for the rest of the process
    args += ["--x0", "-4:4:3", "--max-iter", "500", "--out", str(path)]
    assert cli.main(args) == 0
    shown = capsys.readouterr().out
    assert shown.startswith(
        "quadratic: 3 learning rates x 2 momentum x 2 precision x 3 starting points = 36 "
        "members (float64)\n"
    )
    assert "\n  momentum         0.5 .. 0.9, 2 linear\n" in shown
    assert "\n  precision        1e-6 .. 1e-3, 2 log-spaced\n" in shown
    doc = json.loads(path.read_text())
    assert doc["axes"] == ["learning_rate", "momentum", "precision", "initial_guess"]
    assert doc["options"]["momentum"] == [0.5, 0.9]
    np.testing.assert_allclose(doc["options"]["precision"], [1e-6, 1e-3], rtol=1e-15)
    lrs = np.geomspace(1e-3, 1, 3)
    members = iter(doc["members"])
    statuses = set()
    for lr in lrs:
        for momentum in (0.5, 0.9):
            for precision in (1e-6, 1e-3):
                for x0 in (-4.0, 0.0, 4.0):
                    row = next(members)
                    assert row["learning_rate"] == pytest.approx(lr, rel=1e-15)
                    assert (row["momentum"], row["x0"]) == (momentum, x0)
                    assert row["precision"] == pytest.approx(precision, rel=1e-15)
                    x, its, status, _ = reference_gd(
                        lambda x: 6 * x - 2, x0, lr, precision, 500, method="momentum",
                        momentum=momentum, cost=lambda x: 3 * x**2 - 2 * x - 3,
                    )  # fmt: skip
                    assert row["status"] == status.upper(), row
                    statuses.add(status)
                    if status != "diverged":
                        assert row["iterations"] == its
                        assert row["x"] == pytest.approx(float(x), rel=1e-9)
    assert statuses == {"converged", "max_iter", "diverged"}
    back = gd.load_sweep(path)
    assert back.axes == tuple(doc["axes"]) and back.status.shape == (3, 2, 2, 3)


# ----------------------------------------------------------------- errors and progress


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["sweep", "--function", "nope"], "unknown function 'nope'"),
        (["run", "--lr", "-0.1"], "learning rate must be > 0"),
        (
            ["sweep", "--method", "adam", "--hyperparam", "b3=0.5"],
            "`--hyperparam b3`: `--method adam` takes no 'b3'; it takes b1, b2, eps",
        ),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args, says):
    out = gdkernel(*args)
    assert out.returncode == 2
    assert out.stdout == ""
    assert len(out.stderr.splitlines()) == 1, out.stderr
    assert says in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["sweep", "--lr", "1e-3:1"], "malformed range '1e-3:1'"),
        (["sweep", "--out", "r.csv", "--out", "./r.csv"], "`--out` names './r.csv' twice"),
        (["sweep", "--lr", "1e-3:1:x"], "n must be an integer"),
        (["sweep", "--lr", "1e-3:1:0"], "n must be an integer >= 1, got '0'"),
        (["sweep", "--lr", "0:1:4"], "learning rates must be > 0"),
        (["sweep", "--x0", "a:2:3"], "not a number: 'a'"),
        (["sweep", "--x0", "-1:1:3,0,0"], "rosenbrock takes 2 coordinates"),
        (["sweep", "--function", "quadratic", "--x0", "1,2"], "quadratic takes a scalar x"),
        (["sweep", "--out", "members.txt"], "`--out` must end in .csv, .json, .npz"),
        (["run", "--lr", "0"], "learning rate must be > 0"),
        (["run", "--lr", "1e-3:1:4"], "ranges are for `gdkernel sweep`"),
        (["run", "--x0", "nan"], "must be finite"),
        (["run", "--max-iter", "-5"], "--max-iter: must be >= 0"),
        (["run", "--precision", "-1e-3"], "--precision: must be >= 0"),
        (["run", "--momentum", "1"], "--momentum: must be in [0, 1)"),
        (["run", "--momentum", "0.5"], "`--momentum` is used only by `--method momentum`"),
        (["run", "--norm", "l3"], "invalid choice: 'l3'"),
        (["run", "--bogus"], "unrecognized arguments: --bogus"),
        (["run", "--function", "no_such_module_xyz:f"], "cannot import 'no_such_module_xyz'"),
        (["run", "--function", "gdkernel.functions:nope"], "has no 'nope'"),
        (["run", "--function", "gdkernel.functions:rosenbrock"], "`--x0` is required"),
        # A structural error found by gdkernel itself: the cost is not a scalar.
        (["run", "--function", "jax.numpy:sin", "--x0", "1,2", "--lr", "0.1"], "real scalar"),
        ([], "required"),
        (
            ["run", "--method", "adam", "--hyperparam", "b1=2"],
            "`--hyperparam b1` must be in [0, 1)",
        ),
        (["run", "--method", "adam", "--hyperparam", "eps=-1"], "`--hyperparam eps` must be >= 0"),
        (
            ["run", "--method", "adam", "--hyperparam", "nesterov=1"],
            "`--hyperparam nesterov` must be True or False",
        ),
        (["run", "--method", "adam", "--hyperparam", "mu_dtype=floaty"], "not a dtype: 'floaty'"),
        (["run", "--x0", "1e39"], "`--x0` holds values beyond float32's range"),
        (["sweep", "--x0", "-1e39:1:3"], "rescale the problem, or compute in float64 with `--x64`"),
        (["sweep", "--chunk-size", "-1"], "--chunk-size: must be >= 1, got -1"),
        (["sweep", "--lr", "1e-3:1:1"], "a range of 1 point needs lo = hi"),
        (
            ["run", "--quiet"],
            "gdkernel run: error: unrecognized arguments: --quiet (see `gdkernel run",
        ),
    ],
)
def test_bad_arguments_in_process(args, says, capsys):
    assert cli.main(args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.splitlines()) == 1, captured.err
    assert says in captured.err


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--method", "adam", "--hyperparam", "b1"], "argument --hyperparam: expected NAME=VALUE"),
        (["--method", "adam", "--hyperparam", "=0.9"], "expected NAME=VALUE"),
        (
            ["--method", "adam", "--hyperparam", "b1=high"],
            "--hyperparam: b1: not a number, nor true/false: 'high'",
        ),
        (
            ["--method", "adam", "--hyperparam", "nesterov=maybe"],
            "nesterov: not a number, nor true/false: 'maybe'",
        ),
        (["--method", "adam", "--hyperparam", "b1=inf"], "--hyperparam: b1: must be finite"),
        (["--method", "adam", "--hyperparam", "b1=0.8:0.99"], "b1: malformed range '0.8:0.99'"),
        (["--method", "adam", "--hyperparam", "b1=0.8:0.99:0"], "n must be an integer >= 1"),
        (["--method", "adam", "--hyperparam", "b1=0.8:0.99:5:cubic"], "log or linear, got 'cubic'"),
        (["--method", "adam", "--hyperparam", "eps=0:1e-3:4:log"], "needs ends > 0"),
        (["--method", "adam", "--hyperparam", "b3=0.5"], "`--hyperparam b3`: `--method adam`"),
        (["--method", "lion", "--hyperparam", "eps=1e-8"], "takes no 'eps'; it takes b1, b2"),
        (
            ["--method", "adam", "--hyperparam", "b1=0.9", "--hyperparam", "b1=0.8:0.9:2"],
            "`--hyperparam b1` is given twice",
        ),
        (["--method", "adam", "--hyperparam", "learning_rate=0.1"], "the learning rate is `--lr`"),
        (["--hyperparam", "b1=0.9"], "`--hyperparam b1` is for the optax methods"),
        (["--method", "nesterov", "--hyperparam", "b1=0.9"], "its options are `--momentum`"),
        (["--method", "adam", "--momentum", "0.5"], "`--method adam` would ignore it"),
        (["--method", "momentum", "--momentum", "0.5:1:3"], "--momentum: must be in [0, 1)"),
        (["--precision", "-1e-3:1e-3:3"], "--precision: must be >= 0, got '-1e-3:1e-3:3'"),
        (["--grad-tol", "1e-3:1e-1"], "--grad-tol: malformed range"),
        (["--method", "adamx"], "--method: invalid choice: 'adamx'"),
        (["run", "--method", "adam", "--hyperparam", "b3=0.5"], "`--method adam` takes no 'b3'"),
        (
            ["run", "--method", "adam", "--hyperparam", "nesterov=maybe"],
            "nesterov: not a number, nor true/false: 'maybe'",
        ),
    ],
)
def test_bad_methods_hyperparams_and_ranges_fail_before_any_work(args, says, no_work, capsys):
    command, args = (args[0], args[1:]) if args[0] == "run" else ("sweep", args)
    assert cli.main([command, *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.splitlines()) == 1, captured.err
    assert says in captured.err
    assert captured.err.startswith(f"gdkernel {command}: error: ")


@pytest.mark.parametrize(
    "args",
    [
        ["--method", "adam", "--hyperparam", "b1=0.8:0.9:3"],
        ["--method", "momentum", "--momentum", "0.1:0.5:3"],
        ["--precision", "1e-6:1e-3:4"],
        ["--grad-tol", "1e-3:1e-1:3"],
    ],
)
def test_run_takes_one_value_per_setting(args, no_work, capsys):
    assert cli.main(["run", *args]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "one value for `run`" in line and "ranges are for `gdkernel sweep`" in line


@pytest.mark.parametrize(
    ("args", "axis"),
    [
        (["--precision", "1e-6:1e-3:4:log"], "1e-6 .. 1e-3, 4 log-spaced"),
        (["--method", "adam", "--hyperparam", "b1=0.8:0.99:3:linear"], "0.8 .. 0.99, 3 linear"),
        (["--method", "adam", "--hyperparam", "eps=1e-8:1e-4:3:log"], "1e-8 .. 1e-4, 3 log-spaced"),
    ],
)
def test_a_range_that_names_its_spacing(args, axis, capsys):
    assert cli.main(["sweep", "-f", "quadratic", "--max-iter", "20", *args]) == 0
    assert axis in capsys.readouterr().out


def test_a_dtype_hyperparameter_by_name(capsys):
    assert cli.main(["run", "--method", "adam", "--hyperparam", "mu_dtype=bfloat16"]) == 0
    assert (
        cli.main(
            [
                "sweep",
                "-f",
                "quadratic",
                "--method",
                "adam",
                "--max-iter",
                "20",
                "--hyperparam",
                "mu_dtype=bfloat16",
            ]
        )
        == 0
    )
    assert "adam (mu_dtype=bfloat16)" in capsys.readouterr().out


def test_ctrl_c_stops_a_sweep_at_once():
    """The compiled program runs on a worker thread: SIGINT reaches the command while it
    runs, and the command exits 130 without waiting for the program to end."""
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    args = [
        "sweep",
        "-f",
        "quadratic",
        "--lr",
        "1e-6:1e-5:4",
        "--x0",
        "-10:10:4",
        "--precision",
        "0",
        "--max-iter",
        "2000000000",
        "--quiet",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "gdkernel", *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(8)  # imports and compilation (2-3 s), then well into a run of many minutes
    assert proc.poll() is None
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert time.monotonic() - sent < 10
    assert err.strip().splitlines()[-1] == "gdkernel sweep: interrupted"


def test_version(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out == f"gdkernel {gd.__version__}\n"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("mode", ["tqdm", "counter", "quiet"])
def test_progress_on_a_terminal(mode, monkeypatch, capsys):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    if mode == "counter":
        monkeypatch.setitem(sys.modules, "tqdm", None)  # as if tqdm were not installed
    args = ["sweep", "--function", "quadratic", "--lr", "1e-2:1e-1:4", "--x0", "-1:1:2"]
    args += ["--max-iter", "50", "--chunk-size", "2"]  # 4 calls of 2 members
    assert cli.main([*args, "--quiet"] if mode == "quiet" else args) == 0
    assert sum(counts(capsys.readouterr().out).values()) == 8
    shown = terminal.getvalue()
    if mode == "quiet":
        assert shown == ""
    elif mode == "counter":
        # The first report says the sweep runs; then one line per finished call.
        assert shown.splitlines() == [
            f"sweep: {n}/8 members ({100 * n // 8}%)" for n in (0, 2, 4, 6, 8)
        ]
    else:
        assert "sweep" in shown and "/8" in shown


def test_progress_of_one_call_shows_from_its_first_report(monkeypatch):
    """A grid run in one call reports from inside the loop: the display shows that it runs
    before any member has stopped, then each advance; a sweep done by its first report
    shows nothing."""
    from gdkernel._cli_progress import Display

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.setitem(sys.modules, "tqdm", None)

    def report(done, chunks_done=0):
        return gd.Progress(chunks_done, 1, done, 8, 8 - done, done, 0, 0.0)

    display = Display(enabled=True)
    for p in (report(0), report(0), report(5), report(8, 1)):
        display(p)
    assert terminal.getvalue().splitlines() == [
        "sweep: 0/8 members (0%)",
        "sweep: 5/8 members (62%)",
        "sweep: 8/8 members (100%)",
    ]
    quick = Display(enabled=True)
    quick(report(8, 1))
    assert terminal.getvalue().count("\n") == 3


def test_library_warnings_name_the_flags(capsys):
    # float32 cannot resolve steps below its epsilon: the library warns about `precision`.
    args = ["run", "--function", "quadratic", "--precision", "1e-9", "--max-iter", "3"]
    assert cli.main(args) == 0
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("gdkernel run: warning: `--precision`")


# --------------------------------------------------------------------------- the plot


def test_sweep_plot_writes_the_sweep_map(tmp_path):
    """Needs `gdkernel.plot` (the plot extra)."""
    import matplotlib.colors
    import matplotlib.image

    from gdkernel import plot

    png = tmp_path / "sweep.png"
    out = gdkernel(
        "sweep", "--function", "quadratic", "--lr", "1e-3:1:8", "--x0", "-4:4:5",
        "--max-iter", "500", "--plot", str(png),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert f"wrote {png}" in out.stdout
    image = matplotlib.image.imread(png)[..., :3]
    # lr = 1 diverges from every starting point (|1 - 6 lr| > 1): its cells are drawn in
    # the diverged colour.
    red = np.array(matplotlib.colors.to_rgb(plot.STATUS_COLORS[gd.Status.DIVERGED]))
    assert np.any(np.all(np.abs(image - red) < 0.02, axis=-1))


# ------------------------------------------------------- outputs checked before any work


@pytest.fixture
def no_work(monkeypatch):
    """The solvers fail the test if called: errors must come before any work."""

    def ran(*args, **kwargs):
        raise AssertionError("the solver ran before the bad argument was reported")

    monkeypatch.setattr(cli, "sweep", ran)
    monkeypatch.setattr(cli, "gradient_descent", ran)


@pytest.mark.parametrize("command", ["run", "sweep"])
@pytest.mark.parametrize(
    ("option", "name", "says"),
    [
        ("--out", "missing/r.csv", "the folder '{tmp}/missing' does not exist"),
        ("--out", "r.txt", "`--out` must end in .csv, .json, .npz; got '{tmp}/r.txt'"),
        ("--out", "folder.csv", "`--out` '{tmp}/folder.csv' is a folder"),
        ("--plot", "r.txt", "`--plot` must end in "),
        ("--plot", "missing/r.png", "the folder '{tmp}/missing' does not exist"),
        ("--out", "afile/r.csv", "'{tmp}/afile' is a file, not a folder"),
        ("--plot", "afile/r.png", "'{tmp}/afile' is a file, not a folder"),
    ],
)
def test_output_paths_are_checked_before_any_work(
    command, option, name, says, tmp_path, no_work, capsys
):
    (tmp_path / "folder.csv").mkdir()
    (tmp_path / "afile").write_text("")
    args = [command, "--function", "quadratic", option, str(tmp_path / name)]
    assert cli.main(args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.splitlines()) == 1, captured.err
    assert captured.err.startswith(f"gdkernel {command}: error: `{option}`")
    assert says.format(tmp=tmp_path) in captured.err


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_an_unwritable_folder_is_refused_before_any_work(tmp_path, no_work, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert cli.main(["sweep", "--out", str(locked / "r.csv")]) == 2
    assert "cannot write there (Permission denied)" in capsys.readouterr().err


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
def test_a_path_the_system_refuses_is_refused_before_any_work(no_work, capsys):
    """`/proc` passes a permission test (as root, anywhere does) and takes no new file."""
    assert cli.main(["sweep", "--out", "/proc/gdkernel-r.csv"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        "gdkernel sweep: error: `--out` '/proc/gdkernel-r.csv': cannot write there"
    )
    assert len(err.splitlines()) == 1


def test_the_trial_write_leaves_files_as_they_were(tmp_path):
    from gdkernel._store import cannot_write

    kept = tmp_path / "kept.csv"
    kept.write_text("a,b\n1,2\n")
    assert cannot_write(kept) is None
    assert kept.read_text() == "a,b\n1,2\n"
    fresh = tmp_path / "fresh.csv"
    assert cannot_write(fresh) is None
    assert not fresh.exists()


def test_a_grid_too_big_for_memory_points_to_the_flag(monkeypatch, tmp_path, capsys):
    from gdkernel import _chunks

    monkeypatch.setattr(_chunks, "available_host_bytes", lambda: 10_000)
    monkeypatch.setattr(_chunks, "SMALL", 0)
    args = ["sweep", "--function", "quadratic", "--lr", "1e-3:1:4", "--x0", "-4:4:300"]
    args += ["--precision", "1e-6", "--max-iter", "1000"]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert "host memory" in err and "`--out sweep.npz`" in err and "out=" not in err
    # What it says works: the grid streams to the file.
    assert cli.main([*args, "--out", str(tmp_path / "sweep.npz")]) == 0
    grid = gd.load_sweep(tmp_path / "sweep.npz")
    lrs, x0s = np.geomspace(1e-3, 1, 4).astype(np.float32), np.linspace(-4, 4, 300)
    ref = [reference_member(lr, x0, 1e-6, 1000)[0] for lr in lrs for x0 in x0s]
    got = [gd.Status(int(c)).name for c in grid.status.ravel()]
    # float32 against float64: members on a convergence boundary may differ.
    assert sum(g != r for g, r in zip(got, ref, strict=True)) <= 3


@pytest.mark.parametrize(
    ("message", "said"),
    [
        (
            "stream it to a file with `out='sweep.npz'`",
            "stream it to a file with `--out sweep.npz`",
        ),
        ("`max_iter` must be >= 0", "`--max-iter` must be >= 0"),
        ("`cost_fn` must output a real scalar", "`--function` must output a real scalar"),
        ("`learning_rate` rounds to 0 in float32", "`--lr` rounds to 0 in float32"),
        ("`history_every` is ignored", "`history_every` is ignored"),  # no flag: as it was
        (
            "method='adam' with `hyperparams` {'b1': 'x'} fails when built and stepped once",
            "`--method adam` with `--hyperparam` {'b1': 'x'} fails when built and stepped once",
        ),
        (
            "`hyperparams['b1']` must be in [0, 1), got 2",
            "`--hyperparam b1` must be in [0, 1), got 2",
        ),
        ("or float64 (jax_enable_x64)", "or float64 (`--x64`)"),
        ("with jax.config.update('jax_enable_x64', True)", "with `--x64`"),
    ],
)
def test_library_messages_name_the_flags(message, said):
    assert cli.in_cli_terms(message) == said


# ------------------------------------------------------------------- run: files and plot


def test_run_writes_its_result_and_plot(tmp_path):
    """Needs `gdkernel.plot` (the plot extra) for `--plot`."""
    import matplotlib.image

    files = [tmp_path / f"run.{ext}" for ext in ("json", "csv", "npz", "png")]
    out = gdkernel(
        "run", "--function", "quadratic", "--x0", "8", "--lr", "0.001", "--precision", "1e-5",
        "--max-iter", "500", "--x64", "--out", str(files[0]), "--out", str(files[1]),
        "--out", str(files[2]), "--plot", str(files[3]),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert [f"wrote {f}" for f in files] == out.stdout.splitlines()[-4:]
    ref_x, ref_it, _ = scalar_gd(lambda x: 6 * x - 2, 8.0, 0.001, 1e-5, 500)

    def check(row):
        assert row["learning_rate"] == pytest.approx(0.001, rel=1e-12)
        assert row["x0"] == 8.0
        assert row["x"] == pytest.approx(ref_x, rel=1e-12)
        assert row["cost"] == pytest.approx(3 * ref_x**2 - 2 * ref_x - 3, rel=1e-12)
        assert row["iterations"] == ref_it == 500
        assert row["status"] == "MAX_ITER"

    doc = json.loads(files[0].read_text())
    assert doc["function"] == "quadratic" and doc["dtype"] == "float64"
    assert doc["learning_rates"] == [0.001] and doc["x0"] == [8.0]
    assert doc["counts"]["MAX_ITER"] == 1 and len(doc["members"]) == 1
    check(doc["members"][0])
    with files[1].open() as f:
        (row,) = list(csv.DictReader(f))
    check({k: (v if k == "status" else float(v)) for k, v in row.items()})
    # The .npz is a sweep of one member; with --plot it carries the run's history.
    grid = gd.load_sweep(files[2])
    res = grid.member(0, 0)
    check(
        {
            "learning_rate": grid.learning_rate[0],
            "x0": grid.initial_guess[0],
            "x": res.x,
            "cost": res.cost,
            "iterations": int(res.iterations),
            "status": gd.Status(int(res.status)).name,
        }
    )
    assert res.history.cost[0] == 3 * 8**2 - 2 * 8 - 3  # the cost at the start
    assert np.all(np.isfinite(res.history.cost[: ref_it + 1]))  # one row per iteration
    assert files[3].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.image.imread(files[3]).ndim == 3


def test_run_without_plot_records_no_history(tmp_path, capsys):
    path = tmp_path / "run.npz"
    assert cli.main(["run", "--max-iter", "20", "--out", str(path)]) == 0
    assert f"wrote {path}" in capsys.readouterr().out
    assert gd.load_sweep(path).history is None


# ------------------------------------------------------------------ help and the notes


@pytest.mark.parametrize("command", ["run", "sweep"])
def test_help_shows_the_defaults(command, capsys):
    assert cli.main([command, "--help"]) == 0
    # One entry per option: a line starting "  --name", then its indented continuation lines.
    entries = re.split(r"\n(?=  -)", capsys.readouterr().out)
    help_of = {e.split()[0]: " ".join(e.split()) for e in entries if e.startswith("  -")}
    for option, default in (("--norm", "l1"), ("--method", "gd"), ("--momentum", "0.9")):
        assert help_of[option].endswith(f"(default: {default})"), help_of[option]
    from gdkernel._optimizers import NAMES

    named = re.findall(r"\w+", help_of["--method"])
    assert [name for name in NAMES if name not in named] == []
    assert "NAME=VALUE" in help_of["--hyperparam"]


@pytest.mark.parametrize(
    ("args", "note"),
    [
        (["run", "--function", "rosenbrock", "--x0", "-1.5"], "x[1] = 1 is its default"),
        (["sweep", "--function", "rosenbrock", "--x0", "-2:2:3"], "x[1] = 1 is its default"),
        (["run", "--function", "rosenbrock", "--x0", "-1.5,1"], None),
        (["run", "--function", "rosenbrock"], None),  # no --x0: the documented default
    ],
)
def test_coordinates_left_out_of_x0_are_noted(args, note, capsys):
    assert cli.main([*args, "--lr", "1e-3", "--max-iter", "5"]) == 0
    err = capsys.readouterr().err
    if note is None:
        assert err == ""
        return
    (line,) = err.splitlines()
    # The filled value is the built-in's own default starting point.
    default = functions.BUILTINS["rosenbrock"].x0[1]
    assert note == f"x[1] = {default:g} is its default"
    assert line == (
        f"gdkernel {args[0]}: note: `--x0` gives 1 of rosenbrock's 2 coordinates; {note}"
    )


# ------------------------------------------------------------------------------ speed


def test_sweep_off_a_terminal_runs_as_the_library_does(monkeypatch, capsys):
    """No progress display to feed and no chunk size of its own: the grid runs as
    `gd.sweep` runs it by default (one compiled call when it fits in memory)."""
    calls = []

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return gd.sweep(*args, **kwargs)

    monkeypatch.setattr(cli, "sweep", spy)
    assert cli.main(["sweep", "--function", "quadratic", "--lr", "0.1", "--x0", "1:2:3"]) == 0
    (kwargs,) = calls
    assert kwargs["progress"] is None and kwargs["chunk_size"] is None


def test_csv_and_json_write_the_shortest_float32_text(tmp_path, capsys):
    # float32: 0.1 is 0.100000001490116..., written as the shortest text that reads back.
    paths = [tmp_path / "r.csv", tmp_path / "r.json"]
    args = ["sweep", "--function", "quadratic", "--lr", "0.1", "--x0", "0.3"]
    assert cli.main([*args, "--out", str(paths[0]), "--out", str(paths[1])]) == 0
    with paths[0].open() as f:
        (row,) = list(csv.DictReader(f))
    assert row["learning_rate"] == "0.1" and row["x0"] == "0.3"
    x = np.float32(row["x"])
    assert str(x) == row["x"]  # NumPy's shortest round-trip text of a float32
    member = json.loads(paths[1].read_text())["members"][0]
    assert member["learning_rate"] == 0.1 and member["x0"] == 0.3 and member["x"] == float(row["x"])


def test_a_grid_that_only_diverged_has_no_best_member_and_says_why():
    out = gdkernel("sweep", "--function", "quadratic", "--lr", "1:2:2", "--x0", "-1:1:3")
    assert out.returncode == 0, out.stderr
    assert re.search(r"^DIVERGED\s+6$", out.stdout, flags=re.M), out.stdout
    assert "best member: none (every member diverged" in out.stdout, out.stdout


def test_a_flag_that_float32_rounds_out_of_range_is_named():
    out = gdkernel("run", "--method", "momentum", "--momentum", "0.99999999")
    assert out.returncode == 2
    assert "`--momentum` must stay in [0, 1) in float32" in out.stderr, out.stderr
    assert "--x64" in out.stderr and "Traceback" not in out.stderr
