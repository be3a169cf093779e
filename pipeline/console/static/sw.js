/* Vigil console's service worker (docs/console.md, "Installing on a phone").

   It keeps the app shell (the page, its script and style, the manifest and icons) in one cache
   named after the console's version, so the console opens without a network; nothing else is
   ever cached: API answers, snapshots, clips and live views go to the network untouched.
   pipeline/console/pwa.py serves this file at <console>/sw.js with the two placeholders below
   filled in: a hash of the static files (a new console version is a new worker, whose shell
   replaces the old one) and the shell's paths, relative to the worker's scope. */
"use strict";

const VERSION = "__VIGIL_SHELL_VERSION__";
const SHELL_PATHS = ["__VIGIL_SHELL_PATHS__"];
const PREFIX = "vigil-shell-";
const CACHE = PREFIX + VERSION;
const SCOPE = self.registration.scope; // ends with "/": the console's root, "./" in the shell
const SHELL = new Set(SHELL_PATHS.map((p) => new URL(p, SCOPE).href));

self.addEventListener("install", (event) => {
  event.waitUntil(
    caches.open(CACHE)
      // no-cache: the shell is fetched from the server, never from the browser's HTTP cache
      .then((cache) => cache.addAll([...SHELL].map((url) => new Request(url, { cache: "no-cache" }))))
      .then(() => self.skipWaiting()),
  );
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches.keys()
      .then((names) => Promise.all(names.filter((n) => n.startsWith(PREFIX) && n !== CACHE).map((n) => caches.delete(n))))
      .then(() => self.clients.claim()),
  );
});

/** Everything but the current shell's entries, dropped (after a logout). */
async function dropAllButShell() {
  for (const name of await caches.keys()) if (name !== CACHE) await caches.delete(name);
  const cache = await caches.open(CACHE);
  for (const req of await cache.keys()) if (!SHELL.has(req.url)) await cache.delete(req);
}

self.addEventListener("message", (event) => {
  if (!event.data || event.data.type !== "logout") return;
  const port = event.ports && event.ports[0];
  event.waitUntil(dropAllButShell().then(() => port && port.postMessage({ dropped: true })));
});

self.addEventListener("fetch", (event) => {
  const req = event.request;
  if (req.method !== "GET") return;
  const url = new URL(req.url);
  url.hash = "";
  // only the shell's own URLs are answered here; the rest (/api/, pictures, clips) is not
  // touched, so the browser fetches it as if there were no worker, and it is never cached
  if (url.search || !SHELL.has(url.href)) return;
  if (req.mode === "navigate") {
    // the page: fresh from the server, the shell's copy when offline
    event.respondWith(fetch(req).catch(() => caches.match(url.href, { cacheName: CACHE })
      .then((hit) => hit || Response.error())));
    return;
  }
  // the script, style, manifest, icons: this version's copies
  event.respondWith(caches.match(url.href, { cacheName: CACHE }).then((hit) => hit || fetch(req)));
});
