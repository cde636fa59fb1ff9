"""What the subcommands share: the output folder and the line about CPU threads."""

import os
from pathlib import Path


def out_dir(path):
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    return out


def threads_line(threads):
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"torch CPU threads: {threads} of {cores} cores here (--threads N to change; "
            f"small models run fastest on 1, and on a busy machine more threads stall)")

