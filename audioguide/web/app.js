// The player page: lists the sessions (sessions.json), plays one with chapters, shows the
// line being spoken from its WebVTT transcript, and hands title, artwork and controls to the
// lock screen through the Media Session API. Plain JavaScript, no build step.
"use strict";

const audio = document.getElementById("audio");
const line = document.getElementById("line");
const chapterList = document.getElementById("chapters");
let current = null;

function clock(seconds) {
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const pad = (n) => String(n).padStart(2, "0");
  return h ? `${h}:${pad(m)}:${pad(s % 60)}` : `${m}:${pad(s % 60)}`;
}

function chapterAt(time) {
  if (!current) return -1;
  let index = -1;
  current.chapters.forEach((c, i) => { if (time + 0.001 >= c.start_s) index = i; });
  return index;
}

function seekTo(seconds) {
  audio.currentTime = Math.max(0, Math.min(seconds, audio.duration || seconds));
}

function showChapter() {
  const index = chapterAt(audio.currentTime);
  chapterList.querySelectorAll("button").forEach((b, i) => b.classList.toggle("current", i === index));
  document.getElementById("now-chapter").textContent =
    index >= 0 ? current.chapters[index].title : clock(current.duration_s);
}

function showLine(track) {
  const cues = track.activeCues;
  if (cues && cues.length) line.textContent = cues[cues.length - 1].text;
}

function mediaSession(session) {
  if (!("mediaSession" in navigator)) return;
  const artwork = session.cover
    ? [{ src: new URL(session.cover, location.href).href, type: "image/png" }]
    : [];
  navigator.mediaSession.metadata = new MediaMetadata({
    title: session.title, artist: session.artist, album: "Guided practice", artwork,
  });
  const jump = (step) => () => {
    const index = chapterAt(audio.currentTime);
    const next = current.chapters[index + step];
    if (next) seekTo(next.start_s);
    else if (step < 0) seekTo(0);
  };
  const handlers = {
    play: () => audio.play(),
    pause: () => audio.pause(),
    seekbackward: (d) => seekTo(audio.currentTime - (d.seekOffset || 15)),
    seekforward: (d) => seekTo(audio.currentTime + (d.seekOffset || 15)),
    seekto: (d) => seekTo(d.seekTime),
    previoustrack: jump(-1),
    nexttrack: jump(1),
  };
  for (const [action, handler] of Object.entries(handlers)) {
    try { navigator.mediaSession.setActionHandler(action, handler); } catch (e) { /* unsupported */ }
  }
}

function positionState() {
  if (!("mediaSession" in navigator) || !audio.duration || !isFinite(audio.duration)) return;
  try {
    navigator.mediaSession.setPositionState({
      duration: audio.duration, playbackRate: audio.playbackRate, position: audio.currentTime,
    });
  } catch (e) { /* unsupported */ }
}

function play(session, button) {
  current = session;
  document.querySelectorAll(".session").forEach((b) => b.classList.remove("playing"));
  button.classList.add("playing");
  document.getElementById("player").hidden = false;
  document.getElementById("now-title").textContent = session.title;
  const cover = document.getElementById("now-cover");
  if (session.cover) cover.src = session.cover; else cover.removeAttribute("src");
  line.textContent = "";
  audio.querySelectorAll("track").forEach((t) => t.remove());
  audio.src = session.audio;
  if (session.vtt) {
    const track = document.createElement("track");
    track.kind = "captions";
    track.srclang = "en";
    track.label = "Transcript";
    track.src = session.vtt;
    track.default = true;
    audio.appendChild(track);
    track.track.mode = "hidden"; // read by this page, not drawn over anything
    track.track.addEventListener("cuechange", () => showLine(track.track));
  }
  chapterList.replaceChildren(...session.chapters.map((c) => {
    const item = document.createElement("li");
    const b = document.createElement("button");
    b.type = "button";
    b.innerHTML = "<span></span><span class=\"time\"></span>";
    b.firstChild.textContent = c.title;
    b.lastChild.textContent = clock(c.start_s);
    b.addEventListener("click", () => { seekTo(c.start_s); if (audio.paused) audio.play(); });
    item.appendChild(b);
    return item;
  }));
  mediaSession(session);
  showChapter();
  audio.play().catch(() => { /* the player's own play button is there */ });
}

audio.addEventListener("timeupdate", showChapter);
audio.addEventListener("loadedmetadata", positionState);
audio.addEventListener("seeked", positionState);
audio.addEventListener("play", positionState);

async function load() {
  const response = await fetch("sessions.json", { cache: "no-cache" });
  const sessions = await response.json();
  const list = document.getElementById("sessions");
  document.getElementById("empty").hidden = sessions.length > 0;
  list.replaceChildren(...sessions.map((session) => {
    const item = document.createElement("li");
    const b = document.createElement("button");
    b.type = "button";
    b.className = "session";
    const img = document.createElement("img");
    img.alt = "";
    if (session.cover) img.src = session.cover;
    const text = document.createElement("div");
    const title = document.createElement("strong");
    title.textContent = session.title;
    const detail = document.createElement("span");
    const parts = session.chapters.length === 1 ? "1 part" : `${session.chapters.length} parts`;
    detail.textContent = `${clock(session.duration_s)} · ${parts}`;
    const sections = document.createElement("span");
    sections.textContent = session.chapters.map((c) => c.title).join(" · ");
    text.append(title, detail, sections);
    b.append(img, text);
    b.addEventListener("click", () => play(session, b));
    item.appendChild(b);
    return item;
  }));
}

load();
// A re-render shows when the page comes back into view, without reloading it.
document.addEventListener("visibilitychange", () => { if (!document.hidden && audio.paused) load(); });
