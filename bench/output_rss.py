"""Peak RSS of the loop while a score command or a command agent prints N bytes.

    python bench/output_rss.py --bytes 10M 1G
    PYTHONPATH=/path/to/other/checkout python bench/output_rss.py ...   # the same on other code

Each measurement is one real `autoresearch loop` on a scratch command task (baseline run once,
then one agent turn and one scored experiment): the score command or the agent prints the given
bytes (`yes` through `head -c`, lines of 100 characters) before its real output. The loop's peak
resident memory is its VmHWM, read from /proc while it runs.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from loop_helpers import git  # noqa: E402

LINE = "x" * 99
PROGRAM = """# output test

## Task
- kind: command
- editable: value.txt
- score: {score}
- metric: m
- direction: minimize
- timeout_seconds: 300

## Noise
- baseline_runs: 1
- confirm_runs: 0
- max_runs: 1
"""


def flood(size: int) -> str:
    return f"yes {LINE} | head -c {size}; echo" if size else "true"


def make_repo(folder: Path, score_bytes: int) -> Path:
    root = folder / "repo"
    root.mkdir(parents=True)
    (root / "value.txt").write_text("5\n")
    score = f"{flood(score_bytes)}; echo \\\"m: $(cat value.txt)\\\""
    (root / "program.md").write_text(PROGRAM.format(score=f"sh -c \"{score}\""))
    (root / ".gitignore").write_text("runs/\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "t@example.com")
    git(root, "config", "user.name", "t")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "start")
    return root


def peak_rss_mb(score_bytes: int, agent_bytes: int, env: dict | None = None) -> tuple[float, float, int]:
    """(peak RSS of the loop in MB, seconds, exit status) of one loop run."""
    with tempfile.TemporaryDirectory(prefix="rss-") as folder:
        root = make_repo(Path(folder), score_bytes)
        agent = f"{flood(agent_bytes)}; echo 4 > value.txt; echo lower value"
        command = [sys.executable, "-m", "engine.cli", "loop", "--tag", "rss", "--agent", "command",
                   "--agent-cmd", agent, "--max-experiments", "2"]
        started = time.monotonic()
        process = subprocess.Popen(command, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                   env={**os.environ, **(env or {})})
        peak = 0
        while process.poll() is None:
            peak = max(peak, _vm_hwm_kb(process.pid))
            time.sleep(0.05)
        err = process.stderr.read().decode(errors="replace")
        if process.returncode != 0:
            print(err[-2000:], file=sys.stderr)
        return peak / 1024, time.monotonic() - started, process.returncode


def _vm_hwm_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bytes", nargs="+", default=["10M", "1G"])
    args = parser.parse_args()
    for text in args.bytes:
        size = parse_size(text)
        for who in ("score", "agent"):
            mb, seconds, code = peak_rss_mb(size if who == "score" else 0, size if who == "agent" else 0)
            print(json.dumps({"printed": text, "by": who, "peak_rss_mb": round(mb, 1), "seconds": round(seconds, 1),
                              "exit": code}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
