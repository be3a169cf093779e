/* Vigil console: a single page with hash routes, talking to the console's JSON API
   (docs/console.md). Plain JS, no framework, no build step. */
"use strict";

// ---------------------------------------------------------------------------------------------
// Session state (kept in memory only: the CSRF token is never written to storage or the DOM)

const session = { user: null, role: null, csrf: null };
const ROLE_RANK = { viewer: 0, operator: 1, admin: 2 };
const canOperate = () => (ROLE_RANK[session.role] ?? -1) >= ROLE_RANK.operator;
const isAdmin = () => session.role === "admin";

// ---------------------------------------------------------------------------------------------
// Small DOM helpers

/** h("div", {class: "x", onclick: fn}, child, "text", ...) -> element; text is never parsed as HTML. */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const $ = (sel, root = document) => root.querySelector(sel);
/** The given nodes without the null/false ones (for append and replaceChildren). */
const nodes = (...xs) => xs.flat().filter((x) => x !== null && x !== undefined && x !== false);
const enc = encodeURIComponent;

function fmtTime(ts) {
  if (ts === null || ts === undefined || ts === "") return "–";
  const d = new Date(Number(ts) * 1000);
  const today = new Date().toDateString() === d.toDateString();
  const time = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  return today ? time : `${d.toLocaleDateString()} ${time}`;
}

function fmtNum(v, digits = 1) {
  return typeof v === "number" && isFinite(v) ? v.toFixed(digits) : "–";
}

/** Only same-origin paths may become an <img> source (never another scheme or host). */
function safePath(url) {
  return typeof url === "string" && url.startsWith("/") && !url.startsWith("//") ? url : null;
}

// ---------------------------------------------------------------------------------------------
// API client: JSON in and out, CSRF header on state-changing calls, 503 banner, 401 -> login

class ApiError extends Error {
  constructor(status, detail) {
    super(typeof detail === "string" ? detail : `HTTP ${status}`);
    this.status = status;
    this.detail = detail;
  }
}

function showBanner(text) {
  const b = $("#banner");
  b.textContent = text;
  b.hidden = false;
}

