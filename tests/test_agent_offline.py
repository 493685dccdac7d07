"""The offline agent on Optuna: a synthetic objective with a known optimum, driven like the loop
drives it (propose, score, keep or put the best back, a ledger row per trial)."""
import math
import statistics

import pytest

from engine.agents import offline
from engine.agents.base import ProposalRequest
from engine.agents.knobs import find_knobs, parse_changes

# The best learning rate grows with the square root of the batch (as in real training), the
# batch itself matters little, weight decay and dropout each have their own optimum.
SOURCE = "LEARNING_RATE = 0.002  # peak\nBATCH_SIZE = 16\nWEIGHT_DECAY = 0.1\nDROPOUT = 0.3\nSEED = 3\n"
OPTIMUM = {"LEARNING_RATE": 0.01 * 2.0, "BATCH_SIZE": 128, "WEIGHT_DECAY": 0.02, "DROPOUT": 0.05}


def distance(text: str) -> float:
    """Squared distance from the optimum, in doublings (0 at the optimum)."""
    v = {k.name: k.value for k in find_knobs(text)}
    lr, batch, wd, dropout = v["LEARNING_RATE"], v["BATCH_SIZE"], v["WEIGHT_DECAY"], v["DROPOUT"]
    return ((math.log2(lr / 0.01) - 0.5 * math.log2(batch / 32)) ** 2 + 0.1 * math.log2(batch / 128) ** 2
            + math.log2(wd / 0.02) ** 2 + 4 * (dropout - 0.05) ** 2)


def test_the_objective_is_zero_at_its_optimum():
    text = "".join(f"{name} = {value}\n" for name, value in OPTIMUM.items())
    assert distance(text) == pytest.approx(0.0, abs=1e-12)


def request(root, ledger, experiment, **fields) -> ProposalRequest:
    return ProposalRequest(repo_root=root, editable=["train.py"], program_text="", ledger=list(ledger),
                           experiment=experiment, run_dir=root, hardware="cpu", budget="time 1 s", **fields)


def search(root, agent, trials: int, source: str = SOURCE, snapshots: list | None = None) -> tuple[float, list]:
    """The loop's keep rule on the objective: the best distance reached, and the ledger."""
    train = root / "train.py"
    train.write_text(source)
    best_text, best = source, distance(source)
    ledger = [{"experiment": 0, "role": "baseline", "status": "keep", "kept": True, "val_bpb": best,
               "description": "baseline"}]
    for experiment in range(1, trials):
        if snapshots is not None:
            snapshots.append((train.read_text(), list(ledger)))
        proposal = agent.propose(request(root, ledger, experiment))
        if proposal is None:
            break
        value = distance(train.read_text())
        kept = value < best
        ledger.append({"experiment": experiment, "role": "candidate", "status": "keep" if kept else "discard",
                       "kept": kept, "val_bpb": value, "best_before": best, "description": proposal.description})
        if kept:
            best, best_text = value, train.read_text()
        else:
            train.write_text(best_text)
    return best, ledger


def test_tpe_gets_closer_to_the_optimum_than_the_step_search(tmp_path):
    reached = {}
    for sampler in ("tpe", "steps"):
        reached[sampler] = []
        for seed in (0, 1, 2):
            root = tmp_path / f"{sampler}-{seed}"
            root.mkdir()
            best, _ = search(root, offline.OfflineAgent(seed=seed, sampler=sampler), trials=40)
            reached[sampler].append(best)
    start = distance(SOURCE)
    assert statistics.median(reached["tpe"]) < statistics.median(reached["steps"]) < start, reached
    assert statistics.median(reached["tpe"]) < start / 10


@pytest.mark.parametrize("sampler", ["tpe", "cmaes"])
def test_resumed_mid_study_it_proposes_what_it_would_have(tmp_path, sampler):
    """The study lives in the ledger: a fresh agent on a cut ledger and the files at that point
    proposes exactly what the uninterrupted one did."""
    snapshots = []
    _, ledger = search(tmp_path, offline.OfflineAgent(seed=4, sampler=sampler), trials=14, snapshots=snapshots)
    for cut in (3, 9, 12):
        text, rows = snapshots[cut]
        (tmp_path / "train.py").write_text(text)
        fresh = offline.OfflineAgent(seed=4, sampler=sampler).propose(request(tmp_path, rows, cut + 1))
        assert fresh.description == ledger[cut + 1]["description"]


def test_same_seed_and_ledger_same_proposal_another_seed_another(tmp_path):
    _, ledger = search(tmp_path, offline.OfflineAgent(seed=0), trials=6)
    proposals = []
    for seed in (7, 7, 8):
        (tmp_path / "train.py").write_text(SOURCE)
        proposals.append(offline.OfflineAgent(seed=seed).propose(request(tmp_path, ledger, 6)).description)
    assert proposals[0] == proposals[1] != proposals[2]


def test_bounds_hold_for_every_proposal_and_pull_a_value_inside(tmp_path):
    bounds = {"LEARNING_RATE": (0.001, 0.004), "BATCH_SIZE": (8, 24), "DROPOUT": (0.2, 0.5)}
    source = SOURCE.replace("BATCH_SIZE = 16", "BATCH_SIZE = 32")  # starts above its bound
    _, ledger = search(tmp_path, offline.OfflineAgent(seed=1, bounds=bounds), trials=25, source=source)
    proposed = [parse_changes(row["description"]) for row in ledger[1:]]
    assert len(proposed) == 24
    for changes in proposed:
        for name, (_, new) in changes.items():
            if name in bounds:
                assert bounds[name][0] <= new <= bounds[name][1], (name, new)
    assert "BATCH_SIZE" in proposed[0]  # the first proposal already brings 32 into 8 .. 24
    assert {new for c in proposed for n, (_, new) in c.items() if n == "BATCH_SIZE"} <= {8, 16}  # powers of two


