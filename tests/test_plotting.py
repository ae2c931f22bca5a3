"""Figures: multi-panel plots split into one-panel figures, shown in a row that wraps on narrow pages."""

import base64
import re

import matplotlib
import pandas as pd
import pytest
import torch

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

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


def test_panels_render_each_figure_once_in_a_wrapping_row():
    overlap = pd.DataFrame({"layer": [7, 7, 15, 15], "top_t": [8, 16, 8, 16], "jaccard": [0.2, 0.4, 0.3, 0.5],
                            "kl_hub_share": [0.0, 0.1, 0.0, 0.2], "tfidf_hub_share": [0.0, 0.0, 0.1, 0.1]})
    figs = plot_overlap(overlap, split=True)
    before = len(plt.get_fignums())
    html = Panels(figs, min_width=280)._repr_html_()
    assert len(plt.get_fignums()) == before - 2  # closed: a notebook does not draw them a second time
    assert "flex-wrap:wrap" in html and html.count("<img") == 2 and html.count("flex:1 1 280px") == 2
    widths = [int(w) for w in re.findall(r'max-width:(\d+)px', html)]
    assert all(300 <= w <= 600 for w in widths)  # about 4.4 in at 100 px per inch, not the 150 dpi pixels
    png = base64.b64decode(re.search(r"base64,([^\"]+)", html).group(1))
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert 'alt="KL vs TF-IDF: overlap of selected rows"' in html
    _, ax = plt.subplots()
    assert repr(Panels([ax])) == "Panels(1 figures)"  # axes are taken for their figure
    with pytest.raises(ValueError, match="at least one"):
        Panels([])


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
