"""bundler push into real registries (htpasswd over TLS, token auth), read back by containerd."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import zstandard

from bundler import config
from tests import registries
from tests.cli_helpers import assert_one_line_error, bundler, read_manifest
from tests.conftest import STEM
from tests.registries import Front
from tests.servers import Registry, write_registries_yaml
from tests.tokenserver import TokenServer

USER, PASSWORD = "pusher", "pUsh-s3cret"
ACCEPT = ("application/vnd.oci.image.manifest.v1+json, "
          "application/vnd.docker.distribution.manifest.v2+json")


def _bundle(builds, name: str = "p1") -> Path:
    return builds[name] / f"{STEM}.tar.zst"


@pytest.fixture
def registry(tmp_path):
    reg = Registry(tmp_path / "reg").start()
    yield reg
    reg.stop()


@pytest.fixture
def front(registry):
    made = []

    def make(**kwargs) -> Front:
        made.append(Front(registry.url, **kwargs))
        return made[-1]

    yield make
    for f in made:
        f.stop()


@pytest.fixture
def htpasswd_registry(tmp_path):
    with registries.htpasswd_registry(tmp_path, USER, PASSWORD) as (reg, ca):
        yield reg, ca


def _yaml(tmp: Path, host: str, password: str = PASSWORD, ca: Path | None = None) -> Path:
    configs = {host: {"auth": {"username": USER, "password": password}}}
    if ca:
        configs[host]["tls"] = {"ca_file": str(ca)}
    return write_registries_yaml(tmp / "push.yaml", {}, configs)


def _digest_of(url: str, repo: str, ref: str, **kw) -> str | None:
    r = requests.head(f"{url}/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT},
                      timeout=10, **kw)
    return r.headers.get("Docker-Content-Digest") if r.status_code == 200 else None


def _hosts_dir(tmp: Path, url: str, prefix: str = "", ca: Path | None = None) -> Path:
    d = tmp / "certs.d"
    (d / "docker.io").mkdir(parents=True, exist_ok=True)
    host = f"{url}/v2/{prefix}" if prefix else url
    lines = ['server = "https://registry-1.docker.io"', f'[host."{host}"]',
             '  capabilities = ["pull", "resolve"]']
    if prefix:
        lines.append("  override_path = true")
    if ca:
        lines.append(f'  ca = "{ca}"')
    (d / "docker.io" / "hosts.toml").write_text("\n".join(lines) + "\n")
    return d


def test_push_basic_auth_then_containerd_pulls_by_name_and_digest(tmp_path, builds,
                                                                   htpasswd_registry,
                                                                   clean_containerd):
    reg, ca = htpasswd_registry
    bundle = _bundle(builds)
    run = bundler("push", str(bundle), "--to", f"https://{reg.host}/mirror", "--registries",
                  str(_yaml(tmp_path, reg.host, ca=ca)), "--print-registries")
    assert run.code == 0, run.stderr
    assert PASSWORD not in run.stdout + run.stderr
    # --print-registries, read back by bundler's own registries.yaml reader.
    (tmp_path / "k3s.yaml").write_text(run.stdout)
    parsed = config.load_registries(str(tmp_path / "k3s.yaml"))
    endpoint = parsed.endpoints("docker.io")[0]
    assert endpoint.url == reg.url
    assert endpoint.repository("rancher/multilist") == "mirror/rancher/multilist"
    assert endpoint.tls.ca_file == str(ca)

    want = {i["reference"]: i["manifestDigest"] for i in read_manifest(builds["p1"])["images"]}
    hosts = _hosts_dir(tmp_path, reg.url, "mirror", ca)
    for name, digest in want.items():
        pulled = clean_containerd.ctr("images", "pull", "--hosts-dir", str(hosts), "--user",
                                      f"{USER}:{PASSWORD}", "--snapshotter", "native", name)
        assert pulled.returncode == 0, pulled.stderr
        assert clean_containerd.images()[name]["digest"] == digest
        by_digest = f"{name.rsplit(':', 1)[0]}@{digest}"
        pulled = clean_containerd.ctr("images", "pull", "--hosts-dir", str(hosts), "--user",
                                      f"{USER}:{PASSWORD}", "--snapshotter", "native",
                                      by_digest)
        assert pulled.returncode == 0, pulled.stderr


def test_push_token_auth_compact_bundle(tmp_path, builds):
    tokens = TokenServer(tmp_path).start()
    reg = Registry(tmp_path / "tok", tokens.registry_config()).start()
    try:
        run = bundler("push", str(_bundle(builds, "u1")), "--to", reg.host, "--json")
        assert run.code == 0, run.stderr
        pushed = json.loads(run.stdout)
        token = tokens.token("repository:rancher/multilist:pull")
        auth = {"headers": {"Accept": ACCEPT, "Authorization": f"Bearer {token}"}}
        for item in read_manifest(builds["u1"])["images"]:
            ref = item["reference"].removeprefix("docker.io/")
            repo, tag = ref.rsplit(":", 1)
            token = tokens.token(f"repository:{repo}:pull")
            auth["headers"]["Authorization"] = f"Bearer {token}"
            r = requests.head(f"{reg.url}/v2/{repo}/manifests/{tag}", timeout=10, **auth)
            assert r.headers.get("Docker-Content-Digest") == item["manifestDigest"]
        assert pushed["uploaded"] > 0
        # multilist and ociindex share their base layer: sent once, mounted into the other.
        assert pushed["mounted"] >= 1
        # Push scopes were asked for.
        scopes = [q["query"].get("scope", "") for q in tokens.requests]
        # Each repository got a token that may push. (The HEADs before it get pull-only
        # tokens: auth.py asks for the scope the registry's challenge names, not ours.)
        # (distribution names the actions in either order: Go map iteration.)
        granted = {(item.rpartition(":")[0], frozenset(item.rpartition(":")[2].split(",")))
                   for s in scopes for item in s.split()}
        for repo in ("rancher/multilist", "rancher/ociindex", "library/busybox"):
            assert (f"repository:{repo}", frozenset({"pull", "push"})) in granted, (repo, scopes)
    finally:
        reg.stop()
        tokens.stop()


def test_repush_is_a_no_op(builds, registry, front):
    f = front()
    bundle = _bundle(builds)
    assert bundler("push", str(bundle), "--to", f.host).code == 0
    first = f.blob_puts()
    assert first > 0 and f.manifest_puts() == 6  # 3 by digest, 3 tags
    f.calls.clear()
    run = bundler("push", str(bundle), "--to", f.host, "--json")
    assert run.code == 0, run.stderr
    assert f.blob_puts(done=False) == 0 and f.manifest_puts() == 0
    assert not any(m in ("POST", "PATCH") for m, _, _ in f.calls)
    assert json.loads(run.stdout)["uploaded"] == 0


def _blob_heads(out_dir: Path) -> int:
    """How many (blob, repository) pairs the images of a build need: one HEAD each."""
    pairs = set()
    for item in read_manifest(out_dir)["images"]:
        repo = item["reference"].removeprefix("docker.io/").rsplit(":", 1)[0]
        pairs |= {(x["digest"], repo) for x in item["layers"]} | {(item["configDigest"], repo)}
    return len(pairs)


def test_repush_is_one_round_of_heads_at_most_jobs_at_a_time(builds, registry, front):
    """A re-push asks one HEAD per blob and repository and one per tag, nothing else, and
    they overlap (each HEAD is held 0.2 s by the front), never more than --jobs at once."""
    bundle = _bundle(builds)
    assert bundler("push", str(bundle), "--to", registry.host).code == 0
    f = front(head_delay=0.2)
    run = bundler("push", str(bundle), "--to", f.host, "--jobs", "3", "--json")
    assert run.code == 0, run.stderr
    assert json.loads(run.stdout)["verified"] is False
    assert {m for m, _, _ in f.calls} == {"HEAD"}
    images = len(read_manifest(builds["p1"])["images"])
    assert len(f.calls) == _blob_heads(builds["p1"]) + images
    assert sum("/manifests/" in p for _, p, _ in f.calls) == images  # the tags, not digests
    assert 1 < f.most_in_flight <= 3
    # Each connection is given back after its HEAD and used again, not one per request.
    assert f.connections <= 3


def _damaged_layers(builds, dst: Path) -> None:
    """The preserve bundle with a byte flipped in every layer's frame: its front and its
    manifests are intact, so only the verifying pass can tell."""
    from bundler.sources.bundle import frame_index

    src = _bundle(builds)
    frames = frame_index(src)
    data = bytearray(src.read_bytes())
    for item in read_manifest(builds["p1"])["images"]:
        for layer in item["layers"]:
            data[frames[layer["digest"]][0] + 300] ^= 0xFF
    dst.write_bytes(bytes(data))


def test_repush_reads_only_the_front_but_any_tag_to_set_needs_the_whole_pass(
        tmp_path, builds, registry):
    """Nothing to send: a damaged copy of a pushed bundle 'pushes' (nothing, verified:
    false). Once one tag points elsewhere, setting it back needs the bundle verified, and the
    damaged copy sets nothing."""
    assert bundler("push", str(_bundle(builds)), "--to", registry.host).code == 0
    bad = tmp_path / "bad" / f"{STEM}.tar.zst"
    bad.parent.mkdir()
    _damaged_layers(builds, bad)
    run = bundler("push", str(bad), "--to", registry.host, "--json")
    assert run.code == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["verified"] is False and out["uploaded"] == 0
    # Move one tag to another image's manifest (same repository, a digest it holds).
    items = read_manifest(builds["p1"])["images"]
    repo, tag = items[0]["reference"].removeprefix("docker.io/").rsplit(":", 1)
    body = requests.get(f"{registry.url}/v2/{repo}/manifests/{items[0]['manifestDigest']}",
                        headers={"Accept": ACCEPT}, timeout=10)
    requests.put(f"{registry.url}/v2/{repo}/manifests/other", data=body.content, timeout=10,
                 headers={"Content-Type": body.headers["Content-Type"]}).raise_for_status()
    other = json.loads(body.content)
    other["annotations"] = {"moved": "yes"}
    moved = json.dumps(other).encode()
    requests.put(f"{registry.url}/v2/{repo}/manifests/{tag}", data=moved, timeout=10,
                 headers={"Content-Type": body.headers["Content-Type"]}).raise_for_status()
    moved_digest = _digest_of(registry.url, repo, tag)
    assert moved_digest != items[0]["manifestDigest"]
    # Another manifest of the same platform under the tag: only --force moves it back.
    run = bundler("push", str(_bundle(builds)), "--to", registry.host)
    assert_one_line_error(run, f"tag {repo}:{tag} names manifest {moved_digest}",
                          "--force replaces it")
    assert run.code == 1
    assert _digest_of(registry.url, repo, tag) == moved_digest
    run = bundler("push", str(bad), "--to", registry.host, "--force")
    assert_one_line_error(run, str(bad), "does not verify")
    assert _digest_of(registry.url, repo, tag) == moved_digest
    run = bundler("push", str(_bundle(builds)), "--to", registry.host, "--json", "--force")
    assert run.code == 0, run.stderr
    assert json.loads(run.stdout)["verified"] is True
    assert _digest_of(registry.url, repo, tag) == items[0]["manifestDigest"]
    assert json.loads(run.stdout)["replaced"] == [
        f"{repo}:{tag} was manifest {moved_digest} (linux/amd64), becomes manifest "
        f"{items[0]['manifestDigest']} (linux/amd64)"]


def test_killed_push_completes_without_resending(builds, registry, front):
    f = front(hang_after_puts=2)
    bundle = _bundle(builds)
    proc = subprocess.Popen([sys.executable, "-m", "bundler", "push", str(bundle), "--to",
                             f.host, "--jobs", "1"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not f.hung and time.monotonic() < deadline:
        time.sleep(0.05)
    assert f.hung, "the push never reached its third upload"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = set(f.uploaded_digests())
    assert len(done) == 2
    assert _digest_of(registry.url, "rancher/multilist", "v1") is None
    f.hang_after_puts = None
    f.calls.clear()
    run = bundler("push", str(bundle), "--to", f.host)
    assert run.code == 0, run.stderr
    again = f.uploaded_digests()
    assert again and not done & set(again)
    # Neither uploaded nor mounted again: only HEADs mention the finished blobs.
    for method, path, _ in f.calls:
        if any(d.split(":")[1] in path for d in done):
            assert method == "HEAD", (method, path)
    for item in read_manifest(builds["p1"])["images"]:
        repo, tag = item["reference"].removeprefix("docker.io/").rsplit(":", 1)
        assert _digest_of(registry.url, repo, tag) == item["manifestDigest"]


def _corrupt_layer(src: Path, dst: Path, digest: str) -> None:
    """The bundle with one byte flipped inside one layer's data, recompressed."""
    with open(src, "rb") as f:
        tar = bytearray(zstandard.ZstdDecompressor().stream_reader(
            f, read_across_frames=True).read())
    name = f"blobs/sha256/{digest.split(':')[1]}".encode()
    # The member's own header: a block that starts with its name (the metadata before it
    # also mentions the name, but never at a block start).
    at = next(i for i in range(0, len(tar), 512) if tar[i:i + len(name)] == name)
    tar[at + 512 + 1000] ^= 0xFF
    dst.write_bytes(zstandard.ZstdCompressor().compress(bytes(tar)))


