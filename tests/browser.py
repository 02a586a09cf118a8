"""Open a report in a real browser: headless Chromium from Debian's packages (`chromium`,
`chromium-driver`) driven by selenium. Used by tests/test_report.py, and from the command line to
take the screenshot committed under reports/examples/:

    .venv/bin/python -m tests.browser REPORT.html SCREENSHOT.png [--width 1400 --height 2200] [--at SECTION-ID]
"""
from __future__ import annotations

import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
DRIVER = ("/usr/bin/chromedriver",)


def missing() -> str | None:
    """Why a browser test cannot run here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    if not any(Path(p).exists() for p in CHROMIUM) or not any(Path(p).exists() for p in DRIVER):
        return "Debian's chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)"
    return None


@dataclass
class PageCheck:
    title: str
    console_errors: list[str]
    images: int
    broken_images: list[str]
    table_rows: dict[str, int]
    verdict: str
    external_requests: list[str]
    sections: dict[str, int]  # h2 id -> images that decode between it and the next h2


def open_page(html: Path, screenshot: Path | None = None, width: int = 1400, height: int = 2200, at: str | None = None) -> PageCheck:
    """Load `html` and check it; with `screenshot`, save the page (up to `height` px tall), or with
    `at` one window of `height` px starting at the element with that id."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="parity-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = next(p for p in CHROMIUM if Path(p).exists())
    # The machine has no network: without the background-networking flags Chromium keeps trying.
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-extensions",
                 f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(next(p for p in DRIVER if Path(p).exists())), options=opts)
    try:
        driver.get(Path(html).resolve().as_uri())
        driver.execute_script("return document.readyState")
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight]);")
        rows = driver.execute_script(
            "const o = {}; document.querySelectorAll('table[id]').forEach(t => o[t.id] = t.querySelectorAll('tbody tr').length); return o;")
        verdict = driver.execute_script("const v = document.getElementById('verdict'); return v ? v.textContent : '';")
        sections = driver.execute_script(
            "const o = {}; let cur = null; document.querySelectorAll('h2[id], img').forEach(e => {"
            " if (e.tagName === 'H2') { cur = e.id; o[cur] = 0; }"
            " else if (cur !== null && e.complete && e.naturalWidth > 0) { o[cur] += 1; } }); return o;")
        logs = driver.get_log("browser")
        errors = [e["message"] for e in logs if e.get("level") in ("SEVERE", "ERROR")]
        external = []
        for e in driver.get_log("performance"):
            msg = e.get("message", "")
            if '"Network.requestWillBeSent"' in msg:
                import json

                url = json.loads(msg)["message"]["params"]["request"]["url"]
                if url.startswith(("http:", "https:", "ws:", "wss:", "ftp:")):  # chrome:// pages are the browser's own
                    external.append(url)
        if screenshot is not None:
            full = driver.execute_script("return Math.max(document.body.scrollHeight, document.documentElement.scrollHeight);")
            driver.set_window_size(width, min(int(full) + 40, height))
            if at:
                driver.execute_script(f"document.getElementById({at!r}).scrollIntoView(true);")
            Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(screenshot))
        return PageCheck(driver.title, errors, len(images), [i[0] for i in images if not (i[1] and i[2] > 0 and i[3] > 0)],
                         dict(rows), verdict, external, dict(sections))
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m tests.browser")
    ap.add_argument("html")
    ap.add_argument("png")
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument("--height", type=int, default=2200)
    ap.add_argument("--at", help="id of the element the screenshot starts at (a section heading: e.g. where-the-deployed-forms-differ-most-from-torch)")
    a = ap.parse_args(argv)
    why = missing()
    if why:
        print(why, file=sys.stderr)
        return 2
    res = open_page(Path(a.html), Path(a.png), a.width, a.height, a.at)
    print(f"{res.title}: {res.images} images ({len(res.broken_images)} broken), tables {res.table_rows}, "
          f"{len(res.console_errors)} console errors, {len(res.external_requests)} external requests -> {a.png}")
    return 0 if not (res.console_errors or res.broken_images or res.external_requests) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
