"""Choosing one platform's manifest from an OCI index or Docker manifest list."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from bundler.errors import InputError, PlatformError, RegistryError
from bundler.text import shown

# Buildx marks provenance/SBOM entries with this annotation and platform unknown/unknown.
_ATTESTATION_ANNOTATION = "vnd.docker.reference.type"
# Architectures whose manifests carry a variant we pick by default when the user gives none
# (containerd's platforms.normalizeArch: amd64/v1 and arm64/v8 are the plain ones, arm is v7).
_DEFAULT_VARIANT = {"amd64": "v1", "arm64": "v8", "arm": "v7"}
# What an os, architecture or variant may be: every name an index or config uses (linux,
# amd64, arm64, v8, ppc64le, windows) fits, and nothing that moves a terminal's cursor or
# splits a message line does.
PLATFORM_FIELD = re.compile(r"[A-Za-z0-9._-]{1,64}")
PLATFORM_KEYS = ("os", "architecture", "variant")
NOT_STRINGS = "os, architecture or variant is not a string"

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


class PlatformFieldError(ValueError):
    """A platform object whose fields are not strings, or not platform names; the message says
    which (for the caller to prefix with where it is). `platform`: the fields as written,
    when they are strings, for a message comparing them with another platform."""

    def __init__(self, message: str, written: Platform | None):
        super().__init__(message)
        self.platform = written


def read(obj: Mapping[str, object]) -> Platform:
    """The platform an image config or an index entry's `platform` object describes: its os,
    architecture and variant, each absent or null read as "" (as Go decodes them), else a
    string that is a platform name (PLATFORM_FIELD). PlatformFieldError otherwise."""
    fields = [obj.get(key) for key in PLATFORM_KEYS]
    fields = ["" if value is None else value for value in fields]
    if not all(isinstance(value, str) for value in fields):
        raise PlatformFieldError(NOT_STRINGS, None)
    written = Platform(fields[0], fields[1], fields[2] or None)
    for key, value in zip(PLATFORM_KEYS, fields, strict=True):
        if value and not PLATFORM_FIELD.fullmatch(value):
            raise PlatformFieldError(f"{key} {shown(value)} is not a platform name (letters, "
                                     "digits, '.', '_', '-'; at most 64)", written)
    return written


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


def matches(want: Platform, have: Platform) -> bool:
    """Whether `have` serves `want`; an absent variant matches the default one."""
    if (want.os, want.architecture) != (have.os, have.architecture):
        return False
    default = _DEFAULT_VARIANT.get(want.architecture)
    return (want.variant or default) == (have.variant or default)


def _entries(index: object, what: str) -> list[tuple[dict, Platform | None]]:
    """Each entry of a registry's index with the platform it declares (None: none)."""
    if not isinstance(index, dict):
        raise RegistryError(f"{what}: index is not a JSON object")
    manifests = index.get("manifests")
    if manifests is None:
        return []
    if not isinstance(manifests, list):
        raise RegistryError(f"{what}: index `manifests` is not a list")
    out = []
    for i, entry in enumerate(manifests):
        if not isinstance(entry, dict):
            raise RegistryError(f"{what}: index entry {i} is not an object")
        p = entry.get("platform")
        if p is not None and not isinstance(p, dict):
            raise RegistryError(f"{what}: index entry {i}: platform is not an object of strings")
        try:
            declared = None if p is None else read(p)
        except PlatformFieldError as e:
            if e.platform is None:
                raise RegistryError(f"{what}: index entry {i}: platform is not an object of "
                                    "strings") from None
            raise RegistryError(f"{what}: index entry {i}: platform {e}") from None
        if not isinstance(entry.get("annotations") or {}, dict):
            raise RegistryError(f"{what}: index entry {i}: annotations is not an object")
        out.append((entry, declared))
    return out


def is_attestation(entry: dict, declared: Platform | None = None) -> bool:
    """Whether an index entry is buildx's provenance or SBOM rather than an image: by its
    annotation, or by its platform (`declared`, read from the entry when not given) being
    unknown/unknown."""
    if _ATTESTATION_ANNOTATION in (entry.get("annotations") or {}):
        return True
    if declared is None and isinstance(entry.get("platform"), dict):
        try:
            declared = read(entry["platform"])
        except PlatformFieldError:
            return False
    return declared is not None and (declared.os, declared.architecture) == ("unknown",
                                                                             "unknown")


def _label(declared: Platform | None) -> str:
    # The platform field is optional (OCI image-index); `/` alone would say nothing.
    return str(declared) if declared and (declared.os or declared.architecture) \
        else "(no platform)"


def select(index: object, want: Platform, what: str) -> dict:
    """The descriptor in `index` for `want`; PlatformError lists what is there otherwise.

    `index` is a registry's JSON: an index of the wrong shape, or a platform that is not
    made of platform names, is a RegistryError naming the entry, as Go's decoder
    (containerd's) refuses the first too, never a traceback.
    """
    entries = [(m, p) for m, p in _entries(index, what) if not is_attestation(m, p)]
    for entry, declared in entries:
        if matches(want, declared or Platform("", "")):
            return entry
    available = sorted({_label(p) for _, p in entries}) or ["none"]
    raise PlatformError(f"{what}: no {want} manifest; available: {', '.join(available)}")
