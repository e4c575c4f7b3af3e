"""Which run statuses were announced (``workers/notify.py``): each (run, status) is claimed once
by inserting its row, so any number of sweeps send one notice."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from store.db import Database
from store.models import Run, RunNotice, utcnow
from store.views import run_dict


def take(
    db: Database, repositories: Collection[str], statuses: Collection[str], since: datetime
) -> list[dict[str, Any]]:
    """Claim the runs (of ``repositories``, created after ``since``) now in one of ``statuses``
    whose status was not announced yet; returns them as the API shows them."""
    if not repositories:
        return []
    with db.session() as s:
        rows = list(
            s.scalars(
                select(Run).where(
                    Run.repository.in_(repositories),
                    Run.status.in_(statuses),
                    Run.created_at >= since,
                    ~select(RunNotice.run_id)
                    .where(RunNotice.run_id == Run.id, RunNotice.status == Run.status)
                    .exists(),
                )
            )
        )
        found = [run_dict(r, stages=False) for r in rows]
    claimed = []
    for run in found:
        try:
            with db.session() as s:
                s.add(RunNotice(run_id=run["id"], status=run["status"], created_at=utcnow()))
            claimed.append(run)
        except IntegrityError:  # another sweep took it
            continue
    return claimed
