"""A swarm of loops in clones around one bare repository (and once through `git daemon`).

Every worker runs the real `autoresearch loop` with the stand-in trainer. Checks: the union of
the workers' files holds each row exactly once, the remote best is the best kept row, workers
adopt each other's bests, and kills and an unreachable remote lose nothing.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loop_helpers import FAKE_TRAIN, git, ledger_rows, make_cache, make_repo, run_cli

TAG = "sw"
LEDGER = f"autoresearch/{TAG}-ledger"
BEST = f"autoresearch/{TAG}.cpu-x1"  # a time budget: one best per device kind
TRAIN_PY = '''"""A train.py for the stand-in engine."""
LEARNING_RATE = 0.04  # peak learning rate
DEPTH = 7  # layers
SLEEP = 0
'''


@pytest.fixture
def swarm(tmp_path):
    origin = make_repo(tmp_path, train_py=TRAIN_PY)
    remote = tmp_path / "remote.git"
    git(tmp_path, "clone", "-q", "--bare", str(origin), str(remote))
    for name in ("a", "b", "c"):
        git(tmp_path, "clone", "-q", str(remote), str(tmp_path / name))
        git(tmp_path / name, "config", "user.email", f"{name}@example.com")
        git(tmp_path / name, "config", "user.name", name)
    fake = tmp_path / "fake_train.py"
    fake.write_text(FAKE_TRAIN)
    env = {"AUTORESEARCH_CACHE": str(make_cache(tmp_path)), "JAX_PLATFORMS": "cpu",
           "AUTORESEARCH_TRAIN_COMMAND": f"{sys.executable} {fake}"}
    return tmp_path, remote, env


def loop_args(url, name, max_experiments, seed=0):
    return ["loop", "--tag", TAG, "--agent", "offline", "--remote", str(url), "--worker", name,
            "--max-experiments", str(max_experiments), "--seed", str(seed)]


# `autoresearch` with its wall clock (time.time, datetime.now) shifted by argv[1] seconds.
SKEWED_CLI = """
import datetime, runpy, sys, time
offset = float(sys.argv.pop(1))
real_time = time.time
time.time = lambda: real_time() + offset
class Shifted(datetime.datetime):
    @classmethod
    def now(cls, tz=None):
        return datetime.datetime.fromtimestamp(time.time(), tz)
datetime.datetime = Shifted
sys.argv[0] = "autoresearch"
runpy.run_module("engine.cli", run_name="__main__")
"""


def start(tmp, url, env, name, max_experiments, seed=0, extra_env=None, clone=None, clock_offset=None):
    """A worker in tmp/clone (default tmp/name), its clock shifted by clock_offset seconds if given."""
    cli = ["-m", "engine.cli"] if clock_offset is None else ["-c", SKEWED_CLI, str(clock_offset)]
    return subprocess.Popen([sys.executable, *cli, *loop_args(url, name, max_experiments, seed)],
                            cwd=tmp / (clone or name), env={**os.environ, **env, **(extra_env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def worker_files(remote) -> dict[str, list[dict]]:
    """File name under workers/ -> its items."""
    names = git(remote, "ls-tree", "--name-only", f"{LEDGER}:workers").splitlines()
    texts = {n: git(remote, "show", f"{LEDGER}:workers/{n}") for n in names}
    return {n: [json.loads(line) for line in text.splitlines() if line.strip()] for n, text in texts.items()}


def union(remote) -> dict[str, list[dict]]:
    """Worker name -> the items of every file its clones wrote, each file named NAME.CLONE.jsonl
    and holding only its own clone's items."""
    by_worker = {}
    for name, items in worker_files(remote).items():
        assert {(i["worker"], i["clone"]) for i in items} == {tuple(name.removesuffix(".jsonl").rsplit(".", 1))}
        by_worker.setdefault(items[0]["worker"], []).extend(items)
    return by_worker


def check_union(tmp, remote, names):
    """Every local ledger row is in the union exactly once; the remote best is the best kept row."""
    shared = union(remote)
    everything = []
    for name in names:
        rows = [item for item in shared[name] if item["record"] == "row"]
        assert sorted(r["experiment"] for r in rows) == [r["experiment"] for r in ledger_rows(tmp / name, TAG)]
        everything += rows
    kept = [r for r in everything if r["kept"]]
    head = git(remote, "rev-parse", BEST)
    published = [r for r in kept if _is_ancestor(remote, r["commit"], head)]
    best = min(published, key=lambda r: r["best_after"])
    assert head in {r["commit"] for r in published if r["best_after"] == best["best_after"]}
    # a better kept row off the published line lost a race to publish, and its worker said so
    lost = {(w, item["commit"]) for w, items in shared.items() for item in items if item["record"] == "lost_race"}
    for row in kept:
        if row["best_after"] < best["best_after"] and row not in published:
            assert (row["worker"], row["commit"]) in lost
    return everything


