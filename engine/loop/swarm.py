"""A swarm: loops on many machines sharing one git remote (`--remote URL --worker NAME`).

What is shared, and how (the git side is engine/loop/remote.py):
- every row this worker records, its claims of ideas in flight (description and hypothesis)
  and a hello when it starts, in its own file workers/NAME.jsonl on branch
  autoresearch/TAG-ledger. The local copy, runs/TAG/swarm/NAME.jsonl (the outbox), is written
  first and pushed whole, so a kill or an unreachable remote loses nothing: the next push
  carries it. The shared view is the union of all workers' files;
- the best commit, on branch autoresearch/TAG: under a `flops` or `tokens` budget one best
  for all; under a time budget one per device kind (autoresearch/TAG.KIND), so a CPU never
  competes with an H100. It moves only by fast-forward pushes.

Before each proposal the worker syncs (`sync`): it fetches, pushes what it has not, adopts a
remote best that beats its own beyond noise, and publishes its own best. A rejected publish
(another worker got there first) queues our kept change merged onto the remote best, to be
run again before it can be published (`take_merge`).
"""
from __future__ import annotations

import dataclasses
import json
import re
import time
import uuid
from pathlib import Path

from engine.errors import UserError
from engine.files import write_atomic
from engine.loop import standings
from engine.loop.ledger import read_rows
from engine.loop.remote import Remote, Unreachable, ledger_branch
from engine.loop.session import Session, now_iso
from engine.loop.worktrees import Worktrees, apply_onto

SWARM_FILE = "swarm.json"  # on the ledger branch: what every worker's results are comparable on
RECENT_ROWS = 40
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclasses.dataclass
class Settings:
    """program.md's `## Swarm` section (protocol.py leaves sections it does not know to others)."""
    verify_adoptions: bool = False

    @classmethod
    def parse(cls, text: str) -> "Settings":
        settings, inside = cls(), False
        for line in text.splitlines():
            if line.startswith("## "):
                inside = line[3:].strip().lower() == "swarm"
            elif inside and line.startswith("- verify_adoptions:"):
                settings.verify_adoptions = line.split(":", 1)[1].strip().lower() in ("true", "yes", "1")
        return settings


def device_kind(row: dict) -> str:
    return str(row.get("device") or "unknown")


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-").lower() or "unknown"


