"""`bundler images`: the images of charts shaped like rke2-multus, built here, packed and not."""

from __future__ import annotations

import gzip
import io
import os
import re
import tarfile
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bundler import chart, imagelist
from bundler.chart import ChartError
from bundler.errors import InputError
from tests.cli_helpers import assert_one_line_error, bundler

MULTUS = "docker.io/rancher/hardened-multus-cni"
PLUGINS = "docker.io/rancher/hardened-cni-plugins"
BUSYBOX = "docker.io/rancher/mirrored-library-busybox"
THICK = "docker.io/rancher/hardened-multus-thick"
DNC = "docker.io/rancher/hardened-multus-dynamic-networks-controller"
WHEREABOUTS = "docker.io/rancher/hardened-whereabouts"

# The shape of rke2-charts' packages/rke2-multus/charts/values.yaml (trimmed): images as
# repository + tag, optional components behind `enabled`, the DHCP daemonset behind
# manifests.dhcpDaemonSet (not an `enabled` flag, so its busybox is listed, as RKE2 does).
MULTUS_VALUES = """\
image:
  repository: rancher/hardened-multus-cni
  tag: {multus}
  pullPolicy: IfNotPresent
serviceAccount:
  name: multus
pod:
  resources:
    enabled: false
manifests:
  daemonSet: true
  dhcpDaemonSet: false
cniplugins:
  image:
    repository: rancher/hardened-cni-plugins
    tag: {plugins}
  skipcnis: flannel
dhcpDaemonSet:
  image:
    repository: rancher/mirrored-library-busybox
    tag: "1.36.1"
global:
  systemDefaultRegistry: ""
rke2-whereabouts:
  enabled: false
thickPlugin:
  enabled: false
  image:
    repository: rancher/hardened-multus-thick
    tag: {multus}
    pullPolicy: IfNotPresent
dynamicNetworksController:
  enabled: false
  image:
    repository: rancher/hardened-multus-dynamic-networks-controller
    tag: v0.3.7-build20260722
"""

MULTUS_CHART = """\
apiVersion: v2
appVersion: 4.3.0
dependencies:
- condition: rke2-whereabouts.enabled
  name: rke2-whereabouts
  repository: file://./charts/rke2-whereabouts
description: Multus Helm chart for Kubernetes
name: rke2-multus
type: application
version: {version}
"""

WHEREABOUTS_CHART = """\
apiVersion: v2
appVersion: v0.9.2-build20260722
name: rke2-whereabouts
version: 0.9.200
"""

# The subchart leaves its tag to appVersion, as whereabouts' own chart does.
WHEREABOUTS_VALUES = """\
image:
  repository: rancher/hardened-whereabouts
  pullPolicy: IfNotPresent
global:
  systemDefaultRegistry: ""
"""

OLD = {"version": "v4.3.008", "multus": "v4.3.0-build20260722",
       "plugins": "v1.9.1-build20260717"}
NEW = {"version": "v4.3.017", "multus": "v4.3.0-build20260819",
       "plugins": "v1.9.1-build20260819"}
SHIPPED = [f"{MULTUS}:v4.3.0-build20260722", f"{PLUGINS}:v1.9.1-build20260717",
           f"{BUSYBOX}:1.36.1"]


def make_chart(root: Path, pins: dict = OLD, packed_sub: bool = False) -> Path:
    """An rke2-multus-like chart directory at root/rke2-multus, its whereabouts subchart
    unpacked in charts/ or (packed_sub) as charts/rke2-whereabouts-0.9.200.tgz."""
    top = root / "rke2-multus"
    (top / "charts").mkdir(parents=True)
    (top / "Chart.yaml").write_text(MULTUS_CHART.format(**pins))
    (top / "values.yaml").write_text(MULTUS_VALUES.format(**pins))
    (top / "templates").mkdir()
    (top / "templates" / "daemonSet.yaml").write_text("# {{ .Values.image.repository }}\n")
    sub = root / "rke2-whereabouts"
    sub.mkdir()
    (sub / "Chart.yaml").write_text(WHEREABOUTS_CHART)
    (sub / "values.yaml").write_text(WHEREABOUTS_VALUES)
    if packed_sub:
        pack(sub, top / "charts" / "rke2-whereabouts-0.9.200.tgz")
    else:
        sub.rename(top / "charts" / "rke2-whereabouts")
    return top