function hideBanner() {
  $("#banner").hidden = true;
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && session.csrf) headers["X-CSRF-Token"] = session.csrf;
  let resp;
  try {
    resp = await fetch(path, {
      method,
      headers,
      credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    showBanner("The console server cannot be reached.");
    throw new ApiError(0, "network error");
  }
  let data = null;
  if (resp.status !== 204) {
    const text = await resp.text();
    try {
      data = text ? JSON.parse(text) : null;
    } catch (e) {
      data = text;
    }
  }
  if (resp.status === 503) {
    const detail = data && typeof data.detail === "string" ? data.detail : "service unavailable";
    showBanner(`Unavailable: ${detail}`);
  } else {
    hideBanner();
  }
  if (resp.status === 401 && path !== "/api/login") {
    sessionLost();
    throw new ApiError(401, "not logged in");
  }
  if (!resp.ok) throw new ApiError(resp.status, data && data.detail !== undefined ? data.detail : data);
  return data;
}

/** A 422 detail ([{loc, msg}]) as [{field, msg}], field being the last named part of loc. */
function fieldErrors(err) {
  if (!(err instanceof ApiError)) return [{ field: null, msg: String(err) }];
  if (!Array.isArray(err.detail)) return [{ field: null, msg: err.message }];
  return err.detail.map((e) => {
    const loc = (e.loc || []).filter((p) => p !== "body" && p !== "rule");
    return { field: loc.length ? loc.join(".") : null, msg: e.msg || JSON.stringify(e) };
  });
}

// ---------------------------------------------------------------------------------------------
// Router: each view returns a cleanup function (timers, streams) run when the route changes

let cleanup = null;

function setCleanup(fn) {
  cleanup = fn;
}

function route() {
  if (cleanup) {
    try {
      cleanup();
    } catch (e) {
      console.error(e);
    }
    cleanup = null;
  }
  const view = $("#view");
  view.replaceChildren();
  if (!session.user) {
    renderLogin(view);
    return;
  }
  const hash = location.hash.replace(/^#\/?/, "");
  const [page, ...rest] = hash.split("/");
  for (const a of document.querySelectorAll(".nav-links a")) {
    a.classList.toggle("active", a.dataset.page === page || ((page === "camera" || page === "timeline") && a.dataset.page === "cameras"));
  }
  const arg = rest.length ? safeDecode(rest.join("/").split("?")[0]) : null;
  if ((page === "camera" || page === "cameras") && arg) renderCamera(view, arg);
  else if (page === "timeline" && arg) renderTimeline(view, arg);
  else if (page === "alerts") renderAlerts(view, arg);
  else if (page === "models") renderModels(view);
  else if (page === "audit" && isAdmin()) renderAudit(view);
  else renderCameras(view);
}

/** A route's argument as text (a malformed %-escape stays as written instead of throwing). */
function safeDecode(s) {
  try {
    return decodeURIComponent(s);
  } catch (e) {
    return s;
  }
}

/** Where to go after login: the hash route the user opened (a notification's `#/alerts/<id>`),
 * kept while the login form shows; only ever a route of this page, never another address. */
function afterLoginRoute() {
  const hash = location.hash;
  return /^#\/[^/]/.test(hash) && hash !== "#/login" ? hash : "#/cameras";
}

function setSession(me) {
  session.user = me.user;
  session.role = me.role;
  session.csrf = me.csrf_token || null;
  $("#nav").hidden = false;
  $("#nav-user").textContent = me.user;
  const role = $("#nav-role");
  role.textContent = me.role;
  role.dataset.role = me.role;
  $("#nav-audit").hidden = me.role !== "admin";
}

function sessionLost() {
  const had = session.user !== null;
  session.user = session.role = session.csrf = null;
  if (had) dropCachedData(); // logged out or expired: only the shell stays cached
  $("#nav").hidden = true;
  if (had) route();
}

// ---------------------------------------------------------------------------------------------
// Login

function renderLogin(view) {
  const error = h("p", { id: "login-error", class: "form-error", role: "alert", hidden: true });
  const form = h(
    "form",
    { id: "login-form", class: "card login-card", autocomplete: "on" },
    h("h1", {}, h("span", { class: "brand-mark", "aria-hidden": "true" }), "Vigil console"),
    h("label", {}, "User name", h("input", { name: "username", autocomplete: "username", required: true, autofocus: true })),
    h("label", {}, "Password", h("input", { name: "password", type: "password", autocomplete: "current-password", required: true })),
    error,
    h("button", { type: "submit", class: "btn btn-primary", id: "login-btn" }, "Log in"),
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const username = form.elements.username.value.trim();
    const password = form.elements.password.value;
    form.elements.password.value = ""; // the password does not stay in the DOM
    error.hidden = true;
    try {
      const me = await api("POST", "/api/login", { username, password });
      setSession(me);
      // back to the route asked for before login (a deep link), else Cameras; replaceState
      // changes only the fragment of this page (no hashchange: route() below draws it once)
      history.replaceState(null, "", afterLoginRoute());
      route();
    } catch (e) {
      error.textContent =
        e.status === 401 ? "Wrong user name or password."
        : e.status === 429 ? "Too many attempts: wait a minute and try again."
        : `Login failed: ${e.message}`;
      error.hidden = false;
    }
  });
  view.append(h("div", { class: "login-wrap" }, form));
}

async function logout() {
  try {
    await api("POST", "/api/logout");
  } catch (e) {
    /* the session is dropped here either way */
  }
  sessionLost();
}

// ---------------------------------------------------------------------------------------------
// Cameras: a grid of cards with live thumbnails

const STATE_CLASS = {
  streaming: "ok",
  connecting: "warn",
  backoff: "warn",
  finished: "idle",
  stopped: "bad",
};

function renderCameras(view) {
  const grid = h("div", { id: "camera-grid", class: "camera-grid" });
  const empty = h("p", { class: "muted", id: "no-cameras", hidden: true }, "No cameras yet.");
  const header = h("div", { class: "page-head" }, h("h1", {}, "Cameras"));
  view.append(header);
  if (canOperate()) view.append(addCameraForm(() => refreshList()));
  view.append(empty, grid);

  const cards = new Map(); // camera id -> {card, img, ...}
  let stopped = false;

  async function refreshList() {
    let cams;
    try {
      cams = await api("GET", "/api/cameras");
    } catch (e) {
      return;
    }
    if (stopped) return;
    const seen = new Set();
    for (const cam of cams) {
      seen.add(cam.id);
      let c = cards.get(cam.id);
      if (!c) {
        c = cameraCard(cam, () => refreshList());
        cards.set(cam.id, c);
        grid.append(c.card);
      }
      updateCard(c, cam);
    }
    for (const [id, c] of cards) {
      if (!seen.has(id)) {
        c.card.remove();
        cards.delete(id);
      }
    }
    // keep the API's order (by id); moving a card does not reload its picture
    const order = cams.map((cam) => cam.id);
    const shown = [...grid.children].map((el) => el.dataset.camera);
    if (order.join("\n") !== shown.join("\n")) for (const id of order) grid.append(cards.get(id).card);
    empty.hidden = cards.size > 0;
  }

  // Thumbnails: a new frame about every second, only while the page is visible; one request
  // per card in flight at most
  function refreshThumbs() {
    if (document.hidden) return;
    const now = Date.now();
    for (const [id, c] of cards) {
      if (!c.hasFrame) continue; // no worker has a frame of it: no request answered 503
      if (c.loading && now - c.loading < 5000) continue; // a slow answer is given 5 s
      c.loading = now;
      c.img.src = `/api/cameras/${enc(id)}/latest.jpg?t=${Date.now()}`;
    }
  }

  refreshList().then(refreshThumbs);
  const listTimer = setInterval(refreshList, 3000);
  const thumbTimer = setInterval(refreshThumbs, 1000);
  document.addEventListener("visibilitychange", refreshThumbs);
  setCleanup(() => {
    stopped = true;
    clearInterval(listTimer);
    clearInterval(thumbTimer);
    document.removeEventListener("visibilitychange", refreshThumbs);
    for (const c of cards.values()) c.img.removeAttribute("src");
  });
}

function cameraCard(cam, onChange) {
  const img = h("img", { class: "thumb", alt: `Latest frame of ${cam.id}`, decoding: "async" });
  const placeholder = h("div", { class: "thumb-empty" }, "no frame yet");
  const badge = h("span", { class: "badge" });
  const stats = h("div", { class: "stats" });
  const url = h("div", { class: "cam-url mono" });
  const c = { img, badge, stats, url, loading: false, card: null };
  img.addEventListener("load", () => {
    c.loading = false;
    c.card.classList.add("has-frame");
  });
  img.addEventListener("error", () => {
    c.loading = false;
    c.card.classList.remove("has-frame");
  });
  const link = `#/camera/${enc(cam.id)}`;
  const actions = h("div", { class: "card-actions" }, h("a", { class: "btn btn-quiet", href: link }, "Open"));
  if (canOperate()) {
    actions.append(
      h("button", {
        type: "button",
        class: "btn btn-quiet btn-danger remove-camera",
        onclick: async () => {
          if (!confirm(`Remove camera ${cam.id}?`)) return;
          try {
            await api("DELETE", `/api/cameras/${enc(cam.id)}`);
          } catch (e) {
            alert(`Could not remove ${cam.id}: ${e.message}`);
          }
          onChange();
        },
      }, "Remove"),
    );
  }
  c.card = h(
    "article",
    { class: "camera-card", dataset: { camera: cam.id } },
    h("a", { class: "thumb-link", href: link }, img, placeholder),
    h("div", { class: "card-body" },
      h("div", { class: "card-title" }, h("a", { href: link, class: "cam-id" }, cam.id), badge),
      url, stats, actions),
  );
  return c;
}

function updateCard(c, cam) {
  const st = cam.status || null;
  const state = st ? st.state : "none";
  c.badge.textContent = st ? state : "offline";
  c.badge.className = `badge badge-${STATE_CLASS[state] || "idle"}`;
  c.badge.dataset.state = state;
  c.badge.title = st && st.last_error ? st.last_error : "";
  c.url.textContent = cam.url || "";
  c.card.classList.toggle("disabled", cam.enabled === false);
  const fps = st
    ? `offered ${fmtNum(st.offered_fps)} · processed ${fmtNum(st.processed_fps)} fps`
    : `${cam.fps ?? "–"} fps configured`;
  const age = st && typeof st.frame_age_s === "number" ? `age ${fmtNum(st.frame_age_s)} s` : "no frame";
  // thumbnails are asked for only once a worker reports a frame (an expected "no frame yet" is
  // then no failed request in the browser's console)
  c.hasFrame = age !== "no frame";
  if (!c.hasFrame) c.card.classList.remove("has-frame");
  c.stats.replaceChildren(
    h("span", { class: "fps", title: "frames per second the camera offers / the worker processes" }, fps),
    h("span", { class: "age", title: "how old the newest processed frame is" }, age),
  );
}

/** A button lined up with the inputs of an inline form (an empty caption above it). */
function buttonSlot(button) {
  return h("div", { class: "btn-slot" }, h("span", { "aria-hidden": "true" }, "\u00a0"), button);
}

function addCameraForm(onAdded) {
  const general = h("ul", { id: "camera-errors", class: "form-error-list" });
  const fieldErr = (name) => h("span", { class: "field-error", dataset: { field: name } });
  const form = h(
    "form",
    { id: "add-camera-form", class: "card inline-form", novalidate: true },
    h("h2", {}, "Add camera"),
    h("label", {}, "Id", h("input", { name: "id", placeholder: "lobby", required: true, autocomplete: "off" }), fieldErr("id")),
    h("label", { class: "grow" }, "URL", h("input", { name: "url", placeholder: "rtsp://host:8554/stream", required: true, autocomplete: "off" }), fieldErr("url")),
    h("label", { class: "narrow" }, "FPS", h("input", { name: "fps", type: "number", min: "0.1", step: "any", placeholder: "5" }), fieldErr("fps")),
    buttonSlot(h("button", { type: "submit", class: "btn btn-primary" }, "Add")),
    general,
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    for (const el of form.querySelectorAll(".field-error")) el.textContent = "";
    general.replaceChildren();
    const body = { id: form.elements.id.value.trim(), url: form.elements.url.value.trim() };
    const fps = form.elements.fps.value.trim();
    if (fps !== "") body.fps = Number(fps);
    try {
      await api("POST", "/api/cameras", body);
      form.reset();
      onAdded();
    } catch (e) {
      for (const { field, msg } of fieldErrors(e)) {
        const slot = field && form.querySelector(`.field-error[data-field="${field.split(".").pop()}"]`);
        if (slot) slot.textContent = msg;
        else general.append(h("li", {}, field ? `${field}: ${msg}` : msg));
      }
    }
  });
  return form;
}

// ---------------------------------------------------------------------------------------------
// One camera: live view, rule drawing, preview and save

const RULE_TYPES = {
  zone_intrusion: { shape: "polygon", key: "min_frames", label: "Min frames inside", def: 3, int: true },
  loitering: { shape: "polygon", key: "dwell_s", label: "Dwell (s)", def: 10 },
  crowding: { shape: "polygon", key: "min_count", label: "Max people before alert (min_count)", def: 3, int: true },
  line_crossing: { shape: "line", key: null },
  object_left: { shape: "polygon", key: "min_seconds", label: "Left for (s)", def: 30 },
};
// keys every rule type accepts: kept when an edited rule changes type
const COMMON_KEYS = ["id", "type", "enabled", "description", "cameras", "classes", "min_confidence",
  "severity", "cooldown_s", "cooldown_scope", "schedule"];