def test_corrupted_bundle_pushes_no_manifest(tmp_path, builds, registry):
    item = read_manifest(builds["p1"])["images"][0]
    bad = tmp_path / "bad" / f"{STEM}.tar.zst"
    bad.parent.mkdir()
    _corrupt_layer(_bundle(builds), bad, item["layers"][-1]["digest"])
    run = bundler("push", str(bad), "--to", registry.host)
    assert_one_line_error(run, str(bad), "does not verify")
    assert run.code == 1
    catalog = requests.get(f"{registry.url}/v2/_catalog", timeout=10).json()["repositories"]
    for repo in catalog:
        tags = requests.get(f"{registry.url}/v2/{repo}/tags/list", timeout=10).json()
        assert not tags.get("tags"), (repo, tags)
    for img in read_manifest(builds["p1"])["images"]:
        repo = img["reference"].removeprefix("docker.io/").rsplit(":", 1)[0]
        assert _digest_of(registry.url, repo, img["manifestDigest"]) is None


def test_wrong_password_is_one_line_without_secret(tmp_path, builds, htpasswd_registry):
    reg, ca = htpasswd_registry
    run = bundler("push", str(_bundle(builds)), "--to", f"https://{reg.host}", "--registries",
                  str(_yaml(tmp_path, reg.host, password="wrong-Secret9", ca=ca)))
    assert_one_line_error(run, reg.host, "blob sha256:")
    assert run.code == 1
    assert "wrong-Secret9" not in run.stderr


