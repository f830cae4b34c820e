"""Scoring methods on a task's queries: metrics, the methods compared, significance,
robustness to perturbed queries, validation and the results table."""
