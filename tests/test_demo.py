"""scripts/demo runs the whole flow offline; it must keep working."""

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

# The demo imports its bundle into a real containerd (tests/markers.py).
pytestmark = pytest.mark.containerd

ROOT = Path(__file__).resolve().parent.parent


def test_demo_runs_end_to_end():
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "demo.py")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for name in ("docker.io/rancher/hardened-multus-cni:v4.3.0-build20260722",
                 "docker.io/rancher/hardened-cni-plugins:v1.9.1-build20260717",
                 "docker.io/rancher/mirrored-library-busybox:1.36.1"):
        assert f"unpacking {name}" in done.stdout
    assert "OK " in done.stdout and "placed " in done.stdout
    assert "demo done" in done.stdout


def test_demo_keep_leaves_a_registry_to_build_from(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "demo.py"), "--keep"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    said = done.stdout.split("The registry keeps running at", 1)[1]
    url, pid = re.search(r"^ (http://\S+) \(pid (\d+)\)", said).groups()
    build = re.search(r"^  (bundler build --registries .*)$", said, re.MULTILINE).group(1)
    stop = re.search(r"^  (kill \d+ && rm -rf (\S+))$", said, re.MULTILINE)
    work = Path(stop.group(2))
    try:
        assert int(pid) == int(re.search(r"kill (\d+)", stop.group(1)).group(1))
        catalog = subprocess.run(["curl", "-sf", f"{url}/v2/_catalog"], capture_output=True,
                                 text=True, timeout=30)
        assert "rancher/hardened-multus-cni" in catalog.stdout
        args = build.split()[1:] + ["--output-dir", str(tmp_path / "dist"), "--quiet",
                                    "--cache-dir", str(tmp_path / "cache")]
        run = subprocess.run([sys.executable, "-m", "bundler", *args], capture_output=True,
                             text=True, timeout=600, cwd=tmp_path)
        assert run.returncode == 0, run.stderr
        assert (tmp_path / "dist" / "k3s-airgap-images-multus-amd64.tar.zst").exists()
    finally:
        subprocess.run(["bash", "-c", stop.group(1)], check=True)
    assert not work.exists()
    assert not _running(int(pid))


def _running(pid: int) -> bool:
    """Whether the process is alive (an exited one whose parent died may linger as a zombie
    until init reaps it)."""
    for _ in range(50):
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return False
        if state in ("Z", "X"):
            return False
        time.sleep(0.2)
    return True


def test_demo_help_says_what_it_does_and_installs_nothing():
    done = subprocess.run([str(ROOT / "scripts" / "demo"), "--help"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: scripts/demo [-h] [--keep]")
    assert "--keep" in done.stdout and "containerd" in done.stdout
    assert "scripts/deps" not in done.stderr
