"""``/healthz`` is unhealthy when the store cannot write; ids in URLs beyond the store's range are
404s (both stores)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from flask.testing import FlaskClient

from service import STORE_ID_MAX, create_app
from service.state import loopline
from tests.conftest import PG_ADMIN_URL, make_settings

TOKEN = {"Authorization": "Bearer s3cret", "X-Loopline-User": "ada"}


@pytest.fixture
def client(tmp_path: Path, db_url: str) -> Iterator[FlaskClient]:
    app = create_app(
        {"settings": make_settings(tmp_path, db_url=db_url, api_token="s3cret"), "TESTING": True}
    )
    yield app.test_client()
    with app.app_context():
        loopline().db.dispose()


@pytest.mark.parametrize("big", [STORE_ID_MAX + 1, 2**63, 2**64 + 5, 10**40])
def test_ids_beyond_the_store_are_404(client: FlaskClient, big: int) -> None:
    for path in (
        f"/api/runs/{big}",
        f"/api/runs/{big}/stages/retrain/log",
        f"/api/models/churn/versions/{big}",
    ):
        answer = client.get(path)
        assert answer.status_code == 404 and answer.json["error"] == "not_found", path
    for action in ("approve", "reject", "cancel", "retry"):
        answer = client.post(f"/api/runs/{big}/{action}", headers=TOKEN, json={})
        assert answer.status_code == 404 and answer.json["error"] == "not_found"
    answer = client.post(f"/api/models/churn/versions/{big}/promote", headers=TOKEN, json={})
    assert answer.status_code == 404
    assert client.get(f"/api/runs/{STORE_ID_MAX}").status_code == 404  # in range: looked up, not there


def test_healthz_is_unhealthy_when_the_store_cannot_write(client: FlaskClient, db_url: str) -> None:
    assert client.get("/healthz").json == {"status": "ok"}
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite's unwritable store is the disk-full fault in tests/faults")
    name = db_url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:  # reads work, writes fail
        conn.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
    with client.application.app_context():
        loopline().db.dispose()  # new connections take the setting
    answer = client.get("/healthz")
    assert answer.status_code == 503 and answer.json["status"] == "unhealthy"
    assert "read-only" in answer.json["store"]
    assert client.get("/api/runs").status_code == 200  # reading still works
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = off')
    with client.application.app_context():
        loopline().db.dispose()
    assert client.get("/healthz").status_code == 200
