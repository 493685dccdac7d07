"""The loop's memory stays flat whatever a command prints: a real loop whose score command
and whose agent each print a gigabyte, with the loop's peak RSS asserted."""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loop_helpers import git, ledger_rows

GIGABYTE = 1 << 30
PEAK_RSS_LIMIT_MB = 400  # the loop itself is ~120 MB; holding the output would be > 1000

PROGRAM = """# a command task whose score prints a gigabyte for the candidate

## Task
- kind: command
- editable: value.txt
- score: sh score.sh
- metric: m
- direction: minimize
- timeout_seconds: 300

## Noise
- baseline_runs: 1
- confirm_runs: 0
- max_runs: 1
"""

SCORE = f"""if [ "$(cat value.txt)" = 4 ]; then yes {'x' * 99} | head -c {GIGABYTE}; echo; fi
echo "m: $(cat value.txt)"
"""
AGENT = f"yes {'y' * 99} | head -c {GIGABYTE}; echo; echo 4 > value.txt; echo lower value"


def vm_hwm_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


@pytest.mark.slow
def test_a_gigabyte_from_the_score_and_from_the_agent_leaves_the_loop_flat(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    (root / "value.txt").write_text("5\n")
    (root / "score.sh").write_text(SCORE)
    (root / "program.md").write_text(PROGRAM)
    (root / ".gitignore").write_text("runs/\n")
    for args in (["init", "-q", "-b", "main"], ["config", "user.email", "t@example.com"],
                 ["config", "user.name", "t"], ["add", "-A"], ["commit", "-q", "-m", "start"]):
        git(root, *args)
    process = subprocess.Popen([sys.executable, "-m", "engine.cli", "loop", "--tag", "big", "--agent", "command",
                                "--agent-cmd", AGENT, "--max-experiments", "2"], cwd=root,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=dict(os.environ))
    peak = 0.0
    deadline = time.monotonic() + 240
    while process.poll() is None and time.monotonic() < deadline:
        peak = max(peak, vm_hwm_mb(process.pid))
        time.sleep(0.05)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err.decode()[-2000:]
    rows = ledger_rows(root, "big")
    assert rows[0]["status"] == "baseline" and rows[1]["m"] == 4.0  # scored from the tail
    assert rows[1]["description"] == "lower value"
    assert peak < PEAK_RSS_LIMIT_MB, f"the loop grew to {peak:.0f} MB"
    score_log = root / "runs" / "big" / rows[1]["log"]
    assert score_log.stat().st_size < 3 << 20
    assert "bytes of output elided" in score_log.read_text()
    assert (root / "runs" / "big" / "agent.log").stat().st_size < 3 << 20
