"""Release processes: start one from a release directory (sha-verified), restart one whose
process is gone (at start, on a host that took it over, or when it died on its alive host:
:func:`revive`), stop the ones a transition retired; the CLI's promote and rollback; what
``loopline up`` restores at start and stops at exit.

State transitions are :mod:`store.releases`; this module adds the processes around them.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import requests

from config.settings import Settings
from pipelines.errors import LooplineError
from store import locks, registry
from store import releases as states
from store.blobs import BlobError
from store.clock import utcnow
from store.db import Database
from store.releases import ReleaseError
from workers import artifacts, asks, serving
from workers.environments import EnvironmentBuildError, box_for
from workers.projects import mirror, project_in

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from store.models import Deployment, ModelVersion

log = logging.getLogger(__name__)
Say = Callable[[str], None]


def release_dir(settings: Settings, model: str, version: int, label: str) -> Path:
    return settings.home / "releases" / model / f"v{version}-{label}"


def start(
    settings: Settings, directory: Path, *, artifact: Path, sha256: str, address: str = "127.0.0.1"
) -> serving.Server:
    """Start the release in ``directory`` (its own ``loopline.yml`` says how) on a free port,
    registered under ``address`` (``LOOPLINE_SERVING_ADDRESS``) for the gateway to reach, in the
    sandbox with the project's environment (built into ``environment.log`` if missing).

    The artifact is checked against the registry's sha256 here as well as by the server: a
    release is never started on an artifact that changed since it was registered.
    """
    with artifact.open("rb") as fh:  # hashlib reads it in blocks
        actual = hashlib.file_digest(fh, "sha256").hexdigest()
    if actual != sha256:
        raise ReleaseError(f"refusing to start {directory}: {artifact} does not match its registered sha256")
    project = project_in(directory)
    try:
        with (directory / "environment.log").open("ab") as log:
            box = box_for(settings.home, project, directory, log, network=True)
    except EnvironmentBuildError as exc:
        raise serving.ServeError(f"the release's environment: {exc}") from exc
    return serving.start(
        cwd=directory,
        command=project.deploy.command,
        model_path=artifact,
        sha256=sha256,
        log_file=directory / "server.log",
        health_path=project.deploy.health_path,
        address=address,
        box=box,
    )


def healthy(dep: Deployment, sha256: str) -> bool:
    """The release answers its health check (and, where it says, with the registered model)."""
    if not dep.url or not dep.release_dir:
        return False
    try:
        health = project_in(Path(dep.release_dir)).deploy.health_path
        answer = requests.get(dep.url + health, timeout=2)
        body = answer.json() if answer.headers.get("Content-Type", "").startswith("application/json") else {}
    except (requests.RequestException, ValueError, OSError):
        return False
    return answer.status_code == 200 and body.get("model_sha256", sha256) == sha256


def ensure_running(settings: Settings, db: Database, dep_id: int, say: Say, *, mine: bool = False) -> None:
    """Restart a live release from its release directory if its process is gone (``mine``:
    only if it runs on this host; a release another host took meanwhile is left to it).

    The process is recorded only if the release still names the host it named when this
    started (``record_process``): if another host took it meanwhile, this one is stopped.
    """
    with db.session() as s:
        dep = states.get(s, dep_id)
        assert dep is not None
        states.switchable(dep)
        mv = _version(s, dep.model_name, dep.version)
    if mine and not _here(dep, settings.host):
        say(f"release #{dep.id} runs on {dep.host} now: not restarted here")
        return
    if healthy(dep, mv.sha256):
        return
    directory = local_dir(settings, dep)
    say(f"release #{dep.id} ({dep.model_name} v{dep.version}) is not running: restarting it from {directory}")
    if dep.pid and _here(dep, settings.host) and serving.alive(dep.pid):
        serving.stop(dep.pid, grace=2)
    server = start(
        settings,
        directory,
        artifact=artifacts.local(settings, mv.artifact_path, mv.sha256),
        sha256=mv.sha256,
        address=settings.serving_address,
    )
    with db.session() as s:
        recorded = states.record_process(
            s, dep_id, url=server.url, pid=server.pid, host=settings.host, release_dir=str(directory),
            owner=dep.host,
        )  # fmt: skip
    if not recorded:
        serving.stop(server.pid, grace=2)
        raise ReleaseError(f"release #{dep.id} was taken by another host while it started here; stopped it")
    say(f"release #{dep.id} healthy at {server.url} on {settings.host}")


def lost(settings: Settings, db: Database) -> list[tuple[int, str]]:
    """``(release, host)`` of the live releases whose host is lost: silent for a lease (or never
    registered) and the release does not answer. A release that answers stays where it is,
    whatever its host's heartbeat says; so does every release of this host (it is alive)."""
    since = utcnow() - timedelta(seconds=settings.lease_seconds)
    with db.session() as s:
        silent = [(i, h) for i, h in states.on_silent_hosts(s, since) if h != settings.host]
        found = [(dep, h, _sha(s, dep)) for i, h in silent if (dep := states.get(s, i))]
    return [(dep.id, h) for dep, h, sha in found if not healthy(dep, sha)]


