"""scripts/bench's body: ratios of medians against a floor or a peer, measured in one run.

Peers, each run the way people run them today, against the same local registry:
  classic:  docker pull + docker save + zstd -T0 -16 --long=25   (K3s's old pipeline)
  skopeo:   skopeo copy --override-arch amd64 to an OCI layout + tar + the same zstd
            (what K3s and RKE2 do now with ctr/crane)
  floor:    zstd -T0 -16 --long=25 alone on the same uncompressed tar
  py floor: the least a Python program can do for the same work (zstandard + hashlib and
            nothing else), which no Python tool goes below: memory against the zstd CLI
            cannot drop under CPython's own 15 MiB plus zstd's 32 MiB window
  skopeo loop: for many images, `skopeo copy --override-arch amd64` once per image
            into ONE OCI layout, then tar + the same zstd: what a release pipeline's shell
            loop does
The many-images and network cases: N generated small multi-arch images (a shared base
layer and one layer of their own each; the index lists linux/arm64 before linux/amd64) from
the loopback registry, and
the stand-ins and 50 of the generated images through tests/netshape.py, a front that adds a
fixed delay to every request and caps each connection's bandwidth, like a registry across a
real network.
No result here is asserted by the tests; the numbers go to the README and the closing notes.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402
import zstandard  # noqa: E402

from bundler import mediatypes as mt  # noqa: E402
from tests import imagegen as gen  # noqa: E402
from tests import standins  # noqa: E402
from tests.netshape import NetShape  # noqa: E402
from tests.registryseed import push_image  # noqa: E402
from tests.servers import Dockerd, Registry, write_registries_yaml  # noqa: E402

BUNDLER = [sys.executable, "-m", "bundler"]
FRONT_MANY = 50  # generated images built through the front
BUNDLE = "k3s-airgap-images-multus-amd64.tar.zst"
ZSTD = "zstd -q -T0 -16 --long=25 -f"
REFS = [f"docker.io/{repo}:{tag}" for repo, tag in standins.IMAGES.items()]
# One sha256 of a file, as hashlib (OpenSSL, SHA-NI where the CPU has it) computes it: the
# least split and join do beyond a copy (coreutils' sha256sum is slower here).
PY_SHA256 = [sys.executable, "-c", (
    "import hashlib, sys\n"
    "h = hashlib.sha256()\n"
    "with open(sys.argv[1], 'rb') as f:\n"
    "    while b := f.read(1 << 20):\n"
    "        h.update(b)\n")]
# The split and join cases: a file of this many MiB, cut into parts of PARTS_SIZE.
PARTS_MIB = 200
PARTS_SIZE = "50MB"
DELTA_SHARED_MIB = 256
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
    "from bundler.bundleformat.compress import compressor\n"
    "with open(sys.argv[1], 'rb') as f, open(sys.argv[2], 'wb') as out:\n"
    "    compressor(int(sys.argv[3])).copy_stream(f, out)\n")]
# What any registry build pays before its first request: interpreter and imports.
# What each command imports before its first byte: the CLI loads a command's own modules only
# (tests/test_imports.py), so each floor names that command's.
PY_IMPORTS = [sys.executable, "-c",
              "import bundler.__main__, bundler.cli, bundler.commands.build, "
              "bundler.sources.registry, yaml"]
PY_PUSH_IMPORTS = [sys.executable, "-c",
                   "import bundler.__main__, bundler.cli, bundler.commands.push, "
                   "bundler.checks.verify"]
PY_CLI_IMPORTS = [sys.executable, "-c",
                  "import bundler.__main__, bundler.cli, bundler.checks.verify"]
# What build's self-check costs: the same build with verify.WrittenCheck replaced, in this
# program only, by one that checks nothing (bundler itself has no way to turn it off).
_UNCHECKED = (
    "import sys\n"
    "import bundler.sinks.bundle as sink\n"
    "from bundler.checks.verify import Report\n"
    "class Unchecked:\n"
    "    def __init__(self, name, diff_ids=None): self.report = Report(name)\n"
    "    def feed(self, offset, data): pass\n"
    "    def finish(self, path, size, sha256, doc): return self.report\n"
    "    def abort(self): pass\n"
    "sink.WrittenCheck = Unchecked\n"
    "from bundler.__main__ import run\n"
    "sys.exit(run(sys.argv[1:]))\n")
UNCHECKED = [sys.executable, "-c", shlex.quote(_UNCHECKED)]
# The least a streaming compact build of one gzip layer does: inflate (on a thread of its
# own), hash the plain bytes (the diff_id), compress them with bundler's parameters.
PY_STREAM = [sys.executable, "-c", (
    "import hashlib, queue, sys, threading, zlib\n"
    f"sys.path.insert(0, {str(ROOT)!r})\n"
    "from bundler.bundleformat.compress import compressor\n"
    "chunks = queue.Queue(2)\n"
    "def inflate():\n"
    "    d = zlib.decompressobj(zlib.MAX_WBITS | 16)\n"
    "    with open(sys.argv[1], 'rb') as f:\n"
    "        while raw := f.read(1 << 18):\n"
    "            while raw:\n"
    "                chunks.put(d.decompress(raw, 1 << 18))\n"
    "                raw = d.unconsumed_tail\n"
    "    chunks.put(None)\n"
    "threading.Thread(target=inflate, daemon=True).start()\n"
    "h = hashlib.sha256()\n"
    "with open(sys.argv[2], 'wb') as out:\n"
    "    w = compressor(int(sys.argv[3])).stream_writer(out, closefd=False)\n"
    "    while (b := chunks.get()) is not None:\n"
    "        h.update(b)\n"
    "        w.write(b)\n"
    "    w.close()\n")]


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
        said = " | ".join(out.stderr.strip().splitlines()[-3:])
        raise SystemExit(f"bench: command failed ({code}): {command}\n  it said: {said}")
    return float(elapsed), int(peak)


def measure_rounds(cases: dict[str, tuple[str, dict | None]], runs: int) -> dict:
    """Each case once per round, rounds one after another: a machine that speeds up or slows
    down during the benchmark (seen here: 15% between runs) moves every case alike, so the
    ratios stay true. Median wall time and the largest peak RSS per case."""
    seen: dict[str, list[tuple[float, int]]] = {name: [] for name in cases}
    for i in range(runs):
        for name, (command, env) in cases.items():
            seen[name].append(run_once(command, env))
            print(f"bench: round {i + 1}/{runs}: {name} {seen[name][-1][0]:.2f} s",
                  file=sys.stderr, flush=True)
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
    ap.add_argument("--slow-runs", type=int, default=2,
                    help="rounds of the many-images and front cases (default: 2)")
    ap.add_argument("--json", default=str(ROOT / "dist" / "bench.json"))
    ap.add_argument("--no-huge", action="store_true", help="skip the 1 GiB layer case")
    ap.add_argument("--many", type=int, default=200, metavar="N",
                    help="generated images in the many-images case (default: 200)")
    ap.add_argument("--no-many", action="store_true", help="skip the many-images case")
    ap.add_argument("--no-push", action="store_true", help="skip the push cases")
    ap.add_argument("--no-main", action="store_true",
                    help="skip the three stand-ins from the loopback registry (classic, skopeo, "
                         "floors): only the many-images, network and 1 GiB layer cases")
    ap.add_argument("--no-front", action="store_true",
                    help="skip the cases through the network-shaped front")
    ap.add_argument("--front-delay-ms", type=float, default=50.0,
                    help="the front's delay added to every request (default: 50)")
    ap.add_argument("--front-rate-mbs", type=float, default=20.0,
                    help="the front's bandwidth per connection, MB/s (default: 20)")
    ap.add_argument("--no-parts", action="store_true", help="skip the split and join cases")
    ap.add_argument("--no-delta", action="store_true", help="skip the delta and patch cases")
    ap.add_argument("--parts-mib", type=int, default=PARTS_MIB, metavar="MIB",
                    help=f"size of the file split and joined (default: {PARTS_MIB})")
    args = ap.parse_args()
    if args.runs < 1 or args.slow_runs < 1 or args.many < 10:
        ap.error("--runs and --slow-runs must be at least 1, --many at least 10")
    if args.many < FRONT_MANY and not (args.no_front or args.no_many):
        ap.error(f"--many must be at least {FRONT_MANY}: the front builds that many of them")
    r: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                           "system": platform.platform(),
                           "zstd": subprocess.run(["zstd", "--version"], capture_output=True,
                                                  text=True).stdout.strip(),
                           "load_at_start": os.getloadavg()[0]},
               "measured": _revision(),
               "runs": args.runs, "slow_runs": args.slow_runs}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bundler-bench-") as tmp:
        w = Path(tmp)
        registry = Registry(w / "registry").start()
        front = None
        try:
            standins.seed(registry.url)
            if not args.no_main:
                _main_cases(r, registry, w, args.runs)
                _phase(r, "stand-ins", started)
            if not (args.no_many and args.no_front):
                t = time.monotonic()
                n = FRONT_MANY if args.no_many else args.many
                r["many_images"] = n
                r["many_refs"] = _seed_many(registry.url, n)
                print(f"bench: {n} generated images seeded in {time.monotonic() - t:.1f} s",
                      file=sys.stderr)
            cases: dict = {}
            if not args.no_many:
                cases.update(_many_cases(r, registry, w))
            if not args.no_front:
                front = NetShape(registry.url, delay=args.front_delay_ms / 1000,
                                 rate=args.front_rate_mbs * 1e6).start()
                r["front"] = {"delay_ms": args.front_delay_ms, "rate_mbs": args.front_rate_mbs}
                cases.update(_front_cases(r, front, w))
            if cases:
                r.update(measure_rounds(cases, args.slow_runs))
                _phase(r, "many images and front", started)
                _sizes(r, w, ("many_preserve", "skopeo_many", "front_many_preserve",
                              "skopeo_front_many"))
            if not args.no_push:
                _push_cases(r, registry, w, args.slow_runs)
                _push_memory(r, registry, w, args.slow_runs)
                _phase(r, "push", started)
            if not args.no_huge:
                _huge(r, registry, w)
                _phase(r, "1 GiB layer", started)
            if not args.no_parts:
                _parts_cases(r, w, args.runs, args.parts_mib)
                _phase(r, "split and join", started)
            if not args.no_delta:
                _delta_cases(r, registry, w, args.runs)
                _phase(r, "delta and patch", started)
        finally:
            if front:
                front.stop()
                # What went through it: a case that bypassed the front would show here.
                r["front"].update(requests=front.requests, connections=front.connections,
                                  bytes_down=front.bytes_down)
            registry.stop()
    r.pop("many_refs", None)  # 200 names the JSON's readers do not need
    r["machine"]["load_at_end"] = os.getloadavg()[0]
    r["wall_s"] = round(time.monotonic() - started, 1)
    _report(r, args.json)
    return 0


def _phase(r: dict, name: str, started: float) -> None:
    """Seconds since the start when each part ended: the default run is meant to stay under
    ~15 minutes on 2 idle CPUs, and this says which part to cut when it does not."""
    r.setdefault("phases_ended_at_s", {})[name] = round(time.monotonic() - started, 1)


def _revision() -> str:
    """The commit measured, and whether bundler/ differed from it (several engineers share one
    working tree: a number is only worth what this line says it measured)."""
    git = ["git", "-C", str(ROOT)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip() or "unknown"
    dirty = subprocess.run([*git, "status", "--porcelain", "--", "bundler"], capture_output=True,
                           text=True).stdout.strip()
    return f"{head} + uncommitted changes in bundler/" if dirty else head


def _main_cases(r: dict, registry: Registry, w: Path, runs: int) -> None:
    """The three stand-ins from the loopback registry against classic, skopeo and the floors."""
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
        unchecked = " ".join(UNCHECKED) + cmd[len(" ".join(BUNDLER)):]
        if mode == "uncompressed":
            cases[f"unchecked_cold_{mode}"] = (f"rm -rf {cache} && {unchecked}", None)
        cases[f"unchecked_warm_{mode}"] = (unchecked, None)

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
    try:
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

        r.update(measure_rounds(cases, runs))
    finally:
        if dockerd:
            dockerd.stop()  # idle, but its memory and timers are not the slow cases' business
    for key, path in (("bytes_preserve", bundles["preserve"]),
                      ("bytes_uncompressed", bundles["uncompressed"]),
                      ("bytes_floor", w / "floor.tar.zst"),
                      ("bytes_skopeo", w / "oci.tar.zst"),
                      ("bytes_classic", w / "docker.tar.zst")):
        if path.exists():
            r[key] = path.stat().st_size
    tar.unlink()


def _push_cases(r: dict, registry: Registry, w: Path, runs: int) -> None:
    """bundler push of the stand-ins' preserve bundle into an empty registry, then again into
    the same one, against what people run today on the same bundle: zstd -d, then one skopeo
    copy per image. skopeo's oci-archive: transport refuses the Docker media types of the
    index, so its docker-archive: one reads the bundle's manifest.json (digests not kept)."""
    mirrors = write_registries_yaml(w / "r-push.yaml", {"docker.io": [registry.url]})
    images = _images_file(w / "push.txt", REFS)
    out = w / "push-src"
    run_once(build_cmd(mirrors, images, "preserve", out, w / "cache-push"))
    bundle = out / BUNDLE
    target = Registry(w / "push-registry").start()
    data = target.dir / "data"
    try:
        push = " ".join([*BUNDLER, "push", str(bundle), "--to", f"{target.host}/mirror"])
        copies = " && ".join(
            f"skopeo copy -q --dest-tls-verify=false docker-archive:{w}/push.tar:"
            f"docker.io/{repo}:{tag} docker://{target.host}/peer/{repo}:{tag}"
            for repo, tag in standins.IMAGES.items())
        r.update(measure_rounds({
            # An emptied storage directory is an empty registry: distribution keeps no cache
            # of what is on disk in the configuration tests.servers writes.
            "push_cold": (f"rm -rf {data} && {push}", None),
            "push_again": (push, None),
            "skopeo_push": (f"rm -rf {data} && zstd -dqf --long=25 {bundle} -o {w}/push.tar "
                            f"&& {copies}", None),
            "floor_py_push_imports": (shlex.join(PY_PUSH_IMPORTS), None),
        }, runs))
    finally:
        target.stop()


