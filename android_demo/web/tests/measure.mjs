// Time the demo in headless Chromium, unthrottled and with DevTools CPU throttling, and take the
// README screenshot. Not a test: the numbers go in the README's phone-demo section.
//
//   node tests/measure.mjs config.json
//
// config.json: {
//   "server": ["python", "tests/serve_stages.py", "--bundle", "DIR", "--port", "0", "--quiet"],
//   "chromium": "/usr/bin/chromium", "out": "DIR",
//   "runs": [{"query": "?threads=1", "policies": ["exit", "fixed:dense"]}, ...],   // one page load each
//   "loops": 5, "rate": 4,                      // rounds over the sample photos; throttling factor
//   "screenshot": {"query": "?thresholds=s1=0.6", "samples": ["chelsea.png", ...], "file": "phone-demo.png"}
// }
// Writes out/measure.json ({query: timeThrottled(...)}) and the screenshot.
import {mkdtempSync, readFileSync, rmSync, writeFileSync} from 'node:fs';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import {chromium} from 'playwright-core';
import {FLAGS, startServer, timeThrottled, waitReady} from './lib.mjs';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));

async function main() {
  const profile = mkdtempSync(join(tmpdir(), 'athe-chromium-'));
  const server = await startServer(config.server);
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: config.chromium, headless: true, args: FLAGS, viewport: {width: 412, height: 915},
    deviceScaleFactor: 1, serviceWorkers: 'allow',
  });
  const out = {url: server.url, runs: {}};
  try {
    const page = context.pages()[0] ?? await context.newPage();
    const cdp = await context.newCDPSession(page);
    const samples = await (await fetch(new URL('samples/index.json', server.url))).json();
    for (const run of config.runs ?? []) {
      await page.goto(new URL(run.query ?? '', server.url).href);
      const ready = await waitReady(page);
      if (ready.error) throw new Error(ready.error);
      const lat = await timeThrottled(page, cdp, run.samples ?? samples, run.policies ?? [ready.defaultPolicy],
        config.loops ?? 5, config.rate ?? 4);
      out.runs[run.query ?? ''] = {...lat, threads: ready.threads, loadMs: ready.loadMs};
      console.log(JSON.stringify({query: run.query, threads: ready.threads, unthrottled: Object.fromEntries(
        Object.entries(lat.unthrottled).map(([k, v]) => [k, v.total])), throttled: Object.fromEntries(
        Object.entries(lat.throttled).map(([k, v]) => [k, v.total]))}));
    }
    if (config.screenshot) {
      const shot = config.screenshot;
      await page.goto(new URL(shot.query ?? '', server.url).href);
      const ready = await waitReady(page);
      if (ready.error) throw new Error(ready.error);
      out.screenshot = await page.evaluate(async (names) => {
        const got = [];
        for (const name of names) {
          const p = await window.atheApp.classify(await (await fetch(`samples/${name}`)).blob(), name);
          got.push({name, exit: p.exit, level: p.level, label: p.labelName, probability: p.probability,
            gateScores: p.gateScores, exitThresholds: p.exitThresholds, stageMs: p.stageMs, timingsMs: p.timingsMs});
        }
        return got;
      }, shot.samples ?? samples);
      await page.screenshot({path: join(config.out, shot.file ?? 'phone-demo.png'), fullPage: true});
    }
  } finally {
    await context.close();
    server.child.kill('SIGTERM');
    rmSync(profile, {recursive: true, force: true});
  }
  writeFileSync(join(config.out, 'measure.json'), JSON.stringify(out, null, 1));
}

main().catch((err) => { console.error(err.stack || err); process.exit(1); });
