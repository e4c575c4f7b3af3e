"""What every request needs: the settings and the store, attached to the app once."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from config.settings import Settings
from store.db import Database


@dataclass(frozen=True)
class Loopline:
    settings: Settings
    db: Database


def loopline() -> Loopline:
    state: Loopline = current_app.extensions["loopline"]
    return state
