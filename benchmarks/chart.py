"""The throughput chart the README embeds: drain jobs/s of every system, from results.json.

matplotlib is a benchmark-only dependency (benchmarks/requirements.txt); the Agg backend
draws without a display.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def throughput_chart(raw: dict[str, Any], path: Path) -> bool:
    """Draw drain throughput (and the pgbench ceiling) as horizontal bars; False if no data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drain = {k: v for k, v in raw.get("drain", {}).items() if isinstance(v, dict)}
    if not drain:
        return False
    names = sorted(drain, key=lambda n: -drain[n]["median"])
    rates = [drain[n]["median"] for n in names]
    colors = ["#2b6cb0" if n == "pgtaskq" else "#a0aec0" for n in names]
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(names) + 1.6), dpi=110)
    bars = ax.barh(names[::-1], rates[::-1], color=colors[::-1])
    for bar, rate in zip(bars, rates[::-1], strict=True):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {rate:,.0f}",
                va="center", fontsize=9)
    ceiling = raw.get("ceiling", {}).get("8x10", {}).get("median")
    if ceiling:
        ax.axvline(ceiling, color="#c53030", linestyle="--", linewidth=1)
        ax.text(ceiling, len(names) - 0.4, " pgbench ceiling\n (claim-10, 8 clients)",
                color="#c53030", fontsize=8, va="top")
    ax.set_xlabel("jobs/s (one worker process, concurrency 8, no-op job; higher is better)")
    ax.set_title("Drain throughput" + (" (--quick)" if raw["drain"].get("quick") else ""))
    ax.set_xlim(0, max([*rates, ceiling or 0]) * 1.18)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True