const COARSE_POINTER = window.matchMedia("(pointer: coarse)"); // a finger, not a mouse
const COLORS = ["#f97316", "#22c55e", "#a855f7", "#eab308", "#06b6d4", "#ec4899"];

function renderCamera(view, camId) {
  const live = h("img", { id: "live", alt: `Live view of ${camId}` });
  const canvas = h("canvas", { id: "draw" });
  const stage = h("div", { class: "stage", id: "stage" }, live, canvas,
    h("div", { class: "stage-empty", id: "live-empty" }, "waiting for the live view…"));
  const badge = h("span", { class: "badge" });
  const operate = canOperate();

  // -- the rule form
  const typeSel = h("select", { id: "rule-type", name: "type" },
    Object.keys(RULE_TYPES).map((t) => h("option", { value: t }, t)));
  const ruleId = h("input", { id: "rule-id", name: "id", placeholder: `${camId}-zone`, autocomplete: "off" });
  const classes = h("input", { id: "rule-classes", name: "classes", value: "person", placeholder: "person, car" });
  const severity = h("select", { id: "rule-severity", name: "severity" },
    ["info", "low", "medium", "high", "critical"].map((s) => h("option", { value: s, selected: s === "medium" }, s)));
  const threshold = h("input", { id: "rule-threshold", type: "number", min: "0", step: "any" });
  const thresholdLabel = h("span", {});
  const thresholdBox = h("label", { id: "rule-threshold-box" }, thresholdLabel, threshold);
  const direction = h("select", { id: "rule-direction", name: "direction" },
    ["both", "in", "out"].map((d) => h("option", { value: d }, d)));
  const directionBox = h("label", { id: "rule-direction-box" }, "Direction", direction);
  const hint = h("p", { class: "muted small", id: "draw-hint" });
  const errors = h("ul", { id: "rule-errors", class: "form-error-list" });
  const saved = h("p", { id: "rule-saved", class: "ok-text", hidden: true });
  const range = h("select", { id: "preview-range" },
    h("option", { value: "900" }, "last 15 min"),
    h("option", { value: "3600", selected: true }, "last 1 h"),
    h("option", { value: "21600" }, "last 6 h"));
  const previewBtn = h("button", { type: "button", id: "preview-btn", class: "btn" }, "Preview");
  const saveBtn = h("button", { type: "button", id: "save-btn", class: "btn btn-primary" }, "Save");
  const closeBtn = h("button", { type: "button", id: "close-btn", class: "btn btn-quiet" }, "Close");
  const clearBtn = h("button", { type: "button", id: "clear-btn", class: "btn btn-quiet" }, "Clear");
  const undoBtn = h("button", { type: "button", id: "undo-btn", class: "btn btn-quiet", disabled: true }, "Undo");
  const drawState = h("span", { id: "draw-state", class: "muted small", "aria-live": "polite" });
  const results = h("div", { id: "preview-results", class: "preview-results" });
  const ruleList = h("ul", { id: "rule-list", class: "rule-list" });

  const editor = h("section", { class: "card rule-editor", id: "rule-editor" },
    h("h2", {}, "Draw a rule"),
    h("div", { class: "form-grid" },
      h("label", {}, "Type", typeSel),
      h("label", {}, "Rule id", ruleId),
      h("label", {}, "Classes", classes),
      h("label", {}, "Severity", severity),
      thresholdBox, directionBox),
    hint,
    h("div", { class: "row" }, undoBtn, closeBtn, clearBtn, drawState),
    errors, saved,
    operate
      ? h("div", { class: "row" }, h("label", { class: "inline" }, "Preview on", range), previewBtn, saveBtn)
      : h("p", { class: "muted small" }, "Viewers cannot preview or save rules."),
    results);

  view.append(
    h("div", { class: "page-head" },
      h("a", { href: "#/cameras", class: "back" }, "← Cameras"),
      h("h1", {}, camId), badge,
      h("a", { href: `#/timeline/${enc(camId)}`, class: "btn btn-quiet", id: "timeline-link" }, "Timeline")),
    h("div", { class: "camera-layout" },
      h("div", { class: "stage-col" }, stage,
        h("section", { class: "card" }, h("h2", {}, "Rules on this camera"), ruleList)),
      editor),
  );

  // -- drawing state: normalised points; `closed` once the shape is complete
  const draw = { points: [], closed: false, hover: null, history: [] };
  let rules = [];
  let editing = null; // the stored rule being edited (its extra keys are kept)

  const spec = () => RULE_TYPES[typeSel.value];

  function syncTypeFields() {
    const s = spec();
    thresholdBox.hidden = !s.key;
    directionBox.hidden = s.shape !== "line";
    if (s.key) {
      thresholdLabel.textContent = s.label;
      threshold.name = s.key;
      threshold.dataset.key = s.key;
      threshold.step = s.int ? "1" : "any";
      if (threshold.value === "") threshold.value = s.def;
    }
    hint.textContent = s.shape === "line"
      ? "Tap or click two points on the picture to draw the line; drag a point to move it."
      : "Tap or click points around the zone; tap the first point, double-click or Close to finish "
        + "(no zone: the whole frame). Drag a point to move it.";
  }
  let shape = spec().shape;
  typeSel.addEventListener("change", () => {
    threshold.value = "";
    if (spec().shape !== shape) {
      clearDrawing(); // a zone is no line, and the reverse
      draw.history = [];
      undoBtn.disabled = true;
    }
    shape = spec().shape;
    syncTypeFields();
    paint();
  });
  syncTypeFields();

  function clearDrawing() {
    if (draw.points.length) remember(snapshot());
    draw.points = [];
    draw.closed = false;
    paint();
  }

  function closeShape() {
    if (spec().shape === "polygon" && draw.points.length >= 3 && !draw.closed) {
      remember(snapshot());
      draw.closed = true;
    }
    paint();
  }

  /** Back one step (a point placed, moved, the zone closed or cleared); with no step left, the
   * last point of the shape (a stored rule opened for editing) goes. */
  function undo() {
    const prev = draw.history.pop();
    if (prev) {
      draw.points = prev.points;
      draw.closed = prev.closed;
    } else if (draw.points.length) {
      draw.points.pop();
      draw.closed = false;
    }
    undoBtn.disabled = !draw.history.length && !draw.points.length;
    paint();
  }

  // -- canvas: same size as the picture; redraw on resize
  function fitCanvas() {
    const w = live.clientWidth;
    const ht = live.clientHeight;
    const hasFrame = live.naturalWidth > 0;
    $("#live-empty", stage).hidden = hasFrame;
    if (hasFrame) live.style.aspectRatio = `${live.naturalWidth} / ${live.naturalHeight}`;
    if (canvas.width !== w || canvas.height !== ht) {
      canvas.width = w;
      canvas.height = ht;
      canvas.style.width = `${w}px`;
      canvas.style.height = `${ht}px`;
      paint();
    }
  }
  const ro = new ResizeObserver(fitCanvas);
  ro.observe(live);
  const fitTimer = setInterval(fitCanvas, 500); // MJPEG frames do not always fire `load`

  function toNorm(ev) {
    const r = canvas.getBoundingClientRect();
    const x = Math.min(1, Math.max(0, (ev.clientX - r.left) / r.width));
    const y = Math.min(1, Math.max(0, (ev.clientY - r.top) / r.height));
    return [Math.round(x * 10000) / 10000, Math.round(y * 10000) / 10000];
  }

  // -- pointer events: a mouse, a pen and a finger take one path. A tap (press and release
  // without moving) places a point; pressing on a point and moving drags it; a second finger
  // (pinch-zoom) cancels whatever the first one started, and the browser's own gestures
  // (pointercancel) do too. style.css gives the canvas `touch-action: pinch-zoom`: one finger
  // draws instead of scrolling the page, two fingers still zoom it.
  const TAP_SLOP = 10; // CSS px a tap may wander before it is no tap
  const hitRadius = (ev) => (ev.pointerType === "mouse" ? 8 : 22); // CSS px around a point
  const pointers = new Set(); // the pointers down on the canvas
  let gesture = null; // {id, x, y, hit: index of the point pressed or -1, moved, before}

  function snapshot() {
    return { points: draw.points.map((p) => [...p]), closed: draw.closed };
  }
  function remember(state) {
    draw.history.push(state);
    if (draw.history.length > 100) draw.history.shift();
    undoBtn.disabled = false;
  }

  function hitPoint(ev) {
    const r = canvas.getBoundingClientRect();
    let best = -1;
    let bestD = hitRadius(ev);
    draw.points.forEach(([x, y], i) => {
      const d = Math.hypot(r.left + x * r.width - ev.clientX, r.top + y * r.height - ev.clientY);
      if (d <= bestD) {
        best = i;
        bestD = d;
      }
    });
    return best;
  }

  function cancelGesture() {
    if (gesture && gesture.moved && gesture.before) {
      draw.points = gesture.before.points; // a drag the browser or a 2nd finger took over
      draw.closed = gesture.before.closed;
    }
    gesture = null;
  }

  function placePoint(p) {
    const s = spec();
    remember(snapshot());
    if (s.shape === "line") {
      if (draw.closed || draw.points.length >= 2) draw.points = [];
      draw.points.push(p);
      draw.closed = draw.points.length === 2;
    } else {
      if (draw.closed) {
        draw.points = [];
        draw.closed = false;
      }
      draw.points.push(p);
    }
  }

  canvas.addEventListener("pointerdown", (ev) => {
    pointers.add(ev.pointerId);
    try {
      canvas.setPointerCapture(ev.pointerId); // its up and cancel come here wherever it ends
    } catch (e) {
      /* a pointer already gone */
    }
    if (!ev.isPrimary || pointers.size > 1) {
      cancelGesture(); // two fingers: a pinch, not a drawing
      paint();
      return;
    }
    if (ev.pointerType === "mouse" && ev.button !== 0) return;
    ev.preventDefault();
    gesture = { id: ev.pointerId, x: ev.clientX, y: ev.clientY, hit: hitPoint(ev), moved: false, before: null };
  });
  canvas.addEventListener("pointermove", (ev) => {
    if (gesture && ev.pointerId === gesture.id) {
      if (!gesture.moved && Math.hypot(ev.clientX - gesture.x, ev.clientY - gesture.y) < TAP_SLOP) return;
      if (gesture.hit < 0) {
        gesture.moved = true; // a swipe over an empty spot: no point
        return;
      }
      if (!gesture.moved) gesture.before = snapshot();
      gesture.moved = true;
      draw.points[gesture.hit] = toNorm(ev);
      paint();
    } else if (ev.pointerType === "mouse" && !gesture) {
      draw.hover = draw.closed ? null : toNorm(ev);
      paint();
    }
  });
  canvas.addEventListener("pointerup", (ev) => {
    pointers.delete(ev.pointerId);
    const g = gesture;
    if (!g || ev.pointerId !== g.id) return;
    gesture = null;
    if (g.moved) {
      if (g.before) remember(g.before); // a drag moved a point: undo puts it back
    } else if (g.hit < 0) {
      placePoint(toNorm(ev));
    } else if (g.hit === 0 && spec().shape === "polygon" && !draw.closed && draw.points.length >= 3) {
      remember(snapshot()); // a tap on the first point closes the zone
      draw.closed = true;
    } // a tap on another point (the second click of a double-click): nothing
    paint();
  });
  canvas.addEventListener("pointercancel", (ev) => {
    pointers.delete(ev.pointerId);
    if (gesture && ev.pointerId === gesture.id) cancelGesture();
    paint();
  });
  canvas.addEventListener("lostpointercapture", (ev) => pointers.delete(ev.pointerId));
  canvas.addEventListener("dblclick", (ev) => {
    ev.preventDefault();
    closeShape();
  });
  canvas.addEventListener("pointerleave", (ev) => {
    if (ev.pointerType !== "mouse") return;
    draw.hover = null;
    paint();
  });
  undoBtn.addEventListener("click", undo);
  closeBtn.addEventListener("click", closeShape);
  clearBtn.addEventListener("click", clearDrawing);

  /** "4 points, closed": what the drawing holds, under the buttons (read out by screen readers). */
  function sayDrawState() {
    const n = draw.points.length;
    const text = !n ? "no point yet"
      : `${n} point${n === 1 ? "" : "s"}${draw.closed ? (spec().shape === "line" ? "" : ", closed") : ""}`;
    if (drawState.textContent !== text) drawState.textContent = text;
  }

  function paint() {
    sayDrawState();
    const ctx = canvas.getContext("2d");
    const W = canvas.width;
    const H = canvas.height;
    ctx.clearRect(0, 0, W, H);
    if (!W || !H) return;
    const px = ([x, y]) => [x * W, y * H];
    // stored rules of this camera
    rules.forEach((r, i) => {
      if (editing && r.id === editing.id) return;
      const color = COLORS[i % COLORS.length];
      const pts = r.type === "line_crossing" ? r.line : r.zone;
      if (!pts || !pts.length) return;
      ctx.save();
      ctx.strokeStyle = color;
      ctx.fillStyle = `${color}22`;
      ctx.lineWidth = 2;
      ctx.setLineDash([6, 4]);
      ctx.beginPath();
      pts.forEach((p, j) => (j ? ctx.lineTo(...px(p)) : ctx.moveTo(...px(p))));
      if (r.type !== "line_crossing") {
        ctx.closePath();
        ctx.fill();
      }
      ctx.stroke();
      ctx.setLineDash([]);
      label(ctx, r.id, px(pts[0]), color);
      ctx.restore();
    });
    // the shape being drawn
    if (!draw.points.length) return;
    const pts = draw.points.map(px);
    ctx.save();
    ctx.strokeStyle = "#38bdf8";
    ctx.fillStyle = "rgba(56, 189, 248, 0.22)";
    ctx.lineWidth = 2.5;
    ctx.beginPath();
    pts.forEach((p, j) => (j ? ctx.lineTo(...p) : ctx.moveTo(...p)));
    if (draw.closed && spec().shape === "polygon") {
      ctx.closePath();
      ctx.fill();
    } else if (draw.hover) {
      ctx.lineTo(...px(draw.hover));
    }
    ctx.stroke();
    ctx.fillStyle = "#fff";
    const dot = COARSE_POINTER.matches ? 7 : 4; // a point a finger can see around and grab
    for (const p of pts) {
      ctx.beginPath();
      ctx.arc(p[0], p[1], dot, 0, Math.PI * 2);
      ctx.fill();
      ctx.stroke();
    }
    ctx.restore();
  }

  function label(ctx, text, [x, y], color) {
    ctx.font = "12px system-ui, sans-serif";
    const w = ctx.measureText(text).width + 8;
    ctx.fillStyle = color;
    ctx.fillRect(x, Math.max(0, y - 18), w, 16);
    ctx.fillStyle = "#fff";
    ctx.fillText(text, x + 4, Math.max(12, y - 6));
  }

  // -- the rule mapping from the form
  function buildRule() {
    const s = spec();
    const type = typeSel.value;
    let base = {};
    if (editing) {
      const keep = editing.type === type ? Object.keys(editing) : COMMON_KEYS;
      for (const k of keep) if (k in editing) base[k] = editing[k];
    }
    const rule = { ...base, id: ruleId.value.trim(), type, severity: severity.value };
    if (!rule.cameras || !rule.cameras.length) rule.cameras = [camId];
    const cls = classes.value.split(",").map((c) => c.trim()).filter(Boolean);
    if (cls.length) rule.classes = cls;
    else delete rule.classes;
    if (s.shape === "line") {
      delete rule.zone;
      if (draw.points.length === 2) rule.line = draw.points.map((p) => [...p]);
      else delete rule.line;
      rule.direction = direction.value;
    } else {
      delete rule.line;
      if (draw.points.length) rule.zone = draw.points.map((p) => [...p]);
      else delete rule.zone;
    }
    if (s.key && threshold.value !== "") rule[s.key] = Number(threshold.value);
    return rule;
  }

  function showErrors(e) {
    errors.replaceChildren();
    for (const { field, msg } of fieldErrors(e)) {
      // the server's rule errors already read "rule 'x': key: problem"
      const named = !field || msg.includes(`${field}:`);
      errors.append(h("li", { dataset: { field: field || "" } }, named ? msg : [h("b", {}, field), `: ${msg}`]));
    }
  }

  function localCheck(rule) {
    if (!rule.id) return [{ loc: ["id"], msg: "give the rule an id" }];
    if (spec().shape === "line" && !rule.line) return [{ loc: ["line"], msg: "click two points on the picture" }];
    if (spec().shape === "polygon" && draw.points.length && draw.points.length < 3) {
      return [{ loc: ["zone"], msg: "a zone needs at least 3 points" }];
    }
    return null;
  }

  previewBtn.addEventListener("click", async () => {
    const rule = buildRule();
    const bad = localCheck(rule);
    errors.replaceChildren();
    saved.hidden = true;
    if (bad) return showErrors(new ApiError(422, bad));
    previewBtn.disabled = true;
    results.replaceChildren(h("p", { class: "muted", id: "preview-running" }, "Replaying the recorded detections…"));
    try {
      const res = await api("POST", "/api/rules/preview", { rule, since_s: Number(range.value) });
      renderPreview(results, res);
    } catch (e) {
      results.replaceChildren();
      showErrors(e);
    } finally {
      previewBtn.disabled = false;
    }
  });

  saveBtn.addEventListener("click", async () => {
    const rule = buildRule();
    const bad = localCheck(rule);
    errors.replaceChildren();
    saved.hidden = true;
    if (bad) return showErrors(new ApiError(422, bad));
    saveBtn.disabled = true;
    try {
      const stored = await api("PUT", `/api/rules/${enc(rule.id)}`, rule);
      editing = stored || rule;
      saved.textContent = `Saved rule ${rule.id}: the alert services apply it within seconds.`;
      saved.hidden = false;
      await loadRules();
    } catch (e) {
      showErrors(e);
    } finally {
      saveBtn.disabled = false;
    }
  });

  function editRule(r) {
    editing = r;
    typeSel.value = RULE_TYPES[r.type] ? r.type : "zone_intrusion";
    shape = spec().shape;
    ruleId.value = r.id;
    classes.value = (r.classes || []).join(", ");
    severity.value = r.severity || "medium";
    threshold.value = "";
    syncTypeFields();
    const key = spec().key;
    if (key && r[key] !== undefined) threshold.value = r[key];
    if (r.direction) direction.value = r.direction;
    const pts = r.type === "line_crossing" ? r.line : r.zone;
    draw.points = (pts || []).map((p) => [...p]);
    draw.closed = draw.points.length > 0;
    draw.history = [];
    undoBtn.disabled = !draw.points.length;
    errors.replaceChildren();
    results.replaceChildren();
    paint();
  }

  async function loadRules() {
    let all;
    try {
      all = await api("GET", "/api/rules");
    } catch (e) {
      return;
    }
    rules = all.filter((r) => {
      const cams = r.cameras === undefined ? ["*"] : [].concat(r.cameras);
      return cams.includes("*") || cams.includes(camId);
    });
    ruleList.replaceChildren();
    if (!rules.length) ruleList.append(h("li", { class: "muted" }, "No rule watches this camera yet."));
    rules.forEach((r, i) => {
      const cams = [].concat(r.cameras ?? "*");
      const item = h("li", { class: "rule-item", dataset: { rule: r.id } },
        h("span", { class: "swatch" }),
        h("span", { class: "rule-name" }, r.id),
        h("span", { class: "muted small" }, `${r.type} · ${r.severity || "medium"}${cams.includes("*") ? " · all cameras" : ""}${r.enabled === false ? " · off" : ""}`),
        h("span", { class: "spacer" }),
        h("button", { type: "button", class: "btn btn-quiet edit-rule", onclick: () => editRule(r) }, "Edit"),
        operate ? h("button", {
          type: "button",
          class: "btn btn-quiet btn-danger delete-rule",
          onclick: async () => {
            if (!confirm(`Delete rule ${r.id}${cams.includes("*") ? " (it watches all cameras)" : ""}?`)) return;
            try {
              await api("DELETE", `/api/rules/${enc(r.id)}`);
            } catch (e) {
              alert(`Could not delete ${r.id}: ${e.message}`);
            }
            if (editing && editing.id === r.id) editing = null;
            loadRules();
          },
        }, "Delete") : null);
      item.querySelector(".swatch").style.background = COLORS[i % COLORS.length];
      ruleList.append(item);
    });
    paint();
  }

  async function loadStatus() {
    try {
      const cams = await api("GET", "/api/cameras");
      const cam = cams.find((c) => c.id === camId);
      const st = cam && cam.status;
      const state = st ? st.state : "none";
      badge.textContent = cam ? (st ? state : "offline") : "unknown camera";
      badge.className = `badge badge-${STATE_CLASS[state] || "idle"}`;
      badge.dataset.state = state;
      badge.title = st && st.last_error ? st.last_error : "";
    } catch (e) {
      /* banner or login already handled */
    }
  }

  // the MJPEG stream; reopened a few seconds after it broke (server restart, network)
  let liveOn = true;
  const liveUrl = `/api/cameras/${enc(camId)}/live`;
  live.addEventListener("error", () => {
    setTimeout(() => {
      if (liveOn) live.src = `${liveUrl}?r=${Date.now()}`;
    }, 3000);
  });
  live.src = liveUrl;
  loadRules();
  loadStatus();
  const statusTimer = setInterval(loadStatus, 3000);
  setCleanup(() => {
    clearInterval(fitTimer);
    clearInterval(statusTimer);
    ro.disconnect();
    liveOn = false;
    live.removeAttribute("src"); // closes the MJPEG connection
  });
}

