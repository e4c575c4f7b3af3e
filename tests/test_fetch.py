"""Runs triggered from object storage fetch their objects: S3 from a real moto server, Azure from a
local HTTP server that speaks the blob GET and checks the credential; driven through the app and
``prepare_run`` (no Celery), with real git repositories."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import boto3
import pytest
from flask.testing import FlaskClient
from moto.server import ThreadedMotoServer

from config.settings import Settings
from loopline.demo import EXAMPLE
from pipelines.config import AzureLake, DataLakeEntry, RepoConfig, S3Lake
from pipelines.events import DataObject
from service import create_app
from service.state import loopline
from store.db import Database
from store.models import Delivery, Run
from tests.conftest import Project, make_settings
from workers import runner
from workers.fetch import FetchError, destination, fetch_all
from workers.intake import prepare_run

TOKEN = "fetch-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
KEY_ENV, SECRET_ENV = "LAKE_TEST_KEY_ID", "LAKE_TEST_SECRET"
SAS = "sv=2021-08-06&ss=b&sp=r&sig=c2VjcmV0JTJGc2ln"
BEARER = "eyJ0eXAiOiJKV1QifQ.test"


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def bucket(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv(KEY_ENV, "testing")
    monkeypatch.setenv(SECRET_ENV, "testing")
    s3 = boto3.client(
        "s3",
        endpoint_url=moto_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    name = f"lake-{hashlib.sha256(str(id(monkeypatch)).encode()).hexdigest()[:12]}"
    s3.create_bucket(Bucket=name)
    s3.name = name
    return s3


class Blobs(ThreadingHTTPServer):
    """A blob endpoint: ``GET /<container>/<name>`` with a SAS query or a bearer token."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _BlobHandler)
        self.blobs: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None, str | None]] = []  # (path, sig, authorization)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _BlobHandler(BaseHTTPRequestHandler):
    server: Blobs

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        sig = parse_qs(parts.query).get("sig", [None])[0]
        auth = self.headers.get("Authorization")
        self.server.requests.append((unquote(parts.path), sig, auth))
        if (sig, auth) not in ((parse_qs(SAS)["sig"][0], None), (None, f"Bearer {BEARER}")):
            self._answer(403, b"AuthenticationFailed")
        elif self.headers.get("x-ms-version") is None:
            self._answer(400, b"MissingRequiredHeader")
        elif unquote(parts.path) not in self.server.blobs:
            self._answer(404, b"BlobNotFound")
        else:
            data = self.server.blobs[unquote(parts.path)]
            self._answer(200, data, etag=f'"0x{hashlib.md5(data).hexdigest()[:15].upper()}"')

    def _answer(self, status: int, body: bytes, etag: str | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        if etag:
            self.send_header("ETag", etag)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def blobs() -> Iterator[Blobs]:
    server = Blobs()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def batch_csv(tmp_path: Path, rows: int = 40, seed: int = 1) -> bytes:
    """New labelled rows in the sample project's own format (its scripts/make_batch.py)."""
    out = tmp_path / f"batch-{seed}.csv"
    subprocess.run(
        [sys.executable, str(EXAMPLE / "scripts/make_batch.py"), str(rows), str(out), "--seed", str(seed)],
        check=True,
        capture_output=True,
    )
    return out.read_bytes()


def s3_record(bucket: str, key: str, put: dict[str, Any] | None, size: int | None, seq: str) -> dict:
    quoted = key.replace(" ", "+")  # S3 form-encodes keys in notifications
    name = "ObjectCreated:Put" if put else "ObjectRemoved:Delete"
    item: dict[str, Any] = {"key": quoted, "sequencer": seq}
    if put:
        item.update(size=size, eTag=put["ETag"].strip('"'))
    return {"eventName": name, "s3": {"bucket": {"name": bucket}, "object": item}}


class Lake:
    """The app, its store and a project whose data_lake is an S3 bucket and an Azure container."""

    def __init__(
        self, tmp_path: Path, project: Project, db: Database, entries: tuple[DataLakeEntry, ...]
    ) -> None:
        repo = project.repo_config(data_lake=entries)
        self.settings: Settings = make_settings(tmp_path, (repo,), db_url=db.url, event_token=TOKEN)
        self.client: FlaskClient = create_app({"settings": self.settings, "TESTING": True}).test_client()
        self.db = db
        project.push()

    def post(self, sender: str, body: Any, **headers: str) -> list[str]:
        answer = self.client.post(f"/events/{sender}", data=json.dumps(body), headers={**AUTH, **headers})
        assert answer.status_code == 202, answer.json
        return [e["event_id"] for e in answer.json["events"]]

    def run(self) -> tuple[Run, list[str]]:
        with self.db.session() as s:
            ids = [d.id for d in s.query(Delivery).order_by(Delivery.received_at)]
        prepared = prepare_run(self.settings, self.db, ids)
        assert prepared.run_id is not None
        with self.db.session() as s:
            run = s.get(Run, prepared.run_id)
            assert run is not None
            _ = run.stages
        return run, list(prepared.stages)

    def close(self) -> None:
        with self.client.application.app_context():
            loopline().db.dispose()


@pytest.fixture
def lake_for(tmp_path: Path, project: Project, db: Database) -> Iterator[Any]:
    made: list[Lake] = []

    def make(*entries: DataLakeEntry) -> Lake:
        made.append(Lake(tmp_path, project, db, entries))
        return made[-1]

    yield make
    for lake in made:
        lake.close()


def s3_entry(bucket: Any, moto_url: str) -> DataLakeEntry:
    return DataLakeEntry(
        s3=S3Lake(
            bucket=bucket.name,
            prefix="incoming/",
            endpoint_url=moto_url,
            region="us-east-1",
            access_key_env=KEY_ENV,
            secret_key_env=SECRET_ENV,
        )
    )


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # slow (dvc repro): one store is enough
def test_s3_event_to_run_to_retrain(tmp_path: Path, bucket: Any, moto_url: str, lake_for: Any) -> None:
    lake = lake_for(s3_entry(bucket, moto_url))
    one, two = batch_csv(tmp_path, seed=1), batch_csv(tmp_path, seed=2)
    put_one = bucket.put_object(Bucket=bucket.name, Key="incoming/2026/batch one.csv", Body=one)
    put_two = bucket.put_object(Bucket=bucket.name, Key="incoming/batch-2.csv", Body=two)
    bucket.put_object(Bucket=bucket.name, Key="incoming/gone.csv", Body=b"never fetched")
    lake.post(
        "s3",
        {
            "Records": [
                s3_record(bucket.name, "incoming/2026/batch one.csv", put_one, len(one), "01"),
                s3_record(bucket.name, "incoming/batch-2.csv", put_two, len(two), "02"),
                s3_record(bucket.name, "incoming/gone.csv", None, None, "03"),
            ]
        },
    )
    run, stages = lake.run()
    data = Path(run.workspace) / "data/raw"
    assert (data / "2026/batch one.csv").read_bytes() == one and (data / "batch-2.csv").read_bytes() == two
    assert not (data / "gone.csv").exists()  # a removal is recorded, never fetched
    assert [f["path"] for f in run.classification["files"]] == [
        "data/raw/2026/batch one.csv",
        "data/raw/batch-2.csv",
    ]
    assert stages[:3] == ["validate_data", "environment", "retrain"]
    for stage in stages[:3]:
        assert runner.execute(lake.settings, lake.db, run.id, stage) == "succeeded"
    with lake.db.session() as s:
        detail = s.get(Run, run.id).stages[0].detail
    assert sorted(f["file"] for f in detail["files"]) == ["batch one.csv", "batch-2.csv"]
    assert all(f["rows"] == 40 and f["problems"] == [] for f in detail["files"])


def test_an_object_changed_since_its_event_fails_the_run(bucket: Any, moto_url: str, lake_for: Any) -> None:
    lake = lake_for(s3_entry(bucket, moto_url))
    put = bucket.put_object(Bucket=bucket.name, Key="incoming/a.csv", Body=b"x,y\n1,2\n")
    bucket.put_object(Bucket=bucket.name, Key="incoming/a.csv", Body=b"x,y\n1,2\n3,4\n")  # overwritten since
    lake.post("s3", {"Records": [s3_record(bucket.name, "incoming/a.csv", put, 8, "01")]})
    run, stages = lake.run()
    assert run.status == "failed" and stages == []
    assert run.reason.startswith("workspace: s3://") and "reported 8" in run.reason
    assert all(s.status == "skipped" for s in run.stages)


def test_a_missing_object_or_credential_fails_the_run_clearly(
    bucket: Any, moto_url: str, lake_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = lake_for(s3_entry(bucket, moto_url))
    lake.post("s3", {"Records": [s3_record(bucket.name, "incoming/none.csv", {"ETag": "e"}, 1, "01")]})
    run, _ = lake.run()
    assert run.status == "failed" and "NoSuchKey" in run.reason
    monkeypatch.delenv(SECRET_ENV)
    lake.post("s3", {"Records": [s3_record(bucket.name, "incoming/other.csv", {"ETag": "e"}, 1, "01")]})
    with lake.db.session() as s:
        newest = s.query(Delivery).filter(Delivery.status == "pending").one().id
    run_id = prepare_run(lake.settings, lake.db, [newest]).run_id
    with lake.db.session() as s:
        reason = s.get(Run, run_id).reason
    assert f"environment variable {SECRET_ENV}" in reason


def test_only_removals_start_no_run(bucket: Any, moto_url: str, lake_for: Any) -> None:
    lake = lake_for(s3_entry(bucket, moto_url))
    ids = lake.post("s3", {"Records": [s3_record(bucket.name, "incoming/a.csv", None, None, "05")]})
    assert prepare_run(lake.settings, lake.db, ids).run_id is None
    with lake.db.session() as s:
        row = s.get(Delivery, ids[0])
        assert row.status == "processed" and row.run_id is None and s.query(Run).count() == 0


def azure_event(key: str, data: bytes, etag: str) -> dict[str, Any]:
    return {
        "topic": "/subscriptions/x/resourceGroups/r/providers/Microsoft.Storage/storageAccounts/acmelake",
        "subject": f"/blobServices/default/containers/churn/blobs/{key}",
        "eventType": "Microsoft.Storage.BlobCreated",
        "eventTime": "2026-11-22T06:00:00Z",
        "id": hashlib.sha256(key.encode()).hexdigest(),
        "data": {
            "api": "PutBlob",
            "eTag": etag,
            "contentLength": len(data),
            "url": "https://evil.example/never-fetched",
            "sequencer": "0000000000000442000000000002896" + str(len(key) % 10),
        },
    }


@pytest.mark.parametrize("credential", [SAS, BEARER])
def test_azure_blobs_are_fetched_with_the_configured_credential(
    tmp_path: Path, blobs: Blobs, lake_for: Any, monkeypatch: pytest.MonkeyPatch, credential: str
) -> None:
    monkeypatch.setenv("LAKE_TEST_AZURE", credential)
    entry = AzureLake(
        account="acmelake",
        container="churn",
        prefix="incoming/",
        endpoint=blobs.url,
        credential_env="LAKE_TEST_AZURE",
    )
    lake = lake_for(DataLakeEntry(azure=entry))
    data = batch_csv(tmp_path, rows=10)
    blobs.blobs["/churn/incoming/day 1/new.csv"] = data
    etag = f'"0x{hashlib.md5(data).hexdigest()[:15].upper()}"'
    lake.post(
        "azure", [azure_event("incoming/day 1/new.csv", data, etag)], **{"aeg-event-type": "Notification"}
    )
    run, stages = lake.run()
    assert (Path(run.workspace) / "data/raw/day 1/new.csv").read_bytes() == data
    assert stages[0] == "validate_data"
    assert [r[0] for r in blobs.requests] == ["/churn/incoming/day 1/new.csv"]  # never the event's url


def test_azure_refusal_fails_the_run_without_leaking_the_sas(
    blobs: Blobs, lake_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAKE_TEST_AZURE", "sv=2021&sig=WRONG")
    entry = AzureLake(
        account="acmelake", container="churn", endpoint=blobs.url, credential_env="LAKE_TEST_AZURE"
    )
    lake = lake_for(DataLakeEntry(azure=entry))
    blobs.blobs["/churn/a.csv"] = b"x\n1\n"
    lake.post("azure", [azure_event("a.csv", b"x\n1\n", '"0x1"')])
    run, _ = lake.run()
    assert run.status == "failed" and "HTTP 403" in run.reason and "WRONG" not in run.reason


def test_keys_never_become_paths_outside_the_workspace(tmp_path: Path) -> None:
    into = tmp_path / "ws" / "data/raw"
    into.mkdir(parents=True)
    for key in ("../x.csv", "/etc/passwd", "a/\0.csv", "a//b.csv", "dir/"):
        with pytest.raises(FetchError, match="refusing object key"):
            destination(into, DataObject(store="s3", bucket="b", key=key, path=key))
    (into / "link").symlink_to(tmp_path)  # a symlinked directory inside data.into
    with pytest.raises(FetchError, match="outside"):
        destination(into, DataObject(store="s3", bucket="b", key="link/x.csv", path="link/x.csv"))


def test_a_dropped_file_swapped_for_a_symlink_is_not_read(tmp_path: Path) -> None:
    folder, into = tmp_path / "lake", tmp_path / "ws"
    folder.mkdir()
    (tmp_path / "secret").write_text("s3cret")
    (folder / "a.csv").symlink_to(tmp_path / "secret")
    repo = RepoConfig(
        name="r", provider="git", match="r", url="/x", data_lake=(DataLakeEntry(folder=str(folder)),)
    )
    item = DataObject(store="folder", bucket=str(folder), key="a.csv", path="a.csv")
    with pytest.raises(FetchError, match="cannot be read"):
        fetch_all(repo, [item], into)
    assert not (into / "a.csv").exists()