def pack(directory: Path, dest: Path) -> Path:
    """`helm package`: a gzip tar with everything under the chart's name."""
    with tarfile.open(dest, "w:gz") as tar:
        tar.add(directory, arcname=directory.name)
    return dest


def refs(text: str) -> list[str]:
    return [line.split("#", 1)[0].strip() for line in text.splitlines()
            if line.split("#", 1)[0].strip()]


@pytest.fixture(params=["directory", "tgz", "tgz-packed-sub"])
def multus(request, tmp_path) -> Path:
    top = make_chart(tmp_path, packed_sub=request.param == "tgz-packed-sub")
    if request.param == "directory":
        return top
    return pack(top, tmp_path / "rke2-multus-v4.3.008.tgz")


def listed(chart_path: Path, *args: str, include_disabled: bool = False) -> list[str]:
    values = [a.split("=", 1)[1] for a in args if a.startswith("--values=")]
    sets = [a.split("=", 1)[1] for a in args if a.startswith("--set=")]
    found = chart.images(chart_path, values, sets)
    return [str(i.reference) for i in found.selected(include_disabled)]


# ---- what is found ---------------------------------------------------------------------------


def test_default_lists_the_enabled_images_rke2_ships(multus):
    assert listed(multus) == SHIPPED
    out = chart.format_images(chart.images(multus))
    assert out.splitlines()[0].startswith("# rke2-multus v4.3.008: ")
    assert "templates are not rendered" in out.splitlines()[0]
    assert refs(out) == SHIPPED


def test_enabling_a_component_and_the_subchart(multus):
    got = listed(multus, "--set=thickPlugin.enabled=true", "--set=rke2-whereabouts.enabled=true")
    assert got == [*SHIPPED[:2], f"{BUSYBOX}:1.36.1", f"{THICK}:v4.3.0-build20260722",
                   f"{WHEREABOUTS}:v0.9.2-build20260722"]


def test_subchart_tag_defaults_to_its_own_app_version_and_parent_overrides_it(multus):
    on = "--set=rke2-whereabouts.enabled=true"
    assert listed(multus, on)[-1] == f"{WHEREABOUTS}:v0.9.2-build20260722"
    got = listed(multus, on, "--set=rke2-whereabouts.image.tag=v0.9.3")
    assert got[-1] == f"{WHEREABOUTS}:v0.9.3"


def test_missing_tag_on_the_parent_is_its_app_version(tmp_path):
    top = make_chart(tmp_path)
    values = top / "values.yaml"
    values.write_text(values.read_text().replace("  tag: v4.3.0-build20260722\n  pullPolicy",
                                                 "  pullPolicy", 1))
    assert listed(top)[0] == f"{MULTUS}:4.3.0"


def test_values_files_merge_in_order_and_set_comes_last(multus, tmp_path):
    a = tmp_path / "a.yaml"
    a.write_text("image:\n  tag: from-a\ncniplugins:\n  image:\n    tag: from-a\n")
    b = tmp_path / "b.yaml"
    b.write_text("image:\n  tag: from-b\ndhcpDaemonSet: null\n")
    got = listed(multus, f"--values={a}", f"--values={b}", "--set=cniplugins.image.tag=from-set")
    # b wins over a, --set over both; a null removes the chart's dhcpDaemonSet altogether.
    assert got == [f"{MULTUS}:from-b", f"{PLUGINS}:from-set"]


def test_system_default_registry_applies_to_the_chart_and_its_subcharts(multus):
    got = listed(multus, "--set=global.systemDefaultRegistry=registry.internal:5000",
                 "--set=rke2-whereabouts.enabled=true")
    assert got == [r.replace("docker.io/", "registry.internal:5000/") for r in SHIPPED] + [
        "registry.internal:5000/rancher/hardened-whereabouts:v0.9.2-build20260722"]


def test_registry_and_digest_fields(tmp_path):
    top = make_chart(tmp_path)
    digest = "sha256:" + "ab" * 32
    (tmp_path / "v.yaml").write_text(
        f"image:\n  registry: quay.io\n  digest: {digest}\n")
    got = listed(top, f"--values={tmp_path / 'v.yaml'}")
    assert got[0] == f"quay.io/rancher/hardened-multus-cni:v4.3.0-build20260722@{digest}"


