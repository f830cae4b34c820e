"""Training the hypernet: preference pairs from the teachers' orderings, losses, the trainer."""
