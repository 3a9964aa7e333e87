// athe.js on the shared vectors (android_demo/vectors/vectors.json): what it computes for every
// case, for tests/test_demo_web.py to compare with Python. Self-contained, so the end-to-end test
// can run it inside the page (page.evaluate serialises the function) and node can run it too:
//
//   node tests/vector_checks.mjs ../vectors/vectors.json     # prints a summary, exit 1 on a mismatch
//
// The function imports athe.js from ``atheUrl`` and returns plain JSON.
export async function vectorChecks({vectors, atheUrl}) {
  const athe = await import(atheUrl);
  const attempt = (fn) => { try { return {ok: true, value: fn()}; } catch (err) { return {ok: false, error: err.message}; } };
  const pre = vectors.preprocess.map((c) => {
    const r = athe.preprocessRGB(Uint8Array.from(c.rgb), c.width, c.height, athe.inputSpec(c.spec));
    return {tensor: Array.from(r.tensor), resized: Array.from(r.resized)};
  });
  const levels = vectors.choose_level.map((c) => athe.chooseLevel(c.scores, c.level_names, c.thresholds));
  const top1 = vectors.softmax_top1.map((c) => athe.softmaxTop1(Float32Array.from(c.logits)));  // logits are float32 at run time
  const manifests = vectors.manifests.map((c) => {
    try {
      const m = 'manifest' in c ? athe.parseManifest(c.manifest) : athe.parseManifestText(c.text);
      return {ok: true, levelNames: m.levelNames, thresholds: m.router?.thresholds ?? null, labels: m.labels,
        schemaVersion: m.schemaVersion, stageNames: m.stageNames, defaultPolicy: m.defaultPolicy,
        exitThresholds: m.exitThresholds,
        stages: m.stages.map((st) => ({name: st.name, inputs: st.inputs, outputs: st.outputs, tokens: st.tokens,
          token_selection: st.tokenSelection, threshold: st.threshold, gate: st.gate}))};
    } catch (err) { return {ok: false, error: err.message}; }
  });
  // one field wrong at a time: the edits applied to a copy of the base (make_vectors.apply_edits)
  const applyEdits = (base, edits) => {
    const d = JSON.parse(JSON.stringify(base));
    for (const [op, path, value] of edits) {
      const keys = path.split('.').map((k) => (/^\d+$/.test(k) ? Number(k) : k));
      let node = d;
      for (const k of keys.slice(0, -1)) node = node[k];
      if (op === 'put') node[keys[keys.length - 1]] = JSON.parse(JSON.stringify(value));
      else if (Array.isArray(node)) node.splice(keys[keys.length - 1], 1);
      else delete node[keys[keys.length - 1]];
    }
    return d;
  };
  const edits = (vectors.manifest_edits ?? []).map((c) => attempt(() => {
    const m = athe.parseManifest(applyEdits(vectors.manifest_edit_base, c.edits));
    return {levelNames: m.levelNames, stageNames: m.stageNames};
  }));
  const gates = vectors.gate_score.map((c) => attempt(() => ({
    score: athe.gateScore(c.gate, Float32Array.from(c.logits), c.cls === null ? null : Float32Array.from(c.cls)),
    features: athe.softmaxFeatures(Float32Array.from(c.logits)),
  })));
  // the exit rule alone: gates that answer the given scores
  const decisions = [];
  for (const c of vectors.exit_decisions) {
    const stages = c.stage_names.map((name, i) => ({name, tokens: 1, inputs: [i ? 'tokens' : 'image'],
      outputs: i === c.stage_names.length - 1 ? ['logits'] : ['tokens', 'logits']}));
    const given = Object.fromEntries(Object.entries(c.scores).map(([n, s]) => [n, {needsCls: false, score: () => s}]));
    const out = await athe.runChain(stages, async (st) => st.outputs.map(() => new Float32Array(3)), new Float32Array(12),
      {thresholds: c.thresholds, gates: given});
    decisions.push(out.exit);
  }
  // whole chains with stand-in stage artifacts
  const chains = [];
  for (const c of vectors.chains) {
    try {
      const m = athe.parseManifest(c.manifest);
      const image = Float32Array.from(c.image);
      const source = new Map([[image, ['input', 'image']]]);
      const feeds = {};
      const run = async (st, inputs) => {
        feeds[st.name] = inputs.map((a) => source.get(a) ?? ['unknown', String(a.length)]);
        return st.outputs.map((n) => {
          const a = Float32Array.from(c.outputs[st.name][n]);
          source.set(a, [st.name, n]);
          return a;
        });
      };
      const p = athe.parsePolicy(c.policy, m.levelNames, m.stageNames);
      const gatesByStage = {};
      for (const st of m.stages.slice(0, -1)) gatesByStage[st.name] = athe.compileGate(st.gate);
      const out = await athe.runChain(m.stages, run, image,
        {stopAt: p.stage, thresholds: {...m.exitThresholds, ...(c.thresholds ?? {})}, gates: gatesByStage});
      const top = athe.softmaxTop1(out.logits);
      chains.push({ok: true, exit: out.exit, ran: out.ran, feeds, gateScores: out.gateScores, logits: Array.from(out.logits),
        label: top.index, probability: top.probability});
    } catch (err) { chains.push({ok: false, error: err.message}); }
  }
  const policies = vectors.policies.map((c) => attempt(() => {
    const p = athe.parsePolicy(c.policy, c.level_names, c.stage_names);
    return {kind: p.kind, stage: p.stage, level: p.level};
  }));
  return {preprocess: pre, chooseLevel: levels, softmaxTop1: top1, manifests, manifestEdits: edits, gateScore: gates,
    exitDecisions: decisions, chains, policies};
}

