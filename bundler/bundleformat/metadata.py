"""A bundle's metadata members read back as typed values (archive.py writes them).

The members are untrusted bytes: `read` never raises on their content. It returns the images
index.json names that it could read (each with what manifest.json says of it), the problems
found (one line each, naming the member and the entry) and the warnings. Its readers pick a
policy: verify (checks/layout.py) reports every problem and goes on to the blobs; the bundle
source, inspect and push refuse the bundle on the first (`Metadata.refusal`).

What is read here is what the members say of themselves; the rules a bundle of ours keeps
beyond that (full names, one entry per name, image manifest media types, the docker views
being what archive.py writes for the images) are checks/layout.py's, which has the blobs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from bundler import platform, reference, strictjson
from bundler.bundleformat.archive import (
    ANNOTATION_IMAGE_NAME,
    ANNOTATION_REF_NAME,
    BLOB_DIR,
    DOCKER_MANIFEST,
    INDEX,
    METADATA,
    OCI_LAYOUT,
)
from bundler.digest import DIGEST_RE
from bundler.errors import BundlerError, InputError
from bundler.image import Descriptor
from bundler.platform import Platform
from bundler.reference import Reference
from bundler.strictjson import object_or_empty
from bundler.text import shown

# Shared ref.name values reported one by one; a hostile index can share thousands.
MAX_SHARED_SHOWN = 10

_SCHEMAS = {OCI_LAYOUT: strictjson.OCI_LAYOUT, INDEX: strictjson.INDEX,
            DOCKER_MANIFEST: strictjson.DOCKER_MANIFEST}


@dataclass(frozen=True)
class Entry:
    """One image index.json names, as read from index.json and manifest.json."""

    position: int  # in index.json's manifests (and manifest.json's list)
    name: str  # io.containerd.image.name as written (containerd records it so)
    reference: Reference  # the name parsed and normalized
    manifest: Descriptor
    platform: Platform | None  # as index.json declares it (None: it declares none)
    ref_name: str | None  # org.opencontainers.image.ref.name
    # manifest.json's Config and Layers; "" and () when it does not say (a problem says why)
    config_digest: str = ""
    layer_digests: tuple[str, ...] = ()
    # Why the declared platform is not made of platform names (None: it is). A reader that
    # prints it refuses the bundle; verify holds it against the config's platform, a name.
    platform_problem: str | None = None

    @property
    def where(self) -> str:
        return f"{INDEX}: manifests[{self.position}]"


@dataclass(frozen=True)
class Metadata:
    members: Mapping[str, bytes]
    entries: tuple[Entry, ...]
    listed: int  # how many entries index.json lists, read or not
    # What is wrong: the members missing, oci-layout's and index.json's problems, then
    # manifest.json's (which a checker may say after its own checks of index.json's entries).
    index_problems: tuple[str, ...]
    docker_problems: tuple[str, ...]
    warnings: tuple[str, ...]  # what misleads other readers without making the bundle wrong
    names: tuple[tuple[str, str | None], ...]  # (name, manifest digest or None) per named entry
    docker: tuple[object, ...] | None  # manifest.json's entries, when it read without problem

    @property
    def problems(self) -> tuple[str, ...]:
        return self.index_problems + self.docker_problems

    @property
    def refusal(self) -> str | None:
        """The first thing a reader that needs every entry, and prints them, refuses the
        metadata for; None when it reads whole."""
        if self.problems:
            return self.problems[0]
        return next((e.platform_problem for e in self.entries if e.platform_problem), None)

    def by_name(self) -> dict[str, str | None]:
        """Image name as written -> the manifest digest index.json gives it (None where the
        entry is named but not read); a later entry of a name wins, as in a dict."""
        return dict(self.names)


def read(members: Mapping[str, bytes]) -> Metadata:
    """The metadata members (by name, as bytes) read as a bundle's; never raises on their
    content."""
    problems: list[str] = [f"{name}: missing" for name in METADATA if name not in members]
    if OCI_LAYOUT in members:
        marker = _json(members, OCI_LAYOUT, problems)
        if marker != {"imageLayoutVersion": "1.0.0"}:
            problems.append(f"{OCI_LAYOUT}: not an OCI layout 1.0.0 marker")
    if INDEX not in members:
        return Metadata(members, (), 0, tuple(problems), (), (), (), None)
    index = _json(members, INDEX, problems)
    listed = index.get("manifests") if isinstance(index, dict) else None
    if not isinstance(listed, list) or not listed:
        problems.append(f"{INDEX}: lists no manifests")
        return Metadata(members, (), 0, tuple(problems), (), (), (), None)
    # manifest.json's problems are said after index.json's, whose entries they follow.
    docker_problems: list[str] = []
    docker = _docker_entries(members, len(listed), docker_problems)
    entries: list[Entry] = []
    names: list[tuple[str, str | None]] = []
    for i, raw in enumerate(listed):
        entry = _entry(i, raw, problems, names)
        if entry is not None and docker is not None:
            entry, problem = _with_docker_view(entry, docker[i])
            docker_problems += [problem] if problem else []
        if entry is not None:
            entries.append(entry)
    return Metadata(members, tuple(entries), len(listed), tuple(problems),
                    tuple(docker_problems), tuple(shared_ref_names(listed)), tuple(names),
                    tuple(docker) if docker is not None and not docker_problems else None)


def read_strict(members: Mapping[str, bytes], what: str) -> Metadata:
    """`read`, for a reader that needs every entry and prints them: InputError naming `what`
    (the bundle) and the first thing wrong, if anything is."""
    meta = read(members)
    if meta.refusal:
        raise InputError(f"{what}: {meta.refusal}")
    return meta


def _json(members: Mapping[str, bytes], name: str, problems: list[str]) -> object:
    try:
        return strictjson.loads(members[name], _SCHEMAS.get(name))
    except strictjson.StrictJSONError as e:
        problems.append(f"{name}: bad JSON ({e})")
        return None


def _docker_entries(members: Mapping[str, bytes], count: int, problems: list[str]
                    ) -> list[object] | None:
    """manifest.json's entries when it lists one per index.json entry; else None, and why."""
    if DOCKER_MANIFEST not in members:
        return None
    docker = _json(members, DOCKER_MANIFEST, problems)
    if not isinstance(docker, list) or len(docker) != count:
        problems.append(f"{DOCKER_MANIFEST}: does not list the {count} images of {INDEX}")
        return None
    return docker


