// ATHE dispatch logic for the browser: manifest checks, Pillow-exact preprocessing, the exit chain
// (stage artifacts, gate scores, thresholds), level choice, and a Dispatcher that runs a bundle's
// .tflite stages, router and levels with LiteRT.js.
//
// The rules mirror the Python runtime (athe/runtime/manifest.py, gates.py, preprocess.py,
// dispatcher.py) and are checked against the shared vectors in android_demo/vectors/vectors.json by
// the end-to-end test, so the browser, the Android core and Python agree.
//
//   import {Dispatcher} from './athe.js';
//   const d = await Dispatcher.create('./bundle/', {wasmPath: './vendor/litertjs/wasm/'});
//   const p = await d.predictBlob(file);   // {label, probability, level, exit, gateScores, stageMs, timingsMs, ...}

export const SCHEMA_VERSION = 2;
export const STAGES = ['decode', 'preprocess', 'route', 'infer', 'total'];
export const MAX_PIXELS = 80_000_000;  // same refusal limit as the Python decoder

export class BundleError extends Error {
  constructor(message) { super(message); this.name = 'BundleError'; }
}

export class ImageError extends Error {
  constructor(message) { super(message); this.name = 'ImageError'; }
}

// -- Python's repr, for messages identical to the Python runtime's ---------------------------------
/** repr(float) for a JS number: shortest round-trip digits, Python's exponent rules (1e-05, 1e+16). */
function pyNumber(v) {
  if (!Number.isFinite(v)) return Number.isNaN(v) ? 'nan' : v > 0 ? 'inf' : '-inf';
  if (Number.isInteger(v) && Math.abs(v) < 1e16) return String(v);  // a JSON integer (int in Python)
  const a = Math.abs(v);
  if (a >= 1e-4 && a < 1e16) return String(v);
  const [mantissa, exponent] = v.toExponential().split('e');
  const e = Number(exponent);
  return `${mantissa}e${e < 0 ? '-' : '+'}${String(Math.abs(e)).padStart(2, '0')}`;
}

/** repr(str): single quotes unless the text holds a single quote and no double quote. */
function pyString(text) {
  const quote = text.includes("'") && !text.includes('"') ? '"' : "'";
  let out = quote;
  for (const ch of text) {
    const c = ch.codePointAt(0);
    if (ch === quote || ch === '\\') out += '\\' + ch;
    else if (ch === '\n') out += '\\n';
    else if (ch === '\r') out += '\\r';
    else if (ch === '\t') out += '\\t';
    else if (c < 0x20 || c === 0x7f) out += '\\x' + c.toString(16).padStart(2, '0');
    else out += ch;
  }
  return out + quote;
}

/** Python's repr of a parsed JSON value (lists as lists, objects as dicts, true as True). */
export function py(v) {
  if (v === null || v === undefined) return 'None';
  if (typeof v === 'boolean') return v ? 'True' : 'False';
  if (typeof v === 'number') return pyNumber(v);
  if (typeof v === 'string') return pyString(v);
  if (Array.isArray(v)) return `[${v.map(py).join(', ')}]`;
  return `{${Object.entries(v).map(([k, x]) => `${pyString(k)}: ${py(x)}`).join(', ')}}`;
}

/** repr(tuple(items)). */
function pyTuple(items) {
  return items.length === 1 ? `(${py(items[0])},)` : `(${items.map(py).join(', ')})`;
}

// -- manifest ------------------------------------------------------------------------------------
// The same checks, in the same order, with the same messages as athe/runtime/manifest.py
// (Manifest.from_dict and its field validators), so the shared vectors hold for Python, Java and
// this file; then what the browser needs: .tflite files, one image at a time.
const PRECISIONS = ['fp32', 'int8-dynamic', 'int8-static'];
const ALL_FORMATS = ['tflite', 'pte', 'pt2'];
const INPUT_FIELDS = ['rule', 'resize_size', 'crop_size', 'interpolation', 'mean', 'std', 'layout', 'dtype', 'scale', 'batch_size'];
const ARTIFACT_FIELDS = ['path', 'sha256', 'bytes', 'precision', 'parity', 'delegation'];
const INTERPOLATIONS = ['bicubic', 'bilinear', 'nearest'];
const LAYOUTS = ['NCHW', 'NHWC'];
const TOKEN_SELECTIONS = ['none', 'in-graph'];
export const MAX_INPUT_SIZE = 4096;
/** Calibration's "never take this level" router threshold (routing.NEVER). */
export const NEVER_THRESHOLD = 1e9;
export const GATE_KINDS = ['logistic', 'max_softmax'];
export const GATE_FEATURES = ['max_prob', 'margin', 'entropy', 'cls'];
/** What a stage artifact can take and give, by name (manifest STAGE_IO). */
export const STAGE_IO = ['image', 'tokens', 'scores', 'logits'];
const STAGE_FIELDS = ['name', 'blocks', 'keep', 'fuse', 'heads', 'tokens', 'macs', 'inputs', 'outputs', 'token_selection', 'files'];
const CONVERT = "re-run 'athe convert'";
const GATE_FIX = "re-run 'athe train router' (it fits the exit gates)";
const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
const SHA256 = /^[0-9a-fA-F]{64}$/;
const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
const has = (o, k) => Object.prototype.hasOwnProperty.call(o, k);
const sortedPy = (xs) => [...xs].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));  // Python's sorted() of strings

/** What a JSON value is, for messages: '12' (a string). */
function kind(value) {
  if (value === null || value === undefined) return 'null';
  const k = typeof value === 'boolean' ? 'a boolean' : typeof value === 'number' ? 'a number'
    : typeof value === 'string' ? 'a string' : Array.isArray(value) ? 'a list' : 'an object';
  const text = py(value);
  return `${text.length <= 40 ? text : text.slice(0, 37) + '...'} (${k})`;
}

function bad(where, want, value, fix = CONVERT) {
  return new BundleError(`${where} must be ${want}, got ${kind(value)}; ${fix}`);
}

/** Python's f"{x:g}" for the bounds in messages. */
function g(x) {
  if (Number.isInteger(x) && Math.abs(x) < 1e6) return String(x);
  const [m, e] = x.toExponential().split('e');
  const exp = Number(e);
  return exp < -4 || exp >= 6 ? `${m}e${exp < 0 ? '-' : '+'}${String(Math.abs(exp)).padStart(2, '0')}` : String(x);
}

function require(obj, keys, where) {
  if (!isObject(obj)) throw new BundleError(`${where}: expected an object, got ${kind(obj)}; ${CONVERT}`);
  const missing = keys.filter((k) => !has(obj, k));
  if (missing.length) {
    throw new BundleError(`${where}: missing field(s) ${py(missing)}; re-run 'athe convert' to write a complete manifest`);
  }
}

function object(value, where) {
  if (!isObject(value)) throw bad(where, 'an object', value);
  return value;
}

function text(value, where) {
  if (typeof value !== 'string' || !value.trim()) throw bad(where, 'a non-empty string', value);
  return value;
}

function flag(value, where) {
  if (typeof value !== 'boolean') throw bad(where, 'true or false (a JSON boolean, not a string or number)', value);
  return value;
}

function integer(value, where, lo = 0, hi = null, fix = CONVERT) {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < lo || (hi !== null && value > hi)) {
    throw bad(where, hi !== null ? `an integer in [${lo}, ${hi}]` : `an integer >= ${lo}`, value, fix);
  }
  return value;
}

/** _finite: a finite JSON number, else null. */
function finite(value) {
  return typeof value === 'number' && Number.isFinite(value) ? value : null;
}

