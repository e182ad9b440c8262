"""`bundler images`: the images a Helm chart pins in its values, without rendering templates.

Rancher's charts (rke2-charts) pin each image in values.yaml as a mapping with `repository` and
`tag` (optionally `registry`, `digest`), and their templates write
`{{ template "system_default_registry" . }}{{ .repository }}:{{ .tag }}`. Reading the values
with Helm's merge rules therefore finds what the chart deploys, without a Go template engine.
What is written only inside templates is not found; the README says so.

A chart .tgz is untrusted input: it is read from memory, never extracted; its members, their
sizes and the bytes decompressed are bounded; links, absolute and `..` names are refused; YAML
is read as Helm reads values (bundler.helmyaml), in linear time, and its size, depth and node
count (aliases and merged maps counted each time they are used, so a "billion laughs" document
stops early) are bounded.
"""

from __future__ import annotations

import gzip
import io
import os
import re
import tarfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bundler import helmyaml, localfile, reference
from bundler.errors import EnvironmentFailure, InputError
from bundler.reference import Reference
from bundler.text import NAME_LIMIT, quoted, shown

# rke2-multus's .tgz is 30 KB; the largest public charts are a few MB.
MAX_CHART_FILE = 32 << 20
# Helm's own limits (pkg/chart/loader): 100 MiB decompressed in all, 5 MiB a file.
MAX_UNPACKED = 64 << 20
MAX_MEMBER = 5 << 20
MAX_MEMBERS = 10_000
# kube-prometheus-stack's values.yaml, among the largest, is about 200 KB.
MAX_YAML = 2 << 20
MAX_NODES = 500_000
MAX_DEPTH = 100
MAX_CHARTS = 100  # the chart and all its subcharts
MAX_NESTING = 10  # charts/x/charts/y/... ; also ends a symlink loop in a chart directory

_CHART_FILES = ("Chart.yaml", "values.yaml", "requirements.yaml")
_INT64 = re.compile(r"[+-]?[0-9]+")


class ChartError(InputError):
    """A chart, values file or --set that cannot be read; the message names the file or flag
    and, for a value, its path (exit 2)."""


@dataclass(frozen=True)
class ChartImage:
    """One image a chart pins: where in the values it is, and why it is off (None when on)."""

    reference: Reference
    path: str  # the value path, as --set names it: `rke2-whereabouts.image`
    disabled: str | None = None


@dataclass(frozen=True)
class ChartImages:
    """Every image found in a chart and its subcharts, in values order."""

    name: str
    version: str
    images: tuple[ChartImage, ...]

    def selected(self, include_disabled: bool = False) -> list[ChartImage]:
        """The enabled images (every one with include_disabled), each reference once."""
        seen: set[Reference] = set()
        out = []
        for image in self.images:
            if image.disabled and not include_disabled:
                continue
            if include_disabled or image.reference not in seen:
                seen.add(image.reference)
                out.append(image)
        return out


# ---- the public functions -------------------------------------------------------------------


def images(chart: str | Path, values_files: Sequence[str | Path] = (),
           sets: Sequence[str] = ()) -> ChartImages:
    """The images `chart` (a .tgz or a directory) pins, with the user's values applied as
    `helm install -f FILE... --set KEY=VALUE...` would: files merged in order, then each --set.
    """
    user: dict = {}
    for path in values_files:
        user = merge_values(user, read_values(path))
    for text in sets:
        user = merge_values(user, parse_set(text))
    root = load(chart)
    found: list[ChartImage] = []
    _collect(root, user, None, "", None, found)
    return ChartImages(root.name, root.version, tuple(found))


def format_images(result: ChartImages, include_disabled: bool = False) -> str:
    """images.txt text: a header naming the chart, then one reference a line. With
    include_disabled, every image, each with its value path (and why it is off) as a comment."""
    lines = [f"# {result.name} {result.version}: images pinned in the chart's values "
             "(templates are not rendered)"]
    if include_disabled:
        lines[0] += "; every component, enabled or not"
    for image in result.selected(include_disabled):
        if not include_disabled:
            lines.append(str(image.reference))
            continue
        note = f" (off: {image.disabled})" if image.disabled else ""
        lines.append(f"{image.reference}  # {image.path}{note}")
    return "\n".join(lines) + "\n"


