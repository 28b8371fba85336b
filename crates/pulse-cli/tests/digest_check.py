#!/usr/bin/env python3
"""Helpers for the digest tests, from outside the product.

    python3 digest_check.py sink --port-file F --maildir D [--reject ADDR ...] [--slow-rcpt SECONDS]
        A real SMTP server (aiosmtpd) on a free loopback port, written to F. Each accepted message is saved as
        D/<time>-<recipient>.eml (atomically). Recipients given with --reject are refused with 550; those given with
        --defer get 451 (try later) the first time. Runs until killed.

    python3 digest_check.py fault-sink --port P --maildir D --plan PLAN.json --state S.json --stall SECONDS
        A real SMTP server (aiosmtpd) on loopback port P that misbehaves on cue, kept running by a supervisor that
        restarts it (on the same port) whenever it dies. PLAN maps each recipient to what the server does on its
        1st, 2nd, ... attempt (then `ok`): `ok`; `refuse` (550 at RCPT); `defer` (451 at RCPT); `stall-rcpt` (no
        reply to RCPT for --stall seconds, then 451); `stall-before-store` (after the message, wait --stall seconds,
        then store it and answer 250); `stall-after-store` (store it, wait, then 250); `die-before-store` (the
        process exits after the message, nothing stored); `die-after-store` (stores it, then exits with no reply).
        Attempts are counted in S (it survives restarts). Messages are saved as D/<time>-<recipient>.eml.

    python3 digest_check.py check-eml FILE
        Parses a digest email with the standard library and checks its shape: multipart/alternative with a
        text/plain part and a multipart/related part holding the HTML and every image it refers to (cid:) as an
        inline PNG; List-Unsubscribe (with a working-looking https/http link), List-Unsubscribe-Post exactly when the
        link is https (RFC 8058), List-Id, and a Message-ID with a domain on the right.
        Prints the plain text part and the unsubscribe link on success; exits 1 naming every problem.

    python3 digest_check.py screenshot --chromium C --html FILE --out PNG
        Opens the HTML digest in headless Chromium (tests/browser.py of pulse-server drives it), checks every image
        decoded, and saves a screenshot.
"""

import argparse
import asyncio
import email
import email.policy
import os
import re
import socket
import sys
import time


def sink(args):
    from aiosmtpd.controller import Controller

    reject = {a.lower() for a in args.reject}
    defer = {a.lower() for a in args.defer}

    timers = []

    def die():
        # Messages already taken are stored before the process goes (as a real server's queue would keep them).
        for t in timers:
            t.join()
        os._exit(3)

    class Handler:
        async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
            if args.slow_rcpt:
                await asyncio.sleep(args.slow_rcpt)
            if address.lower() in reject:
                return "550 5.1.1 no such mailbox here"
            if address.lower() in defer:
                defer.discard(address.lower())
                return "451 4.3.0 mailbox busy, try again later"
            envelope.rcpt_tos.append(address)
            return "250 OK"

        async def handle_DATA(self, server, session, envelope):
            for rcpt in envelope.rcpt_tos:
                name = f"{time.time_ns()}-{rcpt}.eml"
                tmp = os.path.join(args.maildir, "." + name)
                with open(tmp, "wb") as f:
                    f.write(envelope.original_content or envelope.content)
                os.rename(tmp, os.path.join(args.maildir, name))
            return "250 Message accepted for delivery"

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    os.makedirs(args.maildir, exist_ok=True)
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    with open(args.port_file + ".tmp", "w") as f:
        f.write(str(port))
    os.rename(args.port_file + ".tmp", args.port_file)
    try:
        while True:
            time.sleep(3600)
    finally:
        controller.stop()


def fault_sink(args):
    """The supervisor: runs the server in a child process and starts it again when it dies."""
    import signal
    import subprocess

    child = None

    def stop(*_):
        if child and child.poll() is None:
            child.kill()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    argv = [sys.executable, os.path.abspath(__file__), "fault-server"] + sys.argv[2:]
    while True:
        child = subprocess.Popen(argv, preexec_fn=_die_with_parent)
        child.wait()
        time.sleep(0.3)


