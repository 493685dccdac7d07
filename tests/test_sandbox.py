"""The audit hooks, in a process of their own (a hook cannot be removed once added)."""
import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent('''
    import json, os, socket, subprocess, sys, ctypes
    from pathlib import Path
    from engine.training import sandbox

    root = Path(sys.argv[1])
    data, runs = root / "cache" / "ds", root / "runs"
    run_dir = runs / "tag" / "exp-0002"
    guard = sandbox.install(run_dir, data, root / "cache", [data / "manifest.json", root / "cache" / "xla"],
                            writable=[root / "cache" / "xla"])
    results = {}

    def attempt(name, action):
        try:
            action()
            results[name] = "allowed"
        except sandbox.Refused as error:
            results[name] = "refused: " + str(error)

    attempt("read val", lambda: open(data / "val.tokens.npy", "rb").read())
    attempt("read train", lambda: open(data / "train.tokens.npy", "rb").read())
    attempt("read manifest", lambda: open(data / "manifest.json").read())
    attempt("write compile cache", lambda: (root / "cache" / "xla" / "entry").write_text("x"))
    attempt("read other run", lambda: open(runs / "tag" / "exp-0001" / "result.json").read())
    attempt("list other runs", lambda: os.listdir(runs / "tag"))
    attempt("write own run", lambda: (run_dir / "out.txt").write_text("x"))
    attempt("write the repository", lambda: (root / "numpy.py").write_text("x"))
    attempt("append elsewhere", lambda: open(root / "elsewhere.txt", "a").write("x"))
    attempt("os.open to create", lambda: os.open(root / "sitecustomize.py", os.O_WRONLY | os.O_CREAT))
    attempt("rename into the repository", lambda: os.rename(run_dir / "out.txt", root / "jax.py"))
    attempt("symlink to val", lambda: os.symlink(data / "val.tokens.npy", run_dir / "v.npy"))
    attempt("relative path", lambda: (os.chdir(data), open("val.tokens.npy", "rb")))
    os.chdir(root)
    attempt("read elsewhere", lambda: open(root / "elsewhere.txt").read())
    attempt("import", lambda: __import__("csv"))
    attempt("subprocess", lambda: subprocess.run(["true"]))
    attempt("os.system", lambda: os.system("true"))
    attempt("inet socket", lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    attempt("socketpair", lambda: socket.socketpair())
    attempt("ctypes", lambda: ctypes.CDLL("libc.so.6"))
    import engine.training.clock as clock
    attempt("engine code", lambda: setattr(clock.budget_from_args, "__code__", (lambda args, d: None).__code__))
    class Mine:
        pass
    attempt("own class", lambda: setattr(Mine, "x", 1))
    import gc
    attempt("gc", lambda: gc.get_referrers(guard))
    try:
        guard.check()
        results["check"] = "passed"
    except sandbox.Refused as error:
        results["check"] = "raised: " + str(error)
    print(json.dumps(results))
''')


def test_hooks_refuse_what_training_does_not_need_and_allow_the_rest(tmp_path):
    data = tmp_path / "cache" / "ds"
    data.mkdir(parents=True)
    for name in ("val.tokens.npy", "train.tokens.npy", "manifest.json"):
        (data / name).write_text("x")
    (tmp_path / "cache" / "xla").mkdir()
    other = tmp_path / "runs" / "tag" / "exp-0001"
    other.mkdir(parents=True)
    (other / "result.json").write_text("{}")
    (tmp_path / "runs" / "tag" / "exp-0002").mkdir()
    (tmp_path / "elsewhere.txt").write_text("x")
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.strip().splitlines()[-1])
    refused = {name for name, outcome in got.items() if outcome.startswith("refused")}
    assert refused == {"read val", "read train", "read other run", "list other runs", "symlink to val",
                       "relative path", "subprocess", "os.system", "inet socket", "ctypes", "engine code", "gc",
                       "write the repository", "append elsewhere", "os.open to create", "rename into the repository"}
    assert "numpy.py: train.py's process may write only in its own output folder" in got["write the repository"]
    assert not (tmp_path / "numpy.py").exists() and not (tmp_path / "sitecustomize.py").exists()
    assert "val.tokens.npy: the data (held-out splits above all) is not readable by train.py" in got["read val"]
    assert "other runs' files are not readable by train.py" in got["read other run"]
    assert "started a process" in got["subprocess"] and "network socket" in got["inet socket"]
    assert "changed engine.training.clock.budget_from_args.__code__" in got["engine code"]
    # every refusal was caught above, yet the guard still ends the run with the first one
    assert got["check"].startswith("raised: train.py opened") and "val.tokens.npy" in got["check"]


def test_run_directory_inside_the_cache_is_refused(tmp_path):
    import pytest
    from engine.errors import UserError
    from engine.training import sandbox
    with pytest.raises(UserError, match="inside the data cache"):
        sandbox.check_paths(tmp_path / "ds" / "run", tmp_path / "ds")


def test_the_tracers_hooks_refuse_the_engines_data_preparation(tmp_path):
    """The tracer may neither import engine.data (splits, sources, prepare) nor read its files."""
    script = textwrap.dedent(f'''
        from pathlib import Path
        from engine.training import sandbox
        out = Path({str(tmp_path / "out")!r})
        sandbox.install_for_tracer(out, out.parent / "data", out.parent / "cache", out.parent / "xla")
        results = []
        for attempt in (lambda: __import__("engine.data.splits"),
                        lambda: open(sandbox.DATA_PACKAGE / "splits.py").read()):
            try:
                attempt()
                results.append("allowed")
            except sandbox.Refused as error:
                results.append(str(error))
        print(results)
    ''')
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "imported engine.data.splits" in done.stdout and "splits.py" in done.stdout
    assert "allowed" not in done.stdout
