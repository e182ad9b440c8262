"""scripts/demo's body: see scripts/demo."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import standins  # noqa: E402
from tests.servers import Containerd, Registry, write_registries_yaml  # noqa: E402

# The bundler of the interpreter running this script (scripts/deps puts it in .venv).
BUNDLER = [sys.executable, "-m", "bundler"]


def step(*args: str) -> None:
    print(f"\n$ bundler {' '.join(args)}", flush=True)
    subprocess.run([*BUNDLER, *args], check=True)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bundler-demo-") as tmp:
        work = Path(tmp)
        registry = Registry(work / "registry").start()
        containerd = None
        try:
            print(f"local registry at {registry.url}; seeding stand-ins of the Multus images...")
            standins.seed(registry.url)
            mirrors = write_registries_yaml(work / "registries.yaml",
                                            {"docker.io": [registry.url]})
            print(f"registries.yaml sends docker.io to the local registry:\n"
                  f"{mirrors.read_text()}")
            dist = work / "dist"
            step("build", "--images", str(ROOT / "images.txt"), "--registries",
                 str(mirrors), "--no-default-endpoint", "--output-dir", str(dist),
                 "--cache-dir", str(work / "cache"))
            print(f"\n$ ls -l {dist}", flush=True)
            subprocess.run(["ls", "-l", str(dist)], check=True)
            bundle = dist / "k3s-airgap-images-multus-amd64.tar.zst"
            print(f"\n$ cd {dist} && sha256sum -c sha256sum-amd64.txt", flush=True)
            subprocess.run(["sha256sum", "-c", "sha256sum-amd64.txt"], cwd=dist, check=True)
            step("verify", str(bundle))
            data_dir = work / "k3s"
            step("place", str(bundle), "--data-dir", str(data_dir))
            placed = data_dir / "agent" / "images" / bundle.name
            containerd = Containerd(work / "containerd").start()
            print(f"\n$ zstd -dc {placed} | ctr -n k8s.io images import --all-platforms "
                  "--snapshotter native -   (what K3s does at start)")
            done = containerd.import_bundle(placed)
            print(done.stdout, done.stderr, end="")
            if done.returncode:
                return done.returncode
            print("\n$ ctr -n k8s.io images ls")
            print(containerd.ctr("images", "ls", check=True).stdout)
        finally:
            if containerd:
                containerd.stop()
            registry.stop()
    print("demo done: registry and containerd stopped, temporary files removed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
