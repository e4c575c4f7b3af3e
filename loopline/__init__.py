"""Loopline: self-hosted CI/CD/CT for machine-learning projects."""

__version__ = "0.1.0"
