"""The two layer forms a bundle can hold, and the manifest rewrite the uncompressed one needs.

`preserve` keeps upstream blobs and manifest bytes, so containerd records the upstream manifest
digest. `uncompressed` stores each layer as its plain tar (blob digest = diff_id) and rewrites
the manifest to match: smaller after zstd, at the price of a new manifest digest. The stage
(stage.py) stages the layers in the form asked for and calls uncompressed() with them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace

from bundler.image import Image, Layer

PRESERVE, UNCOMPRESSED = "preserve", "uncompressed"
LAYER_MODES = (PRESERVE, UNCOMPRESSED)


def uncompressed(image: Image, plain_layers: Sequence[Layer]) -> Image:
    """`image` with `plain_layers` (its layers as plain tars, in order) and its manifest
    rewritten to describe them; every other manifest field is kept."""
    return replace(image, manifest=_rewrite(image.manifest, plain_layers),
                   layers=tuple(plain_layers))


def _rewrite(manifest: bytes, new_layers: Sequence[Layer]) -> bytes:
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
