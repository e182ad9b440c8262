"""place: verified, atomic, idempotent installs into a K3s data dir."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bundler.checks import verify
from bundler.commands import place
from bundler.errors import VerificationFailed
from tests.cli_helpers import assert_one_line_error, build_args, bundler, small_disk
from tests.conftest import BUNDLE


@pytest.fixture(scope="module")
def big_build(fixture_registry, tmp_path_factory) -> Path:
    """A ~25 MB bundle (level 1), so a copy takes long enough to be watched."""
    tmp = tmp_path_factory.mktemp("big")
    run = bundler(*build_args(fixture_registry, tmp, ["rancher/big:v1", "busybox:1.36.1"],
                              "--level", "1"))
    assert run.code == 0, run.stderr
    return tmp / "dist"


def _importable(directory: Path) -> dict[str, int]:
    out = {}
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return out
    for entry in entries:
        if entry.name.endswith(place.IMPORTED_SUFFIXES):
            try:
                out[entry.name] = entry.stat().st_size
            except FileNotFoundError:
                pass
    return out


def test_watcher_never_sees_a_partial_file(big_build, builds, tmp_path):
    target = tmp_path / "k3s" / "agent" / "images"
    size = (big_build / BUNDLE).stat().st_size
    seen: list[dict[str, int]] = []
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            state = _importable(target)
            if state:
                seen.append(state)
            time.sleep(0.001)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        # A first, different bundle of the same name, then the big one replacing it.
        assert place.place(builds["p1"] / BUNDLE, target).action == "placed"
        time.sleep(0.05)
        assert place.place(big_build / BUNDLE, target).action == "replaced"
        time.sleep(0.05)
    finally:
        stop.set()
        watcher.join()
    assert seen, "the watcher never saw the file"
    sizes = {(builds["p1"] / BUNDLE).stat().st_size, size}
    assert all(list(state) == [BUNDLE] and state[BUNDLE] in sizes for state in seen), \
        {tuple(s.items()) for s in seen}
    assert seen[-1] == {BUNDLE: size}
    assert sorted(os.listdir(target)) == [BUNDLE]


def test_second_place_changes_nothing(builds, tmp_path):
    data_dir = tmp_path / "k3s"
    first = bundler("place", str(builds["p1"] / BUNDLE), "--data-dir", str(data_dir))
    assert first.code == 0, first.stderr
    assert first.stdout.startswith(f"placed {data_dir}/agent/images/{BUNDLE} (")
    placed = data_dir / "agent" / "images" / BUNDLE
    before = placed.stat()
    second = bundler("place", str(builds["p1"] / BUNDLE), "--data-dir", str(data_dir))
    assert second.code == 0
    assert second.stdout.startswith("unchanged ")
    after = placed.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    # The image list stays out: K3s would try to pull what a .txt there names.
    assert os.listdir(placed.parent) == [BUNDLE]


def test_different_file_is_replaced_atomically(builds, tmp_path):
    target = tmp_path / "images"
    place.place(builds["p1"] / BUNDLE, target)
    done = place.place(builds["u1"] / BUNDLE, target)
    assert done.action == "replaced"
    assert (target / BUNDLE).read_bytes() == (builds["u1"] / BUNDLE).read_bytes()


def test_corrupt_bundle_places_nothing(builds, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(builds["p1"], src)
    data = bytearray((src / BUNDLE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (src / BUNDLE).write_bytes(data)
    target = tmp_path / "images"
    with pytest.raises(VerificationFailed):
        place.place(src / BUNDLE, target)
    assert not target.exists()
    run = bundler("place", str(src / BUNDLE), "--images-dir", str(target))
    assert_one_line_error(run, "did not verify", "nothing placed")
    assert run.code == 1 and not target.exists()


@pytest.mark.parametrize("change", ["grew", "shrank", "changed"])
def test_a_source_changed_after_verify_places_nothing(builds, tmp_path, change):
    # What is copied must be exactly what was verified: the verified bytes followed by more
    # (a bundle still being written, or something appended) are not that file either.
    source = tmp_path / "src" / BUNDLE
    source.parent.mkdir()
    shutil.copy(builds["p1"] / BUNDLE, source)
    report = place.verify.verify(source)
    assert report.ok
    data = bytearray(source.read_bytes())
    if change == "grew":
        data += b"\0"
    elif change == "shrank":
        del data[-1]
    else:
        data[len(data) // 2] ^= 1
    source.write_bytes(data)
    target = tmp_path / "images"
    with pytest.raises(VerificationFailed, match=f"^{source}: changed while being placed; "
                                                 "nothing placed$"):
        place.place(source, target, report=report)
    assert list(target.iterdir()) == []  # neither the bundle nor a temporary


def test_dry_run_writes_nothing(builds, tmp_path):
    run = bundler("place", str(builds["p1"] / BUNDLE), "--data-dir", str(tmp_path / "k3s"),
                  "--dry-run")
    assert run.code == 0 and run.stdout.startswith("would be placed ")
    assert not (tmp_path / "k3s").exists()


def test_default_dirs_per_distro():
    assert place.images_dir(None, None, "k3s") == Path("/var/lib/rancher/k3s/agent/images")
    assert place.images_dir(None, None, "rke2") == Path("/var/lib/rancher/rke2/agent/images")
    assert place.images_dir("/x", None, "k3s") == Path("/x")


def test_stale_temporaries_of_dead_runs_are_cleaned(builds, tmp_path):
    target = tmp_path / "images"
    target.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = target / f".{BUNDLE}.{dead.pid}-deadbeef.partial"
    stale.write_bytes(b"half a bundle")
    live = target / f".{BUNDLE}.{os.getpid()}-cafef00d.partial"
    live.write_bytes(b"another run's copy in progress")
    place.place(builds["p1"] / BUNDLE, target)
    assert not stale.exists() and live.exists()


def test_concurrent_places_do_not_corrupt_each_other(big_build, tmp_path):
    target = tmp_path / "images"
    procs = [subprocess.Popen([sys.executable, "-m", "bundler", "place", str(big_build / BUNDLE),
                               "--images-dir", str(target)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    assert os.listdir(target) == [BUNDLE]
    assert (target / BUNDLE).read_bytes() == (big_build / BUNDLE).read_bytes()


def _wait_for_temporary(directory: Path, proc: subprocess.Popen) -> Path | None:
    """The .partial file place is copying into, once it exists (None if place ended first)."""
    while proc.poll() is None:
        if directory.exists():
            for entry in os.scandir(directory):
                if entry.name.endswith(".partial"):
                    return Path(entry.path)
        time.sleep(0.0005)
    return None


def test_interrupted_place_leaves_nothing_importable(big_build, tmp_path):
    target = tmp_path / "images"
    source = (big_build / BUNDLE).read_bytes()
    cut_mid_copy = 0
    for _ in range(4):
        proc = subprocess.Popen([sys.executable, "-m", "bundler", "place",
                                 str(big_build / BUNDLE), "--images-dir", str(target)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        temporary = _wait_for_temporary(target, proc)
        mid_copy = False
        if temporary:
            # Frozen while the copy is under way, so Ctrl-C lands there, not after it.
            proc.send_signal(signal.SIGSTOP)
            mid_copy = temporary.exists()
            proc.send_signal(signal.SIGINT)
            proc.send_signal(signal.SIGCONT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130 if mid_copy else proc.returncode in (0, 130), err
        cut_mid_copy += mid_copy
        if proc.returncode == 130:
            assert err == "bundler: error: interrupted\n"
        # Whatever the moment: no temporary is left, and an importable file is the whole one.
        assert [e for e in os.listdir(target) if e.endswith(".partial")] == []
        assert set(_importable(target)) <= {BUNDLE}
        if (target / BUNDLE).exists():
            assert (target / BUNDLE).read_bytes() == source
            (target / BUNDLE).unlink()
    assert cut_mid_copy, "no place was caught while copying"


def test_not_enough_space(builds, tmp_path):
    with small_disk(tmp_path / "small", "1m") as small:
        run = bundler("place", str(builds["p1"] / BUNDLE), "--images-dir", str(small))
        assert_one_line_error(run, str(small), "MB free")
        assert run.code == 3
        assert os.listdir(small) == []


def test_placed_bundle_imports_into_containerd(builds, tmp_path, clean_containerd):
    done = place.place(builds["u1"] / BUNDLE, tmp_path / "k3s" / "agent" / "images")
    result = clean_containerd.import_bundle(done.path)
    assert result.returncode == 0, result.stderr
    assert "docker.io/rancher/multilist:v1" in clean_containerd.images()


def test_a_containerd_root_too_small_for_the_import(builds, tmp_path):
    data = tmp_path / "k3s"
    bundle = builds["p1"] / BUNDLE
    with small_disk(data / "agent" / "containerd", "1m") as root:
        run = bundler("place", str(bundle), "--data-dir", str(data))
        assert_one_line_error(run, f"{root}: 1.0 MB free, importing needs ", "MB of blobs",
                              "MB unpacked", "64 MiB headroom", "--force")
        assert "same file system" not in run.stderr
        assert run.code == 3
        assert os.listdir(data / "agent" / "images") == []
        forced = bundler("place", str(bundle), "--data-dir", str(data), "--force")
        assert forced.code == 0, forced
        assert os.listdir(data / "agent" / "images") == [BUNDLE]


def test_a_disk_for_the_bundle_but_not_for_the_import_too(builds, tmp_path):
    """The images dir and containerd's root on one disk: room for the bundle and headroom,
    not for the import beside it."""
    bundle = builds["p1"] / BUNDLE
    report = verify.verify(bundle)
    assert report.blob_bytes > 0 and report.unpacked_bytes >= report.blob_bytes
    # Room for the import alone, and for the bundle alone, not for both.
    size = (64 << 20) + report.blob_bytes + report.unpacked_bytes + report.size // 2
    with small_disk(tmp_path / "k3s", f"{-(-size // 4096) * 4096}") as data:
        run = bundler("place", str(bundle), "--data-dir", str(data))
        assert_one_line_error(run, f"{data}/agent/containerd: ", "importing needs",
                              "and the bundle's copy on the same file system")
        assert run.code == 3
        assert os.listdir(data / "agent" / "images") == []


def test_verify_measures_what_an_import_stores(builds):
    """blob_bytes is what the tar's blob members hold; unpacked_bytes is the same for the
    preserve (gzip layers, inflated) and the compact (plain layers) build of the same images,
    up to their few JSON documents."""
    p1, u1 = verify.verify(builds["p1"] / BUNDLE), verify.verify(builds["u1"] / BUNDLE)
    assert p1.blob_bytes < p1.unpacked_bytes
    assert u1.blob_bytes == u1.unpacked_bytes
    assert abs(p1.unpacked_bytes - u1.unpacked_bytes) < 8192


def test_a_same_size_replacement_is_warned_about(builds, tmp_path):
    bundle = builds["p1"] / BUNDLE
    target = tmp_path / "images"
    target.mkdir()
    (target / BUNDLE).write_bytes(b"\0" * bundle.stat().st_size)  # other bytes, same size
    run = bundler("place", str(bundle), "--images-dir", str(target))
    assert run.code == 0, run
    assert run.stdout.startswith("replaced ")
    warning, = run.stderr.splitlines()
    assert warning.startswith(f"bundler: warning: {target / BUNDLE}: replaced a file of the "
                              "same size; ")
    assert "k3s 14284" in warning and "new file name" in warning
    assert [p.name for p in target.iterdir()] == [BUNDLE]  # nothing else written for K3s
    other = bundler("place", str(builds["u1"] / BUNDLE), "--images-dir", str(target))
    assert other.code == 0 and other.stderr == ""  # another size: nothing to say
