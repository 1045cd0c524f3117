"""The one results file: what `sweep(..., out=...)` accepts, and `save_sweep`/`load_sweep`."""

from __future__ import annotations

import errno
import os
import shutil

import jax
import numpy as np
import pytest

import gdkernel as gd
from gdkernel import _store


def _never_called(x):
    raise AssertionError("the sweep ran")


@pytest.mark.parametrize("name", ["s.csv", "s.json", "s.npy", "s.NPZ.txt"])
def test_out_refuses_a_format_it_cannot_write_before_running(tmp_path, name):
    # The cost raises if the sweep ever traces or runs it: the check comes first.
    with pytest.raises(ValueError, match=r"`out` must end in \.npz.*" + name.replace(".", r"\.")):
        gd.sweep(_never_called, np.ones(3), [0.1], out=tmp_path / name)
    assert os.listdir(tmp_path) == []  # nothing written, not even `s.csv.npz`


@pytest.mark.parametrize("name", ["g.npz", "g.NPZ", "g"])
def test_out_writes_npz_named_so_or_without_a_suffix(tmp_path, name):
    grid = gd.sweep(lambda x: x**2, np.array([1.0, -2.0]), [0.1], out=tmp_path / name)
    written = name if name != "g" else "g.npz"  # no suffix: `.npz` added, as numpy.savez does
    assert os.listdir(tmp_path) == [written]
    # x**2 from 1 at rate 0.1: x_k = 0.8**k, the step 0.2 * 0.8**(k-1) drops below 1e-4 at k = 36.
    assert int(gd.load_sweep(tmp_path / written).iterations[0, 0]) == int(grid.iterations[0, 0])
    assert int(grid.iterations[0, 0]) == 1 + int(np.ceil(np.log(1e-4 / 0.2) / np.log(0.8)))


def test_out_refuses_a_folder_as_the_file(tmp_path):
    (tmp_path / "g.npz").mkdir()
    with pytest.raises(ValueError, match="`out` is a folder"):
        gd.sweep(_never_called, np.ones(3), [0.1], out=tmp_path / "g.npz")


def test_out_refuses_a_disk_without_room_for_the_results_before_running(tmp_path, monkeypatch):
    # 2,000 guesses x 50 rates, history of 1,001 rows of an iterate and a cost: 100,000
    # members of 8,032 bytes in float32, 803.2 MB written twice (spool, then .npz) while
    # the disk reports 1 GB free.
    free = 10**9
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage._replace(free=free))
    with pytest.raises(
        ValueError, match=r"`out`: the results take about 803\.2 MB.* 1,000\.0 MB is free"
    ):
        gd.sweep(
            _never_called,
            np.linspace(-1, 1, 2000),
            np.geomspace(1e-3, 0.1, 50),
            history=True,
            max_iter=1000,
            out=tmp_path / "big.npz",
        )
    assert os.listdir(tmp_path) == []


def test_a_disk_that_fills_fails_with_oserror_and_leaves_no_spool(tmp_path, monkeypatch):
    # A disk that has no room for a spool file when it is reserved (ENOSPC): an `OSError`, not
    # a bus error when a chunk is written to its memory map, and the spool folder is removed.
    if not hasattr(os, "posix_fallocate"):
        pytest.skip("no posix_fallocate on this system")

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(OSError, match="no space left on the disk for the spool file"):
        gd.sweep(lambda x: x**2, np.linspace(-1, 1, 40), [0.1, 0.2], out=tmp_path / "g.npz")
    assert os.listdir(tmp_path) == []


def test_save_sweep_writes_what_load_sweep_reads(tmp_path):
    guesses = np.array([[0.0, 1.0], [2.0, -1.0], [3.0, 3.0]])
    grid = gd.sweep(lambda x: (x**2).sum(), guesses, [0.1, 0.4])
    _store.save_sweep(grid, tmp_path / "g.npz")
    loaded = gd.load_sweep(tmp_path / "g.npz")
    for got, want in zip(jax.tree.leaves(tuple(loaded)), jax.tree.leaves(tuple(grid)), strict=True):
        np.testing.assert_array_equal(got, np.asarray(want))
    # Independent fact: x**2 at rates 0.1 and 0.4 contracts x by 0.8 and 0.2 per step: every
    # member converges.
    assert loaded.counts()[gd.Status.CONVERGED] == 6
    with pytest.raises(ValueError, match=r"`out` must end in \.npz"):
        _store.save_sweep(grid, tmp_path / "g.csv")


