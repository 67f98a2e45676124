"""The run report: a few PNGs and a `summary.md` that make a finished run readable at a glance.

`write_report(run_dir)` reads only what a finished run already wrote (`summary.json`, `metrics.jsonl`,
`bandit.jsonl`, `selections.parquet`, and `prep/enriched.parquet` for the source of each id when it is there),
so it never touches Ray or the model and can be rerun on any old run. Figures are drawn on plain matplotlib
`Figure`s with the Agg canvas: no pyplot state and no backend switch for whoever imports this module.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from lead_ray.runtime.console import format_value
from lead_ray.runtime.run_files import RunFiles, read_run_files

IMAGES = {
    "arm_probabilities.png": "EXP3 arm probabilities per round",
    "idu_distribution.png": "IDU of the selected samples per round",
    "selection_mix.png": "Selection mix by arm, group and source",
    "training.png": "Training loss and held-out NLL",
}
FIGSIZE = (8.0, 4.5)
DPI = 110
MAX_BARS = 12  # categories shown per selection-mix panel; the rest are summed into "other"
UNKNOWN_SOURCE = "(unknown)"


@dataclass
class RunData:
    """Everything the report draws: the run's record, and where each id came from when prep/ is there."""

    run_dir: Path
    files: RunFiles
    sel: pd.DataFrame
    sources: pd.Series | None  # source per id (index = id), from prep/enriched.parquet
    notes: list[str] = field(default_factory=list)


def load_run(run_dir: Path | str) -> RunData:
    """Read a finished run dir; a missing required file raises an error that names it."""
    run_dir = Path(run_dir)
    files = read_run_files(run_dir)
    notes: list[str] = []
    enriched = run_dir / "prep" / "enriched.parquet"  # absent when the run dir was copied without its prep/
    sources = None
    if enriched.exists():
        t = pq.read_table(enriched, columns=["id", "source"]).to_pandas()
        sources = pd.Series(t["source"].astype(str).to_numpy(), index=t["id"].to_numpy(), name="source")
    else:
        notes.append("source panel skipped: enriched.parquet not found under prep/")
    return RunData(run_dir, files, files.selections.to_pandas(), sources, notes)


# ---------------------------------------------------------------------------------------------------------------
# pure summaries (tested by hand)


def selection_mix(sel: pd.DataFrame, sources: pd.Series | Mapping[int, str] | None = None) -> dict[str, dict]:
    """Count selected (round, id) rows by arm, by group and (when a source per id is given) by source.

    Returns {"arm": {arm: n}, "group": {group: n}, "source": {source: n}}, keys sorted. Ids with no known source
    count as "(unknown)", so every dimension sums to the number of rows.
    """
    out: dict[str, dict] = {col: {int(k): int(v) for k, v in sorted(sel[col].value_counts().items())}
                            for col in ("arm", "group")}
    if sources is not None:
        lookup = sources if isinstance(sources, pd.Series) else pd.Series(dict(sources), dtype=object)
        src = sel["id"].map(lookup).fillna(UNKNOWN_SOURCE).astype(str)
        out["source"] = {str(k): int(v) for k, v in sorted(src.value_counts().items())}
    return out


def arm_probability_table(bandit: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray, list[list[int]]]:
    """(rounds, probs [rounds x arms], chosen arms per round) from bandit.jsonl lines."""
    rounds = np.array([b["round"] for b in bandit], dtype=float)
    probs = np.array([b["arm_probs"] for b in bandit], dtype=float) if bandit else np.zeros((0, 0))
    return rounds, probs, [[a["arm"] for a in b["arms"]] for b in bandit]


# ---------------------------------------------------------------------------------------------------------------
# figures


