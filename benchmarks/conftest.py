"""Benchmark options: `--benchmark-only` times the benchmarks despite `--benchmark-disable`.

`--benchmark-disable` is in the project's pytest `addopts`, so the normal test run executes
every benchmark body once, at small sizes, as a correctness test. pytest-benchmark refuses
`--benchmark-only` together with `--benchmark-disable`; here `--benchmark-only` switches the
timing back on (as `--benchmark-enable` would), so `pytest benchmarks/ --benchmark-only` runs
the full-size workloads and times them.
"""

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    if getattr(config.option, "benchmark_only", False):
        config.option.benchmark_enable = True


@pytest.fixture
def timing(request: pytest.FixtureRequest) -> bool:
    """Whether this run times the benchmarks (full sizes) or only checks them (small sizes)."""
    opt = request.config.getoption
    return not opt("benchmark_disable") or bool(opt("benchmark_enable"))
