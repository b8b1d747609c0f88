"""ml_collections configs: one per benchmark and model (see each file's docstring for the command)."""
