// End-to-end run of the demo in a real Chromium, driven by playwright-core.
//
//   node tests/e2e.mjs config.json
//
// config.json: {
//   "server": ["athe", "demo", "serve", "--bundle", "DIR", "--port", "0", "--quiet"],  // started and stopped here
//   "chromium": "/usr/bin/chromium", "out": "DIR for results.json and screenshots",
//   "samples": ["chelsea.png", ...],          // classified with every policy
//   "policies": ["exit", "exit:s1", ..., "router", "fixed:simple", ...],   // default: the bundle's own list
//   "tensors": [[...float32...], ...],        // preprocessed by Python: logits checked without decode
//   "vectors": {...vectors.json...},           // shared vectors (optional), checked by tests/vector_checks.mjs
//   "timing": {"loops": 3, "rate": 4}          // optional: latency unthrottled and with CPU throttling
// }
// It records everything in results.json; the Python test (tests/test_demo_web.py) judges it.
import {mkdtempSync, readFileSync, rmSync, writeFileSync} from 'node:fs';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import {chromium} from 'playwright-core';
import {FLAGS, startServer, timeThrottled, waitReady} from './lib.mjs';
import {vectorChecks} from './vector_checks.mjs';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const results = {console: [], errors: []};

async function classifySamples(page, names, policies) {
  return page.evaluate(async ({names, policies}) => {
    const out = [];
    for (const name of names) {
      const blob = await (await fetch(`samples/${name}`)).blob();
      for (const policy of policies) {
        const p = await window.atheApp.classify(blob, name, policy);
        out.push({name, policy, level: p.level, exit: p.exit, label: p.label, labelName: p.labelName, probability: p.probability,
          routerScores: p.routerScores, gateScores: p.gateScores, stageMs: p.stageMs, exitThresholds: p.exitThresholds,
          logits: p.logits, input: p.input, timingsMs: p.timingsMs});
      }
    }
    return out;
  }, {names, policies});
}

/** What the page shows after the last classification: the gate table, the early-exit share. */
async function pageText(page) {
  return page.evaluate(() => {
    const rows = (id) => [...document.querySelectorAll(`#${id} tbody tr`)].map((r) => [...r.cells].map((c) => c.textContent));
    return {answeredBy: document.getElementById('answered-by').textContent, badge: document.getElementById('level').textContent,
      gatesShown: !document.getElementById('gates-block').hidden, gates: rows('gates'), timings: rows('timings'),
      earlyShare: document.getElementById('early-share').textContent, state: {...window.atheApp.state, history: undefined},
      policyOptions: [...document.getElementById('policy').options].map((o) => o.value),
      policy: document.getElementById('policy').value, warning: document.getElementById('warning').textContent};
  });
}

async function main() {
  const profile = mkdtempSync(join(tmpdir(), 'athe-chromium-'));
  let server = await startServer(config.server);
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

    const {levels, stages} = results.first;
    const policies = config.policies ?? [...(stages.length ? ['exit', ...stages.map((s) => `exit:${s}`)] : []), 'router',
      ...levels.map((l) => `fixed:${l}`)];
    results.policies = policies;
    results.samples = await classifySamples(page, config.samples, policies);
    results.tensors = await page.evaluate(async ({tensors, policies}) => {
      const d = window.atheApp.dispatcher;
      const out = [];
      for (const t of tensors) {
        const row = {};
        for (const policy of policies) {
          const p = await d.predictTensor(Float32Array.from(t), {policy});
          row[policy] = {level: p.level, exit: p.exit, logits: p.logits, routerScores: p.routerScores, gateScores: p.gateScores};
        }
        out.push(row);
      }
      return out;
    }, {tensors: config.tensors ?? [], policies});
    if (config.vectors) {
      results.vectors = await page.evaluate(vectorChecks, {vectors: config.vectors, atheUrl: new URL('athe.js', server.url).href});
    }
    // the screen after an image classified with the bundle's default policy (the exit chain)
    await page.evaluate(async (name) => {
      const blob = await (await fetch(`samples/${name}`)).blob();
      await window.atheApp.classify(blob, name, window.atheApp.dispatcher.manifest.defaultPolicy);
    }, config.samples[0]);
    results.page = await pageText(page);
    await page.screenshot({path: join(config.out, 'online.png'), fullPage: true});
    if (config.timing) {
      const policiesTimed = config.timing.policies ?? [results.first.defaultPolicy];
      results.latency = await timeThrottled(page, cdp, config.samples, policiesTimed, config.timing.loops ?? 3,
        config.timing.rate ?? 4);
      results.latency.threads = results.first.threads;
    }

    // offline: stop the server, reload, classify again from the service worker's cache
    server.child.kill('SIGTERM');
    await new Promise((r) => server.child.once('exit', r));
    server = null;
    const offlineFetch = await page.evaluate(async (url) => { try { await fetch(url, {cache: 'no-store'}); return 'served'; } catch (e) { return 'failed'; } }, results.url + 'index.html?probe');
    results.offlineProbe = offlineFetch;
    await page.reload();
    results.offline = await waitReady(page);
    if (!results.offline.error) {
      results.offlineSamples = await classifySamples(page, [config.samples[1] ?? config.samples[0]],
        [results.offline.defaultPolicy]);
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
