"""A stand-in `ollama` binary for the managed-server tests (tuner.backend.ollamaserve, tuner.servemanaged):
a Python script, no model, no GPU.

    write_fake_ollama(tmp_path / "ollama") -> the executable path

`ollama serve` listens on OLLAMA_HOST (a stdlib HTTP server answering every GET with
{"version": FAKE_OLLAMA_VERSION or "0.12.10"}), writes its whole environment to $OLLAMA_MODELS/env.json, and
logs a `server config` line like the real one (OLLAMA_FLASH_ATTENTION, OLLAMA_NUM_PARALLEL; with
FAKE_IGNORES_PARALLEL set it reports 1 slot whatever it was given, as a server that ignored the setting).
Any other command prints `cli ARGS... OLLAMA_HOST` and exits 0 (3 for `ollama fail`).
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    f"""\
    #!{sys.executable}
    import http.server, json, os, sys
    if len(sys.argv) < 2 or sys.argv[1] != "serve":
        print("cli", *sys.argv[1:], os.environ.get("OLLAMA_HOST", ""))
        sys.exit(3 if sys.argv[1:2] == ["fail"] else 0)
    host, port = os.environ["OLLAMA_HOST"].rsplit(":", 1)
    with open(os.path.join(os.environ["OLLAMA_MODELS"], "env.json"), "w") as fh:
        json.dump(dict(os.environ), fh)
    parallel = os.environ.get("OLLAMA_NUM_PARALLEL", "1")
    if os.environ.get("FAKE_IGNORES_PARALLEL"):
        parallel = "1"
    fa = "true" if os.environ.get("OLLAMA_FLASH_ATTENTION") == "1" else "false"
    print(f'time=x level=INFO source=routes.go:1 msg="server config" env="map[OLLAMA_FLASH_ATTENTION:{{fa}} '
          f'OLLAMA_NUM_PARALLEL:{{parallel}} OLLAMA_ORIGINS:[http://localhost app://*] no_proxy:]"', flush=True)
    VERSION = os.environ.get("FAKE_OLLAMA_VERSION", "0.12.10")
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({{"version": VERSION}}).encode()
            self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
            self.wfile.write(body)
        def log_message(self, *a): pass
    print("listening", flush=True)
    http.server.HTTPServer((host, int(port)), H).serve_forever()
    """
)


def write_fake_ollama(path: Path) -> Path:
    """The stand-in written to `path`, executable."""
    path.write_text(SCRIPT)
    path.chmod(0o755)
    return path
