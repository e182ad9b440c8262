"""Running the bundler CLI as a user would, and reading what it wrote."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str


def bundler(*args: str, cwd: Path | None = None, timeout: float = 600,
            env: dict[str, str] | None = None) -> Run:
    """`bundler ARGS` in a subprocess, as a shell would run it (no TTY: no progress bars).

    Its default cache is a fresh directory, so no run sees what another one cached.
    """
    with tempfile.TemporaryDirectory(prefix="bundler-cache-") as cache:
        done = subprocess.run([sys.executable, "-m", "bundler", *args], capture_output=True,
                              text=True, cwd=cwd, timeout=timeout, stdin=subprocess.DEVNULL,
                              env={**os.environ, "XDG_CACHE_HOME": cache, **(env or {})})
    return Run(done.returncode, done.stdout, done.stderr)


# Runs the command given after it and writes its exit code, peak RSS and time to a file. A child
# forked straight from pytest would report pytest's own peak as its ru_maxrss (Linux records
# the old address space's high-water mark at exec), so the command is started from this small
# fresh interpreter instead.
_LAUNCHER = """
import json, os, subprocess, sys, threading, time
report, timeout, cmd = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
started = time.monotonic()
proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
killer = threading.Timer(timeout, proc.kill)
killer.start()
_, status, usage = os.wait4(proc.pid, 0)
killer.cancel()
with open(report, "w") as f:
    json.dump({"code": os.waitstatus_to_exitcode(status), "kib": usage.ru_maxrss,
               "seconds": time.monotonic() - started}, f)
"""


@dataclass
class Measured:
    run: Run
    peak_mib: float
    seconds: float


def measured(cmd: list[str], *, env: dict[str, str] | None = None, timeout: float = 120,
             cwd: Path | None = None) -> Measured:
    """Run `cmd` as a user would and measure its own peak memory (MiB) and wall time; it is
    killed after `timeout` seconds."""
    with tempfile.TemporaryDirectory(prefix="bundler-measure-") as d:
        report = Path(d) / "report.json"
        done = subprocess.run([sys.executable, "-c", _LAUNCHER, str(report), str(timeout), *cmd],
                              capture_output=True, text=True, cwd=cwd,
                              timeout=timeout + 30, stdin=subprocess.DEVNULL,
                              env={**os.environ, **(env or {})})
        facts = json.loads(report.read_text())
    return Measured(Run(facts["code"], done.stdout, done.stderr), facts["kib"] / 1024,
                    facts["seconds"])


def assert_one_line_error(run: Run, *fragments: str) -> None:
    assert run.code != 0, run
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert "Traceback" not in run.stderr
    assert lines[0].startswith("bundler: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def build_args(fixture, tmp: Path, refs: list[str], *extra: str, out: str = "dist",
               registries: Path | None = None, cache: bool = True) -> list[str]:
    """`bundler build` arguments for `refs` from the fixture registry (or `registries`),
    with TMP/cache as the cache unless `cache` is False."""
    images = tmp / "images.txt"
    images.write_text("".join(f"{r}\n" for r in refs))
    registries = registries or fixture.registries_yaml(tmp)
    return ["build", "--images", str(images), "--output-dir", str(tmp / out),
            "--registries", str(registries), "--no-default-endpoint", "--quiet",
            *(["--cache-dir", str(tmp / "cache")] if cache else []), *extra]


def docker_build(host: str, tmp: Path, refs: list[str], *extra: str, out: str = "dist") -> Run:
    """`bundler build --source docker` of `refs` from the daemon at `host` (DOCKER_HOST), with
    TMP/cache as the cache."""
    images = tmp / "images.txt"
    images.write_text("".join(f"{r}\n" for r in refs))
    return bundler("build", "--source", "docker", "--images", str(images), "--output-dir",
                   str(tmp / out), "--quiet", "--cache-dir", str(tmp / "cache"), *extra,
                   env={"DOCKER_HOST": host})


def read_manifest(out_dir: Path, stem: str = "k3s-airgap-images-multus-amd64") -> dict:
    return json.loads((out_dir / f"{stem}.manifest.json").read_text())


@contextlib.contextmanager
def small_disk(path: Path, size: str):
    """A tmpfs of `size` mounted at `path` (a full disk on demand); skips the test when this
    machine does not let us mount (not root)."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)
