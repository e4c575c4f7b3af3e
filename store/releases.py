"""Release states and the gateway's routing table: pure store transitions, no processes.

Per model at most one ``active`` release (production: the stable one, all traffic but the
canary's share), one ``canary`` on trial, and one ``standby``: the previous production, still
running, so that a rollback is one transaction and the gateway follows within its cache TTL.
The caller stops the processes of the releases a transition returns (after it committed).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from pipelines.errors import LooplineError
from store import aliases, hosts, telemetry
from store.clock import as_utc
from store.db import lock_row
from store.lifecycle import TERMINAL
from store.models import LIVE_RELEASES, Deployment, Host, Run, Stage
from store.views import deployment_dict, iso


class ReleaseError(LooplineError, RuntimeError):
    """A release action that does not apply to the model's current state (answered 409)."""

    def __init__(self, message: str, code: str = "invalid_state") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Route:
    release: int
    version: int
    url: str
    percent: int


def routes(session: Session, model: str) -> list[Route]:
    """Where the gateway sends ``model``'s requests: releases with a share of its traffic."""
    rows = session.execute(
        select(Deployment.id, Deployment.version, Deployment.url, Deployment.traffic_percent).where(
            Deployment.model_name == model,
            Deployment.status.in_(("active", "canary")),
            Deployment.traffic_percent > 0,
            Deployment.url.is_not(None),
        )
    )
    return [Route(i, v, u or "", p) for i, v, u, p in rows]


def live(session: Session, model: str) -> dict[str, Deployment]:
    """The model's active, canary and standby releases, by status (the newest of each)."""
    found: dict[str, Deployment] = {}
    for dep in session.scalars(
        select(Deployment)
        .where(Deployment.model_name == model, Deployment.status.in_(LIVE_RELEASES))
        .order_by(Deployment.id.desc())
    ):
        found.setdefault(dep.status, dep)
    return found


def all_live(session: Session) -> list[Deployment]:
    return list(session.scalars(select(Deployment).where(Deployment.status.in_(LIVE_RELEASES))))


def begin_canary(session: Session, dep: Deployment, percent: int) -> None:
    """Add the new release ``dep`` with ``percent`` of the traffic; the stable release keeps the rest."""
    current = live(session, dep.model_name)
    if "canary" in current:
        other = current["canary"]
        raise ReleaseError(
            f"a canary of {dep.model_name} is already on trial (v{other.version}, release #{other.id})"
        )
    stable = current.get("active")
    if stable is None:
        raise ReleaseError(f"{dep.model_name} has no active release to compare a canary with")
    dep.status, dep.traffic_percent = "canary", percent
    stable.traffic_percent = 100 - percent
    session.add(dep)


def promote(session: Session, dep: Deployment, *, actor: str, reason: str | None) -> list[Deployment]:
    """Make ``dep`` (new, or one of the model's releases) production with all the traffic; the
    active release becomes the standby. Returns the releases to stop: the previous standby and
    any other canary.
    """
    stop: list[Deployment] = []
    with session.no_autoflush:
        others = session.scalars(
            select(Deployment).where(
                Deployment.model_name == dep.model_name, Deployment.status.in_(LIVE_RELEASES)
            )
        ).all()
    for other in others:
        if other is dep:
            continue
        if other.status == "active":
            other.status = "standby"
        else:
            other.status = "retired" if other.status == "standby" else "failed"
            stop.append(other)
        other.traffic_percent = 0
    dep.status, dep.traffic_percent = "active", 100
    session.add(dep)
    aliases.move(session, dep.model_name, "production", dep.version, actor=actor, reason=reason)
    return stop


#: How a canary failed by :func:`interrupted` begins its ``moved`` line (the trial reports it).
INTERRUPTED = "canary trial interrupted"


def interrupted(session: Session, dep: Deployment, why: str) -> bool:
    """The one rule for a canary whose trial was interrupted (Loopline started again, its
    process died, or its host was lost): no one watched it to the end, so it fails and the
    stable release gets all the traffic; ``why`` is kept on it. Returns whether ``dep`` was
    such a canary."""
    if dep.status != "canary":
        return False
    abort_canary(session, dep)
    dep.moved = f"{INTERRUPTED}: {why}; failed"
    return True


def abort_canary(session: Session, dep: Deployment) -> None:
    """The canary gets nothing again and is marked failed; the stable release gets everything."""
    dep.status, dep.traffic_percent = "failed", 0
    stable = live(session, dep.model_name).get("active")
    if stable is not None:
        stable.traffic_percent = 100


def live_release(session: Session, model: str, version: int) -> Deployment | None:
    """The running release of ``version``, if any (active first, then canary, then standby)."""
    found = [d for d in live(session, model).values() if d.version == version]
    return min(found, key=lambda d: LIVE_RELEASES.index(d.status), default=None)


