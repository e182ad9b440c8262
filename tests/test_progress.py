"""Progress: totals known up front and exact, decimal units, updates while
zstd works, and a plain line per stage on a terminal with no room for a bar."""

from __future__ import annotations

import fcntl
import gzip
import io
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import zstandard

from bundler.bundleformat import compress
from bundler.commands.build import BuildOptions, build
from bundler.progress import Progress
from tests.cli_helpers import build_args
from tests.conftest import REFS


class Recording(Progress):
    """Bars drawn into a buffer, kept for the test to read."""

    def __init__(self):
        super().__init__(True, io.StringIO())
        self.bars = []

    def bar(self, description, total=None, line=None):
        bar = super().bar(description, total, line)
        self.bars.append(bar)
        return bar


def _options(fixture, tmp: Path, out: str, layers: str, cache: Path) -> BuildOptions:
    images = tmp / "images.txt"
    images.write_text("".join(f"{r}\n" for r in REFS))
    return BuildOptions(images=str(images), output_dir=str(tmp / out), layers=layers,
                        registries=str(fixture.registries_yaml(tmp)), default_endpoint=False,
                        cache_dir=str(cache))


def _layers(fixture) -> dict[str, tuple[int, int]]:
    """diff_id -> (blob size, uncompressed size) of every distinct layer of REFS."""
    out = {}
    for ref in ("docker.io/rancher/multilist:v1", "docker.io/rancher/ociindex:v1",
                "docker.io/library/busybox:1.36.1"):
        img = fixture.images[ref]
        for (blob, media), diff_id in zip(img.layers, img.diff_ids, strict=True):
            plain = gzip.decompress(blob) if "gzip" in media else \
                zstandard.ZstdDecompressor().stream_reader(io.BytesIO(blob)).read()
            out[diff_id] = (len(blob), len(plain))
    return out


def _by_name(progress: Recording) -> dict:
    return {b.description: b for b in progress.bars}


def test_totals_are_known_up_front_and_exact(fixture_registry, tmp_path):
    layers = _layers(fixture_registry)
    blob_sizes = sum(b for b, _ in layers.values())

    # Compact, cold: the uncompressed sizes are unknown until pulled, so the compress bar
    # counts the bytes it compresses without a total, and gets it (exact) once the last layer
    # is reached; the pull bar's total is set before the first byte and ends exact.
    cold = Recording()
    build(_options(fixture_registry, tmp_path, "u", "uncompressed", tmp_path / "cache"), cold)
    bars = _by_name(cold)
    assert set(bars) == {"pull", "compress"}
    assert bars["pull"].initial_total == bars["pull"].total == bars["pull"].n == blob_sizes
    plain = sum(u for _, u in layers.values())
    assert bars["compress"].initial_total is None
    assert bars["compress"].total == bars["compress"].n == plain

    # Compact again with every layer staged: the compress bar counts the real bytes.
    warm = Recording()
    build(_options(fixture_registry, tmp_path, "u2", "uncompressed", tmp_path / "cache"), warm)
    bars = _by_name(warm)
    assert bars["pull"].initial_total == bars["pull"].n == 0
    assert bars["compress"].initial_total == bars["compress"].n == plain

    # Preserve, cold: the pull bar counts blobs, the compress bar the whole tar.
    preserve = Recording()
    build(_options(fixture_registry, tmp_path, "p", "preserve", tmp_path / "cache-p"), preserve)
    bars = _by_name(preserve)
    assert bars["pull"].initial_total == bars["pull"].n == blob_sizes
    tar = zstandard.ZstdDecompressor().stream_reader(
        open(tmp_path / "p" / "k3s-airgap-images-multus-amd64.tar.zst", "rb")).read()
    assert bars["compress"].initial_total == bars["compress"].n == len(tar)


