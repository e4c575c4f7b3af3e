"""Content-addressed object storage: every blob is kept once, under its sha256.

Two backends behind one interface, chosen by ``LOOPLINE_STORAGE_URL``: a directory
(``file://…``, the default under ``LOOPLINE_HOME``) and an S3-compatible bucket
(``s3://bucket/prefix``; endpoint and credentials from the standard ``AWS_*`` variables, so
MinIO works with ``AWS_ENDPOINT_URL``). Blobs live at ``sha256/ab/cd/<sha256>``; named keys
(``put_named``) hold anything addressed by name (manifests, later artifacts and logs).

A blob is never changed once stored: the file backend makes it read-only, and
:meth:`BlobStore.materialize` hard-links it into a worktree when both are on one filesystem
(10,000 files in well under a second: ``bench/materialize.py``), else copies it.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urlsplit

from pipelines.errors import LooplineError

CHUNK = 1 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")
_NAME = re.compile(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*")


class BlobError(LooplineError, RuntimeError):
    """A blob cannot be stored or read; the message says which and why."""


@dataclass(frozen=True)
class Blob:
    sha256: str
    size: int


def _checked(sha256: str) -> str:
    if not _SHA256.fullmatch(sha256):
        raise BlobError(f"not a sha256: {sha256[:80]!r}")
    return sha256


def _checked_name(name: str) -> str:
    if not _NAME.fullmatch(name) or any(part in (".", "..") for part in name.split("/")):
        raise BlobError(f"not a valid key name: {name[:80]!r}")
    return name


def blob_key(sha256: str) -> str:
    return f"sha256/{sha256[:2]}/{sha256[2:4]}/{_checked(sha256)}"


def hash_file(path: Path) -> Blob:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
            size += len(block)
    return Blob(digest.hexdigest(), size)


class BlobStore(ABC):
    """put/get/exists/open by sha256, named keys, and copying blobs out into a directory."""

    @abstractmethod
    def put_file(self, path: Path, *, move: bool = False) -> Blob:
        """Store the file's bytes (once; a second put of the same bytes is a no-op).
        ``move`` lets the store take the file itself instead of a copy where it can."""

    @abstractmethod
    def exists(self, sha256: str) -> bool: ...

    @abstractmethod
    @contextmanager
    def open(self, sha256: str) -> Iterator[IO[bytes]]:
        """The blob for reading; :class:`BlobError` if it is not stored."""
        yield  # type: ignore[misc]

    @abstractmethod
    def put_named(self, name: str, data: bytes) -> None:
        """Write (or replace) the object called ``name``."""

    @abstractmethod
    def get_named(self, name: str) -> bytes | None:
        """The object called ``name``, or None."""

    @abstractmethod
    def materialize(self, sha256: str, dest: Path) -> None:
        """Make ``dest`` hold the blob (replacing what is there): a hard link where possible."""

    def put_bytes(self, data: bytes) -> Blob:
        with tempfile.NamedTemporaryFile(delete=False) as fh:
            fh.write(data)
        try:
            return self.put_file(Path(fh.name), move=True)
        finally:
            Path(fh.name).unlink(missing_ok=True)

    def get(self, sha256: str) -> bytes:
        with self.open(sha256) as fh:
            return fh.read()

    def materialize_all(self, pairs: Iterable[tuple[str, Path]]) -> int:
        """:meth:`materialize` each ``(sha256, dest)``; returns how many."""
        count = 0
        for sha256, dest in pairs:
            self.materialize(sha256, dest)
            count += 1
        return count


class FileBlobStore(BlobStore):
    """Blobs as read-only files below ``root``; writes go through a temporary file and a rename,
    so a reader never sees half a blob and a crash leaves no partial one."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, sha256: str) -> Path:
        return self.root / blob_key(sha256)

    def _staging(self) -> Path:
        staging = self.root / "tmp"
        staging.mkdir(parents=True, exist_ok=True)
        return staging

    def put_file(self, path: Path, *, move: bool = False) -> Blob:
        staging = self._staging()
        if move and os.stat(path).st_dev == os.stat(staging).st_dev:
            blob = hash_file(path)
            self._place(path, blob)
            return blob
        digest, size = hashlib.sha256(), 0
        fd, tmp = tempfile.mkstemp(dir=staging, prefix="put-")
        try:
            with path.open("rb") as src, os.fdopen(fd, "wb") as out:
                for block in iter(lambda: src.read(CHUNK), b""):
                    digest.update(block)
                    size += len(block)
                    out.write(block)
            blob = Blob(digest.hexdigest(), size)
            self._place(Path(tmp), blob)
        finally:
            Path(tmp).unlink(missing_ok=True)
        return blob

    def _place(self, source: Path, blob: Blob) -> None:
        """Move ``source`` (a file this store may take) into place as ``blob``."""
        dest = self.path(blob.sha256)
        if dest.exists():
            source.unlink(missing_ok=True)
            return
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(source, 0o444)
        os.replace(source, dest)  # atomic; two writers of the same bytes both end with one blob

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    @contextmanager
    def open(self, sha256: str) -> Iterator[IO[bytes]]:
        try:
            fh = self.path(sha256).open("rb")
        except FileNotFoundError as exc:
            raise BlobError(f"blob {sha256} is not in {self.root}") from exc
        with fh:
            yield fh

    def _named(self, name: str) -> Path:
        return self.root / "named" / _checked_name(name)

    def put_named(self, name: str, data: bytes) -> None:
        dest = self._named(name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self._staging(), prefix="named-")
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, dest)

    def get_named(self, name: str) -> bytes | None:
        path = self._named(name)
        return path.read_bytes() if path.is_file() else None

    def materialize(self, sha256: str, dest: Path) -> None:
        # One link() per file in the common case: on this machine's disk each metadata call
        # costs about as much as the link itself (bench/materialize.py).
        source = self.path(sha256)
        try:
            os.link(source, dest)
        except FileExistsError:  # the commit's own file at this path: the landed object wins
            dest.unlink()
            os.link(source, dest)
        except FileNotFoundError as exc:
            if not source.is_file():
                raise BlobError(f"blob {sha256} is not in {self.root}") from exc
            raise
        except OSError as exc:  # another filesystem, or one without hard links: a copy
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES):
                raise
            shutil.copyfile(source, dest)


