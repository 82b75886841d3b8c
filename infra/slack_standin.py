#!/usr/bin/env python3
"""A real HTTP server standing in for Slack's incoming-webhook endpoint, and for Sentry's
envelope endpoint (stdlib only).

Everything is keyed on a hook id taken from the path, so many tests can share one
server at once: each test picks its own id (e.g. a random one) and only sees its own
requests and scripted responses.

    POST   /hooks/<id>              the webhook: records the request, answers with the
                                    next scripted response for <id>, else 200 "ok"
                                    (text/plain), like Slack
    POST   /api/<id>/envelope/      Sentry's envelope endpoint for the DSN
                                    http://KEY@HOST:PORT/<id>: records the request like a
                                    hook (gzip bodies are inflated) with the envelope parsed
                                    into "envelope": {"header", "items": [{"header",
                                    "payload"}]} (payloads parsed as JSON when they are),
                                    and answers the next scripted response, else 200
                                    {"id": <event id>} like Sentry
    POST   /_control/<id>/responses JSON list of {"status": int, "body": str,
                                    "headers": {name: value}} appended to <id>'s queue,
                                    consumed in order, then back to 200 "ok"
    GET    /_control/<id>/requests  JSON list of recorded requests for <id>:
                                    {"method","path","query","headers","body" (raw text),
                                     "json" (parsed body or null),"time" (unix seconds),
                                     "status" (what we answered)}
    GET    /_control/<id>/responses JSON list of still-queued responses
    DELETE /_control/<id>           forget <id>'s requests and queued responses
    GET    /healthz                 200 "ok"

Usage: slack_standin.py [--host 127.0.0.1] [--port 8099]
"""
from __future__ import annotations

import argparse
import gzip
import json
import zlib
import os
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

MAX_BODY = 16 * 1024 * 1024  # a Slack message is at most a few tens of KiB
DEFAULT_RESPONSE = {"status": 200, "body": "ok", "headers": {}}


@dataclass
class _Hook:
    requests: list[dict] = field(default_factory=list)
    responses: deque[dict] = field(default_factory=deque)


