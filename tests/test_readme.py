"""The README runs as a reader would run it: its ```python blocks in order in one process,
each printing what the README says, and its `gdkernel` commands as written (see
tests/test_docs.py for the rules)."""

from pathlib import Path

from tests.test_docs import blocks, run_python_blocks, run_shell_blocks

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_blocks_print_what_it_says(tmp_path):
    page = blocks(README.read_text())
    assert sum(b.lang == "python" for b in page) >= 4
    run_python_blocks(README, tmp_path)


def test_readme_commands_work_as_written(tmp_path):
    assert run_shell_blocks(README, tmp_path) >= 3


def test_readme_is_a_front_page():
    assert len(README.read_text().splitlines()) <= 260
