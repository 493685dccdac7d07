"""The `autoresearch` command line: one parser per command, dispatched lazily.

Parsers live here so the whole user interface reads in one file and `--help`
never imports JAX. Each command's work is `main(args) -> int` in the module named
in COMMANDS.
"""
from __future__ import annotations

import argparse
import difflib
import importlib
import os
import re
import signal
import sys

from engine import constants
from engine.errors import UserError

COMMANDS = {
    "prepare": "engine.data.prepare",
    "train": "engine.training.launcher",
    "trace": "engine.training.tracer",
    "evaluate": "engine.scoring.evaluate",
    "verify": "engine.scoring.verify",
    "loop": "engine.loop.driver",
    "experiment": "engine.loop.external",
    "report": "engine.report.report",
    "status": "engine.report.status",
    "sample": "engine.scoring.sample",
}
HIDDEN_COMMANDS = ("trace",)  # started by the engine itself, not by people
VERBOSE_ENV = "AUTORESEARCH_VERBOSE"  # set by --verbose; child processes inherit it


class Parser(argparse.ArgumentParser):
    """argparse, with a close match suggested for a mistyped choice, hidden commands left out."""

    def error(self, message: str):
        match = re.search(r"invalid choice: '?(.*?)'? \(choose from (.*)\)$", message)
        if match:
            choices = [c.strip(" '") for c in match.group(2).split(",")]
            choices = [c for c in choices if c not in HIDDEN_COMMANDS]
            message = (f"{message[:match.start()]}invalid choice: {match.group(1)!r} "
                       f"(choose from {', '.join(choices)}){did_you_mean(match.group(1), choices)}")
        super().error(message)


