"""smf_lib.views.widgets: the live explorer and the pre-drawn gallery the static book shows, with their controls
linked in the browser."""

import warnings
from pathlib import Path

import ipywidgets as w
import pytest
import torch

from smf_lib.selection import BackgroundStats
from smf_lib.views.widgets import STATIC_ENV, selection_explorer, selection_gallery


@pytest.fixture(scope="module")
def snapshot():
    g = torch.Generator().manual_seed(0)
    counts = [torch.randint(0, 4, (64,), generator=g) for _ in range(2)]
    stats = BackgroundStats(torch.randint(0, 5, (2, 64), generator=g), torch.randint(0, 20, (2, 64), generator=g),
                            5, "test")
    return counts, stats


def links():
    return [x for x in w.Widget._active_widgets.values() if isinstance(x, w.widgets.widget_link.DirectionalLink)]


def leaves(stack):
    return [leaf for child in stack.children for leaf in (leaves(child) if isinstance(child, w.Stack) else [child])]


def test_the_gallery_draws_every_state_and_links_each_control_to_its_stacks(snapshot):
    counts, stats = snapshot
    before = set(map(id, links()))
    box = selection_gallery(counts, stats, layers=[3, 5], ts=(2, 4, 8), selectors=["kl", "tfidf"], top_t=4,
                            layer=1, selector="tfidf", dpi=20)
    (slider, chooser, memory), figures = box.children[0].children, box.children[1]
    assert (slider.value, chooser.value, memory.value) == (4, "tfidf", 1)
    assert memory.options == (("layer 3", 0), ("layer 5", 1))
    images = leaves(figures)
    assert len(images) == 2 * 2 * 3 and all(isinstance(i, w.Image) and i.value for i in images)
    assert len({i.value for i in images}) > 1
    # the figure shown first is the initial state: layer 5, tfidf, t = 4
    assert figures.selected_index == 1 and figures.children[1].selected_index == 1
    assert figures.children[1].children[1].selected_index == 1
    new = [x for x in links() if id(x) not in before]
    sources = {(x.source[0].model_id, x.source[1]): [] for x in new}
    for x in new:
        assert x.target[1] == "selected_index" and isinstance(x.target[0], w.Stack)
        sources[(x.source[0].model_id, x.source[1])].append(x.target[0])
    assert len(sources[(slider.model_id, "index")]) == 2 * 2  # every innermost stack follows the slider
    assert len(sources[(chooser.model_id, "index")]) == 2
    assert sources[(memory.model_id, "index")] == [figures]


def test_the_gallery_refuses_an_initial_state_it_did_not_draw(snapshot):
    with pytest.raises(ValueError, match="initial state"):
        selection_gallery(*snapshot, ts=(2, 4), top_t=3, dpi=20)


def test_explorer_is_live_unless_the_book_is_being_built(snapshot, monkeypatch):
    monkeypatch.delenv(STATIC_ENV, raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        live = selection_explorer(*snapshot, layers=[3, 5], top_t=7, max_t=16, layer=1)
    assert not [m for m in caught if "unrecognized arguments" in str(m.message)], "a layout setting was ignored"
    slider, chooser, memory = live.children[0].children
    assert isinstance(slider, w.IntSlider) and isinstance(live.children[1], w.Output)
    assert (slider.value, slider.max, chooser.value, memory.value) == (7, 16, "kl", 1)
    monkeypatch.setenv(STATIC_ENV, "1")
    static = selection_explorer(*snapshot, layers=[3, 5], top_t=16, max_t=32, layer=1)
    slider, chooser, memory = static.children[0].children
    assert isinstance(slider, w.SelectionSlider) and isinstance(static.children[1], w.Stack)
    assert (slider.options, slider.value, chooser.value, memory.value) == ((16, 32), 16, "kl", 1)


def test_the_books_build_sets_the_variable_the_widgets_read():
    ext = (Path(__file__).resolve().parents[1] / "book" / "_ext" / "smf_book.py").read_text()
    assert f'STATIC_WIDGETS = "{STATIC_ENV}"' in ext
