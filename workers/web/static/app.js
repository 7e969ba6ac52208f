// actionstream's page: camera views, the events timeline (live over server-sent events),
// worker and stream health, replay jobs. Plain JavaScript: no build step, nothing fetched
// from elsewhere. Every text from the server is set with textContent.
"use strict";

const VIEW_INTERVAL_MS = 250;     // a camera's next view is asked for this long after the last arrived
const VIEW_RETRY_MS = 1000;       // ... or after a failed one
const POLL_MS = 2000;             // cameras and health
const REPLAYS_MS = 5000;
const FETCH_TIMEOUT_MS = 5000;    // an answer this late counts as none
const FRESH_S = 5;                // a camera whose newest frame is younger is "live"
const SNAPSHOT_TRIES = 20;        // a snapshot the history has not written yet is looked for again
const SNAPSHOT_RETRY_MS = 1500;
const MAX_EVENTS = 200;
const ALERT_LABELS = new Set(["falling", "fallen"]);

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

function loggedOut(resp) {  // the session ended (logout elsewhere, a new password): log in again
  if (resp.status === 401) window.location.assign("/login");
  return resp.status === 401;
}

async function getJSON(url) {
  const resp = await fetch(url, { cache: "no-store", signal: AbortSignal.timeout(FETCH_TIMEOUT_MS) });
  loggedOut(resp);
  if (!resp.ok) throw new Error(`${url}: HTTP ${resp.status}`);
  return resp.json();
}

function ago(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 1) return "now";
  if (seconds < 120) return `${Math.round(seconds)} s ago`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min ago`;
  return `${Math.round(seconds / 3600)} h ago`;
}

function clockTime(epochSeconds) {
  return new Date(epochSeconds * 1000).toLocaleTimeString([], { hour12: false });
}

// ------------------------------------------------------------------ cameras

// camera id -> {root, img, waiting, state, foot, url, objectUrl, timer, stopped, cam, drawn}:
// `cam` the camera's row of /api/cameras, `drawn` what the view on screen has drawn on it
// (its X-View header: seq, people, labels), which the footer shows, so that the two agree
const tiles = new Map();

function makeTile(cam) {
  const img = el("img", { alt: `camera ${cam.id}`, "data-camera": cam.id });
  const waiting = el("span", { class: "waiting", text: "waiting for frames…" });
  const state = el("span", { class: "badge muted", text: "…" });
  const foot = el("div", { class: "foot" });
  const root = el("article", { class: "camera", "data-camera": cam.id },
    el("div", { class: "head" }, el("b", { text: cam.id }), state),
    el("div", { class: "frame" }, img, waiting), foot);
  const tile = { root, img, waiting, state, foot, url: cam.view, objectUrl: null, timer: null, stopped: false,
                 cam, drawn: null };
  loadView(tile);
  return tile;
}

async function loadView(tile) {
  if (tile.stopped) return;
  let delay = VIEW_INTERVAL_MS;
  try {
    const resp = await fetch(`${tile.url}?t=${Date.now()}`,
                             { cache: "no-store", signal: AbortSignal.timeout(FETCH_TIMEOUT_MS) });
    if (loggedOut(resp)) return;
    if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
    const drawn = JSON.parse(resp.headers.get("X-View") || "null");
    const blob = await resp.blob();
    const next = URL.createObjectURL(blob);
    await new Promise((resolve, reject) => {
      tile.img.onload = resolve;
      tile.img.onerror = reject;
      tile.img.src = next;
    });
    if (tile.objectUrl) URL.revokeObjectURL(tile.objectUrl);
    tile.objectUrl = next;
    tile.waiting.hidden = true;
    tile.drawn = drawn;  // the footer now says what this picture shows
    renderFoot(tile);
  } catch (err) {
    delay = VIEW_RETRY_MS;
    if (!tile.objectUrl) tile.waiting.hidden = false;
  }
  if (!document.hidden) tile.timer = setTimeout(() => loadView(tile), delay);
  else tile.timer = setTimeout(() => loadView(tile), delay * 4);
}

function updateTile(tile, cam) {
  tile.cam = cam;
  const fresh = cam.age_s !== null && cam.age_s < FRESH_S;
  tile.state.className = `badge ${cam.seq === null ? "muted" : fresh ? "ok" : "warn"}`;
  tile.state.textContent = cam.seq === null ? "no frame" : fresh ? "live" : `last frame ${ago(cam.age_s)}`;
  renderFoot(tile);
}

// No answer about the cameras (server or Redis unreachable): no badge may go on saying
// "live" about a camera nobody can tell about now.
function camerasUnknown() {
  for (const tile of tiles.values()) {
    tile.state.className = "badge muted";
    tile.state.textContent = "state unknown";
    tile.state.title = "the server or Redis does not answer: the last frame shown may be old";
  }
}

// The footer: frame, people and each track's label as drawn on the view shown (its X-View),
// or, before any view arrived, as /api/cameras has them; the camera's mode.
function renderFoot(tile) {
  const cam = tile.cam || {};
  const shown = tile.drawn || cam;
  const labels = Object.entries(shown.labels || {});
  tile.root.classList.toggle("alerting", labels.some(([, v]) => ALERT_LABELS.has(v.label)));
  const parts = [];
  if (shown.seq !== null && shown.seq !== undefined) parts.push(el("span", { text: `frame ${shown.seq}` }));
  const people = shown.people || 0;
  parts.push(el("span", { text: `${people} ${people === 1 ? "person" : "people"}` }));
  for (const [track, v] of labels) {
    parts.push(el("span", { class: `label${ALERT_LABELS.has(v.label) ? " alert" : ""}`, "data-track": track,
                            text: v.text || `#${track} ${v.label} ${v.score.toFixed(2)}` }));
  }
  if (cam.mode) parts.push(el("span", { text: cam.mode }));
  tile.foot.replaceChildren(...parts);
}

