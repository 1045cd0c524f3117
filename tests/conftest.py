import jax
import numpy as np
import pytest


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    """Run the test in float32 (JAX's default) and in float64 (`jax_enable_x64`)."""
    with jax.enable_x64(request.param == "float64"):
        yield np.dtype(request.param)


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def tol(dtype) -> float:
    """A relative tolerance that fits the dtype."""
    return 1e-12 if np.dtype(dtype) == np.float64 else 2e-5
