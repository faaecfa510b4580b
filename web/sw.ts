/**
 * The service worker that makes the app work offline once loaded: on install it caches every
 * file of the build (the page, the bundles, onnxruntime-web's runtime, USE-lite's weights and the
 * UCI sources: the list and the build's content hash come from scripts/build-web.js), then serves
 * same-origin GETs from that cache first and the network otherwise. A new build has a new hash,
 * so a new service worker installs its own cache and removes the old ones.
 */

/** The build's files, relative to this script (injected by scripts/build-web.js). */
declare const PEFT_PRECACHE: readonly string[];
/** A hash of those files' contents (injected by scripts/build-web.js). */
declare const PEFT_BUILD: string;

// The parts of the service-worker scope this file uses (web/ compiles with the DOM library, which lacks them).
interface ExtendableEvent extends Event {
  waitUntil(p: Promise<unknown>): void;
}
interface FetchEvent extends ExtendableEvent {
  readonly request: Request;
  respondWith(r: Promise<Response>): void;
}
interface ServiceWorkerScope {
  readonly location: Location;
  skipWaiting(): Promise<void>;
  readonly clients: { claim(): Promise<void> };
  addEventListener(type: "install" | "activate", f: (e: ExtendableEvent) => void): void;
  addEventListener(type: "fetch", f: (e: FetchEvent) => void): void;
}

const sw = self as unknown as ServiceWorkerScope;
const PREFIX = "peft-ts-web-";
const CACHE = `${PREFIX}${PEFT_BUILD}`;

sw.addEventListener("install", (e) => {
  e.waitUntil(
    (async () => {
      const cache = await caches.open(CACHE);
      // `reload`: the files from the server, not from the HTTP cache of an older build
      await cache.addAll(PEFT_PRECACHE.map((p) => new Request(new URL(p, sw.location.href), { cache: "reload" })));
      await sw.skipWaiting();
    })(),
  );
});

sw.addEventListener("activate", (e) => {
  e.waitUntil(
    (async () => {
      for (const k of await caches.keys()) if (k.startsWith(PREFIX) && k !== CACHE) await caches.delete(k);
      await sw.clients.claim();
    })(),
  );
});

sw.addEventListener("fetch", (e) => {
  const req = e.request;
  if (req.method !== "GET" || new URL(req.url).origin !== sw.location.origin) return;
  e.respondWith(
    (async () => {
      const cache = await caches.open(CACHE);
      // the page's query (?threads=…&ep=…) picks a backend; the cached page is the same file
      const hit = await cache.match(req, { ignoreSearch: req.mode === "navigate" });
      return hit ?? fetch(req);
    })(),
  );
});
