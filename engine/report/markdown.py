"""report.md and the report's closing lines on the terminal, from the gathered facts."""
from __future__ import annotations

from engine.loop.standings import tally_line
from engine.report.lanes import markdown_lines
from engine.report.facts import figure_labels

MAX_DESCRIPTION = 90  # characters of a description in the experiments table

def render_markdown(facts: dict) -> str:
    parts = [f"# Research report: {facts['tag']}", "", *_setup_lines(facts), "",
             "## Result", "", *_result_table(facts), ""]
    if facts["warnings"]:
        parts += ["## Warnings", "", *[f"- **{w}**" for w in facts["warnings"]], ""]
    if facts.get("lanes"):
        parts += ["## Workers", "", *markdown_lines(facts["lanes"]), ""]
    parts += ["## Experiments", "", tally_line(facts["tally"]) + ".", "",
              *([f"> **{facts['short_runs']}**", ""] if facts.get("short_runs") else []),
              f"![{figure_labels(facts)[0]} of every experiment](progress.png)", "",
              *experiments_table(facts), "", *_counts_table(facts), "",
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
             f"- Data: {_data(facts)}"]
    if facts.get("task") == "command":
        better = "higher" if facts["direction"] == "maximize" else "lower"
        lines = [f"- Task: a command task scored by {facts['metric']} ({better} is better); "
                 "the held-out figure comes from its holdout command, run only by the report"]
    if facts["hours"] is not None:
        lines.append(f"- Ran {facts['started'][:16].replace('T', ' ')} to "
                     f"{facts['finished'][:16].replace('T', ' ')}: {facts['hours']:.2f} h, "
                     f"{facts['experiments_per_hour']:.1f} experiments per hour")
    if facts["noise"] is not None:
        unit = "bpb" if facts.get("task") != "command" else facts["metric"]
        lines.append(f"- Run-to-run noise: sigma {facts['noise']:.6f} {unit} ({facts['noise_df']} degrees of "
                     "freedom, pooled over every commit run more than once); a change was kept only when a "
                     "sequential test found its gain significant")
    if facts["agent_cost_usd"]:
        lines.append(f"- Agent cost: ${facts['agent_cost_usd']:.2f}")
    return lines


def _data(facts: dict) -> str:
    data = facts.get("dataset")
    if not data or not data.get("source"):
        return f"manifest {_fingerprint(facts['manifest_fingerprint'])} (its cache is not on this machine)"
    tokens = ", ".join(f"{split} {count:,}" for split, count in data["tokens"].items() if isinstance(count, int))
    return (f"{data['source']} ({data['name']}), vocabulary {data['vocab_size']:,}"
            + (f", tokens per split: {tokens}" if tokens else "") + f"; manifest {_fingerprint(data['fingerprint'])}")


def experiments_table(facts: dict) -> list[str]:
    """Every experiment, in order; a candidate's re-runs right under its first run."""
    val_name = figure_labels(facts)[0]
    phases = any(e.get("phase_seconds") and set(e["phase_seconds"]) - {"wall"} for e in facts["experiments"])
    head = ["#", "description", "side", val_name, "vs best", "status", "verdict", "steps", "tokens",
            "train s", "wall s", *(["phase seconds"] if phases else [])]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    order = {e["experiment"]: n for n, e in enumerate(facts["experiments"])}
    grouped = sorted(facts["experiments"], key=lambda e: (order.get(e["rerun_of"], order.get(e["experiment"], 0)),
                                                            order.get(e["experiment"], 0)))
    for e in grouped:
        number = f"↳ {e['experiment']}" if e.get("rerun_of") is not None else str(e["experiment"])
        cells = [number, _cell(e["description"], MAX_DESCRIPTION), e["side"], _num(e["val_bpb"]),
                 _signed4(e["gain_over_best"]), f"**{e['status']}**" if e["kept_change"] else e["status"],
                 _cell(e["verdict"], 120), _int(e["steps"]), _tokens(e["tokens_M"]),
                 _seconds(e["training_seconds"]), _seconds(e["wall_seconds"])]
        if phases:
            cells.append(", ".join(f"{k} {v:.1f}" for k, v in e["phase_seconds"].items() if k != "wall"))
        lines.append("| " + " | ".join(cells) + " |")
    return lines + ["", f"vs best: the gain over the best when the experiment ran ({val_name}; positive is "
                        "better). ↳: a re-run of the candidate above it. Kept changes in bold."]


