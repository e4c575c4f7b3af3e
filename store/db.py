"""Engine, sessions and schema migration for SQLite (WAL) and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from pipelines.errors import LooplineError
from pipelines.retry import retrying
from store.groupcommit import GroupInsert
from store.models import Probe, utcnow

MIGRATIONS = Path(__file__).parent / "migrations"


class StoreUnavailable(LooplineError, RuntimeError):
    """The database cannot be written (answered with 503)."""


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the web process write while workers read; busy_timeout rides out short locks.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def lock_row(session: Session, model: type[Any], row_id: int) -> None:
    """Take a row for the rest of the transaction before reading it: a no-op write, so
    PostgreSQL locks the row (later statements see what others committed) and SQLite's driver
    opens the write transaction (nobody else writes until commit)."""
    session.execute(update(model).where(model.id == row_id).values(id=model.id))


class Database:
    """A store bound to one URL: ``sqlite:///…`` or ``postgresql+psycopg://…``."""

    def __init__(self, url: str) -> None:
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
        self.url = url
        kwargs: dict[str, Any] = {"future": True}
        if url.startswith("sqlite"):
            path = url.removeprefix("sqlite:///")
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
        else:
            kwargs.update(pool_pre_ping=True, pool_size=5, max_overflow=5)
        self.engine: Engine = create_engine(url, **kwargs)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._groups: dict[str, GroupInsert] = {}
        self._groups_lock = threading.Lock()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed on success, rolled back on error."""
        session = self.sessions()
        try:
            yield session
            session.commit()
        except OperationalError as exc:
            session.rollback()
            raise StoreUnavailable(str(exc.orig)) from exc
        except SQLAlchemyError:
            session.rollback()
            raise
        finally:
            session.close()

    def probe(self, name: str) -> None:
        """Prove the store takes a write (a full disk reads fine and writes nothing)."""
        with self.session() as s:
            s.merge(Probe(name=name, at=utcnow()))

    @cached_property
    def _autocommit(self) -> Engine:
        """A second pool for single statements: autocommit, no ping and no reset on checkin,
        so one statement is one round trip. Only the acknowledgement path uses it."""
        engine = create_engine(
            self.url, isolation_level="AUTOCOMMIT", pool_reset_on_return=None, pool_pre_ping=False
        )
        if self.url.startswith("sqlite"):
            event.listen(engine, "connect", _sqlite_pragmas)
        return engine

    def execute_raw(self, sql: str, params: tuple[Any, ...]) -> int:
        """Run one ``?``-placeholder statement on the DBAPI connection, bypassing the ORM
        (measured by ``bench/ack.py`` at a third of its CPU); returns the row count."""
        count, _ = self._raw(sql, params, fetch=False)
        return count

    def fetch_raw(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """Like :meth:`execute_raw`, returning the statement's rows (``INSERT … RETURNING``)."""
        _, rows = self._raw(sql, params, fetch=True)
        return rows

    def grouped(self, statement: str, row: str) -> GroupInsert:
        """This process's shared writer of ``statement`` (see :mod:`store.groupcommit`)."""
        writer = self._groups.get(statement)  # the acknowledgement's path: no lock once made
        if writer is None:
            with self._groups_lock:
                writer = self._groups.setdefault(statement, GroupInsert(self.fetch_raw, statement, row))
        return writer

    def _raw(self, sql: str, params: tuple[Any, ...], *, fetch: bool) -> tuple[int, list[tuple[Any, ...]]]:
        """A connection the server closed meanwhile is replaced once; then :class:`StoreUnavailable`."""
        if self.engine.dialect.paramstyle != "qmark":
            sql = sql.replace("?", "%s")
        dbapi = self.engine.dialect.loaded_dbapi
        for attempt in (1, 2):  # not the retry policy: no wait, on the acknowledgement's hot path
            conn = self._autocommit.raw_connection()
            try:
                cursor = conn.cursor()
                cursor.execute(sql, params)
                rows = [tuple(r) for r in cursor.fetchall()] if fetch else []
                count = int(cursor.rowcount)
                cursor.close()
                return count, rows
            except (dbapi.OperationalError, dbapi.InterfaceError) as exc:
                conn.invalidate()  # a dropped connection: retry once on a fresh one
                if attempt == 2:
                    raise StoreUnavailable(str(exc)) from exc
            except dbapi.Error as exc:  # anything else the database refuses: nothing was stored
                raise StoreUnavailable(str(exc)) from exc
            finally:
                conn.close()
        raise AssertionError("unreachable")

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def migrate(self, attempts: int = 5) -> None:
        """Bring the schema to the newest Alembic revision.

        Several processes may start at once; a loser of the race retries after the winner.
        """
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        for attempt in retrying((OperationalError, SQLAlchemyError), attempts=attempts, first_wait=0.2):
            with attempt, self.engine.begin() as connection:
                cfg.attributes["connection"] = connection
                command.upgrade(cfg, "head")

    def dispose(self) -> None:
        self.engine.dispose()
        if "_autocommit" in self.__dict__:
            self._autocommit.dispose()
