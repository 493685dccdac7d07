"""The step search (`sampler: steps`): sensible steps, directions learned from the ledger."""

from engine.agents import offline, steps
from engine.agents.base import ProposalRequest
from test_knobs import SOURCE  # the same small train.py the knob tests read


def request(tmp_path, ledger, experiment=None, source=SOURCE):
    (tmp_path / "train.py").write_text(source)
    return ProposalRequest(repo_root=tmp_path, editable=["train.py"], program_text="", ledger=ledger,
                           experiment=len(ledger) if experiment is None else experiment, run_dir=tmp_path,
                           hardware="cpu", budget="time 1 s")


def test_steps():
    assert steps.step(0.04, 1, 0, None, "LEARNING_RATE") == 0.08
    assert steps.step(0.95, 1, 0, None, "BETA") == 0.975  # towards 1, never past it
    assert steps.step(0.95, -1, 0, None, "BETA") == 0.9
    assert steps.step(4, -1, 1, None, "DEPTH") == 3
    assert steps.step(256, 1, 1, None, "MODEL_DIM") == 384  # stays on multiples of 128
    assert steps.step(0.0, 1, 0, None, "WARMUP") == 0.05  # a fraction may start from zero
    assert steps.step(0.0, 1, 0, None, "WEIGHT_DECAY") is None
    assert steps.step(0.04, 1, 0, (0.0, 0.05), "LEARNING_RATE") is None  # bounds hold
    assert steps.step(128, -1, 0, (128, 1024), "CPU_SIZE.model_dim") is None  # a table entry's too


def test_prefers_a_direction_that_helped(tmp_path):
    ledger = [{"experiment": 0, "role": "baseline", "kept": True, "status": "keep", "val_bpb": 2.0},
              {"experiment": 1, "description": "DEPTH: 4 -> 5", "kept": False, "status": "discard",
               "val_bpb": 2.2, "best_before": 2.0},
              {"experiment": 2, "description": "LEARNING_RATE: 0.02 -> 0.04", "kept": True, "status": "keep",
               "val_bpb": 1.8, "best_before": 2.0}]
    proposal = offline.OfflineAgent(seed=0, sampler="steps").propose(request(tmp_path, ledger, experiment=5))
    assert proposal.description == "LEARNING_RATE: 0.04 -> 0.08"
    assert "helped" in proposal.hypothesis


def test_combines_two_near_winners(tmp_path):
    base = {"kept": False, "status": "discard", "best_before": 2.0}
    ledger = [{"experiment": 0, "role": "baseline", "kept": True, "status": "keep", "val_bpb": 2.0},
              {**base, "experiment": 1, "description": "DEPTH: 4 -> 3", "val_bpb": 1.99},
              {**base, "experiment": 2, "description": "BETA: 0.95 -> 0.9", "val_bpb": 1.995}]
    proposal = offline.OfflineAgent(seed=0, sampler="steps").propose(request(tmp_path, ledger, experiment=3))
    assert proposal.description.startswith("combine ")
    assert "DEPTH: 4 -> 3" in proposal.description and "BETA: 0.95 -> 0.9" in proposal.description
    assert "DEPTH = 3" in (tmp_path / "train.py").read_text()


def test_few_steps_in_the_budget_shrinks_the_step_first(tmp_path):
    ledger = [{"experiment": 0, "role": "baseline", "kept": True, "status": "keep", "val_bpb": 3.0,
               "num_steps": 2, "platform": "cpu"}]
    proposal = offline.OfflineAgent(seed=0, sampler="steps").propose(request(tmp_path, ledger, experiment=1))
    assert proposal.description in ("DEPTH: 4 -> 2", "SIZE.rows: 16 -> 8")
