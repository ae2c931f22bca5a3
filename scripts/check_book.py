"""Open the built book in headless Chromium: every chapter renders to a non-empty screenshot, and the
top-t slider of chapter 4 is present in the rendered page (the vendored widget JavaScript works offline).

    python scripts/check_book.py [--html book/_build/html] [--shots book/_build/screenshots]
"""

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image, ImageStat

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--allow-file-access-from-files", "--virtual-time-budget=15000", "--hide-scrollbars"]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    sys.exit("no Chromium found: apt-get install -y chromium (Debian package), then rerun")


def run(args, profile):
    return subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                          text=True, timeout=180)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--html", default="book/_build/html")
    ap.add_argument("--shots", default="book/_build/screenshots")
    args = ap.parse_args()
    html, shots = Path(args.html), Path(args.shots)
    shots.mkdir(parents=True, exist_ok=True)
    pages = sorted(html.glob("notebooks/*.html")) + [html / "setup.html", html / "api.html"]
    failures = []
    with tempfile.TemporaryDirectory() as profile:
        for page in pages:
            if not page.exists():
                failures.append(f"{page}: missing")
                continue
            png = shots / (page.stem + ".png")
            run([f"--screenshot={png}", "--window-size=1280,1600", page.resolve().as_uri()], profile)
            if not png.exists():
                failures.append(f"{page.name}: no screenshot")
                continue
            stat = ImageStat.Stat(Image.open(png).convert("L"))
            ok = stat.stddev[0] > 5  # a blank page is one flat colour
            print(f"{page.name}: screenshot {png} ({png.stat().st_size} bytes, pixel stddev {stat.stddev[0]:.1f})")
            if not ok:
                failures.append(f"{page.name}: blank screenshot")
        widget_page = html / "notebooks" / "04_kl_vs_tfidf.html"
        dom = run(["--dump-dom", widget_page.resolve().as_uri()], profile).stdout
        sliders = dom.count("widget-slider")
        print(f"{widget_page.name}: rendered DOM has {sliders} widget-slider element(s); "
              f"'top-t' label present: {'top-t' in dom}")
        if not sliders or "top-t" not in dom:
            failures.append(f"{widget_page.name}: the top-t slider did not render")
    for f in failures:
        print("FAIL", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
