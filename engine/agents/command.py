"""`--agent command`: any external coding agent or script proposes the next experiment.

Before each experiment the loop runs CMD through the shell in the repository
root, on a clean tree at the current best. CMD edits files in place; the last
non-empty line it prints on stdout is the experiment's description. A non-zero
exit or a timeout is an agent failure (last_outcome "unavailable": the loop waits and asks
again, see engine/loop/driver.py); no change at all is no experiment. Either way the
command's whole process group is ended when it returns: nothing it started in the background
can edit the files while the experiment runs.

Its environment is the loop's own (an external agent may need its API key; the
secrets are scrubbed later, from the train.py run) plus:
  AUTORESEARCH_EXPERIMENT  the experiment's number (baseline = 0)
  AUTORESEARCH_PROGRAM     path of program.md
  AUTORESEARCH_RESULTS     path of results.tsv
  AUTORESEARCH_LAST_LOG    the previous run's log, where there is one
  AUTORESEARCH_OTHERS      a JSON file {"in_flight": [...], "swarm": [...]}: the ideas other
                           workers are running now and a swarm's recent results, where there are any
  AUTORESEARCH_METRIC      the metric judged (val_bpb, or a command task's)
  AUTORESEARCH_DIRECTION   minimize or maximize
  AUTORESEARCH_EDITABLE    the editable paths and globs, space-separated
  AUTORESEARCH_TUNER       with --agent command+tune: a text file saying what the tuner found on
                           the numbers of the current best since the command's last kept change
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from engine.files import write_atomic
from engine.agents.base import Proposal, ProposalRequest
from engine.loop.repo import Repo
from engine.processes import die_with_parent, kill_group, record_child

DEFAULT_TIMEOUT_S = 4 * 3600.0  # an agent that thinks for longer than this is stuck
MAX_DESCRIPTION_CHARS = 200
AGENT_RECORD = "agent.json"  # in runs/TAG/: names the agent's process group while it runs
AGENT_KILL_GRACE_S = 1.0


class CommandAgent:
    name = "command"
    fixes_crashes = False

    def __init__(self, cmd: str, program_path: Path | str | None = None,
                 timeout_s: float | None = DEFAULT_TIMEOUT_S, echo: bool = True):
        self.cmd = cmd
        self.program_path = Path(program_path) if program_path else None
        self.timeout_s = timeout_s
        self.echo = echo  # copy the command's stdout to ours as it runs

    def propose(self, request: ProposalRequest) -> Proposal | None:
        repo = Path(request.repo_root)
        git = Repo(repo, editable=request.editable)
        base = git.head()
        self.last_outcome = ""
        returncode, lines = self._run(repo, self._environment(request), Path(request.run_dir) / AGENT_RECORD)
        if returncode != 0:
            # a rate-limited or crashed coding agent: an outage the loop waits out (driver.py)
            _warn(f"agent command exited with status {returncode}: no experiment")
            self.last_outcome = "unavailable"
            return None
        self.last_outcome = "proposed"
        if git.head() == base and not git.git.status("--porcelain").strip():
            _warn("agent command changed nothing: no experiment")
            return None
        return Proposal(description=_description(lines, request.experiment))

    def _environment(self, request: ProposalRequest) -> dict[str, str]:
        env = dict(os.environ)
        env["AUTORESEARCH_EXPERIMENT"] = str(request.experiment)
        env["AUTORESEARCH_PROGRAM"] = str(self._program_path(request))
        env["AUTORESEARCH_RESULTS"] = str(Path(request.run_dir).resolve() / "results.tsv")
        env["AUTORESEARCH_METRIC"] = request.metric
        env["AUTORESEARCH_DIRECTION"] = request.direction
        env["AUTORESEARCH_EDITABLE"] = " ".join(request.editable)
        env.pop("AUTORESEARCH_LAST_LOG", None)
        if request.last_log and Path(request.last_log).exists():
            env["AUTORESEARCH_LAST_LOG"] = str(Path(request.last_log).resolve())
        env.pop("AUTORESEARCH_TUNER", None)
        if request.tuner_summary:  # the hybrid agent (command+tune): what its tuner found
            tuner = Path(request.run_dir).resolve() / "tuner.txt"
            write_atomic(tuner, request.tuner_summary + "\n")
            env["AUTORESEARCH_TUNER"] = str(tuner)
        env.pop("AUTORESEARCH_OTHERS", None)
        if request.in_flight or request.swarm:
            others = Path(request.run_dir).resolve() / "others.json"
            write_atomic(others, json.dumps({"in_flight": request.in_flight, "swarm": request.swarm}, default=str))
            env["AUTORESEARCH_OTHERS"] = str(others)
        return env

    def _program_path(self, request: ProposalRequest) -> Path:
        if self.program_path:
            return self.program_path.resolve()
        in_repo = Path(request.repo_root) / "program.md"
        if in_repo.exists():
            return in_repo.resolve()
        # program.md lives elsewhere (--program): hand the agent a copy of the text it was given.
        copy = Path(request.run_dir) / "program.md"
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_text(request.program_text, encoding="utf-8")
        return copy.resolve()

    def _run(self, repo: Path, env: dict[str, str], record: Path) -> tuple[int, list[str]]:
        """Run CMD in its own process group; the whole group ends when CMD returns, times out or
        the loop is stopped, and `record` names it meanwhile so a loop killed with -9 ends it at
        its next start (engine/loop/orphans.py)."""
        process = subprocess.Popen(self.cmd, shell=True, cwd=repo, env=env, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, text=True, errors="replace",
                                   preexec_fn=die_with_parent)
        record_child(record, process.pid)
        lines: list[str] = []
        reader = threading.Thread(target=self._collect, args=(process.stdout, lines), daemon=True)
        reader.start()
        try:
            returncode = process.wait(timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            _warn(f"agent command ran past {self.timeout_s:g} s and was stopped")
            returncode = -signal.SIGKILL
        finally:  # normal return, timeout, Ctrl-C or SIGTERM: nothing of the turn outlives it
            kill_group(process.pid, grace=AGENT_KILL_GRACE_S)
            process.wait()
            record.unlink(missing_ok=True)
        reader.join(timeout=5)
        return returncode, lines

    def _collect(self, stream, lines: list[str]) -> None:
        for line in stream:
            lines.append(line.rstrip("\n"))
            if self.echo:
                print(line, end="", flush=True)


def _description(lines: list[str], experiment: int) -> str:
    printed = [line.strip() for line in lines if line.strip()]
    text = printed[-1] if printed else f"command agent experiment {experiment}"
    # results.tsv is tab-separated, one row per line.
    text = " ".join(text.replace("\t", " ").split())
    return text[:MAX_DESCRIPTION_CHARS]


def _warn(message: str) -> None:
    print(f"autoresearch: {message}", file=sys.stderr, flush=True)
