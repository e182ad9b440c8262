"""schemas/ describes what each command prints with --json, and the checksum manifest:
every output here comes from the real command, run against the fixture registry."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import pytest
from referencing import Registry as Schemas
from referencing import Resource

from tests.cli_helpers import build_args, bundler
from tests.conftest import BUNDLE, REFS, STEM
from tests.servers import Registry

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "schemas"
NAMES = ("build", "verify", "inspect", "place", "push", "manifest")


def _schemas() -> Schemas:
    return Schemas().with_resources(
        (p.name, Resource.from_contents(json.loads(p.read_text())))
        for p in SCHEMAS.glob("*.schema.json"))


def validate(name: str, document: object) -> None:
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema, registry=_schemas())
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]
    assert not errors, f"{name}: " + "\n".join(errors)


def _json(*args: str, code: int = 0, **kwargs) -> object:
    run = bundler(*args, **kwargs)
    assert run.code == code, run.stderr
    return json.loads(run.stdout)


def test_every_schema_is_a_valid_schema():
    assert sorted(p.name for p in SCHEMAS.glob("*.schema.json")) == sorted(
        f"{n}.schema.json" for n in NAMES)
    for name in NAMES:
        jsonschema.Draft202012Validator.check_schema(
            json.loads((SCHEMAS / f"{name}.schema.json").read_text()))


def test_build_and_its_manifest(fixture_registry, tmp_path):
    single = _json(*build_args(fixture_registry, tmp_path, REFS, "--json", "--sbom"),
                   env={"SOURCE_DATE_EPOCH": "1785000000"})
    validate("build", single)
    assert single["sourceDateEpoch"] == 1785000000
    manifest = json.loads((tmp_path / "dist" / f"{STEM}.manifest.json").read_text())
    validate("manifest", manifest)
    several = _json(*build_args(fixture_registry, tmp_path, REFS[:2], "--json", "--arch",
                                "amd64,arm64", "--layers", "uncompressed", out="multi"))
    validate("build", several)
    assert len(several["bundles"]) == 2
    for one in several["bundles"]:
        stem = Path(one["files"][0]).name.removesuffix(".tar.zst")
        validate("manifest", json.loads((tmp_path / "multi" / f"{stem}.manifest.json")
                                        .read_text()))


def test_a_manifest_with_an_unknown_field_is_refused(builds):
    manifest = json.loads((builds["p1"] / f"{STEM}.manifest.json").read_text())
    with pytest.raises(AssertionError, match="Additional|Unevaluated"):
        validate("manifest", {**manifest, "extra": 1})
    with pytest.raises(AssertionError, match="does not match"):
        validate("manifest", {**manifest, "bundle": {**manifest["bundle"], "sha256": "x"}})


@pytest.mark.parametrize("build", ["p1", "u1"])
def test_verify_inspect_and_place(builds, build, tmp_path):
    bundle = builds[build] / BUNDLE
    validate("verify", _json("verify", str(bundle), "--json"))
    validate("inspect", _json("inspect", str(bundle), "--json"))
    validate("inspect", _json("inspect", str(bundle), "--json", "--sizes"))
    images = tmp_path / "images"
    validate("place", _json("place", str(bundle), "--images-dir", str(images), "--dry-run",
                            "--json"))
    for action in ("placed", "unchanged"):
        done = _json("place", str(bundle), "--images-dir", str(images), "--json")
        validate("place", done)
        assert done["action"] == action


def test_verify_of_a_bundle_that_fails(builds, tmp_path):
    bundle = tmp_path / BUNDLE
    shutil.copy(builds["p1"] / BUNDLE, bundle)
    with bundle.open("r+b") as f:
        f.seek(-10, 2)
        f.write(b"\0" * 10)
    report = _json("verify", str(bundle), "--json", code=1)
    validate("verify", report)
    assert report["problems"] and not report["ok"]
    other = tmp_path / "not-zstd.tar.zst"
    other.write_bytes(b"plain text\n")
    report = _json("verify", str(other), "--json", code=1)
    validate("verify", report)


def test_push(builds, tmp_path):
    registry = Registry(tmp_path / "registry").start()
    try:
        bundle = str(builds["p1"] / BUNDLE)
        first = _json("push", bundle, "--to", registry.host, "--json")
        validate("push", first)
        assert first["verified"] and first["images"]
        again = _json("push", bundle, "--to", f"{registry.host}/mirror", "--json")
        validate("push", again)
        validate("push", _json("push", bundle, "--to", registry.host, "--json"))
    finally:
        registry.stop()
