"""The podcast feed as AntennaPod and Apple Podcasts read it, and the transcripts beside it.

The served feed and the static one (``render --feed-url``) are parsed with feedparser, every
field the apps need is checked, and each URL in them is followed: the enclosure's length is
the file's size, the JSON chapters are the full file's ID3 chapters (read with mutagen), the
transcripts say what the LRC says, when it says it.
"""

from __future__ import annotations

import json
import urllib.request
import xml.etree.ElementTree as ET
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from mutagen.id3 import ID3, CTOCFlags
from mutagen.mp3 import MP3

from audioguide.cli import cli
from audioguide.export.sidecars import lrc_timestamp, srt_text, vtt_text
from audioguide.export.tags import Cue

feedparser = pytest.importorskip("feedparser", reason="the feed tests need: pip install '.[test]'")

FULL = "Short Test Session (full).mp3"
NS = {
    "itunes": "http://www.itunes.com/dtds/podcast-1.0.dtd",
    "podcast": "https://podcastindex.org/namespace/1.0",
}


def fetch(url: str) -> tuple[int, str, bytes]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status, response.headers["content-type"], response.read()


def id3_chapters(path: Path) -> list[tuple[str, float, float]]:
    id3 = ID3(path)
    toc = id3.getall("CTOC")[0]
    chaps = [id3[f"CHAP:{element_id}"] for element_id in toc.child_element_ids]
    return [(c.sub_frames["TIT2"].text[0], c.start_time / 1000, c.end_time / 1000) for c in chaps]


def check_feed(xml: bytes, folder: Path, get) -> None:  # type: ignore[no-untyped-def]
    """Every field the apps need, and every URL in it leading to the right thing."""
    parsed = feedparser.parse(xml)
    assert not parsed.bozo, parsed.bozo_exception
    assert parsed.version == "rss20"
    channel = parsed.feed
    for field in ("title", "link", "subtitle", "language", "author", "image", "tags"):
        assert channel.get(field), field
    # Apple's values are "true" and "false"; feedparser knows only the older yes/clean.
    assert ET.fromstring(xml).findtext("channel/itunes:explicit", namespaces=NS) == "false"
    assert channel.tags[0].term == "Health & Fitness"
    assert get(channel.image.href)[1] == "image/png"
    [entry] = parsed.entries
    mp3 = folder / FULL
    assert entry.title == "Short Test Session"
    assert entry.id == "audioguide:short"
    assert entry.guidislink is False
    published = parsedate_to_datetime(entry.published)
    assert abs(published.timestamp() - mp3.stat().st_mtime) < 1
    [enclosure] = entry.enclosures
    assert enclosure.type == "audio/mpeg"
    assert int(enclosure.length) == mp3.stat().st_size
    status, media_type, body = get(enclosure.href)
    assert (status, media_type, len(body)) == (200, "audio/mpeg", mp3.stat().st_size)
    assert body == mp3.read_bytes()
    assert int(entry.itunes_duration) == round(MP3(mp3).info.length)
    assert get(entry.image.href)[2] == (folder / "cover.png").read_bytes()

    # Podcasting 2.0: feedparser keeps one transcript only, so read the item as XML too.
    item = ET.fromstring(xml).find("channel/item")
    assert item is not None
    chapters = item.find("podcast:chapters", NS)
    assert chapters is not None
    assert chapters.get("type") == "application/json+chapters"
    status, _, body = get(chapters.get("url"))
    data = json.loads(body)
    assert data["version"] == "1.2.0"
    served = [(c["title"], c["startTime"], c["endTime"]) for c in data["chapters"]]
    expected = id3_chapters(mp3)
    assert [title for title, _, _ in served] == [title for title, _, _ in expected] != []
    for (_, start, end), (_, id3_start, id3_end) in zip(served, expected, strict=True):
        assert abs(start - id3_start) <= 0.001 and abs(end - id3_end) <= 0.001
    transcripts = {t.get("type"): t.get("url") for t in item.findall("podcast:transcript", NS)}
    assert set(transcripts) == {"text/vtt", "application/x-subrip"}
    for suffix, url in (
        (".vtt", transcripts["text/vtt"]),
        (".srt", transcripts["application/x-subrip"]),
    ):
        assert get(url)[2] == mp3.with_suffix(suffix).read_bytes()


def test_the_served_feed_has_every_field_and_every_url_leads_to_its_file(served, rendered_short):
    status, media_type, xml = fetch(served.feed_url)
    assert (status, media_type) == (200, "application/rss+xml; charset=utf-8")
    check_feed(xml, rendered_short.folder, fetch)
    _, served_type, _ = fetch(
        served.page_url + "short/Short%20Test%20Session%20%28full%29.chapters.json"
    )
    assert served_type == "application/json+chapters"
    # The guid stays as it is: a podcast app must not see a new episode on every fetch.
    assert feedparser.parse(fetch(served.feed_url)[2]).entries[0].id == "audioguide:short"


