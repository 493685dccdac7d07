"""Fixed constants of the benchmark. Changing one changes the manifest fingerprint,
so results before and after are not comparable."""

DEFAULT_DATASET = "stdlib"
DEFAULT_VOCAB_SIZE = 8192
# Context length of the fixed evaluation; train.py may train on any length.
SEQUENCE_LENGTH = 512
# Validation tokens scored per experiment (and test tokens per report).
EVAL_TOKENS = 131_072
# Fraction of documents in each held-out split, chosen by a hash of the document.
VAL_FRACTION = 0.05
TEST_FRACTION = 0.05
# Wall-clock seconds of training steps (compile excluded), as in the reference.
TIME_BUDGET_SECONDS = 300.0
BOS_PIECE = "<|bos|>"