function number(value, where, lo = null, hi = null, loOpen = false, fix = CONVERT) {
  const n = finite(value);
  if (n === null || (lo !== null && (loOpen ? n <= lo : n < lo)) || (hi !== null && n > hi)) {
    let want = 'a finite number';
    if (lo !== null && hi !== null) want = `a finite number in ${loOpen ? '(' : '['}${g(lo)}, ${g(hi)}]`;
    else if (lo !== null) want = `a finite number ${loOpen ? '>' : '>='} ${g(lo)}`;
    throw bad(where, want, value, fix);
  }
  return n;
}

const optionalNumber = (value, where, lo, hi) => (value === null || value === undefined ? null : number(value, where, lo, hi));

function numbers(value, where, fix = CONVERT) {
  if (!Array.isArray(value)) throw bad(where, 'a list of numbers', value, fix);
  return value.map((v, i) => number(v, `${where}[${i}]`, null, null, false, fix));
}

function name(value, where, what) {
  if (typeof value !== 'string' || !NAME.test(value)) {
    throw bad(where, `a ${what} name: 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit`, value);
  }
  return value;
}

function ownerName(value, where, what) {
  const n = name(value, where, what);
  if (n === 'router') {
    throw new BundleError(`${where}: a ${what} may not be named 'router' (that name is the router's artifacts); ${CONVERT} with another name`);
  }
  return n;
}

const repeatedOf = (names) => sortedPy([...new Set(names.filter((n, i) => names.indexOf(n) !== i))]);

function labelsOf(value, where) {
  if (!Array.isArray(value)) throw bad(where, "a list of class-name strings (in the model's output order)", value);
  value.forEach((label, i) => {
    if (typeof label !== 'string' || !label.trim()) throw bad(`${where}[${i}]`, 'a non-empty string (a class name)', label);
  });
  const repeated = repeatedOf(value);
  if (repeated.length) {
    throw new BundleError(`${where}: ${py(repeated)} appear more than once; each model output needs its own class name; ${CONVERT}`);
  }
  return value.slice();
}

/** _input: the preprocessing section. */
function input(d, where) {
  require(d, ['rule', 'resize_size', 'crop_size', 'interpolation', 'mean', 'std'], where);
  if (d.rule !== 'resize_shorter_center_crop') {
    throw new BundleError(`${where.slice(0, where.lastIndexOf(': '))}: input.rule ${py(d.rule)} unknown; expected 'resize_shorter_center_crop'`);
  }
  const unknown = sortedPy(Object.keys(d).filter((k) => !INPUT_FIELDS.includes(k)));
  if (unknown.length) throw new BundleError(`${where}: unknown field(s) ${py(unknown)} (malformed, or written by a newer athe); ${CONVERT}`);
  const sizeFix = `a side of at most ${MAX_INPUT_SIZE} pixels bounds the resize buffer; ${CONVERT}`;
  const resize = integer(d.resize_size, `${where}.resize_size`, 1, MAX_INPUT_SIZE, sizeFix);
  const crop = integer(d.crop_size, `${where}.crop_size`, 1, MAX_INPUT_SIZE, sizeFix);
  if (typeof d.interpolation !== 'string' || !INTERPOLATIONS.includes(d.interpolation)) {
    throw new BundleError(`${where}.interpolation: interpolation ${py(d.interpolation)} unknown; expected one of ${py(INTERPOLATIONS)}`);
  }
  const channels = '3 finite numbers, one per RGB channel';
  if (!Array.isArray(d.mean) || d.mean.length !== 3) throw bad(`${where}.mean`, channels, d.mean);
  if (!Array.isArray(d.std) || d.std.length !== 3) throw bad(`${where}.std`, channels, d.std);
  const mean = d.mean.map((v, i) => number(v, `${where}.mean[${i}]`));
  const std = d.std.map((v, i) => number(v, `${where}.std[${i}]`, 0.0, null, true, `a standard deviation of 0 divides by zero; ${CONVERT}`));
  const layout = has(d, 'layout') ? d.layout : 'NCHW';
  if (typeof layout !== 'string' || !LAYOUTS.includes(layout)) {
    throw new BundleError(`${where}.layout: ${py(layout)} unknown; expected one of ${py(LAYOUTS)}`);
  }
  const dtype = has(d, 'dtype') ? d.dtype : 'float32';
  if (dtype !== 'float32') throw new BundleError(`${where}.dtype: ${py(dtype)} unsupported; this runtime feeds float32 tensors`);
  const scale = number(has(d, 'scale') ? d.scale : 1 / 255, `${where}.scale`, 0.0, 1.0, true,
    `pixels are multiplied by it (1/255 for 8-bit images); ${CONVERT}`);
  const batchSize = integer(has(d, 'batch_size') ? d.batch_size : 1, `${where}.batch_size`, 1, 4096);
  return {rule: d.rule, resize_size: resize, crop_size: crop, interpolation: d.interpolation, mean, std, layout, dtype,
    scale, batch_size: batchSize};
}

/** _artifact: one file of one format. */
function artifact(a, where) {
  require(a, ['path', 'sha256', 'bytes'], where);
  const unknown = sortedPy(Object.keys(a).filter((k) => !ARTIFACT_FIELDS.includes(k)));
  if (unknown.length) throw new BundleError(`${where}: unknown field(s) ${py(unknown)} (malformed, or written by a newer athe); ${CONVERT}`);
  const path = a.path;
  if (typeof path !== 'string' || !path.trim() || path.includes('\0') || path === '.' || path === '..') {
    throw bad(`${where}.path`, 'a file name relative to the bundle folder', path);
  }
  if (path.startsWith('/') || path.split('/').includes('..')) {
    throw new BundleError(`${where}: path ${py(path)} must be relative to the bundle folder`);
  }
  if (typeof a.sha256 !== 'string' || !SHA256.test(a.sha256)) throw bad(`${where}.sha256`, "the file's sha256 as 64 hex digits", a.sha256);
  const bytes = integer(a.bytes, `${where}.bytes`, 1, 2 ** 50);
  const precision = has(a, 'precision') ? a.precision : 'fp32';
  if (typeof precision !== 'string' || !PRECISIONS.includes(precision)) {
    throw new BundleError(`${where}.precision: ${py(precision)} unknown; expected one of ${pyTuple(PRECISIONS)}`);
  }
  object(has(a, 'parity') ? a.parity : {}, `${where}.parity`);
  if (a.delegation !== null && a.delegation !== undefined) object(a.delegation, `${where}.delegation`);
  return {path, sha256: a.sha256, bytes, precision};
}

function files(d, where) {
  if (!isObject(d) || Object.keys(d).length === 0) throw new BundleError(`${where}: files must name at least one format`);
  const out = {};
  for (const [fmt, a] of Object.entries(d)) {
    if (!ALL_FORMATS.includes(fmt)) throw new BundleError(`${where}: unknown format ${py(fmt)}; expected one of ${pyTuple(ALL_FORMATS)}`);
    out[fmt] = artifact(a, `${where}.${fmt}`);
  }
  return out;
}

function tflite(fileMap, where) {
  if (!fileMap.tflite) {
    throw new BundleError(`${where}: has no .tflite file; the browser runs LiteRT: re-run 'athe convert --format tflite'`);
  }
  return fileMap.tflite;
}