async function refreshCameras() {
  try {
    const { cameras } = await getJSON("/api/cameras");
    const seen = new Set();
    for (const cam of cameras) {
      seen.add(cam.id);
      let tile = tiles.get(cam.id);
      if (!tile) {
        tile = makeTile(cam);
        tiles.set(cam.id, tile);
        $("grid").append(tile.root);
      }
      tile.state.title = "";
      updateTile(tile, cam);
    }
    for (const [id, tile] of tiles) {
      if (!seen.has(id)) {
        tile.stopped = true;
        clearTimeout(tile.timer);
        tile.root.remove();
        tiles.delete(id);
      }
    }
    $("no-cameras").hidden = cameras.length > 0;
  } catch (err) {
    console.warn(err);
    camerasUnknown();
  }
}

// ------------------------------------------------------------------ events

const shown = new Map();  // event id -> list item

function snapshotInto(thumb, ev, tries) {
  const url = ev.snapshot || `/snapshots/${encodeURIComponent(ev.id)}.jpg`;
  const img = el("img", { alt: `snapshot of event ${ev.id}`, "data-event": ev.id });
  img.onload = () => thumb.replaceChildren(el("a", { href: url, target: "_blank", title: "open the snapshot" }, img));
  img.onerror = () => {
    if (tries > 1) setTimeout(() => snapshotInto(thumb, ev, tries - 1), SNAPSHOT_RETRY_MS);
    else thumb.textContent = "no snapshot";
  };
  img.src = url;
}

function eventItem(ev, fresh) {
  const thumb = el("div", { class: "thumb", text: "snapshot…" });
  snapshotInto(thumb, ev, ev.snapshot ? 3 : SNAPSHOT_TRIES);
  const lbl = el("span", { class: `lbl${ALERT_LABELS.has(ev.label) ? "" : " other"}`, text: ev.label });
  const what = el("div", { class: "what" }, lbl, ` · ${ev.camera} · track #${ev.track_id}`);
  const detail = el("div", { class: "detail",
    text: `${clockTime(ev.emitted_at)} · score ${ev.score.toFixed(2)} · frames ${ev.frame_start}–${ev.frame_end}` });
  const model = el("div", { class: "detail", text: `model ${ev.model} · id ${ev.id}` });
  return el("li", { class: `event${fresh ? " fresh" : ""}`, "data-event": ev.id, "data-camera": ev.camera },
    thumb, el("div", {}, what, detail, model));
}

function addEvent(ev, fresh) {
  if (shown.has(ev.id)) return;
  const item = eventItem(ev, fresh);
  shown.set(ev.id, item);
  const list = $("events");
  // newest first by emission time
  let before = null;
  for (const child of list.children) {
    if (Number(child.dataset.emitted) < ev.emitted_at) { before = child; break; }
  }
  item.dataset.emitted = String(ev.emitted_at);
  list.insertBefore(item, before);
  while (list.children.length > MAX_EVENTS) {
    const last = list.lastElementChild;
    shown.delete(last.dataset.event);
    last.remove();
  }
  $("no-events").hidden = true;
  $("event-count").textContent = `(${list.children.length})`;
}

