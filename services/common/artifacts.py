"""Immutable checkpoint directories with a sha256 manifest, addressed by store-relative URIs.

Layout: ``<root>/<name>/v000002/`` holds the checkpoint's files plus ``MANIFEST.json``, a canonical JSON
list of every file's relative path, size and sha256. The version record's ``sha256`` is the sha256 of the
manifest bytes, so one hash pins every byte of the checkpoint; the same content always gives the same hash.

URIs look like ``artifact://<name>/v000002`` and are relative to the store root, because the store (a shared
volume) is mounted at different paths in different pods.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from services.common.errors import ArtifactError
from services.common.registry import validate_model_name

SCHEME = "artifact://"
MANIFEST_NAME = "MANIFEST.json"
MANIFEST_FORMAT = 1
_INCOMING = ".incoming"  # temp dirs live inside the root so the final rename stays on one filesystem
_CHUNK = 1 << 20


@dataclass(frozen=True)
class StoredArtifact:
    """Where a checkpoint was stored: its URI (store-relative), manifest sha256 and local path."""

    uri: str
    sha256: str
    path: Path


def canonical_json(obj: Any) -> bytes:
    """Deterministic JSON bytes: sorted keys, no whitespace, ASCII only."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


_VERSION_DIR = re.compile(r"v\d{6,}")


def version_dirname(version: int) -> str:
    """``v000002`` for version 2 (zero-padded so directory listings sort by version)."""
    return f"v{version:06d}"


def _sha256_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _copy_and_hash(src: Path, dst: Path) -> tuple[str, int]:
    """Copy one file, hashing the bytes as written so the manifest describes exactly what was stored."""
    digest = hashlib.sha256()
    size = 0
    dst.parent.mkdir(parents=True, exist_ok=True)
    with src.open("rb") as fin, dst.open("xb") as fout:
        while chunk := fin.read(_CHUNK):
            digest.update(chunk)
            fout.write(chunk)
            size += len(chunk)
        fout.flush()
        os.fsync(fout.fileno())
    return digest.hexdigest(), size


def _manifest_entry(rel: str, digest: str, size: int) -> dict[str, Any]:
    return {"path": rel, "sha256": digest, "size": size}


def _manifest_bytes(entries: list[dict[str, Any]]) -> bytes:
    """The canonical manifest of :func:`_manifest_entry` entries (sorted by path by the caller)."""
    return canonical_json({"files": entries, "format": MANIFEST_FORMAT})


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _list_files(directory: Path, *, follow_file_symlinks: bool) -> list[str]:
    """Relative POSIX paths of every regular file under ``directory`` (sorted).

    Directory symlinks are refused (they could loop or pull in another tree); file symlinks are followed when
    copying a source (e.g. a Hugging Face snapshot) and refused inside a stored checkpoint.
    """
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(directory):
        base = Path(dirpath)
        for dirname in dirnames:
            if (base / dirname).is_symlink():
                raise ArtifactError(f"{(base / dirname).relative_to(directory)}: directory symlinks are refused")
        for filename in filenames:
            path = base / filename
            rel = path.relative_to(directory).as_posix()
            if path.is_symlink() and not follow_file_symlinks:
                raise ArtifactError(f"{rel}: symlinks are not allowed inside a checkpoint")
            try:
                mode = path.stat().st_mode
            except OSError as exc:  # e.g. a dangling symlink
                raise ArtifactError(f"{rel}: cannot stat: {exc}") from exc
            if not stat.S_ISREG(mode):
                raise ArtifactError(f"{rel}: not a regular file")
            found.append(rel)
    return sorted(found)


