"""python -m gptfast: the quickstart main job, offline, on a CPU.

Prepares a token dataset from the embedded default corpus (or --data) and
prints its statistics.  Training and sampling join this job as the training
and generation engines land.
"""
from __future__ import annotations

import sys
from typing import Optional, Sequence

from gptfast.prepare import main as prepare_main


def main(argv: Optional[Sequence[str]] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    print("gptfast quickstart: preparing a dataset (python -m gptfast.prepare --help for options)", file=sys.stderr)
    prepare_main(argv)


if __name__ == "__main__":
    main()