def test_a_url_repository_is_not_an_image(tmp_path):
    top = make_chart(tmp_path)
    (tmp_path / "v.yaml").write_text(
        "source:\n  repository: https://github.com/k8snetworkplumbingwg/multus-cni\n"
        "  tag: v4.3.0\n")
    assert listed(top, f"--values={tmp_path / 'v.yaml'}") == SHIPPED


def test_a_false_condition_wins_over_the_subcharts_own_enabled(tmp_path):
    top = make_chart(tmp_path)
    (top / "charts" / "rke2-whereabouts" / "values.yaml").write_text(
        WHEREABOUTS_VALUES + "enabled: true\n")
    assert WHEREABOUTS not in " ".join(listed(top))


def test_all_lists_every_image_with_its_value_path(multus):
    out = chart.format_images(chart.images(multus), include_disabled=True)
    lines = out.splitlines()
    assert "every component" in lines[0]
    assert lines[1:] == [
        f"{MULTUS}:v4.3.0-build20260722  # image",
        f"{PLUGINS}:v1.9.1-build20260717  # cniplugins.image",
        f"{BUSYBOX}:1.36.1  # dhcpDaemonSet.image",
        f"{THICK}:v4.3.0-build20260722  # thickPlugin.image (off: thickPlugin.enabled is false)",
        f"{DNC}:v0.3.7-build20260722  # dynamicNetworksController.image "
        "(off: dynamicNetworksController.enabled is false)",
        f"{WHEREABOUTS}:v0.9.2-build20260722  # rke2-whereabouts.image "
        "(off: condition rke2-whereabouts.enabled is false)",
    ]
    # What --all prints is an image list bundler reads.
    assert len(imagelist.parse(out, "all.txt")) == 6


# ---- the command line ------------------------------------------------------------------------


def test_cli_prints_the_list_and_says_templates_are_not_rendered(multus):
    run = bundler("images", "--chart", str(multus))
    assert run.code == 0, run
    assert refs(run.stdout) == SHIPPED
    helptext = bundler("images", "--help").stdout
    assert "Templates are NOT rendered" in " ".join(helptext.split())


def test_check_in_step_exits_0(multus, tmp_path):
    images_txt = Path(__file__).parent.parent / "images.txt"
    run = bundler("images", "--chart", str(multus), "--check", str(images_txt))
    assert run.code == 0, run
    assert run.stdout.startswith(f"OK {images_txt}: in step with rke2-multus v4.3.008")
    # Its header says which chart it follows and how to check it against another (item 5).
    header = " ".join(line for line in images_txt.read_text().splitlines()
                      if line.startswith("#"))
    assert "rke2-multus chart RKE2 ships, v4.3.008" in header
    assert "bundler images --chart rke2-multus-vX.Y.Z.tgz --check images.txt" in header


def test_check_against_a_newer_chart_reports_each_drift(tmp_path):
    top = make_chart(tmp_path, NEW)
    listing = tmp_path / "images.txt"
    listing.write_text("\n".join(SHIPPED + ["docker.io/rancher/extra:1"]) + "\n")
    run = bundler("images", "--chart", str(top), "--set", "thickPlugin.enabled=true",
                  "--check", str(listing))
    assert run.code == 1, run
    assert run.stdout.splitlines() == [
        f"{listing}: {MULTUS}: the chart pins :v4.3.0-build20260819 (image), "
        f"the list has :v4.3.0-build20260722",
        f"{listing}: {PLUGINS}: the chart pins :v1.9.1-build20260819 (cniplugins.image), "
        f"the list has :v1.9.1-build20260717",
        f"{listing}: missing from the list: {THICK}:v4.3.0-build20260819 "
        "(chart value thickPlugin.image)",
        f"{listing}: not pinned by the chart: docker.io/rancher/extra:1",
    ]


def test_check_sees_another_digest_as_drift():
    digest = "sha256:" + "cd" * 32
    ours = [chart.ChartImage(imagelist.reference.parse(f"{MULTUS}:v1@{digest}"), "image")]
    assert chart.check(ours, [imagelist.reference.parse(f"{MULTUS}:v1")]) == [
        f"{MULTUS}: the chart pins :v1@{digest} (image), the list has :v1"]
    assert chart.check(ours, [imagelist.reference.parse(f"{MULTUS}:v1@{digest}")]) == []


