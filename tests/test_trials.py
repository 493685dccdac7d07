"""The ledger rebuilt as a study: whole configurations, the noise gate's re-runs, failures."""
import pytest

from engine.agents.trials import rebuild


def row(experiment, description, value, kept=False, status=None, **more):
    return {"experiment": experiment, "description": description, "val_bpb": value, "kept": kept,
            "status": status or ("keep" if kept else "discard"), "role": "candidate", **more}


def test_configurations_are_rebuilt_from_the_changes_and_the_keeps():
    ledger = [{**row(0, "baseline", 2.0, kept=True), "role": "baseline"},
              row(1, "LR: 0.04 -> 0.02", 1.9, kept=True),
              row(2, "DEPTH: 4 -> 8", 2.1),
              row(3, "combine LR: 0.02 -> 0.01, DEPTH: 4 -> 2", 1.8, kept=True)]
    study = rebuild(ledger, {"LR": 0.01, "DEPTH": 2}, "minimize")
    assert study.origin == {"LR": 0.04, "DEPTH": 4}
    assert [t.params for t in study.trials] == [{"LR": 0.04, "DEPTH": 4}, {"LR": 0.02, "DEPTH": 4},
                                                {"LR": 0.02, "DEPTH": 8}, {"LR": 0.01, "DEPTH": 2}]
    assert [t.value for t in study.trials] == [2.0, 1.9, 2.1, 1.8]


def test_reruns_give_their_candidate_the_mean_and_failures_the_worst_value():
    ledger = [{**row(0, "baseline", 2.0, kept=True), "role": "baseline"},
              {**row(1, "baseline (run 2 of 2)", 2.02, kept=True), "role": "baseline"},
              row(2, "LR: 0.04 -> 0.03", 1.99),
              {**row(3, "LR: 0.04 -> 0.03 (re-run of #2, seed 1)", 1.995), "role": "rerun", "rerun_of": 2},
              {**row(4, "LR: 0.04 -> 0.03 (re-run of #2, seed 2)", 1.986, kept=True), "role": "rerun", "rerun_of": 2},
              {**row(5, "confirm abc1234 (run 1 of 2)", 1.97, kept=True), "role": "confirm"},
              row(6, "LR: 0.03 -> 0.5", None, status="crash"),
              row(7, "LR: 0.03 -> 0.001", 2.4, metric="val_bpb")]
    study = rebuild(ledger, {"LR": 0.03}, "minimize")
    assert study.origin == {"LR": 0.04}
    assert [t.params["LR"] for t in study.trials] == [0.04, 0.04, 0.03, 0.5, 0.001]
    values = [t.value for t in study.trials]
    assert values[:2] == [2.0, 2.02] and values[2] == pytest.approx((1.99 + 1.995 + 1.986) / 3)
    assert values[3:] == [2.4, 2.4]  # the crash stands at the worst


def test_ideas_in_flight_are_running_trials_and_unknown_knobs_are_ignored():
    ledger = [{**row(0, "baseline", 0.5, kept=True), "role": "baseline", "metric": "acc"}]
    in_flight = [{"description": "LR: 0.04 -> 0.08, GONE: 1 -> 2", "worker": "w1"}, {"description": "a new idea"}]
    study = rebuild(ledger, {"LR": 0.04}, "maximize", in_flight=in_flight)
    assert [(t.params, t.running) for t in study.trials] == [({"LR": 0.04}, False), ({"LR": 0.08}, True)]
