// The demo page: load the bundle, take a photo or pick one, show which exit answered (or which level
// the router chose) and why: the gate score of every stage that ran against its threshold, the
// latency of each stage, and the running share of images that exited early.
// URL parameters: ?bundle=<url of a bundle folder> (default ./bundle/), ?threads=N (default: up to 4
// when the page is cross-origin isolated, else 1), ?policy=exit|exit:<stage>|router|fixed:<level>
// (default: the bundle's, exit for bundles with stages), ?thresholds=s1=0.7,s2=0.6 (exit threshold
// overrides, as 'athe run --thresholds').
import * as liteRt from '@litertjs/core';
import {BundleError, Dispatcher} from './athe.js';

export const CACHE = 'athe-demo-v1';
const SHELL = ['./', 'index.html', 'app.js', 'athe.js', 'style.css', 'manifest.webmanifest',
  'icons/icon-192.png', 'icons/icon-512.png', 'vendor/litertjs/core/index.js', 'vendor/litertjs/wasm-utils/index.js'];
const HISTORY = 8;

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
// exits: images classified under an exit policy this session; early: those answered before the last stage
const state = {dispatcher: null, history: [], busy: false, exits: 0, early: 0};

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

/** ?thresholds=s1=0.7,s2=0.6 -> {s1: 0.7, s2: 0.6} (parse_thresholds of the Python runtime). */
function parseThresholds(text) {
  const out = {};
  for (const part of text.split(',').map((p) => p.trim()).filter(Boolean)) {
    const [name, value, extra] = part.split('=');
    const v = Number(value);
    if (value === undefined || extra !== undefined || value.trim() === '' || Number.isNaN(v)) {
      throw new BundleError(`?thresholds=${text}: write <stage>=<threshold>,... e.g. s1=0.7`);
    }
    out[name.trim()] = v;
  }
  return out;
}