# ---- bad and hostile input: one line, naming the chart and the value -------------------------


def test_a_numeric_tag_comes_out_as_helm_renders_it(tmp_path):
    # Helm renders the YAML number 1.10 as 1.1: that is the image the pod pulls.
    top = make_chart(tmp_path)
    values = top / "values.yaml"
    values.write_text(values.read_text().replace('tag: "1.36.1"', "tag: 1.10"))
    tgz = pack(top, tmp_path / "c.tgz")
    run = bundler("images", "--chart", str(tgz))
    assert run.code == 0, run.stderr
    assert "docker.io/rancher/mirrored-library-busybox:1.1\n" in run.stdout
    # One Go prints in a form no tag can hold is refused, naming the value path.
    values.write_text(values.read_text().replace("tag: 1.10", "tag: 20260101"))
    run = bundler("images", "--chart", str(top))
    assert_one_line_error(run, "dhcpDaemonSet.image")
    assert run.code == 2


def test_bad_repository_names_the_value_path(tmp_path):
    top = make_chart(tmp_path)
    run = bundler("images", "--chart", str(top), "--set", "rke2-whereabouts.enabled=true",
                  "--set", "rke2-whereabouts.image.repository=Bad/Name")
    assert_one_line_error(run, "rke2-whereabouts.image", "invalid repository name")


def test_a_dependency_missing_from_charts_is_named(tmp_path):
    top = make_chart(tmp_path)
    for f in (top / "charts" / "rke2-whereabouts").iterdir():
        f.unlink()
    (top / "charts" / "rke2-whereabouts").rmdir()
    run = bundler("images", "--chart", str(top))
    assert_one_line_error(run, f"{top}/Chart.yaml", "'rke2-whereabouts' is not in charts/")


def test_not_a_chart(tmp_path):
    (tmp_path / "x.tgz").write_bytes(b"not gzip at all")
    assert_one_line_error(bundler("images", "--chart", str(tmp_path / "x.tgz")),
                          "not a gzip-compressed chart archive")
    assert_one_line_error(bundler("images", "--chart", str(tmp_path / "nope.tgz")),
                          "no such chart")
    assert_one_line_error(bundler("images", "--chart", str(tmp_path)),
                          f"{tmp_path}/Chart.yaml: no such file; not a chart")


def hostile(tmp_path: Path, *members: tuple[tarfile.TarInfo, bytes]) -> Path:
    """A chart .tgz with a good Chart.yaml and the given members."""
    dest = tmp_path / "hostile.tgz"
    with tarfile.open(dest, "w:gz") as tar:
        meta = MULTUS_CHART.format(**OLD).split("dependencies:")[0] + "name: x\nversion: 1\n"
        for info, data in [(_file("c/Chart.yaml", meta.encode()), meta.encode()), *members]:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return dest


