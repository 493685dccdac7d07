"""A swarm: loops on many machines sharing one git remote (`--remote URL --worker NAME`).

What is shared, and how (the git side is engine/loop/remote.py, the files swarm_files.py):
- every row this worker records, its claims of ideas in flight (description and hypothesis)
  and a hello when it starts, in its own file workers/NAME.CLONE.jsonl on branch
  autoresearch/TAG-ledger. CLONE is drawn once per clone and kept in runs/TAG/swarm/clone.json,
  so two workers given one NAME never write the same file, and a restarted clone is the same
  worker. The local copy, runs/TAG/swarm/NAME.CLONE.jsonl (the outbox), is written first and
  pushed whole, so a kill or an unreachable remote loses nothing: the next push carries it.
  The shared view is the union of all workers' files;
- a heartbeat, beats/NAME.CLONE.json, a counter raised at every push and at least every
  `heartbeat_seconds` (engine/loop/heartbeat.py): liveness, claims and a NAME already in use
  are judged from counters seen to move on this machine's monotonic clock, never by
  comparing two machines' clocks;
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
import hashlib
import json
import os
import re
import time
import uuid
from pathlib import Path

from engine import paths
from engine.data import split_key
from engine.errors import UserError
from engine.files import write_atomic
from engine.loop import standings
from engine.loop.heartbeat import DEAD_AFTER_BEATS, DEFAULT_EVERY_SECONDS, Heartbeat, Pulse
from engine.loop.ledger import read_rows
from engine.loop.remote import Remote, Unreachable, ledger_branch
from engine.loop.swarm_files import (BEATS_FOLDER, ROWS_FOLDER, SWARM_FILE, beat_file, parse_items,
                                     rows_file, unique)
from engine.loop.session import Session, now_iso
from engine.loop.worktrees import Worktrees, apply_onto

RECENT_ROWS = 40
TWIN_POLL_SECONDS = 2.0  # how often a starting worker looks again at a same-name clone's heartbeat
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclasses.dataclass
class Settings:
    """program.md's `## Swarm` section (protocol.py leaves sections it does not know to others)."""
    verify_adoptions: bool = False
    heartbeat_seconds: float = DEFAULT_EVERY_SECONDS  # a worker silent for 4 of these counts as dead

    @classmethod
    def parse(cls, text: str) -> "Settings":
        settings, inside = cls(), False
        for line in text.splitlines():
            if line.startswith("## "):
                inside = line[3:].strip().lower() == "swarm"
            elif inside and line.startswith("- verify_adoptions:"):
                settings.verify_adoptions = line.split(":", 1)[1].strip().lower() in ("true", "yes", "1")
            elif inside and line.startswith("- heartbeat_seconds:"):
                settings.heartbeat_seconds = _heartbeat_seconds(line.split(":", 1)[1].strip())
        return settings