def _sha(session: Session, dep: Deployment) -> str:
    """The registered sha256 of the release's model (the health check compares it)."""
    mv = registry.model_version(session, dep.model_name, dep.version)
    return mv.sha256 if mv else ""


def take_over(settings: Settings, db: Database, dep_id: int, lost_host: str, say: Say) -> str:
    """Start release ``dep_id`` of the lost host ``lost_host`` here (the ``take_over`` task, on a
    serving host). Of several hosts asked at once one takes it (``store.releases.take_over``,
    under the row lock), then starts it as a restart would: unpacked from its bundle, recorded
    with this host's URL. Returns the outcome (``moved``, ``aborted``, ``refused``)."""
    since = utcnow() - timedelta(seconds=settings.lease_seconds)
    with db.session() as s:
        dep = states.get(s, dep_id)
        sha = _sha(s, dep) if dep is not None else ""
    if dep is not None and healthy(dep, sha):  # it answers: its host is not lost after all
        say(f"release #{dep_id} answers at {dep.url}: left on {dep.host}")
        return "refused"
    with db.session() as s:
        taken = states.take_over(s, dep_id, lost=lost_host, host=settings.host, since=since)
    say(taken.why)
    if taken.outcome == "moved":
        try:
            ensure_running(settings, db, dep_id, say, mine=True)
        except LooplineError as exc:  # the next reconcile pass hands it out again
            with db.session() as s:
                states.give_back(s, dep_id, lost=lost_host, host=settings.host)
            say(f"release #{dep_id} could not start on {settings.host}: {exc}; handed back")
            return "refused"
    return taken.outcome


def local_dir(settings: Settings, dep: Deployment) -> Path:
    """The release's directory on this host: where it ran, or unpacked from its bundle."""
    directory = Path(dep.release_dir or "")
    if dep.release_dir and _here(dep, settings.host) and directory.is_dir():
        return directory
    if dep.bundle_sha256:
        target = release_dir(settings, dep.model_name, dep.version, f"release{dep.id}")
        return target if target.is_dir() else artifacts.unpack(settings, dep.bundle_sha256, target)
    if dep.release_dir and directory.is_dir():
        return directory
    raise ReleaseError(f"release #{dep.id} (v{dep.version}) is gone and so is its directory {directory}")


def _here(dep: Deployment, host: str) -> bool:
    """Whether ``dep``'s process runs on ``host`` (a row from before hosts were recorded: yes)."""
    return dep.host is None or dep.host == host


def reap(db: Database, settings: Settings, *, ask_others: bool = True) -> None:
    """Stop the processes of releases a transition retired or failed: this host's here, another
    host's by a task on that host's queue (a pid means nothing on another host). The periodic
    pass asks no one (``ask_others``): a host that is gone would get a message every pass."""
    _stop_ended(db, settings.host, ask=settings if ask_others else None)


