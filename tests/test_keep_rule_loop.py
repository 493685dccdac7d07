"""The keep rule through the real loop (real git, real subprocesses): a command task whose score has
noise not tied to the seed (os.urandom), one candidate per fresh loop."""
import textwrap
from pathlib import Path

import pytest

from loop_helpers import git, ledger_rows, run_cli

SCORE = textwrap.dedent('''
    import os, random
    offset = float(open("params.txt").read().split("offset =")[1].split()[0])
    print(f"score: {10 + offset + random.Random(os.urandom(8)).gauss(0, 1):.6f}")
''')
PROGRAM = textwrap.dedent('''
    ## Task
    - kind: command
    - editable: params.txt
    - score: python score.py
    - metric: score
    - direction: maximize
    ## Noise
    - confirm_runs: 0
''')
NOOP = "echo '# a comment the score ignores' >> params.txt && echo no-op"
GAIN = "sed -i 's/offset = 0/offset = 3/' params.txt && echo plus three sigma"


def _loops(tmp_path: Path, agent: str, count: int) -> int:
    """Kept first candidates over `count` fresh loops (tags) in one repository."""
    root = tmp_path / "repo"
    root.mkdir()
    for name, text in {"params.txt": "offset = 0\n", "score.py": SCORE, "program.md": PROGRAM,
                       ".gitignore": "runs/\n__pycache__/\n"}.items():
        (root / name).write_text(text)
    git(root, "init", "-q", "-b", "main")
    for args in (("add", "-A"), ("commit", "-q", "-m", "start")):
        git(root, "-c", "user.email=t@e", "-c", "user.name=t", *args)
    kept = 0
    for n in range(count):
        git(root, "checkout", "-q", "main")
        done = run_cli(root, "loop", "--tag", f"t{n}", "--agent", "command", "--agent-cmd", agent,
                       "--max-experiments", "9", env={"PYTHONPATH": str(Path(__file__).resolve().parents[1])})
        assert done.returncode == 0, done.stderr
        rows = ledger_rows(root, f"t{n}")
        first = [r for r in rows if r.get("role") == "candidate"][0]["experiment"]
        kept += any(r["kept"] for r in rows if r.get("rerun_of", r["experiment"]) == first and r["role"] != "baseline")
    return kept


@pytest.mark.slow
def test_no_op_candidates_are_rarely_kept(tmp_path):
    kept = _loops(tmp_path, NOOP, 60)
    print(f"no-op: {kept} of 60 kept")
    assert kept <= 7


@pytest.mark.slow
def test_three_sigma_candidates_are_kept(tmp_path):
    kept = _loops(tmp_path, GAIN, 20)
    print(f"+3 sigma: {kept} of 20 kept")
    assert kept >= 17