function followEvents() {
  const badge = $("live-badge");
  const source = new EventSource("/api/events/live");
  source.addEventListener("ready", async () => {
    badge.className = "badge ok";
    badge.textContent = "events: live";
    try {  // what happened before the live feed started (or while it was away)
      const { events } = await getJSON("/api/events?limit=50");
      for (const ev of events.reverse()) addEvent(ev, false);
    } catch (err) {
      console.warn(err);
    }
  });
  source.addEventListener("event", (msg) => addEvent(JSON.parse(msg.data), true));
  source.onerror = () => {
    badge.className = "badge warn";
    badge.textContent = "events: reconnecting";
  };
}

// ------------------------------------------------------------------ health, replays

function cell(text, cls) {
  return el("td", cls ? { class: cls, text } : { text });
}

function lagClass(lag) {
  if (lag === null || lag === undefined) return "warn";
  return lag > 100 ? "bad" : lag > 10 ? "warn" : "ok";
}

async function refreshHealth() {
  const badge = $("health-badge");
  try {
    const h = await getJSON("/api/health");
    const rows = h.workers.map((w) => el("tr", {},
      cell(w.worker || [w.stage, w.camera].filter(Boolean).join(" ")), cell(w.stage || "–"), cell(w.state || "–"), cell((w.cameras || []).join(", ") || "–"),
      cell(String(w.frames ?? w.skeletons ?? w.events ?? "–")),
      cell(ago(w.age_s), w.age_s > 5 ? "warn" : "ok")));
    $("workers").replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 6, class: "muted", text: "no worker is running" }))]));
    const streams = Object.entries(h.cameras).map(([cam, s]) => el("tr", {},
      cell(cam), cell(String(s.frames_len)), cell(String(s.pose_lag ?? "–"), lagClass(s.pose_lag)),
      cell(String(s.skeletons_len)), cell(String(s.action_lag ?? "–"), lagClass(s.action_lag)),
      cell([s.pose_owner, s.action_owner].filter(Boolean).join(", ") || "none",
           s.pose_owner && s.action_owner ? "" : "warn")));
    $("streams").replaceChildren(...streams);
    $("totals").textContent = `${h.events} events in the stream · ${h.dead_letters} dead letters`;
    const workers = h.workers.length;
    badge.className = `badge ${h.dead_letters ? "bad" : workers ? "ok" : "warn"}`;
    badge.textContent = `${workers} worker${workers === 1 ? "" : "s"} · ${h.dead_letters} dead letters`;
  } catch (err) {
    badge.className = "badge bad";
    badge.textContent = "server or Redis unreachable";
  }
}

let mayReplays = true;  // a viewer may not list replay jobs (403): not asked again

async function whoAmI() {
  try {
    const me = await getJSON("/api/me");
    mayReplays = me.role === "admin";
    if (me.auth) {
      $("user").textContent = `${me.user} (${me.role})`;
      $("logout").hidden = false;
    }
  } catch (err) {
    console.warn(err);
  }
}

async function refreshReplays() {
  if (!mayReplays) return;
  try {
    const { jobs } = await getJSON("/api/replays");
    $("replays-panel").hidden = jobs.length === 0;
    $("replays").replaceChildren(...jobs.map((j) => el("tr", { "data-job": j.id },
      cell(j.id), cell(j.replayed || j.camera || "–"), cell(j.source || "–"),
      cell(j.reason ? `${j.state}: ${j.reason}` : j.state || "–"),
      cell(j.progress === null || j.progress === undefined ? `${j.published ?? 0} items`
        : `${Math.round(100 * j.progress)} % (${j.published}/${j.total ?? j.published})`),
      cell(j.events === null || j.events === undefined ? "–" : String(j.events)))));
  } catch (err) {
    console.warn(err);
  }
}

function every(ms, fn) {
  fn();
  setInterval(fn, ms);
}

every(1000, () => { $("clock").textContent = new Date().toLocaleTimeString([], { hour12: false }); });
every(POLL_MS, refreshCameras);
every(POLL_MS, refreshHealth);
whoAmI().then(() => every(REPLAYS_MS, refreshReplays));
followEvents();
