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
  AUTORESEARCH_EDITABLE    the editable paths and globs, space-separated and shell-quoted (`shlex.split`)
  AUTORESEARCH_TUNER       with --agent command+tune: a text file saying what the tuner found on
                           the numbers of the current best since the command's last kept change
"""
from __future__ import annotations

import json
import os
import shlex
import signal
import sys
from pathlib import Path

from engine.files import write_atomic
from engine.agents.base import Proposal, ProposalRequest
from engine.loop.repo import Repo
from engine.processes import run_contained

DEFAULT_TIMEOUT_S = 4 * 3600.0  # an agent that thinks for longer than this is stuck
MAX_DESCRIPTION_CHARS = 200
AGENT_RECORD = "agent.json"  # in runs/TAG/: names the agent's process group while it runs
AGENT_KILL_GRACE_S = 1.0
AGENT_LOG = "agent.log"  # in runs/TAG/: the last turn's output, bounded (engine/bounded_log.py)


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
        env["AUTORESEARCH_EDITABLE"] = shlex.join(request.editable)  # a path with a space comes quoted
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
        if _reads(in_repo) == request.program_text:
            return in_repo.resolve()
        # program.md lives elsewhere (--program), or a worker's worktree holds the committed text while
        # the human has edited the file since: hand the agent a copy of the text the loop read.
        copy = Path(request.run_dir) / "program.md"
        copy.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(copy, request.program_text)
        return copy.resolve()

    def _run(self, repo: Path, env: dict[str, str], record: Path) -> tuple[int, list[str]]:
        """Run CMD contained (engine/processes.py): everything it starts ends when it returns, times
        out or the loop is stopped, and `record` names it meanwhile so a loop killed with -9 ends it
        at its next start (engine/loop/orphans.py). Its output goes to runs/TAG/agent.log within the
        cap (the head and the tail), and only the head is echoed: a transcript of any length costs
        the loop no memory."""
        log = record.parent / AGENT_LOG
        log.unlink(missing_ok=True)
        echo = _echo if self.echo else None
        finished = run_contained(self.cmd, log, self.timeout_s, repo, env, shell=True, header=f"$ {self.cmd}\n",
                                 grace=AGENT_KILL_GRACE_S, child_record=record, echo=echo,
                                 stderr=None)
        if finished.timed_out:
            _warn(f"agent command ran past {self.timeout_s:g} s and was stopped")
            return -signal.SIGKILL, []
        return finished.returncode, [finished.last_line]


def _echo(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.flush()


def _description(lines: list[str], experiment: int) -> str:
    printed = [line.strip() for line in lines if line.strip()]
    text = printed[-1] if printed else f"command agent experiment {experiment}"
    # results.tsv is tab-separated, one row per line.
    text = " ".join(text.replace("\t", " ").split())
    return text[:MAX_DESCRIPTION_CHARS]


def _reads(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _warn(message: str) -> None:
    print(f"autoresearch: {message}", file=sys.stderr, flush=True)
