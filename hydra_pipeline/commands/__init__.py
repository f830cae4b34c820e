"""The ``hydra`` commands, one sub-application per concept; ``hydra_pipeline.cli`` merges them."""
