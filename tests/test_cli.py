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
