"""What a short loop on a CPU showed, and what a real run needs: the report's last words.

A demo of a few 30 s runs on two cores trains a model that differs from the next by noise;
the report says so instead of letting its figures pass for research.
"""
from __future__ import annotations

REAL_BUDGET_SECONDS = 300.0  # the reference's budget: below it, or on a CPU, a loop is a demo


def scale_note(rows: list[dict]) -> list[str]:
    """Lines for the end of `autoresearch report` when the loop ran on a CPU or under a short
    time budget; none otherwise."""
    trained = [r for r in rows if r.get("num_steps")]
    if not trained:
        return []
    on_cpu = all(r.get("platform") == "cpu" for r in trained)
    budgets = {float(r.get("budget_value") or 0) for r in trained if r.get("budget_mode") == "time"}
    short = bool(budgets) and max(budgets) < REAL_BUDGET_SECONDS
    if not (on_cpu or short):
        return []
    steps = sorted(int(r["num_steps"]) for r in trained)
    losses = sorted(float(r["final_loss"]) for r in trained if r.get("final_loss") is not None)
    budget = f"{max(budgets):g} s of training" if budgets else "a short budget"
    loss = f", final training loss {losses[0]:.2f} to {losses[-1]:.2f}" if losses else ""
    return [
        f"scale: a demo: {len(trained)} runs on {trained[-1].get('device') or 'this machine'}, each {budget} "
        f"({steps[0]} to {steps[-1]} steps{loss}).",
        "  shown: the whole loop (baseline runs for the noise, the agent's ideas, the keep rule, git, "
        "the held-out test split); models this small and short differ mostly by noise.",
        "  a real run needs: an accelerator (docs/gpu.md, docs/tpu.md), a dataset whose text is not on "
        f"the machine (tfds: or files:), and the {REAL_BUDGET_SECONDS:g} s budget overnight.",
    ]
