"""Rankings and the teachers that make them: BM25, the frozen dense encoder, and their fusion."""
