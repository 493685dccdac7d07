"""Engine processes load no bytecode an agent can write (engine/loop/bytecode.py)."""
import importlib.util
import os
import py_compile
import subprocess
import sys

import pytest

from engine import processes
from engine.loop.bytecode import BytecodeCache


def planted_package(tmp_path):
    """m.py says X = 1; its __pycache__ holds a compiled X = 2 stamped with m.py's mtime and size."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    evil = tmp_path / "evil" / "m.py"
    evil.parent.mkdir()
    evil.write_text("X = 2\n")
    source = pkg / "m.py"
    source.write_text("X = 1\n")
    os.utime(evil, ns=(source.stat().st_atime_ns, source.stat().st_mtime_ns))
    pyc = importlib.util.cache_from_source(str(source))
    py_compile.compile(str(evil), cfile=pyc)  # the stamp is the evil source's: same mtime and size
    return pkg


def test_a_planted_pyc_is_loaded_without_the_prefix_and_not_with_it(tmp_path):
    pkg = planted_package(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")}
    plain = subprocess.run([sys.executable, "-c", "import m; print(m.X)"], cwd=pkg, env=env,
                           capture_output=True, text=True, check=True)
    assert plain.stdout.strip() == "2"  # the attack works on a plain interpreter
    cache = BytecodeCache(warm=False)
    try:
        flags = processes.engine_command()[1:5]
        assert flags == ["-P", "-B", "-X", f"pycache_prefix={cache.path}"]
        guarded = subprocess.run([sys.executable, *flags[1:], "-c", "import m; print(m.X)"], cwd=pkg, env=env,
                                 capture_output=True, text=True, check=True)
        assert guarded.stdout.strip() == "1"
    finally:
        cache.close()
    assert not cache.path.exists() and processes.engine_command()[1:3] == ["-P", "-m"]


def test_the_prefix_is_private_frozen_and_any_change_to_it_is_seen(tmp_path):
    cache = BytecodeCache(warm=False)
    try:
        assert (cache.path.stat().st_mode & 0o777) == 0o500 and cache.changes() == []
        if os.geteuid() != 0:  # root writes through the freeze: the stat check below is what holds
            with pytest.raises(PermissionError):
                (cache.path / "x.pyc").write_bytes(b"planted")
        os.chmod(cache.path, 0o700)  # an agent can undo the freeze, but not the ctime it moves
        (cache.path / "x.pyc").write_bytes(b"planted")
        os.chmod(cache.path, 0o500)
        assert any("x.pyc added" in c for c in cache.changes())
        old = cache.path
        cache.renew()
        assert not old.exists() and cache.path != old and cache.changes() == []
    finally:
        cache.close()


@pytest.mark.slow
def test_a_warm_prefix_holds_the_engines_modules(tmp_path):
    cache = BytecodeCache(warm=True)
    try:
        compiled = [p.name for p in cache.path.rglob("*.pyc")]
        assert any(name.startswith("scorer.") for name in compiled)
        assert any(name.startswith("api.") or name.startswith("__init__.") for name in compiled)  # jax's own
        # what engine processes import lazily (the tracer, the checkpoint, the confinement) comes
        # compiled from the prefix too: Python's "compile" audit event names every source compiled
        libraries = ("jax", "flax.nnx", "optax", "orbax.checkpoint", "landlock")
        code = ("import sys\ncompiled = []\n"
                "sys.addaudithook(lambda event, args: compiled.append(str(args[1])) if event == 'compile' else None)\n"
                f"for name in {libraries!r}: __import__(name)\n"
                "print(len([f for f in compiled if 'site-packages' in f]))\n")
        done = subprocess.run([sys.executable, "-B", "-X", f"pycache_prefix={cache.path}", "-c", code],
                              capture_output=True, text=True, check=True)
        assert done.stdout.strip() == "0", done.stderr[-2000:]
    finally:
        cache.close()


def test_an_agent_turn_that_touches_the_prefix_is_refused_and_the_prefix_replaced(loop_env, tmp_path):
    from loop_helpers import ledger_rows, run_cli
    private_tmp = tmp_path / "tmp"  # the loop's prefix is made here, and nobody else's is
    private_tmp.mkdir()
    agent = tmp_path / "agent.py"
    agent.write_text(
        "import glob, os, pathlib, re\n"
        f"for prefix in glob.glob({str(private_tmp)!r} + '/autoresearch-pyc-*'):\n"
        "    os.chmod(prefix, 0o700)\n"
        "    pathlib.Path(prefix, 'scorer.cpython-311.pyc').write_bytes(b'planted')\n"
        "p = pathlib.Path('train.py')\n"
        "p.write_text(re.sub('LEARNING_RATE = [0-9.]+', 'LEARNING_RATE = 0.02', p.read_text()))\n"
        "print('lr 0.02, and a planted pyc')\n")
    done = run_cli(loop_env, "loop", "--tag", "b", "--agent", "command", "--agent-cmd", f"{sys.executable} {agent}",
                   "--max-experiments", "3", env={"TMPDIR": str(private_tmp)})
    assert done.returncode == 0, done.stderr
    rows = ledger_rows(loop_env, "b")
    assert rows[2]["status"] == "rejected"
    assert "changed the engine's bytecode cache" in rows[2]["decision"]
    assert "scorer.cpython-311.pyc added" in rows[2]["decision"]
    assert list(private_tmp.glob("autoresearch-pyc-*")) == []  # all removed when the loop ended


def test_a_prefix_left_by_a_killed_loop_is_removed_by_the_next(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", None)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f"autoresearch-pyc-{dead.stdout.strip()}-abc"
    (stale / "x").mkdir(parents=True)
    os.chmod(stale, 0o500)
    cache = BytecodeCache(warm=False)
    try:
        assert not stale.exists() and cache.path.parent == tmp_path
    finally:
        cache.close()


def test_a_stale_prefix_another_loop_deletes_first_is_skipped(tmp_path, monkeypatch):
    """Two loops start at once (a swarm's workers on one machine): the other one deletes a dead
    loop's prefix between our listing and our look at it. Found by bench/chaos_swarm.py."""
    import shutil
    import tempfile
    from engine.loop import bytecode
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)
    stale = tmp_path / "autoresearch-pyc-999999999-abc"
    (stale / "x").mkdir(parents=True)
    def gone_meanwhile(pid):
        shutil.rmtree(stale)
        return False
    monkeypatch.setattr(bytecode.processes, "process_alive", gone_meanwhile)
    bytecode.remove_stale()
    assert not stale.exists()
