"""`bundler inspect`: what a bundle holds, from the metadata at its front.

Images, platforms and manifest, config and layer digests come from index.json and
manifest.json, the first frame. Layer sizes are in the manifests, which sit at the end of the
tar: a preserve bundle has each in its own frame, read alone (and checked against its digest);
a compact bundle would have to be decompressed whole, so its sizes come from the checksum
manifest beside it when there is one that lists the same manifest digests, and are otherwise
left out (null). Nothing here proves the bundle whole: that is `verify`'s job.
"""

from __future__ import annotations

import json
from pathlib import Path

from bundler import localfile, strictjson
from bundler.errors import BundlerError, InputError
from bundler.image import parse_manifest
from bundler.sources import bundle as source

_SUFFIX = ".tar.zst"


def inspect(path: str | Path) -> dict:
    """A JSON-ready description of the bundle at `path`; InputError if it cannot be read."""
    path = Path(path)
    meta = source.read_metadata(path)
    frames = source.frame_index(path)
    manifests = {e.manifest.digest for e in meta.entries}
    sizes_from = None
    layer_sizes: dict[str, list[int]] = {}
    if manifests <= frames.keys():
        try:
            docs = source.read_documents(path, manifests, frames)
        except BundlerError as e:
            raise InputError(str(e)) from None
        for digest, body in docs.items():
            _, layers = parse_manifest(body, f"{path}: manifest {digest}")
            layer_sizes[digest] = [d.size for d in layers]
        sizes_from = "bundle"
    else:
        layer_sizes = _sizes_beside(path, manifests)
        sizes_from = "checksum manifest" if layer_sizes else None
    images = []
    for e in meta.entries:
        sizes = layer_sizes.get(e.manifest.digest)
        images.append({
            "reference": e.reference.image_name,
            "platform": str(e.platform) if e.platform else None,
            "manifestDigest": e.manifest.digest,
            "manifestMediaType": e.manifest.media_type,
            "configDigest": e.config_digest,
            "layerCount": len(e.layer_digests),
            "layers": [{"digest": d, "size": sizes[i] if sizes else None}
                       for i, d in enumerate(e.layer_digests)],
            "size": sum(sizes) if sizes else None,
        })
    return {"file": str(path), "size": path.stat().st_size,
            "framing": "per-blob" if manifests <= frames.keys() else "single",
            "sizesFrom": sizes_from, "images": images}


def _sizes_beside(path: Path, manifests: set[str]) -> dict[str, list[int]]:
    name = path.name[: -len(_SUFFIX)] if path.name.endswith(_SUFFIX) else path.stem
    candidate = path.with_name(name + ".manifest.json")
    try:
        doc = strictjson.loads(localfile.read_small(candidate, 16 << 20, "checksum manifest",
                                                    follow_symlinks=False))
    except (OSError, BundlerError, strictjson.StrictJSONError):
        return {}
    found: dict[str, list[int]] = {}
    for item in doc.get("images", []) if isinstance(doc, dict) else []:
        layers = item.get("layers") if isinstance(item, dict) else None
        digest = item.get("manifestDigest") if isinstance(item, dict) else None
        if digest in manifests and isinstance(layers, list) and all(
                isinstance(x, dict) and strictjson.is_count(x.get("size")) for x in layers):
            found[digest] = [x["size"] for x in layers]
    return found if set(found) == manifests else {}


def render_text(info: dict) -> str:
    """The description as people read it: one block per image."""
    lines = [f"{info['file']}: {len(info['images'])} image"
             f"{'' if len(info['images']) == 1 else 's'}, {_mb(info['size'])} compressed"]
    for img in info["images"]:
        size = f", {_mb(img['size'])}" if img["size"] is not None else ""
        lines += [
            "",
            img["reference"],
            f"  platform   {img['platform'] or 'unknown'}",
            f"  manifest   {img['manifestDigest']}",
            f"  config     {img['configDigest']}",
            f"  layers     {img['layerCount']}{size}",
        ]
        for layer in img["layers"]:
            shown = f"  {_mb(layer['size'])}" if layer["size"] is not None else ""
            lines.append(f"    {layer['digest']}{shown}")
    if info["sizesFrom"] is None:
        lines += ["", "layer sizes are not in the metadata of a compact bundle and no checksum "
                  "manifest lists them; `bundler verify` reads the whole bundle"]
    elif info["sizesFrom"] == "checksum manifest":
        lines += ["", "layer sizes as the checksum manifest beside the bundle records them"]
    return "\n".join(lines) + "\n"


def render_json(info: dict) -> str:
    return json.dumps(info, indent=2) + "\n"


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n} bytes"
