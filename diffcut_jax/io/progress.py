"""Progress of long work on stderr, through tqdm: count, rate, ETA, a count per status
(`ok=12 failed=1`) and an optional note (the running mIoU)."""
from __future__ import annotations

import sys


class Progress:
    def __init__(self, total: int, *, done: int = 0, unit: str = "img", stream=None,
                 disable: bool = False):
        from tqdm import tqdm

        self.counts: dict[str, int] = {}
        self.bar = tqdm(total=total, initial=done, unit=unit, file=stream or sys.stderr,
                        dynamic_ncols=True, smoothing=0.1, disable=disable)

    def update(self, status: str, extra: str = "") -> None:
        self.counts[status] = self.counts.get(status, 0) + 1
        parts = " ".join(f"{k}={v}" for k, v in sorted(self.counts.items()))
        self.bar.set_postfix_str(f"{parts}{' ' + extra if extra else ''}", refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