def test_render_feed_url_writes_a_static_feed_for_a_folder_hosted_elsewhere(tmp_path):
    routine = tmp_path / "short.yaml"
    from conftest import SHORT_ROUTINE

    routine.write_text(SHORT_ROUTINE, encoding="utf-8")
    base = "https://example.org/audio"
    run = CliRunner().invoke(
        cli, ["render", str(routine), "-o", str(tmp_path / "out"), "--feed-url", base]
    )
    assert run.exit_code == 0, run.output
    assert run.output.splitlines()[-1] == (
        f"Feed: {tmp_path / 'out' / 'feed.xml'} (for {base}/feed.xml)"
    )
    root = tmp_path / "out"

    def get(url: str) -> tuple[int, str, bytes]:
        # The host would serve the folder as it is: read the file the URL names.
        assert url.startswith(base + "/")
        path = root / urllib.request.url2pathname(url.removeprefix(base + "/"))
        media = {".mp3": "audio/mpeg", ".png": "image/png"}.get(path.suffix, "")
        return 200, media, path.read_bytes()

    check_feed((root / "feed.xml").read_bytes(), root / "short", get)


def test_the_full_file_chapters_suit_apple_podcasts_and_bookplayer(rendered_short):
    """Their chapter readers want one CTOC, flagged top-level and ordered, with a title."""
    id3 = ID3(rendered_short.folder / FULL)
    [toc] = id3.getall("CTOC")
    assert toc.flags & CTOCFlags.TOP_LEVEL
    assert toc.flags & CTOCFlags.ORDERED
    assert toc.sub_frames["TIT2"].text == ["Short Test Session (full)"]
    starts = [id3[f"CHAP:{e}"].start_time for e in toc.child_element_ids]
    assert starts == sorted(starts)
    assert len(starts) == len(rendered_short.timeline.tracks)


CUES = (Cue(0.0, "Welcome."), Cue(5.25, "Breathe  in\n slowly."), Cue(3725.5, "A < b & c."))


def test_vtt_by_hand():
    assert vtt_text(CUES, length_s=3730.0) == (
        "WEBVTT\n\n"
        "1\n00:00:00.000 --> 00:00:05.250\nWelcome.\n\n"
        "2\n00:00:05.250 --> 01:02:05.500\nBreathe in slowly.\n\n"
        "3\n01:02:05.500 --> 01:02:10.000\nA &lt; b &amp; c.\n"
    )


def test_srt_by_hand():
    assert srt_text(CUES, length_s=3730.0) == (
        "1\n00:00:00,000 --> 00:00:05,250\nWelcome.\n\n"
        "2\n00:00:05,250 --> 01:02:05,500\nBreathe in slowly.\n\n"
        "3\n01:02:05,500 --> 01:02:10,000\nA < b & c.\n"
    )
    assert srt_text((), length_s=10.0) == ""
    assert vtt_text((), length_s=10.0) == "WEBVTT\n"


def test_a_cue_past_the_end_lasts_no_less_than_nothing():
    assert "00:00:09.000 --> 00:00:09.000" in vtt_text((Cue(9.0, "Late."),), length_s=8.0)


def test_every_file_has_transcripts_that_agree_with_its_lrc(rendered_short):
    folder = rendered_short.folder
    audio = sorted(folder.glob("*.mp3"))
    assert len(audio) == len(rendered_short.timeline.tracks) + 1
    for path in audio:
        lrc = path.with_suffix(".lrc").read_text(encoding="utf-8").splitlines()
        lrc_lines = [(line[:10], line[10:]) for line in lrc if line[1].isdigit()]
        vtt = path.with_suffix(".vtt").read_text(encoding="utf-8")
        srt = path.with_suffix(".srt").read_text(encoding="utf-8")
        assert vtt.startswith("WEBVTT\n\n")
        vtt_blocks = vtt.split("\n\n")[1:]
        srt_blocks = srt.split("\n\n")
        assert len(vtt_blocks) == len(srt_blocks) == len(lrc_lines) > 0
        for (stamp, text), vtt_block, srt_block in zip(
            lrc_lines, vtt_blocks, srt_blocks, strict=True
        ):
            _, vtt_timing, vtt_cue = vtt_block.strip("\n").split("\n")
            _, srt_timing, srt_cue = srt_block.strip("\n").split("\n")
            assert vtt_cue == srt_cue == text
            assert lrc_timestamp(_seconds(vtt_timing.split(" --> ")[0])) == stamp
            assert srt_timing == vtt_timing.replace(".", ",")
        # The last line lasts to the end of the file.
        last_end = _seconds(vtt_blocks[-1].split("\n")[1].split(" --> ")[1])
        assert last_end == pytest.approx(MP3(path).info.length, abs=0.002)


def _seconds(stamp: str) -> float:
    hours, minutes, seconds = stamp.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def test_a_part_with_no_speech_gets_empty_transcripts(tmp_path):
    routine = tmp_path / "quiet.yaml"
    routine.write_text(
        "title: Quiet\nsections:\n  - title: Spoken\n    steps:\n      - say: One.\n"
        "  - title: Silent\n    steps:\n      - pause: 2\n",
        encoding="utf-8",
    )
    run = CliRunner().invoke(cli, ["render", str(routine), "-o", str(tmp_path / "out"), "-q"])
    assert run.exit_code == 0, run.output
    folder = tmp_path / "out" / "quiet"
    assert (folder / "02 - Silent.vtt").read_text(encoding="utf-8") == "WEBVTT\n"
    assert (folder / "02 - Silent.srt").read_text(encoding="utf-8") == ""
    assert "One." in (folder / "Quiet (full).vtt").read_text(encoding="utf-8")
