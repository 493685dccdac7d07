"""A loop refused for its arguments or its environment leaves the checkout as it found it:
the same branch, the same tree, no runs/ folder (engine/loop/driver.py, session.py, agents/choose.py)."""
import pytest

from engine import cli
from loop_helpers import git

SECRET_NAMES = ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI")


def _state(root):
    return (git(root, "rev-parse", "--abbrev-ref", "HEAD"), git(root, "rev-parse", "HEAD"),
            git(root, "status", "--porcelain", "--ignored"), git(root, "branch", "--list"))


@pytest.mark.parametrize("argv, says", [
    (["--agent", "command"], "--agent command needs --agent-cmd"),
    (["--agent", "gemini"], "--agent gemini needs GEMINI_API_KEY"),
    (["--agent", "gemini+tune"], "--agent gemini needs GEMINI_API_KEY"),
    (["--program", "no-such-program.md"], "no program file at"),
    (["--data", "no-such-cache"], "is not a prepared dataset"),
    (["--remote", "/tmp/x.git"], "--remote URL and --worker NAME go together"),
])
def test_a_refused_loop_leaves_branch_and_tree_as_they_were(loop_env, monkeypatch, capsys, argv, says):
    for name in SECRET_NAMES:
        monkeypatch.delenv(name, raising=False)
    before = _state(loop_env)
    assert cli.main(["loop", "--tag", "demo", "--max-experiments", "2", *argv]) == 2
    assert says in capsys.readouterr().err
    assert _state(loop_env) == before
    assert not (loop_env / "runs").exists()
    assert "autoresearch/demo" not in git(loop_env, "branch", "--list")


def test_uncommitted_changes_are_refused_before_anything_is_written(loop_env, capsys):
    (loop_env / "train.py").write_text((loop_env / "train.py").read_text() + "# an edit\n")
    before = _state(loop_env)
    assert cli.main(["loop", "--tag", "demo", "--agent", "offline", "--max-experiments", "2"]) == 2
    assert "uncommitted changes in train.py" in capsys.readouterr().err
    assert _state(loop_env) == before and not (loop_env / "runs").exists()


def test_the_loop_says_it_switched_the_checkout_and_how_to_get_back(loop_env, capsys):
    assert cli.main(["loop", "--tag", "demo", "--agent", "offline", "--max-experiments", "2"]) == 0
    out = capsys.readouterr().out
    assert "switched this checkout from main to new branch autoresearch/demo" in out
    stopped = [line for line in out.splitlines() if "stopped:" in line]
    assert stopped and "`git checkout main` takes you back" in stopped[-1]
    assert git(loop_env, "rev-parse", "--abbrev-ref", "HEAD") == "autoresearch/demo"
    assert cli.main(["loop", "--tag", "demo", "--agent", "offline", "--max-experiments", "3"]) == 0
    assert "switched this checkout" not in capsys.readouterr().out  # it was already there
