"""The options of a run, declared once.

`gradient_descent`, `sweep` and `compile_sweep` take them as keywords (`**options:
Unpack[RunOptions]`), `resolve` fills in the defaults and refuses a name that is not one,
and `_solve.checked` turns them into the traced numbers and static options of a run. The
command line's choices read the same tuples (`NORMS`, `_optimizers.NAMES`, `ADJOINTS`).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from typing import Any, TypedDict

from ._kernel import DIVERGENCE
from ._types import PyTree


class RunOptions(TypedDict, total=False):
    """The keyword options of `gradient_descent`, `sweep` and `compile_sweep`, as a type.

    Each is described, with its default, in `gradient_descent`'s docstring. Research code
    can keep a set of options in one typed dict and pass it to any of them:

    Example:
        >>> import gdkernel as gd
        >>> opts: gd.RunOptions = {"precision": 1e-6, "max_iter": 500, "method": "nesterov"}
        >>> gd.gradient_descent(lambda x: x**2, 3.0, 0.1, **opts).status
        Array(0, dtype=int32)
    """

    precision: Any  # 1e-4; in a sweep also a 1-D array (an axis)
    max_iter: int  # 100
    args: tuple  # ()
    grad_fn: Callable[..., PyTree] | None
    norm: str  # "l1"
    grad_tol: Any  # None: no stall test; in a sweep also a 1-D array
    method: str | Callable[..., Any]  # "gd"
    momentum: Any  # None: 0.9 for the momentum methods; in a sweep also a 1-D array
    hyperparams: dict[str, Any] | None  # an optax method's keywords
    batch_size: int | None  # mini-batches of the data in `args`
    key: Any  # their jax.random key
    divergence: float | None  # 1e4
    history: bool  # False
    history_every: int | None
    symbols: Any  # a SymPy cost's symbols, in order
    adjoint: str  # "implicit"


DEFAULTS: RunOptions = {
    "precision": 1e-4,
    "max_iter": 100,
    "args": (),
    "grad_fn": None,
    "norm": "l1",
    "grad_tol": None,
    "method": "gd",
    "momentum": None,
    "hyperparams": None,
    "batch_size": None,
    "key": None,
    "divergence": DIVERGENCE,
    "history": False,
    "history_every": None,
    "symbols": None,
    "adjoint": "implicit",
}


def resolve(options: Mapping[str, Any], caller: str, own: tuple[str, ...] = ()) -> RunOptions:
    """Every option, defaults filled in.

    Raises:
        TypeError: a name that is not an option of `caller` (with the closest one among the
            options and `caller`'s `own` keywords).
    """
    for name in options:
        if name not in DEFAULTS:
            known = [*DEFAULTS, *own]
            near = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise TypeError(f"{caller}() got an unexpected keyword argument {name!r}{hint}")
    full = dict(DEFAULTS)
    full.update(options)
    return full  # type: ignore[return-value]