@pytest.mark.parametrize("status,fragment", [
    (403, "push refused"), (413, "too large"), (503, "503")])
def test_refusing_registry_fails_in_one_line(builds, registry, front, status, fragment):
    f = front(fault=lambda method, path: status if method in ("POST", "PUT") else None)
    run = bundler("push", str(_bundle(builds)), "--to", f.host)
    assert_one_line_error(run, f.host, fragment, "blob sha256:")
    assert run.code == 1
    assert f.manifest_puts() == 0 or all(s == status for m, p, s in f.calls if m == "PUT")


def test_bundle_source_to_registry_sink(builds, registry):
    from bundler.sinks.registry import RegistrySink, parse_target
    from bundler.sources.bundle import BundleSource

    images = BundleSource(_bundle(builds)).images()
    sink = RegistrySink(parse_target(f"{registry.host}/copy"), jobs=2)
    sink.write(images)
    for image in images:
        repo = f"copy/{image.reference.repository}"
        assert _digest_of(registry.url, repo, image.reference.tag) == image.manifest_digest


def test_chunked_upload(builds, registry):
    from bundler.registry.writer import Writer
    from bundler.sinks.registry import RegistrySink, parse_target
    from bundler.sources.bundle import BundleSource

    target = parse_target(registry.host)
    writer = Writer(target.endpoint, monolithic_max=10_000, chunk_size=7_000)
    sink = RegistrySink(target, writer=writer)
    images = BundleSource(_bundle(builds, "u1")).images()
    sink.write(images)
    assert writer.uploads > 0
    for image in images:
        assert _digest_of(registry.url, image.reference.repository,
                          image.reference.tag) == image.manifest_digest


