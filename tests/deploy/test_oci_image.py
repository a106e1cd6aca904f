"""deploy/oci/build-image.py writes an OCI image layout Envoy Gateway and Istio accept.

What Envoy Gateway v1.9 (internal/wasm/imagefetcher.go) requires of a "compat" Wasm image: an
OCI manifest whose last layer has media type application/vnd.oci.image.layer.v1.tar+gzip and is
a gzip tar holding a file whose base name is plugin.wasm; `code.image.sha256` is the manifest
digest. These tests read the layout with nothing but the standard library, then copy it with
skopeo (containers/image, an independent OCI implementation that verifies every digest while
copying, as `skopeo copy oci:… docker://…` does when publishing).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import shutil
import sys
import tarfile
from pathlib import Path

import pytest

from deploy_support import BUILD_IMAGE, run

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
TAG = "0.1.0-test"


def build(wasm: Path, out: Path, tag: str = TAG) -> str:
    result = run([sys.executable, str(BUILD_IMAGE), "--wasm", str(wasm), "--out", str(out), "--tag", tag])
    assert result.returncode == 0, result.stderr
    return result.stdout


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Layout:
    """An OCI image layout on disk, read strictly."""

    def __init__(self, root: Path):
        self.root = root
        self.index = json.loads((root / "index.json").read_bytes())

    def blob(self, descriptor: dict) -> bytes:
        algorithm, _, hex_digest = descriptor["digest"].partition(":")
        assert algorithm == "sha256", descriptor
        data = (self.root / "blobs" / "sha256" / hex_digest).read_bytes()
        assert len(data) == descriptor["size"], f"size of {descriptor['digest']}"
        return data


@pytest.fixture(scope="module")
def built(tmp_path_factory, wasm_bytes) -> tuple[Layout, str, bytes]:
    """(layout, printed stdout, the wasm it was built from) for the built filter."""
    work = tmp_path_factory.mktemp("oci")
    wasm = work / "modelgate.wasm"
    wasm.write_bytes(wasm_bytes)
    stdout = build(wasm, work / "layout")
    return Layout(work / "layout"), stdout, wasm_bytes


def test_prints_only_the_manifest_digest(built):
    layout, stdout, _ = built
    assert re.fullmatch(r"[0-9a-f]{64}\n", stdout), repr(stdout)
    (entry,) = layout.index["manifests"]
    assert entry["digest"] == f"sha256:{stdout.strip()}"
    assert sha256(layout.blob(entry)) == stdout.strip()


def test_layout_marker_and_index_are_well_formed(built):
    layout, _, _ = built
    assert json.loads((layout.root / "oci-layout").read_bytes()) == {"imageLayoutVersion": "1.0.0"}
    assert layout.index["schemaVersion"] == 2
    assert layout.index["mediaType"] == OCI_INDEX
    (entry,) = layout.index["manifests"]
    assert entry["mediaType"] == OCI_MANIFEST
    assert entry["annotations"] == {"org.opencontainers.image.ref.name": TAG}


def test_manifest_has_a_config_and_one_gzip_layer(built):
    layout, _, _ = built
    manifest = json.loads(layout.blob(layout.index["manifests"][0]))
    assert manifest["schemaVersion"] == 2
    assert manifest["mediaType"] == OCI_MANIFEST
    assert manifest["config"]["mediaType"] == OCI_CONFIG
    assert [layer["mediaType"] for layer in manifest["layers"]] == [OCI_LAYER_GZIP]


def test_config_names_the_uncompressed_layer(built):
    layout, _, _ = built
    manifest = json.loads(layout.blob(layout.index["manifests"][0]))
    config = json.loads(layout.blob(manifest["config"]))
    assert config["os"] == "linux" and config["architecture"] == "amd64"
    layer = layout.blob(manifest["layers"][0])
    assert config["rootfs"] == {"type": "layers", "diff_ids": [f"sha256:{sha256(gzip.decompress(layer))}"]}


def test_layer_is_a_gzip_tar_holding_exactly_plugin_wasm(built):
    layout, _, wasm = built
    manifest = json.loads(layout.blob(layout.index["manifests"][0]))
    layer = layout.blob(manifest["layers"][-1])
    assert layer[:2] == b"\x1f\x8b", "layer is not gzip"
    with tarfile.open(fileobj=io.BytesIO(layer), mode="r:gz") as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == ["plugin.wasm"]
        (member,) = members
        assert member.isreg()
        assert (member.uid, member.gid, member.mtime, member.mode) == (0, 0, 0, 0o644)
        extracted = tar.extractfile(member)
        assert extracted is not None
        assert extracted.read() == wasm


def test_every_blob_is_named_by_its_digest_and_referenced(built):
    layout, _, _ = built
    manifest = json.loads(layout.blob(layout.index["manifests"][0]))
    referenced = {
        d["digest"].removeprefix("sha256:")
        for d in [layout.index["manifests"][0], manifest["config"], *manifest["layers"]]
    }
    on_disk = {}
    for blob in (layout.root / "blobs" / "sha256").iterdir():
        on_disk[blob.name] = sha256(blob.read_bytes())
    assert on_disk == {name: name for name in referenced}


def test_same_wasm_gives_the_same_digest(built, tmp_path):
    layout, stdout, wasm = built
    (tmp_path / "m.wasm").write_bytes(wasm)
    again = build(tmp_path / "m.wasm", tmp_path / "again")
    assert again == stdout
    for blob in (layout.root / "blobs" / "sha256").iterdir():
        assert (tmp_path / "again" / "blobs" / "sha256" / blob.name).read_bytes() == blob.read_bytes()


def test_rebuild_in_place_drops_the_old_blobs(built, tmp_path):
    _, stdout, wasm = built
    (tmp_path / "m.wasm").write_bytes(wasm + b"\0")  # a trailing byte: a different module file
    out = tmp_path / "layout"
    first = build(tmp_path / "m.wasm", out)
    (tmp_path / "m.wasm").write_bytes(wasm)
    second = build(tmp_path / "m.wasm", out)
    assert first != second and second == stdout
    assert len(list((out / "blobs" / "sha256").iterdir())) == 3


def test_refuses_a_file_that_is_not_wasm(tmp_path):
    (tmp_path / "x.wasm").write_bytes(b"#!/bin/sh\n")
    result = run([sys.executable, str(BUILD_IMAGE), "--wasm", str(tmp_path / "x.wasm"), "--out", str(tmp_path / "o")])
    assert result.returncode == 1
    assert "not a WebAssembly module" in result.stderr
    assert result.stdout == ""


def test_refuses_to_write_into_a_directory_that_is_not_a_layout(tmp_path, wasm_bytes):
    (tmp_path / "m.wasm").write_bytes(wasm_bytes)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("keep me")
    result = run([sys.executable, str(BUILD_IMAGE), "--wasm", str(tmp_path / "m.wasm"), "--out", str(tmp_path / "busy")])
    assert result.returncode == 1
    assert "not an OCI image layout" in result.stderr
    assert (tmp_path / "busy" / "notes.txt").read_text() == "keep me"


def test_missing_wasm_names_the_build_command(tmp_path):
    result = run([sys.executable, str(BUILD_IMAGE), "--wasm", str(tmp_path / "none.wasm"), "--out", str(tmp_path / "o")])
    assert result.returncode == 1
    assert "make wasm" in result.stderr


def test_skopeo_copies_the_image_verifying_digests_and_keeping_the_manifest(built, tmp_path):
    """Publishing copies the manifest bytes unchanged, so the printed digest is the pushed one."""
    skopeo = shutil.which("skopeo")
    if skopeo is None:
        pytest.fail("skopeo is missing: scripts/test-deploy.sh installs it (apt-get install skopeo)")
    layout, stdout, wasm = built
    out = tmp_path / "copied"
    result = run([skopeo, "copy", "--quiet", "--preserve-digests", f"oci:{layout.root}:{TAG}", f"dir:{out}"])
    assert result.returncode == 0, result.stderr
    assert sha256((out / "manifest.json").read_bytes()) == stdout.strip()
    inspect = run([skopeo, "inspect", f"oci:{layout.root}:{TAG}"])
    assert inspect.returncode == 0, inspect.stderr
    assert json.loads(inspect.stdout)["Digest"] == f"sha256:{stdout.strip()}"
    manifest = json.loads((out / "manifest.json").read_bytes())
    layer = (out / manifest["layers"][0]["digest"].removeprefix("sha256:")).read_bytes()
    with tarfile.open(fileobj=io.BytesIO(layer), mode="r:gz") as tar:
        extracted = tar.extractfile("plugin.wasm")
        assert extracted is not None and extracted.read() == wasm


def test_skopeo_rejects_a_layout_with_a_corrupted_layer(built, tmp_path):
    """The digests the builder writes are the ones a registry client checks."""
    skopeo = shutil.which("skopeo")
    if skopeo is None:
        pytest.fail("skopeo is missing: scripts/test-deploy.sh installs it (apt-get install skopeo)")
    layout, _, _ = built
    broken = tmp_path / "broken"
    shutil.copytree(layout.root, broken)
    manifest = json.loads(layout.blob(layout.index["manifests"][0]))
    layer = broken / "blobs" / "sha256" / manifest["layers"][0]["digest"].removeprefix("sha256:")
    data = bytearray(layer.read_bytes())
    data[len(data) // 2] ^= 0xFF
    layer.write_bytes(bytes(data))
    result = run([skopeo, "copy", "--quiet", f"oci:{broken}:{TAG}", f"dir:{tmp_path / 'out'}"])
    assert result.returncode != 0
    assert "Digest did not match" in result.stderr