function renderPreview(box, res) {
  const items = res.alerts || [];
  const totals = h("p", { id: "preview-totals", class: "totals" },
    h("b", {}, `${items.length} alert${items.length === 1 ? "" : "s"}`),
    ` would have fired · ${res.messages ?? 0} messages · ${res.frames ?? 0} frames, replayed in ${fmtNum(res.seconds ?? 0, 1)} s`,
    recordedPictures(items),
    res.truncated ? h("span", { class: "form-error" }, " (stopped early: range too long)") : null);
  const list = h("ul", { class: "preview-list" });
  for (const a of items) {
    list.append(h("li", { class: "preview-alert", dataset: { alert: a.id || "" } },
      previewPicture(a),
      h("div", {},
        h("div", {}, h("b", {}, a.label || "–"), a.track_id != null ? ` · track ${a.track_id}` : "", a.count != null ? ` · count ${a.count}` : ""),
        h("div", { class: "muted small" }, `${fmtTime(a.started_at)} → ${a.ended_at ? fmtTime(a.ended_at) : "still on"}`))));
  }
  box.replaceChildren(totals, items.length ? list : h("p", { class: "muted" }, "No alert in this range: the rule would have stayed quiet."));
}

// A would-be alert's picture: the live frame while Redis keeps it, else the camera's recording
// at the alert's start (a badge says which; a click opens it full size), else why there is none.
const PREVIEW_NOTES = {
  "not recorded": "No live frame any more, and no recording of this moment (not recorded, or its footage was deleted).",
  "frame expired": "The live frame has expired (frames are kept a few minutes).",
  "time was up": "The preview ran out of time before this picture.",
  "recording unavailable": "The recordings' index could not be read (see the console's log).",
  "recording unreadable": "The recording of this moment could not be decoded (see the console's log).",
};

