"""Choosing one platform's manifest from an OCI index or Docker manifest list."""

from __future__ import annotations

from dataclasses import dataclass

from bundler.errors import InputError, PlatformError, RegistryError

# Buildx marks provenance/SBOM entries with this annotation and platform unknown/unknown.
_ATTESTATION_ANNOTATION = "vnd.docker.reference.type"
# Architectures whose manifests carry a variant we pick by default when the user gives none
# (containerd's platforms.normalizeArch: amd64/v1 and arm64/v8 are the plain ones, arm is v7).
_DEFAULT_VARIANT = {"amd64": "v1", "arm64": "v8", "arm": "v7"}

# The Linux GOARCH values (`go tool dist list`), as image indexes name them, and the variants
# each may carry (OCI image-index spec; GOAMD64 levels for amd64). Anything else matches no
# image, so it is refused before any network work rather than after a round of pulls.
ARCHITECTURES: dict[str, tuple[str, ...]] = {
    "amd64": ("v1", "v2", "v3", "v4"),
    "arm64": ("v8", "v8.1", "v8.2", "v8.3", "v8.4", "v8.5", "v8.6", "v8.7", "v8.8", "v8.9",
              "v9", "v9.1", "v9.2", "v9.3", "v9.4", "v9.5"),
    "arm": ("v5", "v6", "v7", "v8"),
    "386": (),
    "ppc64le": (),
    "ppc64": (),
    "s390x": (),
    "riscv64": (),
    "loong64": (),
    "mips": (),
    "mipsle": (),
    "mips64": (),
    "mips64le": (),
}
# What other tools call them (uname -m, Debian): said as a hint, not accepted, because the
# name also becomes part of the output file names and the checksum manifest.
_ALIASES = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "armhf": "arm/v7",
            "armel": "arm/v6", "armv7": "arm/v7", "armv7l": "arm/v7", "armv6": "arm/v6",
            "armv6l": "arm/v6", "i386": "386", "i686": "386", "x86": "386", "ppc64el": "ppc64le",
            "riscv": "riscv64"}


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
    """The Linux platform for an architecture name: ARCH or ARCH/VARIANT (amd64, arm/v7).

    InputError for a name no image index uses, listing the known ones; the caller says which
    option or file it came from.
    """
    name, slash, variant = arch.partition("/")
    if name not in ARCHITECTURES:
        hint = _meant(arch)
        raise InputError(f"unknown architecture {arch!r} ("
                         + (f"did you mean {hint}? " if hint else "")
                         + f"known: {', '.join(ARCHITECTURES)})")
    if slash and variant not in ARCHITECTURES[name]:
        known = ", ".join(f"{name}/{v}" for v in ARCHITECTURES[name])
        raise InputError(f"unknown variant {arch!r} ("
                         + (f"known: {name}, {known})" if known else f"{name} has none)"))
    return Platform("linux", name, variant or None)


def _meant(arch: str) -> str | None:
    """The architecture meant by a name for_arch does not know: another case (AMD64),
    Docker's os/arch form (linux/amd64; the os is always linux), or another name (x86_64)."""
    lowered = arch.lower()
    if lowered.startswith("linux/"):
        lowered = lowered[len("linux/"):]
    name, slash, variant = lowered.partition("/")
    if name in _ALIASES:
        return _ALIASES[name]  # no alias has a slash: `name` is the whole alias
    if name not in ARCHITECTURES:
        return None
    return f"{name}/{variant}" if slash and variant in ARCHITECTURES[name] else name


def of(obj: dict) -> Platform:
    """The platform described by an index entry's `platform` or an image config."""
    return Platform(obj.get("os", ""), obj.get("architecture", ""), obj.get("variant") or None)


def matches(want: Platform, have: Platform) -> bool:
    """Whether `have` serves `want`; an absent variant matches the default one."""
    if (want.os, want.architecture) != (have.os, have.architecture):
        return False
    default = _DEFAULT_VARIANT.get(want.architecture)
    return (want.variant or default) == (have.variant or default)


def _entries(index: object, what: str) -> list[dict]:
    if not isinstance(index, dict):
        raise RegistryError(f"{what}: index is not a JSON object")
    manifests = index.get("manifests")
    if manifests is None:
        return []
    if not isinstance(manifests, list):
        raise RegistryError(f"{what}: index `manifests` is not a list")
    for i, entry in enumerate(manifests):
        if not isinstance(entry, dict):
            raise RegistryError(f"{what}: index entry {i} is not an object")
        p = entry.get("platform")
        if p is not None and not (isinstance(p, dict) and all(
                isinstance(p.get(k, ""), str) for k in ("os", "architecture", "variant"))):
            raise RegistryError(f"{what}: index entry {i}: platform is not an object of strings")
        if not isinstance(entry.get("annotations") or {}, dict):
            raise RegistryError(f"{what}: index entry {i}: annotations is not an object")
    return manifests


def is_attestation(entry: dict) -> bool:
    annotations = entry.get("annotations") or {}
    p = entry.get("platform") or {}
    return _ATTESTATION_ANNOTATION in annotations or (
        p.get("os") == "unknown" and p.get("architecture") == "unknown"
    )


def _label(entry: dict) -> str:
    # The platform field is optional (OCI image-index); `/` alone would say nothing.
    p = of(entry.get("platform") or {})
    return str(p) if p.os or p.architecture else "(no platform)"


def select(index: object, want: Platform, what: str) -> dict:
    """The descriptor in `index` for `want`; PlatformError lists what is there otherwise.

    `index` is a registry's JSON: an index of the wrong shape is a RegistryError naming the
    entry, as Go's decoder (containerd's) refuses it too, never a traceback.
    """
    entries = [m for m in _entries(index, what) if not is_attestation(m)]
    for entry in entries:
        if matches(want, of(entry.get("platform") or {})):
            return entry
    available = sorted({_label(m) for m in entries}) or ["none"]
    raise PlatformError(f"{what}: no {want} manifest; available: {', '.join(available)}")
