"""Progress of long operations on stderr: a tqdm bar on a terminal, sparse plain lines in logs
of long runs, nothing when asked to be quiet."""

from __future__ import annotations

import math
import sys
import time
from typing import Any

__all__ = ["Progress", "interactive"]


class Progress:
    """Progress of a long operation over a known total, on stderr.

    On a terminal: a tqdm bar with rate and ETA. Otherwise (logs, CI, pipes): a plain line
    about every 10 % (``polydiff: sampling 3000/10000 samples (30%), 812 samples/s, ETA
    00:08``) -- with ``enabled=None`` (auto) only once the work has run ``log_after`` seconds,
    so quick runs stay silent; ``enabled=False`` shows nothing (``--quiet``)."""

    log_after = 10.0

    def __init__(self, total: int, desc: str = "sampling", unit: str = "sample", enabled: bool | None = None,
                 initial: int = 0) -> None:
        self.total, self.desc, self.unit, self.n = max(int(total), 1), desc, unit, int(initial)
        self._t0, self._start, self._bar, self._lines, self._last = time.monotonic(), self.n, None, 0, self.n
        self._on = enabled is not False
        self._gate = 0.0 if enabled else self.log_after
        self._postfix = ""
        if self._on and interactive(sys.stderr):
            try:
                from tqdm import tqdm
            except ImportError:  # pragma: no cover - tqdm is a dependency
                return
            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True,
                             leave=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(exc[0] is None)

    def update(self, k: int, **postfix: Any) -> None:
        """``k`` more done (``postfix``: values shown after the bar, e.g. ``error=0.01``)."""
        self.update_to(self.n + k, **postfix)

    def update_to(self, n: int, **postfix: Any) -> None:
        """``n`` done in all."""
        if not self._on:
            return
        step, self.n = n - self.n, n
        self._postfix = ", ".join(f"{k} {v}" for k, v in postfix.items())
        if self._bar is not None:
            if postfix:
                self._bar.set_postfix(postfix, refresh=False)
            self._bar.update(step)
            return
        elapsed = time.monotonic() - self._t0
        if elapsed >= self._gate and (self.n - self._last >= self.total / 10 or self.n >= self.total):
            self._last, self._lines = self.n, self._lines + 1
            rate = (self.n - self._start) / max(elapsed, 1e-9)
            eta = (self.total - self.n) / rate if rate > 0 else math.inf
            eta_text = _interval(eta) if math.isfinite(eta) else "?"
            print(f"polydiff: {self.desc} {self.n}/{self.total} {self.unit}s ({100 * self.n / self.total:.0f}%), "
                  f"{rate:.3g} {self.unit}s/s, ETA {eta_text}" + (f", {self._postfix}" if self._postfix else ""),
                  file=sys.stderr, flush=True)

    def close(self, ok: bool = True) -> None:
        """End the bar (a plain run that printed lines says how long it took)."""
        if self._bar is not None:
            if ok and self.n < self.total:  # finished early (a calibration that converged)
                self._bar.total = self.n
                self._bar.refresh()
            self._bar.close()
            self._bar = None
        elif self._lines and ok and self._on:
            self._on = False
            print(f"polydiff: {self.desc} done: {self.n} {self.unit}s in {_interval(time.monotonic() - self._t0)}",
                  file=sys.stderr, flush=True)
        self._on = False


def interactive(stream: Any) -> bool:
    """Whether ``stream`` is a terminal (not a log file, a pipe or a closed stream)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _interval(seconds: float) -> str:
    s = round(seconds)
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60:02d}:{rest % 60:02d}"
