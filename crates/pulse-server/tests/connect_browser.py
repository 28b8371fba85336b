#!/usr/bin/env python3
"""Connects a practice's page in headless Chromium: the invitation link, the connect page's button, the simulator's
Facebook Login consent dialog (logging in as the practice's manager, every permission left ticked), the page chooser,
and the "Connected" page. Checks the browser fetched nothing from anywhere but the server and the simulator, that the
practice's page was offered first, and that the link cannot be used again. Saves a screenshot of each step into --out.

    python3 connect_browser.py --chromium chromium --link URL --user manager-m83001 --page 100000000001 --out DIR
"""

import argparse
import json
import os
import sys
from urllib.parse import urlparse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from browser import Browser  # noqa: E402

STATE = """(() => ({path: location.pathname + location.search, host: location.host, text: document.body.innerText,
  title: document.title}))()"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--chromium", default="chromium")
    ap.add_argument("--link", required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--page", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    server = urlparse(args.link).netloc
    failures = []
    b = Browser(args.chromium)
    hosts = set()
    try:
        b.goto(args.link)
        s = b.eval(STATE)
        b.screenshot(os.path.join(args.out, "1-invitation.png"))
        if "What Practice Pulse will read" not in s["text"] or "read_insights" not in s["text"]:
            failures.append(f"the invitation page does not say what will be read: {s['text'][:300]}")
        b.submit("document.querySelector('#continue').click()")
        s = b.eval(STATE)
        b.screenshot(os.path.join(args.out, "2-consent.png"))
        if s["host"] == server or "requesting access" not in s["text"]:
            failures.append(f"Continue did not lead to Facebook Login's consent: {s['host']}{s['path']}: {s['text'][:300]}")
        hosts.add(s["host"])
        b.submit(f"document.querySelector('#user').value = {json.dumps(args.user)};"
                 "document.querySelector('#allow').click()")
        s = b.eval(STATE)
        b.screenshot(os.path.join(args.out, "3-choose.png"))
        if s["host"] != server or "Choose" not in s["text"]:
            failures.append(f"consent did not come back to the page chooser: {s['host']}{s['path']}: {s['text'][:300]}")
        checked = b.eval("(document.querySelector('input[name=page]:checked') || {}).value")
        if checked != args.page:
            failures.append(f"the practice's page {args.page} was not chosen for the manager (checked: {checked})")
        b.submit(f"document.querySelector('#page-{args.page}').checked = true; document.querySelector('#connect').click()")
        s = b.eval(STATE)
        b.screenshot(os.path.join(args.out, "4-connected.png"))
        if "is now connected" not in s["text"] or args.page not in s["text"]:
            failures.append(f"not connected: {s['text'][:300]}")
        # The same link again: refused, saying why.
        b.goto(args.link)
        b.submit("document.querySelector('#continue') && document.querySelector('#continue').click()") \
            if b.eval("!!document.querySelector('#continue')") else None
        s = b.eval(STATE)
        if "already been used" not in s["text"]:
            failures.append(f"the used link was not refused: {s['text'][:300]}")
        strays = {urlparse(u).netloc for u in b.requested()} - {server} - hosts - {""}
        if strays:
            failures.append(f"fetched from elsewhere: {strays}")
    finally:
        b.close()
    for f in failures:
        print("FAIL:", f)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
