"""What Gemini is shown: program.md, the setup, the results so far, the notes, the other
workers' ideas, the editable files, and the task, each in its own tagged block."""
from __future__ import annotations

from engine.agents.base import ProposalRequest
from engine.agents.task_prompt import command_setup

LEDGER_ROWS_IN_PROMPT = 40
CRASH_TAIL_CHARS = 8000


def build_prompt(request: ProposalRequest, files: dict[str, str], notes_text: str) -> str:
    """Each part in its own tagged block, so Markdown inside program.md or the notes cannot blur the parts."""
    setup = (f"experiment number: {request.experiment}\nhardware: {request.hardware}\n"
             f"training budget per experiment: {request.budget} (compile time excluded)")
    if request.task_kind == "command":
        setup = command_setup(request)
    blocks = [
        _block("program.md", request.program_text, "the research protocol, written by the human: follow it"),
        _block("setup", setup),
        _block("results", ledger_summary(request.ledger, metric=request.metric, direction=request.direction),
               "the experiments so far, oldest first"),
        _block("notes", notes_text or "(none yet: start them in your answer's \"notes\")",
               "your research notes from earlier answers"),
    ]
    if request.swarm:
        blocks.append(_block("swarm", others_summary(request.swarm),
                             "recent results of the other workers sharing this search: build on what worked"))
    if request.tuner_summary:
        blocks.append(_block("tuner", request.tuner_summary,
                             "an optimizer tunes the numbers between your proposals: here is what it found. "
                             "Propose a structural change it cannot make; leave the tuning of numbers to it"))
    if request.in_flight:
        blocks.append(_block("in flight", others_summary(request.in_flight),
                             "ideas running on other workers right now: propose a different one"))
    blocks += [_block(name, text, "current version") for name, text in files.items()]
    blocks.append(_task(request))
    return "\n\n".join(blocks) + "\n"


def _block(tag: str, body: str, about: str = "") -> str:
    heading = f"<{tag}>" + (f"  ({about})" if about else "")
    return f"{heading}\n{body.rstrip()}\n</{tag}>"


def _task(request: ProposalRequest) -> str:
    if request.crash_log_tail:
        tail = request.crash_log_tail[-CRASH_TAIL_CHARS:]
        what = "train.py above is" if request.task_kind != "command" else "files above are"
        return (f"Task: fix a crash. The {what} your last experiment, and it crashed. The end of "
                f"its log:\n\n<log>\n{tail.rstrip()}\n</log>\n\nFix the cause so that the same idea runs; do not start a "
                "different idea. Describe the fix in \"description\".")
    task = (f"Task: propose experiment {request.experiment}: one idea, as edits to the current file. "
            "Do not repeat an experiment from the results unless you change it meaningfully.")
    if request.bolder and request.task_kind == "command":
        task += (f"\n\nThe last several experiments did not improve {request.metric}. Be bolder: try a "
                 "larger, structural change rather than another small tweak of a number.")
    elif request.bolder:
        task += ("\n\nThe last several experiments did not improve val_bpb. Be bolder: try a larger, "
                 "structural change (architecture, optimizer, schedule, batch or sequence shape) "
                 "rather than another small tweak of a constant.")
    return task


def ledger_summary(rows: list[dict], limit: int = LEDGER_ROWS_IN_PROMPT, metric: str = "val_bpb",
                   direction: str = "minimize") -> str:
    """One line per experiment: number, status, the metric, its change against the best before it."""
    if not rows:
        return "(none yet: this is the first experiment)"
    lines, best = [], None
    for row in rows:
        value = row.get(metric)
        value = value if isinstance(value, (int, float)) else None
        change = f"{value - best:+.6f}" if value is not None and best is not None else ""
        if row.get("kept"):  # the keep rule's score (a mean where runs were repeated), else the run's
            score = row.get("best_after")
            best = score if isinstance(score, (int, float)) else value if value is not None else best
        elif value is not None and best is None:
            best = value
        lines.append(_ledger_line(row, value, change))
    omitted = len(lines) - limit
    shown = lines[-limit:]
    header = [f"exp | status | {metric} | vs best before | memory GB | description"]
    if omitted > 0:
        header.append(f"({omitted} earlier experiments omitted)")
    better = "higher" if direction == "maximize" else "lower"
    footer = f"\nbest {metric} so far: {best:.6f} ({better} is better)" if best is not None else ""
    return "\n".join(header + shown) + footer


def others_summary(rows: list[dict], limit: int = LEDGER_ROWS_IN_PROMPT) -> str:
    """One line per idea of another worker: who, status, val_bpb, what and why."""
    lines = []
    for row in rows[-limit:]:
        value = row.get("val_bpb")
        figure = f"{value:.6f}" if isinstance(value, (int, float)) else "-"
        why = one_line(str(row.get("hypothesis") or ""))[:160]
        lines.append(" | ".join([str(row.get("worker", "?")), str(row.get("status", "running")), figure,
                                 one_line(str(row.get("description", "")))[:160]] + ([why] if why else [])))
    return "worker | status | val_bpb | description | hypothesis\n" + "\n".join(lines)


def _ledger_line(row: dict, value: float | None, change: str) -> str:
    status = row.get("status", "?")
    description = one_line(str(row.get("description", "")))[:160]
    if status not in ("keep", "discard") and row.get("error"):
        description += f" [{one_line(str(row['error']))[:120]}]"
    memory = row.get("memory_gb")
    if memory is None and isinstance(row.get("peak_vram_mb"), (int, float)):
        memory = row["peak_vram_mb"] / 1024
    cells = [row.get("experiment", "?"), status, f"{value:.6f}" if value is not None else "-", change or "-",
             f"{memory:.1f}" if isinstance(memory, (int, float)) else "-", description]
    return " | ".join(str(cell) for cell in cells)


def one_line(text: str) -> str:
    return " ".join(text.split())
