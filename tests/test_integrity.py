"""The engine snapshot: rebinding an engine name or a class attribute is found and named."""
import pytest

import engine.training.clock as clock
from engine.training import integrity


def test_unchanged_engine_verifies():
    integrity.verify(integrity.snapshot())


def test_rebound_function_is_named(monkeypatch):
    before = integrity.snapshot()
    monkeypatch.setattr(clock, "budget_from_args", lambda args, default: None)
    with pytest.raises(integrity.Tampered, match="replaced engine.training.clock.budget_from_args"):
        integrity.verify(before)


def test_rebound_class_attribute_and_time_function_are_named(monkeypatch):
    before = integrity.snapshot()
    monkeypatch.setattr(clock.BudgetClock, "reached", lambda self: False)
    with pytest.raises(integrity.Tampered, match="engine.training.clock.BudgetClock.reached"):
        integrity.verify(before)
    monkeypatch.undo()
    import time
    monkeypatch.setattr(time, "perf_counter", lambda: 0.0)
    with pytest.raises(integrity.Tampered, match="replaced time.perf_counter"):
        integrity.verify(before)


def test_new_names_are_not_tampering(monkeypatch):
    before = integrity.snapshot()
    monkeypatch.setattr(clock, "SOMETHING_NEW", 1, raising=False)
    integrity.verify(before)