def check(chart_images: Sequence[ChartImage], images_txt_refs: Sequence[Reference]) -> list[str]:
    """Drift between what the chart pins and an image list, one line each: a repository with
    other tags or digests, an image missing from the list, one the chart does not pin. Empty
    when they are in step."""
    pinned: dict[str, list[ChartImage]] = {}
    for image in chart_images:
        pinned.setdefault(image.reference.name, []).append(image)
    listed: dict[str, list[Reference]] = {}
    for ref in images_txt_refs:
        listed.setdefault(ref.name, []).append(ref)
    drift = []
    for name, ours in pinned.items():
        theirs = listed.get(name)
        if theirs is None:
            drift.extend(f"missing from the list: {i.reference} (chart value {i.path})"
                         for i in _unique(ours))
            continue
        want = {_version(i.reference) for i in ours}
        have = {_version(r) for r in theirs}
        if want != have:
            paths = ", ".join(dict.fromkeys(i.path for i in ours))
            drift.append(f"{name}: the chart pins {', '.join(sorted(want))} ({paths}), "
                         f"the list has {', '.join(sorted(have))}")
    for name, theirs in listed.items():
        if name not in pinned:
            drift.extend(f"not pinned by the chart: {r}" for r in theirs)
    return drift


def _unique(images_: list[ChartImage]) -> list[ChartImage]:
    firsts: dict[Reference, ChartImage] = {}
    for image in images_:
        firsts.setdefault(image.reference, image)
    return list(firsts.values())


def _version(ref: Reference) -> str:
    return f"{':' + ref.tag if ref.tag else ''}{'@' + ref.digest if ref.digest else ''}"


# ---- values: files, --set, Helm's merge rules -----------------------------------------------


def read_values(path: str | Path) -> dict:
    """A --values file: a YAML mapping (an empty file is an empty one)."""
    try:
        data = localfile.read_small(Path(path), MAX_YAML, "values file")
    except FileNotFoundError:
        raise ChartError(f"{path}: no such values file") from None
    except OSError as e:
        raise EnvironmentFailure.from_os_error(e, str(path)) from None
    return parse_yaml(data, str(path))


def parse_set(text: str) -> dict:
    """One `--set KEY=VALUE` as the nested mapping Helm makes of it.

    Keys are dotted (`cniplugins.image.tag`); a backslash takes the next character literally
    (`a\\.b` is one key). Values are typed as Helm's strvals types them: true/false, null, and
    base-10 integers without a leading zero; anything else stays text (`1.36` is "1.36").
    Helm's lists (`{a,b}`, `x[0]`) and several assignments in one flag are refused rather than
    read another way.
    """
    where = f"--set {quoted(text)}"
    keys, current, i = [], [], 0
    while i < len(text) and text[i] != "=":
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            current.append(text[i + 1])
            i += 2
            continue
        if c in "[,":
            raise ChartError(f"{where}: lists and several assignments are not supported; "
                             "one KEY=VALUE a --set, keys joined by '.'")
        if c == ".":
            keys.append("".join(current))
            current = []
        else:
            current.append(c)
        i += 1
    keys.append("".join(current))
    if i == len(text):
        raise ChartError(f"{where}: want KEY=VALUE")
    if any(k == "" for k in keys):
        raise ChartError(f"{where}: empty key in {quoted(text[:i])}")
    value: object = _set_value(text[i + 1:], where)
    for key in reversed(keys):
        value = {key: value}
    return value  # type: ignore[return-value]


def _set_value(raw: str, where: str) -> object:
    chars, i = [], 0
    while i < len(raw):
        c = raw[i]
        if c == "\\" and i + 1 < len(raw):
            chars.append(raw[i + 1])
            i += 2
            continue
        if c == ",":
            raise ChartError(f"{where}: several assignments in one --set are not supported "
                             "(write \\, for a comma in the value)")
        if c == "{" and i == 0:
            raise ChartError(f"{where}: list values {{a,b}} are not supported")
        chars.append(c)
        i += 1
    value = "".join(chars)
    lowered = value.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "null":
        return None
    # strvals parses ints only without a leading zero, so `007` stays text; ParseInt takes an
    # optional sign and ASCII digits, nothing Python's int() also takes (`1_0`, ` 1`, `١`).
    if value == "0" or (value[:1] != "0" and _INT64.fullmatch(value)
                        and -(1 << 63) <= int(value) < (1 << 63)):
        return int(value)
    return value