def _file(name: str, data: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info


def _link(name: str, target: str, kind: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, b""


LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"l{i}: &l{i} [{', '.join([f'*{p}'] * 10)}]\n"
    for i, p in enumerate(["a"] + [f"l{j}" for j in range(1, 9)], 1))


@pytest.mark.parametrize("members, message", [
    ([_link("c/values.yaml", "/etc/passwd", tarfile.SYMTYPE)],
     "member 'c/values.yaml' is a link"),
    ([_link("c/values.yaml", "c/Chart.yaml", tarfile.LNKTYPE)],
     "member 'c/values.yaml' is a link"),
    ([(_file("c/../../evil.yaml", b"x: 1\n"), b"x: 1\n")], "reaches outside the chart (..)"),
    ([(_file("/c/values.yaml", b"x: 1\n"), b"x: 1\n")], "has an absolute name"),
    ([(_file("c/templates/big.yaml", bytes(chart.MAX_MEMBER + 1)),
       bytes(chart.MAX_MEMBER + 1))], f"more than {chart.MAX_MEMBER >> 20} MiB; refused"),
    # Files just under the per-file cap, one more than MAX_UNPACKED holds.
    ([(_file(f"c/templates/{i}.bin", bytes(4 << 20)), bytes(4 << 20))
      for i in range(chart.MAX_UNPACKED // (4 << 20) + 1)],
     f"decompresses to more than {chart.MAX_UNPACKED >> 20} MiB"),
    ([(_file("c/values.yaml", LAUGHS.encode()), LAUGHS.encode())],
     "hostile.tgz: values.yaml: more than 500000 values, counting each use of an alias"),
    ([(_file("c/values.yaml", b"a: &a\n  b: *a\n"), b"a: &a\n  b: *a\n")],
     "nested more than 100 levels deep"),
    ([(_file("c/values.yaml", b"x: 1\n"), b"x: 1\n")] * 2, "appears twice"),
])
def test_hostile_archives_are_refused_in_one_line(tmp_path, members, message):
    tgz = hostile(tmp_path, *members)
    run = bundler("images", "--chart", str(tgz), timeout=60)
    assert_one_line_error(run, str(tgz), message)
    assert run.code == 2
    assert not (tmp_path / "evil.yaml").exists() and not (tmp_path / "c").exists()


def test_hostile_packed_subchart_is_named_inside_its_parent(tmp_path):
    sub = hostile(tmp_path, _link("s/values.yaml", "/etc/shadow", tarfile.SYMTYPE))
    top = make_chart(tmp_path / "p")
    (top / "Chart.yaml").write_text(MULTUS_CHART.format(**OLD).split("dependencies:")[0]
                                    + "name: rke2-multus\nversion: 1\n")
    sub.rename(top / "charts" / "bad.tgz")
    tgz = pack(top, tmp_path / "parent.tgz")
    assert_one_line_error(bundler("images", "--chart", str(tgz)),
                          f"{tgz}: charts/bad.tgz: member 's/values.yaml' is a link")


def test_values_file_bounds(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("x: " + "y" * chart.MAX_YAML + "\n")
    with pytest.raises(InputError, match="too large for a values file"):
        chart.read_values(big)
    (tmp_path / "list.yaml").write_text("- a\n")
    with pytest.raises(ChartError, match="list.yaml: not a YAML mapping"):
        chart.read_values(tmp_path / "list.yaml")
    (tmp_path / "bad.yaml").write_text("a: [\n")
    with pytest.raises(ChartError, match=r"bad.yaml:2: not valid YAML"):
        chart.read_values(tmp_path / "bad.yaml")


# ---- --set and Helm's merge rules ------------------------------------------------------------


@pytest.mark.parametrize("text, value", [
    ("a.b=v1", {"a": {"b": "v1"}}),
    ("image.tag=1.36", {"image": {"tag": "1.36"}}),
    ("image.tag=20260101", {"image": {"tag": 20260101}}),
    ("image.tag=007", {"image": {"tag": "007"}}),
    ("x=0", {"x": 0}),
    ("x=-5", {"x": -5}),
    ("x=1_0", {"x": "1_0"}),
    ("x=9223372036854775808", {"x": "9223372036854775808"}),
    ("x=True", {"x": True}),
    ("x=NULL", {"x": None}),
    ("x=", {"x": ""}),
    (r"a\.b.c=1\,2", {"a.b": {"c": "1,2"}}),
    ("a=b=c", {"a": "b=c"}),
])
def test_set_examples(text, value):
    assert chart.parse_set(text) == value


@pytest.mark.parametrize("text, message", [
    ("novalue", "want KEY=VALUE"),
    ("a..b=1", "empty key"),
    ("=1", "empty key"),
    ("a[0]=1", "lists and several assignments"),
    ("a=1,b=2", "several assignments"),
    ("a={x,y}", "list values"),
])
def test_set_refusals(text, message):
    with pytest.raises(ChartError, match=re.escape(message)):
        chart.parse_set(text)


def _escape(text: str, specials: str) -> str:
    return "".join(f"\\{c}" if c in specials + "\\" else c for c in text)


def _helm_typed(value: str) -> object:
    """Helm strvals' typedVal, restated from its source."""
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    if value.lower() == "null":
        return None
    if value == "0":
        return 0
    if value and value[0] != "0" and re.fullmatch(r"[+-]?[0-9]+", value, re.ASCII):
        n = int(value)
        if -(1 << 63) <= n < (1 << 63):
            return n
    return value


keys = st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=5)
raw_values = st.one_of(st.text(max_size=12), st.sampled_from(
    ["true", "FALSE", "null", "0", "007", "-12", "+3", "1.5", "9" * 19, "1_0", "٣"]))


@settings(max_examples=300, deadline=None)
@given(keys, raw_values)
@example(["0"], "{")  # found in a CI-like run: a value that starts like Helm's list syntax
def test_set_parses_any_escaped_key_path_and_value(path, value):
    raw = _escape(value, ",")
    raw = "\\" + raw if raw.startswith("{") else raw  # a leading { would be Helm's list syntax
    text = ".".join(_escape(k, ".=[,") for k in path) + "=" + raw
    expected: object = _helm_typed(value)
    for key in reversed(path):
        expected = {key: expected}
    assert chart.parse_set(text) == expected


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=20))
def test_set_never_fails_other_than_with_chart_error(text):
    try:
        result = chart.parse_set(text)
    except ChartError as e:
        assert "\n" not in str(e)
    else:
        assert isinstance(result, dict) and len(result) == 1


scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=4))
trees = st.recursive(scalars, lambda inner: st.dictionaries(
    st.sampled_from("abcd"), inner, max_size=4), max_leaves=12)