def _die_with_parent():
    import ctypes
    import signal

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def fault_server(args):
    import json
    from aiosmtpd.controller import Controller

    with open(args.plan) as f:
        plan = {k.lower(): v for k, v in json.load(f).items()}

    def attempt(rcpt):
        """What to do with this attempt of `rcpt` (counted across restarts)."""
        try:
            with open(args.state) as f:
                state = json.load(f)
        except (OSError, ValueError):
            state = {}
        n = state.get(rcpt, 0)
        state[rcpt] = n + 1
        with open(args.state + ".tmp", "w") as f:
            json.dump(state, f)
        os.replace(args.state + ".tmp", args.state)
        steps = plan.get(rcpt, [])
        return steps[n] if n < len(steps) else "ok"

    def store(envelope):
        save(list(envelope.rcpt_tos), bytes(envelope.original_content or envelope.content))

    def save(rcpts, content):
        for rcpt in rcpts:
            name = f"{time.time_ns()}-{rcpt}.eml"
            tmp = os.path.join(args.maildir, "." + name)
            with open(tmp, "wb") as f:
                f.write(content)
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, os.path.join(args.maildir, name))

    timers = []

    def die():
        # Messages already taken are stored before the process goes (as a real server's queue would keep them).
        for t in timers:
            t.join()
        os._exit(3)

    class Handler:
        async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
            what = attempt(address.lower())
            session.fault = what
            if what == "refuse":
                return "550 5.1.1 no such mailbox here"
            if what == "defer":
                return "451 4.3.0 mailbox busy, try again later"
            if what == "stall-rcpt":
                await asyncio.sleep(args.stall)
                return "451 4.3.0 slow today"
            envelope.rcpt_tos.append(address)
            return "250 OK"

        async def handle_DATA(self, server, session, envelope):
            what = getattr(session, "fault", "ok")
            if what == "die-before-store":
                die()
            if what == "stall-before-store":
                # Stored after the stall even if the client has hung up by then (aiosmtpd cancels this handler when
                # the connection closes; a real server that accepted the body goes on and delivers it).
                import threading

                copy = (list(envelope.rcpt_tos), bytes(envelope.original_content or envelope.content))
                timer = threading.Timer(args.stall, save, args=copy)
                timer.start()
                timers.append(timer)
                await asyncio.sleep(args.stall + 0.2)
                return "250 Message accepted for delivery"
            store(envelope)
            if what == "die-after-store":
                die()
            if what == "stall-after-store":
                await asyncio.sleep(args.stall)
            return "250 Message accepted for delivery"

    os.makedirs(args.maildir, exist_ok=True)
    controller = Controller(Handler(), hostname="127.0.0.1", port=args.port)
    controller.start()
    while True:
        time.sleep(3600)