PUSH_BIG_MIB = 256  # the bigger push bundle's one layer, uncompressed


def _push_memory(r: dict, registry: Registry, w: Path, runs: int) -> None:
    """Peak RSS of `bundler push` into an empty registry, against bundle size: the
    stand-ins (preserve and compact) and one image with a PUSH_BIG_MIB MiB layer (preserve),
    each beside the Python floor decompressing and hashing the same file; and the big
    bundle's re-push against its first push. zstd's streaming decoder keeps at most one
    window (2^25 bytes, K3s's limit) of a frame, and only as much as the frame holds: the
    stand-ins' preserve bundle (largest frame 22.5 MB) fills two thirds of it, their compact
    bundle and the big one all of it. Past one window nothing may grow."""
    period = b"".join(Path(p).read_bytes() for p in ("/usr/bin/containerd", "/usr/bin/ctr"))
    size, parts, n = PUSH_BIG_MIB << 20, [], 0
    while size > 0:  # real binaries, made unique per period: gzip finds no long repeats
        parts.append((period + n.to_bytes(8, "big"))[:size])
        size -= len(parts[-1])
        n += 1
    layer = gen.tar_layer([("file", "big.bin", b"".join(parts))])
    del parts
    push_image(registry.url, "rancher/pushbig", gen.image([layer]), "v1")
    del layer
    mirrors = write_registries_yaml(w / "r-pushmem.yaml", {"docker.io": [registry.url]})
    small = _images_file(w / "pushmem-small.txt", REFS)
    big = _images_file(w / "pushmem-big.txt", ["docker.io/rancher/pushbig:v1"])
    bundles = {}
    for name, images, mode in (("small", small, "preserve"),
                               ("small_compact", small, "uncompressed"),
                               ("big", big, "preserve")):
        out = w / f"pushmem-{name}"
        run_once(build_cmd(mirrors, images, mode, out, w / f"cache-pushmem-{name}"))
        bundles[name] = out / BUNDLE
        r[f"bytes_pushmem_{name}"] = bundles[name].stat().st_size
    target = Registry(w / "pushmem-registry").start()
    data = target.dir / "data"
    try:
        cases: dict[str, tuple[str, dict | None]] = {}
        for name, bundle in bundles.items():
            push = " ".join([*BUNDLER, "push", str(bundle), "--to", target.host])
            # An emptied storage directory is an empty registry (as in _push_cases).
            cases[f"pushmem_{name}"] = (f"rm -rf {data} && {push}", None)
            if name == "big":
                cases["pushmem_big_again"] = (push, None)  # right after its first push
            cases[f"pushmem_{name}_floor"] = (shlex.join([*PY_VERIFY, str(bundle)]), None)
        r.update(measure_rounds(cases, runs))
    finally:
        target.stop()


