// ATHE dispatch logic for the browser: manifest checks, Pillow-exact preprocessing, level choice,
// and a Dispatcher that runs a bundle's .tflite router and levels with LiteRT.js.
//
// The rules mirror the Python runtime (athe/runtime/manifest.py, preprocess.py, dispatcher.py) and
// are checked against the shared vectors in android_demo/vectors/vectors.json by the end-to-end
// test, so the browser, the Android core and Python agree.
//
//   import {Dispatcher} from './athe.js';
//   const d = await Dispatcher.create('./bundle/', {wasmPath: './vendor/litertjs/wasm/'});
//   const p = await d.predictBlob(file);   // {label, probability, level, routerScores, timingsMs}

export const SCHEMA_VERSION = 1;
export const STAGES = ['decode', 'preprocess', 'route', 'infer', 'total'];
export const MAX_PIXELS = 80_000_000;  // same refusal limit as the Python decoder

export class BundleError extends Error {
  constructor(message) { super(message); this.name = 'BundleError'; }
}

export class ImageError extends Error {
  constructor(message) { super(message); this.name = 'ImageError'; }
}

// -- manifest ------------------------------------------------------------------------------------
// The same checks and messages as athe/runtime/manifest.py (lists printed the Python way), so the
// shared vectors hold for Python, Java and this file; then what the browser needs: .tflite files.
const PRECISIONS = ['fp32', 'int8-dynamic', 'int8-static'];
const ALL_FORMATS = ['tflite', 'pte', 'pt2'];
const INPUT_FIELDS = ['rule', 'resize_size', 'crop_size', 'interpolation', 'mean', 'std', 'layout', 'dtype', 'scale', 'batch_size'];
const py = (v) => Array.isArray(v) ? `[${v.map(py).join(', ')}]` : typeof v === 'string' ? `'${v}'` : v === null || v === undefined ? 'None' : String(v);
const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

function require(obj, keys, where) {
  if (!isObject(obj)) throw new BundleError(`${where}: expected an object`);
  const missing = keys.filter((k) => !(k in obj));
  if (missing.length) {
    throw new BundleError(`${where}: missing field(s) ${py(missing)}; re-run 'athe convert' to write a complete manifest`);
  }
}

function files(d, where) {
  if (!isObject(d) || Object.keys(d).length === 0) throw new BundleError(`${where}: files must name at least one format`);
  const out = {};
  for (const [fmt, a] of Object.entries(d)) {
    if (!ALL_FORMATS.includes(fmt)) throw new BundleError(`${where}: unknown format ${py(fmt)}; expected one of ${py(ALL_FORMATS)}`);
    require(a, ['path', 'sha256', 'bytes'], `${where}.${fmt}`);
    if (typeof a.path !== 'string' || a.path.startsWith('/') || a.path.split('/').includes('..')) {
      throw new BundleError(`${where}.${fmt}: path ${py(a.path)} must be relative to the bundle folder`);
    }
    out[fmt] = {path: a.path, sha256: a.sha256, bytes: a.bytes, precision: a.precision};
  }
  return out;
}

