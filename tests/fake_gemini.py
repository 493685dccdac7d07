"""A small HTTP server on 127.0.0.1 that speaks enough of the Gemini REST API
(`models/{model}:generateContent`) to test the real google-genai client against it.

Each request takes the next scripted reply; when the script runs out, the last
reply repeats. Every request is recorded (path, headers, JSON body, arrival time).

    with FakeGemini() as fake:
        fake.script(rate_limited("0.2s"), answer({"description": ...}))
        os.environ["GOOGLE_GEMINI_BASE_URL"] = fake.url
"""
from __future__ import annotations

import dataclasses
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclasses.dataclass
class Reply:
    status: int
    body: dict | str
    headers: dict = dataclasses.field(default_factory=dict)
    delay_s: float = 0.0  # hold the reply this long (to test client timeouts)


@dataclasses.dataclass
class Recorded:
    path: str
    headers: dict
    body: dict
    time: float

    def prompt_text(self) -> str:
        """Every text part of the request, system instruction included, joined."""
        texts = [part.get("text", "") for content in self.body.get("contents", [])
                 for part in content.get("parts", [])]
        system = self.body.get("systemInstruction") or self.body.get("system_instruction") or {}
        texts += [part.get("text", "") for part in system.get("parts", [])]
        return "\n".join(texts)


def answer(obj: dict | str, prompt_tokens: int = 1000, output_tokens: int = 200,
           thoughts_tokens: int = 0) -> Reply:
    """A successful generateContent reply whose single text part is obj (JSON-encoded if a dict)."""
    text = obj if isinstance(obj, str) else json.dumps(obj)
    usage = {"promptTokenCount": prompt_tokens, "candidatesTokenCount": output_tokens,
             "totalTokenCount": prompt_tokens + output_tokens + thoughts_tokens}
    if thoughts_tokens:
        usage["thoughtsTokenCount"] = thoughts_tokens
    return Reply(200, {
        "candidates": [{"content": {"role": "model", "parts": [{"text": text}]},
                        "finishReason": "STOP", "index": 0}],
        "usageMetadata": usage,
        "modelVersion": "fake-gemini",
    })


def empty_candidates(prompt_tokens: int = 1000) -> Reply:
    """A 200 reply with no candidates, as when the prompt itself is blocked."""
    return Reply(200, {"promptFeedback": {"blockReason": "OTHER"},
                       "usageMetadata": {"promptTokenCount": prompt_tokens, "totalTokenCount": prompt_tokens}})


def blocked_candidate(prompt_tokens: int = 1000) -> Reply:
    """A candidate stopped for safety, with no content."""
    return Reply(200, {"candidates": [{"finishReason": "SAFETY", "index": 0}],
                       "usageMetadata": {"promptTokenCount": prompt_tokens, "totalTokenCount": prompt_tokens}})


def rate_limited(retry_delay: str = "1s") -> Reply:
    """429 RESOURCE_EXHAUSTED carrying a google.rpc.RetryInfo, as the real API sends."""
    return Reply(429, {"error": {
        "code": 429, "message": "Resource has been exhausted (e.g. check quota).",
        "status": "RESOURCE_EXHAUSTED",
        "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay}],
    }})


def server_error(code: int = 500) -> Reply:
    status = {500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}.get(code, "INTERNAL")
    return Reply(code, {"error": {"code": code, "message": "An internal error has occurred.", "status": status}})


def client_error(code: int = 404, message: str = "models/nope is not found") -> Reply:
    status = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND"}.get(code, "FAILED_PRECONDITION")
    return Reply(code, {"error": {"code": code, "message": message, "status": status}})


class FakeGemini:
    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._replies: list[Reply] = [server_error(500)]
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/"

    def script(self, *replies: Reply) -> None:
        with self._lock:
            self._replies = list(replies)

    def _next_reply(self) -> Reply:
        with self._lock:
            return self._replies.pop(0) if len(self._replies) > 1 else self._replies[0]

    def _record(self, recorded: Recorded) -> None:
        with self._lock:
            self.requests.append(recorded)

    def __enter__(self) -> "FakeGemini":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler_class(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b"{}"
                fake._record(Recorded(self.path, dict(self.headers), json.loads(raw or b"{}"), time.monotonic()))
                if not self.path.split("?")[0].endswith(":generateContent"):
                    return self._send(client_error(404, f"fake server has no {self.path}"))
                self._send(fake._next_reply())

            def _send(self, reply: Reply) -> None:
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                data = (reply.body if isinstance(reply.body, str) else json.dumps(reply.body)).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json; charset=UTF-8")
                    self.send_header("Content-Length", str(len(data)))
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting (a timeout test)

            def log_message(self, *args):  # keep pytest output quiet
                pass

        return Handler
