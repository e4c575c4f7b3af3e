"""Triggers: runs nobody pushed for (SPEC §3 ``triggers:``), decided by pure functions.

A trigger never builds anything itself: it becomes a delivery like a webhook, so its run is
deduplicated, superseded, gated, approved and explained like any other. What is decided here is
only *whether* one is due now (a schedule's tick, a cooldown) and what it would run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter

from pipelines import ledger
from pipelines.events import TRIGGERS
from pipelines.ledger import Entry
from pipelines.plan import Plan, plan
from pipelines.project import PerformanceTrigger, ScheduleTrigger, VolumeTrigger

#: Triggers that retrain on their own (every one but ``manual``): they never supersede a run.
AUTOMATIC = tuple(t for t in TRIGGERS if t != "manual")


def trigger_plan(trigger: str, reason: str, *, deployable: bool, approval: bool) -> Plan:
    """The stages a trigger's run goes through: a retrain of the branch's tip, as for changed
    training code; ``volume`` also validates the data that landed."""
    kinds = ("data",) if trigger == "volume" else ("training_code",)
    return Plan(plan(kinds, deployable=deployable, approval=approval).stages, reason)


def last_tick(schedule: ScheduleTrigger, now: datetime) -> datetime:
    """The schedule's newest tick at or before ``now`` (in UTC); DST as croniter has it."""
    local = now.astimezone(ZoneInfo(schedule.timezone))
    # get_prev is strictly before its start: nudge it past a tick that is exactly ``now``.
    tick: datetime = croniter(schedule.cron, local + timedelta(microseconds=1)).get_prev(datetime)
    return tick.astimezone(UTC)


@dataclass(frozen=True)
class ScheduleDecision:
    #: fire | wait | arm (first sight: remember now, fire from the next tick on) | skip
    action: str
    #: The tick this decision is about; stored as the last fire for ``fire`` and ``skip``.
    tick: datetime | None
    reason: str


def schedule_decision(
    schedule: ScheduleTrigger, now: datetime, last: datetime | None, *, active: str | None
) -> ScheduleDecision:
    """Whether ``schedule`` is due at ``now``, given the last tick handled (``None``: never).

    Ticks missed while Loopline was down collapse into one catch-up run: only the newest tick
    counts. A tick that finds the previous scheduled run still active is skipped (and stored as
    handled), like Kubernetes' ``concurrencyPolicy: Forbid``: never two scheduled runs at once.
    """
    tick = last_tick(schedule, now)
    if last is None:
        return ScheduleDecision("arm", now, f"schedule {schedule.cron!r} ({schedule.timezone}) armed")
    if tick <= last:
        return ScheduleDecision("wait", None, "not due")
    local = tick.astimezone(ZoneInfo(schedule.timezone))
    when = f"{local:%Y-%m-%d %H:%M} {schedule.timezone}"
    missed = _missed(schedule, last, tick)
    if active is not None:
        return ScheduleDecision(
            "skip", tick, f"schedule tick {when} skipped: the previous scheduled {active} is active"
        )
    catch_up = f" (catch-up for {missed} missed ticks)" if missed > 1 else ""
    return ScheduleDecision("fire", tick, f"schedule {schedule.cron!r}: tick {when}{catch_up}")


def _missed(schedule: ScheduleTrigger, last: datetime, tick: datetime, cap: int = 1000) -> int:
    """How many ticks lie in (last, tick], counted up to ``cap``."""
    it = croniter(schedule.cron, last.astimezone(ZoneInfo(schedule.timezone)))
    count = 0
    while count < cap and it.get_next(datetime).astimezone(UTC) <= tick:
        count += 1
    return count


def cooled_down(last_fired: datetime | None, cooldown: timedelta, now: datetime) -> bool:
    """A trigger that fired within ``cooldown`` stays quiet: one episode, one run."""
    return last_fired is None or now - last_fired >= cooldown


def underperforms(performance: PerformanceTrigger, version: int, correct: int, labelled: int) -> str | None:
    """Why the serving release's online accuracy calls for a retrain (None: it does not, or the
    window is not full yet)."""
    if labelled < performance.window:
        return None
    accuracy = correct / labelled
    if accuracy >= performance.min:
        return None
    return (
        f"online accuracy of v{version} fell to {accuracy:.3f} < {performance.min:g} "
        f"over the last {labelled:,} labelled predictions"
    )


def new_rows(before: list[Entry], now: list[Entry]) -> int:
    """Rows that landed from manifest ``before`` to ``now``: every row of an added file, and what
    a replaced file grew by (a file appended to is counted for its new rows only)."""
    change = ledger.diff(before, now)
    added = sum(e["rows"] or 0 for e in change["added"])
    grown = sum(max(0, (r["to"]["rows"] or 0) - (r["from"]["rows"] or 0)) for r in change["replaced"])
    return int(added + grown)


def volume_due(volume: VolumeTrigger, rows: int, version: int, since: int, current: int) -> str | None:
    """Why enough new data landed to retrain model version ``version`` (trained on dataset
    version ``since``; ``current`` is the newest), or None while it waits for more."""
    if rows < volume.min_new_rows:
        return None
    return (
        f"{rows:,} new rows landed since v{version}'s dataset v{since} (dataset v{current} now)"
        f" ≥ {volume.min_new_rows:,}"
    )
