"""Serve an atlas on 127.0.0.1 only; never a file outside the site folder.

A request path is decoded once (as the file lookup does) and refused with 400 when any segment is ``..``
or it holds a backslash or NUL; the resolved file must lie inside the site folder (symbolic links
included), or the answer is 404. Directory listings are never produced.
"""

from __future__ import annotations

import signal
import sys
import tempfile
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from .. import store
from ..errors import NeurotextError
from ..store import examples as ex_store
from . import probes, report

HOST = "127.0.0.1"  # never another interface
SITE_IN_STORE = "site"  # serve DIR builds the atlas of a store into DIR/site (or a temporary folder)


class SiteHandler(SimpleHTTPRequestHandler):
    """Static files of one folder, GET and HEAD only, with traversal and Host checks."""

    server_version = "neurotext-atlas"
    sys_version = ""

    def __init__(self, *args, directory: str, quiet: bool = False, **kwargs):
        self.root = Path(directory).resolve()
        self.quiet = quiet
        self._target: Path | None = None
        super().__init__(*args, directory=str(self.root), **kwargs)

    def _check(self) -> bool:
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0]
        if host not in ("127.0.0.1", "localhost"):  # a page on another origin rebinding a name to us
            self.send_error(403, "unexpected Host header")
            return False
        raw = urlsplit(self.path).path
        decoded = unquote(raw)
        if not raw.startswith("/") or "\\" in decoded or "\x00" in decoded or ".." in decoded.split("/"):
            self.send_error(400, "bad path")
            return False
        target = (self.root / decoded.lstrip("/")).resolve()
        if target != self.root and self.root not in target.parents:
            self.send_error(404, "not found")
            return False
        self._target = target
        return True

    def translate_path(self, path):
        return str(self._target if self._target is not None else self.root / "__missing__")

    def list_directory(self, path):
        self.send_error(404, "not found")
        return None

    def end_headers(self):
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def do_GET(self):
        if self._check():
            super().do_GET()

    def do_HEAD(self):
        if self._check():
            super().do_HEAD()

    def log_message(self, format, *args):
        if not self.quiet:
            sys.stderr.write(f"{self.address_string()} - {format % args}\n")


def make_server(site, port: int = 0, quiet: bool = False) -> ThreadingHTTPServer:
    """An HTTP server for the folder ``site`` on 127.0.0.1:``port`` (0: any free port); not started."""
    site = Path(site)
    if not site.is_dir():
        raise NeurotextError(f"{site}: no such folder")
    try:
        server = ThreadingHTTPServer((HOST, port), partial(SiteHandler, directory=str(site), quiet=quiet))
    except OSError as e:
        raise NeurotextError(f"cannot listen on {HOST}:{port}: {e.strerror or e} (choose another --port)") from e
    server.daemon_threads = True
    return server


def site_for(path, log=print) -> Path:
    """The site folder to serve for ``path``: an atlas as it is, or a store's atlas (a sweep, corpus
    examples, probe results, or several), (re)built into ``DIR/site`` when the store, its examples or its Q2 results
    changed since (a temporary folder when DIR is not writable)."""
    path = Path(path)
    if report.is_atlas(path):
        return path
    probe = probes.find_probe(path)
    if not (path / store.MANIFEST).is_file() and not ex_store.has_examples(path) and probe is None:
        raise NeurotextError(f"{path} is neither a neurotext atlas (no {report.MARKER}) nor a store "
                             f"(no {store.MANIFEST}, no corpus examples, no probe results)")
    out = path / SITE_IN_STORE
    signature = report.source_signature(path, report.find_encode(path), probe)
    if report.is_atlas(out) and report.read_marker(out).get("source_signature") == signature:
        log(f"neurotext: {out} is up to date")
        return out
    try:
        report.build_report(path, out, log=log)
    except OSError as e:
        out = Path(tempfile.mkdtemp(prefix="neurotext-atlas-")) / SITE_IN_STORE
        log(f"neurotext: cannot write {path / SITE_IN_STORE} ({e}); building in {out}")
        report.build_report(path, out, log=log)
    return out


def serve(path, port: int = 8000, log=print, ready: threading.Event | None = None) -> int:
    """Serve the atlas of ``path`` (a site or a store) until Ctrl-C; returns 0.

    Args:
        path: an atlas folder (``neurotext report --out``) or a store (built into ``DIR/site`` first).
        port: TCP port on 127.0.0.1 (0: any free port).
        log: messages (the URL is printed to stdout).
        ready: set once the server listens (for in-process use).
    """
    site = site_for(path, log=log)
    server = make_server(site, port)
    url = f"http://{HOST}:{server.server_address[1]}/"
    print(f"neurotext: serving {site} at {url} (Ctrl-C to stop)", flush=True)
    if threading.current_thread() is threading.main_thread():
        # A process started in the background by a non-interactive shell inherits SIGINT as ignored,
        # and Python then never raises KeyboardInterrupt: install the handlers explicitly so Ctrl-C
        # (and SIGTERM) always stop the server cleanly.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    if ready is not None:
        ready.set()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        log("neurotext: stopped")
    finally:
        server.server_close()
    return 0
