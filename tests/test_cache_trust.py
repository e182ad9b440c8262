"""A cache is untrusted input: whoever can write it must not be able to change what build
writes and signs. Entries that are not what this run would have produced from content it
checked are dropped and made again; a cache others may write is refused; and the file build
wrote is read back and verified before anything vouches for it."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import threading
from pathlib import Path

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bundler import mutate
from bundler.bundleformat import archive, compress
from bundler.commands import build
from bundler.sinks.bundle import SelfCheckFailed
from tests.cli_helpers import assert_one_line_error, build_args, bundler
from tests.conftest import BUNDLE, REFS, STEM
from tests.servers import write_registries_yaml

OUTPUTS = [BUNDLE, f"{STEM}.txt", f"{STEM}.manifest.json", "sha256sum-amd64.txt"]
MAGIC = b"bundler-frame-2\n"


def _build(fixture, tmp: Path, out: str, *extra: str, cache: Path | None = None):
    args = build_args(fixture, tmp, REFS, *extra, out=out, cache=cache is None)
    if cache is not None:
        args += ["--cache-dir", str(cache)]
    return bundler(*args)


def _plain(entry: Path) -> bytes:
    data = entry.read_bytes()
    assert data.startswith(MAGIC)
    return zstandard.ZstdDecompressor().decompressobj().decompress(data[len(MAGIC):])


def _metadata_entry(cache: Path) -> Path:
    for entry in (cache / "frames").iterdir():
        if _plain(entry)[:10] == archive.OCI_LAYOUT.encode():
            return entry
    raise AssertionError("no metadata frame in the cache")


@pytest.mark.parametrize("mode", [mutate.PRESERVE, mutate.UNCOMPRESSED])
def test_a_planted_metadata_frame_naming_another_image_is_not_used(fixture_registry, tmp_path,
                                                                    mode):
    # The attack: a frame keyed as this build's metadata, whose index.json gives the genuine
    # names to other manifests, compressed exactly as build compresses it (header, level,
    # window), so only its content betrays it.
    assert _build(fixture_registry, tmp_path, "clean", "--layers", mode).code == 0
    cache = tmp_path / "cache"
    entry = _metadata_entry(cache)
    plain = _plain(entry)
    index = json.loads(_member(plain, archive.INDEX))
    digests = [m["digest"] for m in index["manifests"]]
    assert len(set(digests)) > 1
    swapped = plain
    for a, b in zip(digests, digests[1:] + digests[:1], strict=True):
        swapped = swapped.replace(a.encode(), b"@" + b.encode()[1:])
    swapped = swapped.replace(b"@ha256:", b"sha256:")
    assert swapped != plain and len(swapped) == len(plain)
    level = compress.DEFAULT_LEVEL
    out = io.BytesIO()
    compress.compress_frame([_Bytes(swapped)], level, out, size=len(swapped))
    assert out.getvalue()[:6] == compress.frame_header(
        compress.FrameGroup((_Bytes(swapped),), level))
    entry.write_bytes(MAGIC + out.getvalue())

    run = _build(fixture_registry, tmp_path, "again", "--layers", mode)
    assert run.code == 0, run.stderr
    assert "dropped it" in run.stderr
    for name in OUTPUTS:
        assert (tmp_path / "clean" / name).read_bytes() == (tmp_path / "again" / name).read_bytes()
    assert _plain(entry) == plain  # the genuine frame took its place


def test_a_tampered_cached_manifest_is_fetched_again(fixture_registry, front, tmp_path):
    # Fetched again: the entry hashes to its name afterwards, and the bundle is the same.
    yaml = write_registries_yaml(tmp_path / "front.yaml", {"docker.io": [front.url]})
    args = build_args(fixture_registry, tmp_path, REFS, registries=yaml)
    args[args.index("--output-dir") + 1] = str(tmp_path / "clean")
    assert bundler(*args).code == 0
    blobs = tmp_path / "cache" / "blobs" / "sha256"
    manifest = next(p for p in sorted(blobs.iterdir()) if "layers" in _json(p))
    # Still a valid manifest, one layer size off: used as it is, it changes the bundle.
    doc = _json(manifest)
    doc["layers"][0]["size"] += 1
    manifest.write_bytes(json.dumps(doc).encode())
    for frame in (tmp_path / "cache" / "frames").iterdir():
        frame.unlink()
    args[args.index("--output-dir") + 1] = str(tmp_path / "again")
    run = bundler(*args)
    assert run.code == 0, run.stderr
    assert hashlib.sha256(manifest.read_bytes()).hexdigest() == manifest.name
    for name in OUTPUTS:
        assert (tmp_path / "clean" / name).read_bytes() == (tmp_path / "again" / name).read_bytes()


def test_a_new_cache_is_private(fixture_registry, tmp_path):
    assert _build(fixture_registry, tmp_path, "dist").code == 0
    cache = tmp_path / "cache"
    for path in [cache, *cache.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        if path.is_dir():
            assert mode == 0o700, (path, oct(mode))
        elif path.name != "challenges.json":
            assert mode == 0o600, (path, oct(mode))


def test_subdirectories_an_older_bundler_left_open_are_closed(fixture_registry, tmp_path):
    cache = tmp_path / "cache"
    assert _build(fixture_registry, tmp_path, "a").code == 0
    for sub in ("blobs", "blobs/sha256", "frames"):
        (cache / sub).chmod(0o755)
    assert _build(fixture_registry, tmp_path, "b").code == 0
    for sub in ("blobs", "blobs/sha256", "frames"):
        assert stat.S_IMODE((cache / sub).stat().st_mode) == 0o700


@pytest.mark.parametrize("mode,says", [(0o770, "writable by group (mode 0770)"),
                                       (0o707, "writable by others (mode 0707)"),
                                       (0o777, "writable by group and others (mode 0777)")])
def test_a_cache_others_may_write_is_refused_before_any_download(fixture_registry, front,
                                                                 tmp_path, mode, says):
    cache = tmp_path / "shared"
    cache.mkdir()
    cache.chmod(mode)
    yaml = write_registries_yaml(tmp_path / "front.yaml", {"docker.io": [front.url]})
    args = build_args(fixture_registry, tmp_path, REFS, registries=yaml, cache=False)
    run = bundler(*args, "--cache-dir", str(cache))
    assert run.code == 3
    assert_one_line_error(run, f"cache directory {cache}: {says}",
                          "choose another with --cache-dir, or --no-cache")
    assert front.requests == []
    assert not (tmp_path / "dist").exists()
    assert list(cache.iterdir()) == []


@pytest.mark.parametrize("sub", ["", "frames", "blobs/sha256"])
def test_a_cache_another_user_owns_is_refused(fixture_registry, tmp_path, sub):
    if os.geteuid() != 0:
        pytest.skip("needs root to give a directory to another user")
    cache = tmp_path / "cache"
    (cache / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chown(cache / sub, 65534, 65534)
    run = _build(fixture_registry, tmp_path, "dist")
    assert run.code == 3
    assert_one_line_error(run, f"cache directory {(cache / sub)}: owned by another user "
                               "(uid 65534)")
    assert not (tmp_path / "dist").exists()


def _json(path: Path) -> dict:
    try:
        doc = json.loads(path.read_bytes())
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


@pytest.mark.parametrize("kind", ["fifo", "symlink to a fifo", "symlink to /dev/zero"])
def test_a_cache_entry_that_is_not_a_regular_file_is_replaced(fixture_registry, tmp_path,
                                                               kind):
    # A FIFO can answer the read that checks an entry one way and the read that uses it
    # another, or never; a symlink can point anywhere. Neither is opened: fetched again.
    assert _build(fixture_registry, tmp_path, "clean").code == 0
    blobs = tmp_path / "cache" / "blobs" / "sha256"
    victims = [p for p in sorted(blobs.iterdir()) if "layers" in _json(p)]
    for victim in victims:
        victim.unlink()
        if kind == "fifo":
            os.mkfifo(victim)
        elif kind == "symlink to a fifo":
            os.mkfifo(tmp_path / f"fifo-{victim.name}")
            victim.symlink_to(tmp_path / f"fifo-{victim.name}")
        else:
            victim.symlink_to("/dev/zero")
    for frame in (tmp_path / "cache" / "frames").iterdir():
        frame.unlink()
    args = build_args(fixture_registry, tmp_path, REFS, out="again")
    run = bundler(*args, timeout=120)
    assert run.code == 0, run.stderr
    for name in OUTPUTS:
        assert (tmp_path / "clean" / name).read_bytes() == (tmp_path / "again" / name).read_bytes()
    assert all(v.is_file() and not v.is_symlink() for v in victims)


@pytest.mark.parametrize("blocks", [1, 10_000])
def test_a_frame_padded_with_empty_blocks_is_not_used(fixture_registry, tmp_path, blocks):
    # Empty raw blocks decode to nothing: the content is right, the bundle's bytes are not
    # (and past zstd's bound the entry is not even walked).
    assert _build(fixture_registry, tmp_path, "clean").code == 0
    entry = _metadata_entry(tmp_path / "cache")
    frame = entry.read_bytes()[len(MAGIC):]
    padded = frame[:6] + bytes(3) * blocks + frame[6:]
    assert zstandard.ZstdDecompressor().decompressobj().decompress(padded) == _plain(entry)
    entry.write_bytes(MAGIC + padded)
    run = _build(fixture_registry, tmp_path, "again")
    assert run.code == 0, run.stderr
    assert "dropped it" in run.stderr
    for name in OUTPUTS:
        assert (tmp_path / "clean" / name).read_bytes() == (tmp_path / "again" / name).read_bytes()


@pytest.mark.parametrize("sub", ["frames", "blobs", "blobs/sha256"])
def test_a_cache_subdirectory_that_is_a_symlink_is_refused(fixture_registry, tmp_path, sub):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o755)
    elsewhere.chmod(0o755)
    (tmp_path / "cache" / sub).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    (tmp_path / "cache" / sub).symlink_to(elsewhere)
    run = _build(fixture_registry, tmp_path, "dist")
    assert_one_line_error(run, f"cache directory {tmp_path / 'cache' / sub}: a symbolic link")
    assert run.code == 3
    assert stat.S_IMODE(elsewhere.stat().st_mode) == 0o755 and list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("mode,owner,says", [
    (0o777, None, "writable by group and others (mode 0777), who could replace the cache"),
    (0o775, None, "writable by group (mode 0775), who could replace the cache"),
    (0o755, 65534, "owned by another user (uid 65534), who could replace the cache"),
    (0o1777, None, None),  # sticky, as /tmp: no one else can rename what is ours
])
def test_a_cache_whose_parent_others_control_is_refused(fixture_registry, front, tmp_path,
                                                        mode, owner, says):
    if owner is not None and os.geteuid() != 0:
        pytest.skip("needs root to give a directory to another user")
    parent = tmp_path / "parent"
    parent.mkdir()
    parent.chmod(mode)
    if owner is not None:
        os.chown(parent, owner, owner)
    yaml = write_registries_yaml(tmp_path / "front.yaml", {"docker.io": [front.url]})
    args = build_args(fixture_registry, tmp_path, REFS, registries=yaml, cache=False)
    for cache in (parent / "cache", tmp_path / "link"):
        if cache.name == "link":
            cache.symlink_to(parent / "cache")  # the same, reached through a symlink
        run = bundler(*args, "--cache-dir", str(cache))
        if says is None:
            assert run.code == 0, run.stderr
            continue
        assert_one_line_error(run, f"cache directory {cache}: its parent {parent} is {says}")
        assert run.code == 3
        assert front.requests == []


class _Bytes:
    def __init__(self, data: bytes):
        self.key, self.size, self.head, self.digest, self.padding = "k", len(data), data, None, 0
        self._data = data

    def chunks(self):
        yield self._data


def _member(plain: bytes, name: str) -> bytes:
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(plain + bytes(1024))) as tar:
        return tar.extractfile(name).read()


# -- the property: a damaged or swapped entry gives the clean bundle, or one line and nothing --


@pytest.fixture(scope="module")
def pristine(fixture_registry, tmp_path_factory) -> dict:
    """For each layer mode: a cache one build filled, and the bundle that build wrote."""
    found = {}
    for mode in (mutate.PRESERVE, mutate.UNCOMPRESSED):
        tmp = tmp_path_factory.mktemp(f"pristine-{mode}")
        run = _build(fixture_registry, tmp, "clean", "--layers", mode)
        assert run.code == 0, run.stderr
        entries = sorted(p.relative_to(tmp / "cache") for p in (tmp / "cache").rglob("*")
                         if p.is_file() and p.name != "challenges.json")
        found[mode] = {"cache": tmp / "cache", "entries": entries,
                       "outputs": {n: (tmp / "clean" / n).read_bytes() for n in OUTPUTS}}
    return found


_damage = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10_000), st.floats(0, 1, exclude_max=True),
              st.integers(1, 255)),
    st.tuples(st.just("swap"), st.integers(0, 10_000), st.integers(0, 10_000)),
)


@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mode=st.sampled_from([mutate.PRESERVE, mutate.UNCOMPRESSED]), damage=_damage)
def test_any_damaged_or_swapped_entry_gives_the_clean_bundle_or_nothing(
        fixture_registry, pristine, tmp_path_factory, mode, damage):
    clean = pristine[mode]
    tmp = tmp_path_factory.mktemp("damaged")
    cache = tmp / "cache"
    shutil.copytree(clean["cache"], cache)
    entries = clean["entries"]
    victim = cache / entries[damage[1] % len(entries)]
    if damage[0] == "flip":
        data = bytearray(victim.read_bytes())
        data[int(damage[2] * len(data))] ^= damage[3]
        victim.write_bytes(bytes(data))
    else:
        # Another valid entry of the same kind under this one's name.
        kind = [e for e in entries if e.parent == victim.relative_to(cache).parent]
        donor = cache / kind[damage[2] % len(kind)]
        victim.write_bytes(donor.read_bytes())
    run = _build(fixture_registry, tmp, "out", "--layers", mode, cache=cache)
    out = tmp / "out"
    if run.code == 0:
        for name, data in clean["outputs"].items():
            assert (out / name).read_bytes() == data, (damage, victim, name)
    else:
        assert_one_line_error(run)
        assert not out.exists() or list(out.iterdir()) == []


# -- the self-check: build never vouches for bytes it did not read back --


def test_a_bundle_that_fails_verification_as_written_is_not_vouched_for(
        fixture_registry, tmp_path, monkeypatch):
    # A writer bug: index.json leaves out the last image. Everything pulled was right; the
    # file written is not what the checksum manifest describes.
    key = tmp_path / "key.pem"
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    original = archive.index_json

    def forgetful(images):
        return original(images[:-1])

    monkeypatch.setattr(archive, "index_json", forgetful)
    threads = threading.active_count()
    images = tmp_path / "images.txt"
    images.write_text("".join(f"{r}\n" for r in REFS))
    opts = build.BuildOptions(images=str(images), output_dir=str(tmp_path / "dist"),
                               registries=str(fixture_registry.registries_yaml(tmp_path)),
                               default_endpoint=False, cache_dir=None, sign_key=str(key),
                               sbom=True)
    with pytest.raises(SelfCheckFailed) as e:
        build.build(opts)
    assert threading.active_count() == threads  # the checking thread ended too
    assert str(e.value).startswith(f"{BUNDLE}: the bundle just written fails verification: ")
    assert str(e.value).endswith("; nothing was kept")
    assert not (tmp_path / "dist").exists()
    monkeypatch.setattr(archive, "index_json", original)
    build.build(opts)
    assert sorted(p.name for p in (tmp_path / "dist").iterdir()) == sorted(
        [*OUTPUTS, f"{STEM}.manifest.json.sig", f"{STEM}.spdx.json"])
