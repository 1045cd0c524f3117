"""Doctests of the package: the names its examples use, and a scratch working directory."""

import jax.numpy as jnp
import numpy as np
import pytest
from _pytest.doctest import DoctestItem

import gdkernel as gd
from gdkernel import functions, plot


@pytest.fixture(autouse=True)
def _doctest_setup(request, doctest_namespace, tmp_path, monkeypatch):
    if isinstance(request.node, DoctestItem):
        doctest_namespace.update(gd=gd, np=np, jnp=jnp, functions=functions, plot=plot)
        monkeypatch.chdir(tmp_path)  # examples that save a file write it here
        monkeypatch.setenv("MPLBACKEND", "Agg")
    yield
