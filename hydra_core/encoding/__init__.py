"""The frozen base encoder, its embedding cache, and card texts encoded through it."""