def _is_ancestor(remote, commit, head) -> bool:
    return subprocess.run(["git", "merge-base", "--is-ancestor", commit, head], cwd=remote,
                          capture_output=True).returncode == 0


@pytest.mark.slow
def test_workers_adopt_each_others_best_in_turn(swarm):
    tmp, remote, env = swarm
    for name, count, seed in (("a", 4, 0), ("b", 7, 1), ("c", 7, 2), ("a", 8, 0)):
        done = run_cli(tmp / name, *loop_args(remote, name, count, seed), env=env)
        assert done.returncode == 0, done.stdout + done.stderr
    rows = check_union(tmp, remote, "abc")
    adopted = {r["worker"]: r["adopted_from"] for r in rows if r.get("role") == "adopted"}
    assert set(adopted) == {"a", "b", "c"} and all(src != w for w, src in adopted.items())
    # the agent saw the swarm: no worker repeats an idea another already ran
    ideas = [(r["worker"], r["description"]) for r in rows if r.get("role") == "candidate"]
    assert len({d for _, d in ideas}) == len(ideas)


def test_verify_adoptions_reruns_the_remote_best_before_keeping_it(swarm):
    tmp, remote, env = swarm
    for name in "ab":
        program = tmp / name / "program.md"
        program.write_text(program.read_text() + "\n## Swarm\n- verify_adoptions: true\n")
        git(tmp / name, "commit", "-qam", "verify adoptions")
    assert run_cli(tmp / "a", *loop_args(remote, "a", 4), env=env).returncode == 0
    done = run_cli(tmp / "b", *loop_args(remote, "b", 4, seed=1), env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    a_best = [r for r in ledger_rows(tmp / "a", TAG) if r["kept"]][-1]
    verified = [r for r in ledger_rows(tmp / "b", TAG) if r.get("verified_adoption")]
    assert verified and verified[0]["commit"] == a_best["commit"] and verified[0]["adopted_from"] == "a"
    assert verified[0]["role"] == "candidate" and verified[0]["kept"]  # it ran here, and won here
    assert not [r for r in ledger_rows(tmp / "b", TAG) if r.get("role") == "adopted"]


def test_claims_hold_while_their_clone_beats_whatever_its_clock_says():
    from engine.loop.heartbeat import Pulse
    from engine.loop.swarm import open_claims

    for skew in (-3 * 3600, 3 * 3600):  # the other machines' clocks, hours off: never compared with ours
        now = [0.0]
        pulse = Pulse(clock=lambda: now[0])
        at = time.time() + skew
        claim = lambda clone, cid: {"record": "claim", "clone": clone, "worker": "w", "claim": cid, "at": at}
        row = lambda clone, cid: {"record": "row", "clone": clone, "worker": "w", "claim": cid, "experiment": 1}
        beat = lambda clone, n, state="running": {"clone": clone, "run": f"r{skew}", "beat": n, "every": 10.0,
                                                  "state": state}
        by_clone = {"live": [claim("live", "old"), row("live", "old"), claim("live", "now")],
                    "done": [claim("done", "x"), row("done", "x")],
                    "restarted": [claim("restarted", "cut"), {"record": "hello", "clone": "restarted", "at": at}],
                    "killed": [claim("killed", "k")], "left": [claim("left", "l")],
                    "older": [claim("older", "o")]}  # an older version's file: no heartbeat
        ids = lambda: sorted(c["claim"] for c in open_claims(by_clone, pulse, hold_seconds=80))
        pulse.observe([beat(c, 1) for c in ("live", "done", "restarted", "killed", "left")])
        assert ids() == ["k", "l", "now", "o"]  # not watched long enough to call anyone dead
        now[0] += 30
        pulse.observe([beat("live", 2), beat("killed", 1), beat("left", 2, "bye")])
        assert ids() == ["k", "now", "o"]  # `left` said goodbye
        now[0] += 15
        pulse.observe([beat("live", 3), beat("killed", 1)])
        assert ids() == ["now", "o"]  # `killed`'s counter stood still for 45 s > 4 periods of 10 s
        now[0] += 40
        pulse.observe([beat("live", 4)])
        assert ids() == []  # held 85 s by this machine's clock: longer than any experiment may take


def test_an_observer_that_cannot_fetch_keeps_claims_for_their_hold_time():
    """Cut off from the remote, this machine reads no beat: the claiming clone is not called
    dead for the time that passed, so its claim holds until the hold time, not the dead window."""
    from engine.loop.heartbeat import Pulse
    from engine.loop.swarm import open_claims

    now = [0.0]
    pulse = Pulse(clock=lambda: now[0])
    by_clone = {"w": [{"record": "claim", "clone": "w", "worker": "w", "claim": "c", "at": 0.0}]}
    ids = lambda: [c["claim"] for c in open_claims(by_clone, pulse, hold_seconds=80)]
    pulse.observe([{"clone": "w", "run": "r", "beat": 1, "every": 10.0, "state": "running"}])
    assert ids() == ["c"]
    now[0] += 5
    pulse.observe([{"clone": "w", "run": "r", "beat": 2, "every": 10.0, "state": "running"}])
    now[0] += 60  # past w's dead window of 40 s, with no fetch meanwhile
    assert pulse.state("w") == "live" and ids() == ["c"]
    now[0] += 20  # 85 s since this machine first saw the claim
    assert ids() == []


def test_bad_input_is_refused_with_both_values(swarm):
    tmp, remote, env = swarm
    assert run_cli(tmp / "a", *loop_args(remote, "a", 3), env=env).returncode == 0
    gone = run_cli(tmp / "b", *loop_args(tmp / "nowhere.git", "b", 3), env=env)
    assert gone.returncode != 0 and "cannot reach the swarm's remote" in gone.stderr
    budget = run_cli(tmp / "b", *loop_args(remote, "b", 3), "--budget-seconds", "2", env=env)
    assert budget.returncode != 0 and "time 1 s" in budget.stderr and "time 2 s" in budget.stderr
    other = tmp / "cache2" / "fake-v512-00000000"
    other.mkdir(parents=True)
    (other / "manifest.json").write_text(json.dumps({"fingerprint": "e" * 64}))
    data = run_cli(tmp / "b", *loop_args(remote, "b", 3), "--data", str(other), env=env)
    assert data.returncode != 0 and "f" * 64 in data.stderr and "e" * 64 in data.stderr
    live = start(tmp, remote, env, "b", 30, extra_env={"FAKE_TRAIN_SLEEP": "0.5"})
    try:
        _wait_for(lambda: "b" in union(remote))
        twin = run_cli(tmp / "c", *loop_args(remote, "b", 3), env=env)
        assert twin.returncode != 0 and "another live worker is named 'b'" in twin.stderr
    finally:
        live.kill()
        live.wait()
    lone = run_cli(tmp / "c", "loop", "--tag", TAG, "--worker", "c", env=env)
    assert lone.returncode != 0 and "go together" in lone.stderr
    renamed = run_cli(tmp / "a", *loop_args(remote, "z", 4), env=env)  # a clone keeps its name
    assert renamed.returncode != 0 and "this clone is swarm worker 'a'" in renamed.stderr
    shutil.copytree(tmp / "a", tmp / "a-copy")  # the same clone id in two directories
    assert run_cli(tmp / "a-copy", *loop_args(remote, "a", 4), env=env).returncode == 0
    copied = run_cli(tmp / "a", *loop_args(remote, "a", 4), env=env)
    assert copied.returncode != 0 and "a copy of this directory" in copied.stderr and "lacks" in copied.stderr


def with_heartbeat(root, seconds):
    program = root / "program.md"
    program.write_text(program.read_text() + f"\n## Swarm\n- heartbeat_seconds: {seconds}\n")
    git(root, "commit", "-qam", "a fast heartbeat")


@pytest.mark.slow
def test_a_clock_three_hours_behind_neither_kills_a_worker_nor_frees_its_name(swarm):
    """Worker a's clock is three hours behind. Another machine still sees it live and keeps its
    claim; a second clone named a is refused while it runs, accepted once it is killed (after its
    heartbeat stood still), and the two clones' rows land in two files that never overwrite."""
    from engine.loop.heartbeat import Pulse
    from engine.loop.remote import Remote
    from engine.loop.repo import Repo
    from engine.loop.swarm import open_claims
    from engine.loop.swarm_files import parse_items

    tmp, remote, env = swarm
    for name in "ac":
        with_heartbeat(tmp / name, 0.5)
    first = start(tmp, remote, env, "a", 40, extra_env={"FAKE_TRAIN_SLEEP": "1.5"}, clock_offset=-3 * 3600)
    try:
        observer, pulse = Remote(Repo(tmp / "b"), str(remote), TAG), Pulse()
        claimed = []
        def a_live_with_a_claim():  # b's view, on b's clock
            observer.fetch()
            pulse.observe(parse_items(t)[-1] for t in observer.files(LEDGER, "beats").values())
            items = [i for t in observer.files(LEDGER, "workers").values() for i in parse_items(t)]
            clone = next((i["clone"] for i in items if i.get("worker") == "a"), None)
            claimed[:] = open_claims({clone: items}, pulse, 120) if clone else []
            return clone and pulse.state(clone) == "live" and claimed
        _wait_for(a_live_with_a_claim, 90)
        assert claimed[0]["at"] < time.time() - 3 * 3600 + 60  # it was written by the skewed clock
        twin = run_cli(tmp / "c", *loop_args(remote, "a", 3), env=env)
        assert twin.returncode != 0 and "another live worker is named 'a'" in twin.stderr, twin.stderr
        assert first.poll() is None
    finally:
        first.kill()
        first.wait()
    taken_over = run_cli(tmp / "c", *loop_args(remote, "a", 4), env=env)  # a's heartbeat now stands still
    assert taken_over.returncode == 0, taken_over.stdout + taken_over.stderr
    assert "watching its heartbeat" in taken_over.stdout
    restarted = start(tmp, remote, env, "a", len(ledger_rows(tmp / "a", TAG)) + 2, clock_offset=-3 * 3600)
    out, _ = restarted.communicate(timeout=120)  # the first clone again: the same worker, not a twin
    assert restarted.returncode == 0 and "watching its heartbeat" not in out, out
    files = worker_files(remote)
    assert len(files) == 2
    for clone_dir in ("a", "c"):
        clone = json.loads((tmp / clone_dir / "runs" / TAG / "swarm" / "clone.json").read_text())["clone"]
        rows = [i for i in files[f"a.{clone}.jsonl"] if i["record"] == "row"]
        assert sorted(r["experiment"] for r in rows) == [r["experiment"] for r in ledger_rows(tmp / clone_dir, TAG)]
        assert len(rows) >= 4


@pytest.mark.slow
def test_kill_minus_nine_and_an_unreachable_remote_lose_nothing(swarm):
    tmp, remote, env = swarm
    slow = {"FAKE_TRAIN_SLEEP": "0.2"}
    for pushes in (1, 2, 3):  # killed while its n-th `git push` is running
        worker = start(tmp, remote, env, "a", 12, extra_env=slow)
        _wait_for(lambda: worker.poll() is not None or _pushing(worker.pid, pushes), 60)
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    worker = start(tmp, remote, env, "a", 12, extra_env=slow)
    _wait_for(lambda: len(ledger_rows(tmp / "a", TAG)) >= 5)
    away = tmp / "remote.away"
    remote.rename(away)  # the remote goes away for a while
    _wait_for(lambda: len(ledger_rows(tmp / "a", TAG)) >= 8)
    away.rename(remote)
    out, _ = worker.communicate(timeout=120)
    assert worker.returncode == 0, out
    assert "unreachable" in out and "is back" in out
    rows = check_union(tmp, remote, "a")
    assert len(rows) == 12


_seen_pushes: set = set()


def _pushing(pid: int, count: int) -> bool:
    """True while a `git push` child of pid runs and it is at least the count-th one seen."""
    for task in os.listdir("/proc"):
        if not task.isdigit():
            continue
        try:
            stat = open(f"/proc/{task}/stat").read().rsplit(")", 1)[1].split()
            cmdline = open(f"/proc/{task}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if int(stat[1]) == pid and cmdline[:2] == [b"git", b"push"]:
            _seen_pushes.add((pid, int(task)))
            if sum(1 for p, _ in _seen_pushes if p == pid) >= count:
                return True
    return False


def _wait_for(condition, timeout=60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if condition():
                return
        except subprocess.CalledProcessError:
            pass
        time.sleep(0.005)
    raise AssertionError("timed out waiting")


@pytest.fixture
def git_daemon(swarm):
    """`git daemon` on 127.0.0.1 serving the bare remote; bounded by `timeout`, stopped at the end."""
    tmp, remote, env = swarm
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    daemon = subprocess.Popen(["timeout", "300", "git", "daemon", "--reuseaddr", "--listen=127.0.0.1",
                               f"--port={port}", f"--base-path={tmp}", "--export-all", "--enable=receive-pack",
                               str(tmp)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"git://127.0.0.1:{port}/remote.git"
    try:
        _wait_for(lambda: subprocess.run(["git", "ls-remote", url], capture_output=True).returncode == 0, 20)
        yield url
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)


@pytest.mark.slow
def test_three_workers_at_once_through_git_daemon(swarm, git_daemon):
    tmp, remote, env = swarm
    workers = [start(tmp, git_daemon, env, name, 7, seed) for seed, name in enumerate("abc")]
    outputs = []
    for worker in workers:
        out, _ = worker.communicate(timeout=240)
        assert worker.returncode == 0, out
        outputs.append(out)
    rows = check_union(tmp, remote, "abc")  # racing pushes lost no row
    assert len(rows) == sum(len(ledger_rows(tmp / name, TAG)) for name in "abc") >= 15
    assert all("stopped:" in out for out in outputs)


ROUTING = Path(__file__).resolve().parents[1] / "examples" / "support-routing"


def test_a_swarm_runs_a_command_task(tmp_path):
    """Two workers on examples/support-routing: they share accuracy rows and one best (no device
    kind: a command task's score is its own), and a worker whose fixed files differ is refused."""
    origin = tmp_path / "origin"
    shutil.copytree(ROUTING, origin / "examples" / "support-routing", ignore=shutil.ignore_patterns("__pycache__"))
    (origin / ".gitignore").write_text("runs/\n__pycache__/\n")
    git(tmp_path, "init", "-q", "-b", "main", str(origin))
    git(origin, "-c", "user.email=t@e", "-c", "user.name=t", "add", "-A")
    git(origin, "-c", "user.email=t@e", "-c", "user.name=t", "commit", "-q", "-m", "start")
    remote = tmp_path / "remote.git"
    git(tmp_path, "clone", "-q", "--bare", str(origin), str(remote))
    for name in "abc":
        git(tmp_path, "clone", "-q", str(remote), str(tmp_path / name))
        git(tmp_path / name, "config", "user.email", f"{name}@example.com")
        git(tmp_path / name, "config", "user.name", name)
    env = {"PYTHONPATH": str(ROUTING.parents[1])}
    args = lambda name, count, seed: ["loop", "--tag", TAG, "--program", "examples/support-routing/program.md",
                                      "--agent", "offline", "--remote", str(remote), "--worker", name,
                                      "--max-experiments", str(count), "--seed", str(seed)]
    for name, count, seed in (("a", 4, 3), ("b", 4, 4)):
        done = run_cli(tmp_path / name, *args(name, count, seed), env=env, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
    shared = union(remote)
    for name in "ab":
        rows = [i for i in shared[name] if i["record"] == "row"]
        assert [r["experiment"] for r in rows] == [r["experiment"] for r in ledger_rows(tmp_path / name, TAG)]
        assert all(r["metric"] == "accuracy" and r["direction"] == "maximize" for r in rows)
        assert all(0 < r["accuracy"] <= 1 for r in rows if r["status"] in ("keep", "discard"))
    heads = git(remote, "for-each-ref", "--format=%(refname:short)", "refs/heads/autoresearch/").split()
    assert sorted(heads) == [f"autoresearch/{TAG}", LEDGER]  # one best for all machines
    best = git(remote, "rev-parse", f"autoresearch/{TAG}")
    kept = [r for name in "ab" for r in shared[name] if r["record"] == "row" and r["kept"]]
    assert best in {r["commit"] for r in kept}
    assert max(r["best_after"] for r in kept if r["commit"] == best) == max(r["best_after"] for r in kept)
    score = tmp_path / "c" / "examples" / "support-routing" / "score.py"
    score.write_text(score.read_text() + "\n# scored differently here\n")
    git(tmp_path / "c", "commit", "-qam", "a different score")
    other = run_cli(tmp_path / "c", *args("c", 3, 5), env=env)
    assert other.returncode != 0 and "fingerprint task " in other.stderr and "fixed files" in other.stderr, \
        other.stderr

