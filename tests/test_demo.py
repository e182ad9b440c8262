"""scripts/demo runs the whole flow offline; it must keep working."""

import subprocess
import sys
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