def promote(
    settings: Settings, db: Database, model: str, version: int, *, actor: str, reason: str | None, say: Say
) -> None:
    """Make ``version`` production: its running release, a restarted one, or a new one."""
    with db.session() as s:
        mv = _version(s, model, version)
        target = states.live_release(s, model, version)
        if target is not None and target.status == "active":
            say(f"{model} v{version} is already production (release #{target.id})")
            return
        target_id = target.id if target else None
    if target_id is not None:
        ensure_running(settings, db, target_id, say)
        with db.session() as s:
            dep = states.get(s, target_id)
            assert dep is not None
            states.promote(s, dep, actor=actor, reason=reason or "promoted")
    else:
        directory, row_id, bundle = _release_for(settings, db, mv, say)
        say(f"starting {model} v{version} from {directory}")
        server = start(
            settings,
            directory,
            artifact=artifacts.local(settings, mv.artifact_path, mv.sha256),
            sha256=mv.sha256,
            address=settings.serving_address,
        )
        with db.session() as s:  # one transaction: a started process is never seen as retired
            dep = states.started(
                s,
                row_id,
                model=model,
                version=version,
                run_id=mv.run_id,
                url=server.url,
                pid=server.pid,
                host=settings.host,
                release_dir=str(directory),
                bundle_sha256=bundle,
            )
            states.promote(s, dep, actor=actor, reason=reason or "promoted")
    reap(db, settings)


def rollback(
    settings: Settings, db: Database, model: str, *, actor: str, reason: str | None, say: Say
) -> None:
    """Abort the canary on trial, else switch back to the standby, restarting it if it is gone."""
    with db.session() as s:
        if not states.live(s, model):
            raise ReleaseError(f"{model} is not deployed", "not_deployed")
        target = states.rollback_target(s, model)
        target_id, status = target.id, target.status
    if status == "standby":
        ensure_running(settings, db, target_id, say)
    with db.session() as s:
        dep = states.get(s, target_id)
        assert dep is not None
        if dep.status != status:
            raise ReleaseError(f"release #{dep.id} became {dep.status} meanwhile; look again and retry")
        states.rollback(s, dep, actor=actor, reason=reason)
    reap(db, settings)


def abort_canary_of(db: Database, run_id: int) -> bool:
    """Roll back the canary ``run_id``'s deploy left on trial (its run ended without a verdict:
    the worker judging it died for good). The caller reaps its process."""
    with db.session() as s:
        dep = states.canary_of_run(s, run_id)
        if dep is None:
            return False
        states.abort_canary(s, dep)
        return True


def restore(settings: Settings, db: Database, say: Say) -> None:
    """At start: a canary whose trial was interrupted fails (``store.releases.interrupted``,
    the rule for a lost host's canary too); the rest of this host's live releases run again."""
    with db.session() as s:
        for dep in states.all_live(s):
            states.interrupted(s, dep, f"Loopline started again on host {settings.host}")
        ids = [d.id for d in states.all_live(s) if d.target == "local" and _here(d, settings.host)]
    for dep_id in ids:
        try:
            ensure_running(settings, db, dep_id, say, mine=True)
        except (ReleaseError, serving.ServeError) as exc:
            say(f"release #{dep_id} could not be restarted: {exc}")
    reap(db, settings)


def lock_name(release_id: int) -> str:
    """The store lock (:func:`store.locks.held`) under which a release's process is started
    again by :func:`revive` or stopped by :func:`stop_all`."""
    return f"release-{release_id}"


def revive(settings: Settings, db: Database, say: Say) -> list[int]:
    """Start again this host's live releases whose recorded process died while the host stayed
    alive (a crash, an OOM kill, a kill by hand): the gateway would answer errors for them until
    the next ``loopline up``. Called about every heartbeat by a serving host's keep-alive.

    Only a recorded pid counts: none is recorded while ``loopline up`` stops a release
    (:func:`stop_all`) or while a take-over starts one. A canary fails instead, by the rule for
    an interrupted trial (``store.releases.process_died``). Each release under its store lock,
    skipped when another process holds it, so the processes of one host never start it twice
    (:func:`ensure_running` checks its health again too). Returns the releases started again;
    errors are said, never raised."""
    try:
        with db.session() as s:
            recorded = [
                (d.id, d.pid) for d in states.all_live(s)
                if d.target == "local" and d.host == settings.host and d.pid
            ]  # fmt: skip
    except Exception as exc:  # the store is down, say: the next heartbeat looks again
        say(f"releases of {settings.host} not looked at: {exc}")
        return []
    revived: list[int] = []
    for dep_id, pid in recorded:
        if serving.alive(pid):
            continue
        try:
            with locks.held(db, lock_name(dep_id), wait=False) as mine:
                if mine and _revive(settings, db, dep_id, pid, say):
                    revived.append(dep_id)
        except Exception as exc:  # one release that cannot start never keeps the others down
            log.warning("release #%d: starting it again failed", dep_id, exc_info=True)
            say(f"release #{dep_id} process {pid} died and could not be started again: {exc}")
    return revived