function recordedPictures(items) {
  const n = items.filter((a) => a.snapshot_source === "recording").length;
  return n ? ` · ${n} picture${n === 1 ? "" : "s"} from recordings` : null;
}

function previewPicture(a) {
  const snap = safePath(a.snapshot_url);
  if (!snap) {
    const note = a.snapshot_note || "no frame";
    const short = note.startsWith("not loaded") ? "not loaded" : note;
    return h("div", { class: "preview-snap none", title: PREVIEW_NOTES[note] || note }, short);
  }
  const recorded = a.snapshot_source === "recording";
  const what = recorded ? "from recording" : "live frame";
  return h("a", {
    class: "preview-pic", href: snap, target: "_blank", rel: "noopener",
    dataset: { source: recorded ? "recording" : "live" },
    title: recorded ? `The camera's recording at ${fmtTime(a.started_at)} (open full size)` : "The frame that triggered it (open full size)",
  },
  h("img", { class: "preview-snap", src: snap, alt: `${what}: ${a.label || "would-be alert"} at ${fmtTime(a.started_at)}`, loading: "lazy" }),
  h("span", { class: `snap-source${recorded ? " rec" : ""}` }, what));
}

// ---------------------------------------------------------------------------------------------
// Alerts: newest first, live through Server-Sent Events, review panel

