// The demo page: load the bundle, take a photo or pick one, show what the router chose and why.
// URL parameters: ?bundle=<url of a bundle folder> (default ./bundle/), ?threads=N (default: up to 4
// when the page is cross-origin isolated, else 1), ?policy=router|fixed:<level>.
import * as liteRt from '@litertjs/core';
import {Dispatcher, STAGES} from './athe.js';

export const CACHE = 'athe-demo-v1';
const SHELL = ['./', 'index.html', 'app.js', 'athe.js', 'style.css', 'manifest.webmanifest',
  'icons/icon-192.png', 'icons/icon-512.png', 'vendor/litertjs/core/index.js', 'vendor/litertjs/wasm-utils/index.js'];
const HISTORY = 8;

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const state = {dispatcher: null, history: [], busy: false};

function showError(message) {
  const el = $('error');
  el.textContent = message;
  el.hidden = !message;
}

function cell(row, text, cls) {
  const td = row.insertCell();
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function threadCount() {
  if (params.has('threads')) {
    const n = Number(params.get('threads'));
    if (!Number.isInteger(n) || n < 1) throw new Error(`?threads=${params.get('threads')} is not a positive integer; use e.g. ?threads=2`);
    if (n > 1 && !crossOriginIsolated) throw new Error(`?threads=${n} needs a cross-origin isolated page (COOP/COEP headers, which 'athe demo serve' sends); use ?threads=1`);
    return {n, auto: false};
  }
  return {n: crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1, auto: true};
}

async function load() {
  const bundleUrl = params.get('bundle') || './bundle/';
  const threads = threadCount();
  const wasmPath = new URL('vendor/litertjs/wasm/', location.href).href;
  let dispatcher;
  try {
    dispatcher = await Dispatcher.create(bundleUrl, {liteRt, wasmPath, threads: threads.n});
  } catch (err) {
    if (!(threads.auto && threads.n > 1)) throw err;
    // only our own default is retried; an explicit ?threads= fails loudly above
    console.warn('threaded LiteRT.js failed, using 1 thread:', err);
    liteRt.unloadLiteRt?.();
    dispatcher = await Dispatcher.create(bundleUrl, {liteRt, wasmPath, threads: 1});
    dispatcher.threadNote = `threads fell back to 1 (${err.message})`;
  }
  return dispatcher;
}

function describeBundle(d) {
  const m = d.manifest;
  const levels = m.levels.map((lv) => `${lv.name} (${(lv.macs / 1e6).toFixed(0)} M MACs)`).join(', ');
  $('bundle-info').textContent = `${m.variant} · ${m.precision} · ${m.input.cropSize}×${m.input.cropSize} input · ` +
    `${m.labels.length} classes (${m.labels.slice(0, 3).join(', ')}, …) · levels: ${levels}`;
  if (m.randomWeights) {
    const w = $('warning');
    w.textContent = 'This bundle has RANDOM weights (converted with --random-weights): latency is real, labels are meaningless.';
    w.hidden = false;
  }
  const policy = $('policy');
  if (!m.router) policy.options[0].remove();
  for (const name of m.levelNames) policy.add(new Option(`fixed: ${name}`, `fixed:${name}`));
  if (params.has('policy')) policy.value = params.get('policy');
  $('runtime-info').textContent = `LiteRT.js wasm · ${d.threads} thread(s)${crossOriginIsolated ? ' · cross-origin isolated' : ''} · ` +
    `${m.levels.length + (m.router ? 1 : 0)} models loaded in ${d.loadMs.toFixed(0)} ms${d.threadNote ? ' · ' + d.threadNote : ''}`;
}

function drawPreview(cropped, crop) {
  const canvas = $('preview');
  const img = new ImageData(crop, crop);
  for (let i = 0; i < crop * crop; i++) {
    img.data.set([cropped[i * 3], cropped[i * 3 + 1], cropped[i * 3 + 2], 255], i * 4);
  }
  const tmp = new OffscreenCanvas(crop, crop);
  tmp.getContext('2d').putImageData(img, 0, 0);
  const ctx = canvas.getContext('2d');
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(tmp, 0, 0, canvas.width, canvas.height);
}

function render(pred, name) {
  const d = state.dispatcher;
  $('result').hidden = false;
  $('label').textContent = pred.labelName;
  $('probability').textContent = `probability ${(pred.probability * 100).toFixed(1)} %`;
  $('level').textContent = pred.level;
  const scores = $('scores').tBodies[0];
  scores.replaceChildren();
  for (const name of d.manifest.levelNames) {
    const row = scores.insertRow();
    const s = pred.routerScores[name];
    const th = d.thresholds[name];
    cell(row, name, name === pred.level ? 'chosen' : '');
    cell(row, s === undefined ? '–' : s.toFixed(3));
    const passes = th !== undefined && s !== undefined && s >= th;
    cell(row, th === undefined ? 'fallback' : `${th.toFixed(3)} ${passes ? '✓' : '✗'}`, passes ? 'pass-mark' : '');
    const bar = cell(row, '');
    if (s !== undefined) {
      const b = document.createElement('div');
      b.className = 'bar' + (th !== undefined && s >= th ? ' pass' : '');
      b.style.width = `${Math.round(Math.min(1, Math.max(0, s)) * 100)}%`;
      bar.append(b);
    }
  }
  const timings = $('timings').tBodies[0];
  timings.replaceChildren();
  for (const stage of STAGES) {
    if (pred.timingsMs[stage] === undefined) continue;
    const row = timings.insertRow();
    cell(row, stage);
    cell(row, pred.timingsMs[stage].toFixed(2), 'num');
  }
  state.history.unshift({name, label: pred.labelName, level: pred.level, total: pred.timingsMs.total});
  state.history.length = Math.min(state.history.length, HISTORY);
  $('history-card').hidden = false;
  const hist = $('history').tBodies[0];
  hist.replaceChildren();
  for (const h of state.history) {
    const row = hist.insertRow();
    cell(row, h.name); cell(row, h.label); cell(row, h.level); cell(row, h.total.toFixed(1), 'num');
  }
  const counts = {};
  for (const h of state.history) counts[h.level] = (counts[h.level] || 0) + 1;
  $('summary').textContent = 'last ' + state.history.length + ': ' + Object.entries(counts).map(([k, v]) => `${k} ×${v}`).join(', ');
}

/** Classify one image Blob; returns the prediction (also used by the end-to-end test). */
export async function classify(blob, name = blob.name || 'image', policy = $('policy').value) {
  const d = state.dispatcher;
  const pred = await d.predictBlob(blob, {policy, name});
  drawPreview(pred.cropped, d.manifest.input.cropSize);
  render(pred, name);
  pred.input = Array.from(pred.input);  // plain numbers for the end-to-end test's JSON
  return pred;
}

async function onFile(input) {
  const file = input.files?.[0];
  input.value = '';
  if (!file || state.busy) return;
  state.busy = true;
  showError('');
  try { await classify(file, file.name); } catch (err) { showError(err.message); } finally { state.busy = false; }
}

async function loadSamples() {
  try {
    const res = await fetch('samples/index.json');
    if (!res.ok) return [];
    const names = await res.json();
    for (const name of names) {
      const b = document.createElement('button');
      b.className = 'button small';
      b.textContent = name;
      b.onclick = async () => {
        showError('');
        try { await classify(await (await fetch(`samples/${name}`)).blob(), name); } catch (err) { showError(err.message); }
      };
      $('samples').append(b);
    }
    return names.map((n) => `samples/${n}`);
  } catch { return []; }
}

/** Put everything this page loaded into the cache the service worker serves from when offline. */
async function cacheForOffline(extra) {
  if (!('caches' in self)) return false;
  const origin = location.origin;
  const loaded = performance.getEntriesByType('resource').map((e) => e.name).filter((u) => u.startsWith(origin));
  const urls = [...new Set([...SHELL, ...extra].map((u) => new URL(u, location.href).href).concat(loaded))];
  const cache = await caches.open(CACHE);
  await cache.addAll(urls);
  return urls.length;
}

async function main() {
  window.atheApp = {ready: false, classify};
  if ('serviceWorker' in navigator) {
    navigator.serviceWorker.register('sw.js').catch((err) => console.warn('service worker:', err));
  }
  $('gallery').addEventListener('change', (e) => onFile(e.target));
  $('camera').addEventListener('change', (e) => onFile(e.target));
  try {
    state.dispatcher = await load();
  } catch (err) {
    $('bundle-info').textContent = 'no bundle loaded';
    showError(err.message);
    window.atheApp.error = err.message;
    return;
  }
  describeBundle(state.dispatcher);
  const samples = await loadSamples();
  Object.assign(window.atheApp, {dispatcher: state.dispatcher, ready: true});
  try {
    window.atheApp.cached = await cacheForOffline([...state.dispatcher.artifactUrls(), 'samples/index.json', ...samples]);
  } catch (err) {
    window.atheApp.cached = false;
    console.warn('offline cache:', err);
  }
}

main();
