import pytest

from bundler import platform
from bundler.errors import InputError, PlatformError


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


def test_bad_arch():
    with pytest.raises(InputError):
        platform.for_arch("amd 64")