def test_bad_target_is_a_usage_error(builds):
    run = bundler("push", str(_bundle(builds)), "--to", "ftp://x/y")
    assert_one_line_error(run, "--to")
    assert run.code == 2


def test_passing_5xx_storm_is_retried_in_new_sessions(builds, registry, front):
    posts = []

    def storm(method, path):
        if method == "POST":
            posts.append(path)
            return 503 if len(posts) <= 3 else None
        return None

    f = front(fault=storm)
    run = bundler("push", str(_bundle(builds)), "--to", f.host, "--jobs", "1")
    assert run.code == 0, run.stderr
    for item in read_manifest(builds["p1"])["images"]:
        repo, tag = item["reference"].removeprefix("docker.io/").rsplit(":", 1)
        assert _digest_of(registry.url, repo, tag) == item["manifestDigest"]


def test_print_registries_without_prefix_and_for_two_registries(tmp_path):
    from bundler import reference
    from bundler.sinks.registry import parse_target, registries_yaml

    target = parse_target("registry.example:5000")
    refs = [reference.parse("rancher/x:1"), reference.parse("quay.io/a/b:2")]
    (tmp_path / "r.yaml").write_text(registries_yaml(target, refs))
    parsed = config.load_registries(str(tmp_path / "r.yaml"))
    for registry, repo in (("docker.io", "rancher/x"), ("quay.io", "a/b")):
        endpoint = parsed.endpoints(registry)[0]
        assert endpoint.url == "https://registry.example:5000"
        assert endpoint.repository(repo) == repo


