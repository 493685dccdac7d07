"""Fixed data preparation: `python prepare.py` is `autoresearch prepare`.

Nobody edits this file during research; the constants it prints are part of
every result's manifest fingerprint (see engine/constants.py).
"""
import sys

from engine.cli import main

if __name__ == "__main__":
    sys.exit(main(["prepare", *sys.argv[1:]]))
