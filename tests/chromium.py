"""Headless Chromium over the DevTools protocol on a pipe (stdlib only): load a page, collect its console
errors, measure elements, take screenshots. Used by the report's rendering test and to make the README's
screenshots:

    python -m tests.chromium reports/x/report.html out.png [--width 1280 --height 1000] [--full]
    python -m tests.chromium reports/x/report.html out.png --section "Serving under"   (one section)

Chromium is Debian's `chromium` package (.ci/run installs it); find_chromium() returns None without it.
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
    "--remote-debugging-pipe",
)


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Chromium:
    """One headless browser with one page. Messages are JSON separated by NUL bytes (fds 3 and 4)."""

    def __init__(self, binary: str, width: int = 1280, height: int = 1000, timeout_s: float = 60.0) -> None:
        self._profile = tempfile.mkdtemp(prefix="autotune-chromium-")
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()

        def wire() -> None:  # in the child, before exec: the protocol's fds 3 (in) and 4 (out)
            high_r = fcntl.fcntl(to_child_r, fcntl.F_DUPFD, 10)  # out of the way of 3 and 4 first
            high_w = fcntl.fcntl(from_child_w, fcntl.F_DUPFD, 10)
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        self._proc = subprocess.Popen(
            [
                binary,
                *FLAGS,
                f"--user-data-dir={self._profile}",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=wire,  # noqa: PLW1509 - a fresh child, nothing else runs in it before exec
            pass_fds=(3, 4),  # what wire() puts there survives the exec
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._buffer = b""
        self._next_id = 0
        self._timeout_s = timeout_s
        self.events: list[dict[str, Any]] = []
        self.session = ""
        targets = self.call("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", targetId=page["targetId"], flatten=True)[
            "sessionId"
        ]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._from_child, 1 << 16)
            if not chunk:
                raise RuntimeError("Chromium closed its DevTools pipe")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if self.session and not method.startswith("Target."):
            message["sessionId"] = self.session
        os.write(self._to_child, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self._timeout_s
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def wait_for(self, event: str) -> dict[str, Any]:
        deadline = time.monotonic() + self._timeout_s
        for seen in self.events:
            if seen["method"] == event:
                return seen
        while True:
            reply = self._read_message(deadline)
            if "method" in reply:
                self.events.append(reply)
                if reply["method"] == event:
                    return reply

    def open(self, path: Path) -> None:
        self.events.clear()
        self.call("Page.navigate", url=Path(path).resolve().as_uri())
        self.wait_for("Page.loadEventFired")
        self.evaluate("document.fonts ? document.fonts.ready.then(() => true) : true")

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r} raised: {result['exceptionDetails']}")
        return result["result"].get("value")

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and failed loads the page produced so far."""
        out = []
        for e in self.events:
            params = e.get("params", {})
            if e["method"] == "Runtime.exceptionThrown":
                out.append(str(params.get("exceptionDetails", {}).get("text", "exception")))
            elif e["method"] == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                out.append(
                    " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
                )
            elif e["method"] == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                out.append(str(params["entry"].get("text", "")))
        return out

    def screenshot(self, out: Path, *, full_page: bool = False, clip: dict[str, float] | None = None) -> None:
        params: dict[str, Any] = {"format": "png", "captureBeyondViewport": full_page or clip is not None}
        if clip is not None:
            params["clip"] = {**clip, "scale": 1}
        elif full_page:
            height = self.evaluate("document.documentElement.scrollHeight")
            width = self.evaluate("document.documentElement.scrollWidth")
            params["clip"] = {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}
        data = self.call("Page.captureScreenshot", **params)["data"]
        Path(out).write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        for fd in (self._to_child, self._from_child):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# The heading that starts with the text, through the last element before the next heading of its level or
# above, as a clip rectangle (page coordinates); null when there is no such heading.
SECTION_CLIP = """(() => {
  const text = %s;
  const head = [...document.querySelectorAll('h2, h3')].find(h => h.textContent.startsWith(text));
  if (!head) return null;
  const level = Number(head.tagName[1]);
  let last = head;
  for (let e = head.nextElementSibling; e; e = e.nextElementSibling) {
    if (/^H[1-6]$/.test(e.tagName) && Number(e.tagName[1]) <= level) break;
    last = e;
  }
  const a = head.getBoundingClientRect(), b = last.getBoundingClientRect();
  const right = Math.max(...[head, ...document.querySelectorAll('body > *')].map(e => e.getBoundingClientRect().right));
  return {x: a.x - 8, y: a.y + window.scrollY - 8, width: right - a.x + 16, height: b.bottom - a.top + 16};
})()"""


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chromium", description=__doc__.splitlines()[0])
    parser.add_argument("page")
    parser.add_argument("out")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1000)
    parser.add_argument("--full", action="store_true", help="the whole page, not just the first screen")
    parser.add_argument("--selector", default=None, help="only this element (a CSS selector)")
    parser.add_argument(
        "--section", default=None, help="only the section under the h2/h3 heading that starts with this text"
    )
    args = parser.parse_args()
    binary = find_chromium()
    if binary is None:
        raise SystemExit("no chromium on PATH; apt-get install chromium")
    with Chromium(binary, args.width, args.height) as browser:
        browser.open(Path(args.page))
        clip = None
        if args.selector:
            clip = browser.evaluate(
                f"(() => {{ const r = document.querySelector({json.dumps(args.selector)}).getBoundingClientRect();"
                " return {x: r.x, y: r.y + window.scrollY, width: r.width, height: r.height}; })()"
            )
        if args.section:
            clip = browser.evaluate(SECTION_CLIP % json.dumps(args.section))
            if clip is None:
                raise SystemExit(f"no h2/h3 heading starting with {args.section!r} in {args.page}")
        browser.screenshot(Path(args.out), full_page=args.full, clip=clip)
        for error in browser.errors():
            print("console error:", error)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
