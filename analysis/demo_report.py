"""The demo report: what the trained models and attacks wrote, as Markdown with figures."""
from __future__ import annotations

import math
from pathlib import Path

from analysis.runs import latest_run
from core.runs import atomic_write_text, read_csv

__all__ = ["write_demo_report"]


def _fmt(v, digits=3):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _learning_curve_figure(run: dict, out: Path) -> Path | None:
    path = run["path"] / "learning_curve.csv"
    if not path.exists():
        return None
    rows = read_csv(path)
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    ep = [r["epoch"] for r in rows]
    ax.plot(ep, [r["train_accuracy_online"] for r in rows], "o-", label="train (online, plasticity on)")
    ev = [(r["epoch"], r["eval_accuracy"]) for r in rows if isinstance(r["eval_accuracy"], float) and not math.isnan(r["eval_accuracy"])]
    if ev:
        ax.plot(*zip(*ev), "s-", label="test (plasticity off)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Spiking cerebellum: learning through climbing fibres", fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def write_demo_report(root: str | Path) -> Path:
    """Write ``<root>/report.md`` from the runs found under ``root``; returns its path."""
    root = Path(root)
    lines = ["# Demo report", "", "Built from the run folders under this directory only.", ""]
    spk = latest_run(root, "spiking", model_kind="spiking")
    rate = latest_run(root, "rate", model_kind="rate")
    lines += ["## Trained models", "", "| model | task | width | K | test accuracy | train accuracy | run |", "|---|---|---|---|---|---|---|"]
    for run in (rate, spk):
        if run is None:
            continue
        c, m = run["config"], run["metrics"]
        lines.append(f"| {c['model_kind']} | {c['task']['name']} | {c['model'].get('width')} | {c['model'].get('k')} | "
                     f"{_fmt(m.get('test_accuracy'))} | {_fmt(m.get('train_accuracy'))} | `{run['path'].name}` |")
    lines.append("")
    if spk is not None:
        m = spk["metrics"]
        lines += [
            "## Spiking network biology (test set, plasticity off)", "",
            f"- granule coding level (fraction of granule cells spiking per presentation): {_fmt(m.get('grc_coding_level'))}",
            f"- granule / Golgi mean rate: {_fmt(m.get('grc_rate_hz'), 1)} Hz / {_fmt(m.get('goc_rate_hz'), 1)} Hz",
            f"- Purkinje spontaneous rate (no net parallel-fibre drive): {_fmt(m.get('pc_spontaneous_rate_hz'), 1)} Hz; "
            f"with a blank input: {_fmt(m.get('pc_rate_blank_input_hz'), 1)} Hz; on test inputs: {_fmt(m.get('pc_rate_hz'), 1)} Hz",
            f"- training: {m.get('epochs')} epochs, {_fmt(m.get('epoch_s_mean'), 1)} s per epoch", "",
        ]
        fig = _learning_curve_figure(spk, root / "figures" / "spiking_learning_curve.png")
        if fig:
            lines += [f"![learning curve](figures/{fig.name})", ""]
    att = latest_run(root, "attack-rate")
    if att is not None and (att["path"] / "robustness.csv").exists():
        rows = read_csv(att["path"] / "robustness.csv")
        lines += ["## Rate model under attack (L-inf)", "", "| attack | loss | eps | robust accuracy | n |", "|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['attack']} | {r['loss']} | {_fmt(float(r['eps']), 2)} | {_fmt(float(r['robust_acc']))} | {r['n']} |")
        checks = att["metrics"].get("checks_passed")
        lines += ["", f"Attack self-checks passed: {checks}", ""]
    out = root / "report.md"
    atomic_write_text(out, "\n".join(lines) + "\n")
    return out
