"""gdkernel: gradient descent as a jit-compiled, vmappable JAX kernel."""

from ._aot import compile_sweep as compile_sweep
from ._options import RunOptions as RunOptions
from ._progress import Progress as Progress
from ._result import Best as Best
from ._result import History as History
from ._result import Result as Result
from ._result import Status as Status
from ._result import SweepResult as SweepResult
from ._solve import gradient_descent as gradient_descent
from ._store import load_sweep as load_sweep
from ._sweep import sweep as sweep

__version__ = "0.1.0"

__all__ = [
    "Best",
    "History",
    "Progress",
    "Result",
    "RunOptions",
    "Status",
    "SweepResult",
    "compile_sweep",
    "gradient_descent",
    "load_sweep",
    "sweep",
]