PUSH_MEMORY_ROWS = [
    (f"peak RSS, push: {PUSH_BIG_MIB} MiB layer / stand-ins compact (both fill the window)",
     ("pushmem_big", "pushmem_small_compact", "peak_rss_kib"), "<= 1.15"),
    (f"peak RSS, push: {PUSH_BIG_MIB} MiB layer / stand-ins preserve",
     ("pushmem_big", "pushmem_small", "peak_rss_kib"), "<= 1.15"),
    ("  the same two files, Python floor (zstd + sha256 alone)",
     ("pushmem_big_floor", "pushmem_small_floor", "peak_rss_kib"), "(floor)"),
    (f"peak RSS, push / Python floor, {PUSH_BIG_MIB} MiB layer",
     ("pushmem_big", "pushmem_big_floor", "peak_rss_kib"), ""),
    ("peak RSS, push / Python floor, stand-ins preserve",
     ("pushmem_small", "pushmem_small_floor", "peak_rss_kib"), ""),
    (f"re-push / first push, {PUSH_BIG_MIB} MiB layer",
     ("pushmem_big_again", "pushmem_big", "median_s"), "<= 0.1"),
]


def _sizes(r: dict, w: Path, names: tuple[str, ...]) -> None:
    for name in names:
        path = w / name / BUNDLE if (w / name / BUNDLE).exists() else w / f"{name}.tar.zst"
        if path.exists():
            r[f"bytes_{name}"] = path.stat().st_size


