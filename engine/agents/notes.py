"""The agent's research memory: runs/<tag>/notes.md.

A short Markdown file the agent rewrites through its answer (hypotheses, what
worked, what to try next) and that comes back in every prompt, so lessons
survive across calls and restarts. It is bounded: a prompt must stay small and
a runaway answer must not grow it without end.
"""
from __future__ import annotations

from pathlib import Path

from engine.files import write_atomic

NOTES_FILE = "notes.md"
MAX_NOTES_CHARS = 6000
TRIMMED_MARKER = "(older notes trimmed)\n"


def notes_path(run_dir: Path) -> Path:
    return Path(run_dir) / NOTES_FILE


def read_notes(run_dir: Path) -> str:
    path = notes_path(run_dir)
    return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


def bound_notes(text: str, limit: int = MAX_NOTES_CHARS) -> str:
    """Keep the newest part of over-long notes, cut at a line boundary: agents append new lessons at the end."""
    text = text.strip() + "\n"
    if len(text) <= limit:
        return text
    tail = text[-(limit - len(TRIMMED_MARKER)):]
    newline = tail.find("\n")
    if 0 <= newline < len(tail) - 1:
        tail = tail[newline + 1:]
    return TRIMMED_MARKER + tail


def write_notes(run_dir: Path, text: str, limit: int = MAX_NOTES_CHARS) -> Path:
    """Replace the notes atomically, so a loop killed mid-write never leaves half a file."""
    path = notes_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, bound_notes(text, limit))
    return path
