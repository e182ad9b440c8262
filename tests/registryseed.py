"""Pushing test images into a real registry over the distribution API (monolithic uploads)."""

from __future__ import annotations

import requests

from tests.imagegen import TestImage, digest


def push_blob(base: str, repo: str, data: bytes) -> None:
    d = digest(data)
    if requests.head(f"{base}/v2/{repo}/blobs/{d}", timeout=30).status_code == 200:
        return
    r = requests.post(f"{base}/v2/{repo}/blobs/uploads/", timeout=30)
    r.raise_for_status()
    location = r.headers["Location"]
    if location.startswith("/"):
        location = base + location
    sep = "&" if "?" in location else "?"
    r = requests.put(f"{location}{sep}digest={d}", data=data, timeout=60,
                     headers={"Content-Type": "application/octet-stream"})
    r.raise_for_status()


def push_manifest(base: str, repo: str, ref: str, body: bytes, media_type: str) -> None:
    r = requests.put(f"{base}/v2/{repo}/manifests/{ref}", data=body, timeout=30,
                     headers={"Content-Type": media_type})
    r.raise_for_status()


def push_image(base: str, repo: str, img: TestImage, tag: str | None = None) -> None:
    for blob in img.blobs:
        push_blob(base, repo, blob)
    push_manifest(base, repo, tag or img.digest, img.manifest, img.media_type)


def push_index(base: str, repo: str, tag: str, children: list[TestImage], body: bytes,
               media_type: str) -> None:
    for child in children:
        push_image(base, repo, child)
    push_manifest(base, repo, tag, body, media_type)
