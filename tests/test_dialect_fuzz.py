"""Property tests: whatever arrives, a dialect answers with an event, ``PayloadError`` or
``Ignored`` (so the app answers 2xx or 400, never 500), and what it returns is well-formed."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.datastructures import Headers

from pipelines import providers
from pipelines.events import Ignored, PayloadError, valid_ref, valid_sha
from tests.conftest import PAYLOADS
from tests.webhooks import DELIVERY_HEADER, EVENT_HEADER, PROVIDERS, SIGNATURE_HEADER

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KNOWN_HEADERS = sorted(
    {*EVENT_HEADER.values(), *DELIVERY_HEADER.values(), *SIGNATURE_HEADER.values(), "X-Gitlab-Event-UUID"}
)
# Header values as HTTP can carry them (no line breaks), any other character allowed.
header_text = st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=80)
headers = st.dictionaries(
    st.sampled_from(KNOWN_HEADERS) | st.text("abcXY-", min_size=1, max_size=12), header_text, max_size=6
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=60),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12,
)
#: A real body per provider, and the places in it each parser reads.
BASE = {
    "github": "github/push-modified-file-signed.json",
    "gitlab": "gitlab/push-hook-docs.json",
    "gitea": "gitea/push-docs-example.json",
    "forgejo": "gitea/delete-branch.json",
    "bitbucket": "bitbucket/repo-push-branch-updated.json",
}
PATHS = {
    "github": [
        "ref",
        "before",
        "after",
        "forced",
        "head_commit",
        "head_commit.message",
        "repository",
        "repository.full_name",
        "repository.owner",
        "repository.owner.login",
        "repository.name",
        "zen",
    ],
    "gitlab": [
        "ref",
        "before",
        "after",
        "project",
        "project.path_with_namespace",
        "commits",
        "commits.0",
        "commits.0.id",
        "commits.0.message",
        "total_commits_count",
    ],
    "gitea": [
        "ref",
        "before",
        "after",
        "secret",
        "repository",
        "repository.full_name",
        "head_commit",
        "commits",
        "commits.0.id",
        "commits.0.message",
    ],
    "forgejo": ["ref", "ref_type", "repository", "repository.full_name", "repository.owner"],
    "bitbucket": [
        "push",
        "push.changes",
        "push.changes.0",
        "push.changes.0.old",
        "push.changes.0.new",
        "push.changes.0.new.name",
        "push.changes.0.new.type",
        "push.changes.0.new.target",
        "push.changes.0.new.target.hash",
        "push.changes.0.old.target.hash",
        "push.changes.0.forced",
        "repository",
        "repository.full_name",
    ],
    "git": ["repository", "ref", "before", "after", "forced", "message"],
}
KINDS = {
    "github": ["push", "ping", "create", "delete", "pull_request"],
    "gitlab": ["Push Hook", "Tag Push Hook", "Note Hook"],
    "gitea": ["push", "create", "delete", "release"],
    "forgejo": ["push", "create", "delete", "issues"],
    "bitbucket": ["repo:push", "repo:fork"],
}


def base(provider: str) -> dict[str, Any]:
    if provider == "git":
        return {"repository": "churn", "ref": "refs/heads/main", "before": "a" * 40, "after": "b" * 40}
    data: dict[str, Any] = json.loads((PAYLOADS / BASE[provider]).read_bytes())
    return data


def put(data: Any, path: str, value: Any) -> None:
    """Set ``value`` at a dotted path, where the path still leads through objects and lists."""
    *parents, last = path.split(".")
    for key in parents:
        if isinstance(data, list) and key.isdigit() and int(key) < len(data):
            data = data[int(key)]
        elif isinstance(data, dict) and key in data:
            data = data[key]
        else:
            return
    if isinstance(data, dict):
        data[last] = value
    elif isinstance(data, list) and last.isdigit() and int(last) < len(data):
        data[int(last)] = value


def check(provider: str, sent: dict[str, str], body: bytes) -> None:
    dialect, request_headers = providers.PROVIDERS[provider], Headers(sent)
    assert dialect.verify(request_headers, body, b"secret") in (True, False)
    try:
        dialect.delivery_id(request_headers, body)
    except PayloadError:
        pass
    try:
        events = dialect.parse(request_headers, body)
    except (PayloadError, Ignored):
        return
    assert events
    for event in events:
        assert isinstance(event.repository, str) and event.repository
        assert valid_ref(event.ref) and event.type in ("push", "tag", "delete")
        assert event.before is None or valid_sha(event.before)
        assert valid_sha(event.after) and event.deleted == (set(event.after or "") == {"0"})
        assert event.message is None or isinstance(event.message, str)


@pytest.mark.parametrize("provider", PROVIDERS)
@FUZZ
@given(sent=headers, body=st.binary(max_size=512))
def test_arbitrary_bytes_and_headers(provider: str, sent: dict[str, str], body: bytes) -> None:
    check(provider, sent, body)


@pytest.mark.parametrize("provider", PROVIDERS)
@FUZZ
@given(data=st.data())
def test_json_shaped_bodies(provider: str, data: st.DataObject) -> None:
    body = base(provider)
    for path in data.draw(st.lists(st.sampled_from(PATHS[provider]), max_size=4, unique=True)):
        put(body, path, data.draw(json_values))
    sent = data.draw(headers)
    if provider in EVENT_HEADER:
        sent[EVENT_HEADER[provider]] = data.draw(st.sampled_from(KINDS[provider]) | header_text)
    check(provider, sent, json.dumps(body).encode())
