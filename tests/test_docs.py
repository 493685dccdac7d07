"""Every command in README.md and docs/ stays runnable: each `autoresearch` command parses with
the real parser (its subcommand and flags exist), each script and file it names exists, each
extra it installs is in pyproject.toml; the README's main job runs, at tiny sizes."""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from engine import cli

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SEPARATORS = {"&&", "||", ";", "|", "\n", "&"}
PREFIXES = ("uv run", "nice", "time", "exec")  # words before the command itself


def bash_blocks(path: Path) -> list[str]:
    return re.findall(r"^```bash\n(.*?)^```", path.read_text(), flags=re.S | re.M)


def without_comments(block: str) -> str:
    """The block less its `# ...` comments (a `#` outside quotes that starts a word)."""
    out, quote, i = [], None, 0
    while i < len(block):
        char = block[i]
        if quote is None and char == "#" and (i == 0 or block[i - 1] in " \t\n"):
            while i < len(block) and block[i] != "\n":
                i += 1
            continue
        if char in "'\"" and (quote is None or quote == char):
            quote = None if quote else char
        out.append(char)
        i += 1
    return "".join(out)


def commands(block: str) -> list[list[str]]:
    """The simple commands of a bash block: words, with comments and leading VAR=value dropped."""
    lexer = shlex.shlex(without_comments(block).replace("\\\n", " "), posix=True, punctuation_chars=";&|\n")
    lexer.whitespace, lexer.commenters, lexer.whitespace_split = " \t\r", "", True
    found, words = [], []
    for token in lexer:
        if token in SEPARATORS or set(token) <= {";", "&", "|", "\n"}:
            found.append(words)
            words = []
        else:
            words.append(token)
    found.append(words)
    return [strip_prefix(w) for w in found if strip_prefix(w)]


def strip_prefix(words: list[str]) -> list[str]:
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
        words = words[1:]
    for prefix in PREFIXES:
        if " ".join(words[:len(prefix.split())]) == prefix:
            return strip_prefix(words[len(prefix.split()):])
    return words


def documented_commands() -> list[tuple[str, list[str]]]:
    return [(f"{path.relative_to(ROOT)}", words) for path in DOCS for block in bash_blocks(path)
            for words in commands(block)]


def extras() -> set[str]:
    return set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])


def check(words: list[str]) -> str | None:
    """What is wrong with one documented command, or None."""
    head = words[0]
    if head == "autoresearch" or words[:2] in (["python", "train.py"], ["python", "prepare.py"]):
        argv = words[1:] if head == "autoresearch" else ["train" if "train" in words[1] else "prepare", *words[2:]]
        try:
            cli.parse(argv)
        except SystemExit as exit_:
            return None if exit_.code == 0 else f"does not parse: {' '.join(words)}"
        return None
    if head in ("bash", "python", "source") and len(words) > 1 and not words[1].startswith("-"):
        target = words[1]
        if "/" in target and not target.startswith(("$", "~", "/", ".venv/")) and not (ROOT / target).exists():
            return f"names a file that does not exist: {target}"
    if head == "pip" or words[:2] == ["uv", "sync"]:
        wanted = [e for w in words for e in re.findall(r"\.\[([^\]]*)\]", w) for e in e.split(",")]
        wanted += [words[i + 1] for i, w in enumerate(words[:-1]) if w == "--extra"]
        missing = sorted(set(wanted) - extras())
        if missing:
            return f"installs extras pyproject.toml lacks: {missing}"
    return None


def test_the_docs_hold_commands_to_check():
    found = documented_commands()
    autoresearch = [w for _, w in found if w[0] == "autoresearch"]
    assert len(autoresearch) > 30, "the parser of the docs' bash blocks found too few commands"
    assert any(w[:2] == ["autoresearch", "loop"] and "--tag" in w for w in autoresearch)


def test_every_documented_command_parses_and_names_what_exists():
    problems = [f"{where}: {problem}" for where, words in documented_commands()
                if (problem := check(words))]
    assert not problems, "\n".join(problems)


def test_a_mistyped_flag_in_the_docs_would_be_caught():
    assert check(["autoresearch", "loop", "--tag", "x", "--max-experimnts", "4"])
    assert check(["autoresearch", "trian"])
    assert check(["bash", "scripts/no_such_setup.sh"])
    assert check(["uv", "sync", "--extra", "cudaa"])
    assert check(["autoresearch", "loop", "--tag", "x", "--max-experiments", "4"]) is None


def readme_main_job() -> list[list[str]]:
    """The README's first command line (the main job), without its install step."""
    block = bash_blocks(ROOT / "README.md")[0]
    line = next(l for l in block.splitlines() if l.startswith("pip install -e . &&"))
    return [w for w in commands(line) if w[0] == "autoresearch"]


TINY = {"prepare": ["--max-chars", "3000000", "--vocab-size", "512", "--seq-len", "64", "--eval-tokens", "4096"],
        "loop": ["--max-experiments", "2", "--budget-seconds", "2"]}


def tiny(words: list[str]) -> list[str]:
    """The command at test size: the same flags, with TINY's values where TINY names them."""
    overrides, out, skip = TINY.get(words[1], []), [], False
    names = overrides[::2]
    for word in words:
        if skip:
            skip = False
        elif word in names:
            skip = True
        else:
            out.append(word)
    return out + overrides


@pytest.mark.slow
def test_the_readme_main_job_runs_at_tiny_sizes(tmp_path):
    """prepare, loop and report as the README writes them (sizes shrunk), in a copy of the repository;
    then status and sample on the tag."""
    repo = tmp_path / "repo"
    for name in subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True,
                               check=True).stdout.split("\0"):
        if name and (ROOT / name).is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, repo / name)
    for args in (["init", "-q", "-b", "main"], ["add", "-A"],
                 ["-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "clone"]):
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)
    env = {**os.environ, "AUTORESEARCH_CACHE": str(tmp_path / "cache")}
    env.pop("AUTORESEARCH_TRAIN_COMMAND", None)
    job = readme_main_job()
    assert [w[1] for w in job] == ["prepare", "loop", "report"]
    outputs = []
    for words in [*job, ["autoresearch", "status", "--tag", "demo"],
                  ["autoresearch", "sample", "--tag", "demo", "--prompt", "def ", "--max-tokens", "8"]]:
        done = subprocess.run([sys.executable, "-m", "engine.cli", *tiny(words)[1:]], cwd=repo, env=env,
                              capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"{' '.join(tiny(words))}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        outputs.append(done.stdout + done.stderr)
    assert "switched this checkout from main" in outputs[1] and "git checkout main" in outputs[1]
    assert (repo / "runs" / "demo" / "report.md").is_file() and (repo / "runs" / "demo" / "progress.png").is_file()
    assert "scale: a demo" in outputs[2] and "a real run needs" in outputs[2]
