"""Serving app for the churn example model."""
