#!/usr/bin/env python3
"""Write an OCI image layout holding modelgate.wasm, without a container engine.

The image is the "compat" variant of the Wasm image spec that Envoy Gateway
(internal/wasm/imagefetcher.go) and Istio accept: a single
`application/vnd.oci.image.layer.v1.tar+gzip` layer whose tar holds one file,
`plugin.wasm`.  It is what `FROM scratch` + `COPY plugin.wasm ./` produces
with buildah (see Containerfile beside this script), but byte-reproducible:
the tar entry has fixed mtime, uid, gid and mode, and the gzip header has no
name and mtime 0, so the same .wasm always gives the same manifest digest
(with the same zlib; compressed bytes may differ between zlib versions).

Output (an OCI image layout, https://github.com/opencontainers/image-spec/blob/main/image-layout.md):
    OUT/oci-layout
    OUT/index.json                  one manifest, tagged with --tag
    OUT/blobs/sha256/<hex>          the layer, the config and the manifest

Stdout gets exactly one line: the manifest digest as 64 hex characters, the
value `EnvoyExtensionPolicy.spec.wasm[].code.image.sha256` (and Istio's
`WasmPlugin.spec.sha256`) expect for an image.  Push the layout with oras,
skopeo or crane (docs/deploy.md); pushing keeps the manifest bytes, so the
digest stays the same.

Only the Python standard library is used.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"

# The file name Envoy Gateway and Istio look for inside the layer.
PLUGIN_FILE = "plugin.wasm"

# Every timestamp in the image; 0 keeps the digest independent of build time.
FIXED_MTIME = 0

# Envoy Gateway's fetcher (go-containerregistry) resolves an image index to
# linux/amd64 when no platform is given; the .wasm itself runs on any
# platform, so the config names the platform the fetcher picks by default.
CONFIG_PLATFORM = {"architecture": "amd64", "os": "linux"}


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical_json(value: object) -> bytes:
    """Serialise with sorted keys and no whitespace so equal content gives equal digests."""
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def layer_tar(wasm: bytes) -> bytes:
    """An uncompressed tar holding exactly `plugin.wasm`, with fixed metadata."""
    info = tarfile.TarInfo(PLUGIN_FILE)
    info.size = len(wasm)
    info.mode = 0o644
    info.mtime = FIXED_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(wasm))
    return out.getvalue()


def gzip_deterministic(data: bytes) -> bytes:
    """gzip with an empty file name and mtime 0 in the header."""
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, compresslevel=9, mtime=FIXED_MTIME) as gz:
        gz.write(data)
    return out.getvalue()


def descriptor(media_type: str, blob: bytes) -> dict:
    return {"mediaType": media_type, "digest": f"sha256:{sha256_hex(blob)}", "size": len(blob)}


def build(wasm: bytes, tag: str) -> tuple[dict[str, bytes], bytes, bytes]:
    """Return (blobs by hex digest, index.json bytes, manifest bytes)."""
    tar = layer_tar(wasm)
    layer = gzip_deterministic(tar)
    config = canonical_json(
        {
            **CONFIG_PLATFORM,
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{sha256_hex(tar)}"]},
        }
    )
    manifest = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": descriptor(MEDIA_CONFIG, config),
            "layers": [descriptor(MEDIA_LAYER, layer)],
        }
    )
    manifest_desc = descriptor(MEDIA_MANIFEST, manifest)
    manifest_desc["annotations"] = {"org.opencontainers.image.ref.name": tag}
    index = canonical_json({"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": [manifest_desc]})
    blobs = {sha256_hex(b): b for b in (layer, config, manifest)}
    return blobs, index, manifest


def write_layout(out: Path, blobs: dict[str, bytes], index: bytes) -> None:
    """Write the layout, replacing an earlier one in the same directory.

    Blobs of an earlier build are removed so the layout holds exactly this
    image; a non-empty directory that is not an OCI layout is refused rather
    than mixed into.
    """
    if out.exists() and any(out.iterdir()) and not (out / "oci-layout").is_file():
        raise FileExistsError(f"{out} exists and is not an OCI image layout; refusing to write into it")
    blob_dir = out / "blobs" / "sha256"
    blob_dir.mkdir(parents=True, exist_ok=True)
    for stale in blob_dir.iterdir():
        if stale.name not in blobs:
            stale.unlink()
    for hex_digest, blob in blobs.items():
        (blob_dir / hex_digest).write_bytes(blob)
    (out / "oci-layout").write_bytes(canonical_json({"imageLayoutVersion": "1.0.0"}))
    (out / "index.json").write_bytes(index)


def main(argv: list[str] | None = None) -> int:
    repo_root = Path(__file__).resolve().parents[2]
    parser = argparse.ArgumentParser(
        description="Write an OCI image layout with one gzip layer holding plugin.wasm; "
        "print the manifest digest (64 hex) for EnvoyExtensionPolicy code.image.sha256."
    )
    parser.add_argument(
        "--wasm",
        type=Path,
        default=repo_root / "target/modelgate.wasm",
        help="the filter module (default: the `make wasm` output)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=repo_root / "target/oci/modelgate",
        help="layout directory to write (default: target/oci/modelgate)",
    )
    parser.add_argument("--tag", default="latest", help="tag recorded in index.json (default: latest)")
    args = parser.parse_args(argv)

    try:
        wasm = args.wasm.read_bytes()
    except OSError as err:
        print(f"build-image: cannot read {args.wasm}: {err.strerror} (build it with `make wasm`)", file=sys.stderr)
        return 1
    if wasm[:4] != b"\0asm":
        print(f"build-image: {args.wasm} is not a WebAssembly module (no \\0asm magic)", file=sys.stderr)
        return 1

    blobs, index, manifest = build(wasm, args.tag)
    try:
        write_layout(args.out, blobs, index)
    except FileExistsError as err:
        print(f"build-image: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"build-image: cannot write {args.out}: {err.strerror}", file=sys.stderr)
        return 1
    digest = sha256_hex(manifest)
    print(
        f"build-image: wrote {args.out} (tag {args.tag}, "
        f"plugin.wasm {len(wasm)} bytes, wasm sha256 {sha256_hex(wasm)})",
        file=sys.stderr,
    )
    print(digest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