def merge_values(base: dict, override: dict) -> dict:
    """Helm's merge of -f files and --set (mergeMaps): mappings merge key by key, anything else
    in `override` replaces what `base` has (a null too; it deletes the chart's default later).
    Neither argument is changed."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_values(out[key], value)
        else:
            out[key] = value
    return out


def coalesce(user: dict, defaults: dict) -> dict:
    """Helm's coalescing of the user's values over a chart's defaults: the user's win, mappings
    merge key by key, and a null the user gives removes the key. Neither argument is changed."""
    out = dict(defaults)
    for key, value in user.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = coalesce(value, out[key])
        elif isinstance(value, dict):
            out[key] = coalesce(value, {})
        else:
            out[key] = value
    return out


# ---- YAML, bounded ---------------------------------------------------------------------------


def parse_yaml(data: bytes, where: str) -> dict:
    """A YAML mapping from untrusted bytes, read as Helm reads values (helmyaml): at most
    MAX_YAML bytes, MAX_NODES values (each use of an alias counted) and MAX_DEPTH levels."""
    from yaml import YAMLError  # imported when used: only `images` reads charts

    if len(data) > MAX_YAML:
        raise ChartError(f"{where}: more than {MAX_YAML >> 20} MiB of YAML; refused")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ChartError(f"{where}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        doc = helmyaml.load(text, MAX_NODES, MAX_DEPTH)
    except helmyaml.HelmYAMLError as e:
        at = f"{where}:{e.line}" if e.line else where
        raise ChartError(f"{at}: {quoted(str(e))[1:-1]}") from None
    except YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f"{where}:{mark.line + 1}" if mark else where
        # A reader error (a control character) has no mark, and its str() is two lines.
        problem = getattr(e, "problem", None) or getattr(e, "reason", None) or str(e)
        problem = " ".join(str(problem).split())
        raise ChartError(f"{at}: not valid YAML ({quoted(problem)[1:-1]})") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ChartError(f"{where}: not a YAML mapping")
    return doc


def _meta_text(value: object, where: str) -> str | None:
    """A Chart.yaml text field as Helm fills it: sigs.k8s.io/yaml writes a number or a
    boolean meant for a string field as text (a float with float32 precision: FormatFloat
    'g', -1, 32, so `appVersion: 1.10` is "1.1"); null leaves it empty."""
    if value is None or isinstance(value, str):
        return value or None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, helmyaml.HelmNumber):
        go = value.go
        return str(go) if isinstance(go, int) else helmyaml.go_format(go, 32)
    raise ChartError(f"{where}: want text, got {_go_value(value)}")


# ---- loading a chart ------------------------------------------------------------------------


@dataclass
class _Chart:
    where: str  # what messages call it: `x.tgz: charts/y.tgz: ` or `dir/`
    name: str
    version: str
    app_version: str | None
    values: dict
    subcharts: list[tuple[str, str | None, _Chart]]  # (values key, condition, chart)


class _Budget:
    """What one chart may cost to read, its subcharts included."""

    def __init__(self) -> None:
        self.unpacked = 0
        self.members = 0
        self.charts = 0


def load(chart: str | Path) -> _Chart:
    """Read a chart .tgz or directory with its subcharts (values, not templates)."""
    path = Path(chart)
    budget = _Budget()
    if path.is_dir():
        return _from_files(_dir_files(path, budget), "", f"{path}/", budget, 0)
    try:
        data = localfile.read_small(path, MAX_CHART_FILE, "chart archive")
    except FileNotFoundError:
        raise ChartError(f"{chart}: no such chart (want a chart .tgz or directory)") from None
    except OSError as e:
        raise EnvironmentFailure.from_os_error(e, str(chart)) from None
    return _from_files(_archive_files(data, f"{chart}", budget), "", f"{chart}: ", budget, 0)


def _archive_files(data: bytes, where: str, budget: _Budget) -> dict[str, bytes]:
    """The files of a chart archive that say what it pins, by path below the chart's top
    directory (Helm strips it): Chart.yaml, values.yaml, requirements.yaml, and those of
    charts/ (packed subcharts as bytes)."""
    files: dict[str, bytes] = {}
    stream = _CountingReader(gzip.GzipFile(fileobj=io.BytesIO(data)), budget, where)
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                rel = _member_path(member, where, budget)
                if rel is None or not _wanted(rel):
                    continue
                if rel in files:
                    raise ChartError(f"{where}: {quoted(member.name)} appears twice; refused")
                f = tar.extractfile(member)
                files[rel] = f.read() if f else b""
    except ChartError:
        raise
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise ChartError(f"{where}: not a gzip-compressed chart archive ({e})") from None
    return files


def _member_path(member: tarfile.TarInfo, where: str, budget: _Budget) -> str | None:
    """The member's path below the top directory; ChartError for anything a chart never
    holds and an extractor could be misled by."""
    budget.members += 1
    if budget.members > MAX_MEMBERS:
        raise ChartError(f"{where}: more than {MAX_MEMBERS} members; refused")
    name = member.name.replace("\\", "/")  # Helm's loader reads backslashes as separators
    shown = quoted(member.name)
    if member.issym() or member.islnk():
        raise ChartError(f"{where}: member {shown} is a link; a chart holds files only")
    if name.startswith("/") or re.match(r"[A-Za-z]:", name):
        raise ChartError(f"{where}: member {shown} has an absolute name; refused")
    if ".." in name.split("/"):
        raise ChartError(f"{where}: member {shown} reaches outside the chart (..); refused")
    if member.isdir():
        return None
    if not member.isreg():
        raise ChartError(f"{where}: member {shown} is not a regular file; refused")
    if member.size > MAX_MEMBER:
        raise ChartError(f"{where}: member {shown} is {member.size} bytes, more than "
                         f"{MAX_MEMBER >> 20} MiB; refused")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    return "/".join(parts[1:]) if len(parts) > 1 else None


def _wanted(rel: str) -> bool:
    """Chart.yaml, values.yaml, requirements.yaml at any charts/NAME/ depth, and packed
    subcharts in any charts/ directory."""
    *body, last = rel.split("/")
    if any(p != "charts" for p in body[::2]):
        return False
    if len(body) % 2 == 0:  # charts/NAME/charts/NAME/...
        return last in _CHART_FILES
    return last.endswith(".tgz")  # .../charts/NAME.tgz


class _CountingReader(io.RawIOBase):
    """Decompressed bytes, counted against the budget: a small .tgz that inflates to
    gigabytes stops at MAX_UNPACKED."""

    def __init__(self, inner: gzip.GzipFile, budget: _Budget, where: str):
        self.inner, self.budget, self.where = inner, budget, where

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        data = self.inner.read(len(buffer))
        self.budget.unpacked += len(data)
        if self.budget.unpacked > MAX_UNPACKED:
            raise ChartError(f"{self.where}: decompresses to more than {MAX_UNPACKED >> 20} "
                             "MiB; refused")
        buffer[: len(data)] = data
        return len(data)


def _dir_files(root: Path, budget: _Budget) -> dict[str, bytes]:
    """The same files as _archive_files, from a chart directory."""
    files: dict[str, bytes] = {}

    def visit(directory: Path, rel: str, depth: int) -> None:
        if depth > MAX_NESTING:
            raise ChartError(f"{directory}: subcharts nested more than {MAX_NESTING} deep")
        for name in _CHART_FILES:
            data = _read_file(directory / name, MAX_YAML + 1, budget)
            if data is not None:
                files[rel + name] = data
        try:
            entries = sorted(os.scandir(directory / "charts"), key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as e:
            raise EnvironmentFailure.from_os_error(e, str(directory / "charts")) from None
        for entry in entries:
            if entry.name.endswith(".tgz") and entry.is_file():
                data = _read_file(Path(entry.path), MAX_MEMBER, budget)
                if data is not None:
                    files[f"{rel}charts/{entry.name}"] = data
            elif entry.is_dir():
                visit(Path(entry.path), f"{rel}charts/{entry.name}/", depth + 1)

    visit(root, "", 0)
    return files


def _read_file(path: Path, cap: int, budget: _Budget) -> bytes | None:
    budget.members += 1
    if budget.members > MAX_MEMBERS:
        raise ChartError(f"{path}: more than {MAX_MEMBERS} chart files; refused")
    try:
        data = localfile.read_small(path, cap, "chart file")
    except FileNotFoundError:
        return None
    except OSError as e:
        raise EnvironmentFailure.from_os_error(e, str(path)) from None
    budget.unpacked += len(data)
    if budget.unpacked > MAX_UNPACKED:
        raise ChartError(f"{path}: the chart's files add up to more than "
                         f"{MAX_UNPACKED >> 20} MiB; refused")
    return data


def _from_files(files: dict[str, bytes], prefix: str, where: str, budget: _Budget,
                depth: int) -> _Chart:
    budget.charts += 1
    if budget.charts > MAX_CHARTS:
        raise ChartError(f"{where.rstrip(': /')}: more than {MAX_CHARTS} subcharts; refused")
    if depth > MAX_NESTING:
        raise ChartError(f"{where.rstrip(': /')}: subcharts nested more than {MAX_NESTING} "
                         "deep; refused")
    meta_where = f"{where}{prefix}Chart.yaml"
    if f"{prefix}Chart.yaml" not in files:
        raise ChartError(f"{meta_where}: no such file; not a chart")
    meta = parse_yaml(files[f"{prefix}Chart.yaml"], meta_where)
    name = _meta_text(meta.get("name"), f"{meta_where}: name")
    version = _meta_text(meta.get("version"), f"{meta_where}: version")
    if not name:
        raise ChartError(f"{meta_where}: no name")
    if not version:
        raise ChartError(f"{meta_where}: no version")
    app = _meta_text(meta.get("appVersion"), f"{meta_where}: appVersion")
    values_rel = f"{prefix}values.yaml"
    values = (parse_yaml(files[values_rel], f"{where}{values_rel}")
              if values_rel in files else {})
    deps = meta.get("dependencies")
    deps_where = meta_where
    if deps is None and f"{prefix}requirements.yaml" in files:  # apiVersion v1 charts
        deps_where = f"{where}{prefix}requirements.yaml"
        deps = parse_yaml(files[f"{prefix}requirements.yaml"], deps_where).get("dependencies")
    subs = _subcharts(files, prefix, where, budget, depth)
    return _Chart(where, name, version, app, values, _wire(subs, deps or [], deps_where))


def _subcharts(files: dict[str, bytes], prefix: str, where: str, budget: _Budget,
               depth: int) -> list[_Chart]:
    charts_dir = f"{prefix}charts/"
    found: list[_Chart] = []
    unpacked = sorted({rel[len(charts_dir):].split("/", 1)[0] for rel in files
                       if rel.startswith(charts_dir) and rel.count("/") > charts_dir.count("/")})
    for sub in unpacked:
        found.append(_from_files(files, f"{charts_dir}{sub}/", where, budget, depth + 1))
    for rel in sorted(files):
        if rel.startswith(charts_dir) and "/" not in rel[len(charts_dir):] and rel.endswith(
                ".tgz"):
            sub_where = f"{where}{rel}"
            sub_files = _archive_files(files[rel], sub_where, budget)
            found.append(_from_files(sub_files, "", f"{sub_where}: ", budget, depth + 1))
    return found


def _wire(subs: list[_Chart], deps: object, where: str) -> list[tuple[str, str | None, _Chart]]:
    """(values key, condition, subchart) for each subchart: a dependency's alias or name keys
    its values, its condition decides it; a subchart no dependency names is always on."""
    if not isinstance(deps, list):
        raise ChartError(f"{where}: dependencies: want a list")
    by_name = {s.name: s for s in subs}
    wired, used = [], set()
    for i, dep in enumerate(deps):
        at = f"{where}: dependencies[{i}]"
        name = _meta_text(dep.get("name"), f"{at}.name") if isinstance(dep, dict) else None
        if not name:
            raise ChartError(f"{at}: want a mapping with a name")
        sub = by_name.get(name)
        if sub is None:
            raise ChartError(f"{where}: dependency {quoted(name)} is not in charts/ "
                             "(`helm dependency build` puts it there)")
        used.add(sub.name)
        alias = _meta_text(dep.get("alias"), f"{at}.alias")
        wired.append((alias or sub.name, _meta_text(dep.get("condition"), f"{at}.condition"),
                      sub))
    wired.extend((s.name, None, s) for s in subs if s.name not in used)
    return wired


# ---- finding the images ---------------------------------------------------------------------


def _collect(chart: _Chart, user: dict, parent_global: dict | None, prefix: str,
             off: str | None, found: list[ChartImage]) -> None:
    """Coalesce `user` over the chart's defaults as Helm does, then list its images and those
    of its subcharts; `off` says why this chart is not deployed (None: it is)."""
    values = coalesce(user, chart.values)
    if parent_global is not None:  # Helm copies the parent's globals into each subchart
        values["global"] = coalesce(parent_global, _mapping(values.get("global")))
    sub_keys = {key for key, _, _ in chart.subcharts}
    skip = sub_keys | ({"global"} if parent_global is not None else set())
    registry = _mapping(values.get("global")).get("systemDefaultRegistry")
    registry = registry.rstrip("/") if isinstance(registry, str) and registry else None
    _walk(values, [], chart, prefix, off, registry, skip, found)
    for key, condition, sub in chart.subcharts:
        sub_off = off or _condition_off(condition, values)
        _collect(sub, _mapping(values.get(key)), _mapping(values.get("global")),
                 f"{prefix}{key}.", sub_off, found)


def _mapping(value: object) -> dict:
    return value if isinstance(value, dict) else {}


def _condition_off(condition: str | None, values: dict) -> str | None:
    """Helm's rule: the first path of the condition that holds a boolean decides."""
    if not condition:
        return None
    for path in condition.split(","):
        node: object = values
        for key in path.strip().split("."):
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, bool):
            return None if node else f"condition {path.strip()} is false"
    return None


