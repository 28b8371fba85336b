#!/usr/bin/env python3
"""Signs in to the dashboard through a real OpenID provider (npm's oidc-provider) in headless Chromium.

For each person: the login page's "Sign in with" link, the provider's own login and consent pages, back through the
callback into the dashboard. Checks what each person sees (their tenants only), that a used callback cannot be
replayed, that a person no grant covers and a cancelled sign-in are refused with a clear page, and that logging out
ends the session. Writes every callback URL the browser went through to --callbacks (one per line), so the caller can
check no code or token reached the server's log.

    python3 oidc_browser.py --chromium chromium --url http://127.0.0.1:8080 --forbid-file F --callbacks C --out DIR
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from browser import Browser  # noqa: E402


class RecordingBrowser(Browser):
    """A Browser that remembers every URL requested, redirects included, even as page loads drop older events."""

    def __init__(self, chromium):
        self.seen = []
        super().__init__(chromium)

    def wait_event(self, name, timeout=30):
        deadline = time.time() + timeout
        while True:
            for i, e in enumerate(self.events):
                if e.get("method") == name:
                    self.seen += [x["params"]["request"]["url"] for x in self.events[: i + 1]
                                  if x.get("method") == "Network.requestWillBeSent"]
                    del self.events[: i + 1]
                    return e
            self.events.append(self._read(max(0.1, deadline - time.time())))

STATE = """(() => ({path: location.pathname + location.search, host: location.host, text: document.body.innerText,
  title: document.title, signin: !!document.querySelector('a.signin'),
  who: (document.querySelector('.who') || {}).textContent || ''}))()"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--chromium", default="chromium")
    ap.add_argument("--url", required=True)
    ap.add_argument("--forbid-file", required=True)
    ap.add_argument("--callbacks", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    forbidden = [line.strip() for line in open(args.forbid_file) if line.strip()]
    os.makedirs(args.out, exist_ok=True)
    failures = []
    callbacks = []
    b = RecordingBrowser(args.chromium)

    def sign_in(login, start="/practices", cancel=False):
        """From a fresh browser state to wherever the sign-in ends; returns the page state there."""
        b.call("Network.clearBrowserCookies", session=True)
        b.goto(args.url + start)
        s = b.eval(STATE)
        if not s["path"].startswith("/login") or not s["signin"]:
            failures.append(f"{login}: {start} did not lead to a login page offering sign-in: {s['path']}")
            return s
        b.submit("document.querySelector('a.signin').click()")
        s = b.eval(STATE)
        if s["host"] == args.url.split("//", 1)[1]:
            failures.append(f"{login}: the sign-in link did not lead to the provider: {s['path']}: {s['text'][:200]}")
            return s
        b.screenshot(os.path.join(args.out, f"provider-login-{login}.png"))
        if cancel:
            b.submit("[...document.querySelectorAll('a')].find(a => a.textContent.includes('Cancel')).click()")
        else:
            b.submit(f"document.querySelector('input[name=login]').value = {json.dumps(login)};"
                     "document.querySelector('input[name=password]').value = 'any password';"
                     "document.querySelector('form').submit()")
            s = b.eval(STATE)
            if "/interaction/" in s["path"]:
                # The provider's consent page.
                b.submit("document.querySelector('form').submit()")
        state = b.eval(STATE)
        callbacks.extend(u for u in b.seen + b.requested() if "/auth/oidc/callback" in u and u not in callbacks)
        return state

    try:
        # Ann: an analyst of one tenant, by her group.
        s = sign_in("ann")
        b.screenshot(os.path.join(args.out, "signed-in-ann.png"))
        if s["path"] != "/practices":
            failures.append(f"ann: expected /practices after sign-in, got {s['path']}: {s['text'][:300]}")
        if "ann.lee@stoke.example.nhs.uk" not in s["who"]:
            failures.append(f"ann: the header does not name her: {s['who']!r}")
        leaked = [f for f in forbidden if f in s["text"]]
        if leaked:
            failures.append(f"ann: shows the other tenant's {leaked[:3]}")
        for page in ["/", "/posts", "/age-bands"]:
            b.goto(args.url + page)
            s = b.eval(STATE)
            if s["path"].startswith("/login") or "Practice Pulse" not in s["title"]:
                failures.append(f"ann: {page} did not render in her session: {s['path']}")
            leaked = [f for f in forbidden if f in s["text"]]
            if leaked:
                failures.append(f"ann: {page} shows the other tenant's {leaked[:3]}")
        # The callback she came through cannot be used again.
        used = [u for u in callbacks if "code=" in u]
        if not used:
            failures.append("ann: no callback with a code was seen")
        else:
            b.goto(used[-1])
            s = b.eval(STATE)
            if "already used" not in s["text"]:
                failures.append(f"ann: replaying the callback was not refused: {s['text'][:300]}")
        # Logging out ends her session.
        b.goto(args.url + "/")
        b.submit("document.querySelector('form.logout').submit()")
        b.goto(args.url + "/practices")
        s = b.eval(STATE)
        if not s["path"].startswith("/login"):
            failures.append(f"ann: after logout /practices showed {s['path']}")

        # Rae: a regional lead, admin over both tenants: the region page sets them side by side.
        s = sign_in("rae", start="/region")
        b.screenshot(os.path.join(args.out, "signed-in-rae-region.png"))
        if s["path"] != "/region" or "Region" not in s["title"]:
            failures.append(f"rae: expected the region page, got {s['path']} ({s['title']}): {s['text'][:300]}")

        # Bob: signed in by the provider, but no grant covers him.
        s = sign_in("bob")
        b.screenshot(os.path.join(args.out, "refused-bob.png"))
        if "bob@elsewhere.example.org signed in, but no" not in s["text"]:
            failures.append(f"bob: not refused with a reason: {s['path']}: {s['text'][:300]}")
        b.goto(args.url + "/practices")
        if not b.eval(STATE)["path"].startswith("/login"):
            failures.append("bob: has a session after being refused")

        # A sign-in cancelled at the provider comes back refused, saying so.
        s = sign_in("nobody", cancel=True)
        if "access_denied" not in s["text"]:
            failures.append(f"cancel: expected the provider's access_denied, got {s['path']}: {s['text'][:300]}")
    finally:
        b.close()
        with open(args.callbacks, "w") as f:
            f.write("\n".join(callbacks))
    for f in failures:
        print("FAIL:", f, file=sys.stderr)
    print(f"{len(callbacks)} callbacks; screenshots in {args.out}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
