"""Every page of the docs runs as a reader would run it, and prints what the page says.

A page's ```python blocks run in order in one Python process (one process per page), sharing
their names, as if pasted one after the other. A ```text block right after a ```python block
is what that block prints: the test compares them (doctest's rules: `...` matches anything,
runs of whitespace are equal). A block that prints something the page does not show fails.
A ```python block whose first line is `# NAME.py` is a file the page asks the reader to save:
it is also written to the working directory, where the page's shell commands find it.

In ```bash blocks, every command that starts with `gdkernel` runs in a subprocess (commands
chained with `&&` behind an install keep their `gdkernel` part); a ```text block right after
the ```bash block is their output. In a ```text block, a line `$ gdkernel ...` is a command
and the lines after it are what it prints (stdout and stderr).

Blocks marked ```py or ```sh are illustrations that need more than one process (a multi-host
recipe) and are not run; tests/test_multihost.py covers that path. Install, test, benchmark
and docs commands (`pip`, `pytest`, `mkdocs`) are not run either.
"""

from __future__ import annotations

import doctest
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(p.name for p in DOCS.glob("*.md"))
FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```[ \t]*$", flags=re.S | re.M)
CHECKER = doctest.OutputChecker()
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

# Runs a page's python blocks in one process; prints what each block printed, as JSON.
RUNNER = """
import contextlib, io, json, sys, traceback
blocks = json.load(open(sys.argv[1]))
namespace = {"__name__": "__main__"}
printed = []
for number, code in enumerate(blocks):
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(code, f"<block {number + 1}>", "exec"), namespace)
    except BaseException:
        printed.append(out.getvalue())
        json.dump({"printed": printed, "error": traceback.format_exc()}, open(sys.argv[2], "w"))
        sys.exit(1)
    printed.append(out.getvalue())
json.dump({"printed": printed, "error": None}, open(sys.argv[2], "w"))
"""


class Block(NamedTuple):
    lang: str
    code: str
    output: str | None  # the ```text block right after it, if any
    line: int


def blocks(text: str) -> list[Block]:
    """The fenced blocks of a page in order, each with the ```text block that follows it."""
    found = [(m.group(1), m.group(2), m.start(), m.end()) for m in FENCE.finditer(text)]
    result, taken = [], set()
    for k, (lang, code, start, end) in enumerate(found):
        if k in taken:
            continue  # the output of the block before
        output = None
        if lang != "text" and k + 1 < len(found):
            nxt_lang, nxt_code, nxt_start, _ = found[k + 1]
            if nxt_lang == "text" and not text[end:nxt_start].strip():
                output = nxt_code
                taken.add(k + 1)
        result.append(Block(lang, code, output, text.count("\n", 0, start) + 1))
    return result


def matches(want: str, got: str) -> bool:
    return CHECKER.check_output(want, got, FLAGS)