function renderAlerts(view, openId) {
  const filters = h("form", { id: "alert-filters", class: "card inline-form" },
    h("label", {}, "Camera", h("input", { name: "camera", placeholder: "any", autocomplete: "off" })),
    h("label", {}, "Rule", h("input", { name: "rule", placeholder: "any", autocomplete: "off" })),
    h("label", {}, "Severity", h("select", { name: "severity" }, h("option", { value: "" }, "any"),
      ["info", "low", "medium", "high", "critical"].map((s) => h("option", { value: s }, s)))),
    h("label", {}, "Status", h("select", { name: "status" }, h("option", { value: "" }, "any"),
      h("option", { value: "started" }, "started"), h("option", { value: "ended" }, "ended"))),
    buttonSlot(h("button", { type: "submit", class: "btn" }, "Apply")));
  const tbody = h("tbody", { id: "alert-rows" });
  const table = h("table", { class: "alerts-table", id: "alerts-table" },
    h("thead", {}, h("tr", {}, ["", "Time", "Camera", "Rule", "Severity", "Status", "Label"].map((t) => h("th", {}, t)))),
    tbody);
  const more = h("button", { type: "button", id: "load-more", class: "btn", hidden: true }, "Load more");
  const live = h("span", { class: "live-dot", id: "live-state", title: "live updates" }, "live");
  const detail = h("aside", { id: "alert-detail", class: "card detail", hidden: true });
  view.append(
    h("div", { class: "page-head" }, h("h1", {}, "Alerts"), live),
    filters,
    h("div", { class: "alerts-layout" }, h("div", { class: "table-wrap" }, table, more), detail),
  );

  const rows = new Map(); // alert id -> {tr, alert}
  const seen = new Set(); // "id|status" already shown
  let next = null;
  let selected = null;
  let es = null;

  const current = () => Object.fromEntries(
    ["camera", "rule", "severity", "status"].map((k) => [k, filters.elements[k].value.trim()]).filter(([, v]) => v));

  function matches(a) {
    const f = current();
    return (!f.camera || a.camera_id === f.camera) && (!f.rule || a.rule_id === f.rule)
      && (!f.severity || a.severity === f.severity) && (!f.status || a.status === f.status);
  }

  function row(a) {
    const thumb = a.snapshot === false ? h("span", { class: "thumb-none" })
      : h("img", { class: "alert-thumb", src: `/api/alerts/${enc(a.id)}/snapshot.jpg`, alt: "", loading: "lazy" });
    if (thumb.tagName === "IMG") thumb.addEventListener("error", () => thumb.replaceWith(h("span", { class: "thumb-none" })));
    const tr = h("tr", { class: "alert-row", dataset: { alert: a.id, status: a.status, rule: a.rule_id, camera: a.camera_id }, tabindex: "0" },
      h("td", { class: "thumb-cell" }, thumb),
      h("td", { class: "mono" }, fmtTime(a.started_at)),
      h("td", {}, a.camera_id),
      h("td", {}, a.rule_id),
      h("td", {}, h("span", { class: `sev sev-${a.severity}` }, a.severity)),
      h("td", { class: "status-cell" }, statusTags(a)),
      h("td", {}, a.label || "–"));
    tr.addEventListener("click", () => openDetail(a.id, true));
    tr.addEventListener("keydown", (ev) => ev.key === "Enter" && openDetail(a.id, true));
    return tr;
  }

  /** Add or update one alert; `top` for live events (newest first), else appended (paging). */
  function upsert(a, top) {
    const key = `${a.id}|${a.status}`;
    if (seen.has(key)) return;
    seen.add(key);
    const have = rows.get(a.id);
    if (have) {
      // an `ended` after its `started` (or the reverse when paging): keep the latest state
      if (a.status === "ended" || have.alert.status !== "ended") {
        have.alert = { ...have.alert, ...a };
        have.tr.dataset.status = have.alert.status;
        $(".status-cell", have.tr).replaceChildren(...statusTags(have.alert));
        if (top) flash(have.tr);
      }
      return;
    }
    const tr = row(a);
    rows.set(a.id, { tr, alert: a });
    if (top) {
      tbody.prepend(tr);
      flash(tr);
    } else tbody.append(tr);
  }

  function flash(tr) {
    tr.classList.remove("fresh");
    void tr.offsetWidth; // restart the animation
    tr.classList.add("fresh");
  }

  async function load(reset) {
    if (reset) {
      tbody.replaceChildren();
      rows.clear();
      seen.clear();
      next = null;
    }
    const q = new URLSearchParams({ ...current(), limit: "50" });
    if (!reset && next) q.set("before", next);
    try {
      const page = await api("GET", `/api/alerts?${q}`);
      for (const a of page.items || []) upsert(a, false);
      next = page.next || null;
      more.hidden = !next;
      if (!rows.size) tbody.append(h("tr", { class: "empty-row" }, h("td", { colspan: "7", class: "muted" }, "No alerts.")));
      else $(".empty-row", tbody)?.remove();
    } catch (e) {
      /* banner or login already handled */
    }
  }

  function connect() {
    es = new EventSource("/api/alerts/events");
    es.onopen = () => {
      live.classList.add("on");
      live.title = "live updates connected";
    };
    // the server names its events `alert` (and `error` when Redis fails behind the stream)
    const onAlert = (ev) => {
      let a;
      try {
        a = JSON.parse(ev.data);
      } catch (e) {
        return;
      }
      if (!a || !a.id || !matches(a)) return;
      $(".empty-row", tbody)?.remove();
      upsert(a, true);
      if (selected === a.id) openDetail(a.id);
    };
    es.addEventListener("alert", onAlert);
    es.onmessage = onAlert; // unnamed events too
    let warnTimer = null;
    es.onerror = (ev) => {
      if (ev.data) {
        // the server's `error` event: its Redis read failed; it retries by itself, so the
        // indicator says so for a few seconds (the banner is for API calls answering 503)
        let detail = "live updates interrupted";
        try {
          detail = JSON.parse(ev.data).detail || detail;
        } catch (e) {
          /* not JSON */
        }
        live.classList.add("warn");
        live.title = `live updates: ${detail}`;
        clearTimeout(warnTimer);
        warnTimer = setTimeout(() => {
          live.classList.remove("warn");
          live.title = "live updates connected";
        }, 4000);
        return;
      }
      live.classList.remove("on");
      live.title = "live updates reconnecting…";
      // EventSource hides the status: ask /api/me whether the session is still there
      api("GET", "/api/session").then((me) => me && !me.logged_in && sessionLost()).catch(() => {});
    };
  }

  async function openDetail(id, reveal) {
    selected = id;
    // the address names the open alert (to share, or to come back to after login); no hashchange
    history.replaceState(null, "", `#/alerts/${enc(id)}`);
    for (const r of rows.values()) r.tr.classList.toggle("selected", r.alert.id === id);
    if (detail.hidden) {
      // its place is kept while it loads: the list does not jump when it arrives (style.css)
      detail.hidden = false;
      detail.classList.add("loading");
      detail.replaceChildren(h("h2", {}, "Alert"), h("p", { class: "muted" }, "Loading…"));
    }
    let a;
    try {
      a = await api("GET", `/api/alerts/${enc(id)}`);
    } catch (e) {
      a = rows.get(id)?.alert;
      if (!a) {
        if (selected !== id) return;
        detail.classList.remove("loading");
        if (e.status !== 404) {
          detail.hidden = true;
          return;
        }
        detail.hidden = false;
        detail.dataset.alert = id;
        detail.replaceChildren(h("h2", {}, "Alert"),
          h("p", { class: "muted", id: "detail-missing" }, `No alert ${id}: it expired or never existed.`));
        return;
      }
    }
    if (selected !== id) return;
    detail.hidden = false;
    detail.classList.remove("loading");
    detail.dataset.alert = id;
    const snap = h("img", { id: "detail-snapshot", class: "detail-snap", src: `/api/alerts/${enc(id)}/snapshot.jpg`, alt: "the frame that started the alert" });
    snap.addEventListener("error", () => snap.replaceWith(h("div", { class: "detail-snap none" }, "no snapshot (expired or none)")));
    const facts = h("dl", { class: "facts" },
      fact("Camera", a.camera_id), fact("Rule", `${a.rule_id} (${a.rule_type || "?"})`),
      fact("Severity", a.severity), fact("Status", a.status),
      fact("Started", fmtTime(a.started_at)), fact("Ended", a.ended_at ? fmtTime(a.ended_at) : "–"),
      fact("Label", a.label || "–"), a.track_id != null ? fact("Track", a.track_id) : null,
      a.count != null ? fact("Count", a.count) : null,
      a.confidence != null ? fact("Confidence", fmtNum(a.confidence, 2)) : null);
    const reviewBox = h("div", { class: "review", id: "review-box" });
    renderReview(reviewBox, a);
    detail.replaceChildren(
      h("div", { class: "detail-head" }, h("h2", {}, "Alert"),
        h("button", { type: "button", class: "btn btn-quiet", id: "detail-close", "aria-label": "Close the alert", onclick: () => { detail.hidden = true; selected = null; history.replaceState(null, "", "#/alerts"); } }, "×")),
      h("a", { href: `/api/alerts/${enc(id)}/snapshot.jpg`, target: "_blank", rel: "noopener", id: "snapshot-link" }, snap),
      clipPlayer(id, a), facts, reviewBox);
    // on a phone the detail sits above the list (style.css): bring it into view when the user
    // opened it (a live update of the open alert leaves the scroll alone)
    if (reveal) detail.scrollIntoView({ block: "nearest" });
  }

  /** Why an alert has no clip, in words for people (not ids and times); null for a reason
   * this page does not know. */
  function noClipText(reason, camera) {
    const cam = typeof camera === "string" ? camera : "this camera";
    const texts = {
      recording_off: `Not recorded: camera ${cam} has recording off.`,
      expired: `Footage expired: camera ${cam}'s recordings no longer go back to this alert.`,
      not_recorded: `Not recorded: camera ${cam} was not recording at the time.`,
    };
    return Object.prototype.hasOwnProperty.call(texts, reason) ? texts[reason] : null;
  }

  /** The alert's clip (its camera's recording around it) in a <video>, or why there is none. */
  function clipPlayer(id, a) {
    // no footage indexed (the alert's answer says so): the reason, not a player meeting a 404
    if (a && a.clip_available === false) {
      const why = noClipText(a.clip_reason, a.camera_id) || `No clip: ${a.clip_detail || "not recorded"}.`;
      return h("div", { class: "clip-box" }, h("div", { class: "detail-clip none", id: "detail-clip-none" }, why));
    }
    const url = `/api/alerts/${enc(id)}/clip.mp4`;
    const video = h("video", { id: "detail-clip", class: "detail-clip", controls: true, preload: "metadata", playsinline: true, src: url });
    const box = h("div", { class: "clip-box" }, video);
    clipBoxes(video, box, id); // the alert's boxes over it (timeline.js)
    video.addEventListener("error", async () => {
      let why = "No clip for this alert.";
      try {  // the answer's reason says why, in words for people (not ids and times)
        const resp = await fetch(url, { headers: { Range: "bytes=0-0" }, credentials: "same-origin" });
        const data = await resp.json().catch(() => null);
        if (data) why = noClipText(data.reason, data.camera_id) || why;
      } catch (e) { /* keep the short text */ }
      box.replaceChildren(h("div", { class: "detail-clip none", id: "detail-clip-none" }, why));
    }, { once: true });
    return box;
  }

  function renderReview(box, a) {
    const verdict = a.review === "false_positive" ? "False positive" : "True positive";
    const state = h("div", {
      id: "review-state",
      class: "review-state",
      hidden: !a.review,
      dataset: a.review ? { verdict: a.review, reviewImage: a.review_image || "" } : null,
    },
    a.review ? [
      h("b", {}, verdict),
      ` · by ${a.reviewed_by || "?"} at ${fmtTime(a.reviewed_at)}`,
      a.review_note ? h("div", { class: "muted" }, `“${a.review_note}”`) : null,
      a.review_image ? h("div", { class: "muted small mono" }, `dataset image: ${a.review_image}`) : null,
      !a.review_image && a.dataset ? h("div", { class: "muted small" }, a.dataset) : null,
    ] : null);
    box.replaceChildren(state);
    if (!canOperate()) return;
    const note = h("input", { id: "review-note", placeholder: "note (optional)", autocomplete: "off" });
    const err = h("p", { class: "form-error", id: "review-error", hidden: true });
    const send = (verdict) => async () => {
      err.hidden = true;
      try {
        const res = await api("POST", `/api/alerts/${enc(a.id)}/review`, { verdict, note: note.value.trim() });
        const done = { ...a, ...(res || {}), review: (res && res.review) || verdict };
        renderReview(box, done);
        const have = rows.get(a.id);
        if (have) {
          have.alert.review = done.review;
          $(".status-cell", have.tr).replaceChildren(...statusTags(have.alert));
        }
      } catch (e) {
        err.textContent = `Review not saved: ${e.message}`;
        err.hidden = false;
      }
    };
    box.append(
      h("label", {}, a.review ? "Change the verdict" : "Review", note),
      h("div", { class: "row" },
        h("button", { type: "button", id: "review-tp", class: "btn btn-ok", onclick: send("true_positive") }, "True positive"),
        h("button", { type: "button", id: "review-fp", class: "btn btn-danger", onclick: send("false_positive") }, "False positive")),
      err);
  }

  filters.addEventListener("submit", (ev) => {
    ev.preventDefault();
    load(true);
  });
  more.addEventListener("click", () => load(false));
  load(true).then(connect);
  if (openId) openDetail(openId, true); // a deep link (#/alerts/<id>), e.g. from a notification
  setCleanup(() => {
    if (es) es.close();
  });
}

