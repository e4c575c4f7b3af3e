"""Triggers: runs nobody pushed for (SPEC §3 ``triggers:``), decided by pure functions.

A trigger never builds anything itself: it becomes a delivery like a webhook, so its run is
deduplicated, superseded, gated, approved and explained like any other. What is decided here is
only *whether* one is due now (a schedule's tick, a cooldown) and what it would run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from pipelines.config import ConfigError
from pipelines.events import TRIGGERS
from pipelines.plan import Plan, plan

#: Triggers that retrain on their own (every one but ``manual``): they never supersede a run.
AUTOMATIC = tuple(t for t in TRIGGERS if t != "manual")


def trigger_plan(trigger: str, reason: str, *, deployable: bool, approval: bool) -> Plan:
    """The stages a trigger's run goes through: a retrain of the branch's tip, as for changed
    training code; ``volume`` also validates the data that landed."""
    kinds = ("data",) if trigger == "volume" else ("training_code",)
    return Plan(plan(kinds, deployable=deployable, approval=approval).stages, reason)


@dataclass(frozen=True)
class Schedule:
    """``triggers.schedule``: a five-field cron expression read in ``timezone``."""

    cron: str
    timezone: str = "UTC"

    def last_tick(self, now: datetime) -> datetime:
        """The newest tick at or before ``now`` (in UTC); DST gaps and repeats as croniter has them."""
        local = now.astimezone(ZoneInfo(self.timezone))
        # get_prev is strictly before its start: nudge it past a tick that is exactly ``now``.
        tick: datetime = croniter(self.cron, local + timedelta(microseconds=1)).get_prev(datetime)
        return tick.astimezone(UTC)


def parse_schedule(raw: object, source: str) -> Schedule:
    key = "triggers.schedule"
    if isinstance(raw, str):
        raw = {"cron": raw}
    if not isinstance(raw, dict) or set(raw) - {"cron", "timezone"} or not isinstance(raw.get("cron"), str):
        raise ConfigError(source, key, "expected {cron: '<five cron fields>', timezone: <IANA name>}")
    cron, zone = raw["cron"].strip(), raw.get("timezone", "UTC")
    if len(cron.split()) != 5 or not croniter.is_valid(cron):
        raise ConfigError(source, f"{key}.cron", f"{cron[:100]!r} is not a five-field cron expression")
    if not isinstance(zone, str) or not zone:
        raise ConfigError(source, f"{key}.timezone", "expected an IANA time zone such as Europe/Berlin")
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(source, f"{key}.timezone", f"unknown time zone {zone[:100]!r}") from exc
    return Schedule(cron, zone)


@dataclass(frozen=True)
class ScheduleDecision:
    #: fire | wait | arm (first sight: remember now, fire from the next tick on) | skip
    action: str
    #: The tick this decision is about; stored as the last fire for ``fire`` and ``skip``.
    tick: datetime | None
    reason: str


def schedule_decision(
    schedule: Schedule, now: datetime, last: datetime | None, *, active_run: int | None
) -> ScheduleDecision:
    """Whether ``schedule`` is due at ``now``, given the last tick handled (``None``: never).

    Ticks missed while Loopline was down collapse into one catch-up run: only the newest tick
    counts. A tick that finds the previous scheduled run still active is skipped (and stored as
    handled), like Kubernetes' ``concurrencyPolicy: Forbid``: never two scheduled runs at once.
    """
    tick = schedule.last_tick(now)
    if last is None:
        return ScheduleDecision("arm", now, f"schedule {schedule.cron!r} ({schedule.timezone}) armed")
    if tick <= last:
        return ScheduleDecision("wait", None, "not due")
    local = tick.astimezone(ZoneInfo(schedule.timezone))
    when = f"{local:%Y-%m-%d %H:%M} {schedule.timezone}"
    missed = _missed(schedule, last, tick)
    if active_run is not None:
        return ScheduleDecision(
            "skip", tick, f"schedule tick {when} skipped: scheduled run {active_run} is active"
        )
    catch_up = f" (catch-up for {missed} missed ticks)" if missed > 1 else ""
    return ScheduleDecision("fire", tick, f"schedule {schedule.cron!r}: tick {when}{catch_up}")


def _missed(schedule: Schedule, last: datetime, tick: datetime, cap: int = 1000) -> int:
    """How many ticks lie in (last, tick], counted up to ``cap``."""
    it = croniter(schedule.cron, last.astimezone(ZoneInfo(schedule.timezone)))
    count = 0
    while count < cap and it.get_next(datetime).astimezone(UTC) <= tick:
        count += 1
    return count


def cooled_down(last_fired: datetime | None, cooldown: timedelta, now: datetime) -> bool:
    """A trigger that fired within ``cooldown`` stays quiet: one episode, one run."""
    return last_fired is None or now - last_fired >= cooldown
