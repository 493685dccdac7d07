"""The search space of the offline agent: one Optuna distribution per knob.

A knob's range is its `## Offline agent bounds` line where program.md has one, else a range
around the value it had when the study began (its origin):
- a positive integer: origin / 4 .. origin * 4 on a log scale (depths, widths, batch sizes);
  in Python files a power of two that is not a count (a width, heads, a batch) stays a power
  of two (settings of YAML, JSON, TOML and SQL files do not divide each other), and other
  values from 64 up stay on the multiples of the power of two they are built from (at most
  128), so widths remain divisible by heads and tiles, batches by devices;
- a fraction (WARMUP, DROPOUT, ...RATIO, ...FRACTION) or a zero of one: 0 .. 1;
- a momentum-like value in [0.5, 1) (Adam's betas): linear, never reaching 1;
- any other positive float: origin / 8 .. origin * 8 on a log scale (rates, weights, scales),
  below 1 only up to 1 unless it is a learning rate.
Bounds a user gives are honoured exactly; a bounded range is on a log scale when it spans a
factor of 10 or more above zero, or names a rate or a size; a bounded integer keeps to its
powers of two or multiples too. A zero, a negative number or a
boolean-like 0/1 integer without bounds is not searched (no sane range follows from it).
"""
from __future__ import annotations

import dataclasses
import math
import re

from optuna.distributions import FloatDistribution, IntDistribution

from engine.agents.knobs import Knob

RANGE_FACTOR = 8.0  # three doublings either way for floats
INT_RANGE_FACTOR = 4  # two doublings either way for integers
LOG_SPAN = 10.0  # a bounded range spanning this factor or more is searched on a log scale
RATE = re.compile(r"LEARNING_RATE|(^|_)LR$|(^|_)RATE$")
SIZE = re.compile(r"DEPTH|LAYER|DIM|WIDTH|HIDDEN|ROWS|BATCH|SEQ_LEN|SIZE|WORDS|TOP_K|STEPS|HEADS")
FRACTION = re.compile(r"WARMUP|WARMDOWN|COOLDOWN|FRACTION|RATIO|DROPOUT")
# Counts that divide nothing: any integer will do (a depth of 3 is as good a depth as 4).
COUNT = re.compile(r"DEPTH|LAYER|STEPS|BLOCKS|ITER|EPOCH")


@dataclasses.dataclass(frozen=True)
class Dimension:
    """One knob's distribution; integers stay on multiples of `unit`, or on powers of two."""
    name: str
    distribution: FloatDistribution | IntDistribution
    unit: int = 1
    powers_of_two: bool = False

    def clamp(self, value: float) -> int | float:
        """The value inside the range (and on the unit), as the study records it."""
        low, high = self.distribution.low, self.distribution.high
        if self.powers_of_two:
            return int(min(max(2 ** round(math.log2(max(value, 1))), low), high))
        if isinstance(self.distribution, IntDistribution):
            value = int(round(value / self.unit)) * self.unit
            while value < low:
                value += self.unit
            while value > high:
                value -= self.unit
            return int(min(max(value, low), high))
        return float(min(max(value, low), high))

    def written(self, value: float) -> int | float:
        """The value as the file will hold it: clamped, and for floats at 4 significant digits."""
        value = self.clamp(value)
        if isinstance(value, float):
            value = self.clamp(float(f"{value:.4g}"))
        return value


def dimensions(knobs: dict[str, Knob], origin: dict[str, float],
               bounds: dict[str, tuple[float, float]]) -> dict[str, Dimension]:
    """The searched knobs and their ranges; origin holds each knob's value when the study began."""
    found = {}
    for name, knob in knobs.items():
        start = origin.get(name, knob.value)
        sizes = knob.is_int and knob.file.endswith(".py") and _power_of_two(name, int(start))
        dimension = _dimension(name, knob.is_int, start, bounds.get(name), sizes)
        if dimension is not None:
            found[name] = dimension
    return found


def _key(name: str) -> str:
    return name.upper().replace(".", "_").replace("/", "_").replace("-", "_")


def _dimension(name: str, is_int: bool, start: float, bound: tuple[float, float] | None,
               powers_of_two: bool) -> Dimension | None:
    key = _key(name)
    if bound is not None:
        return _bounded(name, is_int, start, bound, bool(RATE.search(key) or SIZE.search(key)), powers_of_two)
    if is_int:
        return _integer(name, int(start), powers_of_two)
    return _float(name, float(start), rate=bool(RATE.search(key)), fraction=bool(FRACTION.search(key)))


def _bounded(name: str, is_int: bool, start: float, bound: tuple[float, float], log_name: bool,
             powers_of_two: bool) -> Dimension | None:
    low, high = bound
    log = low > 0 and (high / low >= LOG_SPAN or log_name)
    if powers_of_two and high >= 1:
        low_p, high_p = 2 ** math.ceil(math.log2(max(low, 1))), 2 ** math.floor(math.log2(high))
        return Dimension(name, IntDistribution(low_p, high_p, log=True), powers_of_two=True) if low_p < high_p else None
    if is_int:
        unit = _unit(int(start))
        low_i, high_i = math.ceil(low / unit) * unit, math.floor(high / unit) * unit
        if low_i >= high_i:
            return None
        return Dimension(name, IntDistribution(low_i, high_i, log=log and low_i >= 1), unit)
    return Dimension(name, FloatDistribution(float(low), float(high), log=log))


def _unit(start: int) -> int:
    """From 64 up, widths stay on the multiples of the power of two they are built from (at most 128)."""
    return min(128, start & -start) if start >= 64 else 1


def _power_of_two(name: str, start: int) -> bool:
    """A power of two that is not a count (widths, heads, batch sizes of train.py): it stays one,
    so such sizes keep dividing each other (a width by its heads, a batch by the devices)."""
    return start >= 2 and start & (start - 1) == 0 and not COUNT.search(_key(name))


def _integer(name: str, start: int, powers_of_two: bool) -> Dimension | None:
    if start < 2:  # 0 and 1 are usually switches or counts whose range says nothing
        return None
    if powers_of_two:
        return Dimension(name, IntDistribution(max(1, start // INT_RANGE_FACTOR), start * INT_RANGE_FACTOR, log=True),
                         powers_of_two=True)
    unit = _unit(start)
    low = max(1, start // INT_RANGE_FACTOR)
    high = start * INT_RANGE_FACTOR
    if unit > 1:
        low = max(unit, low // unit * unit)
    return Dimension(name, IntDistribution(low, high, log=True), unit)


def _float(name: str, start: float, rate: bool, fraction: bool) -> Dimension | None:
    if fraction and 0.0 <= start <= 1.0:
        return Dimension(name, FloatDistribution(0.0, 1.0))
    if start <= 0.0:
        return None
    if 0.5 <= start < 1.0 and not rate:  # momentum-like: step the distance to 1
        gap = 1.0 - start
        return Dimension(name, FloatDistribution(max(start / 2, 1.0 - gap * 4), 1.0 - gap / 4))
    high = start * RANGE_FACTOR
    if start < 1.0 and not rate:
        high = min(high, 1.0)
    return Dimension(name, FloatDistribution(start / RANGE_FACTOR, high, log=True))
