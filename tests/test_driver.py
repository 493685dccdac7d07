"""The research loop end to end, against a stand-in for `autoresearch train` (see loop_helpers.py)."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from engine import cli
from engine.loop import driver as loop
from engine.loop import outages
from engine.agents.base import Proposal
from loop_helpers import git, ledger_rows, run_cli


class ScriptedAgent:
    """Writes the given constant values into train.py, one proposal per entry."""
    name = "scripted"

    def __init__(self, proposals):
        self.proposals = list(proposals)

    def propose(self, request):
        if not self.proposals:
            return None
        edit = self.proposals.pop(0)
        if callable(edit):
            return edit(request.repo_root)
        path = request.repo_root / "train.py"
        text = path.read_text()
        for name, value in edit.items():
            text = re.sub(rf"^{name} = .*$", f"{name} = {value}", text, flags=re.M)
        path.write_text(text)
        return Proposal(description=", ".join(f"{k}={v}" for k, v in edit.items()))


def use_agent(monkeypatch, agent):
    monkeypatch.setattr(loop, "make_agent", lambda *a, **k: agent)


def test_offline_loop_keeps_gains_and_leaves_a_clean_branch(loop_env):
    assert cli.main(["loop", "--tag", "demo", "--agent", "offline", "--max-experiments", "6"]) == 0
    rows = ledger_rows(loop_env, "demo")
    assert [r["experiment"] for r in rows] == list(range(6))
    assert [r["role"] for r in rows[:2]] == ["baseline", "baseline"] and rows[1]["seed"] == 1
    best = min(r["val_bpb"] for r in rows if r["kept"])
    assert best < rows[0]["val_bpb"] - 0.05  # the offline agent found a real gain
    assert git(loop_env, "rev-parse", "--abbrev-ref", "HEAD") == "autoresearch/demo"
    assert git(loop_env, "rev-parse", "HEAD") == [r for r in rows if r["kept"]][-1]["commit"]
    assert git(loop_env, "status", "--porcelain") == ""
    assert git(loop_env, "ls-files", "runs") == ""
    for row in rows[2:]:
        if row["role"] == "confirm":  # a confirmation run measures the kept commit again
            kept_change = [r for r in rows[:row["experiment"]] if r["kept"] and r["role"] != "confirm"][-1]
            assert row["commit"] == kept_change["commit"]
            continue
        assert row["description"] in git(loop_env, "log", "--format=%B", "-n1", row["commit"])
    tsv = (loop_env / "runs" / "demo" / "results.tsv").read_text().splitlines()
    assert tsv[0] == "commit\tval_bpb\tmemory_gb\tstatus\tdescription" and len(tsv) == 7
    discarded = [r for r in rows if r["status"] == "discard"]
    assert all(not (loop_env / "runs" / "demo" / f"exp-{r['experiment']:04d}" / "checkpoint").exists()
               for r in discarded)


def test_gain_within_noise_is_rerun_while_promising_then_discarded(loop_env, monkeypatch):
    # Baseline: 1.2 (seed 0), 1.201 (seed 1). 0.03995 scores 1.19964 / 1.20064 by seed parity: a mean
    # gain of 0.00036 on a noise of 0.0007 is no evidence, however often it runs.
    use_agent(monkeypatch, ScriptedAgent([{"LEARNING_RATE": 0.03995}, {"LEARNING_RATE": 0.0399}]))
    assert cli.main(["loop", "--tag", "noise", "--max-experiments", "7"]) == 0
    rows = ledger_rows(loop_env, "noise")
    assert rows[2]["needs_rerun"] and rows[2]["status"] == "discard" and "run again" in rows[2]["decision"]
    assert rows[3]["role"] == "rerun" and rows[3]["rerun_of"] == 2 and rows[3]["seed"] == 1
    assert rows[3]["commit"] == rows[2]["commit"]
    series = [r for r in rows if r.get("rerun_of") == 2 or r["experiment"] == 2]
    assert len(series) == 4 and not any(r["kept"] for r in series)  # max_runs 4, never significant
    assert "not significant" in series[-1]["decision"] and series[-1]["noise_df"] >= 4
    assert series[-1]["gain_low"] < 0 < series[-1]["gain_high"]  # the interval holds no gain


def test_rejected_crash_and_fixed_files(loop_env, monkeypatch):
    def touch_prepare(root):
        (root / "prepare.py").write_text("# changed\n")
        (root / "train.py").write_text((root / "train.py").read_text() + "\nZ = 1\n")
        return Proposal(description="edits prepare.py")

    def break_syntax(root):
        (root / "train.py").write_text("def (:\n")
        return Proposal(description="does not parse")

    use_agent(monkeypatch, ScriptedAgent([touch_prepare, break_syntax, {"CRASH": 1}, {"LEARNING_RATE": 0.02}]))
    assert cli.main(["loop", "--tag", "guards", "--max-experiments", "6"]) == 0
    rows = ledger_rows(loop_env, "guards")
    assert [r["status"] for r in rows] == ["baseline", "baseline", "rejected", "rejected", "crash", "keep"]
    assert "prepare.py" in rows[2]["decision"] and rows[2]["commit"] is None
    assert "does not parse" in rows[3]["decision"]
    assert "exit status" in rows[4]["error"] and rows[4]["log"].endswith("train.log")
    assert (loop_env / "prepare.py").read_text() == "# fixed\n"
    assert git(loop_env, "status", "--porcelain") == ""

    def poison_data(root):
        manifest = Path(os.environ["AUTORESEARCH_CACHE"]) / "fake-v512-00000000" / "manifest.json"
        manifest.write_text("{}")
        (root / "train.py").write_text((root / "train.py").read_text().replace("DEPTH = 3", "DEPTH = 2"))
        return Proposal(description="and edits the data")

    use_agent(monkeypatch, ScriptedAgent([poison_data]))
    assert cli.main(["loop", "--tag", "guards", "--max-experiments", "9"]) == 2
    assert len(ledger_rows(loop_env, "guards")) == 6


def test_stopping_criteria(loop_env, monkeypatch):
    use_agent(monkeypatch, ScriptedAgent([{"DEPTH": 5}, {"DEPTH": 6}, {"DEPTH": 7}, {"DEPTH": 8}]))
    (loop_env / "program.md").write_text((loop_env / "program.md").read_text()
                                          + "\n## Stopping criteria\n- patience: 2\n")
    git(loop_env, "commit", "-qam", "patience")
    assert cli.main(["loop", "--tag", "patient"]) == 0
    assert len(ledger_rows(loop_env, "patient")) == 4
    use_agent(monkeypatch, ScriptedAgent([]))
    assert cli.main(["loop", "--tag", "empty"]) == 0  # an agent with nothing to try ends the loop
    assert len(ledger_rows(loop_env, "empty")) == 2


class FlakyServiceAgent(ScriptedAgent):
    """Its service is down for the first few calls, then it proposes."""

    def __init__(self, outages, proposals):
        super().__init__(proposals)
        self.outages = outages
        self.last_outcome = ""

    def propose(self, request):
        if self.outages:
            self.outages -= 1
            self.last_outcome = "unavailable"
            return None
        self.last_outcome = "proposed"
        return super().propose(request)


def test_an_agent_outage_is_waited_out_not_counted_as_empty(loop_env, monkeypatch, capsys):
    waits = []
    monkeypatch.setattr(outages, "sleep", waits.append)
    use_agent(monkeypatch, FlakyServiceAgent(outages=loop.MAX_EMPTY_PROPOSALS + 2,
                                             proposals=[{"LEARNING_RATE": 0.02}]))
    assert cli.main(["loop", "--tag", "outage", "--max-experiments", "3"]) == 0
    rows = ledger_rows(loop_env, "outage")
    assert len(rows) == 3 and rows[-1]["description"] == "LEARNING_RATE=0.02"
    assert len(waits) == loop.MAX_EMPTY_PROPOSALS + 2
    assert waits == sorted(waits) and waits[-1] <= outages.MAX_WAIT_SECONDS
    # the closing line compares the best with the baseline's mean over its two seeds
    assert "baseline 1.200500 -> best 1.050000" in capsys.readouterr().out


def test_experiment_command_for_an_external_agent(loop_env):
    train = loop_env / "train.py"
    train.write_text(train.read_text().replace("LEARNING_RATE = 0.04", "LEARNING_RATE = 0.02"))
    done = run_cli(loop_env, "experiment", "halve the learning rate", "--tag", "ext")
    assert done.returncode == 0, done.stderr
    assert "experiment 2: keep" in done.stdout
    rows = ledger_rows(loop_env, "ext")
    assert [r["status"] for r in rows] == ["baseline", "baseline", "keep"] and rows[0]["val_bpb"] == 1.2
    assert "LEARNING_RATE = 0.02" in git(loop_env, "show", "HEAD:train.py")
    train.write_text(train.read_text().replace("DEPTH = 3", "DEPTH = 1"))
    done = run_cli(loop_env, "experiment", "shallower", "--tag", "ext")
    assert "experiment 3: discard" in done.stdout and git(loop_env, "status", "--porcelain") == ""
    assert "nothing changed" in run_cli(loop_env, "experiment", "again", "--tag", "ext").stderr
    train.write_text(train.read_text().replace("CRASH = 0", "CRASH = 1"))
    done = run_cli(loop_env, "experiment", "crash", "--tag", "ext")
    assert done.returncode == 1 and "experiment 4: crash" in done.stdout
    assert "CRASH = 1" in train.read_text()  # left in the tree for the agent to fix
    assert "CRASH = 0" in git(loop_env, "show", "HEAD:train.py")


def test_untracked_files_outside_editable_paths_never_stop_the_loop(loop_env, monkeypatch):
    """A .venv made in the repo (scripts/gpu_setup.sh does) once stopped the loop: "uncommitted changes"."""
    venv = loop_env / ".venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "Activate.ps1").write_text("# venv\n")
    (loop_env / "scratch.txt").write_text("a note of mine\n")
    use_agent(monkeypatch, ScriptedAgent([{"LEARNING_RATE": 0.02}, {"DEPTH": 1}]))
    assert cli.main(["loop", "--tag", "venv", "--max-experiments", "4"]) == 0
    assert [r["status"] for r in ledger_rows(loop_env, "venv")] == ["baseline", "baseline", "keep", "discard"]
    assert (venv / "Activate.ps1").read_text() == "# venv\n" and (loop_env / "scratch.txt").exists()
    train = loop_env / "train.py"
    train.write_text(train.read_text().replace("LEARNING_RATE = 0.02", "LEARNING_RATE = 0.03"))
    done = run_cli(loop_env, "experiment", "a bit more", "--tag", "venv")
    assert done.returncode == 0, done.stderr
    assert (venv / "Activate.ps1").exists() and git(loop_env, "stash", "list") == ""


def test_loop_never_imports_jax(loop_env):
    code = ("import sys; from engine import cli; rc = cli.main(['loop', '--tag', 'nojax', '--agent', 'offline', "
            "'--max-experiments', '3']); assert rc == 0, rc; "
            "import engine.loop.runner, engine.loop.ledger, engine.loop.guards, engine.loop.protocol, engine.loop.repo, engine.loop.lock, "
            "engine.loop.live_view, engine.agents.choose, engine.agents.offline, engine.loop.cycle, engine.loop.driver; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'jaxlib', 'flax', 'optax', 'orbax')); "
            "print('IMPORTED', bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], cwd=loop_env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


class FixingAgent(ScriptedAgent):
    """Crashes once, then fixes the crash when shown the log."""
    fixes_crashes = True

    def __init__(self):
        super().__init__([{"CRASH": 1, "LEARNING_RATE": 0.02}])
        self.tails = []

    def propose(self, request):
        if request.crash_log_tail is None:
            return super().propose(request)
        self.tails.append(request.crash_log_tail)
        path = request.repo_root / "train.py"
        assert "CRASH = 1" in path.read_text()  # the crashed idea is back in the tree
        path.write_text(path.read_text().replace("CRASH = 1", "CRASH = 0"))
        return Proposal(description="fix: CRASH=0")


def test_crash_fix_ups_are_their_own_rows(loop_env, monkeypatch):
    agent = FixingAgent()
    use_agent(monkeypatch, agent)
    assert cli.main(["loop", "--tag", "fix", "--max-experiments", "4"]) == 0
    rows = ledger_rows(loop_env, "fix")
    assert [r["status"] for r in rows] == ["baseline", "baseline", "crash", "keep"]
    assert rows[3]["role"] == "fix" and rows[3]["fix_of"] == 2 and rows[3]["fix_attempt"] == 1
    assert "crashed on purpose" in agent.tails[0]
    assert "LEARNING_RATE = 0.02" in git(loop_env, "show", "HEAD:train.py")


def test_make_agent_picks_by_environment(monkeypatch):
    from argparse import Namespace
    from engine.agents import choose as agents
    from engine.errors import UserError
    for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI"):
        monkeypatch.delenv(name, raising=False)
    args = Namespace(seed=0, model=None, agent_cmd=None)
    assert agents.make_agent(None, args).name == "offline"
    with pytest.raises(UserError, match="GEMINI_API_KEY"):
        agents.make_agent("gemini", args)
    with pytest.raises(UserError, match="--agent-cmd"):
        agents.make_agent("command", args)
    monkeypatch.setenv("GEMINI_API_KEY", "k")
    assert agents.default_agent() == "gemini"
    assert agents.make_agent("command", Namespace(seed=0, model=None, agent_cmd="true")).name == "command"


def test_a_kept_change_is_confirmed_and_its_confirmations_set_the_bar(loop_env, monkeypatch):
    # 0.02 scores 1.05/1.051 by seed parity; its lucky first run does not set the best's value.
    use_agent(monkeypatch, ScriptedAgent([{"LEARNING_RATE": 0.02}, {"LEARNING_RATE": 0.0199}]))
    program = (loop_env / "program.md").read_text().replace("- confirm_runs: 0", "- confirm_runs: 2")
    (loop_env / "program.md").write_text(program)
    git(loop_env, "commit", "-qam", "confirm twice")
    assert cli.main(["loop", "--tag", "honest", "--max-experiments", "6"]) == 0
    rows = ledger_rows(loop_env, "honest")
    assert [r["role"] for r in rows[2:5]] == ["candidate", "confirm", "confirm"]
    assert rows[2]["kept"] and rows[2]["gain_low"] > 0  # the kept change's interval excludes no gain
    confirmations = [r["val_bpb"] for r in rows[3:5]]
    assert {r["seed"] for r in rows[3:5]}.isdisjoint({rows[2]["seed"]})  # fresh seeds
    assert rows[4]["best_after"] == pytest.approx(sum(confirmations) / 2)
    assert rows[5]["best_before"] == pytest.approx(sum(confirmations) / 2) and rows[5]["best_runs"] == 2
    assert git(loop_env, "rev-parse", "HEAD") == rows[2]["commit"]


def test_resumed_loop_runs_the_confirmations_a_kill_cut_short(loop_env, monkeypatch):
    use_agent(monkeypatch, ScriptedAgent([{"LEARNING_RATE": 0.02}]))
    program = (loop_env / "program.md").read_text().replace("- confirm_runs: 0", "- confirm_runs: 2")
    (loop_env / "program.md").write_text(program)
    git(loop_env, "commit", "-qam", "confirm twice")
    assert cli.main(["loop", "--tag", "cut", "--max-experiments", "4"]) == 0  # the keep, then one confirmation
    assert [r["role"] for r in ledger_rows(loop_env, "cut")][2:] == ["candidate", "confirm"]
    use_agent(monkeypatch, ScriptedAgent([]))
    assert cli.main(["loop", "--tag", "cut", "--max-experiments", "5"]) == 0
    assert [r["role"] for r in ledger_rows(loop_env, "cut")][2:] == ["candidate", "confirm", "confirm"]
