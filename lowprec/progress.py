"""A small progress bar on stderr (tqdm is not a dependency).

On a terminal it redraws one line in place; in a log (CI, a pipe) carriage returns
would pile up into one unreadable line, so it prints a plain line every ~10% instead.
The caller decides whether it shows (``enabled``); nothing here looks at the terminal
to decide that.
"""

import sys
import time


class Progress:
    """``with Progress("nvfp4", total) as bar: bar.update(step, loss=...)``.

    ``total`` may be None (an iterable without a length) or 0: then only the count
    shows, and a log gets a line every 10 updates.
    """

    WIDTH = 24

    def __init__(self, label, total, stream=None, enabled=True):
        if total is not None and total < 0:
            raise ValueError(f"progress total must be >= 0 or None; got {total}")
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
        """Report ``done`` steps so far; ``values`` (e.g. loss=2.3) are shown too."""
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.start
        extra = " ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                         for k, v in values.items())
        count = f"{done}/{self.total}" if self.total else str(done)
        if self.tty:
            if not self.total:
                self.stream.write(f"\r{self.label:<14} {count} {elapsed:5.0f}s {extra}   ")
            else:
                eta = elapsed / done * (self.total - done) if done else float("nan")
                filled = int(self.WIDTH * min(done, self.total) / self.total)
                bar = "#" * filled + "." * (self.WIDTH - filled)
                self.stream.write(f"\r{self.label:<14} [{bar}] {count} "
                                  f"{elapsed:5.0f}s eta {eta:4.0f}s {extra}   ")
        elif done >= self._next_report or done == self.total:
            self.stream.write(f"{self.label:<14} {count} {elapsed:.0f}s {extra}\n")
            self._next_report = done + max(1, (self.total or 100) // 10)
        self.stream.flush()
