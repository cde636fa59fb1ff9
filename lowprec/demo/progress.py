"""A tiny progress bar on stderr (no tqdm dependency).

On a terminal it redraws one line in place; in a log (CI, a pipe) carriage returns
would pile up into one unreadable line, so it prints a plain line every ~10% instead.
"""

import sys
import time


class Progress:
    """``with Progress("nvfp4", total) as bar: bar.update(step, loss=...)``."""

    WIDTH = 24

    def __init__(self, label, total, stream=None, enabled=True):
        if total < 1:
            raise ValueError(f"progress total must be >= 1; got {total}")
        self.label, self.total, self.enabled = label, total, enabled
        self.stream = sys.stderr if stream is None else stream
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = time.perf_counter()
        self._next_report = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()

    def update(self, done, **values):
        """Report ``done`` of ``total`` steps; ``values`` (e.g. loss=2.3) are shown too."""
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.start
        eta = elapsed / done * (self.total - done) if done else float("nan")
        extra = " ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                         for k, v in values.items())
        if self.tty:
            filled = int(self.WIDTH * done / self.total)
            bar = "#" * filled + "." * (self.WIDTH - filled)
            self.stream.write(f"\r{self.label:<14} [{bar}] {done}/{self.total} "
                              f"{elapsed:5.0f}s eta {eta:4.0f}s {extra}   ")
        elif done >= self._next_report or done == self.total:
            self.stream.write(f"{self.label:<14} {done}/{self.total} {elapsed:.0f}s {extra}\n")
            self._next_report = done + max(1, self.total // 10)
        self.stream.flush()
