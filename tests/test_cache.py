"""The cache across runs: warm rebuilds ask only for tags, bad entries are replaced, and two
builds can share it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from bundler.cache import BlobStore, CacheUnusable, FrameCache
from bundler.errors import EnvironmentFailure
from tests.cli_helpers import assert_one_line_error, build_args, bundler
from tests.conftest import BUNDLE, REFS, STEM
from tests.faultproxy import RegistryFront
from tests.servers import write_registries_yaml


def _args(front, tmp, *extra, out="dist", cache=True):
    yaml = write_registries_yaml(tmp / "r.yaml", {"docker.io": [front.url]})
    return build_args(None, tmp, REFS, *extra, out=out, registries=yaml, cache=cache)


@pytest.mark.parametrize("mode", ["preserve", "uncompressed"])
def test_warm_rebuild_asks_only_which_digest_each_tag_has(front, tmp_path, mode):
    cold = bundler(*_args(front, tmp_path, "--layers", mode, out="cold"))
    assert cold.code == 0, cold.stderr
    front.requests.clear()
    warm = bundler(*_args(front, tmp_path, "--layers", mode, out="warm"))
    assert warm.code == 0, warm.stderr
    asked = [(path.split("/")[-2], path) for _, path, _ in front.requests]
    assert len(asked) == len(REFS) and all(kind == "manifests" for kind, _ in asked), asked
    assert (tmp_path / "cold" / BUNDLE).read_bytes() == (tmp_path / "warm" / BUNDLE).read_bytes()


@pytest.mark.parametrize("mode", ["preserve", "uncompressed"])
@pytest.mark.parametrize("which", ["all", "one"])
def test_corrupt_frame_is_noticed_and_remade(front, tmp_path, mode, which):
    assert bundler(*_args(front, tmp_path, "--layers", mode, out="a")).code == 0
    frames = sorted((tmp_path / "cache" / "frames").iterdir(), key=lambda p: p.stat().st_size)
    intact = {p.name: p.read_bytes() for p in frames}
    # The damage is noticed while the frame is copied into the bundle: its bytes are taken
    # back out, and the frames after it still land where they belong.
    for frame in frames if which == "all" else frames[-1:]:
        data = bytearray(frame.read_bytes())
        data[-1] ^= 0xFF
        frame.write_bytes(data + b"longer" if which == "all" else data)
    run = bundler(*_args(front, tmp_path, "--layers", mode, out="b"))
    assert run.code == 0, run.stderr
    for name in (BUNDLE, "sha256sum-amd64.txt"):  # the bytes, and the checksum taken of them
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    # The damaged entries were replaced by the frames compressed again.
    assert {p.name: p.read_bytes() for p in (tmp_path / "cache" / "frames").iterdir()} == intact


def test_corrupt_blob_is_fetched_again(front, fixture_registry, tmp_path):
    assert bundler(*_args(front, tmp_path, out="a")).code == 0
    blobs = tmp_path / "cache" / "blobs" / "sha256"
    layer = fixture_registry.images["docker.io/rancher/multilist:v1"].layers[1][0]
    import hashlib

    victim = blobs / hashlib.sha256(layer).hexdigest()
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(data)
    # Without the frames the blob must be read again, so its damage is noticed.
    for frame in (tmp_path / "cache" / "frames").iterdir():
        frame.unlink()
    front.requests.clear()
    run = bundler(*_args(front, tmp_path, out="b"))
    assert run.code == 0, run.stderr
    assert any(victim.name in path for _, path, _ in front.requests)
    assert hashlib.sha256(victim.read_bytes()).hexdigest() == victim.name
    assert (tmp_path / "a" / BUNDLE).read_bytes() == (tmp_path / "b" / BUNDLE).read_bytes()


def test_two_builds_share_a_cache_at_once(front, tmp_path):
    procs = []
    for out in ("x", "y"):
        procs.append(subprocess.Popen([sys.executable, "-m", "bundler",
                                       *_args(front, tmp_path, "--layers", "uncompressed",
                                              out=out)],
                                      stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    assert (tmp_path / "x" / BUNDLE).read_bytes() == (tmp_path / "y" / BUNDLE).read_bytes()
    leftovers = [p for p in (tmp_path / "cache").rglob("*.partial")]
    assert leftovers == []


def test_no_cache_keeps_nothing(front, tmp_path):
    run = bundler(*_args(front, tmp_path, "--no-cache", cache=False),
                  env={"XDG_CACHE_HOME": str(tmp_path / "xdg")})
    assert run.code == 0, run.stderr
    assert not (tmp_path / "xdg").exists()
    assert sorted(p.name for p in (tmp_path / "dist").iterdir()) == sorted(
        [BUNDLE, f"{STEM}.txt", f"{STEM}.manifest.json", "sha256sum-amd64.txt"])


def test_downloads_run_in_parallel(fixture_registry, tmp_path):
    in_flight, peak, lock = [0], [0], threading.Lock()

    def slow_blobs(h, server):
        if "/blobs/" in h.path and h.command == "GET":
            with lock:
                in_flight[0] += 1
                peak[0] = max(peak[0], in_flight[0])
            time.sleep(0.3)
            with lock:
                in_flight[0] -= 1
        return False

    f = RegistryFront(fixture_registry.registry.url, fault=slow_blobs)
    try:
        run = bundler(*_args(f, tmp_path, "--jobs", "4"))
    finally:
        f.stop()
    assert run.code == 0, run.stderr
    assert peak[0] >= 2, peak


def _as_nobody_if_root(code: str) -> subprocess.CompletedProcess:
    # Root writes anywhere, so an unwritable directory is tried as user nobody.
    prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] \
        if os.geteuid() == 0 else []
    return subprocess.run([*prefix, sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).parent.parent)


@pytest.mark.parametrize("store", ["BlobStore", "FrameCache"])
def test_an_unwritable_cache_directory_says_it_is_the_cache(store):
    # Outside pytest's tmp_path, which is private to the user running the tests.
    top = Path(tempfile.mkdtemp(prefix="bundler-ro-"))
    try:
        os.chmod(top, 0o755)
        # Owned by the user who runs the code below, who may not write it.
        (top / "existing").mkdir()
        if os.geteuid() == 0:
            os.chown(top / "existing", 65534, 65534)
        os.chmod(top / "existing", 0o500)
        code = ("from bundler.cache import *\n"
                f"for d in ['{top}/new/blobs', '{top}/existing']:\n"
                f"    try: {store}(d)\n"
                "    except CacheUnusable as e: print(e, e.exit_code)\n")
        done = _as_nobody_if_root(code)
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == [f"cache directory {top}: permission denied 3",
                                            f"cache directory {top}/existing: permission denied 3"]
    finally:
        shutil.rmtree(top)


@pytest.mark.parametrize("store", [BlobStore, FrameCache])
def test_a_cache_path_through_a_file_is_not_a_directory(tmp_path, store):
    (tmp_path / "file").write_text("x")
    for where in (tmp_path / "file", tmp_path / "file" / "blobs"):
        with pytest.raises(CacheUnusable) as e:
            store(where)
        assert str(e.value) == f"cache directory {tmp_path}/file: not a directory"
        assert isinstance(e.value, EnvironmentFailure) and e.value.exit_code == 3


def test_cli_unusable_default_cache_fails_before_any_download(front, tmp_path):
    (tmp_path / "xdg").write_text("a file where the cache would go")
    run = bundler(*_args(front, tmp_path, cache=False),
                  env={"XDG_CACHE_HOME": str(tmp_path / "xdg")})
    assert run.code == 3
    assert_one_line_error(run, f"bundler: error: cache directory {tmp_path}/xdg: not a directory")
    assert front.requests == []
