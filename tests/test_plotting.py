"""Figures: multi-panel plots split into one-panel figures, shown in a row that wraps on narrow pages."""

import base64
import re

import matplotlib
import pandas as pd
import pytest
import torch

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from smf_lib.views.figures import (figure_png, legend_overlaps, png_text, rendered_pt,  # noqa: E402
                                   smallest_text_pt)
from smf_lib.views.plotting import (Panels, plot_deltas, plot_frontier, plot_overlap, plot_paths,  # noqa: E402
                              plot_row_changes, plot_tradeoff)


def _summary():
    rows = [{"method": "base"}]
    for method, d in (("smf-kl", 0.01), ("lora", -0.02), ("full", 0.03)):
        rows.append({"method": method, "d_medmcqa_acc": d, "d_medmcqa_acc_lo": d - 0.02, "d_medmcqa_acc_hi": d + 0.02,
                     "d_wikitext_ppl": -d, "d_wikitext_ppl_lo": -d - 0.1, "d_wikitext_ppl_hi": -d + 0.1})
    return pd.DataFrame(rows)


def test_split_deltas_give_one_panel_per_metric_in_table_order():
    figs = plot_deltas(_summary(), ["medmcqa_acc", "wikitext_ppl", "chat_loglik"], split=True)
    assert len(figs) == 2 and all(len(f.axes) == 1 for f in figs)  # chat_loglik has no deltas: left out
    labels = [t.get_text() for t in figs[0].axes[0].get_yticklabels()]
    top_first = sorted(zip(figs[0].axes[0].get_yticks(), labels))
    assert [label for _, label in top_first][0] == "smf-kl" and figs[0].axes[0].yaxis_inverted()
    assert len(plot_deltas(_summary(), ["medmcqa_acc", "wikitext_ppl"]).axes) == 2  # the single figure remains
    plt.close("all")


def test_split_row_changes_share_one_colour_scale():
    changes = [torch.zeros(16), torch.zeros(16)]
    changes[0][3], changes[1][5] = 0.1, 10.0
    figs = plot_row_changes(changes, 4, labels=[7, 15], split=True)
    norms = [f.axes[0].images[0].norm for f in figs]
    assert len(figs) == 2 and all((n.vmin, n.vmax) == pytest.approx((0.1, 10.0)) for n in norms)
    assert "layer 15" in figs[1].axes[0].get_title()
    with pytest.raises(ValueError, match="no value row moved"):
        plot_row_changes([torch.zeros(16)], 4, split=True)
    plt.close("all")


def test_panels_render_each_figure_once_one_per_row_at_a_readable_size():
    overlap = pd.DataFrame({"layer": [7, 7, 15, 15], "top_t": [8, 16, 8, 16], "jaccard": [0.2, 0.4, 0.3, 0.5],
                            "kl_hub_share": [0.0, 0.1, 0.0, 0.2], "tfidf_hub_share": [0.0, 0.0, 0.1, 0.1]})
    figs = plot_overlap(overlap, split=True)
    before = len(plt.get_fignums())
    html = Panels(figs)._repr_html_()
    assert len(plt.get_fignums()) == before - 2  # closed: a notebook does not draw them a second time
    assert "flex-direction:column" in html and html.count("<img") == 2
    widths = [int(w) for w in re.findall(r'style="width:(\d+)px;max-width:100%', html)]
    assert len(widths) == 2 and all(w >= 600 for w in widths)  # never below the book's 600 px
    png = base64.b64decode(re.search(r"base64,([^\"]+)", html).group(1))
    meta = png_text(png)
    assert meta["smf:dpi"] == "150" and float(meta["smf:min_font_pt"]) > 0 and meta["smf:legend_overlaps"] == "0"
    assert 'alt="KL vs TF-IDF: overlap of selected rows"' in html
    _, ax = plt.subplots()
    assert repr(Panels([ax])) == "Panels(1 figures)"  # axes are taken for their figure
    with pytest.raises(ValueError, match="at least one"):
        Panels([])