/** _level: one level of the adaptive model. */
function level(d, where) {
  require(d, ['name', 'keep', 'heads', 'fuse', 'tokens_per_block', 'macs', 'files'], where);
  const n = ownerName(d.name, `${where}.name`, 'level');
  if (!Array.isArray(d.keep)) throw bad(`${where}.keep`, 'a list of [block, ratio] pairs ([] keeps every token)', d.keep);
  d.keep.forEach((pair, i) => {
    if (!Array.isArray(pair) || pair.length !== 2) throw bad(`${where}.keep[${i}]`, 'a [block, ratio] pair', pair);
    integer(pair[0], `${where}.keep[${i}][0]`, 0, 4096);
    number(pair[1], `${where}.keep[${i}][1]`, 0.0, 1.0, true);
  });
  if (!Array.isArray(d.tokens_per_block)) throw bad(`${where}.tokens_per_block`, 'a list of token counts', d.tokens_per_block);
  const heads = integer(d.heads, `${where}.heads`, 1, 4096);
  flag(d.fuse, `${where}.fuse`);
  const tokensPerBlock = d.tokens_per_block.map((t, i) => integer(t, `${where}.tokens_per_block[${i}]`, 1));
  const macs = integer(d.macs, `${where}.macs`, 0);
  const fileMap = files(d.files, `${where}.files`);
  const valAccuracy = optionalNumber(d.val_accuracy, `${where}.val_accuracy`, 0.0, 100.0);
  return {name: n, heads, tokensPerBlock, macs, valAccuracy, files: fileMap, where: `${where}.files`};
}

/** _unit: a finite number in [0, 1] (an exit threshold). */
function unit(value, where) {
  if (finite(value) === null || !(value >= 0 && value <= 1)) {
    throw new BundleError(`${where}: ${py(value)} must be a number in [0, 1]; re-run calibration`);
  }
  return value;
}

/** _router_threshold: in [0, 1], or NEVER_THRESHOLD. */
function routerThreshold(value, where) {
  if (finite(value) === NEVER_THRESHOLD) return NEVER_THRESHOLD;
  if (finite(value) === null || !(value >= 0 && value <= 1)) {
    throw new BundleError(`${where}: ${py(value)} must be a number in [0, 1] (or ${g(NEVER_THRESHOLD)}: never take this level); re-run calibration`);
  }
  return value;
}

function router(d, where) {
  require(d, ['files', 'outputs', 'thresholds', 'input_size', 'macs'], where);
  if (!Array.isArray(d.outputs) || !d.outputs.every((n) => typeof n === 'string')) throw bad(`${where}.outputs`, 'a list of level names', d.outputs);
  if (!isObject(d.thresholds)) throw bad(`${where}.thresholds`, 'an object {level: threshold}', d.thresholds, 're-run calibration');
  const thresholds = {};
  for (const [k, v] of Object.entries(d.thresholds)) thresholds[k] = routerThreshold(v, `${where}.thresholds.${k}`);
  const fileMap = files(d.files, `${where}.files`);
  const inputSize = integer(d.input_size, `${where}.input_size`, 1, MAX_INPUT_SIZE);
  const macs = integer(d.macs, `${where}.macs`, 0);
  const target = has(d, 'calibration_target') ? d.calibration_target : {};
  object(target === null ? {} : target, `${where}.calibration_target`);
  optionalNumber(d.accuracy, `${where}.accuracy`, 0.0, 100.0);
  return {files: fileMap, outputs: d.outputs.slice(), thresholds, inputSize, macs, where: `${where}.files`};
}

/** _gate: the exit gate of one stage. */
function gate(d, where) {
  require(d, ['kind'], where);
  if (!GATE_KINDS.includes(d.kind)) {
    throw new BundleError(`${where}.kind: ${py(d.kind)} unknown; expected one of ${pyTuple(GATE_KINDS)}`);
  }
  const features = has(d, 'features') ? d.features : [];
  if (!Array.isArray(features) || features.some((f) => !GATE_FEATURES.includes(f))) {
    throw bad(`${where}.features`, `a list of names from ${pyTuple(GATE_FEATURES)}`, features, GATE_FIX);
  }
  if (new Set(features).size !== features.length || (features.includes('cls') && features[features.length - 1] !== 'cls')) {
    throw new BundleError(`${where}.features: ${py(features)} must name each feature once, 'cls' (the CLS token's values) last; ${GATE_FIX}`);
  }
  const spec = {kind: d.kind, features: features.slice(),
    mean: numbers(has(d, 'mean') ? d.mean : [], `${where}.mean`, GATE_FIX),
    std: numbers(has(d, 'std') ? d.std : [], `${where}.std`, GATE_FIX),
    weights: numbers(has(d, 'weights') ? d.weights : [], `${where}.weights`, GATE_FIX),
    bias: number(has(d, 'bias') ? d.bias : 0.0, `${where}.bias`, null, null, false, GATE_FIX),
    auroc: optionalNumber(d.auroc, `${where}.auroc`, 0.0, 1.0)};
  if (spec.kind === 'logistic') {
    const n = spec.weights.length;
    if (n === 0 || spec.mean.length !== n || spec.std.length !== n) {
      throw new BundleError(`${where}: weights, mean and std must have the same non-zero length (got ${n}, ${spec.mean.length}, ${spec.std.length}); ${GATE_FIX}`);
    }
    if (spec.std.some((s) => !(s > 0))) throw new BundleError(`${where}.std: every value must be > 0; ${GATE_FIX}`);
    const scalars = spec.features.filter((f) => f !== 'cls').length;
    if (!spec.features.length || (spec.features.includes('cls') ? n <= scalars : n !== scalars)) {
      throw new BundleError(`${where}: ${n} weights for features ${py(spec.features)} (one weight per softmax feature, plus one per CLS value with 'cls'); ${GATE_FIX}`);
    }
  }
  return spec;
}

function namesList(value, where) {
  if (!Array.isArray(value) || !value.length || !value.every((n) => typeof n === 'string')) {
    throw bad(where, `a non-empty list of tensor names from ${pyTuple(STAGE_IO)}`, value);
  }
  return value.slice();
}

/** _stage: one stage artifact of the exit chain. */
function stage(d, where, last) {
  require(d, STAGE_FIELDS, where);
  for (const key of ['inputs', 'outputs']) {
    namesList(d[key], `${where}.${key}`);
    const unknown = d[key].filter((n) => !STAGE_IO.includes(n));
    if (unknown.length) throw new BundleError(`${where}.${key}: unknown tensor(s) ${py(unknown)}; expected names from ${pyTuple(STAGE_IO)}`);
    if (new Set(d[key]).size !== d[key].length) throw new BundleError(`${where}.${key}: ${py(d[key])} names a tensor twice; ${CONVERT}`);
  }
  if (!d.outputs.includes('logits')) {
    throw new BundleError(`${where}.outputs: ${py(d.outputs)} lacks 'logits': every stage answers at its exit; ${CONVERT}`);
  }
  const gt = d.gate !== null && d.gate !== undefined ? gate(d.gate, `${where}.gate`) : null;
  const threshold = d.threshold !== null && d.threshold !== undefined ? unit(d.threshold, `${where}.threshold`) : null;
  if (!last && (gt === null || threshold === null)) {
    throw new BundleError(`${where}: every stage but the last needs a gate and a threshold; re-run 'athe convert' with a checkpoint that has gates`);
  }
  if (gt !== null && gt.features.includes('cls') && !d.outputs.includes('tokens')) {
    throw new BundleError(`${where}.gate.features: the gate reads the CLS token but the stage outputs ${py(d.outputs)} have no 'tokens'; ${CONVERT}`);
  }
  if (!Array.isArray(d.blocks) || d.blocks.length !== 2) throw bad(`${where}.blocks`, 'a [start, stop] pair of block indices', d.blocks);
  const start = integer(d.blocks[0], `${where}.blocks[0]`, 0, 4096);
  const stop = integer(d.blocks[1], `${where}.blocks[1]`, start + 1, 4096);
  if (typeof d.token_selection !== 'string' || !TOKEN_SELECTIONS.includes(d.token_selection)) {
    throw new BundleError(`${where}.token_selection: ${py(d.token_selection)} unknown; expected one of ${py(TOKEN_SELECTIONS)}`);
  }
  const n = ownerName(d.name, `${where}.name`, 'stage');
  const keep = number(d.keep, `${where}.keep`, 0.0, 1.0, true);
  const fuse = flag(d.fuse, `${where}.fuse`);
  const heads = integer(d.heads, `${where}.heads`, 1, 4096);
  const tokens = integer(d.tokens, `${where}.tokens`, 1);
  const macs = integer(d.macs, `${where}.macs`, 0);
  const fileMap = files(d.files, `${where}.files`);
  const valAccuracy = optionalNumber(d.val_accuracy, `${where}.val_accuracy`, 0.0, 100.0);
  return {name: n, blocks: [start, stop], keep, fuse, heads, tokens, macs, inputs: d.inputs.slice(), outputs: d.outputs.slice(),
    tokenSelection: d.token_selection, files: fileMap, gate: gt, threshold, valAccuracy, where: `${where}.files`};
}

