"""`autoresearch loop --workers N`: N experiments in flight on one host, one coordinator.

The coordinator (this module, no JAX) owns the ledger, git and the agent. Each experiment in
flight runs in its own git worktree (engine/loop/worktrees.py, as the serial loop's one does) on its own devices
(engine/loop/device_split.py), in a thread that only waits for its `autoresearch train`
child; every decision, commit and ledger row is made here, in the main thread, one at a
time, as runs finish. The main tree stays on branch autoresearch/TAG at the best commit.

The keep rule under concurrency (`judge_moved_base`): a finished run is judged against the
best at the moment it finishes. When that is still its base, decide() judges it as in a
single loop. When the best moved while it ran, and it beat the best it started from, its
change is merged onto the new best (a 3-way merge) and the combination runs again as a new
experiment before it can be kept; a change that no longer applies is `stale`.
"""
from __future__ import annotations

import dataclasses
import json
import queue
import shutil
import threading
from pathlib import Path

from engine.agents.base import Proposal
from engine.errors import UserError
from engine.loop import cycle, guards, runner
from engine.loop.device_split import WorkerDevices
from engine.loop.session import Session, now_iso
from engine.loop.standings import gain, row_value, series_of, series_rows
from engine.loop.outages import DiskFull, Outages, agent_failed, check_run, disk_full_message, is_disk_full
from engine.loop.worktrees import Worktrees, apply_onto, snapshot_state
from engine.processes import end_recorded


@dataclasses.dataclass
class Job:
    """One run of one commit on one worker."""
    role: str  # baseline, candidate, rerun or confirm
    commit: str
    base_commit: str  # the best commit when it was proposed
    base_value: float | None  # the best score then
    proposal: Proposal
    seed: int
    extra: dict = dataclasses.field(default_factory=dict)
    worker: int = -1
    started: str = ""
    run_dir: Path | None = None


