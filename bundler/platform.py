"""Choosing one platform's manifest from an OCI index or Docker manifest list."""

from __future__ import annotations

from dataclasses import dataclass

from bundler.errors import InputError, PlatformError

# Buildx marks provenance/SBOM entries with this annotation and platform unknown/unknown.
_ATTESTATION_ANNOTATION = "vnd.docker.reference.type"
# Architectures whose manifests carry a variant we pick by default when the user gives none.
_DEFAULT_VARIANT = {"arm64": "v8", "arm": "v7"}


@dataclass(frozen=True)
class Platform:
    """os/architecture[/variant], e.g. linux/amd64."""

    os: str
    architecture: str
    variant: str | None = None

    def __str__(self) -> str:
        s = f"{self.os}/{self.architecture}"
        return f"{s}/{self.variant}" if self.variant else s

    def as_json(self) -> dict:
        d = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            d["variant"] = self.variant
        return d


def for_arch(arch: str) -> Platform:
    """The Linux platform for `--arch` (amd64, arm64, arm/v7, ...)."""
    arch_name, _, variant = arch.partition("/")
    if not arch_name or not arch_name.replace("_", "").isalnum():
        raise InputError(f"invalid --arch {arch!r}: want e.g. amd64, arm64, arm/v7")
    return Platform("linux", arch_name, variant or None)


def of(obj: dict) -> Platform:
    """The platform described by an index entry's `platform` or an image config."""
    return Platform(obj.get("os", ""), obj.get("architecture", ""), obj.get("variant") or None)


def matches(want: Platform, have: Platform) -> bool:
    """Whether `have` serves `want`; an absent variant matches the default one."""
    if (want.os, want.architecture) != (have.os, have.architecture):
        return False
    default = _DEFAULT_VARIANT.get(want.architecture)
    return (want.variant or default) == (have.variant or default)


def is_attestation(entry: dict) -> bool:
    annotations = entry.get("annotations") or {}
    p = entry.get("platform") or {}
    return _ATTESTATION_ANNOTATION in annotations or (
        p.get("os") == "unknown" and p.get("architecture") == "unknown"
    )


def select(index: dict, want: Platform, what: str) -> dict:
    """The descriptor in `index` for `want`; PlatformError lists what is there otherwise."""
    entries = [m for m in index.get("manifests") or [] if not is_attestation(m)]
    for entry in entries:
        if matches(want, of(entry.get("platform") or {})):
            return entry
    available = sorted({str(of(m.get("platform") or {})) for m in entries}) or ["none"]
    raise PlatformError(f"{what}: no {want} manifest; available: {', '.join(available)}")
