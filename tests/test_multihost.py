"""`sweep` across two processes under `jax.distributed.initialize` (loopback, CPU, gloo).

Two processes with two CPU devices each run the same `sweep`: each computes its devices'
share and both get the whole result, which must equal a one-process run and the plain loop.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
from helpers import BOWL_GUESSES, BOWL_RATES, check_bowl_grid

import gdkernel as gd

ROOT = Path(__file__).resolve().parents[1]
GUESSES, RATES = BOWL_GUESSES, BOWL_RATES

PROCESS = r"""
import json, sys
process_id, port, out_dir = int(sys.argv[1]), sys.argv[2], sys.argv[3]
guesses, rates = json.loads(sys.argv[4]), json.loads(sys.argv[5])
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.config.update("jax_num_cpu_devices", 2)
jax.config.update("jax_enable_x64", True)
jax.distributed.initialize(
    coordinator_address=f"127.0.0.1:{port}",
    num_processes=2,
    process_id=process_id,
    initialization_timeout=60,
    shutdown_timeout_seconds=30,
)
import jax.numpy as jnp
import numpy as np
import gdkernel as gd

def bowl(x):
    return jnp.sum((x - jnp.array([1.0, -2.0])) ** 2)

kw = dict(max_iter=2000, precision=1e-8)
reports = []
grid = gd.sweep(bowl, np.array(guesses), np.array(rates), chunk_size=6, progress=reports.append, **kw)
alone = gd.sweep(bowl, np.array(guesses), np.array(rates), devices=jax.local_devices()[:1], **kw)
written = gd.sweep(bowl, np.array(guesses), np.array(rates), out=f"{out_dir}/grid.npz", **kw)
same = all(
    np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True)
    for a, b in zip(jax.tree.leaves(tuple(grid)[:6]), jax.tree.leaves(tuple(alone)[:6]))
)
print(json.dumps({
    "processes": jax.process_count(),
    "devices": len(jax.devices()),
    "local_devices": len(jax.local_devices()),
    "same_as_one_process": same,
    "iterations": np.asarray(grid.iterations).tolist(),
    "status": np.asarray(grid.status).tolist(),
    "x": np.asarray(grid.x).tolist(),
    "chunks": [(p.chunks_done, p.chunks_total) for p in reports if p.running == 0],
    "wrote": written is not None,
}), flush=True)
jax.distributed.shutdown()
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_two_processes(out_dir: Path, timeout: float = 240) -> list[dict]:
    env = dict(os.environ)
    env["JAX_PLATFORMS"] = "cpu"
    env.pop("XLA_FLAGS", None)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    port = str(free_port())
    argv = [str(out_dir), json.dumps(GUESSES), json.dumps(RATES)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PROCESS, str(i), port, *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(2)
    ]
    outputs = []
    try:
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=timeout)
            assert proc.returncode == 0, stderr[-4000:]
            outputs.append(json.loads(stdout.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return outputs


def test_two_processes_share_the_work_and_both_get_the_whole_result(tmp_path, x64):
    first, second = run_two_processes(tmp_path)
    for out in (first, second):
        assert (out["processes"], out["devices"], out["local_devices"]) == (2, 4, 2)
        assert out["same_as_one_process"]
        assert out["chunks"] == [[0, 3], [1, 3], [2, 3], [3, 3]]  # 20 members, chunks of 8
    assert first["x"] == second["x"] and first["iterations"] == second["iterations"]
    assert len(check_bowl_grid(first)) == 15  # every member with lr <= 1
    # Process 0 writes the file; the other returns None.
    assert (first["wrote"], second["wrote"]) == (True, False)
    stored = gd.load_sweep(tmp_path / "grid.npz")
    np.testing.assert_array_equal(stored.iterations, first["iterations"])
    np.testing.assert_array_equal(stored.x, first["x"])
