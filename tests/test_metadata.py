"""bundleformat.metadata: a bundle's metadata members read into typed entries, with the
problems found, never an exception; the strict policy (bundle source, inspect, push) refuses
what the collecting one (verify) finds wrong."""

from __future__ import annotations

import gzip
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bundler import reference
from bundler.bundleformat import archive, metadata
from bundler.checks.layout import Blob, Layout
from bundler.errors import InputError
from bundler.platform import Platform
from tests import imagegen as gen

NAMES = ["docker.io/rancher/x:1", "docker.io/rancher/y:2"]


def _images():
    made = [gen.image([gen.tar_layer([("file", f"f{i}", b"x" * (i + 1))])], oci=True)
            for i in range(2)]
    return made, [gen.model(m, n) for m, n in zip(made, NAMES, strict=True)]


MADE, IMAGES = _images()


def _members(images=IMAGES) -> dict[str, bytes]:
    return {archive.OCI_LAYOUT: archive.oci_layout(), archive.INDEX: archive.index_json(images),
            archive.DOCKER_MANIFEST: archive.manifest_json(images),
            archive.REPOSITORIES: archive.repositories_json(images)}


def _blobs() -> dict[str, Blob]:
    blobs = {}
    for made in MADE:
        for data in (made.manifest, made.config):
            blobs[gen.digest(data)] = Blob(len(data), gen.digest(data), data)
        for (data, _), diff_id in zip(made.layers, made.diff_ids, strict=True):
            tar = gzip.decompress(data)
            blobs[gen.digest(data)] = Blob(len(data), diff_id, None, "gzip", tar[:512])
    return blobs


def _edited(member: str, change) -> dict[str, bytes]:
    members = _members()
    doc = json.loads(members[member])
    change(doc)
    return {**members, member: json.dumps(doc).encode()}


def test_a_bundles_metadata_reads_into_typed_entries():
    meta = metadata.read(_members())
    assert meta.problems == () and meta.refusal is None and meta.warnings == ()
    assert meta.listed == 2 and [e.position for e in meta.entries] == [0, 1]
    for entry, image in zip(meta.entries, IMAGES, strict=True):
        assert entry.name == str(image.reference) and entry.reference == image.reference
        assert entry.manifest == image.manifest_descriptor
        assert entry.platform == Platform("linux", "amd64") and entry.platform_problem is None
        assert entry.ref_name == entry.name
        assert entry.config_digest == image.config_descriptor.digest
        assert entry.layer_digests == tuple(x.descriptor.digest for x in image.layers)
    assert meta.by_name() == {n: i.manifest_digest for n, i in zip(NAMES, IMAGES, strict=True)}
    assert meta.docker == tuple(json.loads(archive.manifest_json(IMAGES)))
    assert metadata.read_strict(_members(), "b.tar.zst") == meta


def _name(value):
    return lambda doc: doc["manifests"][1]["annotations"].update(
        {archive.ANNOTATION_IMAGE_NAME: value})


