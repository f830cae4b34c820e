"""Retrieval tasks (corpus, queries, qrels, splits) and the task cards that describe them."""
