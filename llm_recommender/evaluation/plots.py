"""PNG plots of an eval run (matplotlib, headless): metric bars, reliability diagrams, position bias."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..scorers import FUSED, SCORERS, scorer_class

BAR_METRICS = ("ndcg@10", "hr@10", "mrr")


def _plt() -> Any:
    import matplotlib  # optional: the [eval] extra (plots are skipped without it)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def metric_bars(results: dict[str, Any], path: Path) -> None:
    plt = _plt()
    scorers = results["sets"]["llmrank"]["scorers"]
    names = [n for n, e in scorers.items() if "ranking" in e]
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(names) + 2), 4))
    width = 0.8 / len(BAR_METRICS)
    for j, metric in enumerate(BAR_METRICS):
        vals = [scorers[n]["ranking"][metric] for n in names]
        ax.bar([i + j * width for i in range(len(names))], vals, width, label=metric)
    rnd = results["expected_random"]["ndcg@10"]
    ax.axhline(rnd, color="grey", ls="--", lw=1, label=f"random NDCG@10 = {rnd:.3f}")
    ax.set_xticks([i + width for i in range(len(names))])
    ax.set_xticklabels([f"{n}\n(n={scorers[n]['users']})" for n in names], fontsize=8)
    ax.set_ylabel("test, LLMRank protocol")
    ax.set_title(ranking_title(results))
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def reliability(results: dict[str, Any], set_name: str, path: Path) -> bool:
    plt = _plt()
    scorers = results["sets"].get(set_name, {}).get("scorers", {})
    # the scorers whose probabilities mean something: the LLM strategies and the fusion (fitted on validation)
    names = [n for n in scorers if n == FUSED or (n in SCORERS and scorer_class(n).needs_llm)] or list(scorers)
    if not names:
        return False
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 4 * rows), squeeze=False)
    for ax, name in zip(axes.ravel(), names):
        cal = scorers[name]["calibration"]
        for label, entry in cal.items():
            if "reliability" not in entry:
                continue
            pts = [(b["mean_predicted"], b["fraction_positive"]) for b in entry["reliability"] if b["count"]]
            xs, ys = zip(*pts) if pts else ((), ())
            ax.plot(xs, ys, marker="o", ms=3, label=f"{label} (ECE {entry['ece']:.3f})")
        ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1)
        ax.set_title(f"{name} (n={scorers[name]['users']})", fontsize=10)
        ax.set_xlabel("predicted P")
        ax.set_ylabel("observed frequency")
        ax.legend(fontsize=7)
    for ax in axes.ravel()[len(names) :]:
        ax.axis("off")
    what = "LLMRank candidates (label 1 = ground truth)" if set_name == "llmrank" else "like/dislike (rating > 3)"
    fig.suptitle(f"{results['run']['dataset']}: reliability on test, {what}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def position_bias(results: dict[str, Any], path: Path) -> bool:
    sweep = results.get("position_bias")
    if not sweep:
        return False
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for strategy, entry in sweep.items():
        for curve in entry.values():
            if not isinstance(curve, dict):
                continue
            xs = entry.get("positions") or list(range(1, len(curve["ndcg@10"]) + 1))
            k = curve["permutations"]
            how = "no averaging" if k == 1 else f"{k} orders averaged"
            label = f"{strategy}, {how} (n={entry['users']})"
            axes[0].plot(xs, curve["ndcg@10"], marker="o", ms=3, label=label)
            axes[1].plot(xs, curve["gt_probability"], marker="o", ms=3, label=label)
    axes[0].axhline(results["expected_random"]["ndcg@10"], color="grey", ls="--", lw=1, label="random")
    axes[0].set_ylabel("NDCG@10")
    axes[1].set_ylabel("mean P(ground truth)")
    for ax in axes:
        ax.set_xlabel("position of the ground truth in the prompt (1 = first)")
        ax.legend(fontsize=7)
    fig.suptitle(
        f"{results['run']['dataset']}: position bias (test cases, ground truth moved to each position)", fontsize=11
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_plots(results: dict[str, Any], out: Path) -> list[str]:
    written = []
    metric_bars(results, out / "metrics.png")
    written.append("metrics.png")
    for set_name in results["sets"]:
        name = f"reliability_{set_name}.png"
        if reliability(results, set_name, out / name):
            written.append(name)
    if position_bias(results, out / "position_bias.png"):
        written.append("position_bias.png")
    return written


def ranking_title(results: dict[str, Any]) -> str:
    return f"{results['run']['dataset']}: ranking metrics ({results['config']['n_candidates']} candidates)"
