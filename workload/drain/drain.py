#!/usr/bin/env python3
"""preStop hook of the ComfyUI container: hold the pod's shutdown until its queue is empty.

    python3 /opt/comfyui-drain/drain.py --url http://127.0.0.1:8848 \
        --deadline-seconds N --interval-seconds S [--log-file PATH]

Kubernetes runs the preStop hook before it sends SIGTERM, and ComfyUI keeps executing while the
hook runs, so waiting here lets queued and running prompts finish when a pod is scaled in or its
node is drained. The pod is already out of its Services' endpoints by then, so no new work
should arrive through the load balancer.

The deadline must stay below the pod's terminationGracePeriodSeconds: the grace period counts
from the start of the hook, and when it runs out the kubelet kills ComfyUI outright, so the
hook has to give up early enough to leave ComfyUI a few seconds to exit cleanly after SIGTERM.
On a spot interruption the node itself disappears about 2 minutes after the notice, whatever the
grace period says; a long-running prompt is lost then, and draining can only save work that
finishes well within that window.

Exits 0 in every case once its arguments parse: the hook only delays termination, and a failing
hook would merely add a misleading FailedPreStopHook event. Standard library only (the ComfyUI image has Python, no
Node), Python >= 3.9.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from typing import Optional, TextIO

REQUEST_TIMEOUT_SECONDS = 2.0


def queue_remaining(url: str, timeout: float) -> Optional[int]:
    """ComfyUI's running + pending prompt count, or None when it cannot be read."""
    request = urllib.request.Request(
        url.rstrip("/") + "/prompt",
        headers={"Accept": "application/json", "User-Agent": "comfyui-drain"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (fixed local URL)
            body = json.loads(response.read(1024 * 1024).decode("utf-8"))
    except (OSError, ValueError, urllib.error.URLError):
        return None
    value = body.get("exec_info", {}).get("queue_remaining") if isinstance(body, dict) else None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def drain(url: str, deadline_seconds: float, interval_seconds: float, out: TextIO) -> int:
    def log(message: str) -> None:
        print(f"comfyui-drain: {message}", file=out, flush=True)

    deadline = time.monotonic() + deadline_seconds
    remaining = queue_remaining(url, min(REQUEST_TIMEOUT_SECONDS, max(0.1, deadline_seconds)))
    if remaining is None:
        log(f"ComfyUI at {url} did not answer GET /prompt: nothing to drain")
        return 0
    if remaining == 0:
        log("queue empty, nothing to drain")
        return 0

    last = None
    while True:
        if remaining != last:
            log(f"draining: {remaining} {'prompt' if remaining == 1 else 'prompts'} left")
            last = remaining
        left = deadline - time.monotonic()
        if left <= 0:
            log(f"deadline of {deadline_seconds:g} s passed with {remaining} left; letting the pod stop")
            return 0
        time.sleep(min(interval_seconds, left))
        left = deadline - time.monotonic()
        polled = queue_remaining(url, min(REQUEST_TIMEOUT_SECONDS, max(0.1, left)))
        if polled is None:
            if time.monotonic() >= deadline:
                log(f"deadline of {deadline_seconds:g} s passed with {remaining} left; letting the pod stop")
            else:
                log(f"ComfyUI at {url} stopped answering; nothing left to wait for")
            return 0
        remaining = polled
        if remaining == 0:
            log("drained: queue empty")
            return 0


def positive_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text!r}")
    return value


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Wait until ComfyUI's queue is empty (preStop hook).")
    parser.add_argument("--url", default="http://127.0.0.1:8848", help="ComfyUI base URL")
    parser.add_argument("--deadline-seconds", type=positive_number, required=True,
                        help="give up after this long; keep it below terminationGracePeriodSeconds")
    parser.add_argument("--interval-seconds", type=positive_number, default=5.0, help="poll period")
    # Hook output is otherwise invisible (kubectl logs shows only the main process); pointing this
    # at /proc/1/fd/2 puts the lines into the container's log.
    parser.add_argument("--log-file", help="append log lines here instead of stderr")
    args = parser.parse_args(argv)

    out: TextIO = sys.stderr
    if args.log_file:
        try:
            out = open(args.log_file, "a", encoding="utf-8")  # noqa: SIM115 (lives as long as the process)
        except OSError as err:
            print(f"comfyui-drain: cannot open {args.log_file} ({err}); logging to stderr", file=sys.stderr)
    return drain(args.url, args.deadline_seconds, args.interval_seconds, out)


if __name__ == "__main__":
    sys.exit(main())
