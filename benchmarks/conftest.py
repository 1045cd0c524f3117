"""Benchmark options.

- `--benchmark-only` times the benchmarks despite `--benchmark-disable`. That flag is in the
  project's pytest `addopts`, so the normal test run executes every benchmark body once, at
  small sizes, as a correctness test. pytest-benchmark refuses `--benchmark-only` together
  with `--benchmark-disable`; here `--benchmark-only` switches the timing back on (as
  `--benchmark-enable` would), so `pytest benchmarks/ --benchmark-only` runs the full-size
  workloads and times them.
- `--cpu-devices N`: the CPU devices JAX starts with. By default JAX's own configuration
  (one CPU device), as a user gets it: figures are quoted in that configuration.
"""

import jax
import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--cpu-devices",
        type=int,
        default=None,
        help="CPU devices JAX starts with (default: JAX's own, one)",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    timing = bool(getattr(config.option, "benchmark_only", False))
    if timing:
        config.option.benchmark_enable = True
    devices = config.getoption("--cpu-devices")
    if devices is not None:
        jax.config.update("jax_num_cpu_devices", devices)  # before any test starts JAX


@pytest.fixture
def timing(request: pytest.FixtureRequest) -> bool:
    """Whether this run times the benchmarks (full sizes) or only checks them (small sizes)."""
    opt = request.config.getoption
    return not opt("benchmark_disable") or bool(opt("benchmark_enable"))