def test_plain_http_to_a_tls_registry_says_https(builds, htpasswd_registry):
    reg, _ = htpasswd_registry
    run = bundler("push", str(_bundle(builds)), "--to", reg.host)
    assert_one_line_error(run, f"--to https://{reg.host}")


def _names_swapped(src: Path, dst: Path, a: str, b: str) -> None:
    """`src` with manifest digests `a` and `b` swapped in its metadata frame (index.json):
    the tags of the two images name each other's manifests; the blobs are unchanged."""
    from bundler.bundleformat import compress

    data = src.read_bytes()
    with open(src, "rb") as f:
        second = [fr.offset for fr in compress.frames(compress.Seeking(f))][1]
    front = zstandard.ZstdDecompressor().decompressobj().decompress(data[:second])
    ha, hb = a.split(":")[1].encode(), b.split(":")[1].encode()
    assert ha in front and hb in front
    front = front.replace(ha, b"#" * 64).replace(hb, ha).replace(b"#" * 64, hb)
    dst.write_bytes(zstandard.ZstdCompressor(level=3).compress(front) + data[second:])


@pytest.mark.parametrize("how", ["rename", "in place"])
def test_a_bundle_swapped_while_push_reads_it_tags_nothing(tmp_path, builds, registry, front,
                                                           how):
    """The file at BUNDLE is replaced (renamed over, as an attacker with the directory would,
    or rewritten in place: the same inode) after push read its metadata and before verify
    read it: push used to tag the verified manifests under the first file's names (exit 0,
    tags on the wrong images). The file push took the names from and the file verify read
    are held to one sha256."""
    items = read_manifest(builds["p1"])["images"]
    work = tmp_path / "dist"
    work.mkdir()
    target = work / f"{STEM}.tar.zst"
    genuine = work / ".genuine"
    genuine.write_bytes(_bundle(builds).read_bytes())
    _names_swapped(_bundle(builds), target, items[0]["manifestDigest"],
                   items[1]["manifestDigest"])
    swapped = []

    def swap(method, path):
        if not swapped:  # the first request: the metadata has been read
            if how == "rename":
                genuine.replace(target)
            else:
                with open(target, "r+b") as out:
                    out.write(genuine.read_bytes())
                    out.truncate()
            swapped.append(path)
        return None

    f = front(fault=swap)
    run = bundler("push", str(target), "--to", f"{f.host}/mirror")
    assert swapped, run.stderr
    assert_one_line_error(run, str(target), "changed while push read it")
    assert run.code == 1
    assert f.manifest_puts() == 0
    for item in items:
        repo, tag = item["reference"].removeprefix("docker.io/").rsplit(":", 1)
        assert _digest_of(registry.url, f"mirror/{repo}", tag) is None
    # The file now there is the genuine one, and pushes.
    assert bundler("push", str(target), "--to", f"{f.host}/mirror").code == 0


