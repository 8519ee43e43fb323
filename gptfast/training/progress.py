"""Progress display: a tqdm bar on a terminal, one plain line per log
interval otherwise (logs, CI), or nothing but evaluations with --quiet."""
from __future__ import annotations

import sys
from typing import Optional


def _fmt_eta(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """mode: "bar" | "plain" | "quiet"; "auto" is a bar when stderr is a TTY."""

    def __init__(self, mode: str, start: int, total: int, enabled: bool = True):
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "plain"
        self.mode = mode if enabled else "off"
        self.total = total
        self.bar = None
        if self.mode == "bar":
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, unit="it", dynamic_ncols=True, file=sys.stderr)

    def step(self, it: int, loss: float, lr: float, tok_s: float, gflops: float, eta_s: Optional[float]) -> None:
        """Called every log interval with the latest figures."""
        if self.mode == "bar":
            self.bar.n = it
            self.bar.set_postfix_str(f"loss {loss:.4f} | {tok_s:,.0f} tok/s | {gflops:.1f} GFLOP/s", refresh=True)
        elif self.mode == "plain":
            eta = f" | eta {_fmt_eta(eta_s)}" if eta_s is not None else ""
            print(f"iter {it}/{self.total} | loss {loss:.4f} | lr {lr:.2e} | {tok_s:,.0f} tok/s "
                  f"| {gflops:.1f} GFLOP/s{eta}", file=sys.stderr, flush=True)

    def message(self, text: str) -> None:
        """Evaluations and samples: shown in every mode but off (rank > 0)."""
        if self.mode == "off":
            return
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
