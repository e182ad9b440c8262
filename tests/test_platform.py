import pytest

from bundler import platform
from bundler.errors import InputError, PlatformError, RegistryError
from tests.cli_helpers import assert_one_line_error, bundler
from tests.faultproxy import RegistryFront
from tests.servers import write_registries_yaml


def _entry(arch, os="linux", variant=None, **annotations):
    p = {"architecture": arch, "os": os}
    if variant:
        p["variant"] = variant
    e = {"digest": f"sha256:{arch}{variant or ''}", "platform": p}
    if annotations:
        e["annotations"] = annotations
    return e


def test_picks_amd64_in_any_order_and_skips_attestations():
    index = {"manifests": [
        _entry("unknown", "unknown", **{"vnd.docker.reference.type": "attestation-manifest"}),
        _entry("arm64", variant="v8"), _entry("amd64"), _entry("s390x")]}
    assert platform.select(index, platform.for_arch("amd64"), "x")["digest"] == "sha256:amd64"
    assert platform.select(index, platform.for_arch("arm64"), "x")["digest"] == "sha256:arm64v8"


def test_variant_defaults():
    index = {"manifests": [_entry("arm", variant="v6"), _entry("arm", variant="v7")]}
    assert platform.select(index, platform.for_arch("arm"), "x")["digest"] == "sha256:armv7"
    assert platform.select(index, platform.for_arch("arm/v6"), "x")["digest"] == "sha256:armv6"


def test_missing_platform_lists_what_is_there():
    index = {"manifests": [_entry("arm64"), _entry("unknown", "unknown"), _entry("ppc64le")]}
    with pytest.raises(PlatformError) as e:
        platform.select(index, platform.for_arch("amd64"), "img:1")
    assert str(e.value) == "img:1: no linux/amd64 manifest; available: linux/arm64, linux/ppc64le"


@pytest.mark.parametrize(("arch", "message"), [
    ("bogus", "unknown architecture 'bogus' (known: amd64, arm64, arm, 386, ppc64le, ppc64, "
              "s390x, riscv64, loong64, mips, mipsle, mips64, mips64le)"),
    ("x86_64", "unknown architecture 'x86_64' (did you mean amd64? known: amd64, "),
    ("armhf", "unknown architecture 'armhf' (did you mean arm/v7? known: "),
    ("aarch64/v8", "unknown architecture 'aarch64/v8' (did you mean arm64? known: "),
    ("X86_64", "unknown architecture 'X86_64' (did you mean amd64? known: "),
    ("ARMv7L/x", "unknown architecture 'ARMv7L/x' (did you mean arm/v7? known: "),
    ("amd 64", "unknown architecture 'amd 64' (known: "),
    ("", "unknown architecture '' (known: "),
    ("arm/v9", "unknown variant 'arm/v9' (known: arm, arm/v5, arm/v6, arm/v7, arm/v8)"),
    ("arm/", "unknown variant 'arm/' (known: arm, arm/v5, "),
    ("s390x/v1", "unknown variant 's390x/v1' (s390x has none)"),
    ("amd64/v2/x", "unknown variant 'amd64/v2/x' (known: amd64, amd64/v1, "),
])
def test_unknown_architectures_are_refused_listing_the_known(arch, message):
    with pytest.raises(InputError) as e:
        platform.for_arch(arch)
    assert str(e.value).startswith(message), str(e.value)
    assert "--arch" not in str(e.value)  # the CLI names its option; this is a library


@pytest.mark.parametrize("arch", ["amd64", "amd64/v3", "arm64", "arm64/v8", "arm", "arm/v6",
                                  "386", "ppc64le", "s390x", "riscv64"])
def test_known_architectures(arch):
    p = platform.for_arch(arch)
    assert (p.os, str(p)) == ("linux", f"linux/{arch}")


def test_amd64_v1_is_plain_amd64():
    want = platform.for_arch("amd64")
    assert platform.matches(want, platform.Platform("linux", "amd64", "v1"))
    assert not platform.matches(want, platform.Platform("linux", "amd64", "v3"))


def test_bogus_arch_fails_before_any_request(tmp_path):
    front = RegistryFront("http://127.0.0.1:9")  # records what it is asked; upstream is dead
    try:
        yaml = write_registries_yaml(tmp_path / "r.yaml", {"docker.io": [front.url]})
        (tmp_path / "images.txt").write_text("busybox:1.36.1\n")
        run = bundler("build", "--images", str(tmp_path / "images.txt"), "--output-dir",
                      str(tmp_path / "dist"), "--registries", str(yaml),
                      "--no-default-endpoint", "--arch", "bogus")
    finally:
        front.stop()
    assert run.code == 2
    assert_one_line_error(run, "unknown architecture 'bogus' (known: amd64, arm64, arm, 386")
    assert front.requests == []
    assert not (tmp_path / "dist").exists()


