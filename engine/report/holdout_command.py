"""A command task's held-out figure: its `holdout` command, run only here, for the report.

For the baseline and each kept commit, the commit's tree is exported (git archive) to a
temporary directory and the holdout command runs there, as the score ran in the
repository root; its last `NAME: value` line naming the task's metric is the figure.
Figures are cached in runs/<tag>/holdout.json. Nothing here reaches the ledger or
anything an agent reads, so the loop never sees a held-out figure.
"""
from __future__ import annotations

import io
import json
import tarfile
import tempfile
from pathlib import Path

from engine.files import write_atomic
from engine.loop import tasks
from engine.loop.task_spec import TaskSpec

CACHE_FILE = "holdout.json"
HOLDOUT_TIMEOUT_SECONDS = 3600.0


def holdout_figures(run_dir: Path, rows: list[dict], repo_root: Path, log=lambda message: None) -> dict[int, dict]:
    """{experiment: {"test_bpb": value or None, "error": str or None}}, the shape heldout.py gives:
    for a command task `test_bpb` holds the holdout command's figure of the task's metric."""
    cache = _load(run_dir)
    figures = {}
    for row in rows:
        command, metric = row.get("holdout_command"), row.get("metric")
        if not command or not metric:
            figures[row.get("experiment")] = {"test_bpb": None, "error": "the task has no holdout command"}
            continue
        key = f"{row.get('commit')}:{command}"
        if key not in cache:
            log(f"holdout: experiment {row.get('experiment')} ({str(row.get('commit'))[:7]})")
            entry = _run(row, command, metric, repo_root)
            if entry["error"] is not None:
                figures[row.get("experiment")] = entry  # failures are tried again next time
                continue
            cache[key] = entry
            write_atomic(Path(run_dir) / CACHE_FILE, json.dumps(cache, indent=1, sort_keys=True))
        figures[row.get("experiment")] = cache[key]
    return figures


def _run(row: dict, command: str, metric: str, repo_root: Path) -> dict:
    spec = TaskSpec(kind="command", score=command, metric=metric, pass_env=list(row.get("pass_env") or []))
    with tempfile.TemporaryDirectory(prefix="autoresearch-holdout-") as tmp:
        try:
            _export(repo_root, row["commit"], Path(tmp))
        except Exception as error:  # GitPython raises several kinds for a missing commit
            return {"test_bpb": None, "error": f"cannot export commit {row.get('commit')}: {error}"}
        log_path = Path(tmp) / ".holdout.log"
        log_path.write_bytes(b"")
        finished = tasks.run_shell(command, log_path, HOLDOUT_TIMEOUT_SECONDS, Path(tmp), tasks.command_env(spec))
        status, result, error = tasks.judge_score(finished.output, finished.returncode, finished.timed_out,
                                                  metric, HOLDOUT_TIMEOUT_SECONDS)
    if status != "ok":
        return {"test_bpb": None, "error": f"holdout: {error}"}
    return {"test_bpb": result[metric], "error": None}


def _export(repo_root: Path, commit: str, into: Path) -> None:
    from engine.loop.repo import Repo

    stream = io.BytesIO()
    Repo(repo_root).git_repo.archive(stream, commit)
    stream.seek(0)
    with tarfile.open(fileobj=stream) as archive:
        archive.extractall(into, filter="data")


def _load(run_dir: Path) -> dict:
    try:
        value = json.loads((Path(run_dir) / CACHE_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}
