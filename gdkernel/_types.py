"""Type aliases shared by the modules."""

from __future__ import annotations

from typing import Any, TypeAlias

import jax
import numpy as np

PyTree: TypeAlias = Any  # a pytree of arrays
# An array where the code accepts either kind: a JAX array (traced or not), or a NumPy array
# kept on the host until a compiled call takes it.
Numbers: TypeAlias = jax.Array | np.ndarray