def rollback_target(session: Session, model: str) -> Deployment:
    """What a rollback switches to: the canary to abort, else the standby to promote back."""
    current = live(session, model)
    target = current.get("canary") or current.get("standby")
    if target is None:
        raise ReleaseError(f"{model} has no previous release to roll back to", "nothing_to_roll_back")
    switchable(target)
    return target


def switchable(dep: Deployment) -> None:
    """Only releases Loopline runs itself (target ``local``) can be switched by the gateway."""
    if dep.target != "local" or not dep.url:
        raise ReleaseError(
            f"release #{dep.id} (v{dep.version}) was deployed by the project's deploy command: "
            "Loopline cannot switch it; deploy the version you want with that command",
            "not_switchable",
        )


def rollback(session: Session, target: Deployment, *, actor: str, reason: str | None) -> list[Deployment]:
    """Abort ``target`` if it is the canary, else promote the standby ``target`` back."""
    if target.status == "canary":
        abort_canary(session, target)
        return [target]
    return promote(session, target, actor=actor, reason=reason or "rollback")


def state(session: Session, model: str) -> dict[str, Any]:
    """Aliases, live releases (with their telemetry) and the alias history of ``model``."""
    releases = sorted(live(session, model).values(), key=lambda d: -d.traffic_percent)
    numbers = telemetry.stats(session, [d.id for d in releases])
    return {
        "name": model,
        "aliases": aliases.aliases(session, model),
        "releases": [release_dict(d, numbers[d.id]) for d in releases],
        "history": aliases.history(session, model),
    }


def release_dict(dep: Deployment, stats: telemetry.ReleaseStats | None = None) -> dict[str, Any]:
    data = deployment_dict(dep) | {
        "traffic_percent": dep.traffic_percent,
        "release_dir": dep.release_dir,
        "host": dep.host,
    }
    if stats is not None:
        data["telemetry"] = stats.to_dict()
    return data


def new(
    *,
    model: str,
    version: int,
    run_id: int,
    target: str,
    url: str | None = None,
    pid: int | None = None,
    release_dir: str | None = None,
    host: str | None = None,
    bundle_sha256: str | None = None,
) -> Deployment:
    """A release not stored yet: :func:`begin_canary` or :func:`promote` stores it."""
    return Deployment(
        model_name=model,
        version=version,
        run_id=run_id,
        target=target,
        url=url,
        pid=pid,
        release_dir=release_dir,
        host=host,
        bundle_sha256=bundle_sha256,
    )


def get(session: Session, release_id: int) -> Deployment | None:
    return session.get(Deployment, release_id)


def of_run(session: Session, run_id: int) -> Deployment | None:
    """The newest release run ``run_id`` made (a deploy attempt whose worker died may have)."""
    query = select(Deployment).where(Deployment.run_id == run_id).order_by(Deployment.id.desc()).limit(1)
    return session.scalars(query).one_or_none()


def unjudged_canaries(session: Session) -> list[int]:
    """Runs whose canary is on trial although their deploy stage is over (no one judges it)."""
    rows = session.execute(
        select(Deployment.run_id)
        .join(Run, Run.id == Deployment.run_id)
        .join(Stage, (Stage.run_id == Run.id) & (Stage.name == "deploy"))
        .where(Deployment.status == "canary", Stage.status.in_(TERMINAL))
    )
    return [r for (r,) in rows]


def canary_of_run(session: Session, run_id: int) -> Deployment | None:
    """The canary run ``run_id``'s deploy left on trial, if any."""
    query = select(Deployment).where(Deployment.run_id == run_id, Deployment.status == "canary")
    return session.scalars(query).one_or_none()


def local_releases(session: Session, model: str, version: int) -> list[Deployment]:
    """``version``'s releases Loopline ran itself from a release directory, newest first (a new
    release of that version reuses one)."""
    query = (
        select(Deployment)
        .where(
            Deployment.model_name == model,
            Deployment.version == version,
            Deployment.target == "local",
            Deployment.release_dir.is_not(None),
        )
        .order_by(Deployment.id.desc())
    )
    return list(session.scalars(query))


def lock(session: Session, release_id: int) -> Deployment | None:
    """Take the release's row for the rest of the transaction (:func:`lock_row`), then read it."""
    lock_row(session, Deployment, release_id)
    return session.get(Deployment, release_id, populate_existing=True)


def record_process(
    session: Session,
    release_id: int,
    *,
    url: str,
    pid: int,
    host: str,
    release_dir: str,
    owner: str | None,
) -> bool:
    """Where the process just (re)started for release ``release_id`` runs; only if its host is
    still ``owner`` (the one its starter read): False if another host took it meanwhile."""
    row = lock(session, release_id)
    assert row is not None
    if row.host not in (None, owner):
        return False
    row.url, row.pid, row.host, row.release_dir = url, pid, host, release_dir
    return True


