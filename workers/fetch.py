"""Bring a data run's objects into its workspace, under ``data.into``.

Drop-folder files are copied (never through a symlink); S3 and MinIO objects are downloaded with
boto3 from the entry's ``endpoint_url``; Azure blobs with a GET on the entry's blob endpoint and
its SAS or bearer credential. Only configured endpoints are ever contacted (an event's ``url`` is
not), the size and ETag an event reported are checked, and each file is written whole or not at all.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

import requests

from pipelines.config import AzureLake, DataLakeEntry, RepoConfig, S3Lake
from pipelines.errors import LooplineError
from pipelines.events import DataObject, unsafe_key

CHUNK = 1 << 20
AZURE_API_VERSION = "2021-08-06"


class FetchError(LooplineError, RuntimeError):
    """An object cannot be fetched; the message says which and why (never a credential)."""


def fetch_all(
    repo: RepoConfig, items: list[DataObject], into: Path, env: Mapping[str, str] | None = None
) -> None:
    """Fetch every object of ``items`` (none of them removed) into ``into``."""
    env = os.environ if env is None else env
    clients: dict[S3Lake, Any] = {}
    for item in items:
        dest = destination(into, item)
        if item.store == "folder":
            _copy(item, dest)
            continue
        entry = _entry(repo, item)
        if entry.s3:
            if entry.s3 not in clients:
                clients[entry.s3] = _s3_client(entry.s3, env)
            _s3(clients[entry.s3], item, dest)
        elif entry.azure:
            _azure(entry.azure, item, dest, env)


def destination(into: Path, item: DataObject) -> Path:
    """Where ``item`` lands: its path below the entry's prefix, never outside ``into``."""
    relative = item.path or item.key
    problem = unsafe_key(relative) or ("a folder, not a file" if relative.endswith("/") else None)
    if problem:
        raise FetchError(f"refusing object key {item.key[:200]!r}: {problem}")
    dest = into / relative
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not dest.parent.resolve().is_relative_to(into.resolve()):
        raise FetchError(f"refusing object key {item.key[:200]!r}: it leads outside {into}")
    return dest


def _entry(repo: RepoConfig, item: DataObject) -> DataLakeEntry:
    for entry in repo.data_lake:
        if entry.match(item):
            return entry
    raise FetchError(f"{item.url} is no longer in a data_lake entry of {repo.name}")


def _secret(env: Mapping[str, str], name: str) -> str:
    value = env.get(name)
    if not value:
        raise FetchError(f"environment variable {name} (named in data_lake) is not set on this worker")
    return value


@contextmanager
def _writing(dest: Path) -> Iterator[IO[bytes]]:
    """A temporary file renamed over ``dest`` only if the block finishes."""
    part = dest.with_name(dest.name + ".loopline-part")
    try:
        with part.open("wb") as fh:
            yield fh
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)


def _verify(item: DataObject, size: int | None, etag: str | None) -> None:
    """The size and ETag the event reported, where both sides know them."""
    if item.size is not None and size is not None and size != item.size:
        raise FetchError(f"{item.url}: {size} bytes, but the event reported {item.size}; it changed since")
    found = (etag or "").strip('"')
    if item.etag and found and found != item.etag:
        raise FetchError(f"{item.url}: ETag {found} is not the event's {item.etag}; it changed since")


def _copy(item: DataObject, dest: Path) -> None:
    """A drop-folder file, opened without following a symlink; ``etag`` is its sha256."""
    root = Path(item.bucket)
    source = root / item.key
    if not source.parent.resolve().is_relative_to(root.resolve()):
        raise FetchError(f"{item.url}: leads outside the drop folder")
    digest, written = hashlib.sha256(), 0
    try:
        fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as src, _writing(dest) as out:
            for block in iter(lambda: src.read(CHUNK), b""):
                digest.update(block)
                written += len(block)
                out.write(block)
            if item.etag and digest.hexdigest() != item.etag:
                raise FetchError(f"{item.url}: changed since it was dropped (sha256 differs)")
    except OSError as exc:
        raise FetchError(f"{item.url}: cannot be read ({exc.strerror or exc})") from exc
    _verify(item, written, None)


def _s3_client(lake: S3Lake, env: Mapping[str, str]) -> Any:
    import boto3
    from botocore.config import Config

    credentials: dict[str, str] = {}
    if lake.access_key_env and lake.secret_key_env:
        credentials["aws_access_key_id"] = _secret(env, lake.access_key_env)
        credentials["aws_secret_access_key"] = _secret(env, lake.secret_key_env)
        if lake.session_token_env:
            credentials["aws_session_token"] = _secret(env, lake.session_token_env)
    return boto3.session.Session().client(
        "s3",
        endpoint_url=lake.endpoint_url,
        region_name=lake.region,
        config=Config(connect_timeout=10, read_timeout=60, retries={"max_attempts": 3}),
        **credentials,
    )


def _s3(client: Any, item: DataObject, dest: Path) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    args = {"Bucket": item.bucket, "Key": item.key}
    if item.version:
        args["VersionId"] = item.version
    try:
        response = client.get_object(**args)
        _verify(item, response.get("ContentLength"), response.get("ETag"))
        written = 0
        with _writing(dest) as out:
            for block in response["Body"].iter_chunks(CHUNK):
                written += len(block)
                out.write(block)
            _verify(item, written, None)
    except (BotoCoreError, ClientError) as exc:
        raise FetchError(f"{item.url}: {exc}") from exc


def _azure(lake: AzureLake, item: DataObject, dest: Path, env: Mapping[str, str]) -> None:
    url = f"{lake.base_url}/{quote(item.bucket)}/{quote(item.key)}"
    headers = {"x-ms-version": AZURE_API_VERSION}
    query: list[str] = [f"versionid={quote(item.version)}"] if item.version else []
    if lake.credential_env:
        credential = _secret(env, lake.credential_env)
        if "sig=" in credential:  # a SAS token goes in the query string
            query.append(credential.lstrip("?"))
        else:
            headers["Authorization"] = f"Bearer {credential}"
    if query:
        url += "?" + "&".join(query)
    try:
        with requests.get(url, headers=headers, stream=True, timeout=(10, 60), allow_redirects=False) as r:
            if r.status_code != 200:
                raise FetchError(f"{item.url}: the blob endpoint answered HTTP {r.status_code}")
            length = r.headers.get("Content-Length")
            _verify(item, int(length) if length and length.isdigit() else None, r.headers.get("ETag"))
            written = 0
            with _writing(dest) as out:
                for block in r.iter_content(CHUNK):
                    written += len(block)
                    out.write(block)
                _verify(item, written, None)
    except requests.RequestException as exc:  # its text holds the URL, and so a SAS token
        raise FetchError(f"{item.url}: {type(exc).__name__} talking to {lake.base_url}") from exc
