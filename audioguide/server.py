"""The LAN server: a folder of rendered sessions in, a phone page and a podcast feed out.

Thin, like the CLI beside it: each route asks ``feed`` for what is in the folder (read anew
per request, so a re-render shows without a restart) and answers over HTTP. Starlette's
``FileResponse`` does the HTTP of files (byte ranges with 206, HEAD, ETag and Last-Modified,
Content-Length) and uvicorn serves it. Every URL starts with a random token kept in the folder,
so a subscription survives a restart and nobody on the network finds anything without it.

Only files of recognised sessions are served (``RenderedSession.files``): no listing, no
hidden files, nothing through a symbolic link, nothing outside the folder.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import re
import secrets
import socket
import stat
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import ifaddr
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route, Router

from .errors import ServeError
from .export.feed import (
    CHAPTERS_TYPE,
    FEED_NAME,
    FEED_TYPE,
    RenderedSession,
    chapters_json,
    feed_xml,
    find_session,
    find_sessions,
    page_listing,
    read_session,
)
from .export.ownership import MANIFEST_NAME

TOKEN_FILE = ".audioguide-token"
WEB_DIR = Path(__file__).with_name("web")
PAGE_FILES = {"app.js": "text/javascript", "style.css": "text/css"}
MEDIA_TYPES = {
    ".mp3": "audio/mpeg",
    ".m4a": "audio/mp4",
    ".ogg": "audio/ogg",
    ".flac": "audio/flac",
    ".wav": "audio/wav",
    ".png": "image/png",
    ".m3u8": "application/vnd.apple.mpegurl",
    ".lrc": "text/plain; charset=utf-8",
    ".vtt": "text/vtt; charset=utf-8",
    ".srt": "application/x-subrip; charset=utf-8",
}
_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,}")
SHUTDOWN_GRACE_S = 2  # a phone part-way through a download does not hold up Ctrl-C longer


def check_folder(root: Path) -> None:
    """Raise ServeError unless ``root`` is a folder of session folders to serve."""
    if not root.is_dir():
        raise ServeError(
            f"{root}: no such folder; render a session into it first "
            f"(audioguide render back-pain -o {root}) or give the folder to serve"
        )
    if (root / MANIFEST_NAME).exists() or read_session(root) is not None:
        # Serving it would put the token file into a folder a render must find as it left it.
        parent = root.resolve().parent
        raise ServeError(
            f"{root}: is one session's folder; serve the folder it is in: audioguide serve {parent}"
        )


def load_token(root: Path) -> str:
    """The folder's URL token: read from its hidden token file, made on first use."""
    path = root / TOKEN_FILE
    try:
        token = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        pass
    except (OSError, UnicodeDecodeError) as exc:
        raise ServeError(f"{path}: cannot read the URL token ({exc}); delete the file") from None
    else:
        if not _TOKEN.fullmatch(token):
            raise ServeError(
                f"{path}: not a URL token (16 or more letters, digits, - or _); delete the "
                "file for a new one"
            )
        return token
    token = secrets.token_urlsafe(12)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(token + "\n")
    except OSError as exc:
        raise ServeError(
            f"{path}: cannot keep the URL token here ({exc.strerror}); serve a folder you may "
            "write to, or give --no-token"
        ) from None
    return token


def lan_address() -> str | None:
    """This machine's IPv4 address on the local network (a private one first), if any."""
    found = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if not isinstance(ip.ip, str):
                continue  # IPv6: a phone's browser would need it in brackets; IPv4 is enough
            address = ipaddress.IPv4Address(ip.ip)
            if not (address.is_loopback or address.is_link_local or address.is_unspecified):
                found.append(address)
    found.sort(key=lambda a: not a.is_private)
    return str(found[0]) if found else None


@dataclass(frozen=True)
class Addresses:
    """Where the page and the feed are, as a phone on the network reaches them."""

    page_url: str
    feed_url: str


