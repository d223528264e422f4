"""Silencing what native libraries write straight to file descriptor 2 (Python's `sys.stderr` never sees it)."""
from __future__ import annotations

import contextlib
import os
import sys


@contextlib.contextmanager
def native_stderr_silenced():
    """Send file descriptor 2 to /dev/null for the block: the torch profiler's start/stop lines (and a CUDA probe's
    error on CPU-only machines) would otherwise land in the terminal or, in a notebook kernel, in the cell's output."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