def did_you_mean(word: str, candidates) -> str:
    """"; did you mean X?" for the closest candidate, or "" when none is close."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def _add_prepare(sub) -> None:
    p = sub.add_parser(
        "prepare",
        help="build the tokenizer and token cache for a dataset",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  autoresearch prepare                          # Python stdlib sources, offline\n"
        "  autoresearch prepare --dataset tfds:tiny_shakespeare\n"
        "  autoresearch prepare --dataset tfds:wikipedia/20230601.en --data-dir gs://my-bucket/tfds\n"
        "  autoresearch prepare --dataset 'files:corpus/*.jsonl' --vocab-size 16384\n",
    )
    p.add_argument("--dataset", default=constants.DEFAULT_DATASET,
                   help="stdlib | tfds:NAME[/CONFIG] | files:GLOB (default: %(default)s)")
    p.add_argument("--vocab-size", type=int, default=constants.DEFAULT_VOCAB_SIZE)
    p.add_argument("--data-dir", default=None, help="TFDS data_dir (may be gs://...)")
    p.add_argument("--text-key", default=None, help="the text field, when it cannot be found")
    p.add_argument("--max-chars", type=int, default=None, help="stop reading after this many characters")
    p.add_argument("--seq-len", type=int, default=constants.SEQUENCE_LENGTH,
                   help="context length of the fixed evaluation (default: %(default)s)")
    p.add_argument("--eval-tokens", type=int, default=constants.EVAL_TOKENS,
                   help="tokens scored by val_bpb and test_bpb (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="prepare anew even if a cache exists")
    p.add_argument("--split-key", default=None, metavar="FILE",
                   help="split with the key in FILE, a copy of split.key from the cache root of the machine "
                        "whose results this one compares with (default: this cache's key, drawn if none)")


def _add_budget(p) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--budget-seconds", type=float, default=None,
                   help=f"wall-clock seconds of training steps, compile excluded (default {constants.TIME_BUDGET_SECONDS:g})")
    g.add_argument("--budget-flops", type=float, default=None,
                   help="total training FLOPs as XLA counts the unpartitioned step")
    g.add_argument("--budget-tokens", type=float, default=None, help="training tokens")


def _add_loop_step_options(p) -> None:
    """What `loop` and `experiment` share: how each experiment runs."""
    _add_budget(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=None, help="prepared cache directory or name (default: the last prepared)")
    p.add_argument("--program", default="program.md")
    p.add_argument("--timeout", type=float, default=None, help="hard seconds per experiment")
    p.add_argument("--wandb", action="store_true",
                   help="also send every experiment to Weights & Biases (offline unless program.md's "
                        "`## Trackers` says `wandb_mode: online`); needs pip install -e '.[wandb]'")
    p.add_argument("--mlflow", action="store_true",
                   help="also send every experiment to MLflow (a SQLite store, runs/TAG/mlflow.db, unless "
                        "`mlflow_tracking_uri` is set); needs pip install -e '.[mlflow]'")
    p.add_argument("--no-tensorboard", action="store_true",
                   help="write no TensorBoard event files (runs/TAG/tensorboard/, on by default)")


def _add_train(sub) -> None:
    p = sub.add_parser(
        "train",
        help="run one experiment: compile, train for the budget, score val_bpb",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  autoresearch train                         # train.py, default 300 s budget\n"
        "  autoresearch train --budget-seconds 60 --json result.json\n"
        "  autoresearch train --budget-flops 1e15     # same budget on any hardware\n",
    )
    p.add_argument("path", nargs="?", default="train.py")
    _add_budget(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", dest="json_path", default=None, help="write the result as JSON here")
    p.add_argument("--data", default=None, help="prepared cache directory or name (default: the last prepared)")
    p.add_argument("--run-dir", default=None, help="where the checkpoint goes (default: runs/train-<time>)")
    p.add_argument("--no-checkpoint", action="store_true", help="skip saving the final state")
    # The trainer process that `train` starts (engine/training/launcher.py): no score of its own.
    p.add_argument("--trainer-only", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--programs", default=None,
                   help="train the exported programs in this folder instead of tracing a train.py "
                        "(a run's checkpoint/programs: `verify --retrain` uses it)")


def _add_trace(sub) -> None:
    # The tracer process that the trainer starts (engine/training/tracer.py); not for people:
    # no help= keeps it out of `autoresearch --help`.
    p = sub.add_parser("trace")
    p.add_argument("path")
    p.add_argument("--out", required=True)
    p.add_argument("--data", required=True, help="the run's data: refused to the tracer")


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="score a saved checkpoint on val or the held-out test split")
    p.add_argument("path", nargs="?", default=None,
                   help="ignored (the scorer runs the checkpoint's exported forward, never a train.py)")
    p.add_argument("--checkpoint", required=True, help="checkpoint directory written by train")
    p.add_argument("--split", choices=["val", "test"], default="val")
    p.add_argument("--data", default=None)
    p.add_argument("--json", dest="json_path", default=None)
    p.add_argument("--probe-seed", type=int, default=None,
                   help="repeat a recorded causality probe (default: a seed drawn now)")


def _add_verify(sub) -> None:
    p = sub.add_parser(
        "verify",
        help="re-score a saved experiment in a fresh scorer and compare with its val_bpb",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  autoresearch verify runs/nov26/exp-0012     # exit 0 when the stored val_bpb holds\n"
        "  autoresearch verify runs/train-20261127-101500 --data stdlib\n"
        "  autoresearch verify --retrain runs/nov26/exp-0012   # train its programs again, then score\n",
    )
    p.add_argument("run_dir", help="an experiment's directory (holding result.json and checkpoint/)")
    p.add_argument("--retrain", action="store_true",
                   help="train the run's exported programs again (seed, budget, data as recorded), then score")
    p.add_argument("--data", default=None, help="prepared cache (default: the one the result names)")
    p.add_argument("--json", dest="json_path", default=None, help="write the comparison as JSON here")


def _add_loop(sub) -> None:
    p = sub.add_parser(
        "loop",
        help="run the research loop: propose, run, keep or discard, repeat",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  autoresearch loop --tag demo --max-experiments 4 --budget-seconds 15\n"
        "  autoresearch loop --tag nov26 --agent gemini --max-hours 8\n"
        "  autoresearch loop --tag ext --agent command --agent-cmd './my_agent.sh'\n"
        "  autoresearch loop --tag hy --agent gemini+tune --max-hours 8   # Gemini + Optuna on the numbers\n"
        "  autoresearch loop --tag v5e --workers 8                  # 8 one-chip experiments at once\n"
        "  autoresearch loop --tag big --ray auto                   # each experiment a task on this Ray cluster\n"
        "  autoresearch loop --tag nov27 --remote git@host:me/research.git --worker h100-a\n",
    )
    p.add_argument("--tag", required=True, help="work on branch autoresearch/TAG")
    p.add_argument("--agent", choices=["offline", "gemini", "command", "gemini+tune", "command+tune"], default=None,
                   help="default: gemini when an API key or Vertex AI is configured, else offline; "
                        "X+tune: the LLM agent X proposes structural changes, the offline tuner the numbers between them")
    p.add_argument("--agent-cmd", default=None, help="shell command for --agent command")
    p.add_argument("--model", default=None, help="Gemini model for --agent gemini")
    p.add_argument("--max-experiments", type=int, default=None)
    p.add_argument("--max-hours", type=float, default=None)
    p.add_argument("--max-agent-failure-minutes", type=float, default=None,
                   help="stop after the agent has failed (non-zero exit, service down) this long in a row "
                        "(default 30; program.md's max_agent_failure_minutes)")
    _add_loop_step_options(p)
    p.add_argument("--workers", type=int, default=None,
                   help="experiments in flight at once on this host, each on its own devices and git worktree "
                        "(default 1); with --ray, the most in flight on the cluster (default: all it fits)")
    p.add_argument("--devices-per-worker", type=int, default=None,
                   help="GPUs, TPU chips or CPU cores per worker (default: an equal share)")
    p.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="run each experiment as a task on this Ray cluster (HOST:PORT of its head, or auto); "
                        "needs pip install -e '.[ray]'")
    p.add_argument("--ray-checkpoints", default=None, metavar="DIR_OR_URL",
                   help="with --ray: copy each run's checkpoint here (a path, or gs://...); default: left on its node")
    p.add_argument("--remote", default=None,
                   help="git remote URL shared by a swarm (best on autoresearch/TAG, rows on autoresearch/TAG-ledger)")
    p.add_argument("--worker", default=None, help="this worker's name in a swarm (its rows: workers/NAME.CLONE.jsonl)")


def _add_experiment(sub) -> None:
    p = sub.add_parser(
        "experiment",
        help="one loop step for an external agent that edited train.py itself",
        epilog='example:  autoresearch experiment "double the learning rate" --tag mytag',
    )
    p.add_argument("description")
    p.add_argument("--tag", required=True, help="work on branch autoresearch/TAG")
    _add_loop_step_options(p)


def _add_report(sub) -> None:
    p = sub.add_parser(
        "report",
        help="write progress.png and report.md for a loop",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  autoresearch report --tag demo              # runs/demo/progress.png and report.md\n"
        "  autoresearch report --tag nov26 --out ~/morning\n"
        "  autoresearch report --json | jq .best       # the same facts for programs\n"
        "held-out test_bpb is computed here only (cached in runs/TAG/heldout.json).\n",
    )
    p.add_argument("--tag", default=None, help="default: the most recent loop")
    p.add_argument("--out", default=None, help="default: the loop's run directory")
    p.add_argument("--json", action="store_true", help="print the facts as JSON")


def _add_status(sub) -> None:
    p = sub.add_parser(
        "status",
        help="what is running, the best so far, counts",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  autoresearch status                 # the most recent loop; safe while it runs\n"
        "  watch -n 60 autoresearch status --tag nov26\n",
    )
    p.add_argument("--tag", default=None, help="default: the most recent loop")


def _add_sample(sub) -> None:
    p = sub.add_parser(
        "sample",
        help="generate text from the best kept checkpoint",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        '  autoresearch sample --tag demo --prompt "def "\n'
        '  autoresearch sample --tag nov26 --prompt "The history of" --temperature 0   # greedy\n'
        "  autoresearch sample --max-tokens 500 --top-k 0 --seed 3\n",
    )
    p.add_argument("--tag", default=None, help="default: the most recent loop")
    p.add_argument("--prompt", default="")
    p.add_argument("--max-tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.8, help="0 for greedy decoding")
    p.add_argument("--top-k", type=int, default=50, help="0 for no limit")
    p.add_argument("--seed", type=int, default=0)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="autoresearch", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_prepare, _add_train, _add_trace, _add_evaluate, _add_verify, _add_loop, _add_experiment,
                _add_report, _add_status, _add_sample):
        add(sub)
    for command, subparser in sub.choices.items():
        if command not in HIDDEN_COMMANDS:
            subparser.add_argument("--verbose", action="store_true",
                                   help="show the engine's tracebacks too, not only the error")
    return parser


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The arguments; an unknown flag is reported under its command's usage, with a close match."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        command = _subparser(parser, args.command)
        known = [option for action in command._actions for option in action.option_strings
                 if action.help is not argparse.SUPPRESS]
        flags = [word.split("=", 1)[0] for word in unknown if word.startswith("-")]
        hint = did_you_mean(flags[0], known) if flags else ""
        command.error(f"unrecognized arguments: {' '.join(unknown)}{hint}")
    return args


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[command]
    return parser


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if getattr(args, "verbose", False):
        os.environ[VERBOSE_ENV] = "1"
    module = importlib.import_module(COMMANDS[args.command])
    if args.command in ("loop", "experiment"):  # a stopped loop ends its agent and runs (finally blocks)
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        return int(module.main(args) or 0)
    except UserError as error:
        print(f"autoresearch {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"autoresearch {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
