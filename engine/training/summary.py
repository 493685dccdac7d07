"""How a run reports: the greppable summary block and the JSON result file.

The block is `---` then `key: value` lines (the README lists them); the JSON holds the same
figures and more (docs/internals.md, "Experiment result").
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

from engine.files import write_atomic

# (key, format) in the order the README shows; None values print as "n/a".
SUMMARY_FIELDS = (
    ("val_bpb", "{:.6f}"),
    ("training_seconds", "{:.1f}"),
    ("compile_seconds", "{:.1f}"),
    ("total_seconds", "{:.1f}"),
    ("trace_seconds", "{:.1f}"),  # the total's other parts: where the time outside training went
    ("checkpoint_seconds", "{:.1f}"),
    ("probe_seconds", "{:.1f}"),
    ("metric_seconds", "{:.1f}"),
    ("peak_vram_mb", "{:.1f}"),
    ("mfu_percent", "{:.2f}"),
    ("total_tokens_M", "{:.4g}"),  # significant digits: CPU runs train well under 0.1M tokens
    ("num_steps", "{:d}"),
    ("num_params_M", "{:.4g}"),
    ("budget", "{}"),
    ("device", "{}"),
)
# invalid: the scorer refused the model (it failed the causality probe, or its logits are not finite)
STATUSES = ("ok", "crash", "nan", "oom", "invalid")


def format_block(result: dict) -> str:
    width = max(len(key) for key, _ in SUMMARY_FIELDS) + 2
    lines = ["---"]
    for key, fmt in SUMMARY_FIELDS:
        value = result.get(key)
        text = "n/a" if value is None else fmt.format(value)
        lines.append(f"{key + ':':<{width}}{text}")
    return "\n".join(lines)


def parse_block(text: str) -> dict:
    """The key: value pairs after the last `---` line (what a reader of a log sees)."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == "---"]
    pairs = {}
    for line in lines[starts[-1] + 1:] if starts else []:
        key, sep, value = line.partition(":")
        if sep:
            pairs[key.strip()] = value.strip()
    return pairs


def write_phase(path: str | os.PathLike, phase: str, seconds: dict) -> None:
    """The engine process's phase file: the phase it is in now, since when (wall clock), and the
    seconds of the phases before it. A courtesy for whoever must say where a killed run was."""
    try:
        write_atomic(Path(path), json.dumps({"phase": phase, "since": time.time(), "seconds": seconds}) + "\n")
    except OSError:
        pass


def read_phase(path: str | os.PathLike) -> dict:
    """The phase file's content ({} if there is none or it is unreadable)."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def failure(status: str, error: str, **extra) -> dict:
    assert status in STATUSES and status != "ok"
    return {"status": status, "error": error, **extra}


def write_json(path: str | os.PathLike, result: dict) -> None:
    """Atomically: a reader never sees half a result."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(_finite(result), indent=2, sort_keys=True) + "\n")


def _finite(result: dict) -> dict:
    """JSON has no NaN or inf: such figures become null (the status says why)."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in result.items()}
