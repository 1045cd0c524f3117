"""Turn a saved benchmark run into a chart: throughput per implementation and workload.

    pytest benchmarks/ --benchmark-only --benchmark-json=bench.json
    python benchmarks/chart.py bench.json docs/benchmarks.png

Throughput is member-iterations per second: `extra_info["member_iterations"]` over the
median time of the benchmark. One panel per workload case, one bar per implementation,
gdkernel highlighted; the machine from the JSON is written in the title.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

ORDER = (
    "gdkernel",
    "gdkernel_1thread",
    "gradient_descent",
    "reference",
    "lax_map",
    "numba_lanes",
    "numba",
    "optax",
    "jaxopt",
    "optimistix",
    "numpy",
    "python",
)


def throughputs(run: dict[str, Any]) -> dict[str, dict[str, float]]:
    """{case: {implementation: member-iterations per second}} from a pytest-benchmark JSON."""
    table: dict[str, dict[str, float]] = {}
    for bench in run["benchmarks"]:
        info = bench.get("extra_info", {})
        if "member_iterations" not in info or "case" not in info:
            continue  # compile, overhead and scale-out benchmarks are not workload cases
        rate = info["member_iterations"] / bench["stats"]["median"]
        table.setdefault(info["case"], {})[info["implementation"]] = rate
    return table


def machine(run: dict[str, Any]) -> str:
    m = run.get("machine_info", {})
    cpu = m.get("cpu", {})
    name = cpu.get("brand_raw") or m.get("processor") or m.get("machine", "")
    cores = cpu.get("count", "?")
    devices = {
        b["extra_info"]["devices"]
        for b in run.get("benchmarks", [])
        if b.get("extra_info", {}).get("implementation") == "gdkernel"
        and "devices" in b["extra_info"]
    }
    spread = f"; gdkernel on {max(devices)} JAX devices" if devices else ""
    return f"{name}, {cores} cores, Python {m.get('python_version', '?')}{spread}"


def plot(run: dict[str, Any], out: Path) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = throughputs(run)
    cases = list(table)
    cols = 4
    rows = math.ceil(len(cases) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(13, 2.3 * rows + 0.8), squeeze=False)
    for ax, case in zip(axes.flat, cases, strict=False):
        impls = [name for name in ORDER if name in table[case]]
        rates = [table[case][name] / 1e6 for name in impls]
        colors = [
            "tab:red" if name.startswith(("gdkernel", "gradient_descent")) else "tab:gray"
            for name in impls
        ]
        ax.barh(impls, rates, color=colors)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.invert_yaxis()
        ax.set_title(case, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(axis="x", alpha=0.3)
        for y, rate in enumerate(rates):
            ax.text(
                rate, y, f" {rate:,.0f}" if rate >= 10 else f" {rate:.2g}", va="center", fontsize=6
            )
    for ax in list(axes.flat)[len(cases) :]:
        ax.axis("off")
    fig.suptitle(
        "member-iterations per second (millions, median; log scale)\n" + machine(run),
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(out, dpi=80)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path, help="a file written by --benchmark-json")
    parser.add_argument("png", type=Path, help="where to write the chart")
    opts = parser.parse_args()
    plot(json.loads(opts.json.read_text()), opts.png)
    print(f"wrote {opts.png} ({opts.png.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
