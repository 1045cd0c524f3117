"""The examples run as scripts: exit 0, write their PNGs, print numbers that match references."""

from __future__ import annotations

import importlib.util
import os
import pathlib
import re
import subprocess
import sys

import numpy as np

from tests.helpers import reference_gd

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
NUMBER = r"(-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)"


def run_example(name: str, out: pathlib.Path) -> str:
    env = {**os.environ, "MPLBACKEND": "Agg"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def assert_png(path: pathlib.Path) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, path


def load(name: str):
    spec = importlib.util.spec_from_file_location(name.removesuffix(".py"), EXAMPLES / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fit_line_matches_lstsq(tmp_path):
    stdout = run_example("fit_line.py", tmp_path / "out")
    found = re.search(rf"gradient descent: intercept = {NUMBER}, slope = {NUMBER}", stdout)
    assert found, stdout
    fitted = np.array([float(found[1]), float(found[2])])

    X, y = load("fit_line.py").make_data()  # the example's seeded data, without running it
    A = np.column_stack([np.ones_like(X), X])
    exact, *_ = np.linalg.lstsq(A, y, rcond=None)
    np.testing.assert_allclose(fitted, exact, rtol=0, atol=1e-6)
    # The noisy data still lie around the line they were drawn from.
    np.testing.assert_allclose(fitted, [1.5, 2.0], atol=0.2)
    for png in ("fit_line.png", "fit_sweep.png"):
        assert_png(tmp_path / "out" / png)


def test_minibatch_line_fits_100k_points_like_lstsq(tmp_path):
    stdout = run_example("minibatch_line.py", tmp_path)
    found = re.search(
        rf"mini-batch gradient descent: intercept = {NUMBER}, slope = {NUMBER}", stdout
    )
    assert found, stdout
    fitted = np.array([float(found[1]), float(found[2])])
    X, y = load("minibatch_line.py").make_data()
    exact, *_ = np.linalg.lstsq(np.column_stack([np.ones_like(X), X]), y, rcond=None)
    np.testing.assert_allclose(fitted, exact, atol=0.02)  # mini-batch noise around the fit
    errors = [float(e) for e in re.findall(rf"on all the data {NUMBER}", stdout)]
    assert len(errors) == 4 and min(errors) < 1.001 * float(
        np.mean((X * exact[1] + exact[0] - y) ** 2)
    )


def test_numpy_tutorial_matches_the_tutorial_loop(tmp_path):
    stdout = run_example("numpy_tutorial.py", tmp_path)
    x_found = re.search(rf"Minimum occurs at x-value: {NUMBER}", stdout)
    slope_found = re.search(rf"Slope at the minimum is: {NUMBER}", stdout)
    assert x_found and slope_found, stdout
    x, _, status, _ = reference_gd(lambda x: 6 * x - 2, 8.0, 0.001, 1e-5, 500)
    assert status == "max_iter" and "500 iterations" in stdout
    np.testing.assert_allclose(float(x_found[1]), x, rtol=1e-4)
    np.testing.assert_allclose(float(slope_found[1]), 6 * x - 2, rtol=1e-4)
    assert_png(tmp_path / "numpy_tutorial.png")