def _images_file(path: Path, refs: list[str]) -> Path:
    path.write_text("".join(f"{ref}\n" for ref in refs))
    return path


def _many_cases(r: dict, registry: Registry, w: Path) -> dict:
    """All N generated images, preserve, cold, against the skopeo loop; verify of that bundle;
    the same build for the first 10 images, for memory against image count."""
    refs = r["many_refs"]
    mirrors = write_registries_yaml(w / "r-many.yaml", {"docker.io": [registry.url]})
    cases = {}
    for name, subset in (("many", refs), ("many10", refs[:10])):
        out, cache = w / f"{name}_preserve", w / f"cache-{name}"
        cmd = build_cmd(mirrors, _images_file(w / f"{name}.txt", subset), "preserve", out,
                        cache)
        cases[f"{name}_cold_preserve"] = (f"rm -rf {cache} && {cmd}", None)
    cases["skopeo_many"] = (_skopeo_loop(registry.host, refs, w, "skopeo_many"), None)
    # Cases run in this order each round: verify reads what this round's cold build wrote.
    bundle = w / "many_preserve" / BUNDLE
    cases["verify_many"] = (" ".join([*BUNDLER, "verify", str(bundle)]), None)
    cases["floor_verify_many"] = (f"zstd -dc --long=25 {bundle} | sha256sum", None)
    cases["floor_py_verify_many"] = (shlex.join([*PY_VERIFY, str(bundle)]), None)
    # What every `python -m bundler` pays before reading a byte: next to a 0.1 s floor, it
    # says whether a goal is within a Python CLI's reach at all.
    cases["floor_py_cli_imports"] = (shlex.join(PY_CLI_IMPORTS), None)
    return cases


def _front_cases(r: dict, front: NetShape, w: Path) -> dict:
    """The stand-ins cold and warm, and the first FRONT_MANY generated images cold, through the
    front; the skopeo loop through the same front for each."""
    mirrors = write_registries_yaml(w / "r-front.yaml", {"docker.io": [front.url]})
    many = r["many_refs"][:FRONT_MANY]
    cases = {}
    for name, refs in (("front", REFS), ("front_many", many)):
        out, cache = w / f"{name}_preserve", w / f"cache-{name}"
        cmd = build_cmd(mirrors, _images_file(w / f"{name}.txt", refs), "preserve", out, cache)
        cases[f"{name}_cold_preserve"] = (f"rm -rf {cache} && {cmd}", None)
        if name == "front":
            cases["front_warm_preserve"] = (cmd, None)  # right after the cold build
    cases["floor_py_imports"] = (shlex.join(PY_IMPORTS), None)  # also without the main cases
    # What any correct rebuild must do besides: ask the registry once whether a tag moved.
    cases["floor_py_imports_request"] = (shlex.join([
        PY_IMPORTS[0], "-c", PY_IMPORTS[2] + "\nimport requests\n"
        f"requests.head({front.url + '/v2/'!r}, timeout=30)"]), None)
    cases["skopeo_front"] = (_skopeo_loop(front.host, REFS, w, "skopeo_front"), None)
    cases["skopeo_front_many"] = (_skopeo_loop(front.host, many, w, "skopeo_front_many"), None)
    return cases


def _skopeo(registry: Registry, w: Path) -> str:
    copies = " && ".join(
        f"skopeo copy -q --override-arch amd64 --src-tls-verify=false "
        f"docker://{registry.host}/{repo}:{tag} oci:{w}/oci:docker.io/{repo}:{tag}"
        for repo, tag in standins.IMAGES.items())
    return (f"rm -rf {w}/oci && {copies} && tar -C {w}/oci -cf {w}/oci.tar . && "
            f"{ZSTD} {w}/oci.tar -o {w}/oci.tar.zst")


