"""`autoresearch report`: the morning report of a loop.

Writes progress.png (every experiment's val_bpb, kept ones labelled, the best so
far) and report.md (hardware, budget, baseline vs best on val and held-out test,
rates, the kept changes with their diffs). `--json` prints the same facts.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from engine.errors import UserError
from engine.loop.ledger import read_rows
from engine.report.chart import plot_progress
from engine.report.facts import gather_facts
from engine.report.scale import scale_note
from engine.report.markdown import render_markdown, summary_lines
from engine.report.runs import LEDGER, resolve_run_dir


def main(args) -> int:
    run_dir = resolve_run_dir(args.tag)
    rows = read_rows(run_dir / LEDGER)
    if not rows:
        raise UserError(f"loop {run_dir.name!r} has no finished experiment yet in {run_dir}: "
                        "wait for the baseline, or check `autoresearch status`")
    out = Path(args.out) if args.out else run_dir
    out.mkdir(parents=True, exist_ok=True)
    progress = None if args.json else (lambda message: print(message, file=sys.stderr))
    facts = gather_facts(run_dir, rows, repo_root=run_dir.parent.parent, log=progress)
    facts["files"] = {"progress_png": str(out / "progress.png"), "report_md": str(out / "report.md")}
    plot_progress(facts, out / "progress.png")
    (out / "report.md").write_text(render_markdown(facts), encoding="utf-8")
    if args.json:
        print(json.dumps(facts, indent=2))
    else:
        print("\n".join(summary_lines(facts) + scale_note(rows)))
    return 0


