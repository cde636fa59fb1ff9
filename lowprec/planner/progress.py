"""A one-line progress bar on stderr (tqdm is not a dependency).

Shown only when stderr is a terminal, unless forced: ``enabled=True`` / ``False``, or the
environment variable ``LOWPREC_PROGRESS=0`` (off) / ``1`` (on).
"""

import os
import sys
import time

WIDTH = 24


def progress_enabled(enabled=None, stream=None):
    if enabled is not None:
        return bool(enabled)
    env = os.environ.get("LOWPREC_PROGRESS")
    if env is not None:
        return env.strip() not in ("", "0", "false", "no", "off")
    stream = stream or sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)())


class Progress:
    """``with Progress(total, "stats") as bar: ... bar.update()``; silent when disabled.

    ``total`` may be None (an iterable without a length): then only the count shows.
    """

    def __init__(self, total, desc, enabled=None, stream=None):
        self.total = total
        self.desc = desc
        self.stream = stream or sys.stderr
        self.enabled = progress_enabled(enabled, self.stream)
        self.count = 0
        self.start = time.perf_counter()

    def __enter__(self):
        self._draw()
        return self

    def update(self, n=1):
        self.count += n
        self._draw()

    def _draw(self):
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.start
        if self.total:
            filled = int(WIDTH * min(self.count, self.total) / self.total)
            bar = "#" * filled + "." * (WIDTH - filled)
            text = f"\r{self.desc} [{bar}] {self.count}/{self.total} {elapsed:.1f}s"
        else:
            text = f"\r{self.desc} {self.count} {elapsed:.1f}s"
        self.stream.write(text)
        self.stream.flush()

    def __exit__(self, *exc):
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
        return False