def _heartbeat_seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not 0.1 <= seconds <= 3600:
        raise UserError(f"## Swarm heartbeat_seconds: {value!r} is not a number of seconds from 0.1 to 3600; "
                        f"leave it out for the default {DEFAULT_EVERY_SECONDS:g}")
    return seconds


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
        self.settings = Settings.parse(session.program.text)
        self.clone = self._clone_id()
        self.outbox = self._outbox()
        self.fingerprint = _fingerprint(session)
        self.split_key_id = _manifest(session.data_dir).get("split_key_id") if session.task.kind == "train" else None
        self.budget = session.task.describe()
        self.per_kind = (session.task.kind == "train" and session.program.budget_flops is None
                         and session.program.budget_tokens is None)
        self.heartbeat = Heartbeat(name, self.clone, self.settings.heartbeat_seconds)
        self.pulse = Pulse()
        self.online = True
        self.pushed: str | None = None  # the outbox as last pushed
        self.shared: dict[str, list[dict]] = {}  # worker file -> its items, as last fetched
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
        self._check_own_file()
        self._check_name_free()
        self._add({"record": "hello", "at": time.time()})
        # The first worker names what results compare on; a second one racing it keeps the first's.
        self._push_outbox({SWARM_FILE: json.dumps({"fingerprint": self.fingerprint, "budget": self.budget,
                                                  "split_key_id": self.split_key_id}) + "\n"})
        self._fetch()
        self._check_comparable()
        self.heartbeat.start(lambda: self._push_outbox(beat=True))

    def _clone_id(self) -> str:
        """This clone's id, drawn at its first start and kept; a clone is one worker, under one NAME."""
        path = self.folder / "clone.json"
        try:
            kept = json.loads(path.read_text())
            clone, name = str(kept["clone"]), kept.get("worker")
        except (OSError, ValueError, KeyError, TypeError):
            clone, name = uuid.uuid4().hex[:12], None
        if name not in (None, self.name):
            raise UserError(f"this clone is swarm worker {name!r} for tag {self.session.tag} ({path}), "
                            f"not {self.name!r}: start it again with --worker {name} (its rows are shared under "
                            "that name), or use a new tag for a new name")
        if name is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            write_atomic(path, json.dumps({"clone": clone, "worker": self.name}))
        return clone

    def _outbox(self) -> Path:
        """runs/TAG/swarm/NAME.CLONE.jsonl (an outbox named NAME.jsonl by an older version is renamed)."""
        path, old = self.folder / f"{self.name}.{self.clone}.jsonl", self.folder / f"{self.name}.jsonl"
        if old.exists() and not path.exists():
            os.replace(old, path)
        return path

    def _check_own_file(self) -> None:
        """The remote copy of our file holds nothing our outbox lacks: else another copy of this
        directory (same clone id) writes it too, or the outbox was deleted."""
        theirs = self.remote.file_or_none(ledger_branch(self.session.tag), rows_file(self.name, self.clone)) or ""
        mine = set(self.outbox.read_text().splitlines()) if self.outbox.exists() else set()
        missing = [line for line in theirs.splitlines() if line.strip() and line not in mine]
        if missing:
            raise UserError(f"the swarm's {rows_file(self.name, self.clone)} holds {len(missing)} lines that this "
                            f"clone's outbox {self.outbox} lacks: a copy of this directory is probably running as a "
                            f"worker too. Give each machine its own clone (`git clone` the remote), or, in the copy, "
                            f"delete {self.folder / 'clone.json'} so that it draws an id of its own")

    def _check_comparable(self) -> None:
        text = self.remote.file_or_none(ledger_branch(self.session.tag), SWARM_FILE)
        if not text:
            return
        theirs = json.loads(text)
        if theirs.get("split_key_id") and theirs["split_key_id"] != self.split_key_id:
            raise UserError(split_key.missing_key_message(
                paths.cache_root(), theirs["split_key_id"], f"this worker's data cache {self.session.data_dir}",
                split_key.prepare_command(_manifest(self.session.data_dir))))
        if theirs.get("fingerprint") != self.fingerprint:
            fix = ("check out the same commit of the task's fixed files (every tracked file it may not edit) and "
                   "use the same ## Task score, metric and direction" if self.session.task.kind == "command" else
                   "prepare the same dataset (same `autoresearch prepare` flags)")
            raise UserError(f"the swarm at {self.url} (tag {self.session.tag}) compares results on "
                            f"fingerprint {theirs.get('fingerprint')}, this worker's is {self.fingerprint}: "
                            f"{fix}, or use another tag")
        if theirs.get("budget") != self.budget:
            raise UserError(f"the swarm at {self.url} (tag {self.session.tag}) runs with budget "
                            f"{theirs.get('budget')}, this worker with {self.budget}: set the same budget "
                            "in program.md or the flags, or use another tag")

    def _check_name_free(self) -> None:
        """Refuse to start while another clone under our NAME is live. Its heartbeat is watched
        until it moves (live: refused) or stands still for its dead window (dead: we go on, in
        our own file; its rows stay in its own)."""
        twins = [clone for clone in self._twins() if self.pulse.state(clone) not in ("dead", "gone")]
        if not twins:
            return
        wait = max(self.pulse.window(clone) for clone in twins)
        self.session.live.say(f"swarm: another clone named {self.name!r} ({', '.join(twins)}) has not said goodbye; "
                              f"watching its heartbeat for up to {wait:.0f} s to tell whether it still runs")
        deadline = time.monotonic() + wait + 1
        while twins and time.monotonic() < deadline:
            live = [clone for clone in twins if self.pulse.state(clone) == "live"]
            if live:
                raise UserError(f"another live worker is named {self.name!r} in the swarm at {self.url} "
                                f"(clone {live[0]}: its heartbeat moved {self.pulse.quiet_for(live[0]):.0f} s ago "
                                "by this machine's clock): give each worker its own --worker NAME, or stop that "
                                "one first")
            time.sleep(min(wait / DEAD_AFTER_BEATS / 2, TWIN_POLL_SECONDS))
            try:
                self._fetch()
            except Unreachable:
                continue
            twins = [clone for clone in twins if self.pulse.state(clone) not in ("dead", "gone")]

    def _twins(self) -> list[str]:
        """Clones other than ours that beat under our NAME."""
        return sorted(clone for clone, beat in self.pulse.beats.items()
                      if beat.get("worker") == self.name and clone != self.clone)

    def stop(self) -> None:
        """Say goodbye (the name is free at once) and push, if the remote is there."""
        self.heartbeat.stop()
        self._add({"record": "bye", "at": time.time()})
        self._try_push(state="bye")

    def claim_seconds(self) -> float:
        """How long a claim holds: an experiment's hard timeout twice over, plus a minute."""
        return 2 * self.session.task.hard_timeout() + 60

    # --- what the others did -------------------------------------------------------

    def union(self) -> list[dict]:
        """Every worker's result rows, each once: the remote files, with ours from the outbox."""
        files = [*self.shared.values(), read_rows(self.outbox)]
        return unique(item for items in files for item in items if item.get("record") == "row")

    def claims(self) -> list[dict]:
        """Ideas other clones run now (see open_claims)."""
        return open_claims(self._others(), self.pulse, self.claim_seconds())

    def _others(self) -> dict[str, list[dict]]:
        """Clone -> its items, for every clone but this one."""
        by_clone: dict[str, list[dict]] = {}
        for item in unique(item for items in self.shared.values() for item in items):
            if item.get("clone") != self.clone:
                by_clone.setdefault(str(item.get("clone")), []).append(item)
        return by_clone

    def recent(self) -> list[dict]:
        """The other workers' latest results, for the agent's prompt."""
        rows = [row for row in self.union() if row.get("clone") != self.clone and row.get("role") != "adopted"]
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

    def _push_outbox(self, extra_files: dict | None = None, beat: bool = False, state: str = "running") -> None:
        """Push the outbox when it grew, with a beat; a beat alone when asked or due. Both this
        thread and the heartbeat's call it: the remote's lock keeps them in turn."""
        with self.remote.lock:
            text = self.outbox.read_text() if self.outbox.exists() else ""
            if text == self.pushed and not extra_files and not beat and state == "running" \
                    and not self.heartbeat.due():
                return  # the remote has all of it, and our last beat is recent
            files = {beat_file(self.name, self.clone): self.heartbeat.record(state), **(extra_files or {})}
            if text != self.pushed:
                files[rows_file(self.name, self.clone)] = text
            self.remote.write_files(ledger_branch(self.session.tag), files, f"{self.name}.{self.clone}: "
                                    f"{'rows' if text != self.pushed else 'beat'}", create_only=(SWARM_FILE,))
            self.pushed = text
            self.heartbeat.sent()

    def _try_push(self, state: str = "running") -> bool:
        try:
            self._push_outbox(state=state)
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
        branch = ledger_branch(self.session.tag)
        with self.remote.lock:
            self.heads = self.remote.fetch()
            files = self.remote.files(branch, ROWS_FOLDER)
            beats = self.remote.files(branch, BEATS_FOLDER)
        self.shared = {path: parse_items(text) for path, text in files.items()}
        self.pulse.observe(beat for text in beats.values() for beat in parse_items(text)[-1:])

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
        row = {"experiment": experiment, "commit": sha, "role": "adopted", "status": "adopted", "kept": True,
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
        if found and not standings.gain(standings.score(found[1]), self.session.best_val,
                                        self.session.task.direction) > 0:
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


def open_claims(by_clone: dict[str, list[dict]], pulse: Pulse, hold_seconds: float) -> list[dict]:
    """Ideas other clones run now. A worker runs one experiment at a time, so a clone's open claim
    is its last one, unless a row answered it or the clone restarted or left after it. It holds
    while the clone is not known dead or gone (its heartbeat, judged on this machine's clock)
    and for at most hold_seconds since this machine first saw it. The claim's own `at`, from
    the other machine's clock, is never compared with ours."""
    held = []
    for clone, items in by_clone.items():
        if pulse.state(clone) in ("dead", "gone"):
            continue
        last = None
        for item in items:
            if item.get("record") == "claim":
                last = item
            elif item.get("record") in ("hello", "bye"):
                last = None
        if last is None or any(item.get("record") == "row" and item.get("claim") == last.get("claim")
                               for item in items):
            continue
        if pulse.age(f"claim {clone} {last.get('claim')}") <= hold_seconds:
            held.append(last)
    return held


def _manifest(data_dir: Path | None) -> dict:
    try:
        manifest = json.loads((Path(data_dir) / "manifest.json").read_text())
    except (OSError, ValueError, TypeError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def _fingerprint(session: Session) -> str:
    """What results compare on: a train task's data manifest; a command task's score command,
    metric, direction and fixed files (every tracked file it may not edit, program.md aside)."""
    if session.task.kind == "command":
        return _task_fingerprint(session)
    return str(_manifest(session.data_dir).get("fingerprint", "unknown"))


def _task_fingerprint(session: Session) -> str:
    spec, root = session.program.task, session.repo.root
    program = os.path.relpath(session.program_path, root)
    fixed = sorted((os.path.relpath(path, root), digest) for path, digest in session.fixed.hashes.items()
                   if os.path.relpath(path, root) != program)
    facts = {"score": spec.score, "metric": spec.metric, "direction": spec.direction, "fixed": fixed}
    return "task " + hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()