def _entry(i: int, raw: object, problems: list[str], names: list[tuple[str, str | None]]
           ) -> Entry | None:
    """index.json's entry `i`, or None and the problem."""
    where = f"{INDEX}: manifests[{i}]"
    if not isinstance(raw, dict):
        problems.append(f"{where}: not an object")
        return None
    annotations = raw.get("annotations")
    if not isinstance(annotations, dict):
        problems.append(f"{where}: annotations is not an object")
        return None
    name = annotations.get(ANNOTATION_IMAGE_NAME)
    try:
        if not isinstance(name, str):
            raise InputError("missing or not a string")
        ref = reference.parse(name)
    except InputError as e:
        problems.append(f"{where}: {ANNOTATION_IMAGE_NAME} {shown(name)}: {e}")
        return None
    try:
        desc = Descriptor.from_json(raw, where)
    except BundlerError as e:
        names.append((name, None))
        problems.append(str(e))
        return None
    names.append((name, desc.digest))
    declared, platform_problem = _declared_platform(raw.get("platform"), f"{where} "
                                                    f"({shown(name)})")
    ref_name = annotations.get(ANNOTATION_REF_NAME)
    return Entry(i, name, ref, desc, declared, ref_name if isinstance(ref_name, str) else None,
                 platform_problem=platform_problem)


def _declared_platform(obj: object, where: str) -> tuple[Platform | None, str | None]:
    """The platform an index entry declares, as written, and what is wrong with it."""
    if not isinstance(obj, dict):  # absent (strictjson refuses any other value)
        return None, None
    try:
        return platform.read(obj), None
    except platform.PlatformFieldError as e:
        return e.platform, f"{where}: platform {e}"


def _with_docker_view(entry: Entry, view: object) -> tuple[Entry, str | None]:
    """`entry` with the config and layer blobs manifest.json's entry names for it, or
    `entry` and what is wrong with manifest.json's entry."""
    where = f"{DOCKER_MANIFEST}: entry {entry.position} ({entry.name})"
    if not isinstance(view, dict):
        return entry, f"{where}: not an object"
    config = _blob_digest(view.get("Config"))
    if config is None:
        return entry, f"{where}: Config {shown(view.get('Config'))} is not a blob path"
    layers = view.get("Layers")
    if not isinstance(layers, list):
        return entry, f"{where}: no Layers list"
    digests = []
    for path in layers:
        digest = _blob_digest(path)
        if digest is None:
            return entry, f"{where}: Layers entry {shown(path)} is not a blob path"
        digests.append(digest)
    return replace(entry, config_digest=config, layer_digests=tuple(digests)), None


def _blob_digest(member: object) -> str | None:
    if not isinstance(member, str) or not member.startswith(BLOB_DIR):
        return None
    digest = "sha256:" + member[len(BLOB_DIR):]
    return digest if DIGEST_RE.fullmatch(digest) else None


def shared_ref_names(entries: list) -> list[str]:
    """A warning for each org.opencontainers.image.ref.name that several of index.json's
    `entries` give, naming the images (their io.containerd.image.name) and the value.

    Not a problem: bundles written before ref.name held the full name give the bare tag, and
    two images of one tag (hardened-multus-cni and hardened-multus-thick) then share it.
    containerd and K3s go by io.containerd.image.name and are not misled; a reader that looks
    the name up (skopeo's oci-archive:, umoci) takes one of them silently or refuses both."""
    holders: dict[str, list[int]] = {}
    for i, entry in enumerate(entries):
        ref_name = object_or_empty(object_or_empty(entry).get("annotations")).get(
            ANNOTATION_REF_NAME)
        if isinstance(ref_name, str):
            holders.setdefault(ref_name, []).append(i)
    shared = [(value, at) for value, at in holders.items() if len(at) > 1]
    warnings = []
    for value, at in shared[:MAX_SHARED_SHOWN]:
        first, second = (f"manifests[{i}] ({_image_name(entries[i])})" for i in at[:2])
        more = f" and {len(at) - 2} more" if len(at) > 2 else ""
        warnings.append(
            f"{INDEX}: {first} and {second}{more} share {ANNOTATION_REF_NAME} "
            f"{shown(value)}: skopeo or umoci asked for that name takes one of them or "
            f"refuses it (containerd goes by {ANNOTATION_IMAGE_NAME})")
    if len(shared) > MAX_SHARED_SHOWN:
        warnings.append(f"{INDEX}: and {len(shared) - MAX_SHARED_SHOWN} more "
                        f"{ANNOTATION_REF_NAME} values shared by several images")
    return warnings


def _image_name(entry: dict) -> str:
    """An entry's io.containerd.image.name for a message: whole when it is a full name (the
    grammar admits printable ASCII only), else shown escaped and cut."""
    name = object_or_empty(entry.get("annotations")).get(ANNOTATION_IMAGE_NAME)
    if not isinstance(name, str):
        return f"no {ANNOTATION_IMAGE_NAME}"
    try:
        if reference.parse(name).image_name == name:
            return name
    except InputError:
        pass
    return shown(name)
