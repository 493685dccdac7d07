"""Run-to-run noise and the sequential test every keep must pass. No JAX; scipy for t quantiles.

The noise is pooled over every commit the loop has run more than once (the baseline's runs,
a candidate's re-runs, a kept change's confirmation runs): variance = the sum over those
commits of the squared deviations from each commit's own mean, over its degrees of freedom
sum(n_i - 1). It assumes one noise level for all commits, and it gets better through the night.

The test (`sequential_test`) compares the mean of a candidate's runs so far (k of at most
max_runs) with the mean of the best's runs (m runs that did not select it) in the task's
direction: gain = best - candidate for a metric to minimize. At look k the candidate is

- kept when gain > t(1 - alpha_k, df) * sigma * sqrt(1/k + 1/m);
- run again when it is not kept, gain > 0 (promising) and k < max_runs;
- discarded otherwise.

alpha = 1 - confidence is spent over the looks (`look_alpha`): half of it shared evenly by
looks 1..max_runs-1, half at the last look. The looks' levels sum to alpha, so by the union
bound the chance of keeping a change that does nothing is at most alpha however the looks
correlate; stopping for futility only lowers it. With pooled variance 0 (a deterministic score
run twice) the bound is 0 and any real gain is kept at its first look.

`paired_test` is the same test on the differences of interleaved pairs (best run, candidate
run), whose own pooled variance cancels a machine's drift.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterable

from scipy import stats

DEFAULT_CONFIDENCE = 0.95


@dataclasses.dataclass(frozen=True)
class Noise:
    """A pooled variance estimate: `variance` in the metric's units squared, `df` its degrees of freedom."""
    variance: float = 0.0
    df: int = 0

    @property
    def sigma(self) -> float:
        """One run's standard deviation (0.0 while unknown, df 0)."""
        return math.sqrt(self.variance) if self.df > 0 else 0.0

    @property
    def known(self) -> bool:
        return self.df > 0

    def describe(self) -> str:
        if not self.known:
            return "unknown (no commit run twice yet)"
        return f"sigma {self.sigma:.6g} ({self.df} degrees of freedom)"


@dataclasses.dataclass(frozen=True)
class Test:
    """One look of the sequential test.

    action: keep, rerun or discard. gain: mean gain of the candidate over the best (positive is
    better, metric units); bound: the gain this look needed; low/high: the two-sided confidence
    interval of the gain at the test's confidence (None while the noise is unknown); runs: the
    candidate's runs so far (k); best_runs: the runs behind the best's value (m, or pairs).
    """
    action: str
    gain: float
    bound: float
    low: float | None
    high: float | None
    runs: int
    best_runs: int
    noise: Noise

    def describe(self, max_runs: int) -> str:
        """The verdict in words, positive gain always better: e.g. "gain +0.0087 (needs +0.0123 at
        this look; run 1 of 6): promising, run again"."""
        if math.isinf(self.bound):
            needs = "the noise is not known yet"
        elif self.bound == 0:
            needs = "needs more than 0: no noise"
        else:
            needs = f"needs {signed(self.bound)} at this look"
        figures = f"gain {signed(self.gain)} ({needs}; run {self.runs} of {max_runs})"
        if self.action == "keep":
            return f"{figures}: kept"
        if self.action == "rerun":
            return f"{figures}: promising, run again"
        if self.gain <= 0:
            return f"{figures}: no better than the best, discarded"
        return f"{figures}: not significant, discarded"


def signed(value: float) -> str:
    """A gain with its sign and four significant digits: +0.0087, -0.08738, +12.5."""
    return f"{value:+.4g}"


def pooled(groups: Iterable[list[float]]) -> Noise:
    """Pooled within-group variance of the groups (each a list of one commit's run values)."""
    squares, df = 0.0, 0
    for values in groups:
        if len(values) < 2:
            continue
        mean = sum(values) / len(values)
        squares += sum((v - mean) ** 2 for v in values)
        df += len(values) - 1
    return Noise(squares / df if df else 0.0, df)


@functools.lru_cache(maxsize=4096)
def t_quantile(q: float, df: int) -> float:
    """Student's t quantile; infinite with no degrees of freedom (nothing is known of the noise)."""
    return float(stats.t.ppf(q, df)) if df > 0 else math.inf


def look_alpha(alpha: float, look: int, max_runs: int) -> float:
    """The false-keep level spent at look `look` (1-based): alpha/2 over the early looks, alpha/2 at the last."""
    if max_runs <= 1:
        return alpha
    if look >= max_runs:
        return alpha / 2
    return alpha / (2 * (max_runs - 1))


def sequential_test(candidate: list[float], best: list[float], noise: Noise, max_runs: int,
                    confidence: float = DEFAULT_CONFIDENCE, direction: str = "minimize") -> Test:
    """One look at a candidate: its k runs so far against the best's m runs.

    `noise` must already hold the candidate's own runs (pool them with everything else).
    Raises ValueError with no candidate or no best runs.
    """
    if not candidate or not best:
        raise ValueError("the test needs at least one run of the candidate and of the best")
    k, m = len(candidate), len(best)
    gain = _gain(sum(best) / m, sum(candidate) / k, direction)
    return _look(gain, math.sqrt(1 / k + 1 / m), k, m, noise, max_runs, confidence)


def paired_test(differences: list[float], noise: Noise, max_runs: int,
                confidence: float = DEFAULT_CONFIDENCE) -> Test:
    """One look at a paired candidate: `differences` are the gains of each candidate run over the
    best run beside it (positive is better); `noise` is the variance of one such difference."""
    if not differences:
        raise ValueError("the paired test needs at least one pair")
    k = len(differences)
    return _look(sum(differences) / k, math.sqrt(1 / k), k, k, noise, max_runs, confidence)


def _look(gain: float, scale: float, k: int, m: int, noise: Noise, max_runs: int, confidence: float) -> Test:
    alpha = 1 - confidence
    se = noise.sigma * scale
    bound = t_quantile(1 - look_alpha(alpha, k, max_runs), noise.df) * se if noise.known else math.inf
    if noise.known and se == 0:
        bound = 0.0  # a deterministic score: any real gain is real
    half = t_quantile(1 - alpha / 2, noise.df) * se if noise.known else None
    low, high = (None, None) if half is None else (gain - half, gain + half)
    if gain > bound and gain > 0:
        action = "keep"
    elif gain > 0 and k < max_runs:
        action = "rerun"
    else:
        action = "discard"
    return Test(action, gain, bound, low, high, k, m, noise)


def _gain(best: float, value: float, direction: str) -> float:
    return value - best if direction == "maximize" else best - value