@pytest.mark.parametrize(("member", "change", "problem"), [
    (archive.INDEX, lambda d: d["manifests"].insert(0, None),
     "index.json: manifests[0]: not an object"),
    (archive.INDEX, lambda d: d["manifests"][1].pop("annotations"),
     "index.json: manifests[1]: annotations is not an object"),
    (archive.INDEX, lambda d: d["manifests"][1]["annotations"].pop(
        archive.ANNOTATION_IMAGE_NAME),
     "index.json: manifests[1]: io.containerd.image.name None: missing or not a string"),
    (archive.INDEX, _name("x\x1b[2J"), "index.json: manifests[1]: io.containerd.image.name "
     "'x\\x1b[2J': "),
    (archive.INDEX, lambda d: d["manifests"][1].update(size=-1),
     "index.json: manifests[1]: descriptor size -1 is not a byte count"),
    (archive.INDEX, lambda d: d.update(manifests=[]), "index.json: lists no manifests"),
    (archive.DOCKER_MANIFEST, lambda d: d.pop(),
     "manifest.json: does not list the 2 images of index.json"),
    (archive.DOCKER_MANIFEST, lambda d: d.__setitem__(1, None),
     f"manifest.json: entry 1 ({NAMES[1]}): not an object"),
    (archive.DOCKER_MANIFEST, lambda d: d[1].update(Config="etc/passwd"),
     f"manifest.json: entry 1 ({NAMES[1]}): Config etc/passwd is not a blob path"),
    (archive.DOCKER_MANIFEST, lambda d: d[1].update(Layers=None),
     f"manifest.json: entry 1 ({NAMES[1]}): no Layers list"),
    (archive.DOCKER_MANIFEST, lambda d: d[1]["Layers"].append("blobs/sha256/xyz"),
     f"manifest.json: entry 1 ({NAMES[1]}): Layers entry blobs/sha256/xyz is not a blob path"),
    (archive.OCI_LAYOUT, lambda d: d.update(imageLayoutVersion="2"),
     "oci-layout: not an OCI layout 1.0.0 marker"),
])
def test_each_problem_names_the_member_and_the_entry(member, change, problem):
    meta = metadata.read(_edited(member, change))
    assert meta.problems and meta.problems[0].startswith(problem), meta.problems
    assert meta.refusal == meta.problems[0]
    with pytest.raises(InputError) as e:
        metadata.read_strict(_edited(member, change), "b.tar.zst")
    assert str(e.value) == f"b.tar.zst: {meta.problems[0]}"


def test_bad_json_and_missing_members_are_problems_not_exceptions():
    members = {archive.INDEX: b"{", archive.DOCKER_MANIFEST: b"[]"}
    assert metadata.read(members).problems == (
        "oci-layout: missing", "repositories: missing",
        "index.json: bad JSON (Expecting property name enclosed in double quotes: line 1 "
        "column 2 (char 1))", "index.json: lists no manifests")


def test_an_entry_that_does_not_read_leaves_the_others():
    meta = metadata.read(_edited(archive.INDEX, lambda d: d["manifests"][0].update(size=-1)))
    assert [e.name for e in meta.entries] == [NAMES[1]] and meta.listed == 2
    assert meta.by_name() == {NAMES[0]: None, NAMES[1]: IMAGES[1].manifest_digest}
    # manifest.json's side of an entry that reads is read all the same
    assert meta.entries[0].config_digest == IMAGES[1].config_descriptor.digest


def test_a_declared_platform_that_is_no_name_is_kept_as_written_and_refused_by_the_strict():
    members = _edited(archive.INDEX, lambda d: d["manifests"][0]["platform"].update(
        architecture="amd64\nOK"))
    meta = metadata.read(members)
    assert meta.problems == ()  # verify says it against the config's platform
    assert meta.entries[0].platform == Platform("linux", "amd64\nOK")
    assert meta.refusal == (f"index.json: manifests[0] ({NAMES[0]}): platform architecture "
                            "'amd64\\nOK' is not a platform name (letters, digits, '.', '_', "
                            "'-'; at most 64)")


def test_short_names_and_shared_ref_names_read_the_rest_is_the_checkers():
    members = _edited(archive.INDEX, lambda d: [m["annotations"].update(
        {archive.ANNOTATION_IMAGE_NAME: "rancher/x:1",
         archive.ANNOTATION_REF_NAME: "1"}) for m in d["manifests"]])
    meta = metadata.read(members)
    assert meta.problems == ()
    assert [e.name for e in meta.entries] == ["rancher/x:1"] * 2
    assert meta.entries[0].reference == reference.parse("docker.io/rancher/x:1")
    assert len(meta.warnings) == 1 and "share org.opencontainers.image.ref.name 1" in \
        meta.warnings[0]


# -- any bytes in ---------------------------------------------------------------------------

