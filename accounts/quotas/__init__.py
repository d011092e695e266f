"""Token and cost budgets: reserve a reply's worst case before the provider call, settle what
it really used afterwards.

How a reservation stays atomic across processes and replicas:
- Every reply charges four UsageCounter rows — its user's and its organisation's counter for
  the current day and month — in the same transaction that writes its UsageLedger row.
- The reservation charges its worst case to those rows in one statement that locks them
  (SELECT … FOR UPDATE, in primary-key order so two reservations never deadlock) and returns
  the totals after the charge; it refuses if one would pass a budget, and the caller's
  transaction, rolled back, takes the charge back. Any concurrent reservation against the same
  budget waits for the lock and then charges the committed total (READ COMMITTED takes a fresh
  snapshot per statement). SQLite (embedded mode) has no row locks, but its IMMEDIATE
  transactions take the database write lock at BEGIN, which serialises the same way.
- Settling replaces the reserved worst case by the real usage (prompt + completion tokens,
  cost) on the ledger row and adds the difference (≤ 0 unless the prompt estimate was low) to
  the same counters, under the same locks.
So the charged total only passes a budget by what replies used beyond their reserved worst
case — at most the prompt-estimate error, never one extra max_tokens per parallel request.

The worst-case cost is the larger of tokens × QUOTA_COST_PER_TOKEN and the highest prices of
the deployments that may answer (`TokenPrices`, passed in by the caller: accounts knows nothing
of models), so a cost budget holds under concurrency whatever QUOTA_COST_PER_TOKEN says.

PostgreSQL is the record (ledger and counters); the cache (Redis in production) only holds
each organisation's budget rules, so most sends do not query them.

The parts: `budgets` (rules, periods, estimates), `counters` (the rows charged, in primary-key
order), `reserve` (quota_reserve), `statement` (a reservation inside a caller's one statement,
PostgreSQL), `settle` (one reply settled or released), `settle_many` (replies ending together,
settled in one transaction).
"""

from accounts.quotas.budgets import (
    BUDGETS_CACHE_KEY,
    BUDGETS_CACHE_SECONDS,
    MILLION,
    PERIOD_ADJECTIVE,
    BudgetRule,
    QuotaExceeded,
    TokenPrices,
    budget_applies,
    budgets_applying,
    budgets_for,
    budgets_forget,
    cost_bound,
    cost_of,
    period_reset,
    period_start,
    tokens_estimate,
)
from accounts.quotas.counters import counters_create
from accounts.quotas.reserve import quota_reserve, reservation_attach
from accounts.quotas.settle import (
    ReplyOutcome,
    Settlement,
    Usage,
    ledger_settle,
    quota_release,
    quota_settle,
)
from accounts.quotas.settle_many import quota_settle_many
from accounts.quotas.statement import (
    CountersMissing,
    StatementReservation,
    reservation_read,
    statement_reservation,
)

__all__ = [
    "BUDGETS_CACHE_KEY",
    "BUDGETS_CACHE_SECONDS",
    "MILLION",
    "PERIOD_ADJECTIVE",
    "BudgetRule",
    "CountersMissing",
    "QuotaExceeded",
    "ReplyOutcome",
    "Settlement",
    "StatementReservation",
    "TokenPrices",
    "Usage",
    "budget_applies",
    "budgets_applying",
    "budgets_for",
    "budgets_forget",
    "cost_bound",
    "cost_of",
    "counters_create",
    "ledger_settle",
    "period_reset",
    "period_start",
    "quota_release",
    "quota_reserve",
    "quota_settle",
    "quota_settle_many",
    "reservation_attach",
    "reservation_read",
    "statement_reservation",
    "tokens_estimate",
]
