"""uv.lock matches pyproject.toml, and a fresh clone installs from it with `uv sync --locked`
(skipped where uv is not installed: `pip install uv`)."""
import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UV = shutil.which("uv")
needs_uv = pytest.mark.skipif(UV is None, reason="uv is not installed (pip install uv)")


def uv(*args, cwd, timeout=120):
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")}
    return subprocess.run([UV, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_the_lock_is_committed_and_names_every_dependency():
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    locked = {package["name"] for package in lock["package"]}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [d for d in project["dependencies"]] + [d for group in project["optional-dependencies"].values()
                                                    for d in group]
    names = {d.split(";")[0].split("[")[0].split(">")[0].split("<")[0].split("=")[0].strip().lower() for d in wanted}
    assert names - locked == set()
    tracked = subprocess.run(["git", "ls-files", "uv.lock"], cwd=ROOT, capture_output=True, text=True).stdout
    assert tracked.strip() == "uv.lock", "uv.lock must be committed"


@needs_uv
def test_the_lock_matches_pyproject():
    done = uv("lock", "--check", cwd=ROOT)
    assert done.returncode == 0, f"uv.lock is stale: run `uv lock` and commit it\n{done.stderr}"


@needs_uv
@pytest.mark.slow
def test_a_fresh_clone_syncs_from_the_lock_and_runs(tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    shutil.copy2(ROOT / "uv.lock", clone / "uv.lock")  # the working tree's lock, committed or not
    shutil.copy2(ROOT / "pyproject.toml", clone / "pyproject.toml")
    synced = uv("sync", "--locked", cwd=clone, timeout=900)
    assert synced.returncode == 0, synced.stderr[-3000:]
    assert not subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "--", "uv.lock"],
                              cwd=clone, capture_output=True, text=True).stdout.strip().startswith("??")
    ran = uv("run", "--locked", "autoresearch", "--help", cwd=clone)
    assert ran.returncode == 0 and "loop" in ran.stdout, ran.stderr[-2000:]
