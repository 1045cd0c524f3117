"""The first tutorial's gradient descent on a SymPy expression, as written there.

Needs SymPy (`pip install 'gdkernel[sympy]'`): the expression is turned into a JAX function
once and the loop runs compiled.

Run:
    python examples/sympy_tutorial.py
"""

from sympy import Symbol

import gdkernel as gd

x = Symbol("x")
res = gd.gradient_descent(x**2, 3, 0.1)
print("Minimum occurs at x-value:", res.x)
print("Slope at the minimum is:", res.grad)
print(f"{int(res.iterations)} iterations; {res.message}")