def directory_sha256(path: Path) -> str:
    """The manifest sha256 that :meth:`ArtifactStore.put_checkpoint` would record for the directory ``path``.

    A top-level ``MANIFEST.json`` is skipped, so the hash of a stored checkpoint equals its version record's.
    """
    path = Path(path)
    if not path.is_dir():
        raise ArtifactError(f"{path}: checkpoint directory does not exist")
    entries = []
    for rel in _list_files(path, follow_file_symlinks=True):
        if rel == MANIFEST_NAME:
            continue
        entries.append(_manifest_entry(rel, *_sha256_file(path / rel)))
    return hashlib.sha256(_manifest_bytes(entries)).hexdigest()


class ArtifactStore:
    """A directory tree of immutable, verifiable checkpoint versions."""

    def __init__(self, root: Path) -> None:
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        # Resolved once so containment checks compare real paths (the root itself may be a symlink).
        self._root = root.resolve()

    @property
    def root(self) -> Path:
        return self._root

    @staticmethod
    def uri_for(name: str, version: int) -> str:
        """The URI of checkpoint ``version`` of model ``name``."""
        validate_model_name(name)
        if version < 1:
            raise ArtifactError(f"version must be >= 1, got {version}")
        return f"{SCHEME}{name}/{version_dirname(version)}"

    def latest_version(self, name: str) -> int:
        """The highest version of ``name`` in the store (0 when none): what a publisher must go beyond even when the
        registry lost its records (Redis without persistence, restarted)."""
        folder = self.resolve(f"{SCHEME}{validate_model_name(name)}")
        if not folder.is_dir():
            return 0
        versions = [int(d.name[1:]) for d in folder.iterdir() if d.is_dir() and _VERSION_DIR.fullmatch(d.name)]
        return max(versions, default=0)

    def remove(self, uri: str) -> None:
        """Delete a stored version that was never published (its record was refused): the number stays usable."""
        shutil.rmtree(self.resolve(uri), ignore_errors=True)

    def put_checkpoint(self, name: str, version: int, src_dir: Path) -> StoredArtifact:
        """Copy ``src_dir`` into the store as ``name`` version ``version`` and return its URI and sha256.

        The copy is written to a temp dir inside the root and renamed into place, so readers never see a
        half-written checkpoint. Refuses (ArtifactError) if that version already exists: versions are
        immutable.
        """
        uri = self.uri_for(name, version)
        dest = self.resolve(uri)
        src_dir = Path(src_dir)
        if not src_dir.is_dir():
            raise ArtifactError(f"{src_dir}: source checkpoint directory does not exist")
        if dest.exists():
            raise ArtifactError(f"{uri} already exists; checkpoint versions are immutable")
        files = _list_files(src_dir, follow_file_symlinks=True)
        if MANIFEST_NAME in files:
            raise ArtifactError(f"{src_dir / MANIFEST_NAME}: {MANIFEST_NAME} is reserved for the store")

        incoming = self._root / _INCOMING
        incoming.mkdir(exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"{name}-{version_dirname(version)}-", dir=incoming))
        try:
            entries = []
            for rel in files:
                entries.append(_manifest_entry(rel, *_copy_and_hash(src_dir / rel, tmp / rel)))
            manifest = _manifest_bytes(entries)
            with (tmp / MANIFEST_NAME).open("xb") as fh:
                fh.write(manifest)
                fh.flush()
                os.fsync(fh.fileno())
            _fsync_dir(tmp)
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.exists():  # lost a race with another writer of the same version
                raise ArtifactError(f"{uri} already exists; checkpoint versions are immutable")
            try:
                # rename(2) is atomic; it fails on a non-empty destination, which a real checkpoint always is.
                os.rename(tmp, dest)
            except OSError as exc:
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    raise ArtifactError(f"{uri} already exists; checkpoint versions are immutable") from exc
                raise
            _fsync_dir(dest.parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return StoredArtifact(uri=uri, sha256=hashlib.sha256(manifest).hexdigest(), path=dest)

    def resolve(self, uri: str) -> Path:
        """The local path of ``uri``; refuses any URI that is malformed or whose path escapes the root."""
        if not isinstance(uri, str) or not uri.startswith(SCHEME):
            raise ArtifactError(f"{uri!r}: not an {SCHEME} uri")
        rel = uri[len(SCHEME) :]
        if not rel or "\x00" in rel or "\\" in rel:
            raise ArtifactError(f"{uri!r}: empty path or forbidden character")
        parts = PurePosixPath(rel)
        if parts.is_absolute() or ".." in parts.parts:
            raise ArtifactError(f"{uri!r}: path must be relative to the store and must not contain '..'")
        # resolve() follows symlinks, so a link inside the store that points outside is caught here too.
        path = (self._root / parts).resolve()
        if path == self._root or not path.is_relative_to(self._root):
            raise ArtifactError(f"{uri!r}: resolves outside the artifact store")
        return path

    def manifest_sha256(self, uri: str) -> str:
        """The sha256 that pins a stored version (of its manifest); refuses a uri with nothing stored."""
        manifest = self.resolve(uri) / MANIFEST_NAME
        try:
            return hashlib.sha256(manifest.read_bytes()).hexdigest()
        except OSError as exc:
            raise ArtifactError(f"{uri}: nothing stored there ({exc.strerror})") from exc

    def verify(self, uri: str, expected_sha256: str) -> Path:
        """Check that checkpoint ``uri`` matches ``expected_sha256`` byte for byte; return its directory.

        Recomputes the manifest hash and every file's size and sha256; refuses missing, extra or changed files
        with an ArtifactError that names them.
        """
        path = self.resolve(uri)
        if not path.is_dir():
            raise ArtifactError(f"{uri}: checkpoint directory is missing")
        manifest_path = path / MANIFEST_NAME
        try:
            manifest_bytes = manifest_path.read_bytes()
        except OSError as exc:
            raise ArtifactError(f"{uri}: cannot read {MANIFEST_NAME}: {exc}") from exc
        actual_sha = hashlib.sha256(manifest_bytes).hexdigest()
        if actual_sha != expected_sha256.lower():
            raise ArtifactError(f"{uri}: {MANIFEST_NAME} sha256 mismatch: expected {expected_sha256}, got {actual_sha}")
        entries = self._parse_manifest(uri, manifest_bytes)

        on_disk = set(_list_files(path, follow_file_symlinks=False)) - {MANIFEST_NAME}
        problems: list[str] = []
        for rel in sorted(on_disk - entries.keys()):
            problems.append(f"{rel}: extra file not in the manifest")
        for rel, (want_sha, want_size) in sorted(entries.items()):
            if rel not in on_disk:
                problems.append(f"{rel}: missing")
                continue
            got_sha, got_size = _sha256_file(path / rel)
            if got_size != want_size:
                problems.append(f"{rel}: size {got_size} != {want_size} in the manifest")
            elif got_sha != want_sha:
                problems.append(f"{rel}: sha256 {got_sha} != {want_sha} in the manifest")
        if problems:
            raise ArtifactError(f"{uri} failed verification: " + "; ".join(problems))
        return path

    @staticmethod
    def _parse_manifest(uri: str, data: bytes) -> dict[str, tuple[str, int]]:
        """Manifest entries as ``{relpath: (sha256, size)}``; refuses a malformed manifest."""
        try:
            doc = json.loads(data)
            entries: dict[str, tuple[str, int]] = {}
            for item in doc["files"]:
                rel, sha, size = item["path"], item["sha256"], item["size"]
                if not (isinstance(rel, str) and isinstance(sha, str) and isinstance(size, int)):
                    raise TypeError(f"bad entry {item!r}")
                pure = PurePosixPath(rel)
                if pure.is_absolute() or ".." in pure.parts or rel in entries:
                    raise ValueError(f"bad path {rel!r}")
                entries[rel] = (sha, size)
        except (ValueError, TypeError, KeyError) as exc:
            raise ArtifactError(f"{uri}: malformed {MANIFEST_NAME}: {exc}") from exc
        return entries
