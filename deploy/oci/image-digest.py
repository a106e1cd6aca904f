#!/usr/bin/env python3
"""Print the digest Envoy Gateway compares `code.image.sha256` with: the linux/amd64 image's.

Envoy Gateway's fetcher (internal/wasm/imagefetcher.go, go-containerregistry) gets the
reference's descriptor and calls `desc.Image()`: for a single image that is the image itself,
for an image index (a multi-arch build, or any `docker buildx build` with BuildKit's default
provenance attestation) it is the index entry for the default platform, linux/amd64, and
`img.Digest()` is that entry's manifest digest. So `sha256` must be that digest, not the
index digest `crane digest IMAGE` or `docker buildx imagetools inspect` print for the tag;
with the index digest every request fails (500 with `failOpen: false`).

Input: the raw manifest or index the tag points at, on stdin or as a file, exactly as the
registry serves it, e.g.

    skopeo inspect --raw docker://REGISTRY/modelgate:TAG | deploy/oci/image-digest.py
    crane manifest REGISTRY/modelgate:TAG | deploy/oci/image-digest.py

or an OCI image layout (`--layout DIR --tag TAG`, as deploy/oci/build-image.py writes).
Output: 64 hex characters. A manifest's digest is the sha256 of its bytes; an index is
resolved to its linux/amd64 entry (attestation entries, platform unknown/unknown, never
match). Only the standard library is used.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

INDEX_TYPES = {
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
}
MANIFEST_TYPES = {
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
}
# go-containerregistry's default platform when none is given (remote.Get / desc.Image()).
PLATFORM = {"os": "linux", "architecture": "amd64"}


class DigestError(Exception):
    pass


def is_index(document: dict) -> bool:
    # An OCI index may omit mediaType; it is the document with `manifests` rather than `layers`.
    return document.get("mediaType") in INDEX_TYPES or ("manifests" in document and "layers" not in document)


def platform_entry(index: dict) -> dict:
    """The index entry for linux/amd64, as go-containerregistry's platform match picks it."""
    for entry in index.get("manifests", []):
        platform = entry.get("platform") or {}
        if all(platform.get(k) == v for k, v in PLATFORM.items()):
            return entry
    found = ", ".join(
        f"{(e.get('platform') or {}).get('os', '?')}/{(e.get('platform') or {}).get('architecture', '?')}"
        for e in index.get("manifests", [])
    )
    raise DigestError(f"the index has no linux/amd64 image (entries: {found or 'none'}); Envoy Gateway cannot fetch it")


def digest_of(raw: bytes) -> str:
    """The digest Envoy Gateway checks, for the raw document a tag points at."""
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DigestError(f"not a JSON manifest or index: {err}") from err
    if not isinstance(document, dict):
        raise DigestError("not a JSON manifest or index: the document is not an object")
    if is_index(document):
        entry = platform_entry(document)
        algorithm, _, hex_digest = str(entry.get("digest", "")).partition(":")
        if algorithm != "sha256" or len(hex_digest) != 64:
            raise DigestError(f"the linux/amd64 entry has no sha256 digest: {entry.get('digest')!r}")
        return hex_digest
    media_type = document.get("mediaType")
    if media_type not in MANIFEST_TYPES and not (media_type is None and "layers" in document):
        raise DigestError(f"unsupported media type {media_type!r}")
    return hashlib.sha256(raw).hexdigest()


def layout_document(layout: Path, tag: str | None) -> bytes:
    """The raw document an OCI layout's index.json names for `tag` (or its only entry)."""
    index = json.loads((layout / "index.json").read_bytes())
    entries = index.get("manifests", [])
    if tag is not None:
        entries = [e for e in entries if (e.get("annotations") or {}).get("org.opencontainers.image.ref.name") == tag]
    if len(entries) != 1:
        raise DigestError(f"{layout}: expected one entry for tag {tag!r}, found {len(entries)}")
    hex_digest = entries[0]["digest"].partition(":")[2]
    return (layout / "blobs" / "sha256" / hex_digest).read_bytes()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", nargs="?", type=Path, help="raw manifest or index (default: stdin)")
    parser.add_argument("--layout", type=Path, help="read the document from an OCI image layout instead")
    parser.add_argument("--tag", help="with --layout: the tag (org.opencontainers.image.ref.name)")
    args = parser.parse_args(argv)
    try:
        if args.layout is not None:
            raw = layout_document(args.layout, args.tag)
        elif args.file is not None:
            raw = args.file.read_bytes()
        else:
            raw = sys.stdin.buffer.read()
        print(digest_of(raw))
    except (DigestError, OSError, KeyError, json.JSONDecodeError) as err:
        print(f"image-digest: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
