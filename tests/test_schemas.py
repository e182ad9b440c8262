"""schemas/ describes what each command prints with --json, the checksum manifest and the parts
list: every document here comes from the real command, run against the fixture registry and
the tests' containerd. Every object in each is closed: a field added anywhere in an output
without its schema fails here (check_closed)."""

from __future__ import annotations

import copy
import functools
import json
import shutil
from pathlib import Path

import jsonschema
import pytest
from referencing import Registry as Schemas
from referencing import Resource

from tests.cli_helpers import build_args, bundler
from tests.conftest import BUNDLE, REFS, STEM
from tests.k3swatcher import Watcher
from tests.servers import Registry
from tests.test_signing import keypair

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "schemas"
NAMES = ("build", "verify", "inspect", "place", "push", "manifest", "status", "split", "join",
         "parts", "delta", "patch")
LIST = BUNDLE + ".parts.json"


@functools.cache
def _validator(name: str) -> jsonschema.Draft202012Validator:
    schemas = Schemas().with_resources(
        (p.name, Resource.from_contents(json.loads(p.read_text())))
        for p in SCHEMAS.glob("*.schema.json"))
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    return jsonschema.Draft202012Validator(schema, registry=schemas)


def _errors(name: str, document: object) -> list[str]:
    return [f"{list(e.absolute_path)}: {e.message}"
            for e in _validator(name).iter_errors(document)]


def validate(name: str, document: object) -> None:
    errors = _errors(name, document)
    assert not errors, f"{name}: " + "\n".join(errors)


def _objects(document: object, path: tuple = ()) -> list[tuple]:
    """The path of every object in `document` (of a list, its first item's only)."""
    if isinstance(document, dict):
        return [path] + [p for k, v in document.items() for p in _objects(v, path + (k,))]
    if isinstance(document, list) and document:
        return _objects(document[0], path + (0,))
    return []


def check_closed(name: str, document: object) -> None:
    """`document` is valid, and invalid with a field added to any one of its objects."""
    validate(name, document)
    for path in _objects(document):
        changed = copy.deepcopy(document)
        target = changed
        for key in path:
            target = target[key]
        target["unexpected"] = 1
        assert _errors(name, changed), f"{name}: a field added at {list(path)} is not refused"


def _json(*args: str, code: int = 0, **kwargs) -> object:
    run = bundler(*args, **kwargs)
    assert run.code == code, run.stdout + run.stderr
    return json.loads(run.stdout)


@pytest.fixture(scope="module")
def multi(fixture_registry, tmp_path_factory) -> tuple[object, Path]:
    """build --json of two architectures, compact, and the directory it wrote."""
    tmp = tmp_path_factory.mktemp("multi")
    doc = _json(*build_args(fixture_registry, tmp, REFS[:2], "--json", "--arch", "amd64,arm64",
                            "--layers", "uncompressed"))
    return doc, tmp / "dist"


def test_every_schema_is_a_valid_schema():
    assert sorted(p.name for p in SCHEMAS.glob("*.schema.json")) == sorted(
        f"{n}.schema.json" for n in NAMES)
    for name in NAMES:
        jsonschema.Draft202012Validator.check_schema(
            json.loads((SCHEMAS / f"{name}.schema.json").read_text()))


def test_build_and_its_manifest(fixture_registry, multi, tmp_path):
    single = _json(*build_args(fixture_registry, tmp_path, REFS, "--json", "--sbom"),
                   env={"SOURCE_DATE_EPOCH": "1785000000"})
    check_closed("build", single)
    assert single["sourceDateEpoch"] == 1785000000
    manifest = json.loads((tmp_path / "dist" / f"{STEM}.manifest.json").read_text())
    check_closed("manifest", manifest)
    several, dist = multi
    check_closed("build", several)
    assert len(several["bundles"]) == 2
    for one in several["bundles"]:
        stem = Path(one["files"][0]).name.removesuffix(".tar.zst")
        validate("manifest", json.loads((dist / f"{stem}.manifest.json").read_text()))


