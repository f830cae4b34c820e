"""Assets, one module per stage: data, embeddings, teachers, training, evaluation, report."""
