"""The research loop: propose -> guard -> commit -> run -> record -> keep or reset.

Owns the session, the loop step, the subprocess runner, the ledger, git, the guards,
program.md's settings, the task kinds, the loop lock and the terminal view. Never imports
JAX (a test checks it): every experiment runs as an `autoresearch train` subprocess whose
result file the loop reads, or, for a command task (tasks.py), as its check and score
commands, whose printed metric the loop reads. May import `engine.agents` and `engine.data`'s paths, nothing of
`engine.training` or `engine.scoring`.
"""
