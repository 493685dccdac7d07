"""engine/confine.py: kernel rules that hold for C code too (Landlock), in processes of their own."""
import os
import subprocess
import sys
import textwrap

import pytest

from engine import confine

SCRIPT = textwrap.dedent('''
    import json, os, sys
    from pathlib import Path
    from engine import confine
    root = Path(sys.argv[1])
    applied = confine.confine([root / "secret"], writable=[root / "out"])
    import tensorstore as ts  # reads files in C++, out of the audit hooks' sight
    result = {"applied": applied}
    def attempt(name, action):
        try:
            action()
            result[name] = "allowed"
        except Exception as error:
            result[name] = "refused"
    attempt("open secret", lambda: open(root / "secret" / "val").read())
    attempt("c++ read secret", lambda: ts.KvStore.open(f"file://{root}/secret/").result().read("val").result())
    attempt("through a link", lambda: open(root / "link" / "secret" / "val").read())
    attempt("read elsewhere", lambda: open(root / "notes").read())
    attempt("write out", lambda: (root / "out" / "x").write_text("x"))
    attempt("write elsewhere", lambda: (root / "planted.py").write_text("x"))
    print(json.dumps(result))
''')


@pytest.mark.skipif(not confine.available(), reason="this kernel has no Landlock")
def test_a_confined_process_reads_all_but_the_denied_tree_and_writes_only_its_folder(tmp_path):
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "val").write_text("held-out text")
    (tmp_path / "notes").write_text("fine")
    (tmp_path / "link").symlink_to(tmp_path)  # a way back onto the path to the secret
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert done.returncode == 0, done.stderr
    got = __import__("json").loads(done.stdout.strip().splitlines()[-1])
    assert got == {"applied": True, "open secret": "refused", "c++ read secret": "refused",
                   "through a link": "refused", "read elsewhere": "allowed", "write out": "allowed",
                   "write elsewhere": "refused"}


def test_readable_roots_leave_out_the_way_to_a_denied_folder_and_links_onto_it(tmp_path):
    (tmp_path / "a" / "secret").mkdir(parents=True)
    (tmp_path / "a" / "other").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "to-a").symlink_to(tmp_path / "a")
    roots = set(confine.readable_roots([tmp_path / "a" / "secret"]))
    assert tmp_path / "b" in roots and tmp_path / "a" / "other" in roots
    assert not {tmp_path / "a", tmp_path / "a" / "secret", tmp_path / "to-a", tmp_path} & roots


NETWORK_SCRIPT = textwrap.dedent('''
    import json, socket, sys
    from engine import confine
    port = int(sys.argv[1])
    result = {"held": confine.close_network()}
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        result["tcp"] = "connected"
    except OSError as error:
        result["tcp"] = error.strerror
    try:
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("127.0.0.1", port))
        result["udp"] = "sent"
    except OSError as error:
        result["udp"] = error.strerror
    print(json.dumps(result))
''')


def run_closed(port: int, *prefix: str) -> dict:
    import json

    done = subprocess.run([*prefix, sys.executable, "-c", NETWORK_SCRIPT, str(port)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture
def local_port():
    import socket

    server = socket.create_server(("127.0.0.1", 0))
    yield server.getsockname()[1]
    server.close()


def test_a_process_whose_network_is_closed_reaches_nothing_on_localhost(local_port):
    got = run_closed(local_port)
    if not got["held"]:
        pytest.skip("this kernel allows neither a network namespace nor Landlock's network rules here")
    assert got["tcp"] != "connected"
    if "network namespace" in got["held"]:
        assert got["udp"] != "sent"


@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/usr/bin/setpriv"), reason="needs root and setpriv")
def test_without_the_right_to_a_network_namespace_a_user_namespace_gives_one(local_port):
    """Without CAP_SYS_ADMIN (a plain user), the namespace comes with a user namespace of its own."""
    got = run_closed(local_port, "setpriv", "--inh-caps=-sys_admin", "--bounding-set=-sys_admin")
    if "network namespace" not in got["held"]:
        pytest.skip("this kernel gives unprivileged users no user namespaces")
    assert got["tcp"] != "connected" and got["udp"] != "sent"
