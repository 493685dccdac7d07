"""The offline agent: Optuna tunes the numbers of the editable files, every ledger row a trial.

No network, no model. The knobs are train.py's UPPER_CASE constants and settings tables (for
a command task, the numbers of its YAML, JSON, TOML, SQL and Python files; knobs.py), each
searched within its `## Offline agent bounds` range or a range around its starting value
(search_space.py). Each proposal rebuilds an in-memory study from the ledger (trials.py:
every row a finished trial, every idea another worker is running a trial in flight), asks
the sampler for the next configuration, and writes the knobs that differ from the current
best, described as `NAME: OLD -> NEW, ...`. The same seed and ledger give the same proposal.

Samplers (program.md's `## Offline agent`, `- sampler: tpe|cmaes|steps`):
- `tpe` (default): Optuna's TPE. With more knobs than FULL_SPACE_KNOBS, one proposal moves a
  few of them (GROUP_KNOBS, chosen by the seed, the least tried first) and holds the others at
  the best's values (Optuna's PartialFixedSampler): in 40 trials a 70-knob rule file cannot
  be searched all at once, and a change of a few numbers is one a reader can follow.
- `cmaes`: Optuna's CMA-ES over all knobs, started at the current values; the study is
  replayed trial by trial, so its generations advance as if it had proposed every row.
- `steps`: the step search this agent used before Optuna (steps.py), one knob at a time.
"""
from __future__ import annotations

import random
import warnings

import optuna
from optuna.trial import TrialState, create_trial

from engine.agents import search_space, trials
from engine.agents.base import Proposal, ProposalRequest
from engine.agents.knobs import Workspace, format_value, workspace
from engine.agents.steps import StepSearch

SAMPLERS = ("tpe", "cmaes", "steps")
FULL_SPACE_KNOBS = 8  # up to this many knobs, every proposal may move all of them
GROUP_KNOBS = 3  # with more, a proposal moves this many
MAX_ASKS = 20  # samples drawn before giving up on a configuration not yet tried


class OfflineAgent:
    name = "offline"
    fixes_crashes = False

    def __init__(self, seed: int = 0, bounds: dict[str, tuple[float, float]] | None = None,
                 sampler: str = "tpe", train_file: str = "train.py"):
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}: one of {', '.join(SAMPLERS)}")
        self.seed = seed
        self.bounds = dict(bounds or {})
        self.sampler = sampler
        self.train_file = train_file

    def propose(self, request: ProposalRequest) -> Proposal | None:
        space = workspace(request, self.train_file)
        if not space.knobs:
            return None
        if self.sampler == "steps":
            values, why = StepSearch(self.seed, self.bounds).choose(space, request)
        else:
            values, why = self.tune(space, request)
        if not values:
            return None
        description = space.write(values)
        prefix = "combine " if self.sampler == "steps" and len(values) > 1 else ""
        return Proposal(description=prefix + description, hypothesis=why)

    def tune(self, space: Workspace, request: ProposalRequest) -> tuple[dict, str]:
        """The knobs to change and their new values ({} when every sample was tried), and why."""
        current = {name: knob.value for name, knob in space.knobs.items()}
        history = trials.rebuild(request.ledger, current, request.direction, request.swarm, request.in_flight)
        dims = search_space.dimensions(space.knobs, history.origin, self.bounds)
        if not dims:
            return {}, ""
        rng = random.Random(f"{self.seed}:{request.experiment}")
        free = self._free(dims, history, rng)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.logging.set_verbosity(optuna.logging.WARNING)
            study, tried = self._study(dims, history, current, free, request.direction, rng.randrange(2**31))
            values = _ask_untried(study, dims, current, tried)
        what = ", ".join(sorted(free)) if len(free) < len(dims) else f"all {len(dims)} knobs"
        done = sum(1 for t in history.trials if not t.running)
        return values, f"{self.sampler.upper()} after {done} trials, moving {what}"

    def _free(self, dims: dict, history: trials.Study, rng: random.Random) -> set[str]:
        """The knobs this proposal may move: all of a small space, else a few, least moved first."""
        if self.sampler != "tpe" or len(dims) <= FULL_SPACE_KNOBS:
            return set(dims)
        moved = {name: sum(1 for t in history.trials if t.params.get(name) != history.origin.get(name))
                 for name in dims}
        order = sorted(dims, key=lambda name: (moved[name], rng.random()))
        return set(order[:GROUP_KNOBS])

    def _study(self, dims, history, current, free, direction, seed) -> tuple[optuna.Study, set]:
        distributions = {name: dim.distribution for name, dim in dims.items()}
        fixed = {name: dims[name].clamp(current[name]) for name in dims if name not in free}
        if self.sampler == "cmaes":
            # x0 (deprecated in Optuna 4.9, to go in 6.0; pyproject pins <6) starts the search at
            # the current best; without it CMA-ES starts at the middle of the ranges.
            warnings.simplefilter("ignore", FutureWarning)
            x0 = {name: dims[name].clamp(current[name]) for name in dims}
            base = optuna.samplers.CmaEsSampler(x0=x0, seed=seed, warn_independent_sampling=False)
        else:
            base = optuna.samplers.TPESampler(seed=seed, constant_liar=True)
        study = optuna.create_study(direction=direction, sampler=base)
        tried = set()
        for trial in history.trials:
            params = {name: dims[name].clamp(trial.params[name]) for name in dims}
            tried.add(_key(params))
            if trial.value is None and not trial.running:
                continue  # no row has a figure yet to stand in for this failure: tried, not told
            if self.sampler == "cmaes":
                _replay(study, params, distributions, trial)
            else:
                state = TrialState.RUNNING if trial.running else TrialState.COMPLETE
                study.add_trial(create_trial(state=state, params=params, distributions=distributions,
                                             value=None if trial.running else trial.value))
        if fixed:
            study.sampler = optuna.samplers.PartialFixedSampler(fixed, base)
        return study, tried


def _replay(study: optuna.Study, params: dict, distributions: dict, trial: trials.Trial) -> None:
    """Ask for the row's configuration (the sampler advances as if it had proposed it), then tell."""
    study.enqueue_trial(params)
    asked = study.ask(distributions)
    if not trial.running:
        study.tell(asked, trial.value)


def _ask_untried(study: optuna.Study, dims: dict, current: dict, tried: set) -> dict:
    """The first sample that changes something and was never tried nor is in flight; each refused
    sample stays in flight in the study, so the next ask looks elsewhere."""
    distributions = {name: dim.distribution for name, dim in dims.items()}
    for _ in range(MAX_ASKS):
        asked = study.ask(distributions)
        values = {name: dims[name].written(asked.params[name]) for name in dims}
        changed = {name: value for name, value in values.items() if value != current[name]}
        if changed and _key(values) not in tried:
            return changed
        tried.add(_key(values))
    return {}


def _key(params: dict) -> tuple:
    return tuple(sorted((name, format_value(value)) for name, value in params.items()))
