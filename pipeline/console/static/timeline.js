/* Vigil console: a camera's timeline (recorded stretches, gaps, alert markers; click to play from
   that moment) and the boxes drawn over an alert's clip (docs/console.md, "Timeline").
   Loaded after app.js: uses its helpers (h, $, api, enc, fmtTime, setCleanup). */
"use strict";

const TL_WINDOW_S = 600; // a click plays a window of the recording this long ...
const TL_ALIGN_S = 300; // ... starting on this grid (few distinct cuts, cached by the server)
const TL_ZOOMS = [[86400, "24 h"], [21600, "6 h"], [3600, "1 h"], [900, "15 min"]];

const utcDay = (t) => new Date(t * 1000).toISOString().slice(0, 10);
const dayStart = (day) => Date.parse(`${day}T00:00:00Z`) / 1000;

function fmtClock(t) {
  const d = new Date(t * 1000);
  return d.toISOString().slice(11, 19) + " UTC";
}

/** Fetch the first byte of a served cut: its origin (X-Video-Origin), or why there is none. */
async function cutOrigin(url) {
  const resp = await fetch(url, { headers: { Range: "bytes=0-0" }, credentials: "same-origin" });
  if (resp.status === 401) {
    sessionLost();
    throw new Error("not logged in");
  }
  if (!resp.ok) {
    const data = await resp.json().catch(() => null);
    throw new Error(data && typeof data.detail === "string" ? data.detail : `HTTP ${resp.status}`);
  }
  const origin = Number(resp.headers.get("X-Video-Origin"));
  if (!isFinite(origin)) throw new Error("the server gave no origin for the video");
  return origin;
}

// ---------------------------------------------------------------------------------------------
// Timeline of one camera: #/timeline/<camera>