maps = st.dictionaries(st.sampled_from("abcd"), trees, max_size=4)


def _leaves(tree: dict, prefix: tuple = ()) -> dict[tuple, object]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):  # an empty mapping merges to nothing: not a leaf
            out.update(_leaves(v, prefix + (k,)))
        else:
            out[prefix + (k,)] = v
    return out


def _get(tree: object, path: tuple) -> object:
    for k in path:
        tree = tree[k]  # type: ignore[index]
    return tree


@settings(max_examples=300, deadline=None)
@given(maps, maps)
def test_merge_values_is_helms_merge(a, b):
    snapshot = repr((a, b))
    merged = chart.merge_values(a, b)
    assert repr((a, b)) == snapshot  # inputs unchanged
    for path, value in _leaves(b).items():  # every leaf of the later file wins
        assert _get(merged, path) == value
    for key, value in a.items():  # what the later file does not mention stays
        if key not in b:
            assert merged[key] == value
    assert merged.keys() == a.keys() | b.keys()
    assert chart.merge_values(a, {}) == a and chart.merge_values({}, b) == b
    assert chart.merge_values(a, a) == a


@settings(max_examples=300, deadline=None)
@given(maps, maps)
def test_coalesce_is_helms_user_over_defaults(user, defaults):
    snapshot = repr((user, defaults))
    out = chart.coalesce(user, defaults)
    assert repr((user, defaults)) == snapshot
    for path, value in _leaves(user).items():
        if value is None:  # a null removes the key, whatever the defaults have there
            parent = _get(out, path[:-1]) if path[:-1] else out
            assert not isinstance(parent, dict) or path[-1] not in parent
        else:
            assert _get(out, path) == value
    for key, value in defaults.items():  # defaults the user does not mention stay
        if key not in user:
            assert out[key] == value


def test_directory_charts_symlink_loop_and_fifo(tmp_path):
    top = tmp_path / "loop"
    (top / "charts").mkdir(parents=True)
    (top / "Chart.yaml").write_text("name: loop\nversion: 1\n")
    (top / "charts" / "self").symlink_to("..")
    assert_one_line_error(bundler("images", "--chart", str(top), timeout=60),
                          "subcharts nested more than 10 deep")
    (top / "charts" / "self").unlink()
    os.mkfifo(top / "values.yaml")
    assert_one_line_error(bundler("images", "--chart", str(top), timeout=60),
                          f"{top}/values.yaml: not a regular file (a FIFO)")


def _chart_tar(tmp_path: Path) -> bytes:
    top = make_chart(tmp_path, packed_sub=True)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path in sorted(top.rglob("*")):
            if path.is_file() and "templates" not in path.parts:
                tar.add(path, arcname=f"rke2-multus/{path.relative_to(top)}")
    return buf.getvalue()


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_mutated_archives_give_images_or_one_chart_error(tmp_path_factory, data):
    base = _chart_tar(tmp_path_factory.mktemp("base"))
    raw = bytearray(base)
    for _ in range(data.draw(st.integers(1, 8))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    dest = tmp_path_factory.mktemp("m") / "m.tgz"
    dest.write_bytes(gzip.compress(bytes(raw), mtime=0))
    try:
        chart.images(dest)
    except ChartError as e:
        assert "\n" not in str(e) and str(dest) in str(e)