def _cell(text, width: int) -> str:
    text = " ".join(str(text or "").split()).replace("|", "\\|")
    return text if len(text) <= width else text[: width - 1] + "…"


def _signed4(value) -> str:
    return "" if value is None else f"{value:+.4g}"


def _int(value) -> str:
    return f"{value:,}" if isinstance(value, int) else ""


def _tokens(millions) -> str:
    if millions is None:
        return ""
    return f"{millions:.3g}M" if millions >= 1 else f"{millions * 1000:.3g}k"


def _seconds(value) -> str:
    return "" if value is None else f"{value:.1f}"


def _result_table(facts: dict) -> list[str]:
    base, best, gain = facts["baseline"], facts["best"], facts["gain"]
    val_name, test_name = figure_labels(facts)
    held = "" if facts.get("task") == "command" else " (held out)"
    rows = [f"| | experiment | {val_name} | {test_name}{held} |", "|---|---|---|---|"]
    for name, entry in (("baseline", base), ("best", best)):
        if entry:
            rows.append(f"| {name} | {_experiments(entry)} `{_commit(entry)}` | "
                        f"{_num(entry['val_bpb'])} | {_num(entry['test_bpb'])} |")
    rows.append(f"| gain | | {_gain(gain['val_bpb'])} | {_gain(gain['test_bpb'])} |")
    return rows


def _counts_table(facts: dict) -> list[str]:
    counts, rates = facts["counts_after_baseline"], facts["rates"]
    rows = ["| status | candidates (a re-run series once) | share of those that ran |",
            "|---|---|---|"]
    for status, count in counts.items():
        if status in ("baseline", "confirm", "adopted"):
            continue  # no candidate has these words
        rate = rates.get(status)
        rows.append(f"| {status} | {count} | {'' if rate is None else f'{rate:.0%}'} |")
    return rows


def _kept_sections(facts: dict) -> list[str]:
    lines, (val_name, test_name) = [], figure_labels(facts)
    for n, change in enumerate(facts["kept"], 1):
        runs = "experiments" if len(change["experiments"]) > 1 else "experiment"
        lines += [f"### {n}. {runs} {_experiments(change)} `{_commit(change)}`: "
                  f"{change['description']}", "",
                  *([f"Found by worker {change['found_by']}.", ""] if change.get("found_by") else []),
                  f"{val_name} {_num(change['val_bpb'])} (gain {_signed(change['val_gain'])}), "
                  f"{test_name} {_num(change['test_bpb'])} (gain {_signed(change['test_gain'])})", "",
                  *_test_line(change)]
        if change["diff"]:
            lines += ["```diff", change["diff"], "```", ""]
    return lines


def _test_line(change: dict) -> list[str]:
    """The keep test's gain over the best it beat, with its confidence interval."""
    test = change.get("test") or {}
    if test.get("gain") is None:
        return []
    interval = (f", interval {test['gain_low']:.6f} .. {test['gain_high']:.6f}"
                if test.get("gain_low") is not None else "")
    return [f"Kept on a gain of {test['gain']:.6f}{interval} over the best then "
            f"({test.get('runs')} run(s), noise sigma {_num(test.get('noise_sigma'))}, "
            f"{test.get('noise_df')} degrees of freedom).", ""]


def summary_lines(facts: dict) -> list[str]:
    base, best = facts["baseline"] or {}, facts["best"] or {}
    val_name, test_name = figure_labels(facts)
    width = max(len(val_name), len(test_name))
    lines = [f"report: {facts['files']['report_md']}",
             f"chart:  {facts['files']['progress_png']}",
             f"{val_name:<{width}} baseline {_num(base.get('val_bpb'))}  best {_num(best.get('val_bpb'))}  "
             f"gain {_gain(facts['gain']['val_bpb'])}",
             f"{test_name:<{width}} baseline {_num(base.get('test_bpb'))}  best {_num(best.get('test_bpb'))}  "
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
