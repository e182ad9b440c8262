"""`bundler inspect`: what a bundle holds, read from the bundle alone.

Images, platforms and manifest, config and layer digests come from index.json and
manifest.json, the first frame. Layer sizes are only in the manifests (manifest.json lists
paths, not sizes), and the manifests sit at the end of the tar. A preserve bundle has each
manifest in its own zstd frame, found by walking the frame headers and read alone (checked
against its digest). A compact bundle (`--layers uncompressed`) has every blob in one frame:
zstd cannot skip into a frame, so its manifests are reached only by decompressing all of it
(about four times the file). That happens only when asked (`sizes=True`); otherwise the
sizes are reported as not read, never guessed, and never taken from a file beside the bundle:
inspect describes the file it is given. Nothing here proves the bundle whole: that is
`verify`'s job.
"""

from __future__ import annotations

import json
from pathlib import Path

from bundler import text
from bundler.bundleformat import parts
from bundler.errors import BundlerError, InputError
from bundler.image import parse_config, parse_manifest
from bundler.platform import Platform
from bundler.sources import bundle as source

# Why the sizes of a compact bundle are missing, in the JSON and in the text.
NEEDS_DECOMPRESSION = "needs decompression"


def inspect(path: str | Path, *, sizes: bool = False) -> dict:
    """A JSON-ready description of the bundle at `path`; InputError (one line naming the
    file) if it cannot be read. `sizes`: read a compact bundle's layer sizes too, by
    decompressing it whole (a preserve bundle's are read anyway, from their own frames).

    Names are shown as index.json writes them (with the full name beside one that is not),
    and the platform as index.json declares it and, where the configs were read, as the
    config says: inspect describes the file, it does not vouch for it. `warnings`: what
    misleads other readers without making the bundle wrong (index entries sharing a
    ref.name, as bundles of older writers have)."""
    path = Path(path)
    if parts.is_parts_list(path):  # a bundle cut by split: what its list records
        from bundler.commands import split

        return split.describe(path)
    meta = source.read_metadata(path)
    frames = source.frame_index(path)
    manifests = {e.manifest.digest for e in meta.entries}
    per_blob = manifests <= frames.keys()
    read: dict[str, tuple[list[int], str | None]] = {}
    if per_blob or sizes:
        read = _read_documents(path, meta, frames)
    images = []
    for e in meta.entries:
        got, config_platform = read.get(e.manifest.digest, (None, None))
        full = e.reference.image_name
        images.append({
            "reference": e.name or full,
            "fullName": full if e.name and e.name != full else None,
            "platform": _declared(e.platform),
            "configPlatform": config_platform,
            "manifestDigest": e.manifest.digest,
            "manifestMediaType": e.manifest.media_type,
            "configDigest": e.config_digest,
            "layerCount": len(e.layer_digests),
            "layers": [{"digest": d, "size": got[i] if got else None}
                       for i, d in enumerate(e.layer_digests)],
            "size": sum(got) if got is not None else None,
        })
    return {"file": str(path), "size": path.stat().st_size,
            "framing": "per-blob" if per_blob else "single",
            "sizesFrom": "bundle" if read else None,
            "sizesMissing": None if read else NEEDS_DECOMPRESSION,
            "decompressedWhole": bool(read) and not per_blob,
            "verified": False,
            "images": images,
            "warnings": list(meta.warnings)}


def _declared(plat: Platform | None) -> str | None:
    """The platform index.json declares, None when it declares neither os nor architecture."""
    return str(plat) if plat and plat.os and plat.architecture else None


def _read_documents(path: Path, meta: source.Metadata, frames: dict[str, tuple[int, int]]
                    ) -> dict[str, tuple[list[int], str | None]]:
    """manifest digest -> (its layers' sizes, its config's platform), from the manifests and
    configs (each checked against its digest). A manifest must name the config and layers
    manifest.json names: the digests shown come from manifest.json, the sizes from the
    manifests. The configs are read only when each has a frame of its own (preserve
    bundles): a compact bundle would be decompressed whole a second time for them."""
    found: dict[str, tuple[list[int], str | None]] = {}
    try:
        docs = source.read_documents(path, {e.manifest.digest for e in meta.entries}, frames)
        sizes = {}
        for e in meta.entries:
            config, layers = parse_manifest(docs[e.manifest.digest],
                                            f"{path}: manifest {e.manifest.digest}")
            if config.digest != e.config_digest:
                raise InputError(f"{path}: {e.reference}: its manifest names config "
                                 f"{config.digest}, manifest.json {e.config_digest}")
            if [d.digest for d in layers] != list(e.layer_digests):
                raise InputError(f"{path}: {e.reference}: its manifest and manifest.json list "
                                 "different layers")
            sizes[e.manifest.digest] = [d.size for d in layers]
        configs = {e.config_digest for e in meta.entries}
        if configs <= frames.keys():
            docs.update(source.read_documents(path, configs, frames))
        for e in meta.entries:
            plat = None
            if e.config_digest in docs:
                plat = str(parse_config(docs[e.config_digest], len(e.layer_digests),
                                        f"{path}: {e.reference}")[0])
            found[e.manifest.digest] = (sizes[e.manifest.digest], plat)
    except InputError:
        raise
    except BundlerError as e:
        raise InputError(str(e)) from None
    return found


def render_text(info: dict) -> str:
    """The description as people read it: one block per image. Every string from the
    bundle is shown escaped if it holds anything but printable ASCII."""
    if info.get("kind") == "parts list":
        from bundler.commands import split

        return split.render_text(info)
    lines = [f"{_safe(info['file'])}: {len(info['images'])} image"
             f"{'' if len(info['images']) == 1 else 's'}, {_mb(info['size'])} compressed"]
    for img in info["images"]:
        size = f", {_mb(img['size'])}" if img["size"] is not None else ""
        name = _safe(img["reference"])
        if img.get("fullName"):
            name += f"  (not a full name: {_safe(img['fullName'])}; verify refuses it)"
        platform = _safe(img["platform"] or "unknown")
        if img.get("configPlatform") and img["configPlatform"] != img["platform"]:
            platform += (f"  (as index.json declares it; its config says "
                         f"{_safe(img['configPlatform'])})")
        lines += [
            "",
            name,
            f"  platform   {platform}",
            f"  manifest   {_safe(img['manifestDigest'])}",
            f"  config     {_safe(img['configDigest'])}",
            f"  layers     {img['layerCount']}{size}",
        ]
        for layer in img["layers"]:
            shown = f"  {_mb(layer['size'])}" if layer["size"] is not None else ""
            lines.append(f"    {_safe(layer['digest'])}{shown}")
    if info["sizesMissing"] == NEEDS_DECOMPRESSION:
        lines += ["", "layer sizes not shown: this compact bundle keeps them in the manifests "
                  "at the end of its single zstd frame, which only decompressing the whole "
                  "bundle reaches (`bundler inspect --sizes` does that)"]
    elif info["decompressedWhole"]:
        lines += ["", "layer sizes read from the manifests, after decompressing the whole "
                  "bundle"]
    if info.get("warnings"):
        lines += ["", *(f"warning: {_safe(text)}" for text in info["warnings"])]
    lines += ["", "inspect describes what the bundle says; it does not verify it (`bundler "
              "verify` does)"]
    return "\n".join(lines) + "\n"


def _safe(value: str) -> str:
    # Shown whole: image names are longer than a message's values, and this is a listing.
    return text.shown(value, limit=1 << 16)


def render_json(info: dict) -> str:
    return json.dumps(info, indent=2) + "\n"


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n} bytes"