/** The status pill, and the operator's verdict when there is one. */
function statusTags(a) {
  return nodes(
    h("span", { class: `status status-${a.status}` }, a.status),
    a.review ? h("span", { class: `verdict verdict-${a.review}`, title: "reviewed" },
      a.review === "false_positive" ? "FP" : "TP") : null);
}

function fact(k, v) {
  return [h("dt", {}, k), h("dd", {}, String(v))];
}

// ---------------------------------------------------------------------------------------------
// Models: the registry's versions, promotions and what each worker runs

function renderModels(view) {
  const body = h("div", { id: "models" }, h("p", { class: "muted" }, "Loading…"));
  view.append(h("div", { class: "page-head" }, h("h1", {}, "Models")), body);

  async function load() {
    let m;
    try {
      m = await api("GET", "/api/models");
    } catch (e) {
      body.replaceChildren(h("p", { class: "muted" }, `Registry not available: ${e.message}`));
      return;
    }
    const prod = typeof m.production === "string" ? m.production : m.production && m.production.version;
    const workers = Array.isArray(m.workers)
      ? m.workers
      : Object.entries(m.workers || {}).map(([id, w]) => ({ id, ...w }));
    const decisions = m.decisions || [];
    const reason = h("input", { id: "model-reason", placeholder: "reason (recorded in the history)", autocomplete: "off" });
    const err = h("p", { class: "form-error", id: "model-error", hidden: true });

    const act = (path, payload) => async () => {
      err.hidden = true;
      try {
        await api("POST", path, { ...payload, reason: reason.value.trim() });
        load();
      } catch (e) {
        err.textContent = typeof e.detail === "string" ? e.detail : e.message;
        err.hidden = false;
      }
    };

    const rows = (m.versions || []).map((v) => {
      const d = decisions.find((x) => x.candidate_version === v.version);
      const metric = d ? d.metric : "map50";
      const after = d ? d.candidate : (v.metrics || {})[metric];
      const running = workers.filter((w) => w.version === v.version).map((w) => w.id || w.worker);
      return h("tr", { class: "model-row", dataset: { version: v.version } },
        h("td", {}, v.version === prod ? h("span", { class: "prod-mark", title: "production" }, "★ production") : ""),
        h("td", { class: "mono" }, v.label || v.version),
        h("td", {}, fmtTime(v.created_at)),
        h("td", { class: "mono" }, d && d.production != null ? `${metric} ${fmtNum(d.production, 3)} → ${fmtNum(after, 3)}` : `${metric} ${fmtNum(after, 3)}`),
        h("td", {}, d ? (d.promoted ? "promoted" : "refused") : "–"),
        h("td", { class: "precision-gate" }, v.precision_summary || h("span", { class: "muted" }, "–")),
        h("td", {}, running.length ? running.join(", ") : h("span", { class: "muted" }, "–")),
        h("td", {}, isAdmin() && v.version !== prod
          ? h("button", { type: "button", class: "btn btn-quiet promote-btn", onclick: act("/api/models/promote", { ref: v.version }) }, "Promote")
          : ""));
    });

    const history = (m.history || []).slice(0, 20).map((e) =>
      h("li", {}, h("span", { class: "mono" }, fmtTime(e.at)), ` ${e.kind} → v${e.number ?? "?"} (${e.version})`,
        e.reason ? h("span", { class: "muted" }, ` · ${e.reason}`) : ""));

    body.replaceChildren(...nodes(
      isAdmin()
        ? h("div", { class: "card inline-form" }, h("label", { class: "grow" }, "Reason", reason),
          buttonSlot(h("button", { type: "button", id: "rollback-btn", class: "btn btn-danger", disabled: !prod, onclick: act("/api/models/rollback", {}) }, "Roll back production")),
          err)
        : null,
      h("section", { class: "card" }, h("h2", {}, "Versions"),
        rows.length
          ? h("table", { class: "models-table", id: "models-table" },
            h("thead", {}, h("tr", {}, ["", "Version", "Created", "Metric (before → after)", "Promotion", "Precision gate", "Running on", ""].map((t) => h("th", {}, t)))),
            h("tbody", {}, rows))
          : h("p", { class: "muted" }, "No model registered yet (vigil retrain or vigil models promote FILE adds one).")),
      h("div", { class: "two-col" },
        h("section", { class: "card" }, h("h2", {}, "Workers"),
          workers.length
            ? h("ul", { class: "plain" }, workers.map((w) => h("li", {}, h("b", {}, w.id || w.worker || "?"), ` ${w.status || ""} ${w.version || ""}`, w.error ? h("span", { class: "form-error" }, ` (${w.error})`) : "")))
            : h("p", { class: "muted" }, "No worker has reported yet.")),
        h("section", { class: "card" }, h("h2", {}, "History"),
          history.length ? h("ul", { class: "plain" }, history) : h("p", { class: "muted" }, "No promotion yet."))),
    ));
  }
  load();
  const timer = setInterval(() => !document.hidden && !body.contains(document.activeElement) && load(), 10000);
  setCleanup(() => clearInterval(timer));
}

