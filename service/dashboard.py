"""``GET /``: the dashboard, a static page that reads the JSON API."""

from __future__ import annotations

from flask import Blueprint, render_template

bp = Blueprint(
    "dashboard", __name__, template_folder="templates", static_folder="static", static_url_path="/static"
)


@bp.get("/")
def index() -> str:
    return render_template("dashboard.html")