class S3BlobStore(BlobStore):
    """Blobs as objects under ``prefix`` in an S3-compatible bucket (boto3; the client reads
    ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``)."""

    #: Parallel downloads when materializing: S3 round trips, not bandwidth, bound small files.
    THREADS = 16

    def __init__(self, bucket: str, prefix: str = "", client: Any = None) -> None:
        self.bucket, self.prefix = bucket, prefix.strip("/") + "/" if prefix.strip("/") else ""
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = _s3_client()
        return self._client

    def _errors(self) -> tuple[type[Exception], ...]:
        from botocore.exceptions import BotoCoreError, ClientError

        return (BotoCoreError, ClientError)

    def _key(self, sha256: str) -> str:
        return self.prefix + blob_key(sha256)

    def put_file(self, path: Path, *, move: bool = False) -> Blob:
        blob = hash_file(path)
        if not self.exists(blob.sha256):
            try:
                self.client.upload_file(str(path), self.bucket, self._key(blob.sha256))
            except self._errors() as exc:
                raise BlobError(f"s3://{self.bucket}/{self._key(blob.sha256)}: {exc}") from exc
        if move:
            path.unlink(missing_ok=True)
        return blob

    def exists(self, sha256: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(sha256))
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise BlobError(f"s3://{self.bucket}/{self._key(sha256)}: {exc}") from exc

    @contextmanager
    def open(self, sha256: str) -> Iterator[IO[bytes]]:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(sha256))["Body"]
        except self._errors() as exc:
            raise BlobError(f"blob {sha256}: {exc}") from exc
        try:
            yield body
        finally:
            body.close()

    def put_named(self, name: str, data: bytes) -> None:
        try:
            self.client.put_object(
                Bucket=self.bucket, Key=self.prefix + "named/" + _checked_name(name), Body=data
            )
        except self._errors() as exc:
            raise BlobError(f"named object {name}: {exc}") from exc

    def get_named(self, name: str) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            answer = self.client.get_object(
                Bucket=self.bucket, Key=self.prefix + "named/" + _checked_name(name)
            )
            return bytes(answer["Body"].read())
        except self._errors() as exc:  # the storage unreachable too: a BlobError, not a crash
            if isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") in (
                "404",
                "NoSuchKey",
            ):
                return None
            raise BlobError(f"named object {name}: {exc}") from exc

    def materialize(self, sha256: str, dest: Path) -> None:
        part = dest.with_name(dest.name + ".loopline-part")
        try:
            self.client.download_file(self.bucket, self._key(sha256), str(part))
            os.replace(part, dest)
        except self._errors() as exc:
            raise BlobError(f"blob {sha256}: {exc}") from exc
        finally:
            part.unlink(missing_ok=True)

    def materialize_all(self, pairs: Iterable[tuple[str, Path]]) -> int:
        todo = list(pairs)
        with ThreadPoolExecutor(self.THREADS) as pool:
            for _ in pool.map(lambda pair: self.materialize(*pair), todo):
                pass
        return len(todo)


#: One boto3 client per process and AWS configuration: making one took 50-140 ms (measured),
#: and a store is opened for every stage log saved or served. boto3's clients are thread-safe;
#: a forked process (a pid of its own) and changed ``AWS_*`` variables get a new one.
_clients: dict[tuple[int, tuple[tuple[str, str], ...]], Any] = {}


def _s3_client() -> Any:
    key = (os.getpid(), tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_"))))
    client = _clients.get(key)
    if client is None:
        import boto3
        from botocore.config import Config

        client = _clients[key] = boto3.session.Session().client(
            "s3", config=Config(connect_timeout=10, read_timeout=60, retries={"max_attempts": 3})
        )
    return client


def open_store(url: str) -> BlobStore:
    """The store a ``LOOPLINE_STORAGE_URL`` names; :class:`ValueError` for anything else."""
    parts = urlsplit(url)
    if parts.scheme == "file" and parts.netloc in ("", "localhost") and parts.path:
        return FileBlobStore(Path(unquote(parts.path)))
    if parts.scheme == "s3" and parts.netloc:
        return S3BlobStore(parts.netloc, unquote(parts.path))
    raise ValueError(f"LOOPLINE_STORAGE_URL {url!r}: expected file:///absolute/path or s3://bucket/prefix")