def test_figure_checks_find_small_text_and_a_legend_over_the_data():
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot([0, 1, 2, 3], [0, 1, 2, 3], label="a line through the middle")
    ax.legend(loc="center")
    ax.set_xlabel("x", fontsize=6)
    assert legend_overlaps(fig) > 0 and smallest_text_pt(fig) == 6
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1))  # outside the axes
    assert legend_overlaps(fig) == 0
    meta = png_text(figure_png(fig, dpi=100))
    assert meta["smf:min_font_pt"] == "6" and meta["smf:legend_overlaps"] == "0"
    # 6 pt drawn at 100 dpi, shown at its pixel width: 6 * 100 / 96 points as rendered
    assert rendered_pt(meta, 400, 400) == pytest.approx(6.25)
    assert rendered_pt(meta, 200, 400) == pytest.approx(3.125)
    plt.close(fig)


def test_delta_rows_name_the_seed_and_rate_where_a_method_repeats():
    summary = pd.concat([_summary(), pd.DataFrame([
        {"method": "lora", "seed": 1, "lr": 2e-4, "d_medmcqa_acc": 0.0, "d_medmcqa_acc_lo": -0.01,
         "d_medmcqa_acc_hi": 0.01},
        {"method": "lora", "seed": 1, "lr": 1e-3, "d_medmcqa_acc": 0.0, "d_medmcqa_acc_lo": -0.01,
         "d_medmcqa_acc_hi": 0.01}])], ignore_index=True)
    summary.loc[summary["method"] == "lora", "seed"] = summary.loc[summary["method"] == "lora", "seed"].fillna(0)
    fig = plot_deltas(summary, ["medmcqa_acc"])
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == ["smf-kl", "lora s0", "full", "lora s1 lr 0.0002", "lora s1 lr 0.001"]
    legend = [t.get_text() for t in plot_tradeoff(summary, "wikitext_ppl").get_legend().get_texts()]
    assert legend == ["smf-kl", "lora", "full"]  # one entry per method
    plt.close("all")


def _trajectories(drifts):
    rows = []
    for (method, lr, seed), (gain, drift) in drifts.items():
        for step in (0, 75):
            rows.append({"method": method, "lr": lr, "seed": seed, "step": step, "steps": 75,
                         "d_medmcqa_gold_loglik": gain * step / 75, "chat_drift_kl": drift * step / 75})
    return pd.DataFrame(rows)


def test_frontier_and_paths_take_a_log_axis_when_the_drift_spans_decades():
    wide = _trajectories({("smf-kl", 5e-4, 0): (0.01, 5e-5), ("smf-kl", 5e-2, 0): (0.5, 8e-3),
                          ("smf-tfidf", 5e-4, 0): (0.01, 4e-5), ("lora", 2e-4, 0): (0.7, 0.07),
                          ("lora", 1e-3, 0): (0.72, 0.14)})
    ax = plot_frontier(wide)
    assert ax.get_yscale() == "symlog" and plot_paths(wide).get_yscale() == "symlog"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["smf-kl", "smf-tfidf (0.0005)", "lora"]  # a method trained at one rate names it
    assert sorted(t.get_text() for t in ax.texts) == ["0.0002", "0.0005", "0.001", "0.05"]  # swept rates only
    narrow = _trajectories({("lora", 2e-4, 0): (0.7, 0.07), ("full", 2e-4, 0): (0.74, 0.14)})
    assert plot_frontier(narrow).get_yscale() == "linear"
    assert plot_frontier(wide, yscale="linear").get_yscale() == "linear"
    plt.close("all")


