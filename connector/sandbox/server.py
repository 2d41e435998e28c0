"""HTTPS transport for the sandbox: ``ThreadingHTTPServer`` + ``ssl`` + HTTP/1.1 keep-alive.

TLS is negotiated in each connection's own thread (not in the accept loop), so a slow or broken
client cannot stall other connections. Every response carries ``Content-Length`` so clients can
reuse connections. ``stop`` closes idle keep-alive connections too, which
``ThreadingHTTPServer.shutdown`` alone would leave open.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from connector.sandbox.salesforce_api import ApiRequest, ApiResponse

HANDSHAKE_TIMEOUT_SECONDS = 10.0
IDLE_TIMEOUT_SECONDS = 120.0
# Salesforce documents 150 MB per Bulk API 2.0 upload (after base64 encoding); the sandbox takes
# request bodies up to that size, as the real API does.
MAX_BODY_BYTES = 150 * 1024 * 1024


class Handler(Protocol):
    """What the server routes requests to (the Salesforce and Segment APIs, see service.py)."""

    def handle(self, request: ApiRequest) -> ApiResponse:
        """Answer one request."""
        ...


class SandboxServer(ThreadingHTTPServer):
    """A threading HTTPS server that routes every request to one handler.

    Args:
        address: ``(host, port)`` to bind; port 0 picks a free port.
        api: The request handlers.
        context: Server-side TLS context.
    """

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], api: Handler, context: ssl.SSLContext) -> None:
        self.api = api
        self.context = context
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self.connections_accepted = 0
        """TLS connections established so far (keep-alive reuse keeps this low)."""
        super().__init__(address, _RequestHandler)

    @property
    def port(self) -> int:
        """The bound TCP port."""
        return int(self.server_address[1])

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Wrap the accepted socket in TLS (in the connection's thread) and serve it."""
        raw: socket.socket = request
        raw.settimeout(HANDSHAKE_TIMEOUT_SECONDS)
        # Small responses must not wait for the client's delayed ACK (Nagle): ~40 ms otherwise.
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            secure = self.context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            return  # failed handshake (untrusted CA, plain HTTP, ...): drop the connection
        secure.settimeout(IDLE_TIMEOUT_SECONDS)
        with self._connections_lock:
            self._connections.add(secure)
            self.connections_accepted += 1
        try:
            self.RequestHandlerClass(secure, client_address, self)
        except (ssl.SSLError, OSError):
            pass  # the client went away mid-request
        finally:
            with self._connections_lock:
                self._connections.discard(secure)
            with contextlib.suppress(OSError):
                secure.close()

    def close_connections(self) -> None:
        """Shut down open (keep-alive) connections so their threads end."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet about client disconnects; real bugs still surface in tests via responses."""
        del request, client_address


class _RequestHandler(BaseHTTPRequestHandler):
    """Reads one HTTP/1.1 request at a time and writes the API's answer."""

    protocol_version = "HTTP/1.1"
    server_version = "leadscore-sandbox/1.0"
    sys_version = ""
    server: SandboxServer

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: Any) -> None:
        """Silence per-request logging; ``Sandbox.request_log`` records requests."""
        del format, args

    def _read_body(self) -> bytes | None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            total = 0
            while True:
                size_line = self.rfile.readline(1024)
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                total += size
                if total > MAX_BODY_BYTES:
                    return None
                chunks.append(self.rfile.read(size))
                self.rfile.readline(1024)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            return None
        return self.rfile.read(length) if length else b""

    def _serve(self) -> None:
        try:
            body = self._read_body()
        except ValueError:
            body = None
        if body is None:
            self.send_error(413)
            self.close_connection = True
            return
        parts = urlsplit(self.path)
        request = ApiRequest(
            method=self.command,
            path=parts.path,
            query=parse_qs(parts.query, keep_blank_values=True),
            headers=self.headers,
            body=body,
        )
        response = self.server.api.handle(request)
        if response.truncate_at is not None and response.truncate_at < 0:
            # Fault injection: the request was applied, the answer is lost with the connection.
            self.close_connection = True
            return
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        for name, value in response.headers.items():
            self.send_header(name, value)
        payload = b"" if response.status in (204, 304) else response.body
        self.send_header("Content-Length", str(len(payload)))
        if response.truncate_at is not None:
            # Fault injection: announce the full body, send part of it, drop the connection.
            payload = payload[: response.truncate_at]
            self.close_connection = True
        # Headers and body leave in one write (one TLS record train, no extra round trip).
        self._headers_buffer.append(b"\r\n")
        self._headers_buffer.append(payload)
        self.flush_headers()
