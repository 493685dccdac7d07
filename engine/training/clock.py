"""The budget clock: seconds of training steps, FLOPs, or tokens, and when to stop.

The host runs at most one step ahead of the device: it learns that step n-1 finished
(by reading its loss) while step n runs, so it never stalls the device to look at the
time, and it stops at the first step that reaches the budget.
"""
from __future__ import annotations

import time

from engine.errors import UserError
from engine.training.contract import Budget


class BudgetClock:
    def __init__(self, budget: Budget, tokens_per_step: int, flops_per_step: float | None,
                 now=time.perf_counter):
        if budget.value <= 0:
            raise UserError(f"the budget must be positive, got {budget.describe()}")
        if budget.mode == "flops" and not flops_per_step:
            raise UserError("--budget-flops needs the step's FLOP count, which XLA could not give on "
                            "this backend: use --budget-seconds or --budget-tokens")
        self.budget = budget
        self.tokens_per_step = tokens_per_step
        self.flops_per_step = flops_per_step or 0.0
        self._now = now
        self._start = None
        self._charged_seconds = 0.0  # init's device time, counted as training (see `charge`)
        self._charged_flops = 0.0
        self.dispatched = 0  # steps handed to the device
        self.completed = 0  # steps known to have finished
        self.seconds = 0.0  # training seconds up to the last completed step
        self._last_step_seconds = 0.0

    def start(self) -> None:
        self._start = self._now()

    def charge(self, seconds: float = 0.0, flops: float = 0.0) -> None:
        """Work done before the first step (the experiment's init, the tracer's time beyond its
        allowance) counts against the budget: its seconds under a time budget, its FLOPs
        under a flops budget. Neither sees data, so a tokens budget has nothing to charge.
        Nothing ever comes off the clock."""
        self._charged_seconds += max(0.0, seconds)
        self._charged_flops += max(0.0, flops or 0.0)

    def elapsed(self) -> float:
        return self._now() - self._start + self._charged_seconds

    def progress(self) -> float:
        """The elapsed fraction of the budget for the step about to be dispatched."""
        if self.budget.mode == "time":
            done = self.elapsed()
        else:
            done = self._work(self.dispatched)
        return min(1.0, max(0.0, done / self.budget.value))

    def step_dispatched(self) -> None:
        self.dispatched += 1

    def step_completed(self) -> None:
        seconds = self.elapsed()
        self._last_step_seconds = seconds - self.seconds
        self.seconds = seconds
        self.completed += 1

    def should_stop(self) -> bool:
        """True once the dispatched steps reach the budget (time: the one in flight will)."""
        if self.budget.mode == "time":
            in_flight = self.dispatched - self.completed
            return self.seconds + in_flight * self._last_step_seconds >= self.budget.value
        return self._work(self.dispatched) >= self.budget.value

    def reached(self) -> bool:
        """Whether the completed steps have reached the budget (a time estimate may fall short)."""
        if self.budget.mode == "time":
            return self.seconds >= self.budget.value
        return self._work(self.completed) >= self.budget.value

    def _work(self, steps: int) -> float:
        """Tokens or FLOPs of `steps` steps, plus the FLOPs charged for init."""
        charged = self._charged_flops if self.budget.mode == "flops" else 0.0
        return steps * self._per_step() + charged

    def _per_step(self) -> float:
        return self.tokens_per_step if self.budget.mode == "tokens" else self.flops_per_step

    @property
    def tokens(self) -> int:
        return self.completed * self.tokens_per_step

    @property
    def flops(self) -> float:
        return self.completed * self.flops_per_step + self._charged_flops


def budget_from_args(args, default_seconds: float) -> Budget:
    if getattr(args, "budget_flops", None) is not None:
        return Budget("flops", float(args.budget_flops))
    if getattr(args, "budget_tokens", None) is not None:
        return Budget("tokens", float(args.budget_tokens))
    seconds = getattr(args, "budget_seconds", None)
    return Budget("time", float(default_seconds if seconds is None else seconds))
