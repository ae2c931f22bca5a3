"""Open the built book in headless Chromium and check what a reader gets.

- Every page (chapters, set-up, API, index, search) renders (a non-empty screenshot, 1280 x 1600) with a
  clean console: no error logged, no uncaught exception, no file or address that fails to load.
- Chapter 4's selection explorer works without a kernel: moving the top-t slider (a mouse drag), choosing
  another selector and another memory layer each change the figure shown. At a 400 px wide viewport its
  controls fit the screen and the slider's track keeps its width.
- Each chapter's Colab links (badge and launch button) open its paired ``notebooks/*.ipynb``.
- At 1280 px every figure is shown at least 600 px wide, its smallest text measures at least 9 pt as rendered and
  no legend covers data (from the measurements each PNG carries, see ``smf_lib.views.figures``); no table cell
  wraps beyond two lines, no table shows NaN or a leaked 0, 1, 2, ... index, and no output line is clipped.
- At 400 px figures are shown one per row, inside the screen; every figure's smallest text renders at 9 px or more,
  or a tap opens it where it does; no page is wider than the screen and no output line is clipped.
- At both widths no table is wider than its column unless it is marked as scrolling (and says so).

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``), standard library only.

    python scripts/check_book.py [--html book/_build/html] [--shots book/_build/screenshots]
"""

import argparse
import base64
import fcntl
import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageChops, ImageStat

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--allow-file-access-from-files", "--hide-scrollbars", "--remote-debugging-pipe"]
WIDGET_PAGE = "04_kl_vs_tfidf"
MIN_PHONE_PX = 9.0  # a figure's smallest text on a 400 px screen, as shown or when tapped


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    sys.exit("no Chromium found: apt-get install -y chromium (Debian package), then rerun")