def test_a_manifest_with_an_unknown_field_is_refused(builds):
    manifest = json.loads((builds["p1"] / f"{STEM}.manifest.json").read_text())
    with pytest.raises(AssertionError, match="Additional|Unevaluated"):
        validate("manifest", {**manifest, "extra": 1})
    with pytest.raises(AssertionError, match="does not match"):
        validate("manifest", {**manifest, "bundle": {**manifest["bundle"], "sha256": "x"}})


@pytest.mark.parametrize("build", ["p1", "u1"])
def test_verify_inspect_and_place(builds, build, tmp_path):
    bundle = builds[build] / BUNDLE
    check_closed("verify", _json("verify", str(bundle), "--json"))
    check_closed("inspect", _json("inspect", str(bundle), "--json"))
    check_closed("inspect", _json("inspect", str(bundle), "--json", "--sizes"))
    images = tmp_path / "images"
    check_closed("place", _json("place", str(bundle), "--images-dir", str(images), "--dry-run",
                                "--json"))
    for action in ("placed", "unchanged"):
        done = _json("place", str(bundle), "--images-dir", str(images), "--json")
        check_closed("place", done)
        assert done["action"] == action


def test_verify_of_a_bundle_that_fails_or_warns(builds, tmp_path):
    bundle = tmp_path / BUNDLE
    shutil.copy(builds["p1"] / BUNDLE, bundle)
    with bundle.open("r+b") as f:
        f.seek(-10, 2)
        f.write(b"\0" * 10)
    report = _json("verify", str(bundle), "--json", code=1)
    check_closed("verify", report)
    assert report["problems"] and not report["ok"]
    with pytest.raises(AssertionError, match="expected to be empty"):
        validate("verify", {**report, "ok": True})
    other = tmp_path / "not-zstd.tar.zst"
    other.write_bytes(b"plain text\n")
    validate("verify", _json("verify", str(other), "--json", code=1))
    renamed = tmp_path / "renamed.tar.gz"
    shutil.copy(builds["p1"] / BUNDLE, renamed)
    report = _json("verify", str(renamed), "--json")
    check_closed("verify", report)
    assert report["ok"] and report["warnings"]


def test_verify_with_a_key_names_it(fixture_registry, tmp_path):
    key, pub = keypair(tmp_path)
    run = bundler(*build_args(fixture_registry, tmp_path, REFS[2:], "--sign-key", str(key)))
    assert run.code == 0, run.stderr
    bundle = tmp_path / "dist" / BUNDLE
    report = _json("verify", str(bundle), "--key", str(pub), "--json")
    check_closed("verify", report)
    assert report["signedBy"]["key"] == str(pub)
    with pytest.raises(AssertionError, match="signedBy"):
        validate("verify", {**report, "signedBy": {**report["signedBy"], "fingerprint": "x"}})


def test_split_join_and_a_parts_list(builds, tmp_path):
    out = tmp_path / "parts"
    listed = _json("split", str(builds["p1"] / BUNDLE), "--size", "100kB", "-o", str(out),
                   "--json")
    check_closed("split", listed)
    assert len(listed["parts"]) > 1
    parts_list = json.loads((out / LIST).read_text())
    check_closed("parts", parts_list)
    with pytest.raises(AssertionError, match="does not match|should be non-empty"):
        validate("parts", {**parts_list, "parts": [{**parts_list["parts"][0], "name": "a/b"}]})
    assert _json("inspect", str(out / LIST), "--json") == listed
    check_closed("inspect", listed)
    shutil.copy(builds["p1"] / f"{STEM}.manifest.json", out)
    report = _json("verify", str(out / LIST), "--json")
    check_closed("verify", report)
    assert report["ok"]
    lost = out / parts_list["parts"][1]["name"]
    lost.rename(tmp_path / "lost")
    check_closed("verify", _json("verify", str(out / LIST), "--json", code=1))
    (tmp_path / "lost").rename(lost)
    joined = _json("join", str(out / LIST), "-o", str(tmp_path / "joined"), "--json")
    check_closed("join", joined)


