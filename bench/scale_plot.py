"""docs/scaling.md's table and log-log plot from bench/scale.py's JSON.

.venv/bin/python -m bench.scale > scale.json
.venv/bin/python -m bench.scale_plot scale.json docs/scaling.png   # prints the markdown table
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

MIB = 1024 * 1024


def rows(result: dict[str, Any]) -> list[tuple[dict[str, Any], str, dict[str, Any]]]:
    return [(size, name, measured) for size in result["sizes"] for name, measured in size["strategies"].items()]


def table(result: dict[str, Any]) -> str:
    lines = [
        "| items | interactions | strategy | fit s | replica peak RSS MiB | fit child peak MiB "
        "| RankItems p50 / p99 ms | echo p99 ms | p99 / echo p99 | recall@10 vs exact |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for size, name, m in rows(result):
        if "fit_failed" in m:
            lines.append(f"| {size['items']:,} | {size['interactions']:,} | {name} | failed: {m['fit_failed']} |||||||")
            continue
        recall = m.get("recall_at_10_vs_exact")
        lines.append(
            f"| {size['items']:,} | {size['interactions']:,} | {name} | {m['fit_seconds']:.1f} "
            f"| {m['replica_peak_rss_bytes'] / MIB:,.0f} | {m['fit_child_peak_rss_bytes'] / MIB:,.0f} "
            f"| {m['rank']['p50_ms']:.2f} / {m['rank']['p99_ms']:.2f} | {m['echo']['p99_ms']:.2f} "
            f"| {m['rank_p99_over_echo_p99']:.2f} | {'' if recall is None else f'{recall:.3f}'} |"
        )
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    """Lines through the sizes where items and interactions grow together (10^4 x 10^5 to
    10^6 x 10^7); other sizes as unconnected points."""
    figure, (fits, ranks) = plt.subplots(1, 2, figsize=(11, 4.2))
    sizes = result["sizes"]
    ratio = min(s["interactions"] / s["items"] for s in sizes)
    diagonal = [s for s in sizes if s["interactions"] / s["items"] == ratio]
    others = [s for s in sizes if s not in diagonal]
    strategies = sorted({name for _, name, _ in rows(result)})
    colours = {name: f"C{n}" for n, name in enumerate(strategies)}
    for name in strategies:
        on = [(s, s["strategies"][name]) for s in diagonal if "rank" in s["strategies"].get(name, {})]
        if on:
            fits.plot(
                [s["interactions"] for s, _ in on],
                [m["fit_seconds"] for _, m in on],
                "o-",
                color=colours[name],
                label=name,
            )
            ranks.plot(
                [s["items"] for s, _ in on], [m["rank"]["p99_ms"] for _, m in on], "o-", color=colours[name], label=name
            )
        off = [(s, s["strategies"][name]) for s in others if "rank" in s["strategies"].get(name, {})]
        for s, m in off:
            fits.plot(s["interactions"], m["fit_seconds"], "x", color=colours[name])
            ranks.plot(s["items"], m["rank"]["p99_ms"], "x", color=colours[name])
    echo = [
        (s["items"], sorted(m["echo"]["p99_ms"] for m in s["strategies"].values() if "echo" in m)) for s in diagonal
    ]
    ranks.plot([i for i, _ in echo], [v[len(v) // 2] for _, v in echo], "--", color="grey", label="echo p99 (median)")
    fits.set(xscale="log", yscale="log", xlabel="interactions", ylabel="fit seconds", title="Fit time (x: 10^4 items)")
    ranks.set(
        xscale="log",
        yscale="log",
        xlabel="items",
        ylabel="RankItems p99 (ms)",
        title="Ranking latency (x: 10^6 interactions)",
    )
    for axes in (fits, ranks):
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    result = json.loads(Path(sys.argv[1]).read_text())
    plot(result, Path(sys.argv[2]))
    print(table(result))


if __name__ == "__main__":
    main()
