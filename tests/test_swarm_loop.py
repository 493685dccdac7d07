"""A swarm worker's loop: its flags, and a cut-short run of a commit from the swarm."""
from types import SimpleNamespace

import pytest

from engine.errors import UserError
from engine.loop.swarm_loop import check_flags


def test_remote_and_worker_go_together():
    with pytest.raises(UserError, match="go together"):
        check_flags(SimpleNamespace(remote="git@host:r.git", worker=None, workers=1))
    with pytest.raises(UserError, match="go together"):
        check_flags(SimpleNamespace(remote=None, worker="a", workers=1))
    with pytest.raises(UserError, match="one swarm worker per process"):
        check_flags(SimpleNamespace(remote="r.git", worker="a", workers=2))
    check_flags(SimpleNamespace(remote="r.git", worker="a", workers=1))
    check_flags(SimpleNamespace(remote=None, worker=None, workers=4))