function describeBundle(d) {
  const m = d.manifest;
  const mmacs = (x) => `${(x.macs / 1e6).toFixed(0)} M MACs`;
  const levels = m.levels.map((lv) => `${lv.name} (${mmacs(lv)})`).join(', ');
  const exits = m.stages.length ? ` · exits: ${m.stages.map((st) => `${st.name} (${mmacs(st)})`).join(' → ')}` : '';
  $('bundle-info').textContent = `${m.variant} · ${m.precision} · ${m.input.cropSize}×${m.input.cropSize} input · ` +
    `${m.labels.length} classes (${m.labels.slice(0, 3).join(', ')}, …)${exits} · levels: ${levels}`;
  const warnings = [];
  if (m.randomWeights) warnings.push('This bundle has RANDOM weights (converted with --random-weights): latency is real, labels are meaningless.');
  const exitThs = Object.values(d.exitThresholds);
  if (exitThs.length && exitThs.every((t) => t >= 1.0)) {
    const calibrated = m.calibration?.exits_calibrated === false ? 'not calibrated' : 'at 1.0';
    warnings.push(`The exit thresholds are ${calibrated} (1.0): only a gate score of exactly 1 exits early, so nearly ` +
      'every image runs the whole chain. Calibrate the gates (athe train router) or try ?thresholds=' +
      m.stageNames.slice(0, -1).map((n) => `${n}=0.6`).join(',') + '.');
  }
  if (warnings.length) {
    const w = $('warning');
    w.textContent = warnings.join(' ');
    w.hidden = false;
  }
  const policy = $('policy');
  if (m.stages.length) {
    policy.add(new Option('exit (early exits)', 'exit'));
    for (const name of m.stageNames) policy.add(new Option(`exit: ${name} always`, `exit:${name}`));
  }
  if (m.router) policy.add(new Option('router (adaptive level)', 'router'));
  for (const name of m.levelNames) policy.add(new Option(`fixed: ${name}`, `fixed:${name}`));
  policy.value = params.get('policy') || m.defaultPolicy;
  const models = m.levels.length + m.stages.length + (m.router ? 1 : 0);
  $('runtime-info').textContent = `LiteRT.js wasm · ${d.threads} thread(s)${crossOriginIsolated ? ' · cross-origin isolated' : ''} · ` +
    `${models} models loaded in ${d.loadMs.toFixed(0)} ms${d.threadNote ? ' · ' + d.threadNote : ''}`;
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

function bar(row, score, threshold) {
  const td = cell(row, '');
  if (score === undefined) return;
  const track = document.createElement('div');
  track.className = 'bar-track';
  const b = document.createElement('div');
  b.className = 'bar' + (threshold !== undefined && score >= threshold ? ' pass' : '');
  b.style.width = `${Math.round(Math.min(1, Math.max(0, score)) * 100)}%`;
  track.append(b);
  if (threshold !== undefined) {
    const mark = document.createElement('div');
    mark.className = 'mark';
    mark.style.left = `${Math.round(Math.min(1, Math.max(0, threshold)) * 100)}%`;
    mark.title = `threshold ${threshold}`;
    track.append(mark);
  }
  td.append(track);
}

function renderGates(pred) {
  const m = state.dispatcher.manifest;
  const body = $('gates').tBodies[0];
  body.replaceChildren();
  const last = m.stageNames[m.stageNames.length - 1];
  for (const name of m.stageNames) {
    const row = body.insertRow();
    const ran = name in pred.stageMs;
    cell(row, name, name === pred.exit ? 'exit-row' : '');
    const s = pred.gateScores[name];
    const th = pred.exitThresholds[name];
    if (name === last) {
      cell(row, '–');
      cell(row, ran ? 'always answers' : 'not run');
      cell(row, '');
    } else if (s === undefined) {
      cell(row, '–');
      cell(row, ran ? `${th.toFixed(3)} (not asked: ${pred.policy})` : 'not run');
      cell(row, '');
    } else {
      cell(row, s.toFixed(3));
      const passes = s >= th;
      cell(row, `${th.toFixed(3)} ${passes ? '✓ exit' : '✗ go on'}`, passes ? 'pass-mark' : 'fail-mark');
      bar(row, s, th);
    }
  }
}

function renderScores(pred) {
  const d = state.dispatcher;
  const body = $('scores').tBodies[0];
  body.replaceChildren();
  for (const name of d.manifest.levelNames) {
    const row = body.insertRow();
    const s = pred.routerScores[name];
    const th = d.thresholds[name];
    cell(row, name, name === pred.level ? 'chosen' : '');
    cell(row, s === undefined ? '–' : s.toFixed(3));
    const passes = th !== undefined && s !== undefined && s >= th;
    cell(row, th === undefined ? 'fallback' : `${th.toFixed(3)} ${passes ? '✓' : '✗'}`, passes ? 'pass-mark' : '');
    bar(row, s, th);
  }
}

function renderTimings(pred) {
  const body = $('timings').tBodies[0];
  body.replaceChildren();
  const t = pred.timingsMs;
  const rows = [['decode', t.decode], ['preprocess', t.preprocess],
    [pred.exit ? 'gates' : 'router', t.route]];
  if (pred.exit) for (const [name, ms] of Object.entries(pred.stageMs)) rows.push([`stage ${name}`, ms, 'sub']);
  rows.push([pred.exit ? 'infer (stages)' : `infer (${pred.level})`, t.infer], ['total', t.total]);
  for (const [label, ms, cls] of rows) {
    if (ms === undefined) continue;
    const row = body.insertRow();
    cell(row, label, cls);
    cell(row, ms.toFixed(2), 'num');
  }
}

function render(pred, name) {
  const m = state.dispatcher.manifest;
  $('result').hidden = false;
  $('label').textContent = pred.labelName;
  $('probability').textContent = `probability ${(pred.probability * 100).toFixed(1)} %`;
  $('answered-by').textContent = pred.exit ? 'exit' : 'level';
  $('level').textContent = pred.level;
  $('gates-block').hidden = !pred.exit;
  $('scores-block').hidden = Boolean(pred.exit) || Object.keys(pred.routerScores).length === 0;
  if (pred.exit) renderGates(pred); else renderScores(pred);
  renderTimings(pred);
  if (pred.exit) {
    state.exits += 1;
    if (pred.exit !== m.stageNames[m.stageNames.length - 1]) state.early += 1;
  }
  const answered = pred.exit ? `exit ${pred.exit}` : pred.level;
  state.history.unshift({name, label: pred.labelName, answered, total: pred.timingsMs.total});
  state.history.length = Math.min(state.history.length, HISTORY);
  $('history-card').hidden = false;
  const share = $('early-share');
  share.hidden = state.exits === 0;
  share.textContent = `exited early: ${state.early} of ${state.exits} image${state.exits === 1 ? '' : 's'} ` +
    `(${(100 * state.early / Math.max(1, state.exits)).toFixed(0)} %) under exit policies this session`;
  const hist = $('history').tBodies[0];
  hist.replaceChildren();
  for (const h of state.history) {
    const row = hist.insertRow();
    cell(row, h.name); cell(row, h.label); cell(row, h.answered); cell(row, h.total.toFixed(1), 'num');
  }
  const counts = {};
  for (const h of state.history) counts[h.answered] = (counts[h.answered] || 0) + 1;
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
  window.atheApp = {ready: false, classify, state};
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
  try {
    if (params.has('thresholds')) state.dispatcher.setExitThresholds(parseThresholds(params.get('thresholds')));
    describeBundle(state.dispatcher);
  } catch (err) {
    showError(err.message);
    window.atheApp.error = err.message;
    return;
  }
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
