"""Training the hypernet: preference pairs from the teachers' orderings, losses, the trainer,
and fitting one head directly (the supervised and refined references)."""
