"""The GitHub dialect against recorded payloads, byte for byte (see payloads/github/SOURCES.md)."""

from __future__ import annotations

import json

import pytest

from pipelines.events import ZERO_SHA, Ignored, PayloadError
from pipelines.providers import github
from tests.conftest import PAYLOADS

INDEX = {f["file"]: f for f in json.loads((PAYLOADS / "index.json").read_text())["files"]}
SIGNED = "github/push-modified-file-signed.json"


def body_of(name: str) -> bytes:
    return (PAYLOADS / name).read_bytes()


def test_published_signature_verifies_on_raw_bytes() -> None:
    headers = INDEX[SIGNED]["headers"]
    assert github.verify(headers, body_of(SIGNED), b"topsecret")


@pytest.mark.parametrize("position", [0, 100, 1000, -2])
def test_one_changed_byte_fails(position: int) -> None:
    body = bytearray(body_of(SIGNED))
    body[position] ^= 0x01
    assert not github.verify(INDEX[SIGNED]["headers"], bytes(body), b"topsecret")


def test_wrong_secret_and_sha1_alone_fail() -> None:
    headers = INDEX[SIGNED]["headers"]
    assert not github.verify(headers, body_of(SIGNED), b"topsecreT")
    sha1_only = {k: v for k, v in headers.items() if k != "X-Hub-Signature-256"}
    assert not github.verify(sha1_only, body_of(SIGNED), b"topsecret")


def test_reserialized_body_fails() -> None:
    reserialized = json.dumps(json.loads(body_of(SIGNED))).encode()
    assert not github.verify(INDEX[SIGNED]["headers"], reserialized, b"topsecret")


@pytest.mark.parametrize(
    ("name", "expect"),
    [
        ("github/push-modified-file.json", {"type": "push", "ref": "refs/heads/changes", "created": False}),
        (
            SIGNED,
            {"type": "push", "ref": "refs/heads/master", "after": "199eddf46df50de8d02e99bf1c5fdb4101338224"},
        ),
        ("github/push-new-branch-with-commit.json", {"type": "push", "created": True, "before": ZERO_SHA}),
        ("github/push-branch-created-no-commits.json", {"type": "push", "created": True}),
        ("github/push-branch-deleted.json", {"type": "delete", "deleted": True, "after": ZERO_SHA}),
        ("github/push-tag-created.json", {"type": "tag", "ref": "refs/tags/v0.0.1", "created": True}),
        (
            "github/push-legacy-2012-force-reset-no-commits.json",
            {"type": "push", "forced": True, "repository": "danheberden/payloads"},
        ),
    ],
)
def test_push_payloads(name: str, expect: dict[str, object]) -> None:
    (event,) = github.parse(INDEX[name]["headers"], body_of(name))
    for key, value in expect.items():
        assert getattr(event, key) == value, key
    assert event.repository.count("/") == 1


@pytest.mark.parametrize(
    "name",
    [
        "github/ping.json",
        "github/pull_request-opened.json",
        "github/pull_request-synchronize.json",
        "github/create-tag.json",
        "github/delete-tag.json",
    ],
)
def test_non_push_events_are_ignored_with_a_reason(name: str) -> None:
    with pytest.raises(Ignored) as info:
        github.parse(INDEX[name]["headers"], body_of(name))
    assert info.value.reason


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"[]",
        b"{",
        b"\xff\xfe",
        b'{"ref": 1}',
        b"[" * 100000,
        b'{"ref": "refs/heads/x", "before": "a", "after": "b", "repository": {}}',
        b'{"ref": "refs/heads/--upload-pack=x", "repository": {"full_name": "a/b"}}',
    ],
)
def test_malformed_push_bodies(body: bytes) -> None:
    with pytest.raises(PayloadError):
        github.parse({"X-GitHub-Event": "push"}, body)


def test_hostile_ref_is_rejected() -> None:
    data = json.loads(body_of(SIGNED))
    for ref in ("refs/heads/../../x", "refs/heads/-x", "main", "refs/heads/a b", "refs/heads/a;rm -rf"):
        data["ref"] = ref
        with pytest.raises(PayloadError):
            github.parse({"X-GitHub-Event": "push"}, json.dumps(data).encode())