/** _check_chain: each stage reads what the one before it gave (the first: the image), blocks in sequence. */
function checkChain(stages, where) {
  let available = ['image'], previous = null;
  stages.forEach((st, i) => {
    const missing = st.inputs.filter((n) => !available.includes(n));
    if (missing.length) {
      const given = previous === null ? 'the image' : `stages[${i - 1}] outputs ${py(available)}`;
      throw new BundleError(`${where}[${i}].inputs: ${py(missing)} not available (${given} only); ${CONVERT}`);
    }
    if (previous !== null && st.blocks[0] !== previous.blocks[1]) {
      throw new BundleError(`${where}[${i}].blocks: starts at block ${st.blocks[0]} but stages[${i - 1}] stops at ${previous.blocks[1]}; the chain runs the blocks in sequence; ${CONVERT}`);
    }
    available = st.outputs;
    previous = st;
  });
}

/**
 * Check a parsed manifest.json and return the parts the demo needs.
 * Throws BundleError naming the field and the fix.
 */
export function parseManifest(d, source = 'manifest') {
  if (!isObject(d)) throw new BundleError(`${source}: top level must be a JSON object`);
  if (d.schema_version !== SCHEMA_VERSION) {
    throw new BundleError(`${source}: schema_version ${py(d.schema_version)} is not supported; this athe reads schema_version ${SCHEMA_VERSION}: re-convert the bundle with this athe version or install the athe that made it`);
  }
  require(d, ['variant', 'created_with', 'checkpoint', 'random_weights', 'precision', 'input', 'labels', 'levels', 'router'], source);
  const variant = text(d.variant, `${source}: variant`);
  object(d.created_with, `${source}: created_with`);
  object(d.checkpoint, `${source}: checkpoint`);
  const randomWeights = flag(d.random_weights, `${source}: random_weights`);
  if (typeof d.precision !== 'string' || !PRECISIONS.includes(d.precision)) {
    throw new BundleError(`${source}: precision ${py(d.precision)} unknown; expected one of ${pyTuple(PRECISIONS)}`);
  }
  const inp = input(d.input, `${source}: input`);
  const labels = labelsOf(d.labels, `${source}: labels`);
  if (!Array.isArray(d.levels)) throw new BundleError(`${source}: levels must be a list of level objects, got ${kind(d.levels)}; ${CONVERT}`);
  if (d.levels.length === 0) throw new BundleError(`${source}: levels is empty; a bundle needs at least one level`);
  const levels = d.levels.map((lv, i) => level(lv, `${source}: levels[${i}]`));
  const names = levels.map((lv) => lv.name);
  const repeated = repeatedOf(names);
  if (repeated.length) {
    throw new BundleError(`${source}: levels: level name(s) ${py(repeated)} repeat (${py(names)}); each level needs its own name; ${CONVERT}`);
  }
  let rt = null;
  if (d.router !== null) {
    rt = router(d.router, `${source}: router`);
    if (py(rt.outputs) !== py(names)) {
      throw new BundleError(`${source}: router.outputs ${py(rt.outputs)} must equal the levels ${py(names)}`);
    }
    const missing = names.slice(0, -1).filter((n) => !has(rt.thresholds, n));
    if (missing.length) throw new BundleError(`${source}: router.thresholds lacks ${py(missing)}; re-run calibration`);
    const extra = Object.keys(rt.thresholds).filter((n) => !names.slice(0, -1).includes(n));
    if (extra.length) {
      throw new BundleError(`${source}: router.thresholds names ${py(extra)}, which are not levels with a threshold (levels ${py(names.slice(0, -1))}; the richest, ${py(names[names.length - 1])}, is the fallback and has none); re-run calibration`);
    }
    if (rt.inputSize <= 0 || inp.crop_size % rt.inputSize) {
      throw new BundleError(`${source}: router.input_size ${rt.inputSize} does not divide input.crop_size ${inp.crop_size} (the router pools the levels' tensor down to it); ${CONVERT}`);
    }
  }
  const rawStages = has(d, 'stages') ? d.stages : [];
  if (!Array.isArray(rawStages)) throw new BundleError(`${source}: stages must be a list (empty for a bundle without exits)`);
  const stages = rawStages.map((st, i) => stage(st, `${source}: stages[${i}]`, i === rawStages.length - 1));
  const stageNames = stages.map((st) => st.name);
  if (new Set(stageNames).size !== stageNames.length) {
    throw new BundleError(`${source}: stage names ${py(stageNames)} repeat; each stage needs its own name`);
  }
  checkChain(stages, `${source}: stages`);
  const calibration = d.calibration === null || d.calibration === undefined ? null : object(d.calibration, `${source}: calibration`);
  // what the browser adds: one image at a time, through LiteRT
  if (inp.batch_size !== 1) {
    throw new BundleError(`${source}: input.batch_size is ${inp.batch_size}; the demo runs one image at a time: convert with --batch-size 1`);
  }
  for (const lv of levels) lv.file = tflite(lv.files, lv.where);
  for (const st of stages) st.file = tflite(st.files, st.where);
  if (rt) rt.file = tflite(rt.files, rt.where);
  const exitThresholds = {};
  for (const st of stages.slice(0, -1)) if (st.threshold !== null) exitThresholds[st.name] = st.threshold;
  return {
    schemaVersion: SCHEMA_VERSION, variant, randomWeights, precision: d.precision,
    input: inputSpec(inp), labels, levels, levelNames: names, router: rt, stages, stageNames, exitThresholds, calibration,
    // Manifest.default_policy: exit for bundles with a stage chain, else router (or the richest level)
    defaultPolicy: stages.length ? 'exit' : rt ? 'router' : `fixed:${names[names.length - 1]}`,
  };
}

/** A manifest's ``input`` section (snake_case, defaults as in Python's InputSpec) as preprocessRGB's spec. */
export function inputSpec(inp) {
  return {resizeSize: inp.resize_size, cropSize: inp.crop_size, interpolation: inp.interpolation,
    mean: inp.mean, std: inp.std, scale: inp.scale ?? 1 / 255, layout: inp.layout ?? 'NCHW'};
}

/** Parse manifest.json text; invalid JSON is a BundleError like any other. */
export function parseManifestText(text, source = 'manifest.json') {
  let d;
  try { d = JSON.parse(text); } catch (err) {
    throw new BundleError(`'${source}' is not valid JSON (${err.message}); re-run 'athe convert'`);
  }
  return parseManifest(d, source);
}

// -- policies -------------------------------------------------------------------------------------
/** The policies the phone runs; Python's random:<...> and oracle are evaluation tools. */
export const PHONE_POLICIES = 'exit, exit:<stage>, router, fixed:<level>';

/**
 * parse_policy of athe/runtime/dispatcher.py for the phone's policies: {kind, text, stage, level}
 * with kind exit | fixed-exit | router | fixed. Python's messages (without its "Did you mean"
 * hint); random and oracle are refused.
 */