def addresses(host: str, port: int, token: str | None) -> Addresses:
    if host in ("0.0.0.0", "::", ""):
        host = lan_address() or "127.0.0.1"
    shown = f"[{host}]" if ":" in host else host
    base = f"http://{shown}:{port}/" + (f"{token}/" if token else "")
    return Addresses(base, base + FEED_NAME)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host``:``port`` (port 0: any free one)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
    except (OSError, UnicodeError) as exc:
        raise ServeError(f"--host {host}: not an address of this machine ({exc})") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ServeError(
                f"--port {port}: already in use by another program; choose another with --port N"
            ) from None
        if exc.errno == errno.EACCES:
            raise ServeError(
                f"--port {port}: needs administrator rights below 1024; choose --port 8080"
            ) from None
        raise ServeError(f"--host {host} --port {port}: cannot listen ({exc.strerror})") from None
    return sock


def create_app(root: Path, token: str | None) -> Starlette:
    """The web application serving the sessions under ``root``, under ``/<token>/``."""
    root = root.resolve()

    def base_url(request: Request) -> str:
        return str(request.base_url) + (f"{quote(token)}/" if token else "")

    def session(request: Request) -> RenderedSession | None:
        return find_session(root, request.path_params["slug"])

    async def page(request: Request) -> Response:
        return _file(request, WEB_DIR / "index.html", "text/html; charset=utf-8")

    async def page_file(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in PAGE_FILES:
            return _not_found()
        return _file(request, WEB_DIR / name, f"{PAGE_FILES[name]}; charset=utf-8")

    async def listing(request: Request) -> Response:
        return JSONResponse(page_listing(find_sessions(root)), headers=_NO_STORE)

    async def feed(request: Request) -> Response:
        text = feed_xml(find_sessions(root), base_url(request))
        return Response(text, media_type=f"{FEED_TYPE}; charset=utf-8", headers=_NO_STORE)

    async def session_file(request: Request) -> Response:
        found = session(request)
        name = request.path_params["name"]
        if found is None or name not in found.files:
            return _not_found()
        if name == found.chapters_name:
            return Response(chapters_json(found), media_type=CHAPTERS_TYPE, headers=_NO_STORE)
        path = found.folder / name
        try:
            info = os.lstat(path)
        except OSError:
            return _not_found()
        if not stat.S_ISREG(info.st_mode):
            return _not_found()
        return _file(request, path, MEDIA_TYPES.get(path.suffix, "application/octet-stream"))

    routes: list[BaseRoute] = [
        Route("/", page),
        Route(f"/{FEED_NAME}", feed),
        Route("/sessions.json", listing),
        Route("/{name}", page_file),
        Route("/{slug}/{name}", session_file),
    ]
    if token:
        page_url = f"/{quote(token)}/"
        routes = [
            Route(f"/{token}", lambda request: RedirectResponse(page_url)),
            Mount(f"/{token}", app=Router(routes, redirect_slashes=False)),
        ]
    app = Starlette(routes=routes)
    # Only the page's own address is redirected (above); any other path is simply not there.
    app.router.redirect_slashes = False
    return app


_NO_STORE = {"cache-control": "no-cache"}


def _not_found() -> Response:
    # The same answer whatever was asked: a wrong token, a path outside, a hidden file.
    return Response("Not Found", status_code=404, media_type="text/plain")


def _file(request: Request, path: Path, media_type: str) -> Response:
    try:
        info = os.stat(path)
    except OSError:
        return _not_found()
    response = FileResponse(path, media_type=media_type, stat_result=info, headers=_NO_STORE)
    etag = response.headers["etag"]
    if etag in (tag.strip() for tag in request.headers.get("if-none-match", "").split(",")):
        kept = {k: response.headers[k] for k in ("etag", "last-modified", "cache-control")}
        return Response(status_code=304, headers=kept)
    return response


def serve_forever(app: Starlette, sock: socket.socket) -> None:
    """Serve ``app`` on ``sock`` until Ctrl-C (or SIGTERM), then return."""
    try:
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
            server_header=False,
        )
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:
        pass  # uvicorn shut down cleanly and passed Ctrl-C on, or it came before uvicorn ran
    finally:
        sock.close()