# Values of the kinds the members hold, right or nearly so, besides any.
_HEX = "a" * 64
words = st.sampled_from([
    "docker.io/rancher/x:1", "rancher/x:1", "docker.io/rancher/y:2", "x@sha256:" + _HEX,
    "blobs/sha256/" + _HEX, "blobs/sha256/x", "sha256:" + _HEX, "linux", "amd64", "l\x1b",
    "", "1.0.0", "application/vnd.oci.image.manifest.v1+json"])
# null (Go reads it as absent, anywhere) and the members' own words, as often as the rest.
json_values = st.none() | words | st.recursive(
    st.none() | st.booleans() | st.integers(-2, 1 << 64) | st.text(max_size=12) | words,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from([
        "manifests", "annotations", "platform", "os", "architecture", "variant", "digest",
        "size", "mediaType", "Config", "Layers", "RepoTags", archive.ANNOTATION_IMAGE_NAME,
        archive.ANNOTATION_REF_NAME, "imageLayoutVersion"]), inner, max_size=4),
    max_leaves=12)


def _paths(doc: object, at: tuple = ()) -> list[tuple]:
    """Every path to a value inside `doc`."""
    out = [at]
    if isinstance(doc, dict):
        for key, value in doc.items():
            out += _paths(value, (*at, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            out += _paths(value, (*at, i))
    return out


@st.composite
def twisted_members(draw) -> dict[str, bytes]:
    """The right members with a few of their values replaced by any JSON, members dropped,
    or a member's bytes replaced by any bytes."""
    members = _members()
    for _ in range(draw(st.integers(1, 3))):
        name = draw(st.sampled_from([archive.INDEX] * 3 + [archive.DOCKER_MANIFEST] * 2
                                    + [archive.OCI_LAYOUT, archive.REPOSITORIES]))
        how = draw(st.sampled_from(["value", "value", "value", "bytes", "drop"]))
        if how == "drop":
            members.pop(name, None)
        elif how == "bytes" or name not in members:
            members[name] = draw(st.binary(max_size=64))
        else:
            try:
                doc = json.loads(members[name])
            except ValueError:
                continue
            paths = _paths(doc)
            if draw(st.booleans()):  # the entries themselves, as often as their insides
                paths = [p for p in paths if len(p) <= 2]
            at = draw(st.sampled_from(paths))
            new = draw(json_values)
            if not at:
                doc = new
            else:
                parent = doc
                for key in at[:-1]:
                    parent = parent[key]
                parent[at[-1]] = new
            members[name] = json.dumps(doc).encode()
    return members


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(twisted_members())
def test_any_members_are_a_model_or_problems_and_the_policies_agree(members):
    meta = metadata.read(members)  # never raises
    assert all("\n" not in p for p in meta.problems)
    try:
        strict = metadata.read_strict(members, "b.tar.zst")
    except InputError as e:
        assert meta.refusal and str(e) == f"b.tar.zst: {meta.refusal}"
        refused = True
    else:
        assert strict == meta and meta.refusal is None
        refused = False
        # read whole: every entry, with what manifest.json says of it
        assert len(meta.entries) == meta.listed > 0 and meta.docker is not None
        assert all(e.config_digest for e in meta.entries)
    # verify, with every blob there, finds a problem in every bundle the strict reader refuses
    problems: list[str] = []
    Layout(members, _blobs(), problems.append).check(None)
    assert not refused or problems, meta.refusal


def test_without_entries_to_read_none_are_listed():
    members = _members()
    del members[archive.INDEX]
    assert metadata.read(members).listed == 0
    empty = _edited(archive.INDEX, lambda d: d.update(manifests=[]))
    meta = metadata.read(empty)
    assert meta.listed == 0 and meta.entries == ()
    assert f"{archive.INDEX}: lists no manifests" in meta.problems


@pytest.mark.parametrize("more", ["0", "\n"])
def test_a_layer_path_with_more_after_its_digest_is_no_blob_path(more):
    # "\n" too: a regular expression's $ matches before a final newline.
    def longer(doc):
        doc[0]["Layers"][0] += more
    meta = metadata.read(_edited(archive.DOCKER_MANIFEST, longer))
    assert any("is not a blob path" in p for p in meta.docker_problems), meta.problems