def test_never_repeats_a_trial_nor_an_idea_in_flight(tmp_path):
    _, ledger = search(tmp_path, offline.OfflineAgent(seed=2), trials=20)
    configs = []
    best = {}
    for row in ledger[1:]:
        configs.append(frozenset({**best, **{n: new for n, (_, new) in parse_changes(row["description"]).items()}}.items()))
        if row["kept"]:
            best = dict(configs[-1])
    assert len(set(configs)) == len(configs)
    (tmp_path / "train.py").write_text(SOURCE)
    first = offline.OfflineAgent(seed=0).propose(request(tmp_path, ledger[:1], 1))
    (tmp_path / "train.py").write_text(SOURCE)
    running = [{"description": first.description, "hypothesis": "", "worker": "w1"}]
    other = offline.OfflineAgent(seed=0).propose(request(tmp_path, ledger[:1], 1, in_flight=running))
    assert other is not None and other.description != first.description


def test_maximize_direction_and_crashes_are_learned(tmp_path):
    """A maximized score, best at SCALE 4, a crash above 6: the late proposals gather near 4
    (read as a minimization they scatter, many below 1) and rarely crash."""
    late = []
    for seed in (0, 1, 2):
        ledger = [{"experiment": 0, "role": "baseline", "status": "keep", "kept": True, "metric": "score",
                   "direction": "maximize", "score": -4.0, "description": "baseline"}]
        for experiment in range(1, 26):
            (tmp_path / "train.py").write_text("SCALE = 1.0\n")
            proposal = offline.OfflineAgent(seed=seed).propose(
                request(tmp_path, ledger, experiment, metric="score", direction="maximize"))
            scale = parse_changes(proposal.description)["SCALE"][1]
            crashed = scale > 6
            ledger.append({"experiment": experiment, "role": "candidate", "metric": "score",
                           "direction": "maximize", "status": "crash" if crashed else "discard", "kept": False,
                           "score": None if crashed else -math.log2(scale / 4) ** 2,
                           "description": proposal.description})
            if experiment > 15:
                late.append(scale)
    assert all(1 / 8 <= scale <= 8 for scale in late)  # 1.0 / 8 .. 1.0 * 8
    assert statistics.median(abs(math.log2(scale / 4)) for scale in late) < 0.8, late
    assert sum(scale > 6 for scale in late) <= 4, late


def test_no_searchable_knob_means_no_proposal(tmp_path):
    (tmp_path / "train.py").write_text("SEED = 3\nCRASH = 0\nNAME = 'x'\n")
    assert offline.OfflineAgent().propose(request(tmp_path, [], 1)) is None


def test_many_knobs_move_a_few_at_a_time(tmp_path):
    source = "".join(f"W{i} = 1.0\n" for i in range(20))
    (tmp_path / "train.py").write_text(source)
    proposal = offline.OfflineAgent(seed=0).propose(request(tmp_path, [], 1))
    assert 1 <= len(parse_changes(proposal.description)) <= offline.GROUP_KNOBS


def test_unknown_sampler_is_refused():
    with pytest.raises(ValueError, match="tpe, cmaes, steps"):
        offline.OfflineAgent(sampler="grid")


def test_on_the_default_train_py_and_program_md(tmp_path):
    """The user's path: the repository's own train.py and program.md bounds, a CPU ledger."""
    import ast
    from pathlib import Path

    from engine.loop import protocol

    repo = Path(__file__).resolve().parents[1]
    source = (repo / "train.py").read_text()
    bounds = protocol.parse((repo / "program.md").read_text()).bounds
    ledger = [{"experiment": 0, "role": "baseline", "status": "keep", "kept": True, "val_bpb": 3.0,
               "platform": "cpu", "description": "baseline"}]
    for experiment in range(1, 13):
        (tmp_path / "train.py").write_text(source)
        proposal = offline.OfflineAgent(seed=experiment % 3, bounds=bounds).propose(
            request(tmp_path, ledger, experiment))
        ast.parse((tmp_path / "train.py").read_text())
        changes = parse_changes(proposal.description)
        assert 1 <= len(changes) <= offline.GROUP_KNOBS
        for name, (_, new) in changes.items():
            assert not name.startswith(("GPU_", "TPU_")), name  # other platforms' tables are left alone
            low, high = bounds.get(name, (-math.inf, math.inf))
            assert low <= new <= high, (name, new)
            if name.endswith("model_dim"):
                assert new % 128 == 0, (name, new)
        ledger.append({"experiment": experiment, "role": "candidate", "status": "discard", "kept": False,
                       "val_bpb": 3.1, "platform": "cpu", "description": proposal.description})


@pytest.mark.parametrize("sampler", ["tpe", "cmaes"])
def test_a_ledger_with_no_figure_yet_still_gives_an_untried_proposal(tmp_path, sampler):
    (tmp_path / "train.py").write_text("LEARNING_RATE = 0.01\n")
    ledger = [{"experiment": 1, "role": "candidate", "status": "crash", "kept": False, "val_bpb": None,
               "description": "LEARNING_RATE: 0.01 -> 0.02"}]
    proposal = offline.OfflineAgent(sampler=sampler).propose(request(tmp_path, ledger, 2))
    assert proposal.description.startswith("LEARNING_RATE: 0.01 -> ")
    assert proposal.description != "LEARNING_RATE: 0.01 -> 0.02"
