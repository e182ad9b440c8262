"""What a signature vouches for besides the bytes: the bundle's file name and, with
$SOURCE_DATE_EPOCH, its date. verify, place and push --key refuse a signed bundle renamed (unless
--allow-rename) and, with --not-before, one dated earlier or not at all."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.cli_helpers import assert_one_line_error, build_args, bundler
from tests.conftest import BUNDLE, REFS, STEM
from tests.servers import Registry
from tests.test_signing import keypair

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None,
                                reason="openssl (Debian package openssl) is not installed")
OTHER = "other-amd64"
EPOCH = 1700000000  # 2023-11-14T22:13:20Z
SIDE = (".tar.zst", ".txt", ".manifest.json", ".manifest.json.sig")


@pytest.fixture(scope="module")
def signed(fixture_registry, tmp_path_factory) -> dict[str, Path]:
    """Builds signed with one key: `dated` (SOURCE_DATE_EPOCH=EPOCH), `undated` (the same
    images, no SOURCE_DATE_EPOCH: what every build wrote before it was recorded), `again`
    (as `dated`, for reproducibility), and `other` (another bundle, named other-amd64.*)."""
    tmp = tmp_path_factory.mktemp("trust")
    key, pub = keypair(tmp)
    out = {"key": key, "pub": pub}
    for name, refs, epoch, extra in (("dated", REFS, str(EPOCH), ()),
                                     ("undated", REFS, "", ()),
                                     ("again", REFS, str(EPOCH), ()),
                                     ("other", REFS[2:], str(EPOCH + 86400), ("--name", "other"))):
        run = bundler(*build_args(fixture_registry, tmp, refs, "--sign-key", str(key), *extra,
                                  out=name), env={"SOURCE_DATE_EPOCH": epoch})
        assert run.code == 0, run.stderr
        out[name] = tmp / name
    return out


def _renamed(other: Path, d: Path) -> Path:
    """The other bundle's files, renamed to STEM.*: the attack."""
    d.mkdir()
    for suffix in SIDE:
        shutil.copy(other / f"{OTHER}{suffix}", d / f"{STEM}{suffix}")
    return d / BUNDLE


def test_source_date_epoch_is_recorded_signed_and_reproducible(signed):
    dated = json.loads((signed["dated"] / f"{STEM}.manifest.json").read_text())
    undated = json.loads((signed["undated"] / f"{STEM}.manifest.json").read_text())
    assert dated["sourceDateEpoch"] == EPOCH
    assert "sourceDateEpoch" not in undated
    assert {k: v for k, v in dated.items() if k != "sourceDateEpoch"} == undated
    assert dated["schemaVersion"] == undated["schemaVersion"] == 1
    # The bundle itself carries no time; the same SOURCE_DATE_EPOCH gives the same files.
    for suffix in SIDE:
        assert (signed["again"] / f"{STEM}{suffix}").read_bytes() == \
            (signed["dated"] / f"{STEM}{suffix}").read_bytes(), suffix
    assert (signed["undated"] / BUNDLE).read_bytes() == (signed["dated"] / BUNDLE).read_bytes()
    # The date is signed: changing it breaks the signature.
    d = signed["dated"].parent / "moved-date"
    shutil.copytree(signed["dated"], d)
    m = d / f"{STEM}.manifest.json"
    m.write_text(m.read_text().replace(str(EPOCH), str(EPOCH + 10 ** 8)))
    run = bundler("verify", "--key", str(signed["pub"]), str(d / BUNDLE))
    assert_one_line_error(run, "signature does not match")


@pytest.mark.parametrize("value", ["yesterday", "-1", "+1700000000", "1.5", " 1700000000",
                                   "1700000000\n", "1e9", "９", "9" * 13, "253402300800"])
def test_a_bad_source_date_epoch_fails_at_build_start(fixture_registry, tmp_path, value):
    # The registry named is unreachable: a build that checked the variable only after
    # resolving the images would fail on the network instead (exit 3).
    from tests.servers import write_registries_yaml

    dead = write_registries_yaml(tmp_path / "dead.yaml", {"docker.io": ["http://127.0.0.1:9"]})
    run = bundler(*build_args(fixture_registry, tmp_path, REFS, registries=dead),
                  env={"SOURCE_DATE_EPOCH": value})
    assert_one_line_error(run, "SOURCE_DATE_EPOCH=", "date +%s")
    assert run.code == 2
    assert not (tmp_path / "dist").exists()


