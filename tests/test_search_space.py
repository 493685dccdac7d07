"""Ranges of the offline agent's knobs: bounds honoured, log scales for rates and sizes."""
import pytest

from engine.agents.knobs import Knob
from engine.agents.search_space import dimensions


def knob(name, value):
    return Knob(name, value, (1, 0), (1, 1))


def test_ranges_around_the_starting_value_and_from_bounds():
    knobs = {k.name: k for k in [knob("LEARNING_RATE", 0.04), knob("DEPTH", 4), knob("MODEL_DIM", 384),
                                 knob("BETA", 0.95), knob("WARMUP", 0.0), knob("WEIGHT_DECAY", 0.1),
                                 knob("SEED_LIKE", 0), knob("FLAG", 1), knob("SHIFT", -1.0),
                                 knob("chunk_words", 40), knob("b", 0.3)]}
    bounds = {"chunk_words": (20, 300), "b": (0.0, 1.0)}
    dims = dimensions(knobs, {"LEARNING_RATE": 0.01}, bounds)
    assert set(dims) == {"LEARNING_RATE", "DEPTH", "MODEL_DIM", "BETA", "WARMUP", "WEIGHT_DECAY", "chunk_words", "b"}
    lr = dims["LEARNING_RATE"].distribution  # around the origin 0.01, not the current 0.04
    assert (lr.low, lr.high, lr.log) == (0.01 / 8, 0.01 * 8, True)
    depth = dims["DEPTH"].distribution
    assert (depth.low, depth.high, depth.log) == (1, 16, True)
    assert dims["DEPTH"].written(3.4) == 3  # a count takes any integer
    assert dims["MODEL_DIM"].unit == 128 and dims["MODEL_DIM"].written(500) == 512
    beta = dims["BETA"].distribution
    assert beta.low == pytest.approx(0.8) and 0.98 < beta.high < 1.0 and not beta.log
    assert (dims["WARMUP"].distribution.low, dims["WARMUP"].distribution.high) == (0.0, 1.0)
    assert dims["WEIGHT_DECAY"].distribution.high == 0.8
    bounded_width = dimensions({"CPU_SIZE.model_dim": knob("CPU_SIZE.model_dim", 384)}, {},
                               {"CPU_SIZE.model_dim": (100, 1000)})["CPU_SIZE.model_dim"]
    assert (bounded_width.distribution.low, bounded_width.distribution.high, bounded_width.unit) == (128, 896, 128)
    assert bounded_width.written(333) == 384  # a width stays divisible by the heads, bounds or not
    sizes = dimensions({"WIDTH": knob("WIDTH", 32), "HEADS": knob("HEADS", 2), "DIM": knob("DIM", 256)}, {},
                       {"DIM": (100, 1000)})
    assert [sizes["WIDTH"].written(v) for v in (7, 11, 22, 50, 1000)] == [8, 8, 16, 64, 128]
    assert sizes["HEADS"].written(3.1) == 4 and sizes["DIM"].written(700) == 512
    assert (sizes["DIM"].distribution.low, sizes["DIM"].distribution.high) == (128, 512)
    words = dims["chunk_words"].distribution
    assert (words.low, words.high, words.log) == (20, 300, True)  # spans more than a factor of 10
    assert (dims["b"].distribution.low, dims["b"].distribution.high, dims["b"].distribution.log) == (0.0, 1.0, False)


def test_written_values_stay_inside_and_round_to_four_digits():
    dims = dimensions({"LR": knob("LR", 0.01), "N": knob("N", 12)}, {}, {"LR": (0.001, 0.02), "N": (8, 24)})
    assert dims["LR"].written(0.0123456) == 0.01235
    assert dims["LR"].written(0.5) == 0.02 and dims["N"].written(40) == 24 and dims["N"].written(3.4) == 8


def test_settings_of_data_files_take_any_integer():
    overlap = Knob("chunking.overlap_words", 4, (1, 0), (1, 1), file="retrieval.toml")
    dim = dimensions({overlap.name: overlap}, {}, {overlap.name: (0, 200)})[overlap.name]
    assert (dim.distribution.low, dim.distribution.high) == (0, 200) and dim.written(3.2) == 3