function renderTimeline(view, camId) {
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  let day = /^\d{4}-\d{2}-\d{2}$/.test(params.get("day") || "") ? params.get("day") : utcDay(Date.now() / 1000);
  let span = 86400;
  let viewFrom = dayStart(day);
  let data = null;
  let playing = null; // {from, to, origin} of the window in the video

  const dayInput = h("input", { type: "date", id: "tl-day", value: day, "aria-label": "day (UTC)" });
  const zoom = h("select", { id: "tl-zoom", "aria-label": "zoom" },
    TL_ZOOMS.map(([s, label]) => h("option", { value: String(s) }, label)));
  const prev = h("button", { type: "button", class: "btn btn-quiet", id: "tl-prev", title: "earlier" }, "‹");
  const next = h("button", { type: "button", class: "btn btn-quiet", id: "tl-next", title: "later" }, "›");
  const bar = h("div", { class: "tl-bar", id: "tl-bar", role: "slider", tabindex: "0",
    "aria-label": "recording of the day: click to play from that moment (keyboard: arrows move, Enter plays)" });
  const ticks = h("div", { class: "tl-ticks", id: "tl-ticks" });
  const summary = h("p", { class: "muted small", id: "tl-summary" });
  const msg = h("p", { class: "muted", id: "tl-msg" }, "Click the bar, or an alert marker, to play.");
  const video = h("video", { id: "tl-video", class: "tl-video", controls: true, playsinline: true, muted: true, preload: "auto" });
  const now = h("p", { class: "mono small", id: "tl-now" });
  const alertList = h("ul", { class: "tl-alerts", id: "tl-alerts" });

  view.append(
    h("div", { class: "page-head" },
      h("a", { href: `#/camera/${enc(camId)}`, class: "back" }, `← ${camId}`),
      h("h1", {}, `Timeline · ${camId}`)),
    h("section", { class: "card tl-card" },
      h("div", { class: "row tl-controls" },
        h("label", { class: "inline" }, "Day (UTC)", dayInput),
        h("label", { class: "inline" }, "Zoom", zoom), prev, next),
      bar, ticks, summary),
    h("section", { class: "card tl-player" }, msg, video, now),
    h("section", { class: "card" }, h("h2", {}, "Alerts of the day"), alertList));

  const tickCount = () => (span === 900 ? 5 : 6); // ticks on whole minutes
  const pct = (t) => `${(((t - viewFrom) / span) * 100).toFixed(4)}%`;
  const visible = (a, b) => b > viewFrom && a < viewFrom + span;

  function band(cls, a, b, title) {
    const from = Math.max(a, viewFrom);
    const to = Math.min(b, viewFrom + span);
    const el = h("div", { class: cls, title });
    el.style.left = pct(from);
    el.style.width = `${Math.max(((to - from) / span) * 100, 0.15)}%`;
    return el;
  }

  function paint() {
    const kids = [];
    if (data) {
      for (const r of data.recorded) if (visible(r.start, r.end)) kids.push(band("tl-rec", r.start, r.end, `recorded ${fmtClock(r.start)} – ${fmtClock(r.end)}`));
      for (const g of data.gaps) if (visible(g.start, g.end)) kids.push(band("tl-gap", g.start, g.end, `not recorded ${fmtClock(g.start)} – ${fmtClock(g.end)}`));
      for (const a of data.alerts) {
        if (!visible(a.started_at, a.started_at)) continue;
        const m = h("button", { type: "button", class: `tl-alert sev-${a.severity}`, dataset: { alert: a.id, at: String(a.started_at) },
          title: `${a.rule_id} · ${a.label || ""} · ${fmtClock(a.started_at)}`, "aria-label": `alert ${a.rule_id} at ${fmtClock(a.started_at)}` });
        m.style.left = pct(a.started_at);
        m.addEventListener("click", (ev) => {
          ev.stopPropagation();
          playAt(a.started_at, a);
        });
        kids.push(m);
      }
    }
    const cursor = h("div", { class: "tl-cursor", id: "tl-cursor", hidden: true });
    kids.push(cursor);
    bar.replaceChildren(...kids);
    const n = tickCount();
    ticks.replaceChildren(...Array.from({ length: n + 1 }, (_, i) => {
      const el = h("span", {}, fmtClock(viewFrom + (i * span) / n).slice(0, 5));
      el.style.left = `${(i / n) * 100}%`;
      return el;
    }));
    showCursor();
  }

  // the bar is a slider for the keyboard too: arrows move a moment along it, Enter plays it
  let keyAt = null;
  const barValue = () => {
    if (keyAt !== null) return keyAt;
    return playing && isFinite(video.currentTime) ? playing.origin + video.currentTime : viewFrom;
  };
  function ariaBar() {
    const v = Math.min(Math.max(barValue(), viewFrom), viewFrom + span);
    bar.setAttribute("aria-valuemin", String(Math.round(viewFrom)));
    bar.setAttribute("aria-valuemax", String(Math.round(viewFrom + span)));
    bar.setAttribute("aria-valuenow", String(Math.round(v)));
    bar.setAttribute("aria-valuetext", fmtClock(v));
  }
  bar.addEventListener("keydown", (ev) => {
    const v = barValue();
    const step = span / 48;
    const to = { ArrowLeft: v - step, ArrowDown: v - step, ArrowRight: v + step, ArrowUp: v + step,
      Home: viewFrom, End: viewFrom + span }[ev.key];
    if (to !== undefined) {
      ev.preventDefault();
      keyAt = Math.min(Math.max(to, viewFrom), viewFrom + span);
      ariaBar();
    } else if (ev.key === "Enter" || ev.key === " ") {
      ev.preventDefault();
      const t = barValue();
      keyAt = null;
      playAt(t);
    }
  });

  function showCursor() {
    ariaBar();
    const c = $("#tl-cursor", bar);
    if (!c || !playing || !isFinite(video.currentTime)) return;
    const t = playing.origin + video.currentTime;
    c.hidden = !visible(t, t);
    c.style.left = pct(t);
  }

  async function load() {
    const from = dayStart(day);
    try {
      data = await api("GET", `/api/cameras/${enc(camId)}/timeline?day=${day}`);
    } catch (e) {
      data = null;
      summary.textContent = `No timeline: ${e.message}`;
      paint();
      return;
    }
    if (dayStart(day) !== from) return; // another day was picked meanwhile
    const rec = data.recorded.reduce((s, r) => s + (r.end - r.start), 0);
    summary.textContent = `${(rec / 3600).toFixed(2)} h recorded in ${data.recorded.length} stretch(es), ` +
      `${data.gaps.length} gap(s), ${data.alerts.length} alert(s)${data.alerts_truncated ? " (more not shown)" : ""}.`;
    alertList.replaceChildren(...data.alerts.map((a) => h("li", {},
      h("button", { type: "button", class: "linkish", dataset: { alert: a.id }, onclick: () => playAt(a.started_at, a) },
        `${fmtClock(a.started_at)} · ${a.rule_id} · ${a.label || "–"} · ${a.severity}`))));
    if (!data.alerts.length) alertList.replaceChildren(h("li", { class: "muted" }, "none"));
    paint();
  }

  /** Play the recording from wall time t (seconds since 1970). */
  async function playAt(t, alert) {
    const from = Math.floor(t / TL_ALIGN_S) * TL_ALIGN_S;
    const to = from + TL_WINDOW_S;
    const url = `/api/cameras/${enc(camId)}/recording.mp4?from=${from}&to=${to}`;
    msg.textContent = `Loading ${fmtClock(t)}…`;
    video.dataset.at = String(t);
    let origin;
    try {
      origin = await cutOrigin(url);
    } catch (e) {
      msg.textContent = `Nothing to play at ${fmtClock(t)}: ${e.message}`;
      video.removeAttribute("src");
      video.load();
      playing = null;
      return;
    }
    if (video.dataset.at !== String(t)) return; // clicked elsewhere meanwhile
    playing = { from, to, origin };
    video.dataset.origin = String(origin);
    msg.textContent = alert ? `Alert ${alert.rule_id} (${alert.label || "–"}) at ${fmtClock(t)}` : `From ${fmtClock(t)}`;
    const seek = () => {
      // plays once the frame of t is shown (autoplay may be refused: the controls remain)
      video.addEventListener("seeked", () => video.play().catch(() => {}), { once: true });
      video.currentTime = Math.max(0, t - origin);
    };
    if (video.getAttribute("src") === url && video.readyState >= 1) seek();
    else {
      video.addEventListener("loadedmetadata", seek, { once: true });
      video.src = url;
    }
  }

  video.addEventListener("timeupdate", () => {
    if (!playing) return;
    now.textContent = `showing ${fmtClock(playing.origin + video.currentTime)}`;
    showCursor();
  });
  video.addEventListener("ended", () => {
    if (playing && data && playing.to < dayStart(day) + 86400) playAt(playing.to);
  });
  bar.addEventListener("click", (ev) => {
    const r = bar.getBoundingClientRect();
    if (r.width <= 0) return;
    keyAt = null;
    playAt(viewFrom + ((ev.clientX - r.left) / r.width) * span);
  });
  dayInput.addEventListener("change", () => {
    if (!/^\d{4}-\d{2}-\d{2}$/.test(dayInput.value)) return;
    day = dayInput.value;
    viewFrom = dayStart(day);
    span = 86400;
    zoom.value = "86400";
    load();
  });
  zoom.addEventListener("change", () => {
    // around what plays, else the day's newest footage
    const last = data && data.recorded.length ? data.recorded[data.recorded.length - 1].end : null;
    const centre = playing && isFinite(video.currentTime) ? playing.origin + video.currentTime
      : last !== null ? last : viewFrom + span / 2;
    span = Number(zoom.value);
    const d0 = dayStart(day);
    const step = span / tickCount(); // the ticks' labels fall on whole minutes
    viewFrom = Math.min(Math.max(Math.round((centre - span / 2) / step) * step, d0), d0 + 86400 - span);
    paint();
  });
  const shift = (dir) => () => {
    const d0 = dayStart(day);
    if (span >= 86400) {
      day = utcDay(d0 + dir * 86400 + 1);
      dayInput.value = day;
      viewFrom = dayStart(day);
      load();
      return;
    }
    viewFrom = Math.min(Math.max(viewFrom + (dir * span) / 2, d0), d0 + 86400 - span);
    paint();
  };
  prev.addEventListener("click", shift(-1));
  next.addEventListener("click", shift(1));

  const at = Number(params.get("at")); // #/timeline/<camera>?day=...&at=T: play T
  load().then(() => {
    if (!params.get("at") || !isFinite(at) || utcDay(at) !== day) return;
    zoom.value = "900";
    span = 900;
    viewFrom = Math.min(Math.max(Math.round((at - span / 2) / 180) * 180, dayStart(day)), dayStart(day) + 86400 - span);
    paint();
    playAt(at);
  });
  const refresh = setInterval(() => {
    if (dayStart(day) + 86400 > Date.now() / 1000) load(); // today: new footage and alerts
  }, 30000);
  setCleanup(() => {
    clearInterval(refresh);
    video.pause();
    video.removeAttribute("src");
    video.load();
  });
}

