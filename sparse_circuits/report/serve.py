"""`sparse-circuits view`: serve a report directory on the loopback interface only."""

from __future__ import annotations

import functools
import os
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from ..errors import UserError

HOST = "127.0.0.1"


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args) -> None:  # one line per request is noise for a local viewer
        pass


def make_server(site_dir: str | os.PathLike, port: int = 8000) -> ThreadingHTTPServer:
    site = Path(site_dir)
    if not (site / "index.html").is_file():
        raise UserError(f"{site}: no index.html; write a report with `sparse-circuits report --out {site}`")
    handler = functools.partial(_QuietHandler, directory=str(site))
    try:
        return ThreadingHTTPServer((HOST, port), handler)
    except OSError as e:
        raise UserError(f"cannot serve on {HOST}:{port} ({e.strerror}); pick another with --port") from None


def address(server: ThreadingHTTPServer) -> str:
    host, port = server.server_address[:2]
    return f"http://{host}:{port}/index.html"
