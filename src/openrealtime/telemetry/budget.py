"""Per-key spending budgets: what each key spent in the current day or month, kept in memory.

The ledger charges every record here as it is queued (and again, harmlessly, when it is
written: charges are idempotent by record id), so the session core can ask "may this key
start a response?" without I/O. At start-up, and periodically when several nodes share a
PostgreSQL ledger, the spend is reloaded from storage.
"""

from __future__ import annotations

import calendar
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

log = logging.getLogger("openrealtime.budget")

Period = Literal["day", "month"]
MICRO_USD = 1_000_000
_REMEMBERED_IDS = 50_000


@dataclass(frozen=True)
class BudgetPolicy:
    """The limits: ``default_usd`` for every key, ``per_key_usd`` overrides by key id."""

    default_usd: float | None = None
    per_key_usd: Mapping[str, float] = field(default_factory=dict)
    period: Period = "day"
    warn_fraction: float = 0.8

    @property
    def enabled(self) -> bool:
        return self.default_usd is not None or bool(self.per_key_usd)

    def limit_for(self, key_id: str) -> float | None:
        return self.per_key_usd.get(key_id, self.default_usd)


def window_of(period: Period, now: float) -> tuple[float, float]:
    """Start and end (epoch s, UTC) of the budget window holding ``now``."""
    moment = datetime.fromtimestamp(now, UTC)
    if period == "day":
        start = datetime(moment.year, moment.month, moment.day, tzinfo=UTC).timestamp()
        return start, start + 86_400
    start = datetime(moment.year, moment.month, 1, tzinfo=UTC).timestamp()
    days = calendar.monthrange(moment.year, moment.month)[1]
    return start, start + days * 86_400


class BudgetTracker:
    """Spend per key in the current window, and the answers the session core needs."""

    def __init__(self, policy: BudgetPolicy, *, clock: Callable[[], float] = time.time) -> None:
        self.policy = policy
        self.clock = clock
        self.window = window_of(policy.period, clock())
        self.spent: dict[str, float] = {}
        self._counted: OrderedDict[str, None] = OrderedDict()
        self._warned: set[str] = set()
        self._exhausted: set[str] = set()

    def _roll(self, now: float) -> None:
        if now >= self.window[1] or now < self.window[0]:
            self.window = window_of(self.policy.period, now)
            self.spent.clear()
            self._counted.clear()
            self._warned.clear()
            self._exhausted.clear()

    def load(self, spent: Mapping[str, float]) -> None:
        """Merge spend read from storage for the current window (stored rows may lag memory,
        other nodes may have spent more: keep the larger of the two)."""
        self._roll(self.clock())
        for key, cost in spent.items():
            self.spent[key] = max(self.spent.get(key, 0.0), cost)

    def charge(self, key_id: str, record_id: str, cost: float, at: float | None = None) -> None:
        """Add ``cost`` to the key's spend, once per ``record_id``."""
        now = self.clock() if at is None else at
        self._roll(self.clock())
        if not self.window[0] <= now < self.window[1] or record_id in self._counted:
            return
        self._counted[record_id] = None
        if len(self._counted) > _REMEMBERED_IDS:
            self._counted.popitem(last=False)
        self.spent[key_id] = self.spent.get(key_id, 0.0) + cost
        self._announce(key_id)

    def _announce(self, key_id: str) -> None:
        limit = self.policy.limit_for(key_id)
        if limit is None:
            return
        spent = self.spent.get(key_id, 0.0)
        if spent >= limit and key_id not in self._exhausted:
            self._exhausted.add(key_id)
            log.warning(
                "budget exhausted: key %s spent $%.4f of its $%.4f %s budget; new responses are refused",
                key_id,
                spent,
                limit,
                self.period_name,
            )
        elif spent >= limit * self.policy.warn_fraction and key_id not in self._warned:
            self._warned.add(key_id)
            log.warning(
                "budget warning: key %s spent $%.4f of its $%.4f %s budget (%.0f%%)",
                key_id,
                spent,
                limit,
                self.period_name,
                100 * spent / limit if limit else 100.0,
            )

    @property
    def period_name(self) -> str:
        return "daily" if self.policy.period == "day" else "monthly"

    def remaining(self, key_id: str) -> float | None:
        limit = self.policy.limit_for(key_id)
        if limit is None:
            return None
        self._roll(self.clock())
        return limit - self.spent.get(key_id, 0.0)

    def refusal(self, key_id: str) -> str | None:
        """Why ``key_id`` may not start a response now, or None if it may."""
        left = self.remaining(key_id)
        if left is None or left > 0:
            return None
        limit = self.policy.limit_for(key_id) or 0.0
        resets = datetime.fromtimestamp(self.window[1], UTC).strftime("%Y-%m-%d %H:%M UTC")
        return (
            f"You exceeded your current quota: this key spent ${self.spent.get(key_id, 0.0):.4f} of its "
            f"${limit:.4f} {self.period_name} budget. New responses are refused until {resets}."
        )

    def rate_limit(self, key_id: str) -> dict[str, Any] | None:
        """The budget as a ``rate_limits.updated`` entry, or None without a budget.

        The client SDKs accept only the names ``requests`` and ``tokens``, so the budget is the
        ``requests`` entry with ``limit`` and ``remaining`` in millionths of a US dollar."""
        limit = self.policy.limit_for(key_id)
        left = self.remaining(key_id)
        if limit is None or left is None:
            return None
        return {
            "name": "requests",
            "limit": math.floor(limit * MICRO_USD),
            "remaining": max(0, math.floor(left * MICRO_USD)),
            "reset_seconds": round(max(0.0, self.window[1] - self.clock()), 3),
        }