def check_eml(args):
    problems = []
    with open(args.file, "rb") as f:
        msg = email.message_from_binary_file(f, policy=email.policy.default)
    if msg.get_content_type() != "multipart/alternative":
        problems.append(f"top level is {msg.get_content_type()}, not multipart/alternative")
    parts = list(msg.iter_parts()) if msg.is_multipart() else []
    types = [p.get_content_type() for p in parts]
    if types != ["text/plain", "multipart/related"]:
        problems.append(f"alternatives are {types}, want text/plain then multipart/related")
    text = parts[0].get_content() if parts else ""
    html, images = "", {}
    if len(parts) > 1:
        for p in parts[1].iter_parts():
            if p.get_content_type() == "text/html":
                html = p.get_content()
            elif p.get_content_type() == "image/png":
                cid = (p["Content-ID"] or "").strip("<>")
                data = p.get_content()
                if not data.startswith(b"\x89PNG\r\n\x1a\n"):
                    problems.append(f"image {cid} is not a PNG")
                if (p.get_content_disposition() or "") != "inline":
                    problems.append(f"image {cid} is not inline")
                images[cid] = data
    if not html:
        problems.append("no HTML part")
    refs = set(re.findall(r'src="cid:([^"]+)"', html))
    if not refs:
        problems.append("the HTML shows no images")
    for r in refs - set(images):
        problems.append(f"the HTML refers to cid:{r} but there is no such part")
    unsub = msg.get("List-Unsubscribe", "")
    m = re.fullmatch(r"<(https?://[^>]+/unsubscribe\?[^>]+)>", unsub.strip())
    if not m:
        problems.append(f"List-Unsubscribe is {unsub!r}")
    # One-click (RFC 8058) only over https; an http link must not claim it.
    post = msg.get("List-Unsubscribe-Post", "")
    if unsub.startswith("<https://") and post != "List-Unsubscribe=One-Click":
        problems.append("an https link without List-Unsubscribe-Post: List-Unsubscribe=One-Click")
    if unsub.startswith("<http://") and post:
        problems.append("List-Unsubscribe-Post with an http link (RFC 8058 requires https)")
    if not msg.get("List-Id", "").endswith(">"):
        problems.append(f"List-Id is {msg.get('List-Id')!r}")
    mid = msg.get("Message-ID", "")
    if not re.fullmatch(r"<[^@<>\s]+@[a-z0-9.-]+\.[a-z]{2,}>", mid.strip()):
        problems.append(f"Message-ID {mid!r} has no domain on the right")
    if m and m.group(1) not in text:
        problems.append("the plain text part does not carry the unsubscribe link")
    if not msg.get("Message-ID"):
        problems.append("no Message-ID")
    if problems:
        print("\n".join(problems))
        sys.exit(1)
    print(text)
    print("UNSUBSCRIBE " + (m.group(1) if m else ""))


def screenshot(args):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "pulse-server", "tests"))
    from browser import Browser

    b = Browser(args.chromium)
    try:
        b.goto("file://" + os.path.abspath(args.html))
        state = b.eval(
            "JSON.stringify({imgs: document.images.length,"
            " broken: Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).length,"
            " h1: (document.querySelector('h1') || {}).textContent || ''})")
        import json
        state = json.loads(state)
        problems = []
        if state["imgs"] < 1:
            problems.append("the digest shows no images")
        if state["broken"]:
            problems.append(f"{state['broken']} image(s) did not decode")
        if not state["h1"]:
            problems.append("no heading")
        b.screenshot(args.out)
        if problems:
            print("\n".join(problems))
            sys.exit(1)
        print(f"{state['imgs']} images drawn; screenshot {args.out}")
    finally:
        b.close()


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sink")
    s.add_argument("--port-file", required=True)
    s.add_argument("--maildir", required=True)
    s.add_argument("--reject", action="append", default=[])
    s.add_argument("--defer", action="append", default=[], help="answer 451 to this recipient the first time")
    s.add_argument("--slow-rcpt", type=float, default=0.0)
    for name in ("fault-sink", "fault-server"):
        f = sub.add_parser(name)
        f.add_argument("--port", type=int, required=True)
        f.add_argument("--maildir", required=True)
        f.add_argument("--plan", required=True)
        f.add_argument("--state", required=True)
        f.add_argument("--stall", type=float, default=3.0)
    c = sub.add_parser("check-eml")
    c.add_argument("file")
    sc = sub.add_parser("screenshot")
    sc.add_argument("--chromium", required=True)
    sc.add_argument("--html", required=True)
    sc.add_argument("--out", required=True)
    args = p.parse_args()
    {
        "sink": sink,
        "fault-sink": fault_sink,
        "fault-server": fault_server,
        "check-eml": check_eml,
        "screenshot": screenshot,
    }[args.cmd](args)


if __name__ == "__main__":
    main()
