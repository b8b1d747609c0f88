"""absl-flag entry points (`python -m diffcut_jax.launch.<name>`), also installed as console scripts."""
