"""Test helpers: a local metrics server that records posts, and waiting with a deadline."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Optional


def wait_for(condition: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Polls ``condition`` until it is truthy; fails the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RecordingServer:
    """Accepts ``POST /v1/jobs/{id}/metrics`` and records each body, path and header.

    ``statuses`` is a queue of statuses to answer with before answering 200; ``gate``, when
    set, holds every request until the test opens it (a slow server, without sleeping).
    """

    def __init__(self, port: int = 0) -> None:
        self.posts: List[Dict[str, Any]] = []
        self.statuses: List[int] = []
        self.gate: Optional[threading.Event] = None
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if server.gate is not None:
                    server.gate.wait(30)
                with server.lock:
                    status = server.statuses.pop(0) if server.statuses else 200
                    if status == 200:
                        server.posts.append({"path": self.path, "auth": self.headers.get("Authorization"),
                                             "body": json.loads(body)})
                reply = json.dumps({"accepted": 1} if status == 200 else {"error": "test"}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *_args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def steps(self) -> List[Dict[str, Any]]:
        with self.lock:
            return [step for post in self.posts for step in post["body"]["steps"]]

    def close(self) -> None:
        if self.gate is not None:
            self.gate.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> "RecordingServer":
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.close()
