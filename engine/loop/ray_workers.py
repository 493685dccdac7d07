"""`autoresearch loop --ray ADDRESS`: the `--workers` coordinator, with each run a Ray task.

The coordinator here keeps all it keeps under `--workers` (engine/loop/workers.py): the
agent, the ledger, git, the keep rule, proposals in worktrees. Only where a run happens
changes: `execute` packs the candidate commit's files (`git archive`, the exact commit),
passes the archive as a Ray object to a task that asks for the experiment's devices, and
waits for its reply (engine/loop/ray_node.py runs it on the node Ray picks). The reply's log
and result land in the run's folder here, as a local run's would; the row carries `node`.

Faults: a task whose node or worker dies is re-run by Ray (max_retries, system failures
only: an exception of the run itself is never retried). If Ray gives up, the coordinator
queues the experiment again, before new proposals, up to LOST_REQUEUES times, and then stops
with an error: a lost node is never a crash of the idea, and a run is recorded only once,
when it finishes.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from pathlib import Path

from engine.errors import UserError
from engine.loop import runner
from engine.loop.ray_cluster import Plan, require_ray
from engine.loop.ray_node import Request, on_node, remove_run
from engine.loop.session import Session
from engine.loop.workers import Coordinator, Job

NODE_RETRIES = 3  # Ray re-runs a task whose node or worker died this many times
LOST_REQUEUES = 2  # then the coordinator queues it again this many times


@dataclasses.dataclass
class Lost:
    """A run the cluster lost (its node died past Ray's retries): queued again, not recorded."""
    reason: str


class RayCoordinator(Coordinator):
    def __init__(self, session: Session, agent, plan: Plan, checkpoints: str | None = None):
        super().__init__(session, agent, [], platform=plan.resource.lower())
        self.plan, self.checkpoints = plan, checkpoints
        self.slots = plan.in_flight
        self.names = [f"r{i}" for i in range(plan.in_flight)]
        self.manifest = read_manifest(session.data_dir)
        self.refs: dict[int, object] = {}
        pass_env = session.program.task.pass_env if session.program.task.is_command else []
        self.passed_env = {name: os.environ[name] for name in pass_env if name in os.environ}
        self.lost: dict[str, int] = {}
        ray = require_ray()
        self.task = ray.remote(on_node).options(**plan.options(), max_retries=NODE_RETRIES, retry_exceptions=False)

    def execute(self, job: Job, cwd: Path, worker: int) -> runner.Outcome | Lost:
        """Run job as a Ray task and wait for it (in the worker's thread)."""
        ray = require_ray()
        request = Request(self.session.tag, job.run_dir.name, self.session.program, job.seed, self.manifest,
                          self.plan.resource, self.plan.per_experiment, self.checkpoints, self.passed_env)
        ref = self.task.remote(request, ray.put(snapshot(self.session.repo.root, job.commit)))
        self.refs[worker] = ref
        try:
            reply = ray.get(ref)
        except ray.exceptions.RayTaskError as error:  # the run's own code raised on the node
            if isinstance(error.cause, UserError):
                raise UserError(str(error.cause)) from None
            raise
        except ray.exceptions.TaskCancelledError:
            return Lost("cancelled")
        except ray.exceptions.RayError as error:  # node or worker died, past Ray's retries
            return Lost(f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
        finally:
            self.refs.pop(worker, None)
        return land(job.run_dir, reply)

    def finish(self, job: Job, outcome) -> dict:
        if isinstance(outcome, Lost):
            self.requeue(job, outcome)
            return {}
        row = super().finish(job, outcome)
        if not row.get("kept") and not row.get("needs_rerun"):
            self.drop_checkpoint(outcome.result)
        return row

    def requeue(self, job: Job, lost: Lost) -> None:
        key = f"{job.commit}/{job.seed}/{job.role}"
        self.lost[key] = self.lost.get(key, 0) + 1
        if self.lost[key] > LOST_REQUEUES:
            raise UserError(f"the Ray cluster lost the run of {job.commit[:7]} ({job.proposal.description}) "
                            f"{self.lost[key]} times, each after {NODE_RETRIES} retries ({lost.reason}): check the "
                            "cluster (`ray status`); the loop resumes where it stopped when started again")
        self.session.live.say(f"the cluster lost a run of {job.commit[:7]} ({lost.reason}): queued again")
        self.queued.insert(0, dataclasses.replace(job, worker=-1, started="", run_dir=None))

    def placement(self, job: Job, outcome: runner.Outcome) -> dict:
        node = outcome.result.get("node")
        return {"node": node, "device_set": f"{self.plan.resource.lower()} x{self.plan.per_experiment} on {node}"}

    def drop_checkpoint(self, result: dict) -> None:
        """A run not kept keeps no saved state: deleted on its node (a task pinned there), or
        from the local folder it was copied to."""
        where, node_id = result.get("checkpoint"), result.get("node_id")
        if not where:
            return
        if result.get("checkpoint_node") and node_id:
            ray = require_ray()
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            pinned = NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)
            ray.remote(remove_run).options(num_cpus=0, scheduling_strategy=pinned).remote(where)
        elif "://" not in where:
            import shutil

            shutil.rmtree(Path(where).parent, ignore_errors=True)

    def _stop_all(self) -> None:
        """Stopped early: cancel every task in flight (Ray ends its worker, and the run with it)."""
        if self.refs:
            ray = require_ray()
            for ref in list(self.refs.values()):
                ray.cancel(ref, force=True)
        self.running.clear()


def snapshot(root: Path, commit: str) -> bytes:
    """The commit's tracked files as a tar archive (what was committed is what runs)."""
    done = subprocess.run(["git", "archive", "--format=tar", commit], cwd=root, capture_output=True, check=True)
    return done.stdout


def read_manifest(data_dir: Path | None) -> dict | None:
    """The coordinator's prepared cache, as the nodes must match it (None for a command task)."""
    if data_dir is None:
        return None
    manifest = json.loads((Path(data_dir) / "manifest.json").read_text())
    return {"name": manifest.get("name") or Path(data_dir).name, "fingerprint": manifest["fingerprint"],
            "spec": manifest.get("spec", {}), "constants": manifest.get("constants", {}),
            "split_key_id": manifest.get("split_key_id")}


def land(run_dir: Path, reply: dict) -> runner.Outcome:
    """The node's reply as a local run's folder and Outcome: its log and result.json in run_dir."""
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / reply["log_name"]
    log_path.write_text(reply["log"])
    result = {**reply["result"], "node": reply["node"], "node_id": reply.get("node_id")}
    if reply["result"]:
        (run_dir / "result.json").write_text(json.dumps(result, indent=2))
    return runner.Outcome(reply["status"], result, reply["returncode"], reply["wall_seconds"], log_path,
                          reply["error"])
