"""scripts/bench's body: ratios of medians against a floor or a peer, measured in one run.

Peers, each run the way people run them today, against the same local registry:
  classic:  docker pull + docker save + zstd -T0 -16 --long=25   (K3s's old pipeline)
  skopeo:   skopeo copy --override-arch amd64 to an OCI layout + tar + the same zstd
            (what K3s and RKE2 do now with ctr/crane)
  floor:    zstd -T0 -16 --long=25 alone on the same uncompressed tar
  py floor: the least a Python program can do for the same work (zstandard + hashlib and
            nothing else), which no Python tool goes below: memory against the zstd CLI
            cannot drop under CPython's own 15 MiB plus zstd's 32 MiB window
No result here is asserted by the tests; the numbers go to the README and the closing notes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import zstandard  # noqa: E402

from tests import imagegen as gen  # noqa: E402
from tests import standins  # noqa: E402
from tests.registryseed import push_image  # noqa: E402
from tests.servers import Dockerd, Registry, write_registries_yaml  # noqa: E402

BUNDLER = [sys.executable, "-m", "bundler"]
BUNDLE = "k3s-airgap-images-multus-amd64.tar.zst"
ZSTD = "zstd -q -T0 -16 --long=25 -f"
REFS = [f"docker.io/{repo}:{tag}" for repo, tag in standins.IMAGES.items()]
# Python floors: the same decompress-and-hash and compress work as bundler, with nothing else.
PY_VERIFY = [sys.executable, "-c", (
    "import hashlib, sys, zstandard\n"
    "h = hashlib.sha256()\n"
    "with open(sys.argv[1], 'rb') as f:\n"
    "    r = zstandard.ZstdDecompressor(max_window_size=1 << 25).stream_reader(\n"
    "        f, read_across_frames=True)\n"
    "    while b := r.read(1 << 20):\n"
    "        h.update(b)\n")]
PY_COMPRESS = [sys.executable, "-c", (
    "import sys\n"
    f"sys.path.insert(0, {str(ROOT)!r})\n"
    "from bundler.compress import compressor\n"
    "with open(sys.argv[1], 'rb') as f, open(sys.argv[2], 'wb') as out:\n"
    "    compressor(int(sys.argv[3])).copy_stream(f, out)\n")]
# What any registry build pays before its first request: interpreter and imports.
PY_IMPORTS = [sys.executable, "-c", "import bundler.cli, bundler.sources.registry, yaml"]


def run_once(command: str, env: dict | None = None) -> tuple[float, int]:
    """Wall time and peak RSS (KiB, of the largest process) of one run of a shell command."""
    probe = ("import resource, subprocess, sys, time\n"
             "t = time.perf_counter()\n"
             "r = subprocess.run(sys.argv[1], shell=True, stdout=subprocess.DEVNULL)\n"
             "print(time.perf_counter() - t,"
             " resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, r.returncode)\n")
    out = subprocess.run([sys.executable, "-c", probe, command], capture_output=True,
                         text=True, check=True, env={**os.environ, **(env or {})})
    elapsed, peak, code = out.stdout.split()
    if code != "0":
        raise SystemExit(f"bench: command failed ({code}): {command}")
    return float(elapsed), int(peak)


def measure_rounds(cases: dict[str, tuple[str, dict | None]], runs: int) -> dict:
    """Each case once per round, rounds one after another: a machine that speeds up or slows
    down during the benchmark (seen here: 15% between runs) moves every case alike, so the
    ratios stay true. Median wall time and the largest peak RSS per case."""
    seen: dict[str, list[tuple[float, int]]] = {name: [] for name in cases}
    for _ in range(runs):
        for name, (command, env) in cases.items():
            seen[name].append(run_once(command, env))
    return {name: {"median_s": statistics.median(t for t, _ in got),
                   "runs": [t for t, _ in got], "peak_rss_kib": max(p for _, p in got)}
            for name, got in seen.items()}


def measure(command: str, env: dict | None = None) -> dict:
    """One run, for the cases too slow to repeat (the 1 GiB layer)."""
    return measure_rounds({"one": (command, env)}, 1)["one"]


def build_cmd(mirrors: Path, images: Path, mode: str, out: Path, cache: Path, *extra: str) -> str:
    return " ".join([*BUNDLER, "build", "--images", str(images), "--registries", str(mirrors),
                     "--no-default-endpoint", "--layers", mode, "--output-dir", str(out),
                     "--quiet", "--cache-dir", str(cache), *extra])


def untar_zst(src: Path, dest: Path) -> Path:
    with open(src, "rb") as f, open(dest, "wb") as out:
        zstandard.ZstdDecompressor().copy_stream(f, out)
    return dest


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", default=str(ROOT / "dist" / "bench.json"))
    ap.add_argument("--no-huge", action="store_true", help="skip the 1 GiB layer case")
    args = ap.parse_args()
    r: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                           "system": platform.platform(),
                           "zstd": subprocess.run(["zstd", "--version"], capture_output=True,
                                                  text=True).stdout.strip()},
               "runs": args.runs}
    with tempfile.TemporaryDirectory(prefix="bundler-bench-") as tmp:
        w = Path(tmp)
        registry = Registry(w / "registry").start()
        dockerd = None
        try:
            standins.seed(registry.url)
            mirrors = write_registries_yaml(w / "r.yaml", {"docker.io": [registry.url]})
            images = w / "images.txt"
            images.write_text("".join(f"{ref}\n" for ref in REFS))
            bundles, cases = {}, {}
            for mode in ("preserve", "uncompressed"):
                out, cache = w / mode, w / f"cache-{mode}"
                cmd = build_cmd(mirrors, images, mode, out, cache)
                run_once(cmd)  # the bundles the floors and verify read
                # Cold: an empty cache each run. Warm: everything cached, nothing changed.
                cases[f"build_cold_{mode}"] = (f"rm -rf {cache} && {cmd}", None)
                cases[f"build_warm_{mode}"] = (cmd, None)
                bundles[mode] = out / BUNDLE

            tar = untar_zst(bundles["uncompressed"], w / "compact.tar")
            cases["floor_compress"] = (f"{ZSTD} {tar} -o {w}/floor.tar.zst", None)
            cases["floor_py_compress"] = (
                shlex.join([*PY_COMPRESS, str(tar), f"{w}/py.tar.zst", "16"]), None)
            cases["floor_py_imports"] = (shlex.join(PY_IMPORTS), None)
            cases["skopeo"] = (_skopeo(registry, w), None)

            dockerd = Dockerd(w / "dockerd", registry.url)
            try:
                dockerd.start()
            except RuntimeError as e:
                print(f"bench: dockerd did not start, no classic pipeline: {e}", file=sys.stderr)
                dockerd = None
            if dockerd:
                cases["classic"] = (_classic(w), {"DOCKER_HOST": dockerd.host})

            cases["verify_uncompressed"] = (
                " ".join([*BUNDLER, "verify", str(bundles["uncompressed"])]), None)
            cases["floor_verify_uncompressed"] = (
                f"zstd -dc --long=25 {bundles['uncompressed']} | sha256sum", None)
            cases["floor_py_verify"] = (
                shlex.join([*PY_VERIFY, str(bundles["uncompressed"])]), None)
            layers = _gzip_layers(bundles["preserve"], w)
            gunzip = " ; ".join(f"gunzip -c {p} | sha256sum" for p in layers)
            cases["verify_preserve"] = (
                " ".join([*BUNDLER, "verify", str(bundles["preserve"])]), None)
            cases["floor_verify_preserve"] = (
                f"zstd -dc --long=25 {bundles['preserve']} | sha256sum ; {gunzip}", None)

            r.update(measure_rounds(cases, args.runs))
            for key, path in (("bytes_preserve", bundles["preserve"]),
                              ("bytes_uncompressed", bundles["uncompressed"]),
                              ("bytes_floor", w / "floor.tar.zst"),
                              ("bytes_skopeo", w / "oci.tar.zst"),
                              ("bytes_classic", w / "docker.tar.zst")):
                if path.exists():
                    r[key] = path.stat().st_size

            if not args.no_huge:
                _huge(r, registry, w)
        finally:
            if dockerd:
                dockerd.stop()
            registry.stop()
    _report(r, args.json)
    return 0


def _skopeo(registry: Registry, w: Path) -> str:
    copies = " && ".join(
        f"skopeo copy -q --override-arch amd64 --src-tls-verify=false "
        f"docker://{registry.host}/{repo}:{tag} oci:{w}/oci:docker.io/{repo}:{tag}"
        for repo, tag in standins.IMAGES.items())
    return (f"rm -rf {w}/oci && {copies} && tar -C {w}/oci -cf {w}/oci.tar . && "
            f"{ZSTD} {w}/oci.tar -o {w}/oci.tar.zst")


def _classic(w: Path) -> str:
    names = " ".join(REFS)
    pulls = " && ".join(f"docker pull -q --platform linux/amd64 {ref}" for ref in REFS)
    return (f"(docker rmi -f {names} >/dev/null 2>&1; true) && {pulls} && "
            f"docker save -o {w}/docker.tar {names} && "
            f"{ZSTD} {w}/docker.tar -o {w}/docker.tar.zst")


def _gzip_layers(bundle: Path, w: Path) -> list[Path]:
    """The gzip layer blobs of a bundle, as files (for the gunzip floor)."""
    import io
    import tarfile

    out = []
    with open(bundle, "rb") as f:
        data = zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True).read()
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        for m in t.getmembers():
            blob = t.extractfile(m).read() if m.isfile() else b""
            if blob[:2] == b"\x1f\x8b":
                out.append(w / (m.name.rsplit("/", 1)[1] + ".gz"))
                out[-1].write_bytes(blob)
    return out


def _huge(r: dict, registry: Registry, w: Path) -> None:
    """One image whose single layer is 1 GiB: memory must stay where it was."""
    period = b"".join(Path(p).read_bytes() for p in ("/usr/bin/containerd", "/usr/bin/ctr"))
    big = w / "huge.bin"
    with open(big, "wb") as f:
        written, n = 0, 0
        while written < 1 << 30:
            chunk = period[: (1 << 30) - written] + n.to_bytes(8, "big")
            f.write(chunk)
            written += len(chunk)
            n += 1
    layer = gen.tar_layer([("file", "huge.bin", big.read_bytes())])
    big.unlink()
    push_image(registry.url, "rancher/huge", gen.image([layer]), "v1")
    del layer
    mirrors = write_registries_yaml(w / "r2.yaml", {"docker.io": [registry.url]})
    images = w / "huge.txt"
    images.write_text("docker.io/rancher/huge:v1\n")
    out, cache = w / "huge", w / "cache-huge"
    # Level 3 on both sides: this case is about memory, and level 16 on 1 GiB takes minutes.
    r["huge_build"] = measure(build_cmd(mirrors, images, "uncompressed", out, cache,
                                        "--level", "3"))
    tar = untar_zst(out / BUNDLE, w / "huge.tar")
    r["huge_floor_compress"] = measure(
        f"{ZSTD.replace('-16', '-3')} {tar} -o {w}/huge-floor.tar.zst")
    r["huge_floor_py_compress"] = measure(
        shlex.join([*PY_COMPRESS, str(tar), f"{w}/huge-py.tar.zst", "3"]))
    tar.unlink()
    r["huge_verify"] = measure(" ".join([*BUNDLER, "verify", str(out / BUNDLE)]))
    r["huge_floor_verify"] = measure(f"zstd -dc --long=25 {out / BUNDLE} | sha256sum")
    r["huge_floor_py_verify"] = measure(shlex.join([*PY_VERIFY, str(out / BUNDLE)]))
    shutil.rmtree(cache, ignore_errors=True)


def _ratio(r: dict, a: str, b: str, field: str = "median_s") -> float | None:
    if a in r and b in r:
        return r[a][field] / r[b][field]
    return None


def _report(r: dict, path: str) -> None:
    rows = [
        ("compact build / docker pull+save+zstd (classic)", _ratio(r, "build_cold_uncompressed",
                                                             "classic"), "<= 0.85"),
        ("  compact bundle size / classic size", r.get("bytes_uncompressed", 0) /
         r["bytes_classic"] if "bytes_classic" in r else None, "<= 1.0"),
        ("compact build / zstd alone on the same tar (floor)",
         _ratio(r, "build_cold_uncompressed", "floor_compress"), "<= 1.05"),
        ("  compact bundle size / floor size", r["bytes_uncompressed"] / r["bytes_floor"], ""),
        ("preserve build / skopeo copy+tar+zstd", _ratio(r, "build_cold_preserve", "skopeo"),
         "<= 0.3"),
        ("  preserve bundle size / skopeo size", r["bytes_preserve"] / r["bytes_skopeo"],
         "<= 1.005"),
        ("warm rebuild / cold build, preserve", _ratio(r, "build_warm_preserve",
                                                       "build_cold_preserve"), "<= 0.1"),
        ("  interpreter + imports alone / cold build, preserve",
         _ratio(r, "floor_py_imports", "build_cold_preserve"), "(floor)"),
        ("warm rebuild / cold build, uncompressed", _ratio(r, "build_warm_uncompressed",
                                                           "build_cold_uncompressed"), "<= 0.1"),
        ("verify / zstd -dc | sha256sum, compact bundle",
         _ratio(r, "verify_uncompressed", "floor_verify_uncompressed"), "<= 1.3"),
        ("verify / that + gunzip | sha256sum of layers, preserve bundle",
         _ratio(r, "verify_preserve", "floor_verify_preserve"), "<= 1.3"),
        ("peak RSS: compact build / zstd compressing the same tar",
         _ratio(r, "build_cold_uncompressed", "floor_compress", "peak_rss_kib"), "<= 1.2"),
        ("peak RSS: verify / zstd -dc | sha256sum",
         _ratio(r, "verify_uncompressed", "floor_verify_uncompressed", "peak_rss_kib"), "<= 1.2"),
        ("peak RSS, 1 GiB layer: build / zstd compressing it",
         _ratio(r, "huge_build", "huge_floor_compress", "peak_rss_kib"), "<= 1.2"),
        ("peak RSS, 1 GiB layer: verify / zstd -dc | sha256sum",
         _ratio(r, "huge_verify", "huge_floor_verify", "peak_rss_kib"), "<= 1.2"),
        ("peak RSS: compact build / Python floor", _ratio(
            r, "build_cold_uncompressed", "floor_py_compress", "peak_rss_kib"), "<= 1.2"),
        ("peak RSS: verify / Python floor", _ratio(
            r, "verify_uncompressed", "floor_py_verify", "peak_rss_kib"), "<= 1.2"),
        ("peak RSS, 1 GiB layer: build / Python floor", _ratio(
            r, "huge_build", "huge_floor_py_compress", "peak_rss_kib"), "<= 1.2"),
        ("peak RSS, 1 GiB layer: verify / Python floor", _ratio(
            r, "huge_verify", "huge_floor_py_verify", "peak_rss_kib"), "<= 1.2"),
        ("  Python floor / zstd CLI, compress", _ratio(
            r, "floor_py_compress", "floor_compress", "peak_rss_kib"), "(floor)"),
        ("  Python floor / zstd CLI, verify", _ratio(
            r, "floor_py_verify", "floor_verify_uncompressed", "peak_rss_kib"), "(floor)"),
    ]
    r["ratios"] = {name.strip(): {"ratio": None if v is None else round(v, 3), "goal": goal}
                   for name, v, goal in rows}
    m = r["machine"]
    print(f"bundler bench: {m['system']}, {m['cpus']} CPUs, Python {m['python']}, {m['zstd']}; "
          f"median of {r['runs']} runs")
    print(f"{'measure':<66} {'ratio':>6}  goal")
    for name, v, goal in rows:
        print(f"{name:<66} {'n/a' if v is None else f'{v:6.3f}':>6}  {goal}")
    print()
    for key in sorted(k for k, v in r.items() if isinstance(v, dict) and "median_s" in v):
        print(f"{key:<28} {r[key]['median_s']:8.2f} s  peak RSS "
              f"{r[key]['peak_rss_kib'] / 1024:7.1f} MiB")
    for key in sorted(k for k in r if k.startswith("bytes_")):
        print(f"{key:<28} {r[key] / 1e6:8.2f} MB")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(r, indent=2) + "\n")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    raise SystemExit(main())
