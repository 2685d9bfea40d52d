#!/usr/bin/env python3
"""Screenshots of every demo page, light and dark, at desktop and phone width.

    .venv/bin/python scripts/screenshots.py                 # into docs/screenshots/
    .venv/bin/python scripts/screenshots.py --out /tmp/shots

Starts ``server.py`` on a free port with a fresh SQLite store in a temporary folder,
drives Debian's Chromium through Playwright (``--no-sandbox``, never ``playwright
install``), signs up two browsers of one user, and saves ``<page>-<theme>-<width>.png``
(the visible viewport: 1000x760 desktop, 375x667 phone) plus ``index.md`` listing them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "correct horse battery"
WIDTHS = {"desktop": {"width": 1000, "height": 760}, "phone": {"width": 375, "height": 667}}
THEMES = ("light", "dark")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(data_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    key = subprocess.run([sys.executable, "-m", "sessions.keygen"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.strip()
    env = {k: v for k, v in os.environ.items() if k not in ("SESSION_STORE", "MONGODB_URL", "PRODUCTION", "DEBUG")}
    env["SESSION_KEYS"] = key
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "server.py"), "--port", str(port), "--data-dir", str(data_dir),
         "--bcrypt-cost", "4", "--register-limit", "50/3600", "--login-limit", "500/300"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(base + "/health", timeout=2):
                return proc, base
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise SystemExit("error: server.py did not start") from None
            time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "screenshots"), help="folder for the PNGs")
    args = parser.parse_args()
    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("error: no chromium on PATH (Debian: apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    made: list[str] = []
    with tempfile.TemporaryDirectory(prefix="demo-shots-") as tmp:
        proc, base = start_server(Path(tmp) / "data")
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"], headless=True)
                for n, theme in enumerate(THEMES):
                    for width_name, viewport in WIDTHS.items():
                        made += shoot(browser, base, out, theme, width_name, viewport, f"{theme}-{width_name}-{n}")
                browser.close()
        finally:
            proc.terminate()
            proc.wait(10)
    lines = ["# Demo screenshots", "", "Made by `scripts/screenshots.py` (light and dark theme, desktop 1000 px "
             "and phone 375 px wide).", "", "| page | light, desktop | light, phone | dark, desktop | dark, phone |",
             "|---|---|---|---|---|"]
    for page in dict.fromkeys(name.split("-light-")[0].split("-dark-")[0] for name in made):
        cells = [f"![{page} {t} {w}]({page}-{t}-{w}.png)" for t in THEMES for w in WIDTHS]
        lines.append(f"| {page} | " + " | ".join(cells) + " |")
    (out / "index.md").write_text("\n".join(lines) + "\n")
    for name in made:
        print(f"{out / name}  {(out / name).stat().st_size // 1024} KB")


def shoot(browser, base: str, out: Path, theme: str, width_name: str, viewport: dict[str, int], tag: str) -> list[str]:
    made: list[str] = []
    context = browser.new_context(base_url=base, viewport=viewport)
    page = context.new_page()

    def save(name: str) -> None:
        file = f"{name}-{theme}-{width_name}.png"
        page.screenshot(path=str(out / file))
        made.append(file)

    page.goto("/")
    page.click(f"form[action='/preferences/theme'] button[value='{theme}']") if theme != "light" else None
    page.goto("/")
    save("home")
    page.goto("/login")
    save("login")
    page.goto("/register")
    page.fill("#email", "not an address")
    page.fill("#name", "Ana Lima")
    page.fill("#password", "short")
    page.click("#register-button")
    save("register-errors")
    email = f"ana-{tag}@example.com"
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.click("#register-button")
    page.wait_for_url("**/account")
    save("account")
    other = browser.new_context(base_url=base, viewport=viewport,
                                user_agent="Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0")
    second = other.new_page()
    second.goto("/login")
    second.fill("#email", email)
    second.fill("#password", PASSWORD)
    second.click("#login-button")
    second.wait_for_url("**/account")
    page.goto("/account/sessions")
    save("sessions")
    page.goto("/live")
    page.wait_for_selector("#live-state[data-state='connected']")
    second.goto("/")  # a page load elsewhere: nothing; a new login shows as a notice
    save("live")
    page.goto("/no-such-page")
    save("not-found")
    other.close()
    context.close()
    # Too many login attempts (a fresh browser, logged out)
    context = browser.new_context(base_url=base, viewport=viewport)
    page = context.new_page()
    if theme != "light":
        page.goto("/")
        page.click(f"form[action='/preferences/theme'] button[value='{theme}']")
    page.goto("/login")
    for _ in range(6):
        page.fill("#email", email)
        page.fill("#password", "wrong password 123")
        page.click("#login-button")
    save("login-429")
    context.close()
    return made


if __name__ == "__main__":
    main()
