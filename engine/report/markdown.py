"""report.md and the report's closing lines on the terminal, from the gathered facts."""
from __future__ import annotations

def render_markdown(facts: dict) -> str:
    parts = [f"# Research report: {facts['tag']}", "", *_setup_lines(facts), "",
             "## Result", "", *_result_table(facts), ""]
    if facts["warnings"]:
        parts += ["## Warnings", "", *[f"- **{w}**" for w in facts["warnings"]], ""]
    parts += ["## Experiments", "", *_counts_table(facts), "",
              "![val_bpb of every experiment](progress.png)", "",
              "## Kept changes", ""]
    parts += _kept_sections(facts) or ["No change beat the baseline."]
    return "\n".join(parts).rstrip() + "\n"


def _setup_lines(facts: dict) -> list[str]:
    hw = facts["hardware"]
    device = hw.get("device") or "unknown device"
    count = hw.get("num_devices")
    devices = f", {count} device{'s' if count != 1 else ''}" if count else ""
    extra = f" ({hw['platform']}{devices})" if hw.get("platform") else ""
    lines = [f"- Hardware: {device}{extra}",
             f"- Budget per experiment: {facts['budget'] or 'unknown'}",
             f"- Data: manifest {_fingerprint(facts['manifest_fingerprint'])}"]
    if facts["hours"] is not None:
        lines.append(f"- Ran {facts['started'][:16].replace('T', ' ')} to "
                     f"{facts['finished'][:16].replace('T', ' ')}: {facts['hours']:.2f} h, "
                     f"{facts['experiments_per_hour']:.1f} experiments per hour")
    if facts["noise"]:
        lines.append(f"- Run-to-run noise (spread of the baseline runs): {facts['noise']:.6f} bpb; "
                     "a smaller gain had to hold up in a re-run with another seed")
    if facts["agent_cost_usd"]:
        lines.append(f"- Agent cost: ${facts['agent_cost_usd']:.2f}")
    return lines


def _result_table(facts: dict) -> list[str]:
    base, best, gain = facts["baseline"], facts["best"], facts["gain"]
    rows = ["| | experiment | val_bpb | test_bpb (held out) |", "|---|---|---|---|"]
    for name, entry in (("baseline", base), ("best", best)):
        if entry:
            rows.append(f"| {name} | {_experiments(entry)} `{_commit(entry)}` | "
                        f"{_num(entry['val_bpb'])} | {_num(entry['test_bpb'])} |")
    rows.append(f"| gain | | {_gain(gain['val_bpb'])} | {_gain(gain['test_bpb'])} |")
    return rows


def _counts_table(facts: dict) -> list[str]:
    counts, rates = facts["counts_after_baseline"], facts["rates"]
    rows = ["| status | changes tried after the baseline | share of those that ran |",
            "|---|---|---|"]
    for status, count in counts.items():
        rate = rates.get(status)
        rows.append(f"| {status} | {count} | {'' if rate is None else f'{rate:.0%}'} |")
    return rows


def _kept_sections(facts: dict) -> list[str]:
    lines = []
    for n, change in enumerate(facts["kept"], 1):
        runs = "experiments" if len(change["experiments"]) > 1 else "experiment"
        lines += [f"### {n}. {runs} {_experiments(change)} `{_commit(change)}`: "
                  f"{change['description']}", "",
                  f"val_bpb {_num(change['val_bpb'])} (gain {_signed(change['val_gain'])}), "
                  f"test_bpb {_num(change['test_bpb'])} (gain {_signed(change['test_gain'])})", ""]
        if change["diff"]:
            lines += ["```diff", change["diff"], "```", ""]
    return lines


def summary_lines(facts: dict) -> list[str]:
    base, best = facts["baseline"] or {}, facts["best"] or {}
    lines = [f"report: {facts['files']['report_md']}",
             f"chart:  {facts['files']['progress_png']}",
             f"val_bpb  baseline {_num(base.get('val_bpb'))}  best {_num(best.get('val_bpb'))}  "
             f"gain {_gain(facts['gain']['val_bpb'])}",
             f"test_bpb baseline {_num(base.get('test_bpb'))}  best {_num(best.get('test_bpb'))}  "
             f"gain {_gain(facts['gain']['test_bpb'])}"]
    return lines + [f"warning: {w}" for w in facts["warnings"]]


def _num(value) -> str:
    return "-" if value is None else f"{value:.6f}"


def _signed(value) -> str:
    return "-" if value is None else f"{value:+.6f}"


def _gain(gain: dict | None) -> str:
    return "-" if not gain else f"{gain['absolute']:+.6f} ({gain['relative']:+.2%})"


def _experiments(entry: dict) -> str:
    return ", ".join(str(e) for e in entry.get("experiments") or [entry.get("experiment")])


def _commit(entry: dict) -> str:
    return str(entry.get("commit") or "")[:7]


def _fingerprint(value) -> str:
    if isinstance(value, list):
        return ", ".join(str(v)[:12] for v in value)
    return str(value)[:12] if value else "unknown"
