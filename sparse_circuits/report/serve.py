"""`sparse-circuits view`: serve a report directory on the loopback interface only.

What it serves is the site and nothing else: a path that resolves outside the site directory (a
symlink out of it, `..`) is not found, directories are never listed, and a request whose `Host`
is not the loopback address (a web page reaching the viewer through DNS rebinding) is refused.
A browser that closes a connection early is not an error.
"""

from __future__ import annotations

import functools
import os
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from ..errors import UserError

HOST = "127.0.0.1"
LOOPBACK_NAMES = ("127.0.0.1", "localhost")


class _SiteHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args) -> None:  # one line per request is noise for a local viewer
        pass

    def _host_allowed(self) -> bool:
        host = (self.headers.get("Host") or "").strip().lower()
        name, _, port = host.rpartition(":") if host.count(":") == 1 else (host, "", "")
        return name in LOOPBACK_NAMES and (not port or port == str(self.server.server_address[1]))

    def send_head(self):
        if not self._host_allowed():
            self.send_error(403, "only loopback hosts may read this report")
            return None
        return super().send_head()

    def translate_path(self, path: str) -> str:
        """The file under the site for `path`, or a name that does not exist when it resolves outside."""
        root = os.path.realpath(self.directory)
        target = os.path.realpath(super().translate_path(path))
        if target != root and not target.startswith(root + os.sep):
            return os.path.join(root, ".outside-the-site")
        return target

    def list_directory(self, path):
        self.send_error(404, "not found")
        return None


class _SiteServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        import sys
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return  # the browser stopped reading: nothing went wrong here
        super().handle_error(request, client_address)


def make_server(site_dir: str | os.PathLike, port: int = 8000) -> ThreadingHTTPServer:
    site = Path(site_dir)
    if not (site / "index.html").is_file():
        raise UserError(f"{site}: no index.html; write a report with `sparse-circuits report --out {site}`")
    handler = functools.partial(_SiteHandler, directory=str(site))
    try:
        return _SiteServer((HOST, port), handler)
    except OSError as e:
        raise UserError(f"cannot serve on {HOST}:{port} ({e.strerror}); pick another with --port") from None


def address(server: ThreadingHTTPServer) -> str:
    host, port = server.server_address[:2]
    return f"http://{host}:{port}/index.html"
