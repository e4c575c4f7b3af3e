"""``loopline users add|list|remove``: the people who may act, and their roles."""

from __future__ import annotations

import json

import click

from store import users
from store.db import Database


def _db() -> Database:
    from config.settings import Settings
    from loopline.report import open_store

    return open_store(Settings.from_env())


@click.group("users")
def group() -> None:
    """Named users with a role (viewer, approver, admin) and a personal API token."""


@group.command("add")
@click.argument("name")
@click.option(
    "--role",
    type=click.Choice(users.ROLES),
    default="viewer",
    show_default=True,
    help="approver: approve, reject, retry, cancel runs; admin: also promote, roll back.",
)
def add(name: str, role: str) -> None:
    """Add NAME and print their token (shown once: only its digest is stored)."""
    try:
        token = users.add(_db(), name, role)
    except users.UserError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"added {name} ({role}); their token, shown only now:", err=True)
    click.echo(token)


@group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_(as_json: bool) -> None:
    """Every user, their role and when their token was last used."""
    rows = users.listing(_db())
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        click.echo(f"{row['name']:<24} {row['role']:<9} last seen {row['last_seen_at'] or 'never'}")
    if not rows:
        click.echo("no users yet: `loopline users add NAME --role approver`")


@group.command("remove")
@click.argument("name")
def remove(name: str) -> None:
    """Remove NAME: their token stops working at once."""
    try:
        users.remove(_db(), name)
    except users.UserError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"removed {name}")
