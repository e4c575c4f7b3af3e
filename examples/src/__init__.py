"""Training code for the churn example (run by the DVC pipeline)."""