def test_a_renamed_signed_bundle_is_refused_unless_allowed(signed, tmp_path):
    pub = str(signed["pub"])
    bundle = _renamed(signed["other"], tmp_path / "renamed")
    run = bundler("verify", "--key", pub, str(bundle))
    assert_one_line_error(run, f"for a file named {OTHER}.tar.zst", f"not {BUNDLE}",
                          "--allow-rename")
    assert run.code == 1 and run.stdout == ""
    images = tmp_path / "images"
    run = bundler("place", "--key", pub, str(bundle), "--images-dir", str(images))
    assert_one_line_error(run, f"{OTHER}.tar.zst", "--allow-rename")
    assert run.code == 1 and not images.exists()
    # Through a symlink of the expected name, too: the name checked is the one given.
    link = tmp_path / "link" / BUNDLE
    link.parent.mkdir()
    link.symlink_to(signed["other"] / f"{OTHER}.tar.zst")
    shutil.copy(signed["other"] / f"{OTHER}.manifest.json", link.parent / f"{STEM}.manifest.json")
    shutil.copy(signed["other"] / f"{OTHER}.manifest.json.sig",
                link.parent / f"{STEM}.manifest.json.sig")
    assert_one_line_error(bundler("verify", "--key", pub, str(link)), "--allow-rename")
    # Said on purpose, it is accepted, and placed under the name given.
    run = bundler("verify", "--key", pub, "--allow-rename", str(bundle))
    assert run.code == 0, run.stdout + run.stderr
    run = bundler("place", "--key", pub, "--allow-rename", str(bundle), "--images-dir",
                  str(images))
    assert run.code == 0, run.stdout + run.stderr
    assert (images / BUNDLE).read_bytes() == (signed["other"] / f"{OTHER}.tar.zst").read_bytes()
    # Its own name verifies without the option; without --key the name is not vouched for.
    assert bundler("verify", "--key", pub, str(signed["other"] / f"{OTHER}.tar.zst")).code == 0
    assert bundler("verify", str(bundle)).code == 0


def test_a_renamed_signed_bundle_is_not_pushed(signed, tmp_path):
    registry = Registry(tmp_path / "reg").start()
    try:
        bundle = _renamed(signed["other"], tmp_path / "renamed")
        run = bundler("push", str(bundle), "--to", registry.host, "--key", str(signed["pub"]))
        assert_one_line_error(run, f"{OTHER}.tar.zst", "--allow-rename")
        assert run.code == 1
        run = bundler("push", str(bundle), "--to", registry.host, "--key", str(signed["pub"]),
                      "--not-before", "2023-11-16")
        assert_one_line_error(run, "--allow-rename")
        run = bundler("push", str(bundle), "--to", registry.host, "--key", str(signed["pub"]),
                      "--allow-rename", "--not-before", "2023-11-15")
        assert run.code == 0, run.stderr
        run = bundler("push", str(signed["dated"] / BUNDLE), "--to", registry.host, "--key",
                      str(signed["pub"]), "--not-before", "2023-11-16")
        assert_one_line_error(run, "dated 2023-11-14T22:13:20Z, before 2023-11-16T00:00:00Z")
        assert run.code == 1
    finally:
        registry.stop()


@pytest.mark.parametrize("command", ["verify", "place"])
def test_not_before(signed, tmp_path, command):
    pub = str(signed["pub"])
    where = ["--images-dir", str(tmp_path / "images")] if command == "place" else []

    def run(build: str, *flags: str):
        return bundler(command, "--key", pub, *flags, str(signed[build] / BUNDLE), *where)

    for late, shown in (("2023-11-15", "2023-11-15T00:00:00Z"),
                        ("2023-11-14T22:13:21Z", "2023-11-14T22:13:21Z"),
                        ("2023-11-14T22:13:20.5", "2023-11-14T22:13:20.500000Z"),
                        ("2023-11-14T23:13:21+01:00", "2023-11-14T22:13:21Z")):
        done = run("dated", "--not-before", late)
        assert_one_line_error(done, "dated 2023-11-14T22:13:20Z", f"before {shown}")
        assert done.code == 1 and done.stdout == ""
    done = run("undated", "--not-before", "2000-01-01")
    assert_one_line_error(done, "undated (built without SOURCE_DATE_EPOCH)", "2000-01-01")
    assert done.code == 1
    assert not (tmp_path / "images").exists()
    for ok in ("2023-11-14", "2023-11-14T22:13:20Z", "2023-11-14T22:13:20", "2023-11-14 22:13",
               "2023-11-14T23:13:20+01:00", "2023-11-14T17:13:20-0500", "1969-12-31"):
        assert run("dated", "--not-before", ok).code == 0, ok
    # An undated manifest, as every build before the date was recorded wrote, still verifies
    # when no date is asked for.
    assert run("undated").code == 0


@pytest.mark.parametrize("command", ["verify", "place", "push"])
@pytest.mark.parametrize("date", ["yesterday", "2023-13-01", "2023-11-14T25:00", "2023-11-14Z",
                                  "20231114", "2023-11-14T22:13:20+24:00", "",
                                  # in range as written, not once in UTC
                                  "0001-01-01T00:00+01:00", "9999-12-31T23:59-01:00"])
def test_a_bad_not_before_is_a_usage_error(signed, tmp_path, command, date):
    extra = {"place": ["--images-dir", str(tmp_path / "i")], "push": ["--to", "127.0.0.1:9"],
             "verify": []}[command]
    run = bundler(command, str(signed["dated"] / BUNDLE), "--key", str(signed["pub"]),
                  "--not-before", date, *extra)
    assert_one_line_error(run, f"--not-before {date!r}", "ISO 8601")
    assert run.code == 2


@pytest.mark.parametrize("command", ["verify", "place", "push"])
def test_not_before_needs_a_key(signed, tmp_path, command):
    extra = {"place": ["--images-dir", str(tmp_path / "i")], "push": ["--to", "127.0.0.1:9"],
             "verify": []}[command]
    run = bundler(command, str(signed["dated"] / BUNDLE), "--not-before", "2023-11-14", *extra)
    assert_one_line_error(run, "--not-before needs --key")
    assert run.code == 2