class Coordinator:
    def __init__(self, session: Session, agent, devices: list[WorkerDevices], platform: str = "cpu",
                 names: list[str] | None = None):
        self.session, self.agent, self.devices, self.platform = session, agent, devices, platform
        self.names = names or [f"w{d.index}" for d in devices]
        self.slots = len(devices)  # experiments in flight at most
        self.trees = Worktrees(session.repo, session.snapshot_root)
        self.queued: list[Job] = []  # re-runs and merges: they go before new proposals
        self.running: dict[int, Job] = {}
        self.done: queue.Queue = queue.Queue()
        self.empty = 0
        self.failures = Outages(session.program.max_agent_failure_minutes)
        self.jobs_started = 0

    # --- the loop ----------------------------------------------------------------

    def run(self, stop_reason) -> str:
        """Keep every worker busy until stop_reason(session, empty proposals) names a reason;
        then let the runs in flight finish and record them. Returns the reason."""
        self.trees.close_all()  # worktrees and half-run folders a killed loop left behind
        shutil.rmtree(self.session.run_dir / "inflight", ignore_errors=True)
        self._queue_baselines()
        reason = None
        try:
            while True:
                reason = reason or stop_reason(self.session, self.empty) or self.failures.give_up_reason()
                if reason is None:
                    self._fill_free_workers()
                if not self.running:
                    if reason is not None or not self._may_start():
                        break
                    if self.failures.count and self.failures.give_up_reason() is None:
                        self.failures.wait(self.session.live.say)  # nothing in flight: wait the agent out
                    continue  # every proposal came back empty: ask again, stop_reason counts them
                job, outcome = self.done.get()
                self.running.pop(job.worker)
                if isinstance(outcome, UserError):
                    raise outcome  # a fault of the set-up, not of the idea (a refused node, say)
                self.finish(job, outcome)
        finally:
            self._stop_all()
            self.trees.close_all()
        return reason or stop_reason(self.session, self.empty) or "stopped"

    def _may_start(self) -> bool:
        limit = self.session.program.max_experiments
        return limit is None or len(self.session.ledger.rows) + len(self.running) < limit

    def _baseline_pending(self) -> bool:
        wanted = self.session.program.baseline_runs
        done = sum(1 for r in self.session.ledger.rows if r.get("role") == "baseline")
        return done < wanted

    def _fill_free_workers(self) -> None:
        for worker in range(self.slots):
            if worker in self.running or not self._may_start():
                continue
            job = self._next_job(worker)
            if job is None:
                return
            self._start(job, worker)

    def _next_job(self, worker: int) -> Job | None:
        if self.queued:
            return self.queued.pop(0)
        if self._baseline_pending():
            return None  # no proposal before the baseline's score is known
        return self._propose(worker)

    def _queue_baselines(self) -> None:
        rows, program = self.session.ledger.rows, self.session.program
        crashed = [r for r in rows if r.get("role") == "baseline" and not r.get("kept")]
        if crashed:
            cycle.run_baseline(self.session)  # raises the baseline's UserError
        done = sum(1 for r in rows if r.get("role") == "baseline")
        head = self.session.repo.head()
        for index in range(done, program.baseline_runs):
            description = "baseline" if index == 0 else f"baseline (run {index + 1} of {program.baseline_runs})"
            self.queued.append(Job("baseline", head, head, None, Proposal(description=description),
                                   self.session.seed + index))

    # --- proposing and starting ------------------------------------------------------

    def _propose(self, worker: int) -> Job | None:
        session = self.session
        best = session.ledger.best_commit() or session.repo.head()
        tree = self.trees.open(worker, best)
        in_flight = [{"description": j.proposal.description, "hypothesis": j.proposal.hypothesis,
                      "worker": self.names[j.worker]} for j in self.running.values()]
        number = session.ledger.next_experiment() + len(self.running) + len(self.queued)
        proposal = cycle.propose(session, self.agent, number, repo_root=tree.root, in_flight=in_flight)
        changed = tree.changed_paths()
        if proposal is None and agent_failed(self.agent):
            self.failures.failed()
            return None
        self.failures.ended()
        if proposal is None or not (changed or proposal.refusal):
            self.empty += 1
            return None
        self.empty = 0
        verdict = guards.check_proposal(changed, session.program.editable, tree.root)
        if proposal.planted:
            verdict = guards.Verdict(False, changed, cycle.planted_reason(proposal.planted, session.program.editable))
        if proposal.refusal:
            verdict = guards.Verdict(False, changed, proposal.refusal)
        if not verdict.ok:
            self._record_rejected(proposal, verdict.reason, worker, best)
            return None
        session.fixed.check("before a run")
        message = f"{proposal.description}\n\nautoresearch {session.tag}, worker {self.names[worker]}"
        sha = tree.commit(verdict.changed, message)
        return Job("candidate", sha, best, session.best_val, proposal, session.seed, {"agent": self.agent.name})

    def _record_rejected(self, proposal: Proposal, reason: str, worker: int, best: str) -> None:
        extra = {"agent": self.agent.name, "decision": reason, "worker": self.names[worker], "base_commit": best}
        cycle.record(self.session, self.session.ledger.next_experiment(), None, proposal, None, "candidate",
                     self.session.seed, now_iso(), extra)

    def _start(self, job: Job, worker: int) -> None:
        session = self.session
        job.worker, job.started = worker, now_iso()
        tree = self.trees.open(worker, job.commit)
        self.jobs_started += 1
        job.run_dir = session.run_dir / "inflight" / f"job-{self.jobs_started:04d}-{self.names[worker]}"
        if job.run_dir.exists():
            shutil.rmtree(job.run_dir)
        self.running[worker] = job
        session.live.say(f"[{self.names[worker]}] running: {job.proposal.description}")
        before = snapshot_state(tree.root)
        thread = threading.Thread(target=self._run, args=(job, tree, before, worker), daemon=True)
        thread.start()

    def _run(self, job: Job, tree, before: dict, worker: int) -> None:
        try:
            outcome = self.execute(job, tree.root, worker)
            if isinstance(outcome, runner.Outcome):
                check_run(outcome, self.session.run_dir)  # DiskFull: a UserError the loop stops with
            outcome = cycle.checked_outcome(self.session, outcome, tree, job.commit, before)
        except UserError as error:
            outcome = error
        except Exception as error:  # the coordinator must hear of every run, even one that failed to start
            if is_disk_full(error):
                outcome = DiskFull(disk_full_message(self.session.run_dir))
                self.done.put((job, outcome))
                return
            outcome = runner.Outcome("crash", {}, None, 0.0, job.run_dir / "train.log", f"could not run: {error}")
        self.done.put((job, outcome))

    def execute(self, job: Job, cwd: Path, worker: int) -> runner.Outcome:
        """Run job from its worktree cwd on the worker's devices of this host (in a thread)."""
        return self.session.task.run(job.run_dir, job.seed, cwd, child_record=_child_record(job),
                                     devices=self.devices[worker])

    def placement(self, job: Job, outcome: runner.Outcome) -> dict:
        """Where the run ran, for its ledger row."""
        return {"device_set": self.devices[job.worker].describe(self.platform)}

    def _stop_all(self) -> None:
        """Stopped early (an error, Ctrl-C): end every training run still going, by its group."""
        for job in self.running.values():
            try:
                record = json.loads(_child_record(job).read_text())
            except (OSError, ValueError):
                continue
            end_recorded(record)
        self.running.clear()

    # --- finishing ---------------------------------------------------------------

    def finish(self, job: Job, outcome: runner.Outcome) -> dict:
        """Record a finished run under the next experiment number and act on its verdict."""
        session = self.session
        experiment = session.ledger.next_experiment()
        outcome = _settle_run_dir(session, job, outcome, experiment)
        extra = {**job.extra, "worker": self.names[job.worker], "base_commit": job.base_commit,
                 **self.placement(job, outcome)}
        decision = None
        best = session.ledger.best_commit()
        if (outcome.status == "ok" and job.role not in ("baseline", "confirm") and best is not None
                and job.base_commit != best):
            decision = self.judge_moved_base(job, outcome, experiment, best)
        row = cycle.record(session, experiment, job.commit, job.proposal, outcome, job.role, job.seed,
                           job.started, extra, decision=decision)
        if row.get("kept") and job.role not in ("baseline", "confirm"):
            session.fixed.check("before keeping a result")
            session.repo.reset_to(job.commit)
            self.queued[:0] = _confirmations_of(session, job)
        elif row.get("needs_rerun"):
            self.queued.insert(0, _rerun_of(job, row))
        elif not row.get("kept") and row["status"] != "unscored":  # an unscored one waits for evaluate
            checkpoint = session.exp_dir(experiment) / "checkpoint"
            shutil.rmtree(checkpoint, ignore_errors=True)
        if job.role == "baseline" and not row.get("kept"):
            raise UserError(f"the baseline {row['status']}: {row.get('error')}; see {session.run_dir / row['log']} "
                            f"({cycle.baseline_advice(session, row['status'])})")
        return row

    def judge_moved_base(self, job: Job, outcome: runner.Outcome, experiment: int, best: str) -> dict:
        """The keep rule when the best moved while this run was in flight.

        Its figure (the mean of both runs for a re-run) is compared with the best it started
        from. No gain: discard. A gain: the change is merged onto the new best with a 3-way
        merge and the combination is queued as a new candidate (it must win on its own before
        it is kept), this row is a discard that says so; a change that conflicts, or that the
        best already holds, is `stale`.
        """
        task = self.session.task
        value = outcome.result[task.metric]
        if job.role == "rerun":  # the mean of the candidate's runs so far
            earlier = [row_value(r) for r in series_rows(self.session.ledger.rows, job.extra["rerun_of"])]
            value = (sum(earlier) + value) / (len(earlier) + 1)
        base_value, now = job.base_value, self.session.best_val
        verdict = {"kept": False, "best_after": now, "needs_rerun": False}
        if base_value is None or gain(base_value, value, task.direction) <= 0:
            return {**verdict, "status": "discard",
                    "decision": f"no gain over its base ({value:.6f} vs {_fmt(base_value)}); the best moved meanwhile"}
        tree = self.trees.open(job.worker, best)
        description = job.proposal.description
        merged = apply_onto(tree, job.commit, best, f"{description}\n\nautoresearch {self.session.tag}: "
                            f"experiment {experiment} merged onto {best[:7]}")
        if merged is None:
            return {**verdict, "status": "stale",
                    "decision": f"beat its base ({value:.6f} vs {base_value:.6f}) but its change no longer "
                                f"applies to the best {best[:7]}"}
        proposal = Proposal(description=f"{description} (merged onto {best[:7]})", hypothesis=job.proposal.hypothesis,
                            side=job.proposal.side)
        self.queued.insert(0, Job("candidate", merged, best, now, proposal, self.session.seed,
                                  {"agent": job.extra.get("agent"), "merged_from": experiment}))
        return {**verdict, "status": "discard",
                "decision": f"beat its base ({value:.6f} vs {base_value:.6f}) but the best moved to {best[:7]}: "
                            f"merged onto it as {merged[:7]}, to run again"}