@pytest.mark.parametrize("build", ["p1", "u1"])
def test_delta_patch_and_inspect_of_a_delta(fixture_registry, builds, tmp_path, build):
    mode = "preserve" if build == "p1" else "uncompressed"
    run = bundler(*build_args(fixture_registry, tmp_path, REFS[:2], "--layers", mode,
                              out="base"))
    assert run.code == 0, run.stderr
    base, delta = tmp_path / "base" / BUNDLE, tmp_path / "update.delta"
    made = _json("delta", str(builds[build] / BUNDLE), "--base", str(base), "-o", str(delta),
                 "--json")
    check_closed("delta", made)
    assert made["layers"] == mode and (made["recompressed"] is None) == (mode == "preserve")
    described = _json("inspect", str(delta), "--json")
    check_closed("inspect", described)
    assert described == made
    rebuilt = _json("patch", str(base), str(delta), "-o", str(tmp_path / "site"), "--json")
    check_closed("patch", rebuilt)
    assert rebuilt["file"] == str(tmp_path / "site" / BUNDLE)


def test_push(builds, multi, tmp_path):
    registry = Registry(tmp_path / "registry").start()
    try:
        bundle = str(builds["p1"] / BUNDLE)
        first = _json("push", bundle, "--to", registry.host, "--json")
        check_closed("push", first)
        assert first["verified"] and first["images"]
        again = _json("push", bundle, "--to", f"{registry.host}/mirror", "--json")
        validate("push", again)
        validate("push", _json("push", bundle, "--to", registry.host, "--json"))
        # Another amd64 manifest under the same tags: replaced with --force, and said.
        forced = _json("push", str(builds["u1"] / BUNDLE), "--to", registry.host, "--force",
                       "--json")
        check_closed("push", forced)
        assert forced["replaced"]
        # Both architectures under one tag: an index.
        _, dist = multi
        both = _json("push", *(str(p) for p in sorted(dist.glob("*.tar.zst"))), "--to",
                     f"{registry.host}/multi", "--json")
        check_closed("push", both)
        assert all(i["indexDigest"] for i in both["images"])
    finally:
        registry.stop()


def test_status(builds, clean_containerd):
    ctrd = clean_containerd
    assert ctrd.import_bundle(builds["p1"] / BUNDLE).returncode == 0
    ctrd.ctr("images", "rm", "--sync", "docker.io/rancher/ociindex:v1", check=True)
    seen = set()
    for build, code in (("p1", 1), ("u1", 1)):
        report = _json("status", str(builds[build] / BUNDLE), "--containerd-socket",
                       str(ctrd.socket), "--json", code=code)
        check_closed("status", report)
        seen |= {i["state"] for i in report["images"]}
    assert seen == {"imported", "missing", "other digest"}
    with pytest.raises(AssertionError, match="'imported' was expected"):
        validate("status", {**report, "ok": True})
    assert ctrd.import_bundle(builds["p1"] / BUNDLE).returncode == 0
    check_closed("status", _json("status", str(builds["p1"] / BUNDLE), "--containerd-socket",
                                 str(ctrd.socket), "--json"))


def test_place_wait(builds, tmp_path, clean_containerd):
    bundle = builds["p1"] / BUNDLE
    late = _json("place", str(bundle), "--images-dir", str(tmp_path / "none"), "--wait", "0",
                 "--containerd-socket", str(clean_containerd.socket), "--json", code=1)
    check_closed("place", late)
    assert not late["import"]["ok"]
    images = tmp_path / "k3s" / "agent" / "images"
    images.mkdir(parents=True)
    (images / BUNDLE).write_bytes(b"\0" * bundle.stat().st_size)  # another file, same size
    with Watcher(clean_containerd, images):
        done = _json("place", str(bundle), "--images-dir", str(images), "--wait", "60",
                     "--containerd-socket", str(clean_containerd.socket), "--json")
    check_closed("place", done)
    assert done["action"] == "replaced" and done["warnings"] and done["import"]["ok"]
    assert all(i["pinned"] for i in done["import"]["images"])
    without = {k: v for k, v in done.items() if k != "import"}
    with pytest.raises(AssertionError, match="import"):
        validate("place", without)