export function parsePolicy(text, levelNames, stageNames = []) {
  const raw = String(text).trim();
  const colon = raw.indexOf(':');
  const kind = (colon < 0 ? raw : raw.slice(0, colon)).trim().toLowerCase();
  const arg = colon < 0 ? '' : raw.slice(colon + 1);
  const q = py(String(text));
  if (kind === 'exit') {
    if (!stageNames.length) {
      throw new BundleError(`policy ${q}: this bundle has no stage chain; policies on the phone: router, fixed:<level> (re-convert with a variant that declares stages for exits)`);
    }
    const st = arg.trim();
    if (!st) return {kind: 'exit', text: String(text), stage: null, level: null};
    if (!stageNames.includes(st)) throw new BundleError(`policy ${q}: no stage ${py(st)}; stages: ${stageNames.join(', ')}.`);
    return {kind: 'fixed-exit', text: String(text), stage: st, level: null};
  }
  if (kind === 'router') {
    if (arg) throw new BundleError(`policy ${q}: 'router' takes no argument; policies on the phone: ${PHONE_POLICIES}`);
    return {kind: 'router', text: String(text), stage: null, level: null};
  }
  if (kind === 'fixed') {
    const lv = arg.trim();
    if (!levelNames.includes(lv)) throw new BundleError(`policy ${q}: no level ${py(lv)}; levels: ${levelNames.join(', ')}.`);
    return {kind: 'fixed', text: String(text), stage: null, level: lv};
  }
  if (kind === 'random' || kind === 'oracle') {
    throw new BundleError(`policy ${q} is not available on the phone (an evaluation policy of 'athe eval'); policies on the phone: ${PHONE_POLICIES}`);
  }
  throw new BundleError(`unknown policy ${q}; policies on the phone: ${PHONE_POLICIES}.`);
}

// -- dispatch rule ----------------------------------------------------------------------------------
/** The first (cheapest) level whose router score reaches its threshold; the last level is the fallback. */
export function chooseLevel(scores, levelNames, thresholds) {
  const byName = Array.isArray(scores) || ArrayBuffer.isView(scores)
    ? Object.fromEntries(levelNames.map((n, i) => [n, scores[i]])) : scores;
  for (const name of levelNames.slice(0, -1)) {
    if (byName[name] >= thresholds[name]) return name;
  }
  return levelNames[levelNames.length - 1];
}

/** Index of the largest logit and its softmax probability (computed in float64 like numpy). */
export function softmaxTop1(logits) {
  let index = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i] > logits[index]) index = i;
  const top = logits[index];
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i] - top);
  return {index, probability: 1 / sum};
}

// -- exit gates (athe/runtime/gates.py) -------------------------------------------------------------
export const SOFTMAX_FEATURES = ['max_prob', 'margin', 'entropy'];

/** numpy's float64 sum of a 1-D array: pairwise, 8 accumulators per block of up to 128 (0 + sum). */
export function pairwiseSum(a, start = 0, n = a.length) {
  if (n < 8) {
    let res = 0.0;
    for (let i = 0; i < n; i++) res += a[start + i];
    return res;
  }
  if (n <= 128) {
    const r = [];
    for (let j = 0; j < 8; j++) r.push(a[start + j]);
    let i = 8;
    for (; i < n - (n % 8); i += 8) for (let j = 0; j < 8; j++) r[j] += a[start + i + j];
    let res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; i++) res += a[start + i];
    return res;
  }
  let n2 = Math.trunc(n / 2);
  n2 -= n2 % 8;
  return pairwiseSum(a, start, n2) + pairwiseSum(a, start + n2, n - n2);
}

