#!/usr/bin/env python3
"""Drives headless Chromium through the dashboard over the DevTools protocol (on a pipe: standard library only).

Logs in with an API key through the login form, loads every page, and checks on each that it rendered (status,
title), that its charts drew something (SVG with series, bars or an interval), that none of the forbidden strings
(the other tenant's practice names) appears, and that the browser fetched nothing from anywhere but the server.
Also checks the date picker and a sort link keep their state in the URL, and that logging out ends the session.
Saves a full-page screenshot of each page into --out.

    python3 browser.py --chromium chromium --url http://127.0.0.1:8080 --key-file K --forbid-file F --out DIR \
        --page /practices/M83001 ...
"""

import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
import time


class Browser:
    def __init__(self, chromium):
        self.profile = tempfile.mkdtemp(prefix="pulse-chromium-")
        to_chrome_r, self.to_chrome = os.pipe()
        self.from_chrome, from_chrome_w = os.pipe()

        def fds():
            # Chromium reads commands on fd 3 and writes replies on fd 4.
            a, b = os.dup(to_chrome_r), os.dup(from_chrome_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", "--no-default-browser-check", "--remote-debugging-pipe",
             f"--user-data-dir={self.profile}", "--window-size=1280,900", "about:blank"],
            preexec_fn=fds, close_fds=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self.buf = b""
        self.next_id = 0
        self.events = []
        targets = self.call("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]
        for domain in ("Page", "Network", "Runtime"):
            self.call(f"{domain}.enable", session=True)

    def _read(self, timeout):
        deadline = time.time() + timeout
        while b"\0" not in self.buf:
            if time.time() > deadline:
                raise TimeoutError("no reply from chromium")
            chunk = os.read(self.from_chrome, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium exited")
            self.buf += chunk
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method, session=False, timeout=30, **params):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        os.write(self.to_chrome, json.dumps(msg).encode() + b"\0")
        while True:
            m = self._read(timeout)
            if m.get("id") == self.next_id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            self.events.append(m)

    def wait_event(self, name, timeout=30):
        deadline = time.time() + timeout
        while True:
            for i, e in enumerate(self.events):
                if e.get("method") == name:
                    del self.events[: i + 1]
                    return e
            self.events.append(self._read(max(0.1, deadline - time.time())))

    def eval(self, expr):
        r = self.call("Runtime.evaluate", session=True, expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expr}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def goto(self, url):
        self.events.clear()
        self.call("Page.navigate", session=True, url=url)
        self.wait_event("Page.loadEventFired")

    def submit(self, js):
        """Runs js that submits a form, and waits for the page it leads to."""
        self.events.clear()
        self.eval(js)
        self.wait_event("Page.loadEventFired")

    def requested(self):
        return [e["params"]["request"]["url"] for e in self.events if e.get("method") == "Network.requestWillBeSent"]

    def screenshot(self, path):
        metrics = self.call("Page.getLayoutMetrics", session=True)
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        shot = self.call("Page.captureScreenshot", session=True, format="png", captureBeyondViewport=True,
                         clip={"x": 0, "y": 0, "width": 1280, "height": min(size["height"], 6000), "scale": 1})
        with open(path, "wb") as f:
            f.write(base64.b64decode(shot["data"]))

    def close(self):
        try:
            self.call("Browser.close", timeout=5)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


PAGE_STATE = """(() => {
  const charts = [...document.querySelectorAll('svg.chart')];
  const drawn = charts.filter(s => s.querySelector('path.series, rect.bar, line.interval, circle.point'));
  return {title: document.title, path: location.pathname + location.search, h1: (document.querySelector('h1')||{}).textContent,
          charts: charts.length, drawn: drawn.length, text: document.body.innerText,
          error: !!document.querySelector('p.error'), from: (document.querySelector('input[name=from]')||{}).value};
})()"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--chromium", default="chromium")
    ap.add_argument("--url", required=True)
    ap.add_argument("--key-file", required=True)
    ap.add_argument("--forbid-file", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--page", action="append", default=[])
    args = ap.parse_args()
    key = open(args.key_file).read().strip()
    forbidden = [line.strip() for line in open(args.forbid_file) if line.strip()]
    os.makedirs(args.out, exist_ok=True)
    failures = []
    b = Browser(args.chromium)
    try:
        # Not logged in: every page sends the browser to the login form, which returns it afterwards.
        b.goto(args.url + "/practices")
        s = b.eval(PAGE_STATE)
        if not s["path"].startswith("/login"):
            failures.append(f"not logged in, /practices showed {s['path']}")
        b.screenshot(os.path.join(args.out, "login.png"))
        b.submit(f"document.querySelector('input[name=key]').value = {json.dumps(key)};"
                 "document.querySelector('form').submit()")
        s = b.eval(PAGE_STATE)
        if s["path"] != "/practices":
            failures.append(f"after login expected /practices, got {s['path']}: {s['text'][:200]}")
        # /region with a one-tenant key: its own tenant only (the forbidden check below holds it to that).
        pages = ["/", "/practices", "/age-bands", "/campaigns", "/posts", "/posting", "/quality", "/region"] + args.page
        for p in pages:
            b.goto(args.url + p)
            s = b.eval(PAGE_STATE)
            name = p.strip("/").replace("/", "-") or "overview"
            b.screenshot(os.path.join(args.out, f"{name}.png"))
            if s["error"] or "Practice Pulse" not in s["title"]:
                failures.append(f"{p}: did not render ({s['title']}): {s['text'][:300]}")
            needs_chart = p != "/quality"
            if needs_chart and (s["charts"] == 0 or s["drawn"] < s["charts"]):
                failures.append(f"{p}: {s['charts']} charts, {s['drawn']} drawn")
            leaked = [f for f in forbidden if f in s["text"]]
            if leaked:
                failures.append(f"{p}: shows another tenant's {leaked[:3]}")
            print(f"{p}: '{s['h1']}', {s['charts']} charts, {s['drawn']} drawn, {len(s['text'])} characters of text")
        outside = [u for u in b.requested() if not (u.startswith(args.url) or u.startswith("data:"))]
        # The date picker and the sort links keep their state in the URL, so a page can be shared.
        b.goto(args.url + "/practices")
        b.submit("document.querySelector('input[name=from]').value = '2018-03-01';"
                 "document.querySelector('input[name=to]').value = '2018-03-31';"
                 "document.querySelector('form.range').submit()")
        s = b.eval(PAGE_STATE)
        if "from=2018-03-01" not in s["path"] or s["from"] != "2018-03-01":
            failures.append(f"the date picker did not carry the range: {s['path']}")
        b.submit("[...document.querySelectorAll('th a')].find(a => a.textContent.startsWith('Views')).click()")
        s = b.eval(PAGE_STATE)
        if "sort=views" not in s["path"] or "from=2018-03-01" not in s["path"]:
            failures.append(f"sorting lost the range or the sort: {s['path']}")
        b.screenshot(os.path.join(args.out, "practices-march-by-views.png"))
        outside += [u for u in b.requested() if not (u.startswith(args.url) or u.startswith("data:"))]
        if outside:
            failures.append(f"the browser fetched from elsewhere: {outside[:5]}")
        # Logging out ends the session.
        b.submit("document.querySelector('form.logout').submit()")
        b.goto(args.url + "/")
        s = b.eval(PAGE_STATE)
        if not s["path"].startswith("/login"):
            failures.append(f"after logout / showed {s['path']}")
    finally:
        b.close()
    for f in failures:
        print("FAIL:", f, file=sys.stderr)
    print(f"screenshots in {args.out}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