def test_the_book_figures_are_readable_at_the_book_width():
    """Every kind of figure the chapters show, drawn at the book's type sizes, keeps its smallest text at 9 pt or
    more as rendered in the book's column and no legend over its data (what ``scripts/check_book.py`` measures)."""
    import numpy as np

    from smf_lib.views.diagrams import plot_architecture, plot_pipeline, plot_read_overlap
    from smf_lib.views.figures import book_style, figure_problems

    book_style()
    rng = np.random.default_rng(0)
    runs = {("smf-kl", 5e-4, 0): (0.01, 5e-5), ("smf-kl", 5e-2, 0): (0.5, 8e-3), ("lora", 2e-4, 0): (0.6, 2e-3),
            ("full", 5e-5, 0): (0.7, 1e-2)}
    overlap = pd.DataFrame({"layer": [7, 7, 15, 15], "top_t": [8, 16, 8, 16], "jaccard": [0.2, 0.4, 0.3, 0.5],
                            "kl_hub_share": [0.0, 0.1, 0.0, 0.2], "tfidf_hub_share": [0.0, 0.0, 0.1, 0.1]})
    figures = {"architecture": plot_architecture(), "pipeline": plot_pipeline(),
               "read overlap": plot_read_overlap(rng.integers(0, 2, 64 * 64), rng.integers(0, 2, 64 * 64), 64),
               "tradeoff": plot_tradeoff(_summary(), "wikitext_ppl").figure,
               "frontier": plot_frontier(_trajectories(runs)).figure, "paths": plot_paths(_trajectories(runs)).figure}
    figures.update({f"overlap {i}": f for i, f in enumerate(plot_overlap(overlap, split=True))})
    figures.update({f"deltas {i}": f for i, f in enumerate(plot_deltas(_summary(), ["medmcqa_acc", "chat_loglik"],
                                                                       split=True))})
    figures.update(_spread_figures())
    from smf_lib.views.diagrams import plot_selection_steps

    counts, df = torch.tensor([9, 0, 4, 4, 1, 7, 0, 2] * 8), torch.tensor([5, 1, 0, 2, 9, 1, 3, 8] * 8)
    figures["selection steps"] = plot_selection_steps(counts, df, df * 3, 10, top_t=4, rows=12)
    problems = {name: figure_problems(fig) for name, fig in figures.items()}
    plt.close("all")
    assert not {k: v for k, v in problems.items() if v}


def _spread_figures() -> dict:
    """The spread pilot's figures on constructed tables (what chapter 2 shows)."""
    from smf_lib.views.pilot_plots import plot_memory_effect, plot_sizes, plot_spread

    rows = [{"recipe": r, "layer": layer, "slots": n, "effective_ratio": ratio, "footprint": 4 * 64 * 30 / n,
             "overlap": 0.5 * (4096 / n) ** 0.4, "share": 0.2}
            for r, n, ratio in (("trained", 4096, 0.05), ("frozen", 4096, 1.0), ("frozen-n128", 16384, 1.0),
                                ("frozen-n256", 65536, 1.0)) for layer in (7, 15, 22)]
    after = pd.DataFrame(rows)
    effect = pd.DataFrame([{"memory": m, "slots": n, "selector": sel, "lr": lr, "learning": g, "learning_lo": g - 0.03,
                            "learning_hi": g + 0.03, "chat_change": -g / 4, "chat_change_lo": -g / 4 - 0.01,
                            "chat_change_hi": -g / 4 + 0.01}
                           for m, n in (("trained", 4096), ("frozen", 4096), ("frozen-n256", 65536))
                           for sel, rates in (("kl", (1e-2, 3e-2)), ("tfidf", (3e-2, 1e-1)))
                           for lr, g in zip(rates, (0.05, 0.12))])
    from test_frontier import _run

    from smf_lib.views.plotting import plot_equal_learning

    runs = [_run(arm, seed, lr, slope, chat) for seed in (0, 1) for arm, chat in (("smf-kl", -0.2), ("lora", -0.5))
            for lr, slope in ((1e-2, 0.02), (3e-2, 0.05))]
    figures = {"spread": plot_spread(after).figure, "memory effect": plot_memory_effect(effect).figure,
               "equal learning": plot_equal_learning(runs, ("smf-kl", "lora"), level=0.1).figure}
    figures.update({f"sizes {i}": f for i, f in enumerate(plot_sizes(after, split=True))})
    return figures


