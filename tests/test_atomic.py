"""atomic: outputs appear under their final names all together, or none of them; what earlier
runs left is removed or kept as their writers' liveness says."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from bundler import atomic
from bundler.atomic import AtomicOutputs

REPO_ROOT = Path(__file__).resolve().parent.parent
NOBODY = {"user": 65534, "group": 65534, "extra_groups": [], "cwd": "/"}


def _python_for_nobody() -> str:
    """An interpreter the unprivileged user may run (the test's own may live under /root)."""
    for python in (sys.executable, "/usr/bin/python3"):
        try:
            if subprocess.run([python, "-c", ""], **NOBODY).returncode == 0:
                return python
        except PermissionError:
            continue
    pytest.skip("no Python the user nobody may run")


def _dead_pid() -> int:
    done = subprocess.Popen(["true"])
    done.wait()
    return done.pid


def test_temporaries_are_hidden_partial_names_beside_the_final_one(tmp_path):
    final = tmp_path / "b.tar.zst"
    names = {atomic.temp_name(final) for _ in range(50)}
    assert len(names) == 50
    for name in names:
        assert name.parent == tmp_path
        assert name.name.startswith(".b.tar.zst.") and name.name.endswith(atomic.TEMP_SUFFIX)
        # K3s imports *.tar.zst and others by suffix; no temporary may end like those.
        assert not name.name.endswith((".tar", ".tar.zst", ".tar.gz", ".tar.lz4"))


def test_commit_names_every_output_and_nothing_before(tmp_path):
    with AtomicOutputs(tmp_path) as out:
        a, b = out.temp("a.tar.zst"), out.temp("a.txt")
        a.write_bytes(b"bundle")
        b.write_bytes(b"list")
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([a.name, b.name])
        done = out.commit()
    assert done == [tmp_path / "a.tar.zst", tmp_path / "a.txt"]
    assert (tmp_path / "a.tar.zst").read_bytes() == b"bundle"
    assert (tmp_path / "a.txt").read_bytes() == b"list"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar.zst", "a.txt"]


def test_leaving_without_commit_leaves_nothing_and_keeps_what_was_there(tmp_path):
    (tmp_path / "a.tar.zst").write_bytes(b"last run's bundle")
    with pytest.raises(RuntimeError), AtomicOutputs(tmp_path) as out:
        out.temp("a.tar.zst").write_bytes(b"half")
        out.temp("a.txt").write_bytes(b"list")
        out.remove("a.sig")
        scratch = out.scratch_dir()
        (scratch / "blob").write_bytes(b"layer")
        raise RuntimeError("the build failed")
    assert [p.name for p in tmp_path.iterdir()] == ["a.tar.zst"]
    assert (tmp_path / "a.tar.zst").read_bytes() == b"last run's bundle"


def test_a_commit_that_fails_names_none_of_the_outputs(tmp_path):
    with AtomicOutputs(tmp_path) as out:
        out.temp("a.tar.zst").write_bytes(b"bundle")
        out.temp("a.txt")  # never written
        with pytest.raises(FileNotFoundError):
            out.commit()
    assert list(tmp_path.iterdir()) == []


def test_remove_takes_a_superseded_file_away_at_commit_only(tmp_path):
    for name in ("a.sig", "a.spdx.json"):
        (tmp_path / name).write_bytes(b"from an earlier build")
    with AtomicOutputs(tmp_path) as out:
        out.temp("a.tar.zst").write_bytes(b"bundle")
        out.remove("a.sig")
        out.remove("never-there")  # nothing to remove is no error
        assert (tmp_path / "a.sig").exists()  # until the commit
        out.commit()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.spdx.json", "a.tar.zst"]


def test_scratch_dir_is_removed_with_what_it_holds(tmp_path):
    with AtomicOutputs(tmp_path) as out:
        scratch = out.scratch_dir()
        assert scratch.parent == tmp_path and scratch.name.endswith(atomic.TEMP_SUFFIX)
        (scratch / "sha256").mkdir()
        (scratch / "sha256" / "blob").write_bytes(b"layer")
        out.temp("a.txt").write_bytes(b"list")
        out.commit()
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_what_dead_runs_left_goes_and_what_live_runs_write_stays(tmp_path):
    dead = _dead_pid()
    stale_file = tmp_path / f".a.tar.zst.{dead}-deadbeef.partial"
    stale_file.write_bytes(b"half a bundle")
    stale_dir = tmp_path / f".bundler-scratch.{dead}-cafef00d.partial"
    (stale_dir / "sha256").mkdir(parents=True)
    live = tmp_path / f".a.tar.zst.{os.getpid()}-0badc0de.partial"
    live.write_bytes(b"another run's copy in progress")
    init = tmp_path / ".a.tar.zst.1-0badc0de.partial"  # pid 1 is alive, someone else's
    init.write_bytes(b"")
    others = [tmp_path / f"a.tar.zst.{dead}-deadbeef.partial",  # not hidden: not ours
              tmp_path / f".a.tar.zst.{dead}-deadbeef.partial.keep", tmp_path / "a.tar.zst"]
    for p in others:
        p.write_bytes(b"")
    AtomicOutputs(tmp_path)  # a new run starts
    assert not stale_file.exists() and not stale_dir.exists()
    assert live.exists() and init.exists() and all(p.exists() for p in others)


def test_a_live_process_of_another_user_keeps_its_temporaries():
    """Seen from an unprivileged run, root's process 1 cannot be signalled (EPERM): it is
    alive, and the temporary it names is left alone even where the run could remove it."""
    if os.geteuid() != 0:
        pytest.skip("needs root, to run the cleanup as another user")
    with tempfile.TemporaryDirectory(prefix="bundler-atomic-") as d:
        directory = Path(d)
        directory.chmod(0o777)  # not sticky: nobody could remove root's file
        kept = directory / ".a.tar.zst.1-0badc0de.partial"
        kept.write_bytes(b"init's, as far as anyone can tell")
        dead = directory / f".a.tar.zst.{_dead_pid()}-deadbeef.partial"
        dead.write_bytes(b"")
        cleanup = "import sys; from bundler import atomic; atomic.remove_stale(sys.argv[1])"
        subprocess.run([_python_for_nobody(), "-c", cleanup, d], check=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, **NOBODY)
        assert kept.exists() and not dead.exists()


def test_a_stale_symlink_is_removed_not_followed(tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "keep").write_bytes(b"not ours")
    images = tmp_path / "images"
    images.mkdir()
    link = images / f".a.tar.zst.{_dead_pid()}-deadbeef.partial"
    link.symlink_to(target, target_is_directory=True)
    fd = os.open(images, os.O_RDONLY | os.O_DIRECTORY)
    try:
        atomic.remove_stale(images, dir_fd=fd)
    finally:
        os.close(fd)
    assert not os.path.lexists(link)
    assert (target / "keep").read_bytes() == b"not ours"


def test_a_missing_directory_has_nothing_stale(tmp_path):
    atomic.remove_stale(tmp_path / "not-there")
