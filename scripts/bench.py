"""scripts/bench's body: ratios of medians against a floor or a peer, measured in one run.

No result here is asserted by the tests; the numbers go to the README and the closing notes.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import zstandard  # noqa: E402

from tests import standins  # noqa: E402
from tests.servers import Registry, write_registries_yaml  # noqa: E402

# The bundler of the interpreter running this script (scripts/deps puts it in .venv).
BUNDLER = [sys.executable, "-m", "bundler"]
BUNDLE = "k3s-airgap-images-multus-amd64.tar.zst"


def measure(argv: list[str] | str, runs: int, cwd: Path | None = None) -> dict:
    """Median wall time and peak RSS (KiB, largest process) of a command over `runs` runs."""
    times, rss = [], []
    for _ in range(runs):
        probe = ("import resource, subprocess, sys, time\n"
                 "t = time.perf_counter()\n"
                 "r = subprocess.run(sys.argv[2] if sys.argv[1] == 'sh' else sys.argv[2:],"
                 " shell=sys.argv[1] == 'sh', stdout=subprocess.DEVNULL)\n"
                 "print(time.perf_counter() - t,"
                 " resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, r.returncode)\n")
        args = ["sh", argv] if isinstance(argv, str) else ["argv", *argv]
        out = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True,
                             text=True, cwd=cwd, check=True).stdout.split()
        if out[2] != "0":
            raise SystemExit(f"bench: command failed: {argv}")
        times.append(float(out[0]))
        rss.append(int(out[1]))
    return {"median_s": statistics.median(times), "runs": times, "peak_rss_kib": max(rss)}


def layer_blobs(bundle: Path, directory: Path) -> list[Path]:
    """Extract the gzip layer blobs of a bundle (for the gunzip floor)."""
    data = zstandard.ZstdDecompressor().stream_reader(open(bundle, "rb")).read()
    out = []
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for m in tar.getmembers():
            if m.isfile() and m.name.startswith("blobs/"):
                blob = tar.extractfile(m).read()
                if blob[:2] == b"\x1f\x8b":
                    path = directory / (m.name.rsplit("/", 1)[1] + ".gz")
                    path.write_bytes(blob)
                    out.append(path)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", default=str(ROOT / "dist" / "bench.json"))
    args = ap.parse_args()
    results: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                 "system": platform.platform()}, "runs": args.runs}
    with tempfile.TemporaryDirectory(prefix="bundler-bench-") as tmp:
        work = Path(tmp)
        registry = Registry(work / "registry").start()
        try:
            standins.seed(registry.url)
            mirrors = write_registries_yaml(work / "r.yaml", {"docker.io": [registry.url]})
            builds = {}
            for mode in ("preserve", "uncompressed"):
                out, cache = work / mode, work / f"cache-{mode}"
                build = " ".join([*BUNDLER, "build", "--registries", str(mirrors),
                                  "--no-default-endpoint", "--layers", mode, "--output-dir",
                                  str(out), "--quiet", "--cache-dir", str(cache)])
                # Cold: an empty cache each run. Warm: everything cached, nothing changed.
                results[f"build_cold_{mode}"] = measure(f"rm -rf {cache} && {build}", args.runs)
                results[f"build_warm_{mode}"] = measure(build, args.runs)
                builds[mode] = out / BUNDLE
                results[f"bundle_bytes_{mode}"] = builds[mode].stat().st_size
        finally:
            registry.stop()

        floor = f"zstd -dc --long=25 {builds['uncompressed']} | sha256sum"
        results["verify_uncompressed"] = measure([*BUNDLER, "verify", str(builds["uncompressed"])],
                                                 args.runs)
        results["floor_uncompressed"] = measure(floor, args.runs)

        layers = layer_blobs(builds["preserve"], work)
        gunzip = " ; ".join(f"gunzip -c {p} | sha256sum" for p in layers)
        floor_p = f"zstd -dc --long=25 {builds['preserve']} | sha256sum ; {gunzip}"
        results["verify_preserve"] = measure([*BUNDLER, "verify", str(builds["preserve"])],
                                             args.runs)
        results["floor_preserve"] = measure(floor_p, args.runs)

    r = results
    ratios = {
        "verify / (zstd -dc | sha256sum), uncompressed bundle":
            (r["verify_uncompressed"]["median_s"] / r["floor_uncompressed"]["median_s"], 1.3),
        "verify / (zstd -dc | sha256sum + gunzip | sha256sum), preserve bundle":
            (r["verify_preserve"]["median_s"] / r["floor_preserve"]["median_s"], 1.3),
        "verify peak RSS / floor peak RSS, uncompressed bundle":
            (r["verify_uncompressed"]["peak_rss_kib"] / r["floor_uncompressed"]["peak_rss_kib"],
             1.2),
    }
    for mode in ("preserve", "uncompressed"):
        ratios[f"warm rebuild / cold build, {mode}"] = (
            r[f"build_warm_{mode}"]["median_s"] / r[f"build_cold_{mode}"]["median_s"], 0.1)
    results["ratios"] = {k: {"ratio": round(v, 3), "goal": g} for k, (v, g) in ratios.items()}
    print(f"bundler bench on {results['machine']['system']}, {os.cpu_count()} CPUs, "
          f"median of {args.runs} runs")
    print(f"{'measure':<74} {'ratio':>6} {'goal':>6}")
    for name, (value, goal) in ratios.items():
        print(f"{name:<74} {value:>6.2f} {'<=' + str(goal):>6}")
    print()
    for key in sorted(k for k in results if k.startswith(("verify", "floor", "build"))):
        m = results[key]
        print(f"{key:<24} {m['median_s']:8.3f} s  peak RSS {m['peak_rss_kib'] / 1024:7.1f} MiB")
    for key in sorted(k for k in results if k.startswith("bundle_bytes")):
        print(f"{key:<24} {results[key] / 1e6:8.1f} MB")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