def on_silent_hosts(session: Session, since: datetime) -> list[tuple[int, str]]:
    """``(release, host)`` of the live releases Loopline runs itself whose host has not beaten
    since ``since``, or never registered (the caller checks those do not answer either)."""
    query = (
        select(Deployment.id, Deployment.host)
        .outerjoin(Host, Host.name == Deployment.host)
        .where(
            Deployment.status.in_(LIVE_RELEASES),
            Deployment.target == "local",
            Deployment.host.is_not(None),
            or_(Host.name.is_(None), Host.seen_at < since),
        )
        .order_by(Deployment.id)
    )
    return [(dep_id, host or "") for dep_id, host in session.execute(query)]


def process_died(
    session: Session, release_id: int, *, host: str, pid: int
) -> Literal["restart", "failed", "changed"]:
    """Release ``release_id``'s process ``pid`` died on ``host``, which is alive (a crash, an
    OOM kill, a kill by hand): under its row lock, ``restart`` it if it is still live there with
    that pid; ``changed`` if a transition, a restart, a stop or a move came first. A canary on
    trial ``failed`` instead, as one whose host was lost (:func:`interrupted`: its trial was
    interrupted; it is not started again behind its judge's back)."""
    dep = lock(session, release_id)
    if dep is None or dep.status not in LIVE_RELEASES or dep.target != "local":
        return "changed"
    if dep.host != host or dep.pid != pid:
        return "changed"
    if interrupted(session, dep, f"its process {pid} died on host {host}"):
        dep.pid = None
        return "failed"
    return "restart"


@dataclass(frozen=True)
class TakeOver:
    """What :func:`take_over` did: ``moved`` (start it now), ``aborted`` (a canary) or
    ``refused``, and why, in one line."""

    outcome: Literal["moved", "aborted", "refused"]
    why: str


def take_over(session: Session, release_id: int, *, lost: str, host: str, since: datetime) -> TakeOver:
    """Hand release ``release_id`` from the lost host ``lost`` to ``host``, under its row lock:
    only if it still names ``lost`` (so of several takers one wins) and ``lost`` has not beaten
    since ``since`` (an alive host keeps its releases). Its pid is forgotten: it meant
    something on ``lost`` only, whose processes went with it. A canary on trial fails instead
    (:func:`interrupted`)."""
    dep = lock(session, release_id)
    if dep is None or dep.status not in LIVE_RELEASES or dep.target != "local":
        return TakeOver("refused", f"release #{release_id} is not live")
    if dep.host != lost:
        return TakeOver("refused", f"release #{release_id} runs on {dep.host}, not on {lost}")
    seen = hosts.seen_at(session, lost)
    if seen is not None and as_utc(seen) >= since:
        return TakeOver("refused", f"host {lost} is alive (seen {iso(seen)})")
    silence = f"silent since {as_utc(seen):%Y-%m-%d %H:%M:%S} UTC" if seen else "never registered"
    dep.pid = None
    if interrupted(session, dep, f"host {lost} {silence}"):
        return TakeOver("aborted", f"release #{dep.id} (canary of v{dep.version}): {dep.moved}")
    dep.host = host
    dep.moved = f"moved from host {lost} to host {host}: host {lost} {silence}"
    return TakeOver("moved", f"release #{dep.id} ({dep.model_name} v{dep.version}) {dep.moved}")


def give_back(session: Session, release_id: int, *, lost: str, host: str) -> None:
    """``host`` could not start the release it took over: it goes back to ``lost``, so the
    reconciler's next pass hands it out again."""
    dep = lock(session, release_id)
    if dep is not None and dep.host == host and dep.pid is None:
        dep.host = lost


def started(
    session: Session,
    release_id: int | None,
    *,
    model: str,
    version: int,
    run_id: int,
    url: str,
    pid: int,
    host: str,
    release_dir: str,
    bundle_sha256: str | None,
) -> Deployment:
    """Release ``release_id`` (or a new local one) with the process just started for it: the
    caller promotes it in the same transaction, so a started process is never seen as retired."""
    row = session.get(Deployment, release_id) if release_id else None
    dep = row or new(model=model, version=version, run_id=run_id, target="local", release_dir=release_dir)
    dep.url, dep.pid, dep.host = url, pid, host
    dep.release_dir, dep.bundle_sha256 = release_dir, dep.bundle_sha256 or bundle_sha256
    return dep


def processes(session: Session, *, ended_only: bool) -> list[tuple[int, int | None, str | None]]:
    """``(release, pid, host)`` of the releases with a recorded process: those a transition
    retired or failed (``ended_only``), else all of them."""
    query = select(Deployment.id, Deployment.pid, Deployment.host).where(Deployment.pid.is_not(None))
    if ended_only:
        query = query.where(Deployment.status.not_in(LIVE_RELEASES))
    return [(dep_id, pid, host) for dep_id, pid, host in session.execute(query)]


def forget_processes(session: Session, stopped: dict[int, int]) -> None:
    """Clear the pid of the releases whose process (``release -> pid``) was stopped, unless a
    new one was recorded meanwhile."""
    for dep_id, pid in stopped.items():
        dep = session.get(Deployment, dep_id)
        if dep is not None and dep.pid == pid:
            dep.pid = None
