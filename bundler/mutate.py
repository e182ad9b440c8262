"""Images moved into a local blob store, in the layer form the bundle asks for.

`preserve` keeps upstream blobs and manifest bytes, so containerd records the upstream manifest
digest. `uncompressed` stores each layer as its plain tar (blob digest = diff_id) and rewrites
the manifest to match: smaller after zstd, at the price of a new manifest digest.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import BinaryIO

from bundler import layer as layers
from bundler import mediatypes
from bundler.cache import BlobStore
from bundler.image import Descriptor, Image, Layer
from bundler.registry import retry

PRESERVE, UNCOMPRESSED = "preserve", "uncompressed"
LAYER_MODES = (PRESERVE, UNCOMPRESSED)


def staged(
    image: Image,
    store: BlobStore,
    mode: str,
    wrap: Callable[[BinaryIO], BinaryIO] = lambda r: r,
) -> Image:
    """`image` with every layer read from `store`, fetching (through `wrap`) what is missing."""
    uncompressed = mode == UNCOMPRESSED
    media_type = mediatypes.uncompressed_layer(image.manifest_media_type)
    out = []
    for i, layer in enumerate(image.layers):
        target = layer.diff_id if uncompressed else layer.descriptor.digest
        if not store.has(target):
            source = replace(layer, open=lambda layer=layer: wrap(layer.open()))
            what = f"{image.reference}: layer {i} ({layer.descriptor.digest})"
            retry.refetch_once(lambda s=source, w=what: layers.stage(s, store, uncompressed, w))
        desc = Descriptor(
            media_type if uncompressed else layer.descriptor.media_type, target, store.size(target)
        )
        out.append(Layer(desc, layer.diff_id, partial(store.open, target)))
    manifest = _rewrite(image.manifest, out) if uncompressed else image.manifest
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