def _walk(node: object, path: list[str], chart: _Chart, prefix: str, off: str | None,
          registry: str | None, skip: set[str], found: list[ChartImage]) -> None:
    if isinstance(node, list):
        for i, item in enumerate(node):
            _walk(item, path[:-1] + [f"{path[-1]}[{i}]"] if path else [f"[{i}]"], chart,
                  prefix, off, registry, skip, found)
        return
    if not isinstance(node, dict):
        return
    if path and "enabled" in node and not _truthy(node["enabled"]) and off is None:
        off = f"{prefix}{'.'.join(path)}.enabled is {_go_value(node['enabled'])}"
    if path and _is_image(path[-1], node):
        ref = _reference(node, f"{prefix}{'.'.join(path)}", chart, registry)
        found.append(ChartImage(ref, f"{prefix}{'.'.join(path)}", off))
        return
    for key, value in node.items():
        if not path and key in skip:
            continue
        _walk(value, path + [key], chart, prefix, off, registry, skip, found)


def _is_image(key: str, node: dict) -> bool:
    """Rancher's image mapping: a `repository` text with a tag, digest or registry beside it,
    or under a key named like an image (`image`, `initImage`)."""
    repository = node.get("repository")
    if not isinstance(repository, str) or "://" in repository:
        return False  # a URL: a git or Helm repository beside a tag, not an image
    bare = key.split("[", 1)[0]
    return any(k in node for k in ("tag", "digest", "registry")) or bare.lower().endswith("image")


