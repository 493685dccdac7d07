"""A failing agent is waited out with backoff; the loop gives up only after the set time."""
from engine.loop import outages
from loop_helpers import ledger_rows, run_cli


def test_backoff_grows_and_the_loop_gives_up_only_after_the_limit(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(outages, "clock", lambda: now[0])
    waits = []
    monkeypatch.setattr(outages, "sleep", lambda s: (waits.append(s), now.__setitem__(0, now[0] + s)))
    failures = outages.Outages(limit_minutes=30)
    while failures.give_up_reason() is None:
        failures.failed()
        if failures.give_up_reason() is None:
            failures.wait(lambda message: None)
    assert waits[:4] == [60, 120, 240, 480] and max(waits) == 600
    assert sum(waits) == 30 * 60  # never waits past the limit, gives up right at it
    assert "max_agent_failure_minutes 30" in failures.give_up_reason()
    failures.ended()
    assert failures.give_up_reason() is None and failures.count == 0


def test_a_command_agent_that_keeps_failing_ends_the_loop_after_the_set_time(loop_env):
    done = run_cli(loop_env, "loop", "--tag", "f", "--agent", "command", "--agent-cmd", "exit 1",
                   "--max-experiments", "20", "--max-agent-failure-minutes", "0.05")
    assert done.returncode == 0, done.stderr
    assert "stopped: the agent failed" in done.stdout and "max_agent_failure_minutes 0.05" in done.stdout
    assert done.stderr.count("agent command exited with status 1") >= 2  # retried, not given up at once
    assert [r["role"] for r in ledger_rows(loop_env, "f")] == ["baseline", "baseline"]


def test_program_md_sets_the_limit(loop_env):
    program = loop_env / "program.md"
    program.write_text(program.read_text().replace("- max_experiments: 6", "- max_experiments: 6\n"
                                                   "- max_agent_failure_minutes: 0.02"))
    from loop_helpers import git
    git(loop_env, "commit", "-qam", "limit")
    done = run_cli(loop_env, "loop", "--tag", "p", "--agent", "command", "--agent-cmd", "exit 3")
    assert "max_agent_failure_minutes 0.02" in done.stdout, done.stdout + done.stderr


def test_a_run_that_prints_or_makes_a_full_disk_is_its_own_crash(tmp_path, monkeypatch):
    """The words "No space left on device" in a run's log are no outage, and neither is a disk
    the run filled with its own files; a disk filled by something else is."""
    import collections
    import types
    from engine.loop import outages

    exp = tmp_path / "exp-0001"
    exp.mkdir()
    log = exp / "train.log"
    log.write_text("OSError: [Errno 28] No space left on device\n")
    failed = types.SimpleNamespace(status="crash", error="No space left on device", log_path=log)
    Usage = collections.namedtuple("Usage", "total used free")
    monkeypatch.setattr(outages, "_usage", lambda where: Usage(10 << 30, 5 << 30, 5 << 30))
    assert not outages.run_met_full_disk(failed, tmp_path)  # plenty free: the words are the run's own
    monkeypatch.setattr(outages, "_usage", lambda where: Usage(64 << 20, 60 << 20, 4 << 20))
    assert outages.run_met_full_disk(failed, tmp_path)  # nearly full, not by this run's files
    (exp / "junk.bin").write_bytes(b"\0" * (40 << 20))
    assert not outages.run_met_full_disk(failed, tmp_path)  # the run itself filled it