@pytest.mark.parametrize("suffix", [".csv", ".json", ".npz"])
def test_load_sweep_reads_every_file_the_command_line_writes(tmp_path, suffix):
    from gdkernel.cli import main
    from gdkernel.functions import BUILTINS

    out = tmp_path / f"grid{suffix}"
    args = ["sweep", "--function", "rosenbrock", "--lr", "1e-3:1e-2:3"]
    args += ["--x0", "-1:1:2,0:1:2", "--max-iter", "300", "--out", str(out)]
    assert main(args) == 0
    back = gd.load_sweep(out)
    # the same grid from the library: the starting points as the CLI meshes them
    rates = np.geomspace(1e-3, 1e-2, 3).astype(np.float32)
    guesses = np.array([[-1, 0], [-1, 1], [1, 0], [1, 1]], np.float32)
    want = gd.sweep(BUILTINS["rosenbrock"].fn, guesses, rates, max_iter=300)
    assert back.status.shape == (3, 4)
    np.testing.assert_array_equal(back.status, want.status)
    np.testing.assert_array_equal(back.iterations, want.iterations)
    np.testing.assert_allclose(back.x, want.x, rtol=1e-6)
    np.testing.assert_allclose(back.cost, want.cost, rtol=1e-6)
    np.testing.assert_allclose(back.learning_rate, rates, rtol=1e-6)
    np.testing.assert_array_equal(back.initial_guess, guesses)
    if suffix != ".npz":  # the tables do not record them
        assert np.isnan(back.grad).all() and np.isnan(back.step_size).all()
    assert back.best().index == want.best().index


def test_load_sweep_names_the_formats_it_reads(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not a sweep")
    with pytest.raises(ValueError, match=r"\.npz.*\.csv.*\.json"):
        gd.load_sweep(path)


@pytest.mark.parametrize(
    "text",
    ['{"x": 1}', "[1, 2]", '{"members": [{"x": 1}]}', '{"members": [', '{"dtype": "float32"'],
)
def test_load_sweep_refuses_a_json_file_it_did_not_write(tmp_path, text):
    """Another JSON document, or a truncated one, is refused by name, not with a KeyError."""
    path = tmp_path / "other.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=r"other\.json' is not a table written by gdkernel"):
        gd.load_sweep(path)


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_tables_round_trip_every_grid_axis(tmp_path, suffix):
    """A learning rate x b1 x b2 x starting point sweep through the command line's tables:
    the axes, their values and every member come back."""
    from gdkernel import _export
    from gdkernel.functions import BUILTINS

    guesses = np.array([[-1.5, 1.0], [0.0, 0.0], [1.2, 0.8]], np.float32)
    grid = gd.sweep(
        BUILTINS["rosenbrock"].fn,
        guesses,
        np.array([1e-3, 1e-2, 5e-2], np.float32),
        method="adam",
        hyperparams={"b1": [0.8, 0.9], "b2": [0.99, 0.995, 0.999, 0.9999], "eps": 1e-7},
        max_iter=400,
    )
    grid = jax.tree.map(np.asarray, grid)
    assert grid.status.shape == (3, 2, 4, 3)
    path = tmp_path / f"grid{suffix}"
    _export.write(grid, path, {"dtype": "float32"})
    back = gd.load_sweep(path)
    assert back.axes == grid.axes == ("learning_rate", "b1", "b2", "initial_guess")
    # JSON records its dtype: every number comes back exactly. CSV's come back as float64,
    # each the shortest text of its float32 value: exact once cast back.
    for name, values in grid.coords.items():
        np.testing.assert_array_equal(np.asarray(back.coords[name], np.float32), values)
    for field in ("x", "cost", "iterations", "status"):
        np.testing.assert_array_equal(
            np.asarray(getattr(back, field)).astype(getattr(grid, field).dtype),
            getattr(grid, field),
        )
    for index in np.ndindex(*grid.status.shape):
        got, want = back.member(*index), grid.member(*index)
        assert int(got.status) == int(want.status) and int(got.iterations) == int(want.iterations)
    assert back.best().index == grid.best().index
    assert back.best().coords["b2"] == pytest.approx(grid.best().coords["b2"], rel=1e-7)


def test_a_table_that_is_not_a_grid_is_refused(tmp_path):
    from gdkernel import _export

    grid = gd.sweep(
        lambda x: x**2,
        np.array([1.0, 2.0]),
        [0.1, 0.2],
        momentum=np.array([0.5, 0.9]),
        method="momentum",
    )
    path = tmp_path / "grid.csv"
    _export.write(grid, path, {})
    lines = path.read_text().splitlines(keepends=True)
    assert lines[0].startswith("learning_rate,momentum,x0,")
    path.write_text("".join(lines[:-1]))  # a member short
    with pytest.raises(ValueError, match="is not a grid of its axes"):
        gd.load_sweep(path)


def test_out_under_a_file_says_the_file_is_no_folder(tmp_path):
    (tmp_path / "afile").write_text("")
    with pytest.raises(ValueError, match=r"`out`: '.*afile' is a file, not a folder"):
        gd.sweep(_never_called, np.ones(3), [0.1], out=tmp_path / "afile" / "deeper" / "g.npz")
    with pytest.raises(ValueError, match=r"`out`: the folder '.*nodir' does not exist"):
        gd.sweep(_never_called, np.ones(3), [0.1], out=tmp_path / "nodir" / "g.npz")
