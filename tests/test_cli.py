"""The command line: every command documents itself without importing JAX."""
import subprocess
import sys

import pytest

from engine.cli import COMMANDS

LIGHT_IMPORT_CHECK = """
import sys
from engine.cli import build_parser
build_parser()
heavy = sorted(m for m in ("jax", "flax", "optax", "orbax", "tensorflow", "tensorflow_datasets")
               if m in sys.modules)
print(",".join(heavy))
"""


def test_parsers_import_no_jax():
    out = subprocess.run([sys.executable, "-c", LIGHT_IMPORT_CHECK], capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_help_with_usage(command):
    out = subprocess.run([sys.executable, "-m", "engine.cli", command, "--help"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert f"autoresearch {command}" in out.stdout


def test_unknown_command_is_refused():
    out = subprocess.run([sys.executable, "-m", "engine.cli", "frobnicate"],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert "invalid choice" in out.stderr


def _cli(*argv):
    return subprocess.run([sys.executable, "-m", "engine.cli", *argv], capture_output=True, text=True)


def test_help_lists_no_hidden_names():
    out = _cli("--help")
    assert out.returncode == 0, out.stderr
    assert "SUPPRESS" not in out.stdout
    assert "trace" not in out.stdout  # the tracer process is the engine's, not a person's
    assert "loop" in out.stdout and "sample" in out.stdout


def test_unknown_flag_is_reported_under_its_command_with_a_close_match():
    out = _cli("loop", "--tag", "demo", "--max-experimnts", "4")
    assert out.returncode == 2
    assert "usage: autoresearch loop" in out.stderr
    assert "autoresearch loop: error: unrecognized arguments: --max-experimnts 4" in out.stderr
    assert "did you mean --max-experiments?" in out.stderr


def test_mistyped_command_and_choice_suggest_a_close_match():
    out = _cli("trian")
    assert out.returncode == 2 and "did you mean train?" in out.stderr and "trace" not in out.stderr
    out = _cli("loop", "--tag", "demo", "--agent", "gemnii")
    assert out.returncode == 2 and "did you mean gemini?" in out.stderr
