"""``loopline install-hook``: a ``post-receive`` hook that tells Loopline about every ref update."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

from pipelines.errors import LooplineError

HOOK = """#!{python}
# Installed by `loopline install-hook`: posts each ref update to Loopline, signed when
# ${secret_env} is set. Git ignores a hook's exit status after the push; we report failures.
import hashlib, hmac, json, os, sys, urllib.request, uuid

URL = {url!r}
REPOSITORY = {repository!r}
SECRET = os.environ.get({secret_env!r}, "")

for line in sys.stdin:
    parts = line.split()
    if len(parts) != 3:
        continue
    before, after, ref = parts
    body = json.dumps({{"repository": REPOSITORY, "ref": ref, "before": before, "after": after}}).encode()
    headers = {{"Content-Type": "application/json", "X-Loopline-Delivery": str(uuid.uuid4())}}
    if SECRET:
        mac = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        headers["X-Loopline-Signature-256"] = "sha256=" + mac
    request = urllib.request.Request(URL, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = json.loads(response.read() or b"{{}}")
            print("loopline: %s %s (%s)" % (ref, answer.get("status"), answer.get("event_id", "")))
    except Exception as exc:  # the push has happened; say clearly that Loopline did not hear of it
        print("loopline: could not notify %s: %s" % (URL, exc), file=sys.stderr)
"""


DEFAULT_SECRET_ENV = "LOOPLINE_HOOK_SECRET"  # noqa: S105  (the name of a variable, not a secret)


def install_hook(
    bare_repo: Path, url: str, repository: str | None = None, secret_env: str = DEFAULT_SECRET_ENV
) -> Path:
    """Write ``hooks/post-receive`` into ``bare_repo``; ``repository`` defaults to its name."""
    if not (bare_repo / "HEAD").exists() or not (bare_repo / "objects").is_dir():
        raise LooplineError(f"{bare_repo} is not a bare git repository")
    if not url.startswith(("http://", "https://")):
        raise LooplineError("--url must be an http(s) URL, e.g. http://127.0.0.1:8080/hooks/git")
    name = repository or bare_repo.resolve().name.removesuffix(".git")
    hook = bare_repo / "hooks" / "post-receive"
    hook.parent.mkdir(exist_ok=True)
    hook.write_text(HOOK.format(python=sys.executable, url=url, repository=name, secret_env=secret_env))
    hook.chmod(hook.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return hook
