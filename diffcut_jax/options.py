"""One helper every stage uses to declare an option: a dataclass field carrying its help text.

The command flags (`launch/common.py`) and the configs (`configs/common.py`) are built from these
fields, so an option is declared once. It imports nothing of the package, so any stage may use it.
"""
from dataclasses import field


def option(default, help: str, **extra):
    """A frozen-dataclass field with `default` and the flag's `help` (and e.g. `choices`)."""
    return field(default=default, metadata={"help": help, **extra})