def _run_on_pty(argv: list[str], columns: int) -> tuple[int, str]:
    """Run with stderr on a pty of `columns` columns; its output, as the terminal got it."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = {**os.environ, "XDG_CACHE_HOME": str(Path(argv[argv.index("--output-dir") + 1]))}
    proc = subprocess.Popen([sys.executable, "-m", "bundler", *argv], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=slave, env=env)
    os.close(slave)
    out = bytearray()
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed its end
            break
        if not data:
            break
        out += data
    os.close(master)
    return proc.wait(timeout=300), out.decode("utf-8", "replace")


# A bar's name may be followed by what it works on ("pull big:v1 (+1)").
_DRAW = re.compile(r"(pull|compress)(?: [^|\r]*?)?: +(\d+)%\|[^|]*\| ([\d.]+[kMG]?B)/"
                   r"([\d.]+[kMG]?B) \[[^,\]]*, ([^\]]+)\]")
# A bar whose total is not known yet: the count, the time, the rate.
_COUNTING = re.compile(r"\r(compress): ([\d.]+[kMG]?B) \[[\d:]+, ([^\]]+)\]")


def test_bars_on_a_terminal_never_go_back(fixture_registry, tmp_path):
    from tqdm import tqdm

    args = build_args(fixture_registry, tmp_path, REFS + ["rancher/big:v1"], "--layers",
                      "uncompressed", cache=False)
    big = fixture_registry.images["docker.io/rancher/big:v1"]
    blobs = sum(b for b, _ in _layers(fixture_registry).values()) + len(big.layers[0][0])
    plain = sum(u for _, u in _layers(fixture_registry).values()) + len(big.layers[0][0])
    args.remove("--quiet")
    code, out = _run_on_pty([*args, "--no-cache"], columns=120)
    assert code == 0, out
    draws: dict[str, list[tuple[int, str, str, str]]] = {}
    for name, pct, n, total, rate in _DRAW.findall(out):
        draws.setdefault(name, []).append((int(pct), n, total, rate))
    assert set(draws) == {"pull", "compress"}, out[:2000]
    for name, seen in draws.items():
        assert len({total for _, _, total, _ in seen}) == 1, (name, seen)  # never re-totalled
        pcts = [p for p, *_ in seen]
        assert pcts == sorted(pcts), (name, pcts)  # never goes back
        assert seen[-1][0] == 100 and seen[-1][1] == seen[-1][2], (name, seen[-1])
        # Pull counts blobs as stored, compress the layers it compresses, uncompressed (its
        # total shown once known), in decimal MB.
        want = blobs if name == "pull" else plain
        assert seen[0][2] == tqdm.format_sizeof(want, "B", 1000), (seen[0], want)
        # Decimal units everywhere, the unit on every number.
        assert all(rate.endswith("B/s") and "iB" not in rate for *_, rate in seen)
    assert "iB" not in out
    # Until its total is known the compress bar counts bytes, with their rate.
    counting = _COUNTING.findall(out)
    assert counting and all(rate.endswith("B/s") for *_, rate in counting), out[-2000:]
    # The pull bar names the images it pulls.
    assert re.search(r"\rpull (big:v1|multilist:v1|ociindex:v1|busybox:1\.36\.1)", out), \
        out[:2000]


def test_zero_column_pty_gets_a_line_per_stage(fixture_registry, tmp_path):
    args = build_args(fixture_registry, tmp_path, REFS, "--layers", "uncompressed", cache=False)
    args.remove("--quiet")
    code, out = _run_on_pty([*args, "--no-cache"], columns=0)
    assert code == 0, out
    lines = out.replace("\r\n", "\n").splitlines()
    assert "\r" not in out.replace("\r\n", "")  # no bar redraws
    assert lines[0] == "bundler: pulling 3 images"
    assert re.fullmatch(r"bundler: downloading [\d.]+ MB of layers", lines[1]), lines
    assert re.fullmatch(r"bundler: compressing [\d.]+ MB of layers \(.*\)", lines[2]), lines
    assert lines[3].startswith("wrote ") and len(lines) == 4, lines


class _Bytes:
    def __init__(self, data: bytes):
        self.key, self.size, self._data = "test", len(data), data

    def chunks(self):
        for i in range(0, len(self._data), 1 << 20):
            yield self._data[i:i + (1 << 20)]


def test_compression_reports_while_zstd_works():
    """Bytes handed to zstd come back as progress only as its workers get through them: a
    bar fed when data is handed in sat still for whole jobs (about 6 s at level 16)."""
    data = Path("/usr/bin/containerd").read_bytes()[:8 << 20]  # a real binary: zstd is slow
    heard: list[tuple[float, int]] = []
    start = time.monotonic()
    compress.compress_frame([_Bytes(data)], 16, io.BytesIO(),
                            lambda n: heard.append((time.monotonic(), n)))
    end = time.monotonic()
    assert sum(n for _, n in heard) == len(data)
    times = [start] + [t for t, _ in heard] + [end]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    # Every PROGRESS_INTERVAL while zstd's counters move (a 512 KiB step of a worker); the
    # bound is loose for a loaded machine. Measured: at most 1.0 s, about 0.25 s typical.
    assert max(gaps) < 2.0, [round(g, 2) for g in gaps]


def _drawn(progress: Progress) -> str:
    return progress.stream.getvalue()


def test_a_bars_clock_starts_with_its_first_byte():
    """A stage that waits for another (compression waits for the pull) shows the time and
    rate of its own work, not an hour of waiting at a few kB/s."""
    progress = Progress(True, io.StringIO())
    for total in (None, 10 << 20):
        bar = progress.bar("compress")
        bar.start(total)
        time.sleep(1.2)
        bar.update(5 << 20)
        bar.refresh()
        last = _drawn(progress).rsplit("\r", 1)[-1]
        assert "[00:00" in last, last  # not 00:01: the wait is not counted
        bar.close()


def test_a_bar_without_a_total_counts_until_it_gets_one():
    progress = Progress(True, io.StringIO())
    bar = progress.bar("compress")
    bar.start(None)
    bar.update(3_000_000)
    bar.refresh()
    assert re.search(r"compress: 3\.00MB \[00:00, [^\]]*B/s\]$", _drawn(progress))
    bar.set_total(6_000_000)
    bar.update(1_000_000)
    bar.refresh()
    assert re.search(r"compress:  67%\|[^|]*\| 4\.00MB/6\.00MB \[", _drawn(progress))
    bar.set_total(1)  # set once: never re-totalled
    assert bar.total == 6_000_000
    bar.close()


def test_the_pull_bar_names_the_image_read_longest():
    from bundler.progress import CountingReader

    progress = Progress(True, io.StringIO())
    bar = progress.bar("pull", 300)
    feed = bar.feed()
    first = CountingReader(io.BytesIO(b"a" * 100), feed,
                           "docker.io/rancher/x:v1: layer 0 (sha256:1)")
    second = CountingReader(io.BytesIO(b"b" * 100), feed,
                            "quay.io/y@sha256:" + "0" * 64 + ": layer 1 (sha256:2)")
    first.read(10)
    bar.refresh()
    assert _drawn(progress).rsplit("\r", 1)[-1].startswith("pull x:v1:")
    second.read(10)
    bar.refresh()
    assert _drawn(progress).rsplit("\r", 1)[-1].startswith("pull x:v1 (+1):")
    while first.read(50):
        pass
    bar.refresh()
    assert _drawn(progress).rsplit("\r", 1)[-1].startswith("pull y:")
    second.close()
    bar.refresh()
    assert _drawn(progress).rsplit("\r", 1)[-1].startswith("pull:")
    bar.close()
