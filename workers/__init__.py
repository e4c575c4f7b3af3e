"""Celery app, thin tasks, the outbox relay and the plain step functions they call."""
