"""absl-flag entry points (`python -m launch.<name>`), also installed as console scripts."""
