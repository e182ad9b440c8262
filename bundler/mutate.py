"""Images in the layer form the bundle asks for, their layers read from the blob store.

`preserve` keeps upstream blobs and manifest bytes, so containerd records the upstream manifest
digest. `uncompressed` stores each layer as its plain tar (blob digest = diff_id) and rewrites
the manifest to match: smaller after zstd, at the price of a new manifest digest.
"""

from __future__ import annotations

import json
from dataclasses import replace

from bundler import mediatypes
from bundler.fetch import Fetcher
from bundler.image import Descriptor, Image, Layer

PRESERVE, UNCOMPRESSED = "preserve", "uncompressed"
LAYER_MODES = (PRESERVE, UNCOMPRESSED)


def layer_what(image: Image, i: int) -> str:
    """How errors name a layer: image, index and blob digest."""
    return f"{image.reference}: layer {i} ({image.layers[i].descriptor.digest})"


def staged(image: Image, fetcher: Fetcher) -> Image:
    """`image` with every layer read through `fetcher` (so from its blob store).

    In uncompressed mode this waits for each layer to be staged: the rewritten manifest needs
    the uncompressed sizes. Ask fetcher.ensure() for them all first, so they download together.
    """
    media_type = mediatypes.uncompressed_layer(image.manifest_media_type)
    out = []
    for i, layer in enumerate(image.layers):
        what = layer_what(image, i)
        desc = layer.descriptor
        if fetcher.uncompressed:
            fetcher.ensure(layer, what, check=False).result()
            target = fetcher.target(layer)
            desc = Descriptor(media_type, target, fetcher.store.size(target))
        out.append(Layer(desc, layer.diff_id, fetcher.opener(layer, what)))
    manifest = _rewrite(image.manifest, out) if fetcher.uncompressed else image.manifest
    return replace(image, manifest=manifest, layers=tuple(out))


def _rewrite(manifest: bytes, new_layers: list[Layer]) -> bytes:
    doc = json.loads(manifest)
    rewritten = []
    for old, new in zip(doc["layers"], new_layers, strict=True):
        d = dict(old)
        d.pop("urls", None)  # foreign-layer URLs point at the compressed blob, not ours
        d.update(mediaType=new.descriptor.media_type, digest=new.descriptor.digest,
                 size=new.descriptor.size)
        rewritten.append(d)
    doc["layers"] = rewritten
    return json.dumps(doc, separators=(",", ":")).encode()
