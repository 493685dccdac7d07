"""Paths are paths: an editable file and a score command whose paths hold spaces and non-ASCII
characters work through the real loop, in program.md's list and quoted forms."""
import os
import shlex
import subprocess
import sys

import pytest

from engine.errors import UserError
from engine.loop import protocol
from loop_helpers import git, ledger_rows

EDITABLE = "my rules/règles été, v2.txt"
SCORE_DIR = "score tools/ñ"

PROGRAM = f"""# odd paths

## Task
- kind: command
- editable: "{EDITABLE}", notes.txt
- score: python "{SCORE_DIR}/scöre.py"
- check: python "{SCORE_DIR}/scöre.py" --check
- metric: m
- direction: minimize

## Noise
- baseline_runs: 1
- confirm_runs: 0
- max_runs: 1
"""

SCORE = f"""import sys
value = float(open({EDITABLE!r}, encoding="utf-8").read())
if "--check" not in sys.argv:
    print(f"m: {{value}}")
"""

AGENT = """python -c "import os, shlex; path = shlex.split(os.environ['AUTORESEARCH_EDITABLE'])[0]; \
open(path, 'w', encoding='utf-8').write('3\\\\n')"; echo lower value"""


def test_an_editable_file_and_a_score_command_with_spaces_and_accents(tmp_path):
    root = tmp_path / "repo ü"
    (root / "my rules").mkdir(parents=True)
    (root / SCORE_DIR).mkdir(parents=True)
    (root / EDITABLE).write_text("5\n", encoding="utf-8")
    (root / "notes.txt").write_text("notes\n")
    (root / SCORE_DIR / "scöre.py").write_text(SCORE, encoding="utf-8")
    (root / "program.md").write_text(PROGRAM, encoding="utf-8")
    (root / ".gitignore").write_text("runs/\n")
    for args in (["init", "-q", "-b", "main"], ["config", "user.email", "t@example.com"],
                 ["config", "user.name", "t"], ["add", "-A"], ["commit", "-q", "-m", "start"]):
        git(root, *args)
    done = subprocess.run([sys.executable, "-m", "engine.cli", "loop", "--tag", "odd", "--agent", "command",
                           "--agent-cmd", AGENT, "--max-experiments", "2"], cwd=root, capture_output=True,
                          text=True, timeout=120, env=dict(os.environ))
    assert done.returncode == 0, done.stderr[-3000:]
    rows = ledger_rows(root, "odd")
    assert [r["m"] for r in rows] == [5.0, 3.0], [(r["status"], r.get("decision")) for r in rows]
    assert git(root, "show", f"{rows[1]['commit']}", "--name-only", "--format=", "-z").strip("\0") == EDITABLE


def test_program_md_forms_for_paths_with_spaces():
    listed = protocol.parse("## Editable files\n- my file.py\n- `other dir/ö.py`\n- \"quoted.py\"\n")
    assert listed.editable == ["my file.py", "other dir/ö.py", "quoted.py"]
    task = protocol.parse("## Task\n- kind: command\n- editable: [\"a b.txt\", 'c,d.txt', `e f.txt`] g.txt\n"
                          "- score: sh s.sh\n- metric: m\n")
    assert task.editable == ["a b.txt", "c,d.txt", "e f.txt", "g.txt"]
    with pytest.raises(UserError, match="relative to the repository"):
        protocol.parse("## Editable files\n- /etc/passwd\n")
    assert shlex.split(shlex.join(task.editable)) == task.editable