// ---------------------------------------------------------------------------------------------
// Boxes over an alert's clip: GET /api/alerts/{id}/detections, drawn in step with the video

const BOX_HOLD_S = 0.5; // a frame's boxes stay until the next frame, at most this long

function clipBoxes(video, box, alertId) {
  const canvas = h("canvas", { class: "clip-overlay", id: "detail-boxes", "aria-hidden": "true" });
  const note = h("p", { class: "muted small", id: "detail-boxes-note" });
  box.classList.add("clip-stage");
  box.append(canvas, note);
  let frames = [];
  let origin = null;

  /** The boxes of the newest frame shown at or before time v of the video. */
  function boxesAt(v) {
    let lo = 0;
    let hi = frames.length - 1;
    let found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (frames[mid].t <= v + 0.02) {
        found = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    if (found < 0 || v - frames[found].t > BOX_HOLD_S) return [];
    return frames[found].boxes;
  }

  function draw(v) {
    const w = video.clientWidth;
    const hgt = video.clientHeight;
    if (canvas.width !== w || canvas.height !== hgt) {
      canvas.width = w;
      canvas.height = hgt;
    }
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, w, hgt);
    const vw = video.videoWidth;
    const vh = video.videoHeight;
    if (!vw || !vh || !frames.length) return;
    // the picture inside the element (object-fit: contain)
    const scale = Math.min(w / vw, hgt / vh);
    const pw = vw * scale;
    const ph = vh * scale;
    const ox = (w - pw) / 2;
    const oy = (hgt - ph) / 2;
    const shown = boxesAt(v);
    canvas.dataset.boxes = JSON.stringify(shown.map((b) => b.box));
    canvas.dataset.t = String(v);
    ctx.lineWidth = 2;
    ctx.font = "12px system-ui, sans-serif";
    for (const b of shown) {
      const [x1, y1, x2, y2] = b.box;
      ctx.strokeStyle = "#f97316";
      ctx.strokeRect(ox + x1 * pw, oy + y1 * ph, (x2 - x1) * pw, (y2 - y1) * ph);
      const text = `${b.label}${b.track_id != null ? ` #${b.track_id}` : ""}${b.confidence != null ? ` ${b.confidence.toFixed(2)}` : ""}`;
      ctx.fillStyle = "#f97316";
      const tw = ctx.measureText(text).width + 6;
      ctx.fillRect(ox + x1 * pw, Math.max(0, oy + y1 * ph - 16), tw, 16);
      ctx.fillStyle = "#fff";
      ctx.fillText(text, ox + x1 * pw + 3, Math.max(12, oy + y1 * ph - 4));
    }
  }

  const useFrameCallback = "requestVideoFrameCallback" in HTMLVideoElement.prototype;
  function onFrame(_now, meta) {
    if (!box.isConnected) return;
    draw(meta.mediaTime);
    video.requestVideoFrameCallback(onFrame);
  }
  if (useFrameCallback) video.requestVideoFrameCallback(onFrame);
  // paused seeks and resizes: no new frame is presented to the callback in some cases
  for (const ev of ["timeupdate", "seeked", "loadeddata", "resize"]) video.addEventListener(ev, () => draw(video.currentTime));
  new ResizeObserver(() => draw(video.currentTime)).observe(video); // the page's layout changed

  // fetch, not api(): a 404 here (no clip) must not clear the 503 banner of another call
  fetch(`/api/alerts/${enc(alertId)}/detections`, { credentials: "same-origin", headers: { Accept: "application/json" } }).then(async (resp) => {
    const res = await resp.json().catch(() => null);
    if (!resp.ok) {
      const e = new Error(res && typeof res.detail === "string" ? res.detail : `HTTP ${resp.status}`);
      e.status = resp.status;
      throw e;
    }
    if (!box.isConnected) return;
    frames = Array.isArray(res.frames) ? res.frames : [];
    origin = res.origin;
    canvas.dataset.origin = String(origin);
    canvas.dataset.frames = String(frames.length);
    note.replaceChildren(res.note || `boxes of ${frames.length} frames`, " · ",
      h("a", { href: `#/timeline/${enc(res.camera)}?day=${utcDay(res.alert_at)}&at=${res.alert_at}`, id: "detail-timeline" },
        "in the camera's timeline"));
    draw(video.currentTime);
  }).catch((e) => {
    note.textContent = e.status === 404 ? "" : `no boxes: ${e.message}`;
  });
}