def _revive(settings: Settings, db: Database, dep_id: int, pid: int, say: Say) -> bool:
    """Start release ``dep_id`` again if its process ``pid`` is still the one recorded (under
    the release's lock). Returns whether it was."""
    with db.session() as s:
        outcome = states.process_died(s, dep_id, host=settings.host, pid=pid)
        dep = states.get(s, dep_id)
        assert dep is not None
        name = f"release #{dep_id} ({dep.model_name} v{dep.version}) process {pid} died"
        moved = dep.moved
    if outcome == "changed":  # restarted, stopped, moved or ended meanwhile
        return False
    serving.stop(pid, grace=2)  # what is left of its process group (it led one)
    if outcome == "failed":
        say(f"{name}: {moved}; the stable release gets all the traffic")
        return False
    ensure_running(settings, db, dep_id, say, mine=True)
    with db.session() as s:
        dep = states.get(s, dep_id)
        assert dep is not None
        url, now, on = dep.url, dep.pid, dep.host
    if on != settings.host or now in (pid, None):  # it answered after all, or moved: not started
        return False
    say(f"{name}: started again at {url}")
    return True


def stop_all(db: Database, host: str | None = None) -> None:
    """At exit: stop this host's release processes; their states stay, so the next start
    restores them. Each under its lock, its pid read there: a :func:`revive` under way ends
    first (and what it started is stopped), and none starts after (no pid is recorded)."""
    host = host or socket.gethostname()
    with db.session() as s:
        ids = [i for i, pid, on in states.processes(s, ended_only=False) if pid and on in (None, host)]
    for dep_id in ids:
        with locks.held(db, lock_name(dep_id)):
            with db.session() as s:
                dep = states.get(s, dep_id)
                pid = dep.pid if dep is not None and dep.host in (None, host) else None
            if pid:
                serving.stop(pid, grace=2)
                with db.session() as s:
                    states.forget_processes(s, {dep_id: pid})


def _stop_ended(db: Database, host: str, *, ask: Settings | None) -> None:
    """Stop this host's processes of the releases a transition ended; ask the other hosts
    (``ask``) to stop theirs."""
    with db.session() as s:
        rows = states.processes(s, ended_only=True)
    pids = {dep_id: pid for dep_id, pid, on in rows if pid and on in (None, host)}
    elsewhere = {on for _dep_id, pid, on in rows if pid and on not in (None, host)}
    for other in sorted(elsewhere):
        if ask is not None:
            asks.ask_to_reap(ask, other)
    for pid in pids.values():
        serving.stop(pid)
    with db.session() as s:
        states.forget_processes(s, pids)


def _version(session: Session, model: str, version: int) -> ModelVersion:
    mv = registry.model_version(session, model, version)
    if mv is None:
        raise ReleaseError(f"no version {version} of model {model!r}", "not_found")
    return mv


def _release_for(
    settings: Settings, db: Database, mv: ModelVersion, say: Say
) -> tuple[Path, int | None, str | None]:
    """A release directory for ``mv``: its newest earlier one (on this disk, or from its bundle),
    else a new export of its commit. Returns the directory, the deployment row to reuse, if
    any, and the bundle's sha256."""
    with db.session() as s:
        earlier = states.local_releases(s, mv.name, mv.version)
    for dep in earlier:
        try:
            return local_dir(settings, dep), dep.id, dep.bundle_sha256
        except (ReleaseError, BlobError):
            continue
    repo = settings.repo(mv.repository)
    if repo is None:
        raise ReleaseError(
            f"repository {mv.repository!r} is no longer registered: cannot export v{mv.version}"
        )
    directory = release_dir(settings, mv.name, mv.version, f"promoted-{int(time.time())}")
    say(f"exporting commit {mv.commit[:12]} into {directory}")
    mirror(settings, repo).export(mv.commit, directory)
    return directory, None, artifacts.pack(settings, directory)