def _skopeo_loop(host: str, refs: list[str], w: Path, name: str) -> str:
    """skopeo copy once per image into one OCI layout, then tar + zstd: a release pipeline's
    shell loop. The references go through a file: 200 of them inline would pass the kernel's
    128 KiB limit on one argument."""
    listing = w / f"{name}.list"
    listing.write_text("".join(f"{host}/{ref.split('/', 1)[1]} {ref}\n" for ref in refs))
    layout = w / name
    return (f"rm -rf {layout} && while read -r src dst; do "
            f"skopeo copy -q --override-arch amd64 --src-tls-verify=false "
            f"docker://$src oci:{layout}:$dst || exit 1; done < {listing} && "
            f"tar -C {layout} -cf {layout}.tar . && {ZSTD} {layout}.tar -o {layout}.tar.zst")


def _many_image(base: tuple[bytes, str], own_tar: bytes, n: int) -> gen.TestImage:
    """An amd64 image of the shared base layer (gzip blob, diff_id) and its own layer; the
    base is compressed once for all images (gen.image would gzip it N times)."""
    own = gzip.compress(own_tar, compresslevel=6, mtime=0)
    layers = [(base[0], mt.DOCKER_LAYER_GZIP), (own, mt.DOCKER_LAYER_GZIP)]
    diff_ids = [base[1], gen.digest(own_tar)]
    plat = {"architecture": "amd64", "os": "linux"}
    config = json.dumps({
        **plat, "created": "2026-01-01T00:00:00Z",
        "config": {"Entrypoint": [f"/app/{n}/run"], "Env": ["PATH=/usr/bin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": "base"}, {"created_by": f"app {n}"}],
    }, sort_keys=True).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": mt.DOCKER_MANIFEST,
        "config": {"mediaType": mt.DOCKER_CONFIG, "digest": gen.digest(config),
                   "size": len(config)},
        "layers": [{"mediaType": m, "digest": gen.digest(b), "size": len(b)} for b, m in layers],
    }, indent=3).encode()
    return gen.TestImage(manifest, mt.DOCKER_MANIFEST, config, layers, diff_ids, plat)


def _own_layer(n: int) -> bytes:
    """~80 KB: half incompressible, half text, as an application layer of a small image is."""
    rng = random.Random(n)
    text = "".join(f"key{i}={rng.randrange(10**6)} image {n}\n" for i in range(2000)).encode()
    return gen.tar_layer([("dir", "app"), ("dir", f"app/{n}"),
                          ("file", f"app/{n}/run", rng.randbytes(40_000)),
                          ("file", f"app/{n}/config.txt", text[:40_000])])


def _seed_many(url: str, n: int) -> list[str]:
    """Push N small multi-arch images bench/many-NNN:v1 (docker.io names); their index lists
    linux/arm64/v8 first, then linux/amd64. The shared blobs (the amd64 base layer, the arm64
    image) are uploaded once and mounted into every other repository."""
    with open("/usr/bin/ctr", "rb") as f:  # 8 MiB of a Go binary: compresses as bases do
        base_tar = gen.tar_layer([("dir", "usr"), ("dir", "usr/bin"),
                                  ("file", "usr/bin/base", f.read(8 << 20))])
    base = (gzip.compress(base_tar, compresslevel=6, mtime=0), gen.digest(base_tar))
    arm = gen.image([gen.tar_layer([("file", "etc/arch", b"arm64\n")])], arch="arm64",
                    variant="v8")
    repos = [f"bench/many-{i:03d}" for i in range(n)]
    with requests.Session() as s:
        for blob in (base[0], *arm.blobs):
            _upload(s, url, repos[0], blob)

    def push(chunk: list[int]) -> None:
        with requests.Session() as s:
            for i in chunk:
                amd = _many_image(base, _own_layer(i), i)
                for blob in (base[0], arm.layers[0][0], arm.config):
                    _upload(s, url, repos[i], blob, mount_from=repos[0])
                for blob in (amd.layers[1][0], amd.config):
                    _upload(s, url, repos[i], blob)
                for img in (arm, amd):
                    _put(s, f"{url}/v2/{repos[i]}/manifests/{img.digest}", img.manifest,
                         img.media_type)
                body, media = gen.index([arm, amd], oci=False)
                _put(s, f"{url}/v2/{repos[i]}/manifests/v1", body, media)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(push, [list(range(n))[k::4] for k in range(4)]))
    return [f"docker.io/{repo}:v1" for repo in repos]


def _upload(s: requests.Session, url: str, repo: str, blob: bytes,
            mount_from: str | None = None) -> None:
    """A monolithic upload, or a cross-repository mount (one request, no bytes) when the blob
    is already in `mount_from`."""
    d = gen.digest(blob)
    query = f"?mount={d}&from={mount_from}" if mount_from else ""
    r = s.post(f"{url}/v2/{repo}/blobs/uploads/{query}", timeout=30)
    if r.status_code == 201:
        return
    r.raise_for_status()
    location = r.headers["Location"]
    location = url + location if location.startswith("/") else location
    sep = "&" if "?" in location else "?"
    _put(s, f"{location}{sep}digest={d}", blob, "application/octet-stream")


