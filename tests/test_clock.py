"""Budgets: the clock stops at the first step that reaches them; compile time stays off it."""
import json
import math
from pathlib import Path

import pytest

from engine import cli
from engine.training.clock import BudgetClock
from engine.errors import UserError
from engine.training.contract import Budget

TINY_TRAIN = Path(__file__).parent / "fixtures" / "tiny_train.py"


class FakeTime:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def run_steps(clock: BudgetClock, time: FakeTime, step_seconds, limit: int = 1000) -> list[float]:
    """The trainer's loop shape: dispatch, learn of the previous step, decide, drain at the end."""
    durations = step_seconds if callable(step_seconds) else (lambda n: step_seconds)
    progresses, progress, pending = [], 0.0, False
    clock.start()
    for _ in range(limit):
        progresses.append(progress)
        clock.step_dispatched()
        if pending:
            time.t += durations(clock.completed)
            clock.step_completed()
        pending = True
        progress = clock.progress()
        if clock.should_stop():
            time.t += durations(clock.completed)
            clock.step_completed()
            pending = False
            progress = clock.progress()
            if clock.reached():
                break
    return progresses


def test_tokens_budget_stops_at_first_step_reaching_it():
    clock = BudgetClock(Budget("tokens", 1000), tokens_per_step=300, flops_per_step=None)
    progresses = run_steps(clock, FakeTime(), 0.1)
    assert clock.completed == 4 == math.ceil(1000 / 300)
    assert clock.tokens == 1200
    assert progresses == pytest.approx([0.0, 0.3, 0.6, 0.9])


def test_flops_budget_counts_whole_steps():
    clock = BudgetClock(Budget("flops", 1e9), tokens_per_step=10, flops_per_step=3e8)
    run_steps(clock, FakeTime(), 0.1)
    assert clock.completed == 4 and clock.flops == pytest.approx(1.2e9)


def test_time_budget_stops_on_the_step_that_crosses_it():
    fake = FakeTime()
    clock = BudgetClock(Budget("time", 1.0), tokens_per_step=10, flops_per_step=None, now=fake)
    run_steps(clock, fake, 0.3)
    assert clock.completed == 4  # 0.9 s is short of 1.0 s; the fourth step crosses it
    assert clock.seconds == pytest.approx(1.2)


def test_time_budget_is_reached_even_when_steps_speed_up():
    """A step faster than the last one would end short of the budget: the clock goes on."""
    fake = FakeTime()
    clock = BudgetClock(Budget("time", 1.0), tokens_per_step=10, flops_per_step=None, now=fake)
    run_steps(clock, fake, lambda n: 0.3 if n < 2 else 0.05)
    assert clock.seconds >= 1.0
    assert clock.seconds - 0.05 < 1.0  # and stops on the step that crossed it


def test_flops_budget_without_flop_count_is_a_user_error():
    with pytest.raises(UserError, match="budget-seconds"):
        BudgetClock(Budget("flops", 1e9), tokens_per_step=1, flops_per_step=None)


def train(data_dir, tmp_path, *flags):
    result = tmp_path / "result.json"
    code = cli.main(["train", str(TINY_TRAIN), "--data", str(data_dir), "--json", str(result),
                     "--no-checkpoint", *flags])
    return code, json.loads(result.read_text())


def test_time_budget_excludes_compile(prepared_data, tmp_path):
    code, result = train(prepared_data, tmp_path, "--budget-seconds", "2")
    assert code == 0
    # Stops on the step that crosses the budget: at most one (tiny) step past it.
    assert 2.0 <= result["training_seconds"] < 2.0 + 1.0
    assert result["compile_seconds"] > 0
    assert result["total_seconds"] >= result["training_seconds"] + result["compile_seconds"]


def test_flops_budget_end_to_end(prepared_data, tmp_path):
    code, result = train(prepared_data, tmp_path, "--budget-flops", "1e9")
    assert code == 0
    assert result["step_flops"] > 0
    assert result["num_steps"] == math.ceil(1e9 / result["step_flops"])


def test_init_is_charged_to_time_and_flops_budgets_not_tokens():
    time = FakeTime()
    timed = BudgetClock(Budget("time", 10.0), 64, None, now=time)
    timed.charge(seconds=4.0)
    run_steps(timed, time, 1.0)
    assert timed.completed == 6 and timed.seconds == pytest.approx(10.0)  # 4 s of init + 6 steps
    flops = BudgetClock(Budget("flops", 100.0), 64, 10.0, now=FakeTime())
    flops.charge(flops=35.0)
    run_steps(flops, FakeTime(), 1.0)
    assert flops.completed == 7 and flops.flops == pytest.approx(105.0)
    tokens = BudgetClock(Budget("tokens", 640), 64, 10.0, now=FakeTime())
    tokens.charge(seconds=4.0, flops=1e9)
    run_steps(tokens, FakeTime(), 1.0)
    assert tokens.completed == 10
