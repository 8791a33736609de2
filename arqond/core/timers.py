"""The one way the core asks for time to pass: named timers, armed and disarmed.

The core never reads a clock to wait: a part that needs to act later (a cron job, a handler
timeout, a stale check) is given a Timers and arms a key. The event-loop adapter
(arqond/transports/timers.py) runs the callbacks; unit tests drive them by hand.
"""

from __future__ import annotations

from typing import Callable, Hashable, Protocol


class Timers(Protocol):
    def arm(self, key: Hashable, delay: float, fire: Callable[[], None]) -> None:
        """Call ``fire`` in ``delay`` seconds; arming a key again replaces its timer."""

    def disarm(self, key: Hashable) -> None:
        """Forget the timer of ``key``, if any."""