def _truthy(value: object) -> bool:
    """Go templates' truth, as `{{ if .enabled }}` sees it."""
    return value not in (None, False, 0, "") and value != {} and value != []


def _go_value(value: object) -> str:
    """A value as a Go template prints it (fmt's %v): a float64 in Go's shortest form."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return helmyaml.go_format(value)
    return "null" if value is None else shown(value, quote=True, limit=NAME_LIMIT)


def _reference(node: dict, path: str, chart: _Chart, registry: str | None) -> Reference:
    where = f"{chart.where.rstrip(': /')}: {path}"
    repository = node["repository"]
    tag = _text(node.get("tag"), f"{where}.tag")
    if not tag:
        if chart.app_version is None:
            raise ChartError(f"{where}: no tag, and chart {chart.name} has no appVersion")
        tag = chart.app_version
    digest = _text(node.get("digest"), f"{where}.digest")
    own = _text(node.get("registry"), f"{where}.registry")
    host = registry or (own.rstrip("/") if own else None)
    text = f"{host + '/' if host else ''}{repository}:{tag}{'@' + digest if digest else ''}"
    try:
        return reference.parse(text)
    except InputError as e:
        raise ChartError(f"{where}: {e}") from None


def _text(value: object, where: str) -> str | None:
    """A tag, digest or registry as the template prints it; None when absent or empty.

    A YAML number reaches the template as a float64 (see helmyaml) and prints in Go's form,
    which is what the cluster then pulls: `tag: 1.10` renders 1.1, so the list says 1.1 too
    (a bundle of 1.10 would not be the image the pod asks for). A form no reference can hold
    (`20260101` prints 2.0260101e+07) is refused where the reference is parsed, naming the
    value path. An integer from --set prints as written."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, helmyaml.HelmNumber):
        return helmyaml.go_format(value)
    raise ChartError(f"{where}: want text, got {_go_value(value)} (quote it in YAML: a number "
                     "like 1.10 would print as 1.1)")
