"""Per-token timing shared by what a backend returns and what a result keeps.

Layer L2: this module imports nothing of llem, so both :mod:`llem.backends` (L3) and
:mod:`llem.results` (L4) can build on it.
"""

from __future__ import annotations


class TokenTimes:
    """TTFT and inter-token latencies derived from ``token_times_s`` (a mixin)."""

    token_times_s: tuple[float, ...]

    @property
    def ttft_s(self) -> float | None:
        """Time to first token in seconds, or None when nothing was generated."""
        return self.token_times_s[0] if self.token_times_s else None

    @property
    def itl_s(self) -> tuple[float, ...]:
        """Inter-token latencies in seconds (differences of consecutive token times)."""
        t = self.token_times_s
        return tuple(b - a for a, b in zip(t, t[1:]))


__all__ = ["TokenTimes"]
