"""Scoring methods on a task's queries: metrics, the methods compared, significance,
robustness to perturbed queries, validation, the reference heads fitted without the
hypernet (they are chosen on validation scores) and the results table."""