@pytest.mark.parametrize(("index", "message"), [
    ([], "img:1: index is not a JSON object"),
    ({"manifests": {"a": 1}}, "img:1: index `manifests` is not a list"),
    ({"manifests": [_entry("amd64"), "x"]}, "img:1: index entry 1 is not an object"),
    ({"manifests": [{"digest": "sha256:a", "platform": ["linux", "amd64"]}]},
     "img:1: index entry 0: platform is not an object of strings"),
    ({"manifests": [{"digest": "sha256:a", "platform": {"os": "linux", "architecture": 1}}]},
     "img:1: index entry 0: platform is not an object of strings"),
    ({"manifests": [{"digest": "sha256:a", "platform": {"os": 1, "architecture": "amd64"}}]},
     "img:1: index entry 0: platform is not an object of strings"),
    ({"manifests": [_entry("arm64"), {"digest": "sha256:a", "platform": {
        "os": "linux", "architecture": "arm", "variant": ["v7"]}}]},
     "img:1: index entry 1: platform is not an object of strings"),
    ({"manifests": [{"digest": "sha256:a", "annotations": "x"}]},
     "img:1: index entry 0: annotations is not an object"),
])
def test_an_index_of_the_wrong_shape_is_a_registry_error(index, message):
    with pytest.raises(RegistryError) as e:
        platform.select(index, platform.for_arch("amd64"), "img:1")
    assert str(e.value) == message


def test_an_attestation_is_skipped_by_its_annotation_whatever_its_platform():
    index = {"manifests": [
        _entry("amd64", **{"vnd.docker.reference.type": "attestation-manifest"}),
        {**_entry("amd64"), "digest": "sha256:image"}]}
    assert platform.select(index, platform.for_arch("amd64"), "x")["digest"] == "sha256:image"


def test_only_unknown_os_and_architecture_together_mark_an_attestation():
    assert platform.is_attestation(_entry("unknown", "unknown"))
    assert not platform.is_attestation(_entry("unknown", "linux"))
    assert not platform.is_attestation(_entry("amd64", "unknown"))
    assert not platform.is_attestation({"digest": "sha256:a"})


@pytest.mark.parametrize("index", [{}, {"manifests": []}, {"manifests": [
    _entry("unknown", "unknown")]}])
def test_an_index_with_no_image_says_none_is_available(index):
    with pytest.raises(PlatformError) as e:
        platform.select(index, platform.for_arch("amd64"), "img:1")
    assert str(e.value) == "img:1: no linux/amd64 manifest; available: none"


def test_an_entry_without_a_platform_is_listed_as_such():
    index = {"manifests": [{"digest": "sha256:a"}, _entry("arm64", os=""), _entry("arm64")]}
    with pytest.raises(PlatformError) as e:
        platform.select(index, platform.for_arch("amd64"), "img:1")
    assert str(e.value) == ("img:1: no linux/amd64 manifest; available: (no platform), /arm64, "
                            "linux/arm64")


def test_read_reads_absent_and_null_fields_as_empty():
    assert platform.read({}) == platform.Platform("", "", None)
    assert platform.read({"os": None, "architecture": "arm", "variant": None}) == \
        platform.Platform("", "arm", None)
    assert platform.read({"os": "linux", "architecture": "arm", "variant": ""}) == \
        platform.Platform("linux", "arm", None)
    assert platform.read({"os": "linux", "architecture": "arm", "variant": "v6"}).variant == "v6"


@pytest.mark.parametrize(("obj", "message", "written"), [
    ({"os": 1}, "os, architecture or variant is not a string", None),
    ({"os": "linux", "variant": ["v7"]}, "os, architecture or variant is not a string", None),
    ({"os": "linux", "architecture": "amd64\x1b[2J"},
     "architecture 'amd64\\x1b[2J' is not a platform name (letters, digits, '.', '_', '-'; "
     "at most 64)", platform.Platform("linux", "amd64\x1b[2J")),
    ({"os": "l" * 65}, f"os {'l' * 65} is not a platform name (letters, digits, '.', '_', "
     "'-'; at most 64)", platform.Platform("l" * 65, "")),
])
def test_read_refuses_what_is_not_a_platform_name_saying_which_field(obj, message, written):
    with pytest.raises(platform.PlatformFieldError) as e:
        platform.read(obj)
    assert str(e.value) == message
    assert e.value.platform == written


def test_select_refuses_an_entry_whose_platform_is_no_name_in_one_line():
    index = {"manifests": [_entry("amd64"), {"digest": "sha256:a", "platform": {
        "os": "linux", "architecture": "arm64\nOK"}}]}
    with pytest.raises(RegistryError) as e:
        platform.select(index, platform.for_arch("amd64"), "img:1")
    assert str(e.value) == ("img:1: index entry 1: platform architecture 'arm64\\nOK' is not a "
                            "platform name (letters, digits, '.', '_', '-'; at most 64)")
