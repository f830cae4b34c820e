"""Retrieval tasks (corpus, queries, qrels, splits), the task cards that describe them and
the split of their queries that validates."""
