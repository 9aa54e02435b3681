"""audioguide serve, over real HTTP: a real server process on 127.0.0.1, real requests.

Byte ranges, HEAD, ETag and MIME types as Safari and podcast apps need them; the token; what it
refuses; many clients at once; a re-render seen without a restart; Ctrl-C.
"""

from __future__ import annotations

import http.client
import shutil
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote, urlsplit

import mutagen.id3
import pytest
from click.testing import CliRunner

pytest.importorskip("starlette", reason="audioguide serve needs: pip install '.[serve]'")
segno = pytest.importorskip("segno", reason="audioguide serve needs: pip install '.[serve]'")

from conftest import SHORT_ROUTINE, Served  # noqa: E402

from audioguide import server  # noqa: E402
from audioguide.cli import cli  # noqa: E402
from audioguide.export.feed import find_sessions, read_session  # noqa: E402
from audioguide.server import TOKEN_FILE  # noqa: E402

FULL = "Short Test Session (full).mp3"


def request(
    url: str, path: str = "", method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """``method`` on ``url`` + ``path``, the path sent exactly as given (no normalising)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.request(method, parts.path + path, headers=headers or {})
        response = connection.getresponse()
        body = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body
    finally:
        connection.close()


def file_path(name: str = FULL, slug: str = "short") -> str:
    return f"{quote(slug)}/{quote(name)}"


def test_a_byte_range_returns_exactly_those_bytes(served, rendered_short):
    data = (rendered_short.folder / FULL).read_bytes()
    status, headers, body = request(
        served.page_url, file_path(), headers={"Range": "bytes=1000-1999"}
    )
    assert status == 206
    assert body == data[1000:2000]
    assert headers["content-length"] == "1000"
    assert headers["content-range"] == f"bytes 1000-1999/{len(data)}"
    assert headers["accept-ranges"] == "bytes"
    # The open-ended and suffix forms Safari and podcast apps send.
    status, _, body = request(served.page_url, file_path(), headers={"Range": "bytes=-500"})
    assert (status, body) == (206, data[-500:])
    status, _, body = request(
        served.page_url, file_path(), headers={"Range": f"bytes={len(data) - 10}-"}
    )
    assert (status, body) == (206, data[-10:])
    status, headers, _ = request(
        served.page_url, file_path(), headers={"Range": f"bytes={len(data)}-"}
    )
    assert status == 416
    assert headers["content-range"] == f"bytes */{len(data)}"


def test_head_etag_and_last_modified(served, rendered_short):
    size = (rendered_short.folder / FULL).stat().st_size
    status, headers, body = request(served.page_url, file_path(), method="HEAD")
    assert (status, body) == (200, b"")
    assert headers["content-length"] == str(size)
    assert headers["content-type"] == "audio/mpeg"
    assert headers["etag"].startswith('"')
    assert headers["last-modified"].endswith(" GMT")
    status, again, body = request(
        served.page_url, file_path(), headers={"If-None-Match": headers["etag"]}
    )
    assert (status, body, again["etag"]) == (304, b"", headers["etag"])
    status, _, body = request(served.page_url, file_path())
    assert (status, len(body)) == (200, size)


@pytest.mark.parametrize(
    ("name", "media_type"),
    [
        (FULL, "audio/mpeg"),
        ("01 - Arrive.mp3", "audio/mpeg"),
        ("cover.png", "image/png"),
        ("Short Test Session.m3u8", "application/vnd.apple.mpegurl"),
        ("01 - Arrive.lrc", "text/plain; charset=utf-8"),
        ("Short Test Session (full).vtt", "text/vtt; charset=utf-8"),
        ("02 - Breathe.srt", "application/x-subrip; charset=utf-8"),
        ("Short Test Session (full).chapters.json", "application/json+chapters"),
    ],
)
def test_each_session_file_is_served_with_its_media_type(served, rendered_short, name, media_type):
    status, headers, body = request(served.page_url, file_path(name))
    assert (status, headers["content-type"]) == (200, media_type)
    if (rendered_short.folder / name).exists():
        assert body == (rendered_short.folder / name).read_bytes()


def test_the_page_its_script_and_the_listing(served):
    status, headers, body = request(served.page_url)
    assert (status, headers["content-type"]) == (200, "text/html; charset=utf-8")
    assert b'src="app.js"' in body
    for name, media_type in (("app.js", "text/javascript"), ("style.css", "text/css")):
        status, headers, _ = request(served.page_url, name)
        assert (status, headers["content-type"]) == (200, f"{media_type}; charset=utf-8")
    status, _, body = request(served.page_url, "sessions.json")
    assert status == 200
    assert b'"title":"Short Test Session"' in body


def test_twenty_concurrent_range_requests(served, rendered_short):
    data = (rendered_short.folder / FULL).read_bytes()
    ranges = [(i * 20_011 % (len(data) - 70_000), 65_536 + i) for i in range(20)]

    def fetch(span: tuple[int, int]) -> bool:
        start, length = span
        header = {"Range": f"bytes={start}-{start + length - 1}"}
        status, _, body = request(served.page_url, file_path(), headers=header)
        return status == 206 and body == data[start : start + length]

    with ThreadPoolExecutor(max_workers=20) as pool:
        assert all(pool.map(fetch, ranges))


BAD_PATHS = [
    "short/../short/cover.png",
    "short/%2e%2e/short/cover.png",
    "..%2f..%2fetc%2fpasswd",
    "short/..%2fshort%2fcover.png",
    "%2fetc%2fpasswd",
    "/etc/passwd",
    TOKEN_FILE,
    f"short/{TOKEN_FILE}",
    "short/",
    "short",
    "short/.",
    ".",
    "nosuch/cover.png",
    "short/nosuch.mp3",
    "short/not-ours.txt",
    "short/outside.mp3",
    "short/\x00.mp3".replace("\x00", "%00"),
]


@pytest.fixture(scope="module")
def tampered(rendered_short, tmp_path_factory):
    """A copy of the rendered folder with things a server must not hand out beside the
    session: a stray file, symbolic links out of the folder, the token file."""
    root = tmp_path_factory.mktemp("tampered") / "out"
    shutil.copytree(rendered_short.folder.parent, root)
    secret = root.parent / "secret.txt"
    secret.write_text("outside the served folder")
    (root / "short" / "not-ours.txt").write_text("not written by a render")
    (root / "short" / "outside.mp3").symlink_to(secret)
    (root / "linked").symlink_to(root / "short", target_is_directory=True)
    server = Served(root)
    yield server, root
    server.stop()


@pytest.mark.parametrize("path", BAD_PATHS)
def test_bad_paths_get_404_and_learn_nothing(tampered, path):
    server, _ = tampered
    status, _, body = request(server.page_url, path)
    assert (status, body) == (404, b"Not Found")


def test_a_symlinked_session_folder_is_not_served(tampered):
    server, _ = tampered
    status, _, _ = request(server.page_url, "linked/cover.png")
    assert status == 404
    assert request(server.page_url, "short/cover.png")[0] == 200


def test_no_token_no_answer(tampered):
    server, root = tampered
    token = (root / TOKEN_FILE).read_text().strip()
    assert token in server.page_url
    origin = server.page_url.removesuffix(f"{token}/")
    for path in ("", "feed.xml", "sessions.json", "short/cover.png", "app.js"):
        assert request(origin, path)[:3:2] == (404, b"Not Found")
    wrong = origin + token[::-1] + "/"
    assert request(wrong, "feed.xml")[0] == 404


def test_nothing_but_reading(tampered):
    server, root = tampered
    before = {p: p.read_bytes() for p in (root / "short").iterdir() if not p.is_symlink()}
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        for path in (file_path("cover.png"), "feed.xml", "short/uploaded.mp3"):
            status, _, _ = request(server.page_url, path, method=method)
            assert status == 405 or status == 404, (method, path, status)
    after = {p: p.read_bytes() for p in (root / "short").iterdir() if not p.is_symlink()}
    assert after == before


def test_the_token_is_kept_across_restarts_and_no_token_gives_plain_urls(rendered_short, tmp_path):
    root = tmp_path / "out"
    shutil.copytree(rendered_short.folder.parent, root)
    first = Served(root)
    assert first.stop() == 0
    second = Served(root)
    try:
        assert urlsplit(first.page_url).path == urlsplit(second.page_url).path
        assert len(urlsplit(second.page_url).path.strip("/")) >= 16
        assert request(second.page_url, file_path("cover.png"))[0] == 200
    finally:
        second.stop()
    plain = Served(root, "--no-token")
    try:
        assert urlsplit(plain.page_url).path == "/"
        assert urlsplit(plain.feed_url).path == "/feed.xml"
        assert request(plain.page_url, file_path("cover.png"))[0] == 200
    finally:
        plain.stop()


def test_a_re_render_shows_without_a_restart(rendered_short, tmp_path):
    root = tmp_path / "out"
    shutil.copytree(rendered_short.folder.parent, root)
    routine = tmp_path / "short.yaml"
    routine.write_text(SHORT_ROUTINE, encoding="utf-8")
    server = Served(root)
    try:
        before = request(server.page_url, "feed.xml")[2].decode()
        etag = request(server.page_url, file_path(), method="HEAD")[1]["etag"]
        assert before.count("<item>") == 1
        assert "<itunes:duration>47</itunes:duration>" in before
        run = CliRunner().invoke(cli, ["render", str(routine), "-o", str(root), "-q"])
        assert run.exit_code == 0, run.output
        (tmp_path / "second.yaml").write_text(
            SHORT_ROUTINE.replace("Short Test Session", "Second Session"), encoding="utf-8"
        )
        run = CliRunner().invoke(
            cli,
            ["render", str(tmp_path / "second.yaml"), "-o", str(root), "-q", "--breath-tempo", "5"],
        )
        assert run.exit_code == 0, run.output
        after = request(server.page_url, "feed.xml")[2].decode()
        assert after.count("<item>") == 2
        assert "Second Session" in after
        listing = request(server.page_url, "sessions.json")[2].decode()
        assert "Second Session" in listing
        assert request(server.page_url, file_path(), method="HEAD")[1]["etag"] != etag
    finally:
        server.stop()


def test_ctrl_c_stops_cleanly_and_the_terminal_shows_urls_and_qr_codes(rendered_short):
    server = Served(rendered_short.folder.parent)
    assert server.stop() == 0
    printed = "\n".join(server.printed)
    assert printed.splitlines()[-1] == "Stopped."
    assert "Traceback" not in server.stderr
    assert server.stderr == "" or "Warning" not in server.stderr  # 127.0.0.1: no warning
    assert printed.startswith("Serving 1 session from ")
    for url in (server.page_url, server.feed_url):
        qr = segno.make(url, error="m")
        out = _terminal(qr)
        assert out in printed


def _terminal(qr) -> str:  # type: ignore[no-untyped-def]
    import io

    text = io.StringIO()
    qr.terminal(out=text, compact=True)
    return text.getvalue().rstrip("\n")


def test_every_interface_gets_a_one_line_warning(rendered_short, monkeypatch):
    # The default host, 0.0.0.0; the test itself binds only the loopback address.
    real_bind = server.bind
    asked = []

    def loopback_only(host: str, port: int):  # type: ignore[no-untyped-def]
        asked.append((host, port))
        return real_bind("127.0.0.1", 0)

    def interrupted(app, sock):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    monkeypatch.setattr(server, "bind", loopback_only)
    monkeypatch.setattr(server, "serve_forever", interrupted)
    run = CliRunner().invoke(cli, ["serve", str(rendered_short.folder.parent)])
    assert run.exit_code == 0, run.output
    assert asked == [("0.0.0.0", 8080)]
    warnings = [w for w in run.output.splitlines() if w.startswith("Warning:")]
    assert warnings == [
        "Warning: listening on every network interface; anyone on this network with the link "
        "can listen (--host 127.0.0.1 keeps it on this machine)."
    ]
    assert run.output.splitlines()[-1] == "Stopped."
    # The URLs name this machine's LAN address, not 0.0.0.0, which a phone cannot open.
    lan = server.lan_address() or "127.0.0.1"
    assert f"Page: http://{lan}:" in run.output
    assert "0.0.0.0" not in run.output


def test_serving_a_missing_folder_or_a_taken_port(tmp_path, served):
    run = CliRunner().invoke(cli, ["serve", str(tmp_path / "nosuch")])
    assert run.exit_code == 1
    assert run.output.strip().splitlines()[-1].startswith(f"Error: {tmp_path / 'nosuch'}: no such")
    port = urlsplit(served.page_url).port
    run = CliRunner().invoke(
        cli, ["serve", str(tmp_path), "--host", "127.0.0.1", "--port", str(port)]
    )
    assert run.exit_code == 1
    assert run.output.strip().splitlines()[-1] == (
        f"Error: --port {port}: already in use by another program; choose another with --port N"
    )


def test_the_app_finds_only_rendered_sessions(rendered_short, tmp_path):
    root = tmp_path / "out"
    shutil.copytree(rendered_short.folder.parent, root)
    (root / "empty").mkdir()
    (root / ".short.partial").mkdir()
    shutil.copytree(root / "short", root / "tracks-only")
    for path in (root / "tracks-only").glob("* (full).*"):
        path.unlink()
    assert [s.slug for s in find_sessions(root)] == ["short"]


def test_a_damaged_token_file_is_named_with_the_fix(tmp_path):
    (tmp_path / TOKEN_FILE).write_text("{slug}/x\n")
    run = CliRunner().invoke(cli, ["serve", str(tmp_path), "--host", "127.0.0.1", "--port", "0"])
    assert run.exit_code == 1
    assert run.output.strip().splitlines()[-1] == (
        f"Error: {tmp_path / TOKEN_FILE}: not a URL token (16 or more letters, digits, - or _); "
        "delete the file for a new one"
    )


def test_a_damaged_untagged_or_vanishing_session_is_no_server_error(rendered_short, tmp_path):
    root = tmp_path / "out"
    shutil.copytree(rendered_short.folder.parent, root)
    shutil.copytree(root / "short", root / "damaged")
    (root / "damaged" / FULL).write_bytes(b"ID3\x03\x00\x00garbage" * 10)
    shutil.copytree(root / "short", root / "untagged")
    mutagen.id3.delete(root / "untagged" / FULL)
    server = Served(root)
    try:
        status, _, body = request(server.page_url, "feed.xml")
        assert status == 200
        items = ET.fromstring(body).findall("channel/item")
        # The damaged one is left out; the untagged one is named by its playlist.
        assert sorted(item.findtext("title") for item in items) == [
            "Short Test Session",
            "Short Test Session",
        ]
        assert sorted(len(item.findall("{*}chapters")) for item in items) == [0, 1]
        shutil.rmtree(root / "short")
        status, _, body = request(server.page_url, "feed.xml")
        assert (status, body.count(b"<item>")) == (200, 1)
        assert request(server.page_url, file_path())[0] == 404
    finally:
        server.stop()
    assert read_session(root / "short") is None  # gone between listing and reading


def test_a_session_folder_itself_is_refused_and_left_as_the_render_wrote_it(rendered_short):
    folder = rendered_short.folder
    before = sorted(p.name for p in folder.iterdir())
    run = CliRunner().invoke(cli, ["serve", str(folder), "--host", "127.0.0.1", "--port", "0"])
    assert run.exit_code == 1
    assert run.output.strip().splitlines()[-1] == (
        f"Error: {folder}: is one session's folder; serve the folder it is in: audioguide serve "
        f"{folder.resolve().parent}"
    )
    assert sorted(p.name for p in folder.iterdir()) == before


def test_render_again_after_serving_and_a_static_feed(rendered_short, tmp_path):
    """Neither serve nor --feed-url leaves anything in a session folder that would make the
    next render refuse it as changed."""
    routine = tmp_path / "short.yaml"
    routine.write_text(SHORT_ROUTINE, encoding="utf-8")
    out = tmp_path / "out"
    args = ["render", str(routine), "-o", str(out), "-q", "--feed-url", "https://example.org/"]
    assert CliRunner().invoke(cli, args).exit_code == 0
    Served(out).stop()
    run = CliRunner().invoke(cli, args)
    assert run.exit_code == 0, run.output
    assert (out / "feed.xml").exists() and (out / TOKEN_FILE).exists()