def _child_record(job: Job) -> Path:
    """Names the training process of a run while it runs (runner.run_training writes it)."""
    return job.run_dir.with_name(job.run_dir.name + ".child.json")


def _rerun_of(job: Job, row: dict) -> Job:
    """The next look of the sequential test at a promising candidate: the same commit, the next seed."""
    first = series_of(row)
    description = row["description"].split(" (re-run of #")[0]
    proposal = Proposal(description=f"{description} (re-run of #{first}, seed {job.seed + 1})",
                        hypothesis=job.proposal.hypothesis, side=job.proposal.side)
    extra = {"agent": job.extra.get("agent"), "rerun_of": first}
    return Job("rerun", job.commit, job.base_commit, job.base_value, proposal, job.seed + 1, extra)


def _confirmations_of(session: Session, job: Job) -> list[Job]:
    """A kept change's confirmation runs (fresh seeds): their mean becomes the best's value."""
    count, start = session.program.confirmations(), len(session.ledger.rows)
    return [Job("confirm", job.commit, job.commit, None,
                Proposal(description=f"confirm {job.commit[:7]} (run {i + 1} of {count})"), session.seed + start + i)
            for i in range(count)]


def _settle_run_dir(session: Session, job: Job, outcome: runner.Outcome, experiment: int) -> runner.Outcome:
    """Move the run's folder to exp-NNNN, now that its number is known; paths in it follow."""
    target = session.exp_dir(experiment)
    if target.exists():
        shutil.rmtree(target)
    if job.run_dir is None or not job.run_dir.exists():
        return outcome
    shutil.move(str(job.run_dir), str(target))
    old, new = str(job.run_dir), str(target)
    result = {k: (v.replace(old, new) if isinstance(v, str) else v) for k, v in outcome.result.items()}
    return dataclasses.replace(outcome, result=result, log_path=Path(str(outcome.log_path).replace(old, new)))


def _fmt(value) -> str:
    return f"{value:.6f}" if isinstance(value, (int, float)) else "-"
