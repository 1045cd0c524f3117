"""The NumPy tutorial's gradient descent, in a handful of lines.

The tutorial minimises f(x) = 3x^2 - 2x - 3 with its own gradient from x = 8 at learning
rate 0.001, stopping when a step falls below 1e-5 or after 500 iterations, keeps every
iterate in a `series` and plots it by hand. Here the loop is compiled, the series is the
recorded history, and the plots are two calls.

Run:
    python examples/numpy_tutorial.py [OUT_DIR]      # the PNG goes to OUT_DIR (default ./out)
"""

from __future__ import annotations

import argparse
import pathlib

import matplotlib.pyplot as plt
import numpy as np

import gdkernel as gd
from gdkernel import plot


def function(x, a):
    return a[2] * x * x + a[1] * x + a[0]


def grad(x, a):
    return 2 * a[2] * x + a[1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default="out", help="folder for the PNG (./out)")
    out = pathlib.Path(parser.parse_args(argv).out)
    out.mkdir(parents=True, exist_ok=True)

    a = np.array([-3, -2, 3])
    res = gd.gradient_descent(
        function, 8, 0.001, precision=1e-5, max_iter=500, args=(a,), grad_fn=grad, history=True
    )
    print("Minimum occurs at x-value:", float(res.x))
    print("Slope at the minimum is:", float(res.grad))
    print(f"{int(res.iterations)} iterations; {res.message}")
    print("The series (every 100th iterate):", np.asarray(res.history.x)[::100])

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    plot.trajectory(res, function, args=(a,), ax=left)
    plot.convergence(res, ax=right, minimum=-10 / 3, show_step=True)
    right.set_title("cost above the minimum -10/3, and step size")
    fig.savefig(out / "numpy_tutorial.png", dpi=100)
    plt.close(fig)
    print(f"wrote {out / 'numpy_tutorial.png'}")


if __name__ == "__main__":
    main()