def _signed_copy(builds, d: Path) -> tuple[Path, Path, Path]:
    """The p1 outputs in `d`, the checksum manifest signed; (bundle, its key, another key)."""
    import shutil

    from bundler.bundleformat import signing

    d.mkdir()
    for f in builds["p1"].iterdir():
        shutil.copy(f, d / f.name)
    keys = {}
    for name in ("key", "other"):
        subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-out", f"{name}.pem"], cwd=d, check=True,
                       capture_output=True)
        subprocess.run(["openssl", "pkey", "-in", f"{name}.pem", "-pubout", "-out",
                        f"{name}.pub"], cwd=d, check=True, capture_output=True)
        keys[name] = d / f"{name}.pub"
    manifest = d / f"{STEM}.manifest.json"
    signing.signature_path(manifest).write_bytes(
        signing.sign(manifest.read_bytes(), (d / "key.pem").read_bytes()))
    return d / f"{STEM}.tar.zst", keys["key"], keys["other"]


def test_push_with_a_key_verifies_the_signature_in_its_one_pass(tmp_path, builds, registry,
                                                                front):
    """push(key=...) checks the bundle against the signed checksum manifest in the pass
    that streams it (no window between a separate verify --key and the push); a wrong key
    pushes nothing, and with a key even a re-push verifies."""
    from bundler.bundleformat import signing
    from bundler.commands import push

    bundle, key, other = _signed_copy(builds, tmp_path / "signed")
    f = front()
    with pytest.raises(signing.SignatureInvalid) as e:
        push.push(bundle, f.host, key=other)
    assert "\n" not in str(e.value)
    assert f.blob_puts(done=False) == 0 and f.manifest_puts() == 0
    done = push.push(bundle, f.host, key=key)
    assert done.verified and done.uploaded > 0
    again = push.push(bundle, f.host, key=key)
    assert again.verified and again.uploaded == 0
    assert push.push(bundle, f.host).verified is False  # nothing asked, nothing to send
    for item in read_manifest(builds["p1"])["images"]:
        repo, tag = item["reference"].removeprefix("docker.io/").rsplit(":", 1)
        assert _digest_of(registry.url, repo, tag) == item["manifestDigest"]


def test_push_key_flag_refuses_a_bundle_signed_with_another_key(tmp_path, builds, registry):
    """The CLI passes --key on: the wrong key is one line and exit 1 with nothing pushed, the
    right one pushes and says so."""
    bundle, key, other = _signed_copy(builds, tmp_path / "signed")
    run = bundler("push", str(bundle), "--to", registry.host, "--key", str(other))
    assert_one_line_error(run)
    assert run.code == 1
    assert _digest_of(registry.url, "library/busybox", "1.36.1") is None
    run = bundler("push", str(bundle), "--to", registry.host, "--key", str(key))
    assert run.code == 0, run.stderr
    assert run.stderr.startswith("pushed 3 images to ")


