// Helpers shared by the end-to-end test (e2e.mjs) and the measurement script (measure.mjs):
// start 'athe demo serve', launch Debian's Chromium with playwright-core, wait for the app, time it.
import {spawn} from 'node:child_process';

export const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

/** Start the server command; resolves {child, url} once it prints "at http://...". */
export function startServer(command) {
  return new Promise((resolve, reject) => {
    const child = spawn(command[0], command.slice(1), {stdio: ['ignore', 'pipe', 'pipe']});
    let out = '';
    const timer = setTimeout(() => reject(new Error(`server did not start in 60 s: ${out}`)), 60_000);
    const onData = (chunk) => {
      out += chunk;
      const m = out.match(/at (https?:\/\/\S+)/);
      if (m) { clearTimeout(timer); resolve({child, url: m[1]}); }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', (c) => { out += c; });
    child.on('exit', (code) => { clearTimeout(timer); reject(new Error(`server exited ${code}: ${out}`)); });
  });
}

/** Wait until the app loaded its bundle (or failed) and filled the offline cache. */
export async function waitReady(page) {
  await page.waitForFunction(() => window.atheApp && (window.atheApp.error || (window.atheApp.ready && window.atheApp.cached !== undefined)),
    null, {timeout: 120_000});
  return page.evaluate(() => ({ready: window.atheApp.ready, error: window.atheApp.error ?? null, cached: window.atheApp.cached,
    isolated: crossOriginIsolated, threads: window.atheApp.dispatcher?.threads ?? null,
    loadMs: window.atheApp.dispatcher?.loadMs ?? null, levels: window.atheApp.dispatcher?.manifest.levelNames ?? null,
    stages: window.atheApp.dispatcher?.manifest.stageNames ?? null,
    defaultPolicy: window.atheApp.dispatcher?.manifest.defaultPolicy ?? null,
    controlled: Boolean(navigator.serviceWorker.controller)}));
}

const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s.length ? (s[(s.length - 1) >> 1] + s[s.length >> 1]) / 2 : null; };

/**
 * Time the dispatcher (decode + preprocess + chain/levels, no page rendering) on the sample photos,
 * ``loops`` rounds of every photo per policy, policies interleaved. Returns per policy the median
 * total / infer / route ms, the median ms of each stage that ran and the exits taken.
 */
export async function timeRuns(page, names, policies, loops) {
  const raw = await page.evaluate(async ({names, policies, loops}) => {
    const d = window.atheApp.dispatcher;
    const blobs = [];
    for (const name of names) blobs.push([name, await (await fetch(`samples/${name}`)).blob()]);
    for (const policy of policies) await d.predictBlob(blobs[0][1], {policy, name: blobs[0][0]});  // warm-up
    const out = Object.fromEntries(policies.map((p) => [p, []]));
    for (let i = 0; i < loops; i++) {
      for (const [name, blob] of blobs) {
        for (const policy of policies) {
          const p = await d.predictBlob(blob, {policy, name});
          out[policy].push({total: p.timingsMs.total, infer: p.timingsMs.infer, route: p.timingsMs.route,
            decode: p.timingsMs.decode, preprocess: p.timingsMs.preprocess, stageMs: p.stageMs, answer: p.exit ?? p.level});
        }
      }
    }
    return out;
  }, {names, policies, loops});
  const summary = {};
  for (const [policy, runs] of Object.entries(raw)) {
    const stageMs = {};
    for (const r of runs) for (const [k, v] of Object.entries(r.stageMs)) (stageMs[k] ??= []).push(v);
    const answers = {};
    for (const r of runs) answers[r.answer] = (answers[r.answer] || 0) + 1;
    summary[policy] = {runs: runs.length, total: median(runs.map((r) => r.total)), infer: median(runs.map((r) => r.infer)),
      route: median(runs.map((r) => r.route)), decode: median(runs.map((r) => r.decode)),
      preprocess: median(runs.map((r) => r.preprocess)),
      stageMs: Object.fromEntries(Object.entries(stageMs).map(([k, v]) => [k, median(v)])), answers};
  }
  return summary;
}

/** timeRuns without and with DevTools CPU throttling (Emulation.setCPUThrottlingRate). */
export async function timeThrottled(page, cdp, names, policies, loops, rate) {
  const unthrottled = await timeRuns(page, names, policies, loops);
  await cdp.send('Emulation.setCPUThrottlingRate', {rate});
  let throttled;
  try {
    throttled = await timeRuns(page, names, policies, loops);
  } finally {
    await cdp.send('Emulation.setCPUThrottlingRate', {rate: 1});
  }
  return {rate, loops, photos: names.length, unthrottled, throttled};
}