def test_book_tables_round_hide_the_index_and_have_a_narrow_view():
    from smf_lib.views.tables import book_table, cell_text

    df = pd.DataFrame({"method": ["lora", "full"], "seed": [0, 1], "drift": [3.69e-5, float("nan")],
                       "ppl": [21.63171, 22.0], "count": [12, 123456]}).set_index(["method", "seed"])
    table = book_table(df)
    assert table.cells() == [["lora", "0", "3.69e-05", "21.6", "12"], ["full", "1", "—", "22", "123,456"]]
    html = table._repr_html_()
    assert "nan" not in html.lower() and html.count('class="smf-card"') == 2
    assert "<th>method</th>" in html and "<th>seed</th>" in html  # a named index becomes columns
    plain = book_table(pd.DataFrame({"a": [1.23456]}))  # an unnamed 0, 1, 2 index is dropped
    assert plain.df.columns.tolist() == ["a"] and "<td>0</td>" not in plain._repr_html_()
    assert "@media (max-width:640px)" in html
    assert cell_text(True) == "True" and cell_text(None) == "—"
    assert cell_text("+0.1 [+0.0, +0.2]") == "+0.1 [+0.0, +0.2]"
    slots = book_table(pd.DataFrame({"kl slot": [3947], "rows read": [4096], "n_slots": [65536]})).cells()
    assert slots == [["3947", "4,096", "65,536"]]  # counts get separators, identifiers do not
    why = "a reason long enough to be prose, which would widen the table on one line"
    prose = book_table(pd.DataFrame({"setting": ["top-t"], "why": [why]}))._repr_html_()
    assert f'<td class="smf-text">{why}</td>' in prose and '<td class="smf-key">top-t</td>' in prose  # it wraps


def test_the_how_to_read_picture_marks_equal_learning_and_the_gap_between_the_arms():
    from smf_lib.views.diagrams import plot_how_to_read

    fig = plot_how_to_read(("SMF", "LoRA"), level=0.5)
    ax = fig.axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["SMF: one point per run (rate)", "LoRA: one point per run (rate)"]
    marks = [ln for ln in ax.get_lines() if ln.get_marker() == "D"][0]  # the two readings on the line
    assert list(marks.get_xdata()) == [0.5, 0.5] and marks.get_ydata()[0] > marks.get_ydata()[1]
    texts = " ".join(t.get_text() for t in ax.texts)
    assert "equal learning" in texts and "SMF minus LoRA" in texts
    from smf_lib.views.figures import legend_overlaps

    assert legend_overlaps(fig) == 0  # the legend sits off the data
    plt.close(fig)


def test_the_answer_plot_explains_its_seed_markers_in_the_legend():
    from smf_lib.views.plotting import plot_answer

    rows = [{"method": m, "lr": 1e-3, "seed": s, "d_medmcqa_gold_margin": 0.1 * (s + 1),
             "d_medmcqa_gold_margin_lo": 0.0, "d_medmcqa_gold_margin_hi": 0.3, "d_chat_loglik": -0.01,
             "d_chat_loglik_lo": -0.02, "d_chat_loglik_hi": 0.0} for m in ("smf-kl", "lora") for s in (0, 1)]
    ax = plot_answer(pd.DataFrame(rows))
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["smf-kl (0.001)", "lora (0.001)", "seed 0", "seed 1"]
    plt.close(ax.figure)


def test_the_frontier_figure_has_one_panel_per_probe_one_line_per_arm_and_the_level_once():
    import numpy as np

    from smf_lib.views.frontier_plots import plot_frontier_panels

    def run(arm, seed, lr, slope):
        traj = [{"step": k * 10, "items": {"medmcqa_gold_margin": list(np.full(20, slope * k)),
                                           "chat_loglik": list(np.full(20, -2 - slope * k / 2)),
                                           "wikitext_drift_kl": list(np.full(20, slope * k / 10))}}
                for k in range(5)]
        return {"method": arm, "seed": seed, "evaluation": "trajectory", "train_config": {"lr": lr},
                "trajectory": traj}

    runs = [run(a, s, lr, slope) for s in (0, 1) for a in ("smf-kl", "lora-mem")
            for lr, slope in ((1e-2, 0.02), (3e-2, 0.05))]
    fig = plot_frontier_panels(runs, ("smf-kl", "lora-mem"), level=0.1, probes=("chat_loglik", "wikitext_drift_kl"))
    top, bottom = fig.axes
    assert len(top.get_lines()) == len(bottom.get_lines()) == 4  # two arms, the level, the zero line
    assert top.get_legend() is not None and bottom.get_legend() is None
    assert [t.get_text() for t in top.texts] == ["compared here"] and not bottom.texts
    assert "chat" in top.get_ylabel() and "up is better" in top.get_ylabel() and top.get_xlabel() == ""
    assert not legend_overlaps(fig)
    plt.close(fig)