def test_push_require_checksum_flag(tmp_path, builds, registry):
    import shutil

    lone = tmp_path / "alone" / f"{STEM}.tar.zst"
    lone.parent.mkdir()
    shutil.copy(_bundle(builds), lone)
    run = bundler("push", str(lone), "--to", registry.host, "--require-checksum")
    assert_one_line_error(run, "does not verify")
    assert _digest_of(registry.url, "library/busybox", "1.36.1") is None
    run = bundler("push", str(lone), "--to", registry.host, "--require-checksum",
                  "--manifest", str(builds["p1"] / f"{STEM}.manifest.json"))
    assert run.code == 0, run.stderr


def test_repush_that_sends_nothing_says_the_bundle_was_not_verified(builds, registry):
    bundle = _bundle(builds)
    assert bundler("push", str(bundle), "--to", registry.host).code == 0
    run = bundler("push", str(bundle), "--to", registry.host)
    assert run.code == 0, run.stderr
    assert run.stderr.startswith(f"nothing to push: {registry.host} already holds every "
                                 f"image of {bundle}")
    assert "read only up to its metadata" in run.stderr


def test_push_require_checksum_and_manifest_reach_verify(tmp_path, builds, registry):
    """A bundle alone (no checksum file beside it) fails require_checksum, and pushes with
    its checksum manifest given as manifest=."""
    import shutil

    from bundler.commands import push
    from bundler.errors import VerificationFailed

    lone = tmp_path / "alone" / f"{STEM}.tar.zst"
    lone.parent.mkdir()
    shutil.copy(_bundle(builds), lone)
    with pytest.raises(VerificationFailed, match="does not verify"):
        push.push(lone, registry.host, require_checksum=True)
    assert _digest_of(registry.url, "library/busybox", "1.36.1") is None
    done = push.push(lone, registry.host, require_checksum=True,
                     manifest=builds["p1"] / f"{STEM}.manifest.json")
    assert done.verified


def test_an_image_pinned_by_its_index_digest_warns_that_the_pin_will_not_resolve(
        tmp_path, builds, fixture_registry, registry):
    """images.txt `name@sha256:<index>`: the bundle holds the linux/amd64 manifest, never the
    index, so the registry cannot serve name@<index> (what containerd asks a mirror for when
    a pod pins it). push says so, one warning line per image, and pushes the manifest by its
    own digest; an image the bundle holds by its pinned digest gets no warning."""
    from tests.cli_helpers import build_args

    item = next(i for i in read_manifest(builds["p1"])["images"]
                if i["reference"] == "docker.io/rancher/multilist:v1")
    index = item["indexDigest"]
    assert index and index != item["manifestDigest"]
    pinned = f"docker.io/rancher/multilist@{index}"
    same = f"docker.io/library/busybox@{read_manifest(builds['p1'])['images'][2]['manifestDigest']}"
    assert same.startswith("docker.io/library/busybox@")
    run = bundler(*build_args(fixture_registry, tmp_path, [pinned, same]))
    assert run.code == 0, run.stderr
    bundle = tmp_path / "dist" / f"{STEM}.tar.zst"
    run = bundler("push", str(bundle), "--to", registry.host, "--json")
    assert run.code == 0, run.stderr
    warnings = [line for line in run.stderr.splitlines() if line.startswith("bundler: warning:")]
    assert len(warnings) == 1, run.stderr
    assert f"{registry.host}/rancher/multilist@{index} will not resolve" in warnings[0]
    assert item["manifestDigest"] in warnings[0]
    assert json.loads(run.stdout)["warnings"] == [warnings[0].removeprefix("bundler: warning: ")]
    assert _digest_of(registry.url, "rancher/multilist", index) is None
    assert _digest_of(registry.url, "rancher/multilist", item["manifestDigest"]) == \
        item["manifestDigest"]