class Swarm:
    def __init__(self, session: Session, url: str, name: str):
        if not NAME.match(name or ""):
            raise UserError(f"--worker {name!r}: a swarm worker's name is letters, digits, '-', '_' or '.', like `tpu-a`")
        self.session, self.url, self.name = session, url, name
        self.remote = Remote(session.repo, url, session.tag)
        self.folder = session.run_dir / "swarm"
        self.outbox = self.folder / f"{name}.jsonl"
        self.settings = Settings.parse(session.program.text)
        self.fingerprint = _fingerprint(session.data_dir)
        self.budget = session.program.describe_budget()
        self.per_kind = session.program.budget_flops is None and session.program.budget_tokens is None
        self.clone = self._clone_id()
        self.online = True
        self.pushed: str | None = None  # the outbox as last pushed
        self.shared: dict[str, list[dict]] = {}  # worker file -> its rows, as last fetched
        self.heads: dict[str, str] = {}
        self.merge_next: tuple[str, str] | None = None  # (merged commit, description) to run next
        self.tried_merges: set[tuple[str, str]] = set()

    # --- start -------------------------------------------------------------------

    def start(self) -> None:
        """Check the remote (reachable, same data and budget, NAME free) and say hello."""
        try:
            self._fetch()
        except Unreachable as error:
            raise UserError(f"cannot reach the swarm's remote {self.url}: {error}; check the URL "
                            "(and that `git ls-remote URL` works from this machine)") from None
        self._check_comparable()
        self._check_name_free()
        self._add({"record": "hello", "at": time.time()})
        # The first worker names what results compare on; a second one racing it keeps the first's.
        self._push_outbox({SWARM_FILE: json.dumps({"fingerprint": self.fingerprint, "budget": self.budget}) + "\n"})
        self._fetch()
        self._check_comparable()

    def _clone_id(self) -> str:
        path = self.folder / "clone.json"
        try:
            return json.loads(path.read_text())["clone"]
        except (OSError, ValueError, KeyError):
            self.folder.mkdir(parents=True, exist_ok=True)
            clone = uuid.uuid4().hex[:12]
            write_atomic(path, json.dumps({"clone": clone}))
            return clone

    def _check_comparable(self) -> None:
        text = self.remote.file_or_none(ledger_branch(self.session.tag), SWARM_FILE)
        if not text:
            return
        theirs = json.loads(text)
        if theirs.get("fingerprint") != self.fingerprint:
            raise UserError(f"the swarm at {self.url} (tag {self.session.tag}) compares results on data "
                            f"fingerprint {theirs.get('fingerprint')}, this worker's data has {self.fingerprint}: "
                            "prepare the same dataset (same `autoresearch prepare` flags), or use another tag")
        if theirs.get("budget") != self.budget:
            raise UserError(f"the swarm at {self.url} (tag {self.session.tag}) runs with budget "
                            f"{theirs.get('budget')}, this worker with {self.budget}: set the same budget "
                            "in program.md or the flags, or use another tag")

    def _check_name_free(self) -> None:
        mine = {_key(item) for item in read_rows(self.outbox)}
        foreign = [item for item in self.shared.get(self.name, [])
                   if item.get("clone") != self.clone and _key(item) not in mine]
        last_seen = {item.get("clone"): item for item in foreign if item.get("record") in ("hello", "claim", "bye")}
        for clone, item in last_seen.items():
            if item["record"] != "bye" and item.get("at", 0) + self.claim_seconds() > time.time():
                raise UserError(f"another live worker is named {self.name!r} in the swarm at {self.url} "
                                f"(clone {clone}, active {time.time() - item['at']:.0f} s ago): "
                                "give each worker its own --worker NAME")
        for item in foreign:  # a finished worker's rows under this name stay in the file we now write
            self._append(item)

    def stop(self) -> None:
        """Say goodbye (the name is free at once) and push, if the remote is there."""
        self._add({"record": "bye", "at": time.time()})
        self._try_push()

    def claim_seconds(self) -> float:
        """How long a claim holds: an experiment's hard timeout twice over, plus a minute."""
        return 2 * self.session.program.hard_timeout() + 60

    # --- what the others did -------------------------------------------------------

    def union(self) -> list[dict]:
        """Every worker's result rows: the remote files, with this worker's own from its outbox."""
        rows = []
        files = {**self.shared, self.name: read_rows(self.outbox)}
        for items in files.values():
            rows += [item for item in items if item.get("record") == "row"]
        return rows

    def claims(self) -> list[dict]:
        """Ideas other workers run now: claims without a result row that have not expired."""
        live = []
        for worker, items in self.shared.items():
            if worker == self.name:
                continue
            done = {item.get("claim") for item in items if item.get("record") == "row"}
            live += [item for item in items if item.get("record") == "claim" and item["claim"] not in done
                     and item.get("at", 0) + self.claim_seconds() > time.time()]
        return live

    def recent(self) -> list[dict]:
        """The other workers' latest results, for the agent's prompt."""
        rows = [row for row in self.union() if row.get("worker") != self.name and row.get("role") != "adopted"]
        return sorted(rows, key=lambda r: str(r.get("finished", "")))[-RECENT_ROWS:]

    # --- sharing -----------------------------------------------------------------

    def claim(self, description: str, hypothesis: str) -> str:
        claim = uuid.uuid4().hex[:12]
        self._add({"record": "claim", "claim": claim, "description": description, "hypothesis": hypothesis,
                   "at": time.time()})
        self._try_push()
        return claim

    def share_new(self, claim: str | None = None) -> int:
        """Share every local ledger row not shared yet (all of them after a kill, at most once each)."""
        shared = {item.get("experiment") for item in read_rows(self.outbox)
                  if item.get("record") == "row" and item.get("clone") == self.clone}
        new = [row for row in self.session.ledger.rows if row.get("experiment") not in shared]
        for row in new:
            self._add({**row, "worker": self.name, "record": "row", "claim": claim,
                       "fingerprint": self.fingerprint, "budget": self.budget})
        if new:
            self._try_push()
        return len(new)

    def _add(self, item: dict) -> None:
        self._append({**item, "worker": self.name, "clone": self.clone})

    def _append(self, item: dict) -> None:
        self.outbox.parent.mkdir(parents=True, exist_ok=True)
        with open(self.outbox, "a") as out:
            out.write(json.dumps(item, default=str) + "\n")

    def _push_outbox(self, extra_files: dict | None = None) -> None:
        text = self.outbox.read_text() if self.outbox.exists() else ""
        if text == self.pushed and not extra_files:
            return  # the remote has all of it
        files = {f"workers/{self.name}.jsonl": text, **(extra_files or {})}
        self.remote.write_files(ledger_branch(self.session.tag), files, f"{self.name}: rows", create_only=(SWARM_FILE,))
        self.pushed = text

    def _try_push(self) -> bool:
        try:
            self._push_outbox()
        except Unreachable as error:
            return self._offline(error)
        if not self.online:
            self.session.live.say(f"swarm: the remote {self.url} is back; rows pushed")
        self.online = True
        return True

    def _offline(self, error) -> bool:
        if self.online:
            self.session.live.say(f"swarm: the remote {self.url} is unreachable ({str(error)[:120]}); "
                                  "carrying on alone, rows kept to push later")
        self.online = False
        return False

    def _fetch(self) -> None:
        self.heads = self.remote.fetch()
        files = self.remote.files(ledger_branch(self.session.tag), "workers")
        self.shared = {Path(path).stem: _rows_of(text) for path, text in files.items()}

    # --- the best ------------------------------------------------------------------

    def best_branch(self) -> str:
        """autoresearch/TAG, or autoresearch/TAG.KIND under a time budget (one best per device kind)."""
        base = f"autoresearch/{self.session.tag}"
        return f"{base}.{slug(self.kind())}" if self.per_kind else base

    def kind(self) -> str:
        rows = [row for row in self.session.ledger.rows if row.get("device")]
        return device_kind(rows[-1]) if rows else "unknown"

    def remote_best(self) -> tuple[str, dict] | None:
        """The remote best commit and the kept row that scored it (same kind under a time budget)."""
        sha = self.heads.get(self.best_branch())
        if sha is None:
            return None
        rows = [row for row in self.union() if row.get("commit") == sha and standings.is_kept(row)
                and standings.score(row) is not None and (not self.per_kind or device_kind(row) == self.kind())]
        direction = self.session.task.direction
        return (sha, max(rows, key=lambda row: standings.gain(0.0, standings.score(row), direction))) if rows else None

    def sync(self, adopt: bool = True) -> None:
        """Fetch, push what is not yet pushed, adopt a better remote best (unless told not to:
        a stopping worker records nothing more), publish ours."""
        try:
            self._fetch()
            self._push_outbox()
        except Unreachable as error:
            self._offline(error)
            return
        if not self.online:
            self.session.live.say(f"swarm: the remote {self.url} is back; rows pushed")
        self.online = True
        if self.session.ledger.best_commit() is None:
            return
        if adopt:
            self.adopt_if_better()
        self.publish_best()

    def adopt_if_better(self) -> bool:
        """Move to the remote best when it beats ours by more than our noise. With
        verify_adoptions, its commit is first run here instead (swarm_step), as a candidate."""
        found = self.remote_best()
        own, noise = self.session.best_val, self.session.noise
        if found is None or own is None:
            return False
        sha, row = found
        better = standings.gain(own, standings.score(row), self.session.task.direction)
        if sha == self.session.ledger.best_commit() or not better > noise:
            return False
        if self.settings.verify_adoptions:
            self.merge_next = (sha, f"verify {row['worker']}'s best: {row.get('description', '')}")
            return False
        self.adopt(sha, row)
        return True

    def adopt(self, sha: str, source: dict) -> dict:
        session = self.session
        experiment = session.ledger.next_experiment()
        row = {"experiment": experiment, "commit": sha, "role": "adopted", "status": "keep", "kept": True,
               "val_bpb": source.get("val_bpb"), "best_before": session.best_val, "noise": session.noise,
               **({"metric": source["metric"], source["metric"]: source.get(source["metric"]),
                   "direction": source.get("direction")} if source.get("metric") else {}),
               "best_after": standings.score(source), "device": source.get("device"),
               "description": f"adopted {source['worker']}'s best: {source.get('description', '')}",
               "adopted_from": source["worker"], "adopted_experiment": source.get("experiment"),
               "worker": self.name, "base_commit": session.ledger.best_commit(), "started": now_iso(),
               "finished": now_iso(), "needs_rerun": False,
               "decision": f"{source['worker']}'s {standings.score(source):.6f} beats ours {session.best_val:.6f} "
                           f"by more than noise {session.noise:.6f}"}
        session.ledger.append(row)
        session.track(row)
        session.repo.reset_to(sha)
        session.live.say(f"swarm: adopted {source['worker']}'s best {sha[:7]} ({standings.score(source):.6f})")
        self.share_new()
        return row

    def publish_best(self) -> None:
        """Fast-forward the remote best to ours when ours is better; a rejected push queues a merge."""
        ours = self.session.ledger.best_commit()
        found = self.remote_best()
        if ours is None or (found and found[0] == ours):
            return
        if found and not self.session.best_val < standings.score(found[1]):
            return  # not better than what the swarm has
        try:
            landed = self.remote.push_ref(ours, self.best_branch())
        except Unreachable as error:
            self._offline(error)
            return
        if landed:
            self.heads[self.best_branch()] = ours
            self.session.live.say(f"swarm: published our best {ours[:7]} to {self.best_branch()}")
        elif found and (ours, found[0]) not in self.tried_merges:
            # Another worker got there first: say so in our file (the swarm's best is the best
            # published row), and run our change merged onto theirs before it can be published.
            self._add({"record": "lost_race", "commit": ours, "to": found[0], "at": time.time()})
            self._try_push()
            self._queue_merge(ours, found[0])

    def _queue_merge(self, ours: str, theirs: str) -> None:
        """Another worker moved the remote best: our kept change, onto it, runs next."""
        self.tried_merges.add((ours, theirs))
        trees = Worktrees(self.session.repo, self.session.snapshot_root / "merge")
        try:
            merged = apply_onto(trees.open(0, theirs), ours, theirs, f"{self.session.repo.message(ours).strip()}\n\n"
                                f"autoresearch {self.session.tag}: merged onto the swarm's best {theirs[:7]}")
        finally:
            trees.close_all()
        if merged:
            self.merge_next = (merged, f"our best merged onto the swarm's best {theirs[:7]}")

    def take_merge(self) -> tuple[str, str] | None:
        merge, self.merge_next = self.merge_next, None
        return merge


def _key(item: dict) -> tuple:
    return (item.get("clone"), item.get("record"), item.get("experiment"), item.get("claim"), item.get("at"))


def _rows_of(text: str) -> list[dict]:
    rows = []
    for line in text.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict):
            rows.append(item)
    return rows


def _fingerprint(data_dir: Path) -> str:
    try:
        return str(json.loads((Path(data_dir) / "manifest.json").read_text())["fingerprint"])
    except (OSError, ValueError, KeyError):
        return "unknown"
