"""A stand-in llama-server for the backend's unit tests: the same flags, log lines and HTTP answers as the
real one (../shared/ollama-api.md section 8.3), no model. Written as an executable script by
`fake_server(path, mode)`; FAKE_LLAMA_MODE picks a misbehaviour:

    ok              /health 200 after the load lines, /completion streams n_predict tokens and timings
    oom-http        /completion answers HTTP 500 with llama.cpp's out-of-memory message
    error-chunk     /completion streams one chunk, then {"error": ...}
    no-timings      /completion ends its stream with [DONE] before the final chunk
    die             /completion prints a CUDA out-of-memory line to the log and exits mid-stream
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HELP = "-fit, --fit [on|off]\n--ui, --webui, --no-ui, --no-webui\n--cache-ram N\n"
VERSION = "version: 0.0.1-fake (build 1, commit fake)"
LAYERS = 9  # block_count 8 + the output layer, like the tiny test models


def log(line: str) -> None:
    print(line, flush=True)


def main() -> None:
    if sys.argv[1:2] == ["--help"]:
        print(HELP, end="")
        return
    if sys.argv[1:2] == ["--version"]:
        print(VERSION)
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("-m")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("-c", type=int)
    parser.add_argument("-ngl", type=int, default=LAYERS)
    args, _ = parser.parse_known_args()
    mode = os.environ.get("FAKE_LLAMA_MODE", "ok")
    gpu = min(args.ngl, LAYERS)
    log("load_tensors: loading model tensors, this can take a while... (load_mode = mmap)")
    log(f"load_tensors: offloaded {gpu}/{LAYERS} layers to GPU")
    log("load_tensors:   CPU_Mapped model buffer size =    10.00 MiB")
    log(f"load_tensors:        CUDA0 model buffer size =   {gpu * 2:.2f} MiB")
    log(f"llama_context: n_ctx_seq             = {args.c}")
    log(f"llama_kv_cache:        CUDA0 KV buffer size =    {args.c / 1024:.2f} MiB")
    log("sched_reserve:      CUDA0 compute buffer size =     4.00 MiB")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self._json(200, {"status": "ok"}) if self.path == "/health" else self._json(404, {})

        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if mode == "oom-http":
                self._json(500, {"error": {"code": 500, "message": "cudaMalloc failed: out of memory"}})
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")  # as llama-server streams
            self.end_headers()
            n = int(body["n_predict"])
            for i in range(n):
                self._event({"content": "t", "tokens": [i], "stop": False})
                if mode == "die" and i == 1:
                    log("CUDA error: out of memory")
                    os._exit(1)
                if mode == "error-chunk":
                    self._event({"error": {"code": 500, "message": "slot unavailable"}})
                    break
            if mode == "no-timings":
                self._chunk(b"data: [DONE]\n\n")
            elif mode != "error-chunk":
                timings = {
                    "prompt_n": len(body["prompt"]),
                    "prompt_ms": 10.0,
                    "predicted_n": n,
                    "predicted_ms": 20.0,
                }
                self._event({"content": "", "stop": True, "timings": timings})
            self._chunk(b"")  # the last chunk of the response

        def _event(self, chunk: dict[str, object]) -> None:
            self._chunk(f"data: {json.dumps(chunk)}\n\n".encode())

        def _chunk(self, data: bytes) -> None:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        def _json(self, status: int, payload: dict[str, object]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    ThreadingHTTPServer((args.host, args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