function dot(a, b) {
  let s = 0.0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

/** gates.softmax_features of one exit's logits: [max_prob, margin, entropy] (float64). */
export function softmaxFeatures(logits) {
  const {p1, margin, entropy} = softmaxStats(logits);
  return [p1, margin, entropy];
}

function softmaxStats(logits) {
  const n = logits.length;
  let m = -Infinity;
  for (let i = 0; i < n; i++) if (logits[i] > m) m = logits[i];
  const z = new Float64Array(n), e = new Float64Array(n), ez = new Float64Array(n);
  let a = -Infinity, b = -Infinity;  // the two largest of e
  for (let i = 0; i < n; i++) {
    z[i] = logits[i] - m;
    e[i] = Math.exp(z[i]);
    ez[i] = e[i] * z[i];
    if (e[i] > a) { b = a; a = e[i]; } else if (e[i] > b) b = e[i];
  }
  const total = pairwiseSum(e);
  const p1 = n > 1 ? a / total : 1.0;
  const margin = n > 1 ? p1 - b / total : 1.0;
  return {p1, margin, entropy: Math.log(total) - pairwiseSum(ez) / total};
}

/**
 * A stage's gate ready to score one image: gates.CompiledGate (the dispatcher's form, with the
 * standardisation folded into the weights). score(logits, cls) -> float in [0, 1].
 */
export function compileGate(spec) {
  const g = {kind: spec.kind, needsCls: spec.features.includes('cls'), clsWidth: 0};
  if (spec.kind === 'logistic') {
    const w = spec.weights.map((v, i) => v / spec.std[i]);
    g.bias = spec.bias - dot(w, spec.mean);
    g.wSoft = [0.0, 0.0, 0.0];
    g.wCls = null;
    const scalars = spec.features.filter((f) => f !== 'cls').length;
    let at = 0;
    for (const name of spec.features) {
      const k = SOFTMAX_FEATURES.indexOf(name);
      if (k >= 0) { g.wSoft[k] += w[at]; at += 1; } else if (name === 'cls') {
        g.wCls = w.slice(at, at + w.length - scalars);  // one weight per CLS value
        at += g.wCls.length;
      } else {
        throw new BundleError(`unknown gate feature ${py(name)}; known: ${pyTuple([...SOFTMAX_FEATURES, 'cls'])}`);
      }
    }
    g.clsWidth = g.wCls ? g.wCls.length : 0;
  }
  g.score = (logits, cls = null) => {
    const {p1, margin, entropy} = softmaxStats(logits);
    if (g.kind === 'max_softmax') return p1;
    let s = g.bias + g.wSoft[0] * p1 + g.wSoft[1] * margin + g.wSoft[2] * entropy;
    if (g.wCls) {
      if (cls === null || cls === undefined) throw new BundleError("this gate reads the CLS token; pass the stage's tokens");
      if (cls.length !== g.wCls.length) {
        throw new BundleError(`the gate reads ${g.wCls.length} CLS values but the stage's CLS token has ${cls.length}; re-convert the bundle`);
      }
      s += dot(g.wCls, cls);
    }
    return 1.0 / (1.0 + Math.exp(-Math.min(Math.max(s, -60.0), 60.0)));
  };
  return g;
}

/** gates.gate_score for one image (the spec compiled each call; the Dispatcher compiles once). */
export function gateScore(spec, logits, cls = null) {
  return compileGate(spec).score(logits, cls);
}

/** _finite_output of the Python dispatcher: a NaN or inf never becomes an answer. */
export function finiteOutput(values, owner) {
  if (!values || values.length === 0 || !Array.prototype.every.call(values, Number.isFinite)) {
    throw new BundleError(`${owner} artifact returned NaN/inf (or no) values; the artifact or its input is broken: re-convert the bundle`);
  }
  return values;
}

/**
 * The exit chain (Dispatcher._run_chain): run stage 1 on the image, feed each stage the tensors its
 * manifest ``inputs`` names from the previous stage's outputs; after every stage but the last score
 * its gate and stop when ``score >= thresholds[stage]``; the last stage always answers. With
 * ``stopAt`` (policy exit:<stage>) no gate is asked and that stage answers.
 *
 * runStage(stage, inputs) -> Promise<outputs>: flat Float32Arrays in ``stage.inputs`` /
 * ``stage.outputs`` order. gates: {stage: compiled gate}. Returns {exit, logits, stageMs,
 * gateScores, gateMs, ran}.
 */
export async function runChain(stages, runStage, x, {stopAt = null, thresholds, gates, now = () => performance.now()} = {}) {
  let feed = {image: x};
  const stageMs = {}, gateScores = {}, ran = [];
  let gateMs = 0;
  for (let i = 0; i < stages.length; i++) {
    const st = stages[i];
    const missing = st.inputs.filter((n) => !(n in feed));
    if (missing.length) {
      throw new BundleError(`stage ${st.name} takes ${py(missing)} but ${i ? `stage ${stages[i - 1].name} gives ${py(Object.keys(feed))}` : 'the first stage only gets the image'}; re-convert the bundle`);
    }
    const t0 = now();
    const outs = await runStage(st, st.inputs.map((n) => feed[n]));
    stageMs[st.name] = now() - t0;
    ran.push(st.name);
    if (outs.length !== st.outputs.length) {
      throw new BundleError(`stage artifact gave ${outs.length} outputs, the manifest names ${py(st.outputs)}; re-convert the bundle`);
    }
    const named = Object.fromEntries(st.outputs.map((n, j) => [n, outs[j]]));
    const logits = finiteOutput(named.logits, `stage ${st.name}`);
    if (i === stages.length - 1 || st.name === stopAt) return {exit: st.name, logits, stageMs, gateScores, gateMs, ran};
    if (stopAt === null) {
      const t1 = now();
      const g = gates[st.name];
      let cls = null;
      if (g.needsCls) {
        const tokens = named.tokens;
        if (!tokens) throw new BundleError("this gate reads the CLS token; pass the stage's tokens");
        const width = tokens.length / st.tokens;
        if (!Number.isInteger(width)) throw new BundleError(`stage ${st.name} gave ${tokens.length} token values, not ${st.tokens} tokens; re-convert the bundle`);
        cls = tokens.subarray ? tokens.subarray(0, width) : tokens.slice(0, width);  // tokens[0, 0]: the CLS token
      }
      let score;
      try {
        score = g.score(logits, cls);
      } catch (err) {  // a CLS token of another width than the gate's weights
        throw new BundleError(`stage ${st.name}'s exit gate does not fit its outputs (${err.message}); re-convert the bundle`);
      }
      if (!Number.isFinite(score)) throw new BundleError(`stage ${st.name}'s exit gate scored NaN/inf; re-convert the bundle`);
      gateScores[st.name] = score;
      const done = score >= thresholds[st.name];
      gateMs += now() - t1;
      if (done) return {exit: st.name, logits, stageMs, gateScores, gateMs, ran};
    }
    feed = named;
  }
  throw new Error('unreachable: the last stage always answers');
}

// -- preprocessing (bit-exact with Pillow's Image.resize + torchvision's CenterCrop) -------------
const FILTERS = {
  bicubic: {support: 2.0, f(x) {
    const a = -0.5;
    x = Math.abs(x);
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
  }},
  bilinear: {support: 1.0, f(x) { x = Math.abs(x); return x < 1.0 ? 1.0 - x : 0.0; }},
  nearest: null,  // Pillow picks pixels with an affine transform, not a convolution
};
const PRECISION_BITS = 32 - 8 - 2;

/** torchvision's Resize(int) rule: (width, height) with the shorter side = size. */
export function resizedSize(width, height, size) {
  if (width <= height) return [size, Math.trunc(size * height / width)];
  return [Math.trunc(size * width / height), size];
}

function coefficients(inSize, outSize, filter) {
  const scale = inSize / outSize;
  const filterscale = Math.max(scale, 1.0);
  const support = filter.support * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const kk = new Int32Array(outSize * ksize);
  const k = new Float64Array(ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const ss = 1.0 / filterscale;
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const xmax = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
    let ww = 0.0;
    for (let x = 0; x < xmax; x++) {
      k[x] = filter.f((x + xmin - center + 0.5) * ss);
      ww += k[x];
    }
    for (let x = 0; x < xmax; x++) {
      const w = ww !== 0.0 ? k[x] / ww : k[x];
      // fixed point, rounding half away from zero (C's (int) truncates)
      kk[xx * ksize + x] = Math.trunc(w < 0 ? -0.5 + w * (1 << PRECISION_BITS) : 0.5 + w * (1 << PRECISION_BITS));
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  return {ksize, bounds, kk};
}

function clip8(v) {
  if (v >= (1 << PRECISION_BITS) * 256) return 255;
  if (v <= 0) return 0;
  return Math.floor(v / (1 << PRECISION_BITS));
}

function resampleHorizontal(src, width, rows, row0, outW, c) {
  const out = new Uint8Array(outW * rows * 3);
  const half = 1 << (PRECISION_BITS - 1);
  for (let y = 0; y < rows; y++) {
    const base = (y + row0) * width * 3;
    for (let xx = 0; xx < outW; xx++) {
      const xmin = c.bounds[xx * 2], xmax = c.bounds[xx * 2 + 1], k0 = xx * c.ksize;
      let s0 = half, s1 = half, s2 = half;
      for (let x = 0; x < xmax; x++) {
        const w = c.kk[k0 + x], p = base + (x + xmin) * 3;
        s0 += src[p] * w; s1 += src[p + 1] * w; s2 += src[p + 2] * w;
      }
      const o = (y * outW + xx) * 3;
      out[o] = clip8(s0); out[o + 1] = clip8(s1); out[o + 2] = clip8(s2);
    }
  }
  return out;
}

function resampleVertical(src, width, outH, c, rowShift) {
  const out = new Uint8Array(width * outH * 3);
  const half = 1 << (PRECISION_BITS - 1);
  for (let yy = 0; yy < outH; yy++) {
    const ymin = c.bounds[yy * 2] - rowShift, ymax = c.bounds[yy * 2 + 1], k0 = yy * c.ksize;
    for (let xx = 0; xx < width; xx++) {
      let s0 = half, s1 = half, s2 = half;
      for (let y = 0; y < ymax; y++) {
        const w = c.kk[k0 + y], p = ((y + ymin) * width + xx) * 3;
        s0 += src[p] * w; s1 += src[p + 1] * w; s2 += src[p + 2] * w;
      }
      const o = (yy * width + xx) * 3;
      out[o] = clip8(s0); out[o + 1] = clip8(s1); out[o + 2] = clip8(s2);
    }
  }
  return out;
}

function resizeNearest(src, width, height, outW, outH) {
  // Pillow: an affine "scale" transform sampling at (x + 0.5) * in/out, stepped incrementally.
  const out = new Uint8Array(outW * outH * 3);
  const ax = width / outW, ay = height / outH;
  const xin = new Int32Array(outW);
  let xo = ax * 0.5;
  for (let x = 0; x < outW; x++) { xin[x] = xo < 0 ? -1 : Math.trunc(xo); xo += ax; }
  let yo = ay * 0.5;
  for (let y = 0; y < outH; y++) {
    const yi = yo < 0 ? -1 : Math.trunc(yo);
    yo += ay;
    if (yi < 0 || yi >= height) continue;
    for (let x = 0; x < outW; x++) {
      if (xin[x] < 0 || xin[x] >= width) continue;
      const p = (yi * width + xin[x]) * 3, o = (y * outW + x) * 3;
      out[o] = src[p]; out[o + 1] = src[p + 1]; out[o + 2] = src[p + 2];
    }
  }
  return out;
}

/** Resize packed RGB uint8 [h, w, 3] to (outW, outH) exactly as Pillow (>= 13) Image.resize does. */
export function resizeRGB(rgb, width, height, outW, outH, interpolation) {
  if (outW === width && outH === height) return rgb;
  if (!(interpolation in FILTERS)) throw new BundleError(`interpolation ${JSON.stringify(interpolation)} unknown`);
  const filter = FILTERS[interpolation];
  if (filter === null) return resizeNearest(rgb, width, height, outW, outH);
  const needH = outW !== width, needV = outH !== height;
  const cv = coefficients(height, outH, filter);
  if (!needH) return resampleVertical(rgb, width, outH, cv, 0);
  if (height - outH > 0 && height - outH > 2 * (width - outW)) {
    // Pillow >= 13 runs the vertical pass first when the height shrinks much more than the width
    const tmp = resampleVertical(rgb, width, outH, cv, 0);
    return resampleHorizontal(tmp, width, outH, 0, outW, coefficients(width, outW, filter));
  }
  const first = cv.bounds[0];
  const last = cv.bounds[outH * 2 - 2] + cv.bounds[outH * 2 - 1];
  const ch = coefficients(width, outW, filter);
  // Pillow only resamples the rows the vertical pass will read (first..last).
  const tmp = resampleHorizontal(rgb, width, needV ? last - first : height, needV ? first : 0, outW, ch);
  return needV ? resampleVertical(tmp, outW, outH, cv, first) : tmp;
}

/** torchvision CenterCrop on packed RGB [h, w, 3]: zero padding when smaller, round() offsets. */
export function centerCrop(rgb, width, height, crop) {
  let src = rgb, w = width, h = height;
  if (crop > w || crop > h) {
    const top = crop > h ? Math.floor((crop - h) / 2) : 0, left = crop > w ? Math.floor((crop - w) / 2) : 0;
    const nh = Math.max(h, crop), nw = Math.max(w, crop);
    const padded = new Uint8Array(nw * nh * 3);
    for (let y = 0; y < h; y++) padded.set(src.subarray(y * w * 3, (y + 1) * w * 3), ((y + top) * nw + left) * 3);
    src = padded; w = nw; h = nh;
  }
  // Python's round() rounds halves to even
  const roundHalfEven = (v) => { const r = Math.round(v); return (Math.abs(v % 1) === 0.5 && r % 2 !== 0) ? r - 1 : r; };
  const top = roundHalfEven((h - crop) / 2), left = roundHalfEven((w - crop) / 2);
  const out = new Uint8Array(crop * crop * 3);
  for (let y = 0; y < crop; y++) out.set(src.subarray(((y + top) * w + left) * 3, ((y + top) * w + left + crop) * 3), y * crop * 3);
  return out;
}

/** Packed RGB uint8 -> normalised float32 tensor per the manifest's input spec. */
export function normalize(rgb, crop, spec) {
  const out = new Float32Array(3 * crop * crop);
  const lut = [0, 1, 2].map((c) => {
    const t = new Float32Array(256);
    // float32 arithmetic like numpy's (levels - mean) / std with float32 operands
    const divisor = Math.fround(1 / spec.scale);
    for (let v = 0; v < 256; v++) t[v] = Math.fround(Math.fround(Math.fround(v / divisor) - Math.fround(spec.mean[c])) / Math.fround(spec.std[c]));
    return t;
  });
  const n = crop * crop;
  for (let i = 0; i < n; i++) {
    for (let c = 0; c < 3; c++) {
      const v = lut[c][rgb[i * 3 + c]];
      if (spec.layout === 'NHWC') out[i * 3 + c] = v; else out[c * n + i] = v;
    }
  }
  return out;
}

/** Packed RGB [h, w, 3] -> model input, the whole rule. Returns {tensor, resized}. */
export function preprocessRGB(rgb, width, height, spec) {
  const [w, h] = resizedSize(width, height, spec.resizeSize);
  const resized = resizeRGB(rgb, width, height, w, h, spec.interpolation);
  const cropped = centerCrop(resized, w, h, spec.cropSize);
  return {tensor: normalize(cropped, spec.cropSize, spec), resized, cropped};
}

/** Decode an image Blob to packed RGB: EXIF orientation applied, no colour management, alpha on black. */
export async function decodeBlob(blob, name = 'image') {
  if (!blob || blob.size === 0) throw new ImageError(`image ${name} is empty; pick another photo`);
  let bitmap;
  try {
    bitmap = await createImageBitmap(blob, {imageOrientation: 'from-image', colorSpaceConversion: 'none', premultiplyAlpha: 'none'});
  } catch (err) {
    throw new ImageError(`image ${name} cannot be decoded (${err.message || err}); use a JPEG, PNG, WebP or GIF`);
  }
  const {width, height} = bitmap;
  if (width * height > MAX_PIXELS) {
    bitmap.close();
    throw new ImageError(`image ${name} has ${width * height} pixels, more than the ${MAX_PIXELS} limit; downscale it first`);
  }
  const canvas = new OffscreenCanvas(width, height);
  const ctx = canvas.getContext('2d', {willReadFrequently: true});
  ctx.fillStyle = '#000';
  ctx.fillRect(0, 0, width, height);
  ctx.drawImage(bitmap, 0, 0);
  bitmap.close();
  const rgba = ctx.getImageData(0, 0, width, height).data;
  const rgb = new Uint8Array(width * height * 3);
  for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) { rgb[j] = rgba[i]; rgb[j + 1] = rgba[i + 1]; rgb[j + 2] = rgba[i + 2]; }
  return {rgb, width, height};
}

// -- the dispatcher ------------------------------------------------------------------------------
/** Positional order of LiteRT tensor details: litert-torch names them args_N / output_N (as Python's backend reads them). */
function positional(details, prefix) {
  const keyed = [];
  for (const d of details) {
    const m = new RegExp(`^${prefix}(\\d+)$`).exec(d.name);
    if (!m) return null;
    keyed.push([Number(m[1]), d]);
  }
  return keyed.sort((a, b) => a[0] - b[0]).map(([, d]) => d);
}

/**
 * Loads every .tflite of a bundle once with LiteRT.js (router, levels, stages: any policy can
 * run), then classifies images with the bundle's default policy or another one.
 * options: wasmPath (folder of @litertjs/core/wasm), threads (number; 0 = single-threaded wasm),
 * liteRt (an already imported @litertjs/core module).
 */
export class Dispatcher {
  static async create(bundleUrl, {liteRt, wasmPath, threads = 1, fetchImpl = fetch} = {}) {
    const base = new URL(bundleUrl, globalThis.location?.href);
    const res = await fetchImpl(new URL('manifest.json', base));
    if (!res.ok) throw new BundleError(`${new URL('manifest.json', base)}: HTTP ${res.status}; serve a converted bundle ('athe demo serve --bundle DIR')`);
    const manifest = parseManifestText(await res.text(), 'manifest.json');
    const useThreads = threads > 1;
    await liteRt.loadLiteRt(wasmPath, useThreads ? {threads: true} : {});
    const t0 = performance.now();
    const compile = async (file, owner) => {
      const url = new URL(file.path, base);
      const r = await fetchImpl(url);
      if (!r.ok && r.status === 404 && owner.startsWith('stage')) {
        throw new BundleError(`${owner}: ${file.path} HTTP 404: this server does not serve the bundle's stage artifacts (an 'athe demo serve' that routes levels and router only?); serve it with 'python android_demo/web/tests/serve_stages.py --bundle DIR', or check the bundle folder`);
      }
      if (!r.ok) throw new BundleError(`${owner}: ${file.path} HTTP ${r.status}; the bundle folder is incomplete: re-run 'athe convert'`);
      const bytes = new Uint8Array(await r.arrayBuffer());
      if (file.bytes !== undefined && bytes.length !== file.bytes) {
        throw new BundleError(`${owner}: ${file.path} has ${bytes.length} bytes, the manifest says ${file.bytes}; re-copy the bundle`);
      }
      const opts = {accelerator: 'wasm', cpuOptions: {numThreads: Math.max(1, threads)}};
      return liteRt.loadAndCompile(bytes, opts);
    };
    // the Python dispatcher's order: router, levels, stages
    const router = manifest.router ? await compile(manifest.router.file, 'router') : null;
    const models = {};
    for (const lv of manifest.levels) models[lv.name] = await compile(lv.file, `level ${lv.name}`);
    const stages = {};
    for (const st of manifest.stages) stages[st.name] = await compile(st.file, `stage ${st.name}`);
    return new Dispatcher(liteRt, manifest, models, router, base, performance.now() - t0, threads, stages);
  }

  constructor(liteRt, manifest, models, router, base, loadMs, threads, stages = {}) {
    Object.assign(this, {liteRt, manifest, models, router, base, loadMs, threads, stages});
    this.thresholds = manifest.router ? {...manifest.router.thresholds} : {};
    this.exitThresholds = {...manifest.exitThresholds};
    this.gates = {};
    for (const st of manifest.stages.slice(0, -1)) if (st.gate) this.gates[st.name] = compileGate(st.gate);
    this.policy = manifest.defaultPolicy;
  }

  /** URLs the app needs offline: manifest + every artifact. */
  artifactUrls() {
    const files = [...this.manifest.levels.map((lv) => lv.file), ...this.manifest.stages.map((st) => st.file)];
    if (this.manifest.router) files.push(this.manifest.router.file);
    return [new URL('manifest.json', this.base).href, ...files.map((f) => new URL(f.path, this.base).href)];
  }

  inputShape() {
    const c = this.manifest.input.cropSize;
    return this.manifest.input.layout === 'NHWC' ? [1, c, c, 3] : [1, 3, c, c];
  }

  /**
   * Override exit thresholds ({stage: value in [0, 1]}), as Dispatcher(thresholds=) does for the
   * exit policy; the last stage has none.
   */
  setExitThresholds(override) {
    const allowed = this.manifest.stageNames.slice(0, -1);
    for (const [name, value] of Object.entries(override)) {
      if (!allowed.includes(name)) {
        throw new BundleError(`threshold for ${py(name)}: only these stages have exit thresholds: ${allowed.join(', ')} (the last stage always answers)`);
      }
      if (typeof value !== 'number' || !(value >= 0 && value <= 1)) {
        throw new BundleError(`threshold for ${py(name)} must be a number in [0, 1] (a gate score), got ${py(value)}`);
      }
    }
    Object.assign(this.exitThresholds, override);
  }

  /** Run one model on positional flat float32 inputs; its outputs in positional order. */
  async runMany(model, inputs) {
    const ins = model.getInputDetails(), outsDetails = model.getOutputDetails();
    const inOrder = positional(ins, 'args_') ?? ins;
    const outOrder = positional(outsDetails, 'output_') ?? outsDetails;
    if (inputs.length !== inOrder.length) {
      throw new BundleError(`the artifact takes ${inOrder.length} input(s), got ${inputs.length}; re-convert the bundle`);
    }
    const feed = {};
    const tensors = inputs.map((x, i) => {
      const shape = Array.from(inOrder[i].shape);
      const t = new this.liteRt.Tensor(x instanceof Float32Array ? x : Float32Array.from(x), shape);
      feed[inOrder[i].name] = t;
      return t;
    });
    let result;
    try {
      result = await model.run(feed);
    } finally {
      for (const t of tensors) t.delete();
    }
    const out = [];
    for (const d of outOrder) {
      const t = await result[d.name].moveTo('wasm');
      out.push(Float32Array.from(t.toTypedArray()));
      t.delete();
    }
    for (const t of Object.values(result)) if (!t.deleted) t.delete();
    return out;
  }

  async run(model, x) {
    const input = new this.liteRt.Tensor(x, this.inputShape());
    const outputs = await model.run(input);
    input.delete();
    const out = await outputs[0].moveTo('wasm');
    const values = Float32Array.from(out.toTypedArray());
    out.delete();
    for (const t of outputs) if (!t.deleted) t.delete();
    return values;
  }

  /**
   * Classify a preprocessed tensor. policy: exit (the default for bundles with stages),
   * exit:<stage>, router or fixed:<level> (parsePolicy). The prediction has ``exit`` (the stage
   * that answered, exit policies; ``level`` then holds the same name), ``stageMs`` (each stage
   * run), ``gateScores`` (each gate asked) and ``exitThresholds`` (those in use).
   */
  async predictTensor(x, {policy = this.policy, timings = {}, start = performance.now()} = {}) {
    const m = this.manifest;
    const p = parsePolicy(policy, m.levelNames, m.stageNames);
    const labels = m.labels;
    const size = this.inputShape().reduce((a, b) => a * b, 1);
    if (x.length !== size) throw new BundleError(`input tensor must be float32 (${this.inputShape().join(', ')}) (the preprocessed image), got ${x.length} values`);
    const nonFinite = Array.prototype.reduce.call(x, (n, v) => n + (Number.isFinite(v) ? 0 : 1), 0);
    if (nonFinite) throw new BundleError(`input tensor has ${nonFinite} NaN/inf value(s) of ${x.length}; refusing to predict on it`);
    if (p.kind === 'exit' || p.kind === 'fixed-exit') {
      const chain = await runChain(m.stages, (st, inputs) => this.runMany(this.stages[st.name], inputs), x,
        {stopAt: p.stage, thresholds: this.exitThresholds, gates: this.gates});
      const {index, probability} = softmaxTop1(chain.logits);
      timings.route = chain.gateMs;
      timings.infer = Object.values(chain.stageMs).reduce((a, b) => a + b, 0);
      timings.total = performance.now() - start;
      return {label: index, labelName: labels[index] ?? String(index), probability, level: chain.exit, exit: chain.exit,
        policy: p.text, routerScores: {}, gateScores: chain.gateScores, stageMs: chain.stageMs,
        exitThresholds: {...this.exitThresholds}, logits: Array.from(chain.logits), timingsMs: timings};
    }
    const names = m.levelNames;
    let level, scores = {};
    const t0 = performance.now();
    if (p.kind === 'router') {
      if (!this.router) throw new BundleError(`this bundle has no router; policies: ${m.stageNames.length ? 'exit, exit:<stage>, ' : ''}fixed:<level>`);
      const raw = finiteOutput(await this.run(this.router, x), 'router');
      scores = Object.fromEntries(names.map((n, i) => [n, raw[i]]));
      level = chooseLevel(scores, names, this.thresholds);
    } else {
      level = p.level;
    }
    const t1 = performance.now();
    const logits = finiteOutput(await this.run(this.models[level], x), `level ${level}`);
    const t2 = performance.now();
    const {index, probability} = softmaxTop1(logits);
    timings.route = t1 - t0;
    timings.infer = t2 - t1;
    timings.total = t2 - start;
    return {label: index, labelName: labels[index] ?? String(index), probability, level, exit: null, policy: p.text,
      routerScores: scores, gateScores: {}, stageMs: {[level]: t2 - t1}, exitThresholds: {}, logits: Array.from(logits),
      timingsMs: timings};
  }

  /** Decode, preprocess and classify one image Blob/File. The prediction also carries the
   * model input (``input``), the cropped RGB it came from (``cropped``) and the photo's ``size``. */
  async predictBlob(blob, {policy = this.policy, name} = {}) {
    const start = performance.now();
    const {rgb, width, height} = await decodeBlob(blob, name ?? blob.name ?? 'image');
    const t1 = performance.now();
    const {tensor, cropped} = preprocessRGB(rgb, width, height, this.manifest.input);
    const t2 = performance.now();
    const pred = await this.predictTensor(tensor, {policy, start, timings: {decode: t1 - start, preprocess: t2 - t1}});
    return Object.assign(pred, {input: tensor, cropped, size: [width, height]});
  }
}