// node tests/vector_checks.mjs VECTORS: the same checks as tests/test_demo_web.py, without a browser
if (typeof process !== 'undefined' && process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  const {readFileSync} = await import('node:fs');
  const vectors = JSON.parse(readFileSync(process.argv[2], 'utf8'));
  const got = await vectorChecks({vectors, atheUrl: new URL('../athe.js', import.meta.url).href});
  const bad = [];
  const eq = (a, b) => JSON.stringify(a) === JSON.stringify(b);
  vectors.manifests.forEach((c, i) => {
    const o = got.manifests[i];
    if ('error' in c) {
      if (o.ok || !o.error.includes(c.error_contains) || (c.exact && o.error !== c.error)) bad.push(['manifest', c.name, o.error ?? 'accepted', c.error]);
    } else if (!c.expected.formats.includes('tflite')) {
      if (o.ok || !o.error.includes('no .tflite file')) bad.push(['manifest', c.name, o]);
    } else if (!o.ok || !eq(o.levelNames, c.expected.level_names) || !eq(o.stageNames, c.expected.stage_names)
               || o.defaultPolicy !== c.expected.default_policy) {
      bad.push(['manifest', c.name, o]);
    }
  });
  vectors.manifest_edits.forEach((c, i) => {
    const o = got.manifestEdits[i];
    if ('error' in c) {
      if (o.ok || !o.error.includes(c.error_contains) || (c.exact_js && o.error !== c.error)) bad.push(['edit', c.name, o.error ?? 'accepted', c.error]);
    } else if (!o.ok || !eq(o.value.levelNames, c.expected.level_names) || !eq(o.value.stageNames, c.expected.stage_names)) {
      bad.push(['edit', c.name, o]);
    }
  });
  vectors.gate_score.forEach((c, i) => {
    const o = got.gateScore[i];
    if ('error' in c) { if (o.ok || !o.error.includes(c.error_contains)) bad.push(['gate', c.name, o]); }
    else if (!o.ok || Math.abs(o.value.score - c.score) > 1e-12
             || o.value.features.some((v, j) => Math.abs(v - c.features[j]) > 1e-12)) bad.push(['gate', c.name, o, c.score]);
  });
  vectors.exit_decisions.forEach((c, i) => { if (got.exitDecisions[i] !== c.expected) bad.push(['decision', c.name, got.exitDecisions[i]]); });
  vectors.chains.forEach((c, i) => {
    const o = got.chains[i], e = c.expected;
    if (!o.ok || o.exit !== e.exit || !eq(o.ran, e.ran) || !eq(o.feeds, e.feeds) || o.label !== e.label
        || !eq(Object.keys(o.gateScores), Object.keys(e.gate_scores))
        || Object.keys(e.gate_scores).some((k) => Math.abs(o.gateScores[k] - e.gate_scores[k]) > 1e-12)) bad.push(['chain', c.name, o, e]);
  });
  vectors.policies.forEach((c, i) => {
    const o = got.policies[i];
    if ('error' in c) { if (o.ok || !o.error.includes(c.error_contains)) bad.push(['policy', c.name, o]); }
    else if (c.expected.phone ? (!o.ok || o.value.kind !== c.expected.kind || o.value.stage !== c.expected.stage || o.value.level !== c.expected.level)
                              : (o.ok || !o.error.includes('not available on the phone'))) bad.push(['policy', c.name, o]);
  });
  for (const b of bad) console.log(JSON.stringify(b));
  console.log(`${bad.length} mismatches`);
  process.exit(bad.length ? 1 : 0);
}
