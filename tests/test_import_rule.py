"""The layout's main rule: the loop, agents and report sides never import JAX.

Every module of those packages (and the engine's root modules) is imported, one at a
time, in a fresh interpreter; the first one that pulls in a JAX-side package is named.
"""
import pkgutil
import subprocess
import sys

import engine
from engine import agents, loop, report

JAX_SIDE = ("jax", "jaxlib", "flax", "optax", "orbax")
ROOT_MODULES = ("engine", "engine.cli", "engine.errors", "engine.paths", "engine.constants", "engine.files",
                "engine.processes")


def loop_side_modules() -> list[str]:
    names = list(ROOT_MODULES)
    for package in (loop, agents, report):
        names.append(package.__name__)
        names += [m.name for m in pkgutil.iter_modules(package.__path__, package.__name__ + ".")]
    return names


def test_the_loop_side_lists_its_modules():
    names = loop_side_modules()
    assert {"engine.loop.cycle", "engine.loop.driver", "engine.agents.gemini", "engine.report.report"} <= set(names)
    assert not any(name.startswith(("engine.training", "engine.scoring")) for name in names)


def test_no_loop_side_module_imports_jax():
    code = (
        "import importlib, sys\n"
        f"for name in {loop_side_modules()!r}:\n"
        "    importlib.import_module(name)\n"
        f"    bad = sorted(m for m in sys.modules if m.split('.')[0] in {JAX_SIDE!r})\n"
        "    if bad:\n"
        "        sys.exit(f'{name} imports {bad[:3]}')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=str(engine.__path__[0] + "/.."))
    assert done.returncode == 0, done.stderr
