"""Properties of platform choice: the right manifest out of any index a registry sends."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bundler import platform
from bundler.errors import InputError, PlatformError, RegistryError

arch_names = st.sampled_from(sorted(platform.ARCHITECTURES))


@st.composite
def arches(draw) -> str:
    """A name for_arch accepts: ARCH or ARCH/VARIANT."""
    name = draw(arch_names)
    variants = platform.ARCHITECTURES[name]
    if variants and draw(st.booleans()):
        return f"{name}/{draw(st.sampled_from(variants))}"
    return name


# Few names, so that an index often holds several entries a platform could take.
oses = st.sampled_from(["linux", "linux", "windows", "unknown"])
entry_arches = st.sampled_from(["amd64", "arm64", "arm", "s390x", "unknown"])
variants = st.sampled_from([None, "v5", "v6", "v7", "v8", "v1", "v2", "v3", "v9"])


@st.composite
def entries(draw) -> dict:
    arch = draw(entry_arches)
    p = {"os": draw(oses), "architecture": arch}
    variant = draw(variants)
    if variant:
        p["variant"] = variant
    entry = {"mediaType": "application/vnd.oci.image.manifest.v1+json",
             "digest": f"sha256:{draw(st.integers(0, 10**9)):064x}", "size": 1, "platform": p}
    if draw(st.integers(0, 5)) == 0:
        entry["annotations"] = {"vnd.docker.reference.type": "attestation-manifest"}
    return entry


@settings(max_examples=300, deadline=None)
@given(arches())
def test_known_names_give_the_platform_they_name(arch):
    want = platform.for_arch(arch)
    assert str(want) == f"linux/{arch}"
    assert platform.matches(want, platform.read(want.as_json()))


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=30))
def test_any_name_is_a_platform_or_an_input_error(text):
    try:
        want = platform.for_arch(text)
    except InputError as e:
        assert "\n" not in str(e)
        return
    assert want.architecture in platform.ARCHITECTURES


# The rules again, written independently of platform.py, so that a fault there shows here:
# buildx marks attestations by annotation, or by platform unknown/unknown; an absent variant is
# containerd's default one (platforms.normalizeArch).
_DEFAULTS = {"amd64": "v1", "arm64": "v8", "arm": "v7"}


def _attestation(entry: dict) -> bool:
    p = entry["platform"]
    return "vnd.docker.reference.type" in entry.get("annotations", {}) or (
        p["os"] == "unknown" and p["architecture"] == "unknown")


def _serves(want: platform.Platform, p: dict) -> bool:
    default = _DEFAULTS.get(p["architecture"])
    return (p["os"], p["architecture"]) == (want.os, want.architecture) and (
        (want.variant or default) == (p.get("variant") or default))


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(["amd64", "amd64/v2", "arm64", "arm64/v8", "arm", "arm/v6", "s390x"]),
       st.lists(entries(), max_size=8), st.randoms())
def test_select_picks_a_matching_image_manifest_in_any_order(arch, manifests, random):
    want = platform.for_arch(arch)
    # Entries that do serve `want` (some of them attestations), so that there is often more
    # than one to choose from.
    for i in range(random.randint(0, 3)):
        entry = {"digest": f"sha256:{i:064x}", "size": 1, "platform": want.as_json()}
        if random.random() < 0.3:
            entry["annotations"] = {"vnd.docker.reference.type": "attestation-manifest"}
        manifests.append(entry)
    random.shuffle(manifests)
    index = {"schemaVersion": 2, "manifests": manifests}
    candidates = [m for m in manifests if not _attestation(m) and _serves(want, m["platform"])]
    try:
        chosen = platform.select(index, want, "img:1")
    except PlatformError as e:
        assert not candidates
        assert str(e).startswith(f"img:1: no {want} manifest; available: ")
        return
    # The first serving entry, never an attestation, never another platform.
    assert chosen is candidates[0]


# Any JSON a registry could send as an index.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(["manifests", "platform", "os", "architecture", "variant",
                                       "annotations", "digest", "x"]), inner, max_size=4),
    max_leaves=25,
)


@settings(max_examples=800, deadline=None)
@given(json_values)
def test_any_json_index_is_a_choice_or_a_one_line_error(index):
    try:
        chosen = platform.select(index, platform.for_arch("amd64"), "img:1")
    except (PlatformError, RegistryError) as e:
        assert str(e).startswith("img:1: ") and "\n" not in str(e)
        return
    assert isinstance(chosen, dict)


@settings(max_examples=300, deadline=None)
@given(arch_names, variants, variants)
def test_matching_is_symmetric(arch, a, b):
    pa, pb = platform.Platform("linux", arch, a), platform.Platform("linux", arch, b)
    assert platform.matches(pa, pb) == platform.matches(pb, pa)
