"""The run report: a few PNGs and a `summary.md` that make a finished run readable at a glance.

`write_report(run_dir)` reads only what a finished run already wrote (`summary.json`, `metrics.jsonl`,
`bandit.jsonl`, `selections.parquet`, and `prep/enriched.parquet` for the source of each id when it is there),
so it never touches Ray or the model and can be rerun on any old run. Figures are drawn on plain matplotlib
`Figure`s with the Agg canvas: no pyplot state and no backend switch for whoever imports this module.
"""

from __future__ import annotations

import json
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

REQUIRED_FILES = ("summary.json", "metrics.jsonl", "bandit.jsonl", "selections.parquet")
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
    """Everything the report draws, read once from the run dir."""

    run_dir: Path
    summary: dict[str, Any]
    rounds: list[dict[str, Any]]  # metrics.jsonl lines without the final one
    final: dict[str, Any] | None  # the {"final": true, ...} line, if any
    bandit: list[dict[str, Any]]
    sel: pd.DataFrame
    sources: pd.Series | None  # source per id (index = id), from prep/enriched.parquet
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------------------------
# reading


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """One dict per line of a JSON-lines file lead-ray wrote."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _read_sources(path: Path, notes: list[str]) -> pd.Series | None:
    """Source per id from the prepared pool, or None (with a note) when that file or column is not there."""
    if not path.exists():
        notes.append(f"source panel skipped: {path.name} not found under prep/")
        return None
    t = pq.read_table(path, columns=["id", "source"]).to_pandas()
    return pd.Series(t["source"].astype(str).to_numpy(), index=t["id"].to_numpy(), name="source")


def load_run(run_dir: Path | str) -> RunData:
    """Read a finished run dir; a missing or unreadable required file raises an error that names it."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run dir not found: {run_dir}")
    missing = [name for name in REQUIRED_FILES if not (run_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{run_dir} is not a finished run dir: missing {', '.join(missing)}")
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    finals = [m for m in metrics if m.get("final")]
    rounds = sorted((m for m in metrics if not m.get("final")), key=lambda m: _num(m.get("round"), 0))
    bandit = sorted(read_jsonl(run_dir / "bandit.jsonl"), key=lambda m: _num(m.get("round"), 0))
    sel = pq.read_table(run_dir / "selections.parquet").to_pandas()
    notes: list[str] = []
    if not finals:
        notes.append("metrics.jsonl has no final line: held-out NLL before/after taken from summary.json")
    sources = _read_sources(run_dir / "prep" / "enriched.parquet", notes)
    return RunData(run_dir, summary, rounds, finals[-1] if finals else None, bandit, sel, sources, notes)


def _num(v: Any, default: float = math.nan) -> float:
    """A JSON value as a float; None, strings and other junk become `default` so one bad field cannot crash a plot."""
    if isinstance(v, bool) or v is None:
        return default
    try:
        return float(v)
    except (TypeError, ValueError):
        return default


# ---------------------------------------------------------------------------------------------------------------
# pure summaries (tested by hand)


def selection_mix(sel: pd.DataFrame, sources: pd.Series | Mapping[int, str] | None = None) -> dict[str, dict]:
    """Count selected (round, id) rows by arm, by group and (when a source per id is given) by source.

    Returns {"arm": {arm: n}, "group": {group: n}, "source": {source: n}}, keys sorted; a dimension whose
    column is missing is left out. Ids with no known source count as "(unknown)", so every dimension sums to
    the number of rows.
    """
    out: dict[str, dict] = {}
    for col in ("arm", "group"):
        if col in sel.columns:
            counts = sel[col].value_counts(dropna=False)
            out[col] = {_plain_key(k): int(v) for k, v in sorted(counts.items(), key=lambda kv: _sort_key(kv[0]))}
    if sources is not None and "id" in sel.columns:
        lookup = sources if isinstance(sources, pd.Series) else pd.Series(dict(sources), dtype=object)
        lookup = lookup[~lookup.index.duplicated(keep="last")]
        src = sel["id"].map(lookup).fillna(UNKNOWN_SOURCE).astype(str)
        out["source"] = {str(k): int(v) for k, v in sorted(src.value_counts().items())}
    return out


def _plain_key(k: Any) -> Any:
    """NumPy scalars → Python ints/floats so the counts compare equal to hand-written dicts."""
    if isinstance(k, float | np.floating) and not math.isnan(k) and float(k).is_integer():
        return int(k)
    return k.item() if hasattr(k, "item") else k


def _sort_key(k: Any) -> tuple:
    try:
        return (0, float(k), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(k))


def arm_probability_table(bandit: Sequence[Mapping[str, Any]],
                          arms_per_round: Sequence[Sequence[int]] | None = None
                          ) -> tuple[np.ndarray, np.ndarray, list[list[int]]]:
    """(rounds, probs [rounds x arms], chosen arms per round) from bandit.jsonl lines.

    Lines without `arm_probs` are dropped; shorter probability lists are padded with NaN. Chosen arms come from
    each line's `arms`, falling back to summary.json's `arms_per_round` for lines that lack them.
    """
    rows = [b for b in bandit if isinstance(b.get("arm_probs"), list)]
    width = max((len(b["arm_probs"]) for b in rows), default=0)
    probs = np.full((len(rows), width), np.nan)
    rounds = np.zeros(len(rows))
    chosen: list[list[int]] = []
    for i, b in enumerate(rows):
        probs[i, : len(b["arm_probs"])] = [_num(p) for p in b["arm_probs"]]
        rounds[i] = _num(b.get("round"), i)
        if isinstance(b.get("arms"), list):
            arms = [a.get("arm") for a in b["arms"] if isinstance(a, Mapping)]
        elif arms_per_round is not None and 0 <= int(rounds[i]) < len(arms_per_round):
            arms = list(arms_per_round[int(rounds[i])])
        else:
            arms = []
        chosen.append([int(a) for a in arms if isinstance(a, int | np.integer) and 0 <= a < width])
    return rounds, probs, chosen


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


def plot_arm_probabilities(bandit: Sequence[Mapping[str, Any]], path: Path,
                           arms_per_round: Sequence[Sequence[int]] | None = None) -> Figure:
    """One line per arm over rounds, the chosen arm(s) ringed, and the uniform 1/K level for reference."""
    rounds, probs, chosen = arm_probability_table(bandit, arms_per_round)
    fig = _figure()
    ax = fig.add_subplot()
    ax.set_title("EXP3 arm probabilities per round")
    ax.set_xlabel("round")
    ax.set_ylabel("probability of picking the arm")
    if probs.size == 0:
        _empty_note(ax, "no rounds recorded in bandit.jsonl" if not bandit
                    else "no arm probabilities in bandit.jsonl (not a bandit selector?)")
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
    cols = [(c, lab, col) for c, lab, col in (("idu_before", "IDU before the round", "tab:blue"),
                                              ("idu_after", "IDU after the round", "tab:orange"))
            if c in sel.columns]
    has_rows = "round" in sel.columns and len(sel) > 0
    if not has_rows or not cols:
        _empty_note(ax, "no selected samples" if not has_rows else "no idu_before/idu_after columns")
    else:
        rounds = sorted(pd.unique(sel["round"]))
        width = 0.7 / len(cols)
        handles = []
        for j, (c, label, colour) in enumerate(cols):
            offset = (j - (len(cols) - 1) / 2) * width
            data, pos = [], []
            for r in rounds:
                v = pd.to_numeric(sel.loc[sel["round"] == r, c], errors="coerce").dropna().to_numpy()
                if len(v):
                    data.append(v)
                    pos.append(float(r) + offset)
            if data:
                ax.boxplot(data, positions=pos, widths=width * 0.9, patch_artist=True, manage_ticks=False,
                           boxprops={"facecolor": colour, "alpha": 0.55, "edgecolor": colour},
                           medianprops={"color": "black"}, whiskerprops={"color": colour},
                           capprops={"color": colour},
                           flierprops={"marker": ".", "markersize": 3, "markeredgecolor": colour})
                handles.append(Patch(facecolor=colour, alpha=0.55, edgecolor=colour, label=label))
        if "loss" in sel.columns:
            loss = pd.to_numeric(sel["loss"], errors="coerce").groupby(sel["round"]).mean()
            if loss.notna().any():
                (line,) = ax.plot(loss.index.to_numpy(dtype=float), loss.to_numpy(), color="black", marker="x",
                                  lw=1, label="mean training loss L_t(x)")
                handles.append(line)
        if handles:
            ax.legend(handles=handles, fontsize=9, loc="best")
        else:
            _empty_note(ax, "no numeric IDU values")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _top(counts: Mapping[Any, int], limit: int, keep_order: bool) -> list[tuple[Any, int]]:
    """At most `limit` bars: the largest counts (or all in key order when they fit), the rest as one 'other'."""
    items = list(counts.items())
    if len(items) <= limit and keep_order:
        return items
    items.sort(key=lambda kv: (-kv[1], _sort_key(kv[0])))
    if len(items) <= limit:
        return items
    head, rest = items[: limit - 1], items[limit - 1:]
    return head + [(f"other ({len(rest)})", sum(v for _, v in rest))]


def plot_selection_mix(mix: Mapping[str, Mapping[Any, int]], path: Path, notes: Sequence[str] = (),
                       num_arms: int | None = None) -> Figure:
    """Three bar panels (arm, group, source) of selected (round, id) rows; arms keep their arm-plot colours."""
    fig = _figure((12.0, 4.5))
    axes = fig.subplots(1, 3)
    fig.suptitle("Selection mix: selected (round, id) rows")
    titles = {"arm": "by arm", "group": "by task group", "source": "by source"}
    prefix = {"arm": "arm ", "group": "group ", "source": ""}
    for ax, dim in zip(axes, ("arm", "group", "source")):
        ax.set_title(titles[dim])
        counts = mix.get(dim)
        if counts is None:
            why = next((n for n in notes if dim in n.split(":")[0]), f"no '{dim}' column in selections.parquet")
            ax.set_axis_off()
            _empty_note(ax, "\n".join(_wrap(why, 34)))
            continue
        if not counts:
            _empty_note(ax, "no selected samples")
            ax.set_xlabel("selected rows")
            continue
        bars = _top(counts, MAX_BARS, keep_order=dim == "arm")
        labels = [k if isinstance(k, str) and k.startswith("other (") else f"{prefix[dim]}{k}" for k, _ in bars]
        labels = [lab if len(lab) <= 24 else lab[:23] + "…" for lab in labels]
        values = [v for _, v in bars]
        k = num_arms or (max((a for a in counts if isinstance(a, int)), default=0) + 1)
        colours = [_arm_colour(a, k) if dim == "arm" and isinstance(a, int) and a >= 0 else "tab:gray"
                   for a, _ in bars]
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


def plot_training(rounds: Sequence[Mapping[str, Any]], final: Mapping[str, Any] | None, path: Path,
                  summary: Mapping[str, Any] | None = None) -> Figure:
    """Training loss per round and held-out NLL: per-round `eval_nll` when the run logged it, and always the
    before/after points. Round r spans [r-0.5, r+0.5], so held-out NLL (measured at round ends) sits at r+0.5."""
    fig = _figure()
    ax = fig.add_subplot()
    ax.set_title("Training loss and held-out NLL")
    ax.set_xlabel("round (held-out NLL is measured at round ends)")
    ax.set_ylabel("mean NLL per response token")
    x = np.array([_num(m.get("round"), i) for i, m in enumerate(rounds)], dtype=float)
    key = "train_loss" if any("train_loss" in m for m in rounds) else "mean_loss"
    train = np.array([_num(m.get(key)) for m in rounds], dtype=float)
    drawn = False
    if np.isfinite(train).any():
        ax.plot(x, train, marker="o", color="tab:blue",
                label="training loss" if key == "train_loss" else "mean per-sample loss")
        drawn = True
    src = final if final is not None else (summary or {})
    before, after = _num(src.get("nll_before")), _num(src.get("nll_after"))
    last = float(np.nanmax(x)) if len(x) else 0.0
    evals = np.array([_num(m.get("eval_nll")) for m in rounds], dtype=float)
    if np.isfinite(evals).any():
        ex, ey = x + 0.5, evals
        if math.isfinite(before):
            ex, ey = np.r_[-0.5, ex], np.r_[before, ey]
        ok = np.isfinite(ey)
        ax.plot(ex[ok], ey[ok], marker="s", color="tab:green", label="held-out NLL")
        drawn = True
    if math.isfinite(before):
        ax.scatter([-0.5], [before], marker="s", s=70, color="tab:green", edgecolors="black", zorder=3,
                   label=f"held-out NLL before: {before:.4f}")
        drawn = True
    if math.isfinite(after):
        ax.scatter([last + 0.5], [after], marker="D", s=70, color="tab:red", edgecolors="black", zorder=3,
                   label=f"held-out NLL after: {after:.4f}")
        drawn = True
    if not rounds:
        _empty_note(ax, "no training rounds recorded")
        ax.set_xlim(-1, 1)
        ax.set_xticks([-0.5, 0.5], ["before training", "after"])
    elif not drawn:
        _empty_note(ax, "no loss values recorded")
    if drawn:
        ax.legend(fontsize=9, loc="best")
    if rounds:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    return _save(fig, path)


# ---------------------------------------------------------------------------------------------------------------
# markdown


def _cell(v: Any) -> str:
    return format_value(v).replace("|", "\\|").replace("\n", " ")


def summary_rows(summary: Mapping[str, Any], final: Mapping[str, Any] | None = None) -> list[tuple[str, str]]:
    """The summary.json figures as (label, text) rows; keys this function does not know are listed as they are."""
    s = dict(summary)
    if final is not None:
        for k in ("nll_before", "nll_after"):
            s.setdefault(k, final.get(k))
    rows: list[tuple[str, str]] = []
    known = {"run_dir", "rounds", "arms_per_round", "num_unique", "budget", "stop_reason", "ifd_excluded", "nll_before",
             "nll_after", "wall_seconds", "selection_seconds", "config_key"}
    if "rounds" in s:
        rows.append(("rounds", format_value(s["rounds"])))
    apr = s.get("arms_per_round")
    if isinstance(apr, list):
        text = " ".join(str(a[0]) if isinstance(a, list) and len(a) == 1 else str(a) for a in apr)
        rows.append(("arm per round", text or "none"))
    if "num_unique" in s:
        rows.append(("unique samples", format_value(s["num_unique"])))
    if "budget" in s:
        used, budget = _num(s.get("num_unique")), _num(s["budget"])
        pct = f" ({100 * used / budget:.0f}% used)" if math.isfinite(used) and budget and math.isfinite(budget) else ""
        rows.append(("budget (unique samples)", f"{format_value(s['budget'])}{pct}"))
    if "stop_reason" in s:
        rows.append(("stopped by", format_value(s["stop_reason"])))
    if "ifd_excluded" in s:
        rows.append(("train rows excluded (IFD > 1)", format_value(s["ifd_excluded"])))
    before, after = _num(s.get("nll_before")), _num(s.get("nll_after"))
    if "nll_before" in s:
        rows.append(("held-out NLL before", format_value(before)))
    if "nll_after" in s:
        rows.append(("held-out NLL after", format_value(after)))
    if math.isfinite(before) and math.isfinite(after):
        rel = f" ({100 * (after - before) / before:+.1f}%)" if before else ""
        rows.append(("held-out NLL change", f"{after - before:+.4f}{rel}"))
    for key, label in (("selection_seconds", "time waiting on selection"), ("wall_seconds", "wall time")):
        if key in s:
            w = _num(s[key])
            rows.append((label, f"{w:.1f}s" if math.isfinite(w) else "n/a"))
    for k, v in s.items():
        if k not in known and not isinstance(v, dict | list):
            rows.append((k, format_value(v)))
    if "run_dir" in s:
        rows.append(("run dir (as written)", format_value(s["run_dir"])))
    return rows


def _round_table(data: RunData) -> list[str]:
    """Per-round figures from metrics.jsonl and bandit.jsonl, one table row per round."""
    if not data.rounds:
        return ["No training rounds were recorded."]
    arms = {int(_num(b.get("round"), i)): b.get("arms") or [] for i, b in enumerate(data.bandit)}
    has_eval = any("eval_nll" in m for m in data.rounds)
    lines = ["| round | arm(s) | selected | unique | train loss |" + (" held-out NLL |" if has_eval else "")
             + " reward, nats (scaled) | ΔL′, nats |",
             "| ---: | --- | ---: | ---: | ---: |" + (" ---: |" if has_eval else "") + " --- | --- |"]
    for i, m in enumerate(data.rounds):
        r = int(_num(m.get("round"), i))
        a = [x for x in arms.get(r, []) if isinstance(x, Mapping)]
        arm_txt = ", ".join(str(x.get("arm")) for x in a) or "n/a"
        reward = ", ".join(f"{_num(x.get('reward')):.4g} ({_num(x.get('scaled_reward')):+.2f})" for x in a) or "n/a"
        delta_l = ", ".join(f"{_num(x.get('delta_l')):.4g}" for x in a) or "n/a"
        lines.append(f"| {r} | {arm_txt} | {_cell(m.get('num_selected'))} | {_cell(m.get('num_unique'))} | "
                     f"{_cell(m.get('train_loss', m.get('mean_loss')))} |"
                     + (f" {_cell(m.get('eval_nll'))} |" if has_eval else "") + f" {reward} | {delta_l} |")
    return lines


def summary_markdown(data: RunData, images: Mapping[str, str] = IMAGES) -> str:
    """summary.md: the run's headline figures, a per-round table, and each figure embedded by relative link."""
    lines = [f"# LEAD run report: {data.run_dir.name}", "", f"Run dir: `{data.run_dir}`", "", "## Summary", "",
             "| figure | value |", "| --- | --- |"]
    lines += [f"| {_cell(k)} | {_cell(v)} |" for k, v in summary_rows(data.summary, data.final)]
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

    Raises FileNotFoundError naming the missing file when `run_dir` is not a finished run, and ValueError when a
    required file cannot be parsed. Optional columns and files only cost their panel (noted in summary.md).
    """
    data = load_run(run_dir)
    out = data.run_dir / "report"
    out.mkdir(exist_ok=True)
    apr = data.summary.get("arms_per_round") if isinstance(data.summary.get("arms_per_round"), list) else None
    plot_arm_probabilities(data.bandit, out / "arm_probabilities.png", apr)
    plot_idu_distribution(data.sel, out / "idu_distribution.png")
    num_arms = arm_probability_table(data.bandit, apr)[1].shape[1] or None
    plot_selection_mix(selection_mix(data.sel, data.sources), out / "selection_mix.png", data.notes, num_arms)
    plot_training(data.rounds, data.final, out / "training.png", data.summary)
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