def _figure(figsize: tuple[float, float] = FIGSIZE) -> Figure:
    fig = Figure(figsize=figsize, dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Figure:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    return fig


def _empty_note(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=11, color="0.35")


def _arm_colour(k: int, num_arms: int):
    from matplotlib import colormaps

    cmap = colormaps["tab10" if num_arms <= 10 else "tab20"]
    return cmap(k % cmap.N)


def plot_arm_probabilities(bandit: Sequence[Mapping[str, Any]], path: Path) -> Figure:
    """One line per arm over rounds, the chosen arm(s) ringed, and the uniform 1/K level for reference."""
    rounds, probs, chosen = arm_probability_table(bandit)
    fig = _figure()
    ax = fig.add_subplot()
    ax.set_title("EXP3 arm probabilities per round")
    ax.set_xlabel("round")
    ax.set_ylabel("probability of picking the arm")
    if probs.size == 0:
        _empty_note(ax, "no rounds recorded in bandit.jsonl")
        ax.set_ylim(0, 1)
    else:
        k = probs.shape[1]
        markers = "osD^v<>ph*"
        for arm in range(k):  # earlier arms drawn wider and underneath, so equal probabilities stay visible
            ax.plot(rounds, probs[:, arm], marker=markers[arm % len(markers)], markersize=4,
                    lw=1.2 + 2.0 * (k - 1 - arm) / max(k - 1, 1), color=_arm_colour(arm, k), zorder=2 + arm / k,
                    label=f"arm {arm}")
        cx = [r for r, arms in zip(rounds, chosen) for _ in arms]
        cy = [probs[i, a] for i, arms in enumerate(chosen) for a in arms]
        cc = [_arm_colour(a, k) for arms in chosen for a in arms]
        handles = list(ax.get_lines())
        if cx:
            ax.scatter(cx, cy, s=90, facecolors=cc, edgecolors="black", linewidths=1.2, zorder=3,
                       label="chosen arm")
            handles.append(Line2D([], [], ls="", marker="o", markersize=9, markerfacecolor="white",
                                  markeredgecolor="black", label="chosen arm (ringed)"))
        handles.append(ax.axhline(1.0 / k, color="0.5", ls="--", lw=1, label=f"uniform 1/{k}"))
        if np.isfinite(probs).any():  # zoom to the data (gridlines give the scale), at least 0.1 tall
            lo, hi = float(np.nanmin(probs)), float(np.nanmax(probs))
            mid, half = (lo + hi) / 2, max((hi - lo) / 2 * 1.2, 0.05)
            ax.set_ylim(max(0.0, mid - half), min(1.02, mid + half))
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_idu_distribution(sel: pd.DataFrame, path: Path) -> Figure:
    """Box plots of the selected samples' IDU per round, before and after the round's update, with the round's
    mean per-sample training loss L_t(x) as a line: shows whether the utility drop (the bandit's reward) comes
    from the loss or from the ΔL′ correction."""
    fig = _figure()
    ax = fig.add_subplot()
    ax.set_title("IDU of the selected samples per round")
    ax.set_xlabel("round")
    ax.set_ylabel("IDU (mean response NLL)")
    if len(sel) == 0:
        _empty_note(ax, "no selected samples")
    else:
        rounds = np.unique(sel["round"])
        handles = []
        for offset, c, label, colour in ((-0.175, "idu_before", "IDU before the round", "tab:blue"),
                                         (0.175, "idu_after", "IDU after the round", "tab:orange")):
            by_round = [sel.loc[sel["round"] == r, c].dropna().to_numpy() for r in rounds]
            kept = [(r, v) for r, v in zip(rounds, by_round) if len(v)]  # NaN: the sample's loss never arrived
            ax.boxplot([v for _, v in kept], positions=[r + offset for r, _ in kept], widths=0.315,
                       patch_artist=True, manage_ticks=False,
                       boxprops={"facecolor": colour, "alpha": 0.55, "edgecolor": colour},
                       medianprops={"color": "black"}, whiskerprops={"color": colour}, capprops={"color": colour},
                       flierprops={"marker": ".", "markersize": 3, "markeredgecolor": colour})
            handles.append(Patch(facecolor=colour, alpha=0.55, edgecolor=colour, label=label))
        loss = sel["loss"].groupby(sel["round"]).mean()
        (line,) = ax.plot(loss.index.to_numpy(dtype=float), loss.to_numpy(), color="black", marker="x", lw=1,
                          label="mean training loss L_t(x)")
        ax.legend(handles=handles + [line], fontsize=9, loc="best")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _top(counts: Mapping[Any, int], limit: int, keep_order: bool) -> list[tuple[Any, int]]:
    """At most `limit` bars: the largest counts (or all in key order when they fit), the rest as one 'other'."""
    items = list(counts.items())
    if len(items) <= limit and keep_order:
        return items
    items.sort(key=lambda kv: (-kv[1], kv[0]))
    if len(items) <= limit:
        return items
    head, rest = items[: limit - 1], items[limit - 1:]
    return head + [(f"other ({len(rest)})", sum(v for _, v in rest))]


def plot_selection_mix(mix: Mapping[str, Mapping[Any, int]], path: Path, num_arms: int,
                       notes: Sequence[str] = ()) -> Figure:
    """Three bar panels (arm, group, source) of selected (round, id) rows; arms keep their arm-plot colours."""
    fig = _figure((12.0, 4.5))
    axes = fig.subplots(1, 3)
    fig.suptitle("Selection mix: selected (round, id) rows")
    titles = {"arm": "by arm", "group": "by task group", "source": "by source"}
    prefix = {"arm": "arm ", "group": "group ", "source": ""}
    for ax, dim in zip(axes, ("arm", "group", "source")):
        ax.set_title(titles[dim])
        counts = mix.get(dim)
        if counts is None:  # no source per id
            ax.set_axis_off()
            _empty_note(ax, "\n".join(_wrap(next(n for n in notes if n.startswith(dim)), 34)))
            continue
        if not counts:
            _empty_note(ax, "no selected samples")
            ax.set_xlabel("selected rows")
            continue
        bars = _top(counts, MAX_BARS, keep_order=dim == "arm")
        labels = [k if isinstance(k, str) and k.startswith("other (") else f"{prefix[dim]}{k}" for k, _ in bars]
        labels = [lab if len(lab) <= 24 else lab[:23] + "…" for lab in labels]
        values = [v for _, v in bars]
        colours = [_arm_colour(a, num_arms) if dim == "arm" and isinstance(a, int) else "tab:gray" for a, _ in bars]
        y = np.arange(len(bars))
        ax.barh(y, values, height=0.6, color=colours, alpha=0.85)
        ax.set_yticks(y, labels, fontsize=9)
        ax.set_ylim(max(len(bars), 3) - 0.5, -0.5)  # top to bottom; a lone bar stays bar-sized
        ax.set_xlabel("selected rows")
        ax.set_xlim(0, max(values) * 1.2 if max(values) > 0 else 1)
        for yi, v in zip(y, values):
            ax.text(v, yi, f" {v}", va="center", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def _wrap(text: str, width: int) -> list[str]:
    lines, cur = [], ""
    for word in text.split():
        if cur and len(cur) + 1 + len(word) > width:
            lines.append(cur)
            cur = word
        else:
            cur = f"{cur} {word}".strip()
    return lines + ([cur] if cur else [])


def plot_training(rounds: Sequence[Mapping[str, Any]], final: Mapping[str, Any], path: Path) -> Figure:
    """Training loss per round and held-out NLL: per-round `eval_nll` when the run logged it, and always the
    before/after points. Round r spans [r-0.5, r+0.5], so held-out NLL (measured at round ends) sits at r+0.5."""
    fig = _figure()
    ax = fig.add_subplot()
    ax.set_title("Training loss and held-out NLL")
    ax.set_xlabel("round (held-out NLL is measured at round ends)")
    ax.set_ylabel("mean NLL per response token")
    x = np.array([m["round"] for m in rounds], dtype=float)
    train = np.array([m["train_loss"] for m in rounds], dtype=float)
    before, after = float(final["nll_before"]), float(final["nll_after"])
    if np.isfinite(train).any():
        ax.plot(x, train, marker="o", color="tab:blue", label="training loss")
    evals = np.array([m.get("eval_nll", math.nan) for m in rounds], dtype=float)  # logged with eval_every
    if np.isfinite(evals).any():
        ex, ey = np.r_[-0.5, x + 0.5], np.r_[before, evals]
        ok = np.isfinite(ey)
        ax.plot(ex[ok], ey[ok], marker="s", color="tab:green", label="held-out NLL")
    if math.isfinite(before):
        ax.scatter([-0.5], [before], marker="s", s=70, color="tab:green", edgecolors="black", zorder=3,
                   label=f"held-out NLL before: {before:.4f}")
    if math.isfinite(after):
        ax.scatter([(x.max() if len(x) else 0.0) + 0.5], [after], marker="D", s=70, color="tab:red",
                   edgecolors="black", zorder=3, label=f"held-out NLL after: {after:.4f}")
    if not rounds:
        _empty_note(ax, "no training rounds recorded")
        ax.set_xlim(-1, 1)
        ax.set_xticks([-0.5, 0.5], ["before training", "after"])
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=9, loc="best")
    else:
        _empty_note(ax, "no finite loss values (no held-out rows?)")
    ax.grid(alpha=0.3)
    return _save(fig, path)


# ---------------------------------------------------------------------------------------------------------------
# markdown


def _cell(v: Any) -> str:
    return format_value(v).replace("|", "\\|").replace("\n", " ")


def summary_rows(summary: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The summary.json figures as (label, text) rows: the CLI prints them and summary.md tabulates them."""
    s = summary
    before, after = float(s["nll_before"]), float(s["nll_after"])
    change = f"{after - before:+.4f} ({100 * (after - before) / before:+.1f}%)" if math.isfinite(after - before) \
        else "n/a"
    return [("rounds", format_value(s["rounds"])),
            ("arm per round", " ".join(",".join(map(str, arms)) for arms in s["arms_per_round"]) or "none"),
            ("unique samples", format_value(s["num_unique"])),
            ("budget (unique samples)", f"{s['budget']} ({100 * s['num_unique'] / s['budget']:.0f}% used)"),
            ("stopped by", format_value(s["stop_reason"])),
            ("train rows excluded (IFD > 1)", format_value(s["ifd_excluded"])),
            ("held-out NLL before", format_value(before)),
            ("held-out NLL after", format_value(after)),
            ("held-out NLL change", change),
            ("time waiting on selection", f"{s['selection_seconds']:.1f}s"),
            ("wall time", f"{s['wall_seconds']:.1f}s"),
            ("run dir (as written)", format_value(s["run_dir"]))]


def _round_table(data: RunData) -> list[str]:
    """Per-round figures from metrics.jsonl and bandit.jsonl, one table row per round."""
    rounds = data.files.rounds
    if not rounds:
        return ["No training rounds were recorded."]
    has_eval = any("eval_nll" in m for m in rounds)
    lines = ["| round | arm(s) | selected | unique | train loss |" + (" held-out NLL |" if has_eval else "")
             + " reward, nats (scaled) | ΔL′, nats |",
             "| ---: | --- | ---: | ---: | ---: |" + (" ---: |" if has_eval else "") + " --- | --- |"]
    for m, b in zip(rounds, data.files.bandit):
        arms = b["arms"]
        delta_l = ", ".join(f"{a['delta_l']:.4g}" for a in arms)
        reward = ", ".join(f"{a['reward']:.4g} ({a['scaled_reward']:+.2f})" if "scaled_reward" in a
                           else f"{a['reward']:.4g}" for a in arms)
        lines.append(f"| {m['round']} | {', '.join(str(a['arm']) for a in arms)} | {m['num_selected']} | "
                     f"{m['num_unique']} | {_cell(m['train_loss'])} |"
                     + (f" {_cell(m.get('eval_nll'))} |" if has_eval else "")
                     + f" {reward or 'n/a'} | {delta_l or 'n/a'} |")
    return lines


def summary_markdown(data: RunData, images: Mapping[str, str] = IMAGES) -> str:
    """summary.md: the run's headline figures, a per-round table, and each figure embedded by relative link."""
    lines = [f"# LEAD run report: {data.run_dir.name}", "", f"Run dir: `{data.run_dir}`", "", "## Summary", "",
             "| figure | value |", "| --- | --- |"]
    lines += [f"| {_cell(k)} | {_cell(v)} |" for k, v in summary_rows(data.files.summary)]
    lines += ["", "## Rounds", ""] + _round_table(data)
    for name, title in images.items():
        lines += ["", f"## {title}", "", f"![{title}]({name})"]
    if data.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in data.notes]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------------
# entry points


def write_report(run_dir: Path | str) -> Path:
    """Write `<run>/report/` (four PNGs and summary.md) for a finished run; returns the report dir.

    Raises FileNotFoundError naming the missing file when `run_dir` is not a finished run. A run dir copied
    without its prep/ only loses the source panel (noted in summary.md).
    """
    data = load_run(run_dir)
    out = data.run_dir / "report"
    out.mkdir(exist_ok=True)
    plot_arm_probabilities(data.files.bandit, out / "arm_probabilities.png")
    plot_idu_distribution(data.sel, out / "idu_distribution.png")
    num_arms = len(data.files.bandit[0]["arm_probs"]) if data.files.bandit else 1
    plot_selection_mix(selection_mix(data.sel, data.sources), out / "selection_mix.png", num_arms, data.notes)
    plot_training(data.files.rounds, data.files.final, out / "training.png")
    (out / "summary.md").write_text(summary_markdown(data), encoding="utf-8")
    return out


def main_report(run_dir: str) -> int:
    """`lead-ray report RUN_DIR`: write the report and print where it is; a bad run dir is one error line."""
    try:
        out = write_report(Path(run_dir))
    except (FileNotFoundError, ValueError) as e:
        print(f"lead-ray: error: {e}", file=sys.stderr)
        return 2
    print(out)
    return 0
