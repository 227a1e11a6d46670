"""Benchmark output: the console line per point, a markdown report and a PNG plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HEADER = f"{'model':<8} {'system':<36} {'conc':>5} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}"


def row_line(model: str, row: dict[str, Any]) -> str:
    return (f"{model:<8} {row['system']:<36} {row['concurrency']:>5} {row['rps']:>9.0f} "
            f"{row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f} {row['errors']:>6}")


def markdown(results: dict[str, Any]) -> str:
    lines = ["# genserve benchmark", "", "Settings: " + ", ".join(f"{k}={v}" for k, v in results["settings"].items()), ""]
    for model, data in results["models"].items():
        lines += [f"## {model}", "", "| system | concurrency | req/s | p50 ms | p99 ms | errors |",
                  "|---|---:|---:|---:|---:|---:|"]
        for r in data["rows"]:
            lines.append(f"| {r['system']} | {r['concurrency']} | {r['rps']:.0f} | {r['p50_ms']:.2f} | "
                         f"{r['p99_ms']:.2f} | {r['errors']} |")
        lines += ["", *ratios(data["rows"]), ""]
        for name, hist in data["histograms"].items():
            lines.append(f"Batch sizes formed ({name}, all concurrencies, provider {hist['provider'] or '?'}):")
            for key in ("requests_per_message", "samples_per_onnx_call"):
                counts = ", ".join(f"{size}: {n}" for size, n in sorted(hist[key].items()))
                lines.append(f"- {key.replace('_', ' ')}: {counts}")
            lines.append("")
    return "\n".join(lines) + "\n"


def ratios(rows: list[dict[str, Any]]) -> list[str]:
    by = {(r["system"], r["concurrency"]): r for r in rows}
    out = []
    for conc in sorted({r["concurrency"] for r in rows if r["system"].startswith("genserve")}):
        on, off = by.get(("genserve, batching on", conc)), by.get(("genserve, batching off", conc))
        if on and off and off["rps"] > 0:
            out.append(f"- concurrency {conc}: batching on / off = {on['rps'] / off['rps']:.2f}x requests/s")
    return out


def plot(results: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    models = list(results["models"])
    fig, axes = plt.subplots(1, len(models), figsize=(7 * len(models), 4.5), squeeze=False)
    for ax, model in zip(axes[0], models):
        rows = [r for r in results["models"][model]["rows"] if r["system"].startswith("genserve")]
        for system in sorted({r["system"] for r in rows}):
            points = sorted((r["concurrency"], r["rps"]) for r in rows if r["system"] == system)
            ax.plot([c for c, _ in points], [v for _, v in points], marker="o", label=system)
        for r in results["models"][model]["rows"]:
            if r["system"].endswith("batch 1") and r["system"].startswith("raw"):
                ax.axhline(r["rps"], linestyle="--", color="grey", label="raw ONNX Runtime, batch 1")
        ax.set(xscale="log", yscale="log", xlabel="concurrent clients", ylabel="requests/s", title=model)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return True


def write(results: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(markdown(results))
    plotted = plot(results, out / "results.png")
    print()
    print(markdown(results))
    print(f"written: {out / 'results.md'}, {out / 'results.json'}" + (f", {out / 'results.png'}" if plotted else ""))


def write_sweep(results: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    lines = ["# batching settings compared", "", "| setting | concurrency | req/s | p50 ms | p99 ms | mean requests per message |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in results["sweep"]:
        lines.append(f"| {r['system']} | {r['concurrency']} | {r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['mean_batch']:.1f} |")
    text = "\n".join(lines) + "\n"
    (out / "sweep.md").write_text(text)
    (out / "sweep.json").write_text(json.dumps(results, indent=2))
    print()
    print(text)