function tflite(fileMap, where) {
  if (!fileMap.tflite) {
    throw new BundleError(`${where}: has no .tflite file; the browser runs LiteRT: re-run 'athe convert --format tflite'`);
  }
  return fileMap.tflite;
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
  if (!PRECISIONS.includes(d.precision)) {
    throw new BundleError(`${source}: precision ${py(d.precision)} unknown; expected one of ${py(PRECISIONS)}`);
  }
  const inp = d.input;
  require(inp, ['rule', 'resize_size', 'crop_size', 'interpolation', 'mean', 'std'], `${source}: input`);
  if (inp.rule !== 'resize_shorter_center_crop') {
    throw new BundleError(`${source}: input.rule ${py(inp.rule)} unknown; expected 'resize_shorter_center_crop'`);
  }
  const unknown = Object.keys(inp).filter((k) => !INPUT_FIELDS.includes(k));
  if (unknown.length) throw new BundleError(`${source}: input has unknown field(s) ${py(unknown)}; re-convert the bundle with this athe version`);
  if (!(inp.interpolation in FILTERS)) {
    throw new BundleError(`interpolation ${py(inp.interpolation)} unknown; expected one of ${py(Object.keys(FILTERS).sort())}`);
  }
  const layout = inp.layout ?? 'NCHW';
  if ((layout !== 'NCHW' && layout !== 'NHWC') || (inp.dtype ?? 'float32') !== 'float32') {
    throw new BundleError(`input layout/dtype ${layout}/${inp.dtype} unsupported; expected NCHW or NHWC float32`);
  }
  if (!Array.isArray(d.levels) || d.levels.length === 0) {
    throw new BundleError(`${source}: levels is empty; a bundle needs at least one level`);
  }
  const levels = d.levels.map((lv, i) => {
    const where = `${source}: levels[${i}]`;
    require(lv, ['name', 'keep', 'heads', 'fuse', 'tokens_per_block', 'macs', 'files'], where);
    return {name: lv.name, heads: lv.heads, tokensPerBlock: lv.tokens_per_block, macs: lv.macs,
      valAccuracy: lv.val_accuracy ?? null, files: files(lv.files, `${where}.files`), where: `${where}.files`};
  });
  const names = levels.map((lv) => lv.name);
  let router = null;
  if (d.router !== null) {
    const where = `${source}: router`;
    require(d.router, ['files', 'outputs', 'thresholds', 'input_size', 'macs'], where);
    router = {files: files(d.router.files, `${where}.files`), thresholds: {...d.router.thresholds},
      inputSize: d.router.input_size, macs: d.router.macs, where: `${where}.files`};
    if (py(d.router.outputs) !== py(names)) {
      throw new BundleError(`${source}: router.outputs ${py(d.router.outputs)} must equal the levels ${py(names)}`);
    }
    const missing = names.slice(0, -1).filter((n) => !(n in d.router.thresholds));
    if (missing.length) throw new BundleError(`${source}: router.thresholds lacks ${py(missing)}; re-run calibration`);
  }
  // what the browser adds: one image at a time, through LiteRT
  if ((inp.batch_size ?? 1) !== 1) {
    throw new BundleError(`${source}: input.batch_size is ${inp.batch_size}; the demo runs one image at a time: convert with --batch-size 1`);
  }
  for (const lv of levels) lv.file = tflite(lv.files, lv.where);
  if (router) router.file = tflite(router.files, router.where);
  return {
    variant: d.variant, randomWeights: Boolean(d.random_weights), precision: d.precision,
    input: inputSpec(inp), labels: d.labels, levels, levelNames: names, router,
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
/**
 * Loads every .tflite of a bundle once with LiteRT.js, then routes and classifies images.
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
      if (!r.ok) throw new BundleError(`${owner}: ${file.path} HTTP ${r.status}; the bundle folder is incomplete: re-run 'athe convert'`);
      const bytes = new Uint8Array(await r.arrayBuffer());
      if (file.bytes !== undefined && bytes.length !== file.bytes) {
        throw new BundleError(`${owner}: ${file.path} has ${bytes.length} bytes, the manifest says ${file.bytes}; re-copy the bundle`);
      }
      const opts = {accelerator: 'wasm', cpuOptions: {numThreads: Math.max(1, threads)}};
      return liteRt.loadAndCompile(bytes, opts);
    };
    const models = {};
    for (const lv of manifest.levels) models[lv.name] = await compile(lv.file, `level ${lv.name}`);
    const router = manifest.router ? await compile(manifest.router.file, 'router') : null;
    return new Dispatcher(liteRt, manifest, models, router, base, performance.now() - t0, threads);
  }

  constructor(liteRt, manifest, models, router, base, loadMs, threads) {
    Object.assign(this, {liteRt, manifest, models, router, base, loadMs, threads});
    this.thresholds = manifest.router ? {...manifest.router.thresholds} : {};
  }

  /** URLs the app needs offline: manifest + every artifact. */
  artifactUrls() {
    const files = [...this.manifest.levels.map((lv) => lv.file)];
    if (this.manifest.router) files.push(this.manifest.router.file);
    return [new URL('manifest.json', this.base).href, ...files.map((f) => new URL(f.path, this.base).href)];
  }

  inputShape() {
    const c = this.manifest.input.cropSize;
    return this.manifest.input.layout === 'NHWC' ? [1, c, c, 3] : [1, 3, c, c];
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

  /** Route and classify a preprocessed tensor; policy 'router' or 'fixed:<level>'. */
  async predictTensor(x, {policy = 'router', timings = {}, start = performance.now()} = {}) {
    const names = this.manifest.levelNames;
    let level, scores = {};
    const t0 = performance.now();
    if (policy === 'router') {
      if (!this.router) throw new BundleError("this bundle has no router; choose a fixed level");
      const raw = await this.run(this.router, x);
      scores = Object.fromEntries(names.map((n, i) => [n, raw[i]]));
      level = chooseLevel(scores, names, this.thresholds);
    } else if (policy.startsWith('fixed:') && names.includes(policy.slice(6))) {
      level = policy.slice(6);
    } else {
      throw new BundleError(`policy ${JSON.stringify(policy)} unknown; use 'router' or fixed:<${names.join('|')}>`);
    }
    const t1 = performance.now();
    const logits = await this.run(this.models[level], x);
    const t2 = performance.now();
    const {index, probability} = softmaxTop1(logits);
    timings.route = t1 - t0;
    timings.infer = t2 - t1;
    timings.total = t2 - start;
    const labels = this.manifest.labels;
    return {label: index, labelName: labels[index] ?? String(index), probability, level,
      routerScores: scores, logits: Array.from(logits), timingsMs: timings};
  }

  /** Decode, preprocess, route and classify one image Blob/File. The prediction also carries the
   * model input (``input``), the cropped RGB it came from (``cropped``) and the photo's ``size``. */
  async predictBlob(blob, {policy = 'router', name} = {}) {
    const start = performance.now();
    const {rgb, width, height} = await decodeBlob(blob, name ?? blob.name ?? 'image');
    const t1 = performance.now();
    const {tensor, cropped} = preprocessRGB(rgb, width, height, this.manifest.input);
    const t2 = performance.now();
    const pred = await this.predictTensor(tensor, {policy, start, timings: {decode: t1 - start, preprocess: t2 - t1}});
    return Object.assign(pred, {input: tensor, cropped, size: [width, height]});
  }
}
