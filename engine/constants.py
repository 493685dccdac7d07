"""Fixed constants of the benchmark. Changing one changes the manifest fingerprint,
so results before and after are not comparable."""

DEFAULT_DATASET = "stdlib"
DEFAULT_VOCAB_SIZE = 8192
# The fixed evaluation's layout, sized for a CPU (a real run on an accelerator prepares a larger
# one: docs/gpu.md, docs/tpu.md). Scoring costs the metric's EVAL_TOKENS forward tokens plus the
# causality probe's SEQUENCE_LENGTH^2 (a row per cut, engine/scoring/probe.py), so the context
# length sets the probe's cost: at 256 and 32,768 tokens, 383 one-row forward calls, about 6 s
# on 2 CPU cores, where 512 and 131,072 needed 767 calls of twice the length, about 25 s.
# Context length of the fixed evaluation; train.py may train on any length.
SEQUENCE_LENGTH = 256
# Validation tokens scored per experiment (and test tokens per report).
EVAL_TOKENS = 32_768
# Fraction of documents in each held-out split, chosen by a hash of the document.
VAL_FRACTION = 0.05
TEST_FRACTION = 0.05
# Wall-clock seconds of training steps (compile excluded), as in the reference.
TIME_BUDGET_SECONDS = 300.0
BOS_PIECE = "<|bos|>"
