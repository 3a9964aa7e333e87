// Service worker: network first (so a re-converted bundle or a new app version shows up at once),
// the cache the page filled (app shell, LiteRT.js wasm, the bundle) when the network is gone.
const CACHE = 'athe-demo-v1';

self.addEventListener('install', () => self.skipWaiting());
self.addEventListener('activate', (event) => event.waitUntil(self.clients.claim()));

self.addEventListener('fetch', (event) => {
  const request = event.request;
  if (request.method !== 'GET' || new URL(request.url).origin !== self.location.origin) return;
  event.respondWith((async () => {
    const cache = await caches.open(CACHE);
    try {
      const response = await fetch(request);
      // keep what is already cached fresh; the page decides what gets cached at all
      if (response.ok && (await cache.match(request, {ignoreSearch: true}))) {
        await cache.put(request, response.clone());
      }
      return response;
    } catch (err) {
      const cached = await cache.match(request, {ignoreSearch: true})
        || (request.mode === 'navigate' ? await cache.match(new URL('./', self.location).href) : undefined);
      if (cached) return cached;
      throw err;
    }
  })());
});
