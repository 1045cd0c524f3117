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
import subprocess
import sys
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
    assert value(out.stdout, "Status:") == f"MAX_ITER ({gd.Status.MAX_ITER.message})"


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
    assert "4 calls" in out.stdout
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
    assert doc["counts"] == ref_counts
    for row, r in zip(doc["members"], ref, strict=True):
        check(row, *r)

    with np.load(outs[2]) as npz:
        assert npz["status"].shape == npz["x"].shape == (4, 3)
        np.testing.assert_allclose(npz["learning_rate"], lrs, rtol=1e-12)
        np.testing.assert_allclose(npz["x0"], x0s, atol=1e-12)
        for i in range(len(lrs)):
            for j in range(len(x0s)):
                check(
                    {
                        "learning_rate": npz["learning_rate"][i],
                        "x0": npz["x0"][j],
                        "status": str(npz["status_name"][i, j]),
                        "x": npz["x"][i, j],
                        "cost": npz["cost"][i, j],
                        "iterations": int(npz["iterations"][i, j]),
                    },
                    *ref[i * 3 + j],
                )
                assert gd.Status(int(npz["status"][i, j])).name == ref[i * 3 + j][2]


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


# ----------------------------------------------------------------- errors and progress


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["sweep", "--function", "nope"], "unknown function 'nope'"),
        (["run", "--lr", "-0.1"], "learning rate must be > 0"),
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
        (["run", "--norm", "l3"], "invalid choice: 'l3'"),
        (["run", "--bogus"], "unrecognized arguments: --bogus"),
        (["run", "--function", "no_such_module_xyz:f"], "cannot import 'no_such_module_xyz'"),
        (["run", "--function", "gdkernel.functions:nope"], "has no 'nope'"),
        (["run", "--function", "gdkernel.functions:rosenbrock"], "`--x0` is required"),
        # A structural error found by gdkernel itself: the cost is not a scalar.
        (["run", "--function", "jax.numpy:sin", "--x0", "1,2", "--lr", "0.1"], "real scalar"),
        ([], "required"),
    ],
)
def test_bad_arguments_in_process(args, says, capsys):
    assert cli.main(args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.splitlines()) == 1, captured.err
    assert says in captured.err


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
        assert shown.splitlines() == [
            f"sweep: {n}/8 members ({100 * n // 8}%)" for n in (2, 4, 6, 8)
        ]
    else:
        assert "sweep" in shown and "/8" in shown


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
