"""Errors shared by the model definitions."""


class ArchitectureError(ValueError):
    """A config.json describes an architecture this module does not implement."""
