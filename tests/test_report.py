"""The run report (lead_ray/report.py) on hand-made run dirs, and on run dirs written from a real LeadSelector."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from matplotlib.image import imread

from lead_ray.report import (
    IMAGES,
    arm_probability_table,
    main_report,
    plot_arm_probabilities,
    plot_idu_distribution,
    plot_selection_mix,
    plot_training,
    selection_mix,
    write_report,
)
from lead_ray.runtime.run_files import RoundMetrics, write_run_files
from lead_ray.select.lead import LeadSelector

# A hand-made run: 3 rounds, 2 arms. id 0 is trained twice (rounds 0 and 2).
SEL = {
    "round": [0, 0, 0, 1, 1, 2, 2],
    "id": [0, 1, 2, 3, 4, 0, 5],
    "arm": [0, 0, 0, 1, 1, 0, 0],
    "group": [0, 0, 1, 1, 1, 0, 2],
    "idu_before": [2.0, 1.8, 1.6, 2.2, 2.1, 1.9, 1.5],
    "idu_after": [1.9, 1.7, 1.55, 2.0, 2.0, 1.8, 1.45],
    "loss": [1.5, 1.4, 1.0, 1.6, 1.8, 1.2, 1.1],  # round 0: mean 1.3 != median 1.4
}
SOURCES = {0: "alpaca", 1: "alpaca", 2: "dolly", 3: "dolly", 4: "alpaca", 5: "sharegpt", 6: "dolly"}
# by hand from SEL: rows per arm, per group, and per source of each row's id
MIX = {"arm": {0: 5, 1: 2}, "group": {0: 3, 1: 3, 2: 1}, "source": {"alpaca": 4, "dolly": 2, "sharegpt": 1}}
PROBS = [[0.5, 0.5], [0.62, 0.38], [0.44, 0.56]]
CHOSEN = [0, 1, 0]
TRAIN_LOSS = [1.45, 1.7, 1.15]
CONTEXT = {"run_dir": "/somewhere/else/hand", "ifd_excluded": 1, "wall_seconds": 12.34, "config_key": "k"}
FINAL = {"nll_before": 2.345678, "nll_after": 1.987654, "selection_seconds": 0.5}


def round_metrics(r: int, loss: float, eval_nll: float | None = None) -> RoundMetrics:
    return RoundMetrics(round=r, train_loss=loss, num_samples=8, num_tokens=800, round_seconds=1.0, step=r + 1,
                        eval_nll=eval_nll, learning_rate=1e-3)


def hand_selection(probs: list[list[float]] = PROBS, chosen: list[int] = CHOSEN) -> dict:
    """A SelectionService summary for SEL, as SelectionService.summary() returns it."""
    counts = [3, 2, 2][: len(probs)]
    stats = [{"round": r, "num_selected": n, "num_missing_losses": 0, "num_unique": u, "budget": 8,
              "mean_loss": loss, "arm_probs": p,
              "arms": [{"arm": a, "reward": 0.1 * (r + 1), "scaled_reward": 0.5, "delta_l": -0.01, "beta": 0.0}]}
             for r, (n, u, loss, p, a) in enumerate(zip(counts, [3, 5, 6], TRAIN_LOSS, probs, chosen))]
    return {"rounds": len(stats), "num_unique": stats[-1]["num_unique"] if stats else 0, "budget": 8,
            "stop_reason": "max_rounds", "round_stats": stats, "arm_probs": probs[-1] if probs else []}


def write_run(run: Path, sel: dict | None = None, selection: dict | None = None, training: list[dict] | None = None,
              final: dict | None = None, sources: dict | None = SOURCES) -> Path:
    """A run dir written by the function train_with_selection writes with, plus prep/enriched.parquet."""
    run.mkdir(parents=True, exist_ok=True)
    selection = hand_selection() if selection is None else selection
    if training is None:
        training = [round_metrics(r, loss) for r, loss in enumerate(TRAIN_LOSS[: selection["rounds"]])]
    write_run_files(run, selection, SEL if sel is None else sel, training, FINAL if final is None else final,
                    **CONTEXT)
    if sources is not None:
        (run / "prep").mkdir(exist_ok=True)
        pq.write_table(pa.table({"id": np.array(list(sources), dtype=np.int64), "source": list(sources.values()),
                                 "split": ["train"] * len(sources)}), run / "prep" / "enriched.parquet")
    return run


def check_pngs(report: Path) -> None:
    """Each figure is a real PNG of the size asked for (8 x 4.5 in at 110 dpi; the mix is 12 in wide) with content."""
    for name in IMAGES:
        path = report / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        img = imread(path)
        assert img.shape[:2] == ((495, 1320) if name == "selection_mix.png" else (495, 880)), (name, img.shape)
        assert img[..., :3].std() > 0.05, f"{name} is blank"


# ---------------------------------------------------------------------------------------------------------------
# pure counting


def test_selection_mix_equals_hand_counts() -> None:
    mix = selection_mix(pd.DataFrame(SEL), pd.Series(SOURCES))
    assert mix == MIX
    assert all(type(k) is int for k in mix["arm"]) and all(type(k) is int for k in mix["group"])
    assert selection_mix(pd.DataFrame(SEL), SOURCES) == MIX  # a plain mapping works the same


def test_selection_mix_counts_unknown_sources() -> None:
    partial = {k: v for k, v in SOURCES.items() if k != 0}  # id 0 (selected twice) has no source
    mix = selection_mix(pd.DataFrame(SEL), partial)
    assert mix["source"] == {"(unknown)": 2, "alpaca": 2, "dolly": 2, "sharegpt": 1}
    assert sum(mix["source"].values()) == len(SEL["id"])
    assert selection_mix(pd.DataFrame(SEL)) == {"arm": MIX["arm"], "group": MIX["group"]}  # no sources, no key
    empty = pd.DataFrame({k: np.zeros(0) for k in SEL})  # a zero-round run writes float64 columns
    assert selection_mix(empty, SOURCES) == {"arm": {}, "group": {}, "source": {}}


def test_arm_probability_table_reads_bandit_lines() -> None:
    bandit = [{"round": 0, "arm_probs": [0.2, 0.3, 0.5], "arms": [{"arm": 1}]},
              {"round": 1, "arm_probs": [0.1, 0.1, 0.8], "arms": [{"arm": 2}, {"arm": 0}]}]
    rounds, probs, chosen = arm_probability_table(bandit)
    assert rounds.tolist() == [0, 1] and chosen == [[1], [2, 0]]
    np.testing.assert_array_equal(probs, [[0.2, 0.3, 0.5], [0.1, 0.1, 0.8]])
    assert arm_probability_table([])[1].shape == (0, 0)


# ---------------------------------------------------------------------------------------------------------------
# what the figures draw


def test_figures_draw_the_run_data(tmp_path: Path) -> None:
    bandit = [{"round": r, "arm_probs": p, "arms": [{"arm": a}]} for r, (p, a) in enumerate(zip(PROBS, CHOSEN))]
    ax = plot_arm_probabilities(bandit, tmp_path / "a.png").axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    for arm in (0, 1):
        np.testing.assert_allclose(lines[f"arm {arm}"].get_ydata(), [p[arm] for p in PROBS])
    (chosen,) = ax.collections
    np.testing.assert_allclose(chosen.get_offsets(), [[r, PROBS[r][a]] for r, a in enumerate(CHOSEN)])

    sel = pd.DataFrame(SEL)
    ax = plot_idu_distribution(sel, tmp_path / "i.png").axes[0]
    (loss,) = [line for line in ax.get_lines() if line.get_label().startswith("mean training loss")]
    np.testing.assert_allclose(loss.get_ydata(), [(1.5 + 1.4 + 1.0) / 3, (1.6 + 1.8) / 2, (1.2 + 1.1) / 2])

    fig = plot_selection_mix(MIX, tmp_path / "m.png", 2)
    for ax, dim in zip(fig.axes, ("arm", "group", "source")):
        assert [p.get_width() for p in ax.patches] == list(MIX[dim].values()), dim  # small: key order kept for arms
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["arm 0", "arm 1"]

    rounds = [{"round": r, "train_loss": v, "eval_nll": 2.0 - 0.1 * r} for r, v in enumerate(TRAIN_LOSS)]
    ax = plot_training(rounds, {"nll_before": 2.3, "nll_after": 1.8}, tmp_path / "t.png").axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    np.testing.assert_allclose(lines["training loss"].get_ydata(), TRAIN_LOSS)
    np.testing.assert_allclose(lines["held-out NLL"].get_xdata(), [-0.5, 0.5, 1.5, 2.5])  # round ends
    np.testing.assert_allclose(lines["held-out NLL"].get_ydata(), [2.3, 2.0, 1.9, 1.8])
    after = [c for c in ax.collections if c.get_label().startswith("held-out NLL after")]
    np.testing.assert_allclose(after[0].get_offsets(), [[2.5, 1.8]])


def test_selection_mix_folds_many_categories_into_other(tmp_path: Path) -> None:
    groups = {g: 100 - g for g in range(30)}  # 30 groups, more than fit in a panel
    ax = plot_selection_mix({"arm": {0: 1}, "group": groups, "source": {}}, tmp_path / "m.png", 1).axes[1]
    widths = [p.get_width() for p in ax.patches]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert len(widths) == 12 and labels[-1] == "other (19)" and labels[0] == "group 0"
    assert sum(widths) == sum(groups.values()) and widths[-1] == sum(100 - g for g in range(11, 30))


# ---------------------------------------------------------------------------------------------------------------
# the whole report


def test_write_report_on_a_hand_made_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = write_run(tmp_path / "hand")
    assert main_report(str(run)) == 0
    report = run / "report"
    assert capsys.readouterr().out.strip() == str(report)
    check_pngs(report)
    md = (report / "summary.md").read_text()
    for name, title in IMAGES.items():
        assert f"![{title}]({name})" in md
    for row in ("| rounds | 3 |", "| arm per round | 0 1 0 |", "| unique samples | 6 |",
                "| budget (unique samples) | 8 (75% used) |", "| stopped by | max_rounds |",
                "| held-out NLL before | 2.3457 |", "| held-out NLL after | 1.9877 |", "| wall time | 12.3s |",
                "| held-out NLL change | -0.3580 (-15.3%) |", "| run dir (as written) | /somewhere/else/hand |"):
        assert row in md, row
    assert "| 1 | 1 | 2 | 5 | 1.7000 | 0.2 (+0.50) |" in md  # round 1 of the per-round table
    assert "held-out NLL |" not in md.split("## Rounds")[1].split("\n\n")[1]  # no eval_nll: no such column
    assert "Notes" not in md
    first = (report / "training.png").read_bytes()
    assert write_report(run) == report and (report / "training.png").read_bytes() == first  # rerun: same output


def test_per_round_eval_nll_gets_a_column(tmp_path: Path) -> None:
    training = [round_metrics(r, v, 2.0 - 0.125 * r) for r, v in enumerate(TRAIN_LOSS)]
    md = (write_report(write_run(tmp_path / "r", training=training)) / "summary.md").read_text()
    assert "| train loss | held-out NLL |" in md and "| 2 | 0 | 2 | 6 | 1.1500 | 1.7500 |" in md


@pytest.mark.parametrize("case", ["zero_rounds", "one_round", "one_arm", "no_enriched", "no_eval_rows"])
def test_edge_cases_still_give_a_full_report(tmp_path: Path, case: str) -> None:
    kw: dict = {}
    if case == "zero_rounds":
        kw = dict(sel={k: np.zeros(0) for k in SEL}, selection=hand_selection([], []))
    elif case == "one_round":
        kw = dict(sel={k: v[:3] for k, v in SEL.items()}, selection=hand_selection(PROBS[:1], CHOSEN[:1]))
    elif case == "one_arm":
        kw = dict(sel={**SEL, "arm": [0] * 7}, selection=hand_selection([[1.0]] * 3, [0] * 3))
    elif case == "no_enriched":
        kw = dict(sources=None)
    elif case == "no_eval_rows":  # eval_fraction 0: NaN held-out NLL; a round whose losses never arrived
        kw = dict(sel={**SEL, "loss": [float("nan")] * 3 + SEL["loss"][3:]},
                  final={"nll_before": float("nan"), "nll_after": float("nan"), "selection_seconds": 0.0})
    run = write_run(tmp_path / case, **kw)
    report = write_report(run)
    check_pngs(report)
    md = (report / "summary.md").read_text()
    assert all(f"]({name})" in md for name in IMAGES)
    if case == "zero_rounds":
        assert "| rounds | 0 |" in md and "| arm per round | none |" in md and "No training rounds were recorded." in md
    if case == "no_enriched":
        assert "source panel skipped: enriched.parquet not found" in md
    if case == "no_eval_rows":
        assert "| held-out NLL before | n/a |" in md and "| held-out NLL change | n/a |" in md


# ---------------------------------------------------------------------------------------------------------------
# run dirs written from a real LeadSelector, the way run.train_with_selection writes them


def selector_run(run: Path, *, num_arms: int, arms_per_round: int, max_rounds: int) -> tuple[Path, dict]:
    rng = np.random.default_rng(0)
    n = 60
    arm = np.arange(n) % num_arms
    arm[-6:] = -1  # held-out rows
    s = LeadSelector(rng.uniform(1, 3, n), arm, np.arange(n) % 3, num_arms=num_arms, sample_rate=0.2, budget=40,
                     max_rounds=max_rounds, arms_per_round=arms_per_round)
    while (plan := s.next_round()) is not None:
        s.report(plan.ids, rng.uniform(0.5, 2.5, len(plan.ids)))
        g = rng.normal(size=8)
        s.end_round(g, -1e-3 * g)  # one SGD step: u = -ηg
    sel = s.selections()
    run.mkdir(parents=True)
    selection = {"rounds": s.round, "num_unique": s.num_unique, "budget": s.budget, "stop_reason": s.stop_reason,
                 "round_stats": s.round_stats}
    training = [round_metrics(st["round"], st["mean_loss"]) for st in s.round_stats]
    write_run_files(run, selection, sel, training, {**FINAL, "nll_before": 2.0, "nll_after": 1.9}, **CONTEXT)
    return run, sel


@pytest.mark.parametrize("num_arms,arms_per_round,max_rounds", [(3, 1, 0), (3, 1, 4), (4, 2, 3), (1, 1, 2)])
def test_report_on_selector_written_runs(tmp_path: Path, num_arms: int, arms_per_round: int, max_rounds: int) -> None:
    run, sel = selector_run(tmp_path / "run", num_arms=num_arms, arms_per_round=arms_per_round, max_rounds=max_rounds)
    report = write_report(run)
    check_pngs(report)
    md = (report / "summary.md").read_text()
    assert f"| rounds | {max_rounds} |" in md and "source panel skipped" in md
    mix = selection_mix(pq.read_table(run / "selections.parquet").to_pandas())
    arms, counts = np.unique(sel["arm"], return_counts=True)
    assert mix["arm"] == dict(zip(arms.tolist(), counts.tolist()))
    assert sum(mix["group"].values()) == len(sel["id"])
    assert (len(sel["id"]) > 0) == (max_rounds > 0) and len(mix["arm"]) <= num_arms


# ---------------------------------------------------------------------------------------------------------------
# not a run dir


@pytest.mark.parametrize("missing", ["metrics.jsonl", "bandit.jsonl", "selections.parquet", "summary.json"])
def test_missing_required_file_is_named(tmp_path: Path, missing: str, capsys: pytest.CaptureFixture[str]) -> None:
    run = write_run(tmp_path / "run")
    (run / missing).unlink()
    with pytest.raises(FileNotFoundError, match=f"missing {missing}"):
        write_report(run)
    assert not (run / "report").exists()
    assert main_report(str(run)) == 2
    assert capsys.readouterr().err.startswith(f"lead-ray: error: {run} is not a finished run dir: missing {missing}")


def test_not_a_dir_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="run dir not found"):
        write_report(tmp_path / "nope")
