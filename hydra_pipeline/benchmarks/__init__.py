"""Hydra's benchmark suite (``hydra bench``): one plain function per figure.

The promise is that a new task costs almost nothing: documents are encoded once by the
frozen base and a task only compiles and applies a tiny head. Each figure measures a part of
that. The machines are shared and noisy, so every comparison runs both sides in the same
process, on the same data, interleaved, and reports their ratio beside the raw rates.

Data: figures 1-3 use real SciFact documents and the shipped SciFact card. Figures 4-7 and 9
use a synthetic corpus of random unit vectors (speed and memory do not depend on the values);
the texts that bm25s indexes in figure 5 (and that key the cache in figure 6) are real
documents of the five development collections, and beyond their ~24,800 documents each
further one joins the first half of one real document to the second half of another
(pairs drawn with a fixed seed), so vocabulary and lengths stay realistic. Figures 5 and 6
each run in a fresh process, so figure 7 can report each one's own peak resident memory.
"""
