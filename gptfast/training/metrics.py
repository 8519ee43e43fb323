"""Metrics as they happen: one JSON object per line (metrics.jsonl), a CSV
twin for spreadsheets, and a loss-curve PNG refreshed at each evaluation.

Both files are appended and flushed per record, so a killed run keeps every
line it logged; a resumed run appends to the same files.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Dict, List

from gptfast.io_utils import atomic_write_bytes

CSV_FIELDS = ("kind", "iter", "loss", "train_loss", "val_loss", "val_ppl", "lr", "tokens_per_s", "gflops", "elapsed_s")


class MetricsLog:
    def __init__(self, run_dir: Path, enabled: bool = True):
        self.jsonl = Path(run_dir) / "metrics.jsonl"
        self.csv = Path(run_dir) / "metrics.csv"
        self.png = Path(run_dir) / "loss.png"
        self.enabled = enabled

    def append(self, record: Dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.jsonl, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        new = not self.csv.exists()
        with open(self.csv, "a", encoding="utf-8", newline="") as f:
            w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(record)

    def records(self) -> List[Dict[str, Any]]:
        return read_metrics(self.jsonl)

    def truncate_after(self, iteration: int) -> None:
        """Drop records past `iteration` (a resume from an older checkpoint
        replays them; keeping both would draw the curve twice)."""
        if not self.enabled or not self.jsonl.exists():
            return
        kept = [r for r in self.records() if r.get("iter", 0) <= iteration]
        self.jsonl.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        with open(self.csv, "w", encoding="utf-8", newline="") as f:
            w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
            w.writeheader()
            w.writerows(kept)

    def plot(self) -> None:
        if self.enabled:
            plot_losses(self.records(), self.png)


def read_metrics(path: Path) -> List[Dict[str, Any]]:
    out = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a line cut short by a kill
    except FileNotFoundError:
        pass
    return out


def plot_losses(records: List[Dict[str, Any]], png: Path) -> None:
    """Train (per-step and evaluated) and val loss against the iteration."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed; must precede pyplot
    import io

    import matplotlib.pyplot as plt

    steps = [r for r in records if r.get("kind") == "train"]
    evals = [r for r in records if r.get("kind") == "eval"]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if steps:
        ax.plot([r["iter"] for r in steps], [r["loss"] for r in steps], lw=0.8, alpha=0.4, label="train (step)")
    if evals:
        ax.plot([r["iter"] for r in evals], [r["train_loss"] for r in evals], "o-", label="train (eval)")
        ax.plot([r["iter"] for r in evals], [r["val_loss"] for r in evals], "o-", label="val")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss (nats/token)")
    ax.grid(alpha=0.3)
    if steps or evals:
        ax.legend()
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(png, buf.getvalue())