def environment() -> dict[str, str]:
    # The pages' printed numbers were computed on a CPU; on a GPU the last digits of some
    # differ (reductions are ordered differently), so the blocks run on the CPU everywhere.
    env = {**os.environ, "MPLBACKEND": "Agg", "COLUMNS": "80", "JAX_PLATFORMS": "cpu"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    # The `gdkernel` script of the environment running the tests comes first.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def save_files(page: list[Block], where: Path) -> None:
    """Write the files a page asks the reader to save (`# NAME.py` blocks)."""
    for block in page:
        first = block.code.splitlines()[0] if block.code.strip() else ""
        name = re.fullmatch(r"#\s*([\w.-]+\.py)\s*", first)
        if block.lang == "python" and name:
            (where / name.group(1)).write_text(block.code)


def run_python_blocks(path: Path, where: Path) -> None:
    """Run the page's python blocks in one process and check what each prints."""
    page = [b for b in blocks(path.read_text()) if b.lang == "python"]
    if not page:
        return
    save_files(page, where)
    (where / "blocks.json").write_text(json.dumps([b.code for b in page]))
    (where / "runner.py").write_text(RUNNER)
    done = subprocess.run(
        [sys.executable, "runner.py", "blocks.json", "printed.json"],
        cwd=where,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    report = json.loads((where / "printed.json").read_text())
    if report["error"]:
        failed = page[len(report["printed"]) - 1]
        pytest.fail(
            f"{path.name}:{failed.line}: the block fails:\n{report['error']}\n{done.stderr[-2000:]}"
        )
    for block, got in zip(page, report["printed"], strict=True):
        where_ = f"{path.name}:{block.line}"
        if block.output is None:
            assert not got, f"{where_} prints what the page does not show:\n{got}"
        else:
            assert matches(block.output, got), (
                f"{where_}: the page says\n{block.output}\ngot\n{got}"
            )


def commands(script: str) -> list[str]:
    """The `gdkernel` commands of a bash block (continuation lines joined)."""
    found = []
    for line in script.replace("\\\n", " ").splitlines():
        line = line.split(" #")[0].strip()
        for part in line.split("&&"):
            part = part.strip()
            if part.startswith("gdkernel"):
                found.append(part)
    return found


def run_command(command: str, where: Path) -> subprocess.CompletedProcess:
    assert command.startswith("gdkernel")
    return subprocess.run(
        [sys.executable, "-m", "gdkernel", *shlex.split(command)[1:]],
        cwd=where,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def run_shell_blocks(path: Path, where: Path) -> int:
    """Run the page's `gdkernel` commands and check what they print; returns how many ran."""
    page = blocks(path.read_text())
    save_files(page, where)
    ran = 0
    for block in page:
        if block.lang == "bash":
            printed = ""
            for command in commands(block.code):
                done = run_command(command, where)
                ran += 1
                assert done.returncode == 0, f"{path.name}:{block.line}: {command}\n{done.stderr}"
                printed += done.stdout
            if block.output is not None and commands(block.code):
                assert matches(block.output, printed), (
                    f"{path.name}:{block.line}: the page says\n{block.output}\ngot\n{printed}"
                )
        elif block.lang == "text" and "$ gdkernel" in block.code:
            for shown in re.split(r"^\$ ", block.code, flags=re.M)[1:]:
                command, _, want = shown.partition("\n")
                done = run_command(command, where)
                ran += 1
                got = done.stderr + done.stdout  # a note comes before the output
                assert matches(want, got), (
                    f"{path.name}: {command}: the page says\n{want}\ngot\n{got}"
                )
    return ran


@pytest.mark.parametrize("page", PAGES)
def test_python_blocks_print_what_the_page_says(page, tmp_path):
    run_python_blocks(DOCS / page, tmp_path)


@pytest.mark.parametrize("page", [p for p in PAGES if "gdkernel " in (DOCS / p).read_text()])
def test_shell_commands_work_as_written(page, tmp_path):
    run_shell_blocks(DOCS / page, tmp_path)


def test_the_output_checker_is_strict():
    """The comparison catches a wrong number, and `...` stands for anything."""
    assert matches("40 CONVERGED\n", "40 CONVERGED\n")
    assert not matches("40 CONVERGED\n", "41 CONVERGED\n")
    assert matches("wall time  ... s\n", "wall time  1.29 s\n")
    page = blocks("```python\nprint(1)\n```\n\n```text\n1\n```\n\n```python\nx = 2\n```\n")
    assert [(b.lang, b.output) for b in page] == [("python", "1\n"), ("python", None)]


def test_a_page_that_prints_otherwise_fails(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("```python\nprint(2 + 2)\n```\n\n```text\n5\n```\n")
    with pytest.raises(AssertionError, match="the page says"):
        run_python_blocks(page, tmp_path)


def test_the_site_has_a_page_for_every_guide():
    config = (ROOT / "mkdocs.yml").read_text()
    for page in PAGES:
        assert page in config, f"docs/{page} is not in mkdocs.yml's nav"