// ---------------------------------------------------------------------------------------------
// Audit (admins): who changed what, when, from where (GET /api/audit, newest first)

function renderAudit(view) {
  const body = h("div", { id: "audit" }, h("p", { class: "muted" }, "Loading…"));
  view.append(h("div", { class: "page-head" }, h("h1", {}, "Audit trail")), body);

  async function load() {
    let entries;
    try {
      entries = await api("GET", "/api/audit?n=200");
    } catch (e) {
      body.replaceChildren(h("p", { class: "muted" }, `Audit trail not available: ${e.message}`));
      return;
    }
    const details = (d) => {
      const text = JSON.stringify(d || {});
      return text === "{}" ? "" : text;
    };
    const rows = entries.map((e) =>
      h("tr", { class: "audit-row", dataset: { action: e.action } },
        h("td", { class: "mono" }, fmtTime(e.at)),
        h("td", {}, e.who),
        h("td", { class: "muted" }, e.via),
        h("td", { class: "mono" }, e.address),
        h("td", { class: "mono" }, e.action),
        h("td", {}, e.target),
        h("td", { class: "mono audit-details" }, details(e.details))));
    body.replaceChildren(h("section", { class: "card" },
      rows.length
        ? h("table", { class: "audit-table", id: "audit-table" },
          h("thead", {}, h("tr", {}, ["Time", "Who", "Via", "From", "Action", "Target", "Details"].map((t) => h("th", {}, t)))),
          h("tbody", {}, rows))
        : h("p", { class: "muted" }, "No change recorded yet.")));
  }
  load();
  const timer = setInterval(() => !document.hidden && load(), 10000);
  setCleanup(() => clearInterval(timer));
}

// ---------------------------------------------------------------------------------------------
// Installable app: the service worker (pipeline/console/pwa.py, static/sw.js) keeps the shell
// for offline starts and never caches API answers; after a logout it drops anything else.

// the console's root, from this script's own URL (<root>/static/app.js): right behind a proxy too
const CONSOLE_ROOT = new URL("..", document.currentScript.src);

function registerShellWorker() {
  if (!("serviceWorker" in navigator)) return;
  navigator.serviceWorker.register(new URL("sw.js", CONSOLE_ROOT), { scope: CONSOLE_ROOT.pathname })
    .catch((e) => console.warn(`console: no offline shell (${e.message})`));
}

/** Tells the worker that the session ended: it keeps the shell, drops every other cache entry;
 * resolves when it says it did (or after 3 s). */
async function dropCachedData() {
  if (!("serviceWorker" in navigator)) return;
  const reg = await navigator.serviceWorker.getRegistration(CONSOLE_ROOT.href).catch(() => null);
  const worker = reg && (reg.active || reg.waiting || reg.installing);
  if (!worker) return;
  await new Promise((resolve) => {
    const channel = new MessageChannel();
    const timer = setTimeout(resolve, 3000);
    channel.port1.onmessage = () => {
      clearTimeout(timer);
      resolve();
    };
    worker.postMessage({ type: "logout" }, [channel.port2]);
  });
}

// ---------------------------------------------------------------------------------------------
// Start: is there a session already?

async function start() {
  registerShellWorker();
  $("#logout-btn").addEventListener("click", logout);
  window.addEventListener("hashchange", route);
  try {
    // 200 either way ({logged_in: false} when not): no failed request in the console log
    const me = await api("GET", "/api/session");
    if (me && me.logged_in && me.user) setSession(me);
  } catch (e) {
    /* the server is unreachable (banner): the login view */
  }
  route();
}

document.addEventListener("DOMContentLoaded", start);
