"""ArtifactStore: immutable checkpoint dirs, manifest hashes, and refusal of paths that escape the root."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from services.common.artifacts import MANIFEST_NAME, ArtifactStore, directory_sha256
from services.common.errors import ArtifactError


def make_checkpoint(directory: Path, *, weights: bytes = b"\x00\x01weights" * 100) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "model.safetensors").write_bytes(weights)
    (directory / "config.json").write_text('{"hidden": 8}')
    (directory / "tokenizer").mkdir(exist_ok=True)
    (directory / "tokenizer" / "vocab.txt").write_text("a\nb\n")
    return directory


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "store")


def test_put_verify_round_trip(store: ArtifactStore, tmp_path: Path) -> None:
    src = make_checkpoint(tmp_path / "src")
    stored = store.put_checkpoint("verifier", 2, src)
    assert stored.uri == "artifact://verifier/v000002"
    assert stored.path == store.root / "verifier" / "v000002"
    assert len(stored.sha256) == 64
    assert store.verify(stored.uri, stored.sha256) == stored.path
    assert store.verify(stored.uri, stored.sha256.upper()) == stored.path

    manifest_bytes = (stored.path / MANIFEST_NAME).read_bytes()
    assert hashlib.sha256(manifest_bytes).hexdigest() == stored.sha256
    manifest = json.loads(manifest_bytes)
    assert [f["path"] for f in manifest["files"]] == [
        "config.json",
        "model.safetensors",
        "tokenizer/vocab.txt",
    ]
    weights = (src / "model.safetensors").read_bytes()
    entry = manifest["files"][1]
    assert entry == {"path": "model.safetensors", "sha256": hashlib.sha256(weights).hexdigest(), "size": 900}
    assert (stored.path / "tokenizer" / "vocab.txt").read_text() == "a\nb\n"
    # No temp dirs left behind.
    assert list((store.root / ".incoming").iterdir()) == []


def test_sha256_is_stable(store: ArtifactStore, tmp_path: Path) -> None:
    a = store.put_checkpoint("verifier", 1, make_checkpoint(tmp_path / "a"))
    b = store.put_checkpoint("verifier", 2, make_checkpoint(tmp_path / "b"))
    other = ArtifactStore(tmp_path / "other-store").put_checkpoint("prover", 7, make_checkpoint(tmp_path / "c"))
    assert a.sha256 == b.sha256 == other.sha256
    c = store.put_checkpoint("verifier", 3, make_checkpoint(tmp_path / "d", weights=b"different"))
    assert c.sha256 != a.sha256


def test_same_version_twice_is_refused(store: ArtifactStore, tmp_path: Path) -> None:
    stored = store.put_checkpoint("verifier", 1, make_checkpoint(tmp_path / "src"))
    with pytest.raises(ArtifactError, match="already exists"):
        store.put_checkpoint("verifier", 1, make_checkpoint(tmp_path / "src2", weights=b"new"))
    assert store.verify(stored.uri, stored.sha256) == stored.path  # the original is untouched


def test_changed_byte_fails_verify(store: ArtifactStore, tmp_path: Path) -> None:
    stored = store.put_checkpoint("verifier", 1, make_checkpoint(tmp_path / "src"))
    path = stored.path / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[500] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"model\.safetensors: sha256 .* != ") as info:
        store.verify(stored.uri, stored.sha256)
    assert "config.json" not in str(info.value)


def test_changed_size_fails_verify(store: ArtifactStore, tmp_path: Path) -> None:
    stored = store.put_checkpoint("verifier", 1, make_checkpoint(tmp_path / "src"))
    (stored.path / "config.json").write_text('{"hidden": 16}')
    with pytest.raises(ArtifactError, match=r"config\.json: size 14 != 13"):
        store.verify(stored.uri, stored.sha256)


def test_extra_file_fails_verify(store: ArtifactStore, tmp_path: Path) -> None:
    stored = store.put_checkpoint("verifier", 1, make_checkpoint(tmp_path / "src"))
    (stored.path / "tokenizer" / "extra.bin").write_bytes(b"x")
    with pytest.raises(ArtifactError, match=r"tokenizer/extra\.bin: extra file"):
        store.verify(stored.uri, stored.sha256)


def test_removed_file_fails_verify(store: ArtifactStore, tmp_path: Path) -> None:
    stored = store.put_checkpoint("verifier", 1, make_checkpoint(tmp_path / "src"))
    (stored.path / "tokenizer" / "vocab.txt").unlink()
    with pytest.raises(ArtifactError, match=r"tokenizer/vocab\.txt: missing"):
        store.verify(stored.uri, stored.sha256)


def test_manifest_hash_mismatch_fails_verify(store: ArtifactStore, tmp_path: Path) -> None:
    stored = store.put_checkpoint("verifier", 1, make_checkpoint(tmp_path / "src"))
    with pytest.raises(ArtifactError, match=r"MANIFEST\.json sha256 mismatch"):
        store.verify(stored.uri, "0" * 64)
    # Rewriting the manifest to match tampered files does not help: its own hash changes.
    (stored.path / "config.json").write_text("{}")
    manifest = json.loads((stored.path / MANIFEST_NAME).read_bytes())
    manifest["files"][0].update(size=2, sha256=hashlib.sha256(b"{}").hexdigest())
    (stored.path / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=r"MANIFEST\.json sha256 mismatch"):
        store.verify(stored.uri, stored.sha256)


def test_missing_checkpoint_fails_verify(store: ArtifactStore) -> None:
    with pytest.raises(ArtifactError, match="artifact://verifier/v000009: checkpoint directory is missing"):
        store.verify("artifact://verifier/v000009", "0" * 64)


@pytest.mark.parametrize(
    "uri",
    [
        "artifact://../outside",
        "artifact://verifier/../../outside",
        "artifact://verifier/v000001/../../..",
        "artifact:///etc/passwd",
        "artifact://",
        "artifact://.",
        "/etc/passwd",
        "file:///etc/passwd",
        "s3://bucket/verifier/v000001",
        "verifier/v000001",
        "artifact://verifier\\..\\..\\x",
    ],
)
def test_escaping_or_foreign_uris_are_refused(store: ArtifactStore, uri: str) -> None:
    with pytest.raises(ArtifactError) as info:
        store.resolve(uri)
    assert repr(uri) in str(info.value)
    with pytest.raises(ArtifactError):
        store.verify(uri, "0" * 64)


def test_symlink_pointing_outside_is_refused(store: ArtifactStore, tmp_path: Path) -> None:
    outside = make_checkpoint(tmp_path / "outside")
    os.symlink(outside, store.root / "evil")
    with pytest.raises(ArtifactError, match="resolves outside the artifact store") as info:
        store.resolve("artifact://evil")
    assert "artifact://evil" in str(info.value)
    with pytest.raises(ArtifactError, match="outside"):
        store.resolve("artifact://evil/config.json")
    # A checkpoint name that is a symlink out of the store cannot be written through either.
    os.symlink(tmp_path / "elsewhere", store.root / "prover")
    with pytest.raises(ArtifactError, match="outside"):
        store.put_checkpoint("prover", 1, make_checkpoint(tmp_path / "src"))
    assert not (tmp_path / "elsewhere").exists()


def test_symlink_inside_checkpoint_fails_verify(store: ArtifactStore, tmp_path: Path) -> None:
    stored = store.put_checkpoint("verifier", 1, make_checkpoint(tmp_path / "src"))
    os.symlink("/etc/hostname", stored.path / "link")
    with pytest.raises(ArtifactError, match="link: symlinks are not allowed"):
        store.verify(stored.uri, stored.sha256)


def test_resolve_inside_store_is_relative_to_root(store: ArtifactStore) -> None:
    assert store.resolve("artifact://verifier/v000001") == store.root / "verifier" / "v000001"
    assert store.resolve("artifact://verifier/./v000001") == store.root / "verifier" / "v000001"


def test_bad_names_and_sources_are_refused(store: ArtifactStore, tmp_path: Path) -> None:
    with pytest.raises(Exception, match="name") as info:
        store.put_checkpoint("../x", 1, make_checkpoint(tmp_path / "src"))
    assert info.value.__class__.__name__ == "InvalidArgument"
    with pytest.raises(ArtifactError, match="does not exist"):
        store.put_checkpoint("verifier", 1, tmp_path / "nope")
    bad = make_checkpoint(tmp_path / "bad")
    (bad / MANIFEST_NAME).write_text("{}")
    with pytest.raises(ArtifactError, match="reserved"):
        store.put_checkpoint("verifier", 1, bad)
    assert not (store.root / "verifier" / "v000001").exists()


def test_directory_sha256_is_what_put_checkpoint_records(store: ArtifactStore, tmp_path: Path) -> None:
    src = make_checkpoint(tmp_path / "src")
    stored = store.put_checkpoint("weak", 1, src)
    assert directory_sha256(src) == stored.sha256
    # A stored checkpoint hashes to its own record too: its MANIFEST.json is not part of the manifest.
    assert directory_sha256(stored.path) == stored.sha256
    (src / "config.json").write_text('{"hidden": 9}')
    assert directory_sha256(src) != stored.sha256
    with pytest.raises(ArtifactError, match="does not exist"):
        directory_sha256(tmp_path / "missing")