def _put(s: requests.Session, url: str, body: bytes, media_type: str) -> None:
    r = s.put(url, data=body, headers={"Content-Type": media_type}, timeout=60)
    r.raise_for_status()


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
    image = gen.image([layer])
    gz = w / "huge.tar.gz"
    gz.write_bytes(image.layers[0][0])
    push_image(registry.url, "rancher/huge", image, "v1")
    del layer, image
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
    r["huge_floor_py_stream"] = measure(
        shlex.join([*PY_STREAM, str(gz), f"{w}/huge-stream.tar.zst", "3"]))
    gz.unlink()
    tar.unlink()
    r["huge_verify"] = measure(" ".join([*BUNDLER, "verify", str(out / BUNDLE)]))
    r["huge_floor_verify"] = measure(f"zstd -dc --long=25 {out / BUNDLE} | sha256sum")
    r["huge_floor_py_verify"] = measure(shlex.join([*PY_VERIFY, str(out / BUNDLE)]))
    shutil.rmtree(cache, ignore_errors=True)


def _random_file(path: Path, mib: int) -> Path:
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(1 << 20))
    return path


def _parts_cases(r: dict, w: Path, runs: int, mib: int) -> None:
    """split and join against a plain copy of the same file, in the same rounds. split and
    join read no content, so a file of random bytes stands in for a bundle of that size (it
    is what a bundle's compressed bytes look like to them). Each round writes over the
    last's outputs, as the copy does. A tenth of the size gives the memory's flatness."""
    d = w / "parts"
    d.mkdir()
    big, small = _random_file(d / "big.tar.zst", mib), _random_file(d / "small.tar.zst",
                                                                    max(1, mib // 10))
    r["parts_mib"] = mib
    split = shlex.join([*BUNDLER, "split", "--size", PARTS_SIZE])
    cases = {"parts_cp": (f"cp {big} {d / 'copy.bin'}", None),
             "parts_copyfile": (shlex.join([sys.executable, "-c", "import shutil, sys; "
                                            "shutil.copyfile(sys.argv[1], sys.argv[2])",
                                            str(big), str(d / "copy2.bin")]), None),
             "parts_cp_sync": (f"cp {big} {d / 'copy3.bin'} && sync {d / 'copy3.bin'}", None),
             "parts_py_sha256": (shlex.join([*PY_SHA256, str(big)]), None),
             "parts_split": (f"{split} {big} -o {d / 'out'}", None),
             "parts_split_small": (f"{split} {small} -o {d / 'out_small'}", None)}
    r.update(measure_rounds(cases, runs))
    joins = {"parts_join": (shlex.join([*BUNDLER, "join", str(d / "out" / f"{big.name}.parts"
                                                                ".json"), "-o",
                                        str(d / "joined")]), None),
             "parts_join_small": (shlex.join([*BUNDLER, "join", str(
                 d / "out_small" / f"{small.name}.parts.json"), "-o", str(d / "joined")]),
                 None)}
    r.update(measure_rounds(joins, runs))
    shutil.rmtree(d, ignore_errors=True)


def _delta_cases(r: dict, registry: Registry, w: Path, runs: int) -> None:
    """delta and patch between two builds of the stand-ins that share the multus image (and
    its base layer) and differ in the other: OLD holds busybox, NEW the CNI plugins. The
    delta's size against what NEW adds, compressed: a tar of NEW's metadata members and the
    blobs OLD lacks, through zstd at the bundle's level, plus NEW's files beside it. patch
    against a plain copy of NEW, in the same rounds."""
    d = w / "delta"
    d.mkdir()
    mirrors = write_registries_yaml(d / "r.yaml", {"docker.io": [registry.url]})
    # A shared image of one 256 MiB layer makes the preserve bundles big enough that patch's
    # time is its copying and hashing, not the interpreter's start (compressing it at level 16
    # for the compact case would take minutes: that case keeps to the stand-ins).
    big = gen.image([gen.tar_layer(gen.random_files(31, DELTA_SHARED_MIB // 64, 64 << 20))])
    push_image(registry.url, "rancher/delta-shared", big, "v1")
    del big
    shared = "docker.io/rancher/delta-shared:v1"
    for mode in ("preserve", "uncompressed"):
        extra = [shared] if mode == "preserve" else []
        old_refs, new_refs = [REFS[0], REFS[2], *extra], [REFS[0], REFS[1], *extra]
        old, new = d / f"old-{mode}", d / f"new-{mode}"
        for out, refs in ((old, old_refs), (new, new_refs)):
            run_once(build_cmd(mirrors, _images_file(d / f"{out.name}.txt", refs), mode, out,
                               d / "cache"))
        delta = d / f"{mode}.delta"
        run_once(shlex.join([*BUNDLER, "delta", str(new / BUNDLE), "--base", str(old / BUNDLE),
                             "-o", str(delta)]))
        r[f"bytes_delta_{mode}"] = delta.stat().st_size
        r[f"bytes_delta_{mode}_floor"] = _added_compressed(old / BUNDLE, new, d / mode)
        r[f"bytes_delta_{mode}_new"] = (new / BUNDLE).stat().st_size
        cases = {f"patch_{mode}": (shlex.join([*BUNDLER, "patch", str(old / BUNDLE), str(delta),
                                              "-o", str(d / f"site-{mode}")]), None),
                 f"patch_cp_{mode}": (f"cp {new / BUNDLE} {d / f'copy-{mode}.tar.zst'}", None),
                 # patch flushes what it writes and hashes all of it: the floors of that.
                 f"patch_cp_sync_{mode}": (f"cp {new / BUNDLE} {d / f'synced-{mode}.tar.zst'} "
                                           f"&& sync {d / f'synced-{mode}.tar.zst'}", None),
                 f"patch_sha256_{mode}": (shlex.join([*PY_SHA256, str(new / BUNDLE)]), None)}
        r.update(measure_rounds(cases, runs))
    shutil.rmtree(d, ignore_errors=True)


def _added_compressed(old: Path, new: Path, scratch: Path) -> int:
    """What NEW adds over OLD, compressed as the bundle is: its metadata members and the blobs
    OLD lacks in one tar through zstd at the bundle's level, plus its files beside it."""
    import tarfile

    level = json.loads((new / BUNDLE.replace(".tar.zst", ".manifest.json")).read_text())[
        "compression"]["level"]
    scratch.mkdir()
    with tarfile.open(untar_zst(old, scratch / "old.tar")) as t:
        have = {m.name for m in t.getmembers()}
    added = scratch / "added.tar"
    with tarfile.open(untar_zst(new / BUNDLE, scratch / "new.tar")) as src, \
            tarfile.open(added, "w", format=tarfile.PAX_FORMAT) as out:
        for m in src.getmembers():
            if m.isfile() and (m.name not in have or not m.name.startswith("blobs/")):
                out.addfile(m, src.extractfile(m))
    subprocess.run(f"zstd -q -T0 -{level} --long=25 -f {added} -o {added}.zst", shell=True,
                   check=True)
    sides = sum(p.stat().st_size for p in new.iterdir() if p.name != BUNDLE)
    return (scratch / "added.tar.zst").stat().st_size + sides


def _ratio(r: dict, a: str, b: str, field: str = "median_s") -> float | None:
    if a in r and b in r:
        return r[a][field] / r[b][field]
    return None


def _cost(r: dict, case: str, without: str) -> float | None:
    """(case - without) / without, in median wall time: what `case` adds to `without`."""
    if case in r and without in r:
        return (r[case]["median_s"] - r[without]["median_s"]) / r[without]["median_s"]
    return None


def _bytes_ratio(r: dict, a: str, b: str) -> float | None:
    if f"bytes_{a}" in r and f"bytes_{b}" in r:
        return r[f"bytes_{a}"] / r[f"bytes_{b}"]
    return None


def _report(r: dict, path: str) -> None:
    n, front = r.get("many_images", "N"), r.get("front", {})
    via = (f"through the front (+{front['delay_ms']:g} ms, {front['rate_mbs']:g} MB/s)"
           if front else "through the front")
    rows = [
        ("push / zstd -d + skopeo copy per image", _ratio(r, "push_cold", "skopeo_push"),
         "<= 0.5"),
        ("re-push / first push", _ratio(r, "push_again", "push_cold"), "<= 0.1"),
        ("  interpreter + push's imports alone / first push",
         _ratio(r, "floor_py_push_imports", "push_cold"), "(floor)"),
        *[(label, _ratio(r, *args), goal) for label, args, goal in PUSH_MEMORY_ROWS],
        ("compact build / docker pull+save+zstd (classic)", _ratio(r, "build_cold_uncompressed",
                                                             "classic"), "<= 0.85"),
        ("  compact bundle size / classic size",
         _bytes_ratio(r, "uncompressed", "classic"), "<= 1.0"),
        ("compact build / zstd alone on the same tar (floor)",
         _ratio(r, "build_cold_uncompressed", "floor_compress"), "<= 1.05"),
        ("  compact bundle size / floor size", _bytes_ratio(r, "uncompressed", "floor"), ""),
        ("preserve build / skopeo copy+tar+zstd", _ratio(r, "build_cold_preserve", "skopeo"),
         "<= 0.3"),
        ("  preserve bundle size / skopeo size", _bytes_ratio(r, "preserve", "skopeo"),
         "<= 1.005"),
        ("warm rebuild / cold build, preserve", _ratio(r, "build_warm_preserve",
                                                       "build_cold_preserve"), "<= 0.1"),
        ("  interpreter + imports alone / cold build, preserve",
         _ratio(r, "floor_py_imports", "build_cold_preserve"), "(floor)"),
        ("warm rebuild / cold build, uncompressed", _ratio(r, "build_warm_uncompressed",
                                                           "build_cold_uncompressed"), "<= 0.1"),
        ("self-check's cost: cold compact build", _cost(r, "build_cold_uncompressed",
                                                         "unchecked_cold_uncompressed"),
         "<= 0.1"),
        ("self-check's cost: warm compact rebuild", _cost(r, "build_warm_uncompressed",
                                                          "unchecked_warm_uncompressed"),
         "<= 0.1"),
        ("self-check's cost: warm preserve rebuild", _cost(r, "build_warm_preserve",
                                                           "unchecked_warm_preserve"), ""),
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
        ("1 GiB layer: compact build / zstd -3 alone on the same tar",
         _ratio(r, "huge_build", "huge_floor_compress"), "<= 1.5"),
        ("  Python floor / zstd -3 alone, 1 GiB layer",
         _ratio(r, "huge_floor_py_compress", "huge_floor_compress"), "(floor)"),
        ("  Python streaming floor (inflate + sha256 + compress) / zstd -3 alone, 1 GiB layer",
         _ratio(r, "huge_floor_py_stream", "huge_floor_compress"), "(floor)"),
        ("1 GiB layer: compact build / Python streaming floor",
         _ratio(r, "huge_build", "huge_floor_py_stream"), ""),
        # Many images, and a registry across a network.
        (f"{n} images, preserve, cold / skopeo loop + tar + zstd",
         _ratio(r, "many_cold_preserve", "skopeo_many"), "<= 0.5"),
        (f"  {n}-image bundle size / skopeo loop size",
         _bytes_ratio(r, "many_preserve", "skopeo_many"), "(none set)"),
        (f"verify / zstd -dc | sha256sum, {n}-image bundle",
         _ratio(r, "verify_many", "floor_verify_many"), "<= 1.3"),
        (f"  Python floor / zstd -dc | sha256sum, {n}-image bundle",
         _ratio(r, "floor_py_verify_many", "floor_verify_many"), "(floor)"),
        (f"  interpreter + bundler's imports alone / zstd -dc | sha256sum, {n}-image bundle",
         _ratio(r, "floor_py_cli_imports", "floor_verify_many"), "(floor)"),
        (f"peak RSS: {n}-image build / 10-image build",
         _ratio(r, "many_cold_preserve", "many10_cold_preserve", "peak_rss_kib"), "<= 1.15"),
        (f"{FRONT_MANY} images {via}, cold / skopeo loop, same front",
         _ratio(r, "front_many_cold_preserve", "skopeo_front_many"), "<= 0.5"),
        (f"stand-ins {via}, cold / skopeo loop, same front",
         _ratio(r, "front_cold_preserve", "skopeo_front"), ""),
        ("warm rebuild / cold build, stand-ins through the front",
         _ratio(r, "front_warm_preserve", "front_cold_preserve"), "<= 0.1"),
        ("  interpreter + imports alone / cold build through the front",
         _ratio(r, "floor_py_imports", "front_cold_preserve"), "(floor)"),
        ("  that + one request through the front / cold build through the front",
         _ratio(r, "floor_py_imports_request", "front_cold_preserve"), "(floor)"),
        (f"split / cp of the same file ({r.get('parts_mib')} MiB, parts of {PARTS_SIZE})",
         _ratio(r, "parts_split", "parts_cp"), "<= 1.2"),
        ("join / cp of the same file", _ratio(r, "parts_join", "parts_cp"), "<= 1.2"),
        ("  split / Python shutil.copyfile of the same file",
         _ratio(r, "parts_split", "parts_copyfile"), ""),
        ("  Python sha256 of the file alone / cp (one of the two hashes they compute)",
         _ratio(r, "parts_py_sha256", "parts_cp"), "(floor)"),
        ("  cp + sync of the copy / cp (split and join flush what they write)",
         _ratio(r, "parts_cp_sync", "parts_cp"), "(floor)"),
        ("split / Python sha256 of the file alone", _ratio(r, "parts_split", "parts_py_sha256"),
         ""),
        ("join / Python sha256 of the file alone", _ratio(r, "parts_join", "parts_py_sha256"),
         ""),
        ("peak RSS: split / split of a tenth of the size",
         _ratio(r, "parts_split", "parts_split_small", "peak_rss_kib"), "<= 1.05"),
        ("peak RSS: join / join of a tenth of the size",
         _ratio(r, "parts_join", "parts_join_small", "peak_rss_kib"), "<= 1.05"),
        ("peak RSS: split / Python shutil.copyfile",
         _ratio(r, "parts_split", "parts_copyfile", "peak_rss_kib"), ""),
        ("delta size / what NEW adds, compressed (+ its files), preserve",
         _bytes_ratio(r, "delta_preserve", "delta_preserve_floor"), "<= 1.02"),
        ("delta size / what NEW adds, compressed (+ its files), compact",
         _bytes_ratio(r, "delta_uncompressed", "delta_uncompressed_floor"), "<= 1.02"),
        ("  delta size / NEW's size, preserve",
         _bytes_ratio(r, "delta_preserve", "delta_preserve_new"), ""),
        ("  delta size / NEW's size, compact",
         _bytes_ratio(r, "delta_uncompressed", "delta_uncompressed_new"), ""),
        ("patch / cp of NEW, preserve", _ratio(r, "patch_preserve", "patch_cp_preserve"),
         "<= 1.5"),
        ("  cp + sync of NEW / cp (patch flushes what it writes)",
         _ratio(r, "patch_cp_sync_preserve", "patch_cp_preserve"), "(floor)"),
        ("  one Python sha256 of NEW / cp (patch hashes all it writes)",
         _ratio(r, "patch_sha256_preserve", "patch_cp_preserve"), "(floor)"),
        ("patch / cp + sync of NEW, preserve",
         _ratio(r, "patch_preserve", "patch_cp_sync_preserve"), ""),
        ("patch / cp of NEW, compact (compresses NEW's body again)",
         _ratio(r, "patch_uncompressed", "patch_cp_uncompressed"), ""),
        ("peak RSS: patch, compact / preserve",
         _ratio(r, "patch_uncompressed", "patch_preserve", "peak_rss_kib"), ""),
    ]
    r["ratios"] = {name.strip(): {"ratio": None if v is None else round(v, 3), "goal": goal}
                   for name, v, goal in rows}
    m = r["machine"]
    print(f"bundler bench: {m['system']}, {m['cpus']} CPUs, Python {m['python']}, {m['zstd']}; "
          f"median of {r['runs']} runs; the {n} generated images and the front: median of "
          f"{r['slow_runs']} runs (they are slow); load average {m['load_at_start']:.2f} at "
          f"start, {m['load_at_end']:.2f} at end; {r['wall_s']:.0f} s in all; "
          f"bundler at {r['measured']}")
    print(f"{'measure':<80} {'ratio':>6}  goal")
    for name, v, goal in rows:
        print(f"{name:<80} {'n/a' if v is None else f'{v:6.3f}':>6}  {goal}")
    print()
    for key in sorted(k for k, v in r.items() if isinstance(v, dict) and "median_s" in v):
        print(f"{key:<28} {r[key]['median_s']:8.2f} s  peak RSS "
              f"{r[key]['peak_rss_kib'] / 1024:7.1f} MiB")
    for key in sorted(k for k in r if k.startswith("bytes_")):
        print(f"{key:<28} {r[key] / 1e6:8.2f} MB")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(r, indent=2) + "\n")
    for name, at in r.get("phases_ended_at_s", {}).items():
        print(f"{name} done at {at:.0f} s")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    raise SystemExit(main())
