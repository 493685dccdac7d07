"""The swarm's git plumbing against a real bare repository: fast-forward-only pushes, and a file
per worker written by racing workers without losing anyone's lines."""
import threading

import pytest

from engine.loop.remote import Remote, Unreachable
from engine.loop.repo import Repo
from loop_helpers import git, make_repo


@pytest.fixture
def clones(tmp_path):
    origin = make_repo(tmp_path)
    bare = tmp_path / "remote.git"
    git(tmp_path, "clone", "-q", "--bare", str(origin), str(bare))
    paths = []
    for name in ("a", "b", "c"):
        git(tmp_path, "clone", "-q", str(bare), str(tmp_path / name))
        paths.append(tmp_path / name)
    return bare, paths


def test_best_moves_only_by_fast_forward(clones):
    bare, (a, b, _) = clones
    ra, rb = Remote(Repo(a), str(bare), "t"), Remote(Repo(b), str(bare), "t")
    start = Repo(a).head()
    assert ra.push_ref(start, "autoresearch/t")
    (a / "train.py").write_text("A = 1\n")
    ahead = Repo(a).commit(["train.py"], "a's change")
    (b / "train.py").write_text("B = 2\n")
    other = Repo(b).commit(["train.py"], "b's change")
    assert ra.push_ref(ahead, "autoresearch/t")  # a descendant: lands
    rb.fetch()
    assert not rb.push_ref(other, "autoresearch/t")  # not a descendant of the remote best: refused
    assert git(bare, "rev-parse", "autoresearch/t") == ahead
    assert rb.heads()["autoresearch/t"] == ahead


def test_racing_writers_each_keep_their_own_file(clones):
    bare, paths = clones
    remotes = [Remote(Repo(p), str(bare), "t") for p in paths]
    errors = []

    def write(index):
        lines = ""
        try:
            for n in range(6):
                lines += f"row {n} of {index}\n"
                remotes[index].write_files("autoresearch/t-ledger", {f"workers/w{index}.jsonl": lines}, "rows")
        except Exception as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    reader = remotes[0]
    reader.fetch()
    files = reader.files("autoresearch/t-ledger", "workers")
    assert files == {f"workers/w{i}.jsonl": "".join(f"row {n} of {i}\n" for n in range(6)).rstrip("\n")
                     for i in range(3)}


def test_unreachable_remote_raises(clones, tmp_path):
    _, (a, _, _) = clones
    with pytest.raises(Unreachable):
        Remote(Repo(a), str(tmp_path / "gone.git"), "t").fetch()
