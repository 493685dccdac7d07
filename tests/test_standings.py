"""The one definition of a row's figure, gains and the best, for both directions."""
from engine.loop import standings


def test_a_rows_figure_is_its_metric():
    assert standings.row_value({"val_bpb": 1.5}) == 1.5
    assert standings.row_value({"metric": "p95_ms", "p95_ms": 12.0, "val_bpb": 9.0}) == 12.0
    assert standings.row_value({"metric": "accuracy"}) is None
    assert standings.metric_name([{"status": "rejected"}, {"metric": "recall@1"}]) == "recall@1"


def test_gain_is_positive_when_better_in_either_direction():
    assert standings.gain(1.0, 0.9) > 0 and standings.gain(1.0, 1.1) < 0
    assert standings.gain(0.8, 0.9, "maximize") > 0 and standings.gain(0.8, 0.7, "maximize") < 0
    assert standings.direction_of([{"direction": "maximize"}, {}]) == "maximize"
    assert standings.direction_of([]) == "minimize"
