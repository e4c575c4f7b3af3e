"""Object storage: the same interface on a directory and on an S3 bucket (moto's real server),
and the settings that choose it."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from config.settings import Settings
from pipelines.config import ConfigError
from store.blobs import BlobError, BlobStore, FileBlobStore, S3BlobStore, open_store
from tests import test_fetch

moto_url = test_fetch.moto_url  # the module-scoped moto server


@pytest.fixture(params=["file", "s3"])
def store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[BlobStore]:
    if request.param == "file":
        yield open_store((tmp_path / "storage").as_uri())
        return
    url = request.getfixturevalue("moto_url")
    for name, value in {
        "AWS_ENDPOINT_URL": url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    bucket = f"blobs-{tmp_path.name[-20:].lower().replace('_', '-')}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    found = open_store(f"s3://{bucket}/loopline/objects")
    assert isinstance(found, S3BlobStore) and found.prefix == "loopline/objects/"
    yield found


def test_put_is_content_addressed_and_once(store: BlobStore, tmp_path: Path) -> None:
    data = b"a,b\n1,2\n"
    blob = store.put_bytes(data)
    assert blob.sha256 == hashlib.sha256(data).hexdigest() and blob.size == len(data)
    source = tmp_path / "same.csv"
    source.write_bytes(data)
    assert store.put_file(source) == blob and source.exists()  # a copy: the source stays
    assert store.put_file(source, move=True) == blob and not source.exists()
    assert store.exists(blob.sha256) and not store.exists("0" * 64)
    assert store.get(blob.sha256) == data
    with store.open(blob.sha256) as fh:
        assert fh.read() == data
    with pytest.raises(BlobError), store.open("1" * 64):
        pass
    with pytest.raises(BlobError, match="not a sha256"):
        store.exists("../../etc/passwd")


def test_named_keys_and_materialize(store: BlobStore, tmp_path: Path) -> None:
    assert store.get_named("manifests/churn/1.json") is None
    store.put_named("manifests/churn/1.json", b"{}")
    store.put_named("manifests/churn/1.json", b'{"v": 1}')  # replaced
    assert store.get_named("manifests/churn/1.json") == b'{"v": 1}'
    with pytest.raises(BlobError, match="not a valid key"):
        store.put_named("../escape", b"x")
    blobs = [store.put_bytes(f"row {i}\n".encode()) for i in range(5)]
    out = tmp_path / "work" / "data"
    out.mkdir(parents=True)
    (out / "f0.csv").write_text("the commit's own file, replaced")
    assert store.materialize_all((b.sha256, out / f"f{i}.csv") for i, b in enumerate(blobs)) == 5
    assert [(out / f"f{i}.csv").read_text() for i in range(5)] == [f"row {i}\n" for i in range(5)]


def test_file_store_hard_links_read_only_blobs(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path / "storage")
    blob = store.put_bytes(b"x,y\n")
    dest = tmp_path / "work.csv"
    store.materialize(blob.sha256, dest)
    assert os.stat(dest).st_ino == os.stat(store.path(blob.sha256)).st_ino  # same filesystem: a link
    assert oct(os.stat(dest).st_mode & 0o777) == "0o444"


def test_storage_url_setting(tmp_path: Path) -> None:
    env: dict[str, Any] = {"LOOPLINE_HOME": str(tmp_path / "home")}
    settings = Settings.from_env(env)
    assert settings.storage == (tmp_path / "home" / "storage").as_uri()
    assert isinstance(open_store(settings.storage), FileBlobStore)
    assert Settings.from_env({**env, "LOOPLINE_STORAGE_URL": "s3://bucket/pre"}).storage == "s3://bucket/pre"
    for bad in ("http://x/y", "s3:///nobucket", "file://relative"):
        with pytest.raises(ConfigError, match="LOOPLINE_STORAGE_URL"):
            Settings.from_env({**env, "LOOPLINE_STORAGE_URL": bad})


def test_a_sandbox_never_gets_write_access_to_a_linked_blob(tmp_path: Path) -> None:
    from workers import sandbox

    store = FileBlobStore(tmp_path / "storage")
    blob = store.put_bytes(b"landed,data\n")
    work = tmp_path / "work"
    work.mkdir()
    store.materialize(blob.sha256, work / "landed.csv")
    (work / "own.csv").write_text("the commit's file\n")
    sandbox._share(work)  # what prepare() does to a worktree before a sandboxed command
    assert oct(os.stat(store.path(blob.sha256)).st_mode & 0o777) == "0o444"
    assert os.stat(work / "own.csv").st_mode & 0o020  # the worktree's own files: group-writable