def test_the_facts_frontier_zooms_in_on_the_level_and_fits_each_panel_to_what_lies_there():
    """Without ``xmax`` every run is in view; with it the x axis stops there and each panel's y range covers the
    lines up to it (where a line leaves the window included), not a far run that would squeeze them flat."""
    from smf_lib.views.facts_plots import plot_facts_frontier

    start = {"facts_loglik": [-10.0, -10.0], "chat_loglik": [-2.0, -2.0]}

    def run(arm, lr, gain, chat):
        scores = {"facts_loglik": [-10 + gain] * 2, "chat_loglik": [chat] * 2}
        return {"arm": arm, "lr": lr, "seed": 0, "scores": scores}

    runs = [run("smf-tfidf", 1e-2, 0.3, -1.99), run("smf-tfidf", 3e-2, 0.8, -2.01),
            run("lora", 1e-5, 0.4, -1.995), run("lora", 3e-5, 2.4, -2.2)]
    whole = plot_facts_frontier(runs, start, probes=("chat_loglik",), level=0.4)
    (ax,) = whole.axes
    assert ax.get_xlim()[1] > 2.4 and ax.get_ylim()[0] < -0.2
    near = plot_facts_frontier(runs, start, probes=("chat_loglik",), level=0.4, xmax=0.8)
    (ax,) = near.axes
    lo, hi = ax.get_ylim()
    assert ax.get_xlim()[1] == pytest.approx(0.8)
    # in view: SMF's +0.01 at 0.3 and -0.01 at 0.8, and LoRA where it leaves the window (-0.036 at 0.8), not its -0.2
    assert -0.045 < lo < -0.036 and 0.01 < hi < 0.015
    drawn = [x for line in ax.get_lines() if not line.get_label().startswith("_") for x in line.get_xdata()]
    assert max(x for x in drawn if x == x) == pytest.approx(0.8)  # nothing beyond the window, under the legend
    assert not legend_overlaps(near)
    plt.close("all")
    from smf_lib.views.facts_plots import _clipped

    # out of the window and back (a higher rate that learned less): a gap, the crossings, markers on real points only
    xs, ys, marks = _clipped([0.0, 0.5, 1.5, 0.7], [0.0, 1.0, 3.0, 1.4], 1.0)
    assert xs[:3] == [0.0, 0.5, 1.0] and xs[3] != xs[3] and xs[4:] == [1.0, 0.7]
    assert ys[2] == pytest.approx(2.0) and ys[4] == pytest.approx(2.0) and marks == [0, 1, 5]


def test_one_facts_rows_are_told_in_words_that_match_the_selection():
    """The rows sentence and table count from the snapshot: hubs among the fact's most-read rows, how many of those
    the selector trains, hubs in its top-t; the table's columns name the selector and the top-t."""
    from smf_lib.views.facts_plots import fact_selection, rows_sentence, rows_table

    # rows 0-1: hubs the fact reads most; rows 2-3: rare rows it reads less; rows 4-7: untouched
    snapshot = {"n_slots": 8, "n_docs": 10, "top_t": 2, "df": [9, 8, 1, 0, 5, 5, 5, 5],
                "totals": [90, 80, 1, 1, 50, 50, 50, 50],
                "facts": [{"entity": "A", "answer": "x", "rows": [0, 1, 2, 3], "reads": [9, 8, 3, 2]},
                          {"entity": "B", "answer": "y", "rows": [0, 2], "reads": [5, 5]}]}
    chosen = set(fact_selection(snapshot, 0, "tfidf").tolist())
    assert chosen == {2, 3}  # TF-IDF passes over the hubs
    said = rows_sentence(snapshot, 0, "tfidf", rows=3)
    assert said.startswith("Of the 3 rows this fact's batch reads most, 2 are hubs, read by more than 50%")
    assert "TF-IDF trains 1 of those 3; the rest of its 2 rows" in said and said.endswith("they hold 0 hubs in all.")
    table = rows_table(snapshot)
    assert list(table.columns[2:4]) == ["TF-IDF: hubs among its 2 rows", "TF-IDF: shared with the next fact"]
    assert table.iloc[0, 2] == 0 and table.iloc[0, 3] == len(chosen & set(fact_selection(snapshot, 1).tolist()))
