"""Every ```python block of the README runs, in order, as a user would paste it.

Blocks marked ```py are illustrations that need more than one process (a multi-host recipe)
and are not run here; tests/test_multihost.py covers that path.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def python_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_readme_python_blocks_run(tmp_path):
    blocks = python_blocks()
    assert len(blocks) >= 4
    script = tmp_path / "readme.py"
    script.write_text("\n\n".join(blocks))
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Minimum occurs at x-value: 0.0003987" in out.stdout
    assert "40 CONVERGED" in out.stdout
    assert "CONVERGED 1" in out.stdout and "STALLED" in out.stdout