class Browser:
    """Headless Chromium; ``call`` sends one DevTools command and returns its result, keeping the events."""

    def __init__(self, profile: str):
        to_child, self._send = os.pipe()
        self._recv, from_child = os.pipe()
        # Chromium reads commands on fd 3 and writes replies on fd 4
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_child, from_child)]
        self.proc = subprocess.Popen([chromium(), *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                     pass_fds=(3, 4), preexec_fn=lambda: [os.dup2(high[0], 3), os.dup2(high[1], 4)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for fd in (to_child, from_child, *high):
            os.close(fd)
        self._buf, self._id, self.events = b"", 0, []

    def _read(self, timeout: float) -> dict | None:
        while b"\0" not in self._buf:
            if not select.select([self._recv], [], [], timeout)[0]:
                return None
            chunk = os.read(self._recv, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 60):
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._send, json.dumps(msg).encode() + b"\0")
        end = time.monotonic() + timeout
        while (left := end - time.monotonic()) > 0:
            reply = self._read(left)
            if reply is None:
                break
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)
        raise TimeoutError(f"{method}: no reply in {timeout} s")

    def pump(self, seconds: float):
        """Collect events for ``seconds``."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            event = self._read(left)
            if event is not None:
                self.events.append(event)

    def close(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


class Page:
    """One tab at a given viewport size."""

    def __init__(self, browser: Browser, width: int, height: int):
        self.b = browser
        target = browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = browser.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})

    def call(self, method: str, params: dict | None = None, timeout: float = 60):
        return self.b.call(method, params, self.session, timeout)

    def js(self, expression: str, timeout: float = 60):
        """Evaluate ``expression`` (awaiting a promise) in the page and return its value."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True}, timeout)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}...: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                if self.js(expression):
                    return True
            except RuntimeError as err:  # the page is still navigating: its old context went away; ask again
                if "navigated or closed" not in str(err) and "context was destroyed" not in str(err):
                    raise
            self.b.pump(0.2)
        return False

    def open(self, path: Path):
        """Load ``path`` and wait until its widgets, its math and its fonts are rendered."""
        self.problems()
        self.call("Page.navigate", {"url": path.resolve().as_uri()})
        self.wait_for("document.readyState === 'complete'")
        self.wait_for("!document.querySelector('script[type=\"application/vnd.jupyter.widget-view+json\"]') || "
                      "document.querySelectorAll('.jupyter-widgets').length > 0")
        self.js("(window.MathJax && MathJax.startup && MathJax.startup.promise) ? "
                "MathJax.startup.promise.then(() => true) : true")
        self.js("document.fonts.ready.then(() => true)")
        self.b.pump(1.0)

    def problems(self) -> list[str]:
        """Console errors, uncaught exceptions and failed loads of this tab since the last call."""
        found, urls, keep = [], {}, []
        for event in self.b.events:
            if event.get("sessionId") != self.session:
                keep.append(event)
                continue
            method, p = event.get("method"), event.get("params", {})
            if method == "Network.requestWillBeSent":
                urls[p["requestId"]] = p["request"]["url"]
            elif method == "Network.loadingFailed" and not p.get("canceled"):
                found.append(f"failed to load {urls.get(p['requestId'], '?')}: {p.get('errorText')}")
            elif method == "Network.responseReceived" and p["response"].get("status", 200) >= 400:
                found.append(f"HTTP {p['response']['status']} for {p['response']['url']}")
            elif method == "Runtime.exceptionThrown":
                d = p["exceptionDetails"]
                found.append(f"uncaught {d.get('exception', {}).get('description') or d.get('text')}"[:400])
            elif method == "Runtime.consoleAPICalled" and p["type"] in ("error", "assert"):
                args = " ".join(str(a.get("value", a.get("description", ""))) for a in p["args"])
                found.append(f"console.{p['type']}: {args}"[:400])
            elif method == "Log.entryAdded" and p["entry"]["level"] == "error" and p["entry"]["source"] != "network":
                found.append(f"logged error: {p['entry']['text']} {p['entry'].get('url', '')}"[:400])
        self.b.events[:] = keep
        return found

    def screenshot(self, png: Path, clip: dict | None = None) -> Image.Image:
        params = {"format": "png"}
        if clip:
            params["clip"] = {**clip, "scale": 1}
        png.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", params)["data"]))
        return Image.open(png).convert("RGB")


# The explorer on chapter 4: the widget box that holds the "top-t" slider, and the figure it shows now.
EXPLORER = """(() => {
  const label = [...document.querySelectorAll('.widget-slider .widget-label')].find(l => l.textContent === 'top-t');
  return label && label.closest('.widget-vbox');
})()"""
RENDERED = f"(() => {{ const box = {EXPLORER}; return !!box && box.querySelector('img') !== null; }})()"
STATE = rf"""(() => {{
  const box = {EXPLORER};
  if (!box) return null;
  const img = [...box.querySelectorAll('img')].find(i => i.offsetParent !== null && i.complete);
  const r = box.getBoundingClientRect();
  return {{figure: img ? img.src : null, readout: box.querySelector('.widget-readout').textContent.trim(),
          selects: [...box.querySelectorAll('select')].map(s => s.options[s.selectedIndex].text.replace(/\s+/g, ' ')),
          x: r.left + window.scrollX, y: r.top + window.scrollY, width: r.width, height: r.height}};
}})()"""


def drag_slider(page: Page, pixels: int):
    """Press the mouse on the slider's handle, move it ``pixels`` to the right and release it."""
    page.js(f"{EXPLORER}.scrollIntoView({{block: 'center'}})")
    r = page.js(f"(() => {{ const h = {EXPLORER}.querySelector('.noUi-handle').getBoundingClientRect();"
                "return {x: h.left + h.width / 2, y: h.top + h.height / 2}; })()")
    x, y = r["x"], r["y"]
    page.call("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y})
    page.call("Input.dispatchMouseEvent", {"type": "mousePressed", "x": x, "y": y, "button": "left",
                                           "clickCount": 1})
    for step in range(1, 11):
        page.call("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x + pixels * step / 10, "y": y,
                                               "button": "left", "buttons": 1})
    page.call("Input.dispatchMouseEvent", {"type": "mouseReleased", "x": x + pixels, "y": y, "button": "left",
                                           "clickCount": 1})
    page.b.pump(0.5)


def choose_next(page: Page, which: int):
    """Pick the next option of the explorer's ``which``-th dropdown, as a reader's choice does."""
    page.js(f"(() => {{ const s = {EXPLORER}.querySelectorAll('select')[{which}];"
            "s.selectedIndex = (s.selectedIndex + 1) % s.options.length;"
            "s.dispatchEvent(new Event('change', {bubbles: true})); })()")
    page.b.pump(0.5)


def explorer_shot(page: Page, png: Path) -> tuple[dict, Image.Image]:
    page.js(f"{EXPLORER}.scrollIntoView({{block: 'center'}})")  # a screenshot shows the viewport only
    state = page.js(STATE)
    clip = {k: state[k] for k in ("x", "y", "width", "height")}
    return state, page.screenshot(png, clip)


def check_explorer(browser: Browser, html: Path, shots: Path) -> list[str]:
    """Move each control of chapter 4's explorer and require the figure to change; then the 400 px view."""
    failures = []
    if not (html / "notebooks" / f"{WIDGET_PAGE}.html").exists():
        return [f"{WIDGET_PAGE}.html: missing"]
    page = Page(browser, 1280, 1600)
    page.open(html / "notebooks" / f"{WIDGET_PAGE}.html")
    if not page.wait_for(RENDERED, 30):
        return [f"{WIDGET_PAGE}: the explorer (top-t slider) did not render"]
    state, before = explorer_shot(page, shots / f"{WIDGET_PAGE}-explorer.png")
    print(f"{WIDGET_PAGE}: explorer opens at top-t {state['readout']}, {' / '.join(state['selects'])}")
    if (state["readout"], *state["selects"]) != ("128", "kl", "layer 15"):
        failures.append(f"{WIDGET_PAGE}: the explorer should open where the text says (128, kl, layer 15), "
                        f"not {state['readout']}, {state['selects']}")
    for name, act in [("top-t slider", lambda: drag_slider(page, 80)), ("selector", lambda: choose_next(page, 0)),
                      ("memory layer", lambda: choose_next(page, 1))]:
        act()
        moved, after = explorer_shot(page, shots / f"{WIDGET_PAGE}-explorer-{name.split()[0]}.png")
        pixels = ImageChops.difference(before.resize(after.size), after).getbbox() is not None
        changed = moved["figure"] != state["figure"] and pixels
        print(f"{WIDGET_PAGE}: after moving the {name}: top-t {moved['readout']}, {' / '.join(moved['selects'])}; "
              f"figure changed: {changed}")
        if not changed:
            failures.append(f"{WIDGET_PAGE}: moving the {name} did not change the figure")
        state, before = moved, after
    narrow = Page(browser, 400, 900)
    narrow.open(html / "notebooks" / f"{WIDGET_PAGE}.html")
    if not narrow.wait_for(RENDERED, 30):
        return failures + [f"{WIDGET_PAGE} at 400 px: the explorer did not render"]
    narrow.js(f"{EXPLORER}.scrollIntoView({{block: 'start'}}); window.scrollBy(0, -80)")  # below the header
    narrow.b.pump(0.5)
    narrow.screenshot(shots / f"{WIDGET_PAGE}-400px.png")
    fit = narrow.js(f"""(() => {{ const box = {EXPLORER};
      const rights = [...box.querySelectorAll('.widget-slider, select, img')]
        .filter(e => e.offsetParent !== null).map(e => e.getBoundingClientRect().right);
      return {{track: box.querySelector('.noUi-target').getBoundingClientRect().width,
              right: Math.max(...rights), viewport: document.documentElement.clientWidth}}; }})()""")
    print(f"{WIDGET_PAGE} at 400 px: slider track {fit['track']:.0f} px wide, rightmost control at "
          f"{fit['right']:.0f} of {fit['viewport']} px; screenshot {shots / f'{WIDGET_PAGE}-400px.png'}")
    if fit["track"] < 120:
        failures.append(f"{WIDGET_PAGE} at 400 px: the slider's track collapsed to {fit['track']:.0f} px")
    if fit["right"] > fit["viewport"] + 1:
        failures.append(f"{WIDGET_PAGE} at 400 px: controls overflow the screen ({fit['right']:.0f} px)")
    for tab, where in ((page, "while moving the controls"), (narrow, "at 400 px")):
        failures += [f"{WIDGET_PAGE} {where}: {p}" for p in tab.problems()]
    return failures


def check_narrow_figures(browser: Browser, html: Path) -> list[str]:
    """At 400 px, figure rows (:class:`smf_lib.views.plotting.Panels`) wrap to one panel per row: every panel is
    shown at 280 px or more (or its full size, if smaller) and inside the screen."""
    failures, page = [], Page(browser, 400, 900)
    for path in sorted(html.glob("notebooks/*.html")):
        page.open(path)
        sizes = page.js("""[...document.querySelectorAll('.smf-panels img')].map(i => ({
          shown: i.getBoundingClientRect().width, full: Number(i.getAttribute('width')),
          right: i.getBoundingClientRect().right, viewport: document.documentElement.clientWidth}))""")
        if not sizes:
            continue
        small = [s for s in sizes if s["shown"] < min(280, s["full"]) - 1 or s["right"] > s["viewport"] + 1]
        print(f"{path.name} at 400 px: {len(sizes)} figure panel(s), narrowest shown at "
              f"{min(s['shown'] for s in sizes):.0f} px")
        failures += [f"{path.name} at 400 px: a figure panel is shown at {s['shown']:.0f} px (right edge "
                     f"{s['right']:.0f} of {s['viewport']} px)" for s in small]
    return failures

FIGURES_JS = """(async () => {
  const out = [];
  for (const img of document.querySelectorAll('article img, .bd-article img')) {
    if (img.closest('a') || /badge|logo|\\.svg/.test(img.getAttribute('src') || '')) continue;  // links, badges
    const r = img.getBoundingClientRect();
    if (!r.width) continue;  // a hidden state of the explorer
    const item = {src: img.getAttribute('src') || '', shown: r.width, natural: img.naturalWidth, bytes: null};
    if (item.src.startsWith('blob:')) {
      const buf = new Uint8Array(await (await fetch(item.src)).arrayBuffer());
      let bin = ''; for (const b of buf) bin += String.fromCharCode(b);
      item.bytes = btoa(bin);
    }
    out.push(item);
  }
  return out;
})()"""


def png_bytes(page_path: Path, item: dict) -> bytes:
    """The PNG behind an ``<img>``: a data URI, a file next to the page, or (widgets) the bytes the page sent."""
    if item["bytes"]:
        return base64.b64decode(item["bytes"])
    src = item["src"]
    if src.startswith("data:"):
        return base64.b64decode(src.split(",", 1)[1])
    return (page_path.parent / src.split("?")[0]).read_bytes()


def check_figures(browser: Browser, html: Path) -> list[str]:
    """At 1280 px, every figure of a chapter is shown at least MIN_SHOWN_PX wide, its smallest text measures at least
    MIN_RENDERED_PT as rendered, and no legend covers data (measured from the PNG's own record of its text sizes and
    legends, written by smf_lib.views.figures)."""
    from smf_lib.views.figures import MIN_RENDERED_PT, MIN_SHOWN_PX, png_text, rendered_pt

    failures, page = [], Page(browser, 1280, 1600)
    for path in sorted(html.glob("notebooks/*.html")):
        page.open(path)
        items = page.js(FIGURES_JS)
        sizes = []
        for k, item in enumerate(items, 1):
            try:
                meta = png_text(png_bytes(path, item))
            except (OSError, ValueError) as err:
                failures.append(f"{path.name}: figure {k} ({item['src'][:60]}): unreadable ({err})")
                continue
            where = f"{path.name}: figure {k}"
            if "smf:dpi" not in meta:
                failures.append(f"{where}: carries no measurements (draw it through smf_lib.views.figures)")
                continue
            pt = rendered_pt(meta, item["shown"], item["natural"])
            sizes.append((item["shown"], pt))
            if item["shown"] < MIN_SHOWN_PX - 1:
                failures.append(f"{where}: shown {item['shown']:.0f} px wide, below {MIN_SHOWN_PX} px")
            if pt is not None and pt < MIN_RENDERED_PT - 0.05:
                failures.append(f"{where}: smallest text {pt:.1f} pt as rendered, below {MIN_RENDERED_PT:g} pt")
            if int(meta.get("smf:legend_overlaps", "0")):
                failures.append(f"{where}: a legend covers {meta['smf:legend_overlaps']} data point(s)")
        if sizes:
            print(f"{path.name} at 1280 px: {len(sizes)} figure(s), narrowest {min(w for w, _ in sizes):.0f} px, "
                  f"smallest text {min(p for _, p in sizes if p is not None):.1f} pt")
    return failures

TABLES_JS = """(() => {
  const out = {cells: [], nan: [], index: [], clipped: []};
  document.querySelectorAll('article table').forEach((table, t) => {
    table.querySelectorAll('td, th').forEach(cell => {
      if (!cell.getClientRects().length) return;  // a hidden view (the narrow cards at 1280 px)
      const range = document.createRange();
      range.selectNodeContents(cell);
      const lines = new Set([...range.getClientRects()].filter(r => r.width > 0).map(r => Math.round(r.top))).size;
      const prose = cell.classList.contains('smf-text');  // a column of prose wraps by design
      const text = cell.innerText.trim();
      if (lines > 2 && text && !prose) out.cells.push([t + 1, text.slice(0, 60), lines]);
      if (/^(nan|NaN|<NA>|None)$/.test(cell.innerText.trim())) out.nan.push([t + 1, cell.innerText.trim()]);
    });
    const heads = [...table.querySelectorAll('tbody tr > th:first-child')].map(th => th.innerText.trim());
    if (heads.length > 1 && heads.every((h, i) => h === String(i))) out.index.push(t + 1);
  });
  document.querySelectorAll('article .cell_output pre, article .output pre').forEach(pre => {
    if (pre.scrollWidth > pre.clientWidth + 2)
      out.clipped.push(pre.innerText.split('\\n').reduce((a, b) => b.length > a.length ? b : a, '').slice(0, 90));
  });
  return out;
})()"""


def check_tables(browser: Browser, html: Path, width: int = 1280) -> list[str]:
    """At 1280 px: no table cell wraps beyond two lines, no table shows NaN or a 0, 1, 2, ... index, and no output
    line is clipped (wider than its box); at 400 px, no output line is clipped."""
    failures, page = [], Page(browser, width, 1600)
    for path in sorted(html.glob("notebooks/*.html")) + [html / "index.html"]:
        page.open(path)
        found = page.js(TABLES_JS)
        if width < 1280:
            failures += [f"{path.name} at {width} px: an output line is clipped: {line!r}" for line in found["clipped"]]
            continue
        failures += [f"{path.name}: table {t}: the cell {text!r} wraps to {n} lines" for t, text, n in found["cells"]]
        failures += [f"{path.name}: table {t} shows {text!r}" for t, text in found["nan"]]
        failures += [f"{path.name}: table {t} shows its 0, 1, 2, ... index" for t in found["index"]]
        failures += [f"{path.name}: an output line is clipped: {line!r}" for line in found["clipped"]]
    return failures


WIDE_JS = """(() => {
  const out = {tables: [], page: null};
  document.querySelectorAll('article table').forEach((table, t) => {
    if (!table.getClientRects().length || table.closest('.smf-narrow')) return;  // hidden views
    let box = table.parentElement;
    while (box && box.tagName !== 'ARTICLE' && !/(auto|scroll)/.test(getComputedStyle(box).overflowX))
      box = box.parentElement;
    const room = box ? box.clientWidth : document.documentElement.clientWidth;
    const scroller = table.closest('.smf-scroll'), note = scroller && scroller.previousElementSibling;
    const marked = !!note && note.classList.contains('smf-scroll-note') && note.offsetParent !== null;
    if (table.getBoundingClientRect().width > room + 2 && !marked)
      out.tables.push([t + 1, Math.round(table.getBoundingClientRect().width), room,
                       (table.querySelector('th') || table).innerText.trim().slice(0, 40)]);
  });
  const d = document.documentElement;
  if (d.scrollWidth > d.clientWidth + 1) {
    const wide = [...document.querySelectorAll('article *')].filter(
      e => e.getBoundingClientRect().right > d.clientWidth + 1 && !e.closest('.smf-zoom'));
    const last = wide.slice(-1)[0];
    out.page = [d.scrollWidth, d.clientWidth, last ? last.tagName + ' ' + last.innerText.slice(0, 50) : ''];
  }
  return out;
})()"""


def check_widths(browser: Browser, html: Path, width: int) -> list[str]:
    """At ``width`` px, no table is wider than its column unless it is marked as scrolling (a ``.smf-scroll``
    block, which says so on the page) and no page is wider than the screen."""
    failures, page = [], Page(browser, width, 900)
    for path in sorted(html.glob("*.html")) + sorted(html.glob("notebooks/*.html")):
        if path.name in ("genindex.html", "search.html", "py-modindex.html"):
            continue
        page.open(path)
        found = page.js(WIDE_JS)
        failures += [f"{path.name} at {width} px: table {t} ({head!r}) is {w} px in a {room} px column and does not "
                     "say it scrolls" for t, w, room, head in found["tables"]]
        if found["page"]:
            failures.append(f"{path.name} at {width} px: the page is {found['page'][0]} px wide on a "
                            f"{found['page'][1]} px screen (widest: {found['page'][2]!r})")
    return failures


ZOOM_JS = """(async () => {
  const out = [];
  for (const img of document.querySelectorAll('article img.smf-figure')) {
    const r = img.getBoundingClientRect();
    if (!r.width) continue;
    const item = {src: img.getAttribute('src') || '', shown: r.width, natural: img.naturalWidth, bytes: null,
                  zoomed: null};
    img.scrollIntoView({block: 'center'});
    img.click();
    await new Promise(res => setTimeout(res, 100));
    const big = document.querySelector('.smf-zoom img');
    if (big) { item.zoomed = big.getBoundingClientRect().width; document.querySelector('.smf-zoom').click(); }
    out.push(item);
  }
  return out;
})()"""


def check_phone_figures(browser: Browser, html: Path) -> list[str]:
    """At 400 px, every figure's smallest text renders at 9 px or more, or a tap opens it at a size where it does
    (the book's figure zoom)."""
    from smf_lib.views.figures import png_text, rendered_pt

    failures, page = [], Page(browser, 400, 900)
    for path in sorted(html.glob("notebooks/*.html")):
        page.open(path)
        worst = None
        for k, item in enumerate(page.js(ZOOM_JS), 1):
            meta = png_text(png_bytes(path, item))
            pt = rendered_pt(meta, item["shown"], item["natural"])
            if pt is None:
                continue
            px = pt * 96 / 72
            zoomed = rendered_pt(meta, item["zoomed"], item["natural"]) * 96 / 72 if item["zoomed"] else None
            best = max(px, zoomed or 0)
            worst = best if worst is None else min(worst, best)
            if best < MIN_PHONE_PX - 0.05:
                failures.append(f"{path.name} at 400 px: figure {k}: smallest text {px:.1f} px"
                                + (f", {zoomed:.1f} px when tapped" if zoomed else ", and a tap does not enlarge it"))
        if worst is not None:
            print(f"{path.name} at 400 px: smallest figure text {worst:.1f} px (tapped where needed)")
    return failures


def check_colab_links(html: Path) -> list[str]:
    """Every Colab link of a chapter (badge, launch button) opens that chapter's paired notebook."""
    failures = []
    for page in sorted(html.glob("notebooks/*.html")):
        links = re.findall(r'href="(https://colab\.research\.google\.com/[^"]*)"', page.read_text())
        wrong = [u for u in links if not u.endswith(f"/notebooks/{page.stem}.ipynb")]
        if len(links) < 2 or wrong:
            failures.append(f"{page.name}: Colab links {links} should open notebooks/{page.stem}.ipynb")
    return failures


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--html", default="book/_build/html")
    ap.add_argument("--shots", default="book/_build/screenshots")
    args = ap.parse_args()
    html, shots = Path(args.html), Path(args.shots)
    if not (html / "index.html").exists():
        sys.exit(f"no built book at {html}: run jupyter-book build book/ first")
    shots.mkdir(parents=True, exist_ok=True)
    # every page: the chapters, set-up, API, and Sphinx's own (index, search, general and module index)
    pages = sorted(html.glob("notebooks/*.html"))
    pages += [html / name for name in ("setup.html", "api.html", "index.html")]
    pages += sorted(p for p in html.glob("*.html") if p not in pages)
    failures = check_colab_links(html)
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:  # the browser may still be writing
        browser = Browser(profile)
        try:
            page = Page(browser, 1280, 1600)
            for path in pages:
                if not path.exists():
                    failures.append(f"{path}: missing")
                    continue
                page.open(path)
                png = shots / (path.stem + ".png")
                stat = ImageStat.Stat(page.screenshot(png).convert("L"))
                print(f"{path.name}: screenshot {png} (pixel stddev {stat.stddev[0]:.1f})")
                if stat.stddev[0] <= 5:  # a blank page is one flat colour
                    failures.append(f"{path.name}: blank screenshot")
                problems = page.problems()
                print(f"{path.name}: {len(problems)} console error(s) or failed load(s)")
                failures += [f"{path.name}: {p}" for p in problems]
            failures += check_explorer(browser, html, shots)
            failures += check_narrow_figures(browser, html)
            failures += check_figures(browser, html)
            failures += check_tables(browser, html)
            failures += check_tables(browser, html, 400)
            failures += check_widths(browser, html, 1280) + check_widths(browser, html, 400)
            failures += check_phone_figures(browser, html)
        finally:
            browser.close()
    for f in failures:
        print("FAIL", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
