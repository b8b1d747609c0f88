"""`diffcut-jax <command> ...`: the console script; each command is a module of this package."""
from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "segment": "Segment images into label maps and overlays.",
    "coherence": "Render the semantic coherence heat map of one patch.",
    "eval": "Evaluate on a benchmark (--config=<benchmark>): mIoU, per-class IoU.",
    "demo": "Serve the local web demo (Gradio; pip install -e \".[demo]\").",
}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help") or sys.argv[1] not in COMMANDS:
        lines = [f"  {name:<10} {doc}" for name, doc in COMMANDS.items()]
        sys.stderr.write("usage: diffcut-jax <command> [flags] [args]\n\ncommands:\n" + "\n".join(lines)
                         + "\n\n`diffcut-jax <command> --help` lists a command's flags.\n")
        sys.exit(0 if len(sys.argv) >= 2 and sys.argv[1] in ("-h", "--help") else 2)
    command = sys.argv.pop(1)
    sys.argv[0] = f"diffcut-jax {command}"
    # Import only the chosen command: each defines its own absl flags.
    importlib.import_module(f"{__package__}.{command}").cli()


if __name__ == "__main__":
    main()
