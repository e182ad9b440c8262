"""scripts/demo's body: see scripts/demo, or run it with --help."""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = "k3s-airgap-images-multus-amd64.tar.zst"
DESCRIPTION = """\
The whole flow offline: start a local registry (docker-registry) and seed it with stand-ins
of the three Multus images of images.txt (made from real binaries on this machine); build
through a registries.yaml that mirrors docker.io to it; verify; place into a temporary K3s
data dir; import the placed bundle into a real containerd as K3s does; list the images.
Then stop what it started and remove its files, or with --keep leave the registry running
and say how to build from it and how to stop it."""


def arguments(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scripts/demo", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--keep", action="store_true",
                   help="keep the registry and its directory (registries.yaml, dist/) when "
                        "done, to try bundler against; prints how to stop it")
    return p.parse_args(argv)


def step(*args: str) -> None:
    print(f"\n$ bundler {' '.join(args)}", flush=True)
    # The bundler of the interpreter running this script (scripts/deps puts it in .venv).
    subprocess.run([sys.executable, "-m", "bundler", *args], check=True)


def build_and_place(work: Path, mirrors: Path) -> Path:
    """Build through the mirror, check the files, verify, place; the placed bundle's path."""
    dist = work / "dist"
    step("build", "--images", str(ROOT / "images.txt"), "--registries", str(mirrors),
         "--no-default-endpoint", "--output-dir", str(dist), "--cache-dir", str(work / "cache"))
    print(f"\n$ ls -l {dist}", flush=True)
    subprocess.run(["ls", "-l", str(dist)], check=True)
    print(f"\n$ cd {dist} && sha256sum -c sha256sum-amd64.txt", flush=True)
    subprocess.run(["sha256sum", "-c", "sha256sum-amd64.txt"], cwd=dist, check=True)
    step("verify", str(dist / BUNDLE))
    data_dir = work / "k3s"
    step("place", str(dist / BUNDLE), "--data-dir", str(data_dir))
    return data_dir / "agent" / "images" / BUNDLE


def import_into_containerd(work: Path, placed: Path) -> int:
    from tests.servers import Containerd

    containerd = Containerd(work / "containerd").start()
    try:
        print(f"\n$ zstd -dc {placed} | ctr -n k8s.io images import --all-platforms "
              "--snapshotter native -   (what K3s does at start)")
        done = containerd.import_bundle(placed)
        print(done.stdout, done.stderr, end="")
        if done.returncode:
            return done.returncode
        print("\n$ ctr -n k8s.io images ls")
        print(containerd.ctr("images", "ls", check=True).stdout)
        return 0
    finally:
        containerd.stop()


def kept(work: Path, registry, mirrors: Path, images: list[str]) -> None:
    """What to do with the registry --keep leaves running."""
    pid = registry.proc.pid
    print(f"""
demo done; containerd stopped. The registry keeps running at {registry.url} (pid {pid}),
holding {', '.join(images)}.
Build from it as the demo did, from any directory:
  bundler build --registries {mirrors} --no-default-endpoint --images {ROOT / 'images.txt'}
Add images of your own (plain HTTP on loopback), then list them in an images.txt:
  skopeo copy --dest-tls-verify=false docker-archive:IMAGE.tar docker://{registry.host}/NAME:TAG
Stop it and remove its files ({work}):
  kill {pid} && rm -rf {work}""")


def main(argv: list[str]) -> int:
    args = arguments(argv)
    sys.path.insert(0, str(ROOT))
    from tests import standins
    from tests.servers import Registry, write_registries_yaml

    work = Path(tempfile.mkdtemp(prefix="bundler-demo-"))
    registry = Registry(work / "registry").start()
    keep = False
    try:
        print(f"local registry at {registry.url}; seeding stand-ins of the Multus images...")
        images = list(standins.seed(registry.url))
        mirrors = write_registries_yaml(work / "registries.yaml", {"docker.io": [registry.url]})
        print(f"registries.yaml sends docker.io to the local registry:\n{mirrors.read_text()}")
        code = import_into_containerd(work, build_and_place(work, mirrors))
        if code:
            return code
        keep = args.keep
    finally:
        if not keep:
            registry.stop()
            subprocess.run(["rm", "-rf", str(work)], check=False)
    if keep:
        kept(work, registry, mirrors, images)
    else:
        print("demo done: registry and containerd stopped, temporary files removed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