class _State:
    """All hooks, behind one lock (requests are tiny; contention is not a concern)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hooks: dict[str, _Hook] = {}

    def _hook(self, hook_id: str) -> _Hook:
        return self._hooks.setdefault(hook_id, _Hook())

    def take_response(self, hook_id: str) -> dict:
        with self._lock:
            queue = self._hook(hook_id).responses
            return queue.popleft() if queue else DEFAULT_RESPONSE

    def record(self, hook_id: str, entry: dict) -> None:
        with self._lock:
            self._hook(hook_id).requests.append(entry)

    def queue(self, hook_id: str, responses: list[dict]) -> None:
        with self._lock:
            self._hook(hook_id).responses.extend(responses)

    def requests(self, hook_id: str) -> list[dict]:
        with self._lock:
            hook = self._hooks.get(hook_id)
            return list(hook.requests) if hook else []

    def pending(self, hook_id: str) -> list[dict]:
        with self._lock:
            hook = self._hooks.get(hook_id)
            return list(hook.responses) if hook else []

    def reset(self, hook_id: str) -> None:
        with self._lock:
            self._hooks.pop(hook_id, None)


def _validate_responses(value: object) -> list[dict]:
    """Check a scripted-response list; raise ValueError with a readable message."""
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise ValueError("expected a JSON list of {status, body, headers} objects")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise ValueError(f"item {i}: expected an object")
        unknown = set(item) - {"status", "body", "headers"}
        if unknown:
            raise ValueError(f"item {i}: unknown keys {sorted(unknown)}")
        status = item.get("status", 200)
        if not isinstance(status, int) or not 100 <= status <= 599:
            raise ValueError(f"item {i}: status must be an integer 100..599")
        body = item.get("body", "")
        if not isinstance(body, str):
            body = json.dumps(body)
        headers = item.get("headers") or {}
        if not isinstance(headers, dict):
            raise ValueError(f"item {i}: headers must be an object")
        out.append({"status": status, "body": body, "headers": {str(k): str(v) for k, v in headers.items()}})
    return out


def parse_envelope(body: bytes) -> dict:
    """Split a Sentry envelope: a JSON header line, then items, each a JSON header line and a
    payload of `length` bytes (or up to the next newline when the header has no length)."""
    header_line, _, rest = body.partition(b"\n")
    envelope = {"header": json.loads(header_line or b"{}"), "items": []}
    while rest.strip():
        item_line, _, rest = rest.partition(b"\n")
        item_header = json.loads(item_line)
        length = item_header.get("length")
        if length is None:
            payload, _, rest = rest.partition(b"\n")
        else:
            payload, rest = rest[:length], rest[length:]
            if rest.startswith(b"\n"):
                rest = rest[1:]
        text = payload.decode("utf-8", errors="replace")
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = text
        envelope["items"].append({"header": item_header, "payload": parsed})
    return envelope


class _Handler(BaseHTTPRequestHandler):
    server_version = "lifeboat-slack-standin/1"
    protocol_version = "HTTP/1.1"  # keep-alive, as clients like reqwest expect

    @property
    def state(self) -> _State:
        return self.server.state  # type: ignore[attr-defined]

    # -- plumbing ---------------------------------------------------------------------

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (stdlib signature)
        if self.server.verbose:  # type: ignore[attr-defined]
            super().log_message(format, *args)

    def _read_body(self) -> bytes | None:
        length = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._read_chunked()
        if length is None:
            return b""
        try:
            n = int(length)
        except ValueError:
            return None
        if n < 0 or n > MAX_BODY:
            return None
        return self.rfile.read(n)

    def _read_chunked(self) -> bytes | None:
        chunks = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                return None
            if size == 0:
                # trailers, up to the blank line
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            total += size
            if total > MAX_BODY:
                return None
            chunks.append(self.rfile.read(size))
            self.rfile.readline(8)  # CRLF after each chunk

    def _send(self, status: int, body: str | bytes, content_type: str = "text/plain; charset=utf-8",
              headers: dict[str, str] | None = None) -> None:
        data = body.encode("utf-8") if isinstance(body, str) else body
        self.send_response(status)
        names = {k.lower() for k in (headers or {})}
        if "content-type" not in names:
            self.send_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            if name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _send_json(self, status: int, value: object) -> None:
        self._send(status, json.dumps(value, indent=1), "application/json")

    def _route(self) -> tuple[str, list[str], str]:
        parts = urlsplit(self.path)
        segments = [unquote(s) for s in parts.path.split("/") if s]
        return parts.path, segments, parts.query

    # -- methods ----------------------------------------------------------------------

    def do_GET(self) -> None:
        _, seg, _ = self._route()
        if seg == ["healthz"]:
            self._send(200, "ok")
        elif len(seg) == 3 and seg[0] == "_control" and seg[2] == "requests":
            self._send_json(200, self.state.requests(seg[1]))
        elif len(seg) == 3 and seg[0] == "_control" and seg[2] == "responses":
            self._send_json(200, self.state.pending(seg[1]))
        else:
            self._send(404, "not_found")

    def do_POST(self) -> None:
        path, seg, query = self._route()
        body = self._read_body()
        if body is None:
            self.close_connection = True  # the rest of the body may still be unread
            self._send(400, "invalid_body")
            return
        if len(seg) == 2 and seg[0] == "hooks":
            self._hook(seg[1], path, query, body)
        elif len(seg) == 3 and seg[0] == "api" and seg[2] == "envelope":
            self._envelope(seg[1], path, query, body)
        elif len(seg) == 3 and seg[0] == "_control" and seg[2] == "responses":
            try:
                responses = _validate_responses(json.loads(body or b"null"))
            except (ValueError, UnicodeDecodeError) as err:
                self._send_json(400, {"error": str(err)})
                return
            self.state.queue(seg[1], responses)
            self._send_json(200, {"queued": len(responses), "pending": len(self.state.pending(seg[1]))})
        else:
            self._send(404, "not_found")

    def do_DELETE(self) -> None:
        _, seg, _ = self._route()
        if len(seg) == 2 and seg[0] == "_control":
            self.state.reset(seg[1])
            self._send(204, b"")
        else:
            self._send(404, "not_found")

    def _hook(self, hook_id: str, path: str, query: str, body: bytes) -> None:
        text = body.decode("utf-8", errors="replace")
        try:
            parsed = json.loads(text) if text else None
        except ValueError:
            parsed = None
        response = self.state.take_response(hook_id)
        self.state.record(hook_id, {
            "method": self.command,
            "path": path,
            "query": query,
            "headers": {k: v for k, v in self.headers.items()},
            "body": text,
            "json": parsed,
            "time": time.time(),
            "status": response["status"],
        })
        self._send(response["status"], response["body"], headers=response["headers"])


    def _envelope(self, project: str, path: str, query: str, body: bytes) -> None:
        encoding = self.headers.get("Content-Encoding", "").lower()
        try:
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            envelope = parse_envelope(body)
        except (OSError, ValueError, zlib.error) as err:
            self._send_json(400, {"detail": f"invalid envelope: {err}"})
            return
        response = self.state.take_response(project)
        if response is DEFAULT_RESPONSE:
            event_id = envelope["header"].get("event_id", "")
            response = {"status": 200, "body": json.dumps({"id": event_id}),
                        "headers": {"Content-Type": "application/json"}}
        self.state.record(project, {
            "method": self.command,
            "path": path,
            "query": query,
            "headers": {k: v for k, v in self.headers.items()},
            "body": body.decode("utf-8", errors="replace"),
            "json": None,
            "envelope": envelope,
            "time": time.time(),
            "status": response["status"],
        })
        self._send(response["status"], response["body"], headers=response["headers"])


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], verbose: bool) -> None:
        super().__init__(address, _Handler)
        self.state = _State()
        self.verbose = verbose


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Slack incoming-webhook stand-in")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("LIFEBOAT_SLACK_PORT", "8099")))
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args(argv)

    server = _Server((args.host, args.port), args.verbose)
    # serve_forever() runs in this thread; SIGTERM asks it to stop from a helper thread
    # (shutdown() blocks until the loop exits, so it must not run in the loop's thread).
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"slack stand-in on http://{args.host}:{server.server_address[1]}", file=sys.stderr, flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
