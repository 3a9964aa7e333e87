// End-to-end run of the demo in a real Chromium, driven by playwright-core.
//
//   node tests/e2e.mjs config.json
//
// config.json: {
//   "server": ["athe", "demo", "serve", "--bundle", "DIR", "--port", "0", "--quiet"],  // started and stopped here
//   "chromium": "/usr/bin/chromium", "out": "DIR for results.json and screenshots",
//   "samples": ["chelsea.png", ...],          // classified with every policy
//   "tensors": [[...float32...], ...],        // preprocessed by Python: logits checked without decode
//   "vectors": {...vectors.json...}            // shared preprocessing / choose_level vectors (optional)
// }
// It records everything in results.json; the Python test (tests/test_demo_web.py) judges it.
import {spawn} from 'node:child_process';
import {mkdtempSync, readFileSync, rmSync, writeFileSync} from 'node:fs';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import {chromium} from 'playwright-core';

const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const results = {console: [], errors: []};

function startServer() {
  return new Promise((resolve, reject) => {
    const child = spawn(config.server[0], config.server.slice(1), {stdio: ['ignore', 'pipe', 'pipe']});
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

async function waitReady(page) {
  await page.waitForFunction(() => window.atheApp && (window.atheApp.error || (window.atheApp.ready && window.atheApp.cached !== undefined)),
    null, {timeout: 120_000});
  return page.evaluate(() => ({ready: window.atheApp.ready, error: window.atheApp.error ?? null, cached: window.atheApp.cached,
    isolated: crossOriginIsolated, threads: window.atheApp.dispatcher?.threads ?? null,
    loadMs: window.atheApp.dispatcher?.loadMs ?? null, levels: window.atheApp.dispatcher?.manifest.levelNames ?? null,
    controlled: Boolean(navigator.serviceWorker.controller)}));
}

async function classifySamples(page, names, policies) {
  return page.evaluate(async ({names, policies}) => {
    const out = [];
    for (const name of names) {
      const blob = await (await fetch(`samples/${name}`)).blob();
      for (const policy of policies) {
        const p = await window.atheApp.classify(blob, name, policy);
        out.push({name, policy, level: p.level, label: p.label, labelName: p.labelName, probability: p.probability,
          routerScores: p.routerScores, logits: p.logits, input: p.input, timingsMs: p.timingsMs});
      }
    }
    return out;
  }, {names, policies});
}

async function main() {
  const profile = mkdtempSync(join(tmpdir(), 'athe-chromium-'));
  let server = await startServer();
  results.url = server.url;
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: config.chromium, headless: true, args: FLAGS, viewport: {width: 412, height: 915},
    deviceScaleFactor: 1, serviceWorkers: 'allow',
  });
  try {
    const page = context.pages()[0] ?? await context.newPage();
    page.on('console', (m) => results.console.push(`${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => results.errors.push(String(e)));
    await page.goto(server.url);
    results.first = await waitReady(page);
    if (results.first.error) throw new Error(`app failed to load: ${results.first.error}`);
    // the service worker controls the page after it activates; reload once so it serves everything
    await page.waitForFunction(() => navigator.serviceWorker.controller !== null, null, {timeout: 30_000});

    const cdp = await context.newCDPSession(page);
    results.installability = (await cdp.send('Page.getInstallabilityErrors')).installabilityErrors;
    const manifest = await cdp.send('Page.getAppManifest');
    results.manifestErrors = manifest.errors;
    results.manifestUrl = manifest.url;

    const levels = results.first.levels;
    const policies = ['router', ...levels.map((l) => `fixed:${l}`)];
    results.samples = await classifySamples(page, config.samples, policies);
    results.tensors = await page.evaluate(async ({tensors, policies}) => {
      const d = window.atheApp.dispatcher;
      const out = [];
      for (const t of tensors) {
        const row = {};
        for (const policy of policies) {
          const p = await d.predictTensor(Float32Array.from(t), {policy});
          row[policy] = {level: p.level, logits: p.logits, routerScores: p.routerScores};
        }
        out.push(row);
      }
      return out;
    }, {tensors: config.tensors ?? [], policies});
    if (config.vectors) {
      results.vectors = await page.evaluate(async (vectors) => {
        const athe = await import('./athe.js');
        const pre = vectors.preprocess.map((c) => {
          const r = athe.preprocessRGB(Uint8Array.from(c.rgb), c.width, c.height, athe.inputSpec(c.spec));
          return {tensor: Array.from(r.tensor), resized: Array.from(r.resized)};
        });
        const levels = vectors.choose_level.map((c) => athe.chooseLevel(c.scores, c.level_names, c.thresholds));
        const top1 = vectors.softmax_top1.map((c) => athe.softmaxTop1(Float32Array.from(c.logits)));  // logits are float32 at run time
        const manifests = vectors.manifests.map((c) => {
          try {
            const m = 'manifest' in c ? athe.parseManifest(c.manifest) : athe.parseManifestText(c.text);
            return {ok: true, levelNames: m.levelNames, thresholds: m.router?.thresholds ?? null, labels: m.labels};
          } catch (err) { return {ok: false, error: err.message}; }
        });
        return {preprocess: pre, chooseLevel: levels, softmaxTop1: top1, manifests};
      }, config.vectors);
    }
    await page.evaluate(async (name) => {
      const blob = await (await fetch(`samples/${name}`)).blob();
      await window.atheApp.classify(blob, name, 'router');
    }, config.samples[0]);
    await page.screenshot({path: join(config.out, 'online.png'), fullPage: true});

    // offline: stop the server, reload, classify again from the service worker's cache
    server.child.kill('SIGTERM');
    await new Promise((r) => server.child.once('exit', r));
    server = null;
    const offlineFetch = await page.evaluate(async (url) => { try { await fetch(url, {cache: 'no-store'}); return 'served'; } catch (e) { return 'failed'; } }, results.url + 'index.html?probe');
    results.offlineProbe = offlineFetch;
    await page.reload();
    results.offline = await waitReady(page);
    if (!results.offline.error) {
      results.offlineSamples = await classifySamples(page, [config.samples[1] ?? config.samples[0]], ['router']);
    }
    await page.screenshot({path: join(config.out, 'offline.png'), fullPage: true});
  } finally {
    await context.close();
    if (server) server.child.kill('SIGTERM');
    rmSync(profile, {recursive: true, force: true});
  }
}

main().then(() => {
  writeFileSync(join(config.out, 'results.json'), JSON.stringify(results));
  console.log('e2e: done');
}, (err) => {
  results.fatal = String(err.stack || err);
  writeFileSync(join(config.out, 'results.json'), JSON.stringify(results));
  console.error(results.fatal);
  process.exit(1);
});
