#!/usr/bin/env bash
# Every check that needs an accelerator, in one pass with a time budget per step, from the
# repository root (the installed JAX, gdkernel from this checkout):
#
#     OUT=/tmp/figures bash benchmarks/accelerator.sh
#
# 1. the figures of benchmarks/accelerator.py (W1 at 1e8 members, W1-W4, the roofline);
# 2. the test suite on the device (12 processes; deprecation warnings of the installed JAX
#    reported rather than raised);
# 3. the paired Adam-grid, progress and adjoint benchmarks;
# 4. the pytest-benchmark suite of W1-W4 (gdkernel and the reference), unchanged;
# 5. where a sweep's fixed costs go (benchmarks/profile_calls.py).
# STEPS="env figures" runs only those steps; TESTS="tests/test_x.py ..." narrows the tests.
# Logs and JSON go to $OUT (8 files: what a device run may bring back); the last lines printed
# are each step's exit status, and the script fails if any step did.
set -u
OUT=${OUT:-/tmp/accelerator}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PY:-python3}

STEPS=" ${STEPS:-env figures tests adam progress adjoint suite profile} "
step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to $OUT/NAME.log
    local name=$1 limit=$2
    shift 2
    [[ $STEPS == *" $name "* ]] || return 0
    echo "== $name (at most ${limit}s)"
    local start=$SECONDS
    # SIGINT first, so that pytest still prints its summary when the limit cuts it
    timeout -s INT -k 20 "$limit" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    echo "== $name: exit $rc after $((SECONDS - start))s"
    tail -n "${TAIL:-25}" "$OUT/$name.log"
    STATUS+=("$name: exit $rc")
    [ "$rc" -eq 0 ] || FAILED=1
}
STATUS=()
FAILED=0

step env 40 bash -c "nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,clocks.mem \
    --format=csv; $PY -m pip list 2>/dev/null | grep -i -E '^(jax|optax|optimistix|jaxopt|numba|pytest|tqdm)'; \
    $PY -c 'import jax, gdkernel as gd; print(jax.devices()); \
    r = gd.sweep(lambda x: 3 * x**2 - 2 * x - 3, [-1.0, 2.0], [0.1, 0.01]); \
    print(r.status, r.iterations, r.x)'"
if ! command -v gdkernel >/dev/null; then  # the command-line tests call the console script
    mkdir -p /tmp/gdkernel-bin
    printf '#!/bin/sh\nexec %s -m gdkernel "$@"\n' "$PY" >/tmp/gdkernel-bin/gdkernel
    chmod +x /tmp/gdkernel-bin/gdkernel
    export PATH="/tmp/gdkernel-bin:$PATH"
fi
TAIL=60 step figures 130 $PY -m benchmarks.accelerator --json "$OUT/figures.json"
TAIL=30 XLA_PYTHON_CLIENT_PREALLOCATE=false step tests 220 $PY -m pytest -p no:cacheprovider \
    -n 12 -q -rfE --timeout 150 -W default::DeprecationWarning -W default::FutureWarning \
    ${TESTS:-tests gdkernel}
step adam 50 $PY -m benchmarks.test_optimizer_bench 2
step progress 40 $PY -m benchmarks.test_progress_bench 1000 3
TAIL=15 step adjoint 35 $PY -m pytest -p no:cacheprovider -q benchmarks/test_adjoint_bench.py \
    --benchmark-only --benchmark-columns=min,median
TAIL=40 step suite 60 $PY -m pytest -p no:cacheprovider -q benchmarks/test_workloads.py \
    --benchmark-only -k "(gdkernel or reference) and not 1thread and not W1-1-" \
    --benchmark-columns=min,median
TAIL=120 step profile 150 $PY -m benchmarks.profile_calls
printf '%s\n' "${STATUS[@]}"
exit "$FAILED"
