// The hooked-mlp explorer's front end (issue 22): an ES module exporting `render({model, el})`
// as anywidget wants it, used unchanged by the static page (analyses/pages/explorer.py), which
// hands it a model-like object over the inlined data. No framework, no network: SVG and canvas.
//
// The data (analyses.explorer.data.gather) carries, per state, the compact factors W_a, W_b,
// W_out [d_hidden, p], b_in, b_out. Every grid and logit is formed here from them:
//   post[n](a, b) = act(W_a[n, a] + W_b[n, b] + b_in[n]),
//   logits(a, b)[c] = sum_n post[n] W_out[n, c] + b_out[c],
// checked against the model's own hook_post and logits at the state's `checks` pairs (the
// header's "checks" badge), and the live ablations against the precomputed ones (Patching).
// Why this file is over 600 lines: it is the whole front end of one page (decoding, the five
// panels and their shared state), which a module split would only scatter, since anywidget and
// the static page each take a single ES module.

const NS = "http://www.w3.org/2000/svg";
const PHASE_COLOURS = {comprehension: "#2ca02c", grokking: "#d62728", memorization: "#1f77b4",
                       confusion: "#9e9e9e", diverged: "#000000"};
const FORM_COLOURS = {cosine: "#d62728", harmonics: "#9467bd", square: "#8c564b",
                      clipped: "#e377c2", two_freq: "#17becf"};
const SIGNAL_NAMES = {a: "W_a (input a)", b: "W_b (input b)", out: "W_out (output)"};

// ------------------------------------------------------------------------------ decoding
function bytesOf(b64) {
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function halfToFloat(h) {
  const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, f = h & 0x3ff;
  if (e === 0) return s * f * 2 ** -24;
  if (e === 31) return f ? NaN : s * Infinity;
  return s * (1 + f / 1024) * 2 ** (e - 15);
}

/** base64 of little-endian float32 ("f32") or float16 ("f16") numbers, as a Float32Array. */
export function decode(b64, dtype) {
  const bytes = bytesOf(b64);
  const view = new DataView(bytes.buffer);
  if (dtype === "f16") {
    const out = new Float32Array(bytes.length / 2);
    for (let i = 0; i < out.length; i++) out[i] = halfToFloat(view.getUint16(2 * i, true));
    return out;
  }
  const out = new Float32Array(bytes.length / 4);
  for (let i = 0; i < out.length; i++) out[i] = view.getFloat32(4 * i, true);
  return out;
}

function erf(x) {  // Abramowitz and Stegun 7.1.26 (|error| < 1.5e-7)
  const s = x < 0 ? -1 : 1, t = 1 / (1 + 0.3275911 * Math.abs(x));
  const y = 1 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t
                 + 0.254829592) * t * Math.exp(-x * x);
  return s * y;
}

/** The activations of hooked_mlp.family, as the model evaluates them. */
export const ACT = {
  relu: (x) => (x > 0 ? x : 0),
  gelu: (x) => 0.5 * x * (1 + erf(x / Math.SQRT2)),
  silu: (x) => x / (1 + Math.exp(-x)),
  quad: (x) => x * x,
  identity: (x) => x,
};

// ------------------------------------------------------------------------------ one state
/** One state's factors, decoded on first use, and what the views compute from them. */
export class State {
  constructor(raw, data) {
    this.raw = raw;
    const dt = raw.dtype || "f32";
    this.d = raw.dead.length;
    this.bOut = decode(raw.W.b_out, dt);
    this.p = this.bOut.length;
    this.Wa = decode(raw.W.a, dt);
    this.Wb = decode(raw.W.b, dt);
    this.Wo = decode(raw.W.out, dt);
    this.bIn = decode(raw.W.b_in, dt);
    // a sweep cell whose p, operation or activation differs from the header's carries its own
    this.act = ACT[raw.activation || data.activation];
    this.labels = raw.labels || (this.p === data.p ? data.labels : null);
    this.K = raw.spectrum.a ? decode(raw.spectrum.a, "f16").length / this.d : 0;
    this._posts = null;
    this._logits = null;
  }
  row(w, n) { return w.subarray(n * this.p, (n + 1) * this.p); }
  post(n, a, b) { return this.act(this.Wa[n * this.p + a] + this.Wb[n * this.p + b] + this.bIn[n]); }
  /** neuron n's activation over (a, b), [p * p] with a as the row */
  grid(n) {
    const p = this.p, g = new Float32Array(p * p);
    for (let a = 0; a < p; a++) for (let b = 0; b < p; b++) g[a * p + b] = this.post(n, a, b);
    return g;
  }
  /** every neuron's activation at every pair, [p * p, d] */
  posts() {
    if (this._posts) return this._posts;
    const p = this.p, d = this.d, out = new Float32Array(p * p * d);
    for (let a = 0; a < p; a++) for (let b = 0; b < p; b++)
      for (let n = 0; n < d; n++) out[(a * p + b) * d + n] = this.post(n, a, b);
    return (this._posts = out);
  }
  /** the unablated logits of every pair, [p * p, p] */
  allLogits() {
    if (this._logits) return this._logits;
    const p = this.p, d = this.d, P = this.posts(), out = new Float32Array(p * p * p);
    for (let i = 0; i < p * p; i++) {
      const o = out.subarray(i * p, (i + 1) * p);
      o.set(this.bOut);
      for (let n = 0; n < d; n++) {
        const v = P[i * d + n];
        if (v === 0) continue;
        const w = this.row(this.Wo, n);
        for (let c = 0; c < p; c++) o[c] += v * w[c];
      }
    }
    return (this._logits = out);
  }
  /** the logits of pair (a, b) with the neurons in `off` zero-ablated, [p] */
  logits(a, b, off) {
    const p = this.p, out = Float32Array.from(this.bOut);
    for (let n = 0; n < this.d; n++) {
      if (off && off.has(n)) continue;
      const v = this.post(n, a, b), w = this.row(this.Wo, n);
      for (let c = 0; c < p; c++) out[c] += v * w[c];
    }
    return out;
  }
  /** loss and accuracy over every valid pair with the neurons in `off` zero-ablated */
  score(off) {
    if (!this.labels) return {acc: NaN, loss: NaN};
    const p = this.p, d = this.d, L = this.allLogits(), P = this.posts();
    const offs = [...(off || [])];
    const row = new Float32Array(p);
    let right = 0, total = 0, loss = 0;
    for (let i = 0; i < p * p; i++) {
      const y = this.labels[i];
      if (y < 0) continue;
      row.set(L.subarray(i * p, (i + 1) * p));
      for (const n of offs) {
        const v = P[i * d + n];
        if (v === 0) continue;
        const w = this.row(this.Wo, n);
        for (let c = 0; c < p; c++) row[c] -= v * w[c];
      }
      let best = 0, max = -Infinity;
      for (let c = 0; c < p; c++) if (row[c] > max) { max = row[c]; best = c; }
      let z = 0;
      for (let c = 0; c < p; c++) z += Math.exp(row[c] - max);
      loss += Math.log(z) + max - row[y];
      right += best === y ? 1 : 0;
      total += 1;
    }
    return {acc: right / total, loss: loss / total};
  }
  /** the largest difference between this page's formula and the model's own numbers */
  checkError() {
    let worst = 0;
    for (const c of this.raw.checks || []) {
      const lg = this.logits(c.a, c.b, null);
      c.post.forEach((v, n) => { worst = Math.max(worst, Math.abs(this.post(n, c.a, c.b) - v)); });
      c.logits.forEach((v, k) => { worst = Math.max(worst, Math.abs(lg[k] - v)); });
    }
    return worst;
  }
  spectrum(signal) {
    const s = this.raw.spectrum[signal];
    return s ? decode(s, "f16") : null;
  }
  form(signal, name, n) {
    const f = this.raw.forms && this.raw.forms[signal] && this.raw.forms[signal][name];
    if (!f) return null;
    if (!this._forms) this._forms = {};
    const key = signal + "/" + name;
    if (!this._forms[key]) this._forms[key] = decode(f, "f16");
    return this._forms[key].subarray(n * this.p, (n + 1) * this.p);
  }
  cosine(signal, n) {
    const c = this.raw.cosine[signal];
    const k = c.k[n], s = c.scale[n], ph = c.phase[n], o = c.offset[n];
    if (s === null || ph === null || o === null) return null;
    return Array.from({length: this.p}, (_, x) => s * Math.cos(2 * Math.PI * k * x / this.p + ph) + o);
  }
}

// ------------------------------------------------------------------------------ drawing helpers
function h(tag, attrs, parent, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  if (text !== undefined) e.textContent = text;
  if (parent) parent.appendChild(e);
  return e;
}

function s(tag, attrs, parent) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
  }
  if (parent) parent.appendChild(e);
  return e;
}

function fmt(x, digits = 3) {
  if (x === null || x === undefined || Number.isNaN(x)) return "n/a";
  return Number.isInteger(x) ? String(x) : Number(x).toPrecision(digits);
}

const pct = (x) => (x === null || x === undefined || Number.isNaN(x) ? "n/a" : (100 * x).toFixed(3) + " %");

/** A line plot into `svg` (emptied): `series` of {y, colour, dash, width, label, dots};
 *  `opts`: {w, h, title, x (the x values), marker (an x to mark), logY, onclick(x)}. */
function plot(svg, series, opts) {
  svg.replaceChildren();
  const W = opts.w || 360, m = {l: 42, r: 8, t: 18, b: 22};
  const legend = [];  // [label, colour, x, y]: above the frame, wrapped
  let lx = m.l, ly = m.t + 7;
  for (const ser of series.filter((x) => x.label)) {
    const width = 5.6 * ser.label.length + 10;
    if (lx + width > W - m.r && lx > m.l) { lx = m.l; ly += 11; }
    legend.push([ser.label, ser.colour, lx, ly]);
    lx += width;
  }
  if (legend.length) m.t = ly + 4;
  const H = (opts.h || 170) + m.t - 18;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("width", W);
  svg.setAttribute("height", H);
  const n = series.length ? series[0].y.length : 0;
  const xs = opts.x || Array.from({length: n}, (_, i) => i);
  const tr = opts.logY ? (v) => (v > 0 ? Math.log10(v) : NaN) : (v) => v;
  let lo = Infinity, hi = -Infinity;
  for (const ser of series) for (const v of ser.y) {
    const t = tr(v);
    if (Number.isFinite(t)) { lo = Math.min(lo, t); hi = Math.max(hi, t); }
  }
  if (!Number.isFinite(lo)) { lo = 0; hi = 1; }
  if (hi - lo < 1e-12) { hi += 0.5; lo -= 0.5; }
  const x0 = xs[0] ?? 0, x1 = xs[xs.length - 1] ?? 1;
  const X = (x) => m.l + (W - m.l - m.r) * (x1 === x0 ? 0.5 : (x - x0) / (x1 - x0));
  const Y = (v) => H - m.b - (H - m.t - m.b) * (tr(v) - lo) / (hi - lo);
  s("rect", {x: m.l, y: m.t, width: W - m.l - m.r, height: H - m.t - m.b, class: "hmx-frame"}, svg);
  const t = s("text", {x: m.l, y: 12, class: "hmx-title"}, svg);
  t.textContent = opts.title || "";
  for (const [v, y] of [[hi, m.t + 8], [lo, H - m.b]]) {
    const lab = s("text", {x: m.l - 3, y, class: "hmx-tick", "text-anchor": "end"}, svg);
    lab.textContent = fmt(opts.logY ? 10 ** v : v, 2);
  }
  for (const [v, anchor] of [[x0, "start"], [x1, "end"]]) {
    const lab = s("text", {x: X(v), y: H - 8, class: "hmx-tick", "text-anchor": anchor}, svg);
    lab.textContent = fmt(v, 4);
  }
  if (opts.marker !== undefined && opts.marker !== null) {
    s("line", {x1: X(opts.marker), x2: X(opts.marker), y1: m.t, y2: H - m.b, class: "hmx-marker"}, svg);
  }
  for (const ser of series) {
    const pts = [];
    ser.y.forEach((v, i) => { if (Number.isFinite(tr(v))) pts.push(`${X(xs[i]).toFixed(1)},${Y(v).toFixed(1)}`); });
    s("polyline", {points: pts.join(" "), fill: "none", stroke: ser.colour,
                   "stroke-width": ser.width || 1.2, "stroke-dasharray": ser.dash || ""}, svg);
    if (ser.dots) for (const pt of pts) {
      const [cx, cy] = pt.split(",");
      s("circle", {cx, cy, r: 1.6, fill: ser.colour}, svg);
    }
  }
  for (const [label, colour, x, y] of legend) {
    s("text", {x, y, fill: colour, class: "hmx-legend"}, svg).textContent = label;
  }
  if (opts.onclick) {
    svg.onclick = (ev) => {
      const r = svg.getBoundingClientRect();
      const x = x0 + (x1 - x0) * ((ev.clientX - r.left) * W / r.width - m.l) / (W - m.l - m.r);
      opts.onclick(x);
    };
  }
}

/** Values over (a, b) as a p x p canvas: blue below zero, red above, white at zero. */
function drawGrid(canvas, g, p) {
  canvas.width = p;
  canvas.height = p;
  const ctx = canvas.getContext("2d"), img = ctx.createImageData(p, p);
  let max = 0;
  for (const v of g) max = Math.max(max, Math.abs(v));
  for (let i = 0; i < p * p; i++) {
    const t = max > 0 ? g[i] / max : 0, u = 1 - Math.abs(t);
    img.data.set(t >= 0 ? [255, 255 * u, 255 * u, 255] : [255 * u, 255 * u, 255, 255], 4 * i);
  }
  ctx.putImageData(img, 0, 0);
  return max;
}

// ------------------------------------------------------------------------------ the explorer
class Explorer {
  constructor(model, el) {
    this.model = model;
    this.el = el;
    this.data = model.get("data");
    this.states = new Map();
    const st = this.data.states || [];
    this.ui = {state: 0, neuron: 0, view: "neurons", a: 0, b: 0, answer: null, off: new Set(),
               sort: "abs", desc: true, filter: "", measure: null};
    if (!st.length) { h("p", {class: "hmx-empty"}, el, "No state to show."); return; }
    const init = model.get("neuron");
    if (Number.isInteger(init) && init >= 0 && init < st[0].dead.length) this.ui.neuron = init;
    this.build();
    this.update();
  }
  state(i = this.ui.state) {
    if (!this.states.has(i)) this.states.set(i, new State(this.data.states[i], this.data));
    return this.states.get(i);
  }
  tell(name, value) {
    if (!this.model.set) return;
    this.model.set(name, value);
    if (this.model.save_changes) this.model.save_changes();
  }

  build() {
    const D = this.data, root = h("div", {class: "hmx", id: "hmx"}, this.el);
    this.root = root;
    const head = h("div", {class: "hmx-head"}, root);
    h("strong", {id: "hmx-title"}, head, D.title);
    h("span", {class: "hmx-meta"}, head,
      ` p = ${D.p} · d_hidden = ${D.d_hidden} · ${D.activation} · ${D.operation} · ${D.kind}`);
    this.stateLine = h("div", {id: "hmx-state", class: "hmx-state"}, root);
    this.checkBadge = h("span", {id: "hmx-checks", class: "hmx-badge"}, this.stateLine);
    this.stateText = h("span", {id: "hmx-state-text"}, this.stateLine);
    if (D.kind === "series") {
      const bar = h("div", {class: "hmx-slider"}, root);
      h("label", {for: "hmx-epoch"}, bar, "epoch ");
      this.slider = h("input", {type: "range", id: "hmx-epoch", min: 0, max: D.states.length - 1,
                                value: D.states.length - 1, step: 1}, bar);
      this.epochLabel = h("span", {id: "hmx-epoch-label"}, bar);
      this.ui.state = D.states.length - 1;
      this.slider.addEventListener("input", () => this.setState(Number(this.slider.value)));
    }
    const tabs = h("div", {class: "hmx-tabs", id: "hmx-tabs"}, root);
    const views = [["neurons", "Neurons"], ["logits", "Logits"], ["patching", "Patching"]];
    if (D.curves) views.push(["dynamics", "Dynamics"]);
    if (D.sweep) views.push(["sweep", "Sweep"]);
    this.panes = {};
    for (const [key, name] of views) {
      h("button", {type: "button", "data-view": key, id: `hmx-tab-${key}`,
                   onclick: () => this.setView(key)}, tabs, name);
      this.panes[key] = h("div", {class: "hmx-pane", id: `hmx-view-${key}`}, root);
    }
    this.buildNeurons(this.panes.neurons);
    this.buildLogits(this.panes.logits);
    this.buildPatching(this.panes.patching);
    if (D.curves) this.buildDynamics(this.panes.dynamics);
    if (D.sweep) this.buildSweep(this.panes.sweep);
    this.setView(D.kind === "sweep" ? "sweep" : "neurons", false);
  }

  setView(key, redraw = true) {
    this.ui.view = key;
    for (const [k, pane] of Object.entries(this.panes)) pane.hidden = k !== key;
    for (const b of this.root.querySelectorAll(".hmx-tabs button"))
      b.classList.toggle("hmx-on", b.dataset.view === key);
    if (redraw) this.update();
  }
  setState(i) {
    this.ui.state = i;
    const d = this.state().d;
    if (this.ui.neuron >= d) this.ui.neuron = 0;
    this.ui.off = new Set([...this.ui.off].filter((n) => n < d));
    this.tell("state", i);
    this.update();
  }
  setNeuron(n) {
    this.ui.neuron = n;
    this.tell("neuron", n);
    this.update();
  }

  update() {
    const S = this.state(), raw = S.raw;
    const err = S.checkError();
    this.checkBadge.textContent = `checks ${err < 1e-3 * (1 + this.scale(S)) ? "agree" : "DIFFER"} (max |diff| ${err.toExponential(1)})`;
    this.checkBadge.dataset.maxerr = String(err);
    const where = raw.cell ? `cell ${raw.cell}` : raw.epoch !== null && raw.epoch !== undefined ? `epoch ${raw.epoch}` : "final weights";
    this.stateText.textContent = ` ${where} · accuracy ${pct(raw.acc)} · loss ${fmt(raw.loss, 4)}`;
    this.root.dataset.state = String(this.ui.state);
    if (this.slider) {
      this.slider.value = String(this.ui.state);
      this.epochLabel.textContent = ` ${raw.epoch} (snapshot ${this.ui.state + 1} of ${this.data.states.length})`;
    }
    const v = this.ui.view;
    if (v === "neurons") this.drawNeurons(S);
    if (v === "logits") this.drawLogits(S);
    if (v === "patching") this.drawPatching(S);
    if (v === "dynamics") this.drawDynamics(S);
    if (v === "sweep") this.drawSweep();
  }
  scale(S) {
    let m = 0;
    for (const c of S.raw.checks || []) for (const v of c.logits) m = Math.max(m, Math.abs(v));
    return m;
  }

  // ---------------------------------------------------------------- neurons
  buildNeurons(pane) {
    const left = h("div", {class: "hmx-col hmx-narrow"}, pane);
    this.hist = s("svg", {id: "hmx-freq-hist", class: "hmx-plot"}, left);
    h("input", {type: "search", id: "hmx-neuron-search", placeholder: "neuron, k=5, or a form",
                oninput: (e) => { this.ui.filter = e.target.value.trim(); this.update(); }}, left);
    this.list = h("ul", {id: "hmx-neuron-list", class: "hmx-list"}, left);
    const right = h("div", {class: "hmx-col"}, pane);
    const panel = h("div", {id: "hmx-neuron-panel", class: "hmx-panel"}, right);
    const line = (label, id) => { const p = h("div", {}, panel); h("span", {class: "hmx-key"}, p, label); return h("span", {id}, p); };
    this.pNeuron = line("neuron ", "hmx-neuron-number");
    this.pFreq = line("frequency ", "hmx-neuron-frequency");
    this.pVerdict = line("form ", "hmx-neuron-verdict");
    this.pFit = line("cosine R² (a, b, out) ", "hmx-neuron-r2");
    this.pState = line("", "hmx-neuron-state");
    h("button", {type: "button", id: "hmx-toggle-neuron", onclick: () => {
      const n = this.ui.neuron;
      if (this.ui.off.has(n)) this.ui.off.delete(n); else this.ui.off.add(n);
      this.update();
    }}, panel, "switch off / on (Patching)");
    const gridBox = h("div", {class: "hmx-gridbox"}, right);
    h("div", {class: "hmx-title"}, gridBox, "activation over (a ↓, b →)");
    this.canvas = h("canvas", {id: "hmx-grid", class: "hmx-grid"}, gridBox);
    this.gridScale = h("div", {id: "hmx-grid-scale", class: "hmx-small"}, gridBox);
    const plots = h("div", {class: "hmx-plots"}, right);
    this.wPlots = {};
    for (const sig of ["a", "b", "out"]) this.wPlots[sig] = s("svg", {id: `hmx-w-${sig}`, class: "hmx-plot"}, plots);
    this.specPlot = s("svg", {id: "hmx-spectrum", class: "hmx-plot"}, plots);
  }

  matches(S, n) {
    const f = this.ui.filter.toLowerCase();
    if (!f) return true;
    const raw = S.raw;
    const km = f.match(/^k\s*=\s*(\d+)$/);
    if (km) return raw.frequency[n] === Number(km[1]);
    if (/^\d+$/.test(f)) return String(n).startsWith(f);
    const w = raw.winner ? Object.values(raw.winner).map((x) => x[n]).join(" ") : "";
    return w.includes(f) || (f === "dead" && raw.dead[n]);
  }

  drawNeurons(S) {
    const raw = S.raw, n = this.ui.neuron, p = S.p;
    // frequency histogram: click a bar to list that frequency's neurons
    const counts = new Array(S.K + 1).fill(0);
    raw.frequency.forEach((k, i) => { if (!raw.dead[i] && k > 0) counts[k] += 1; });
    this.hist.replaceChildren();
    const W = 260, H = 90, bw = (W - 10) / Math.max(1, S.K), top = Math.max(1, ...counts);
    this.hist.setAttribute("viewBox", `0 0 ${W} ${H}`);
    this.hist.setAttribute("width", W);
    this.hist.setAttribute("height", H);
    const t = s("text", {x: 4, y: 10, class: "hmx-title"}, this.hist);
    t.textContent = "neurons per frequency (click a bar)";
    for (let k = 1; k <= S.K; k++) {
      if (!counts[k]) continue;
      const bh = (H - 26) * counts[k] / top;
      const r = s("rect", {x: 5 + (k - 1) * bw, y: H - 12 - bh, width: Math.max(1, bw - 0.5), height: bh,
                           "data-k": k, class: k === raw.frequency[n] ? "hmx-bar hmx-on" : "hmx-bar",
                           onclick: () => {
                             this.ui.filter = `k=${k}`;
                             this.root.querySelector("#hmx-neuron-search").value = this.ui.filter;
                             const first = raw.frequency.findIndex((f, i) => f === k && !raw.dead[i]);
                             this.setNeuron(first >= 0 ? first : n);
                           }}, this.hist);
      s("title", {}, r).textContent = `k = ${k}: ${counts[k]} neurons`;
    }
    // the list
    this.list.replaceChildren();
    for (let i = 0; i < S.d; i++) {
      if (!this.matches(S, i)) continue;
      const verdict = raw.winner ? raw.winner.a[i] : "";
      const li = h("li", {"data-n": i, class: i === n ? "hmx-on" : "", onclick: () => this.setNeuron(i)},
                   this.list, `${i} · k=${raw.frequency[i]}${raw.dead[i] ? " · dead" : ""}${verdict ? " · " + verdict : ""}${this.ui.off.has(i) ? " · off" : ""}`);
      if (i === n) li.scrollIntoView && requestAnimationFrame(() => li.scrollIntoView({block: "nearest"}));
    }
    // the panel
    this.pNeuron.textContent = String(n);
    this.pFreq.textContent = raw.dead[n] ? "none (dead)" : String(raw.frequency[n]);
    this.pVerdict.textContent = raw.winner
      ? ["a", "b", "out"].map((sg) => `${sg}: ${raw.winner[sg][n]}`).join(", ")
      : "not compared at this state (the form comparison is on the final state)";
    this.pFit.textContent = ["a", "b", "out"].map((sg) => fmt(raw.cosine[sg].r2[n], 3)).join(", ");
    this.pState.textContent = this.ui.off.has(n) ? "switched off in Patching" : "";
    // the grid
    const g = S.grid(n);
    const max = drawGrid(this.canvas, g, p);
    let sum = 0;
    for (const v of g) sum += v;
    this.canvas.dataset.neuron = String(n);
    this.canvas.dataset.sum = sum.toPrecision(8);
    this.canvas.dataset.max = String(max);
    this.gridScale.textContent = `max |activation| ${fmt(max, 3)} (red above zero, blue below)`;
    // weights with the fitted forms
    const xs = Array.from({length: p}, (_, i) => i);
    for (const sig of ["a", "b", "out"]) {
      const series = [{y: Array.from(S.row(sig === "a" ? S.Wa : sig === "b" ? S.Wb : S.Wo, n)), colour: "#333", dots: true, width: 0.6}];
      const cos = S.cosine(sig, n);
      const win = raw.winner ? raw.winner[sig][n] : null;
      let any = false;
      for (const f of this.data.forms) {
        const y = S.form(sig, f, n);
        if (!y) continue;
        any = true;
        const r2 = raw.form_r2 ? raw.form_r2[sig][f][n] : null;
        series.push({y: Array.from(y), colour: FORM_COLOURS[f] || "#888", width: f === win ? 2 : 0.8,
                     dash: f === win ? "" : "3 2", label: `${f}${f === win ? "*" : ""} ${fmt(r2, 2)}`});
      }
      if (!any && cos) series.push({y: cos, colour: FORM_COLOURS.cosine, width: 1.5, label: `cosine k=${raw.cosine[sig].k[n]}`});
      plot(this.wPlots[sig], series, {x: xs, title: `${SIGNAL_NAMES[sig]}, neuron ${n}`, w: 380, h: 160});
    }
    const ks = Array.from({length: S.K}, (_, i) => i + 1);
    const spec = ["a", "b", "out"].map((sig, j) => {
      const sp = S.spectrum(sig);
      return {y: sp ? Array.from(sp.subarray(n * S.K, (n + 1) * S.K)) : [], colour: ["#1f77b4", "#ff7f0e", "#2ca02c"][j], label: sig, dots: true};
    });
    plot(this.specPlot, spec, {x: ks, title: `power spectrum (share per frequency), neuron ${n}`, w: 380, h: 160});
  }

  // ---------------------------------------------------------------- logits
  buildLogits(pane) {
    const form = h("div", {class: "hmx-row"}, pane);
    const num = (label, id, key) => {
      h("label", {for: id}, form, label);
      return h("input", {type: "number", id, min: 0, max: this.data.p - 1, value: 0,
                         oninput: (e) => { const v = Number(e.target.value);
                           if (Number.isInteger(v) && v >= 0 && v < this.state().p) { this.ui[key] = v; this.ui.answer = null; this.update(); } }}, form);
    };
    this.inA = num("a ", "hmx-a", "a");
    this.inB = num(" b ", "hmx-b", "b");
    this.logitText = h("span", {id: "hmx-logit-text", class: "hmx-small"}, form);
    this.logitPlot = s("svg", {id: "hmx-logits", class: "hmx-plot"}, pane);
    h("div", {class: "hmx-small"}, pane, "Each neuron's contribution post · W_out[n, c] to the answer c (click a column head to sort, a row to open the neuron):");
    this.contrib = h("table", {id: "hmx-contrib", class: "hmx-table"}, pane);
  }

  drawLogits(S) {
    const p = S.p, raw = S.raw;
    if (this.ui.a >= p || this.ui.b >= p) {  // a cell of smaller p opened
      this.ui.a = Math.min(this.ui.a, p - 1); this.ui.b = Math.min(this.ui.b, p - 1); this.ui.answer = null;
      this.inA.value = String(this.ui.a); this.inB.value = String(this.ui.b);
    }
    const {a, b} = this.ui;
    this.inA.max = this.inB.max = String(p - 1);
    const lg = S.logits(a, b, this.ui.off);
    let best = 0;
    for (let c = 0; c < p; c++) if (lg[c] > lg[best]) best = c;
    const y = S.labels ? S.labels[a * p + b] : -1;
    const c = this.ui.answer ?? (y >= 0 ? y : best);
    this.logitText.textContent = ` answer ${y >= 0 ? y : "undefined"} · argmax ${best} · contributions to c = ${c}` +
      (this.ui.off.size ? ` · ${this.ui.off.size} neurons off` : "");
    this.logitText.dataset.argmax = String(best);
    const xs = Array.from({length: p}, (_, i) => i);
    plot(this.logitPlot, [{y: Array.from(lg), colour: "#1f77b4", dots: true}],
         {x: xs, title: `logits at (a, b) = (${a}, ${b}); the marked line is c = ${c} (click to choose c)`,
          marker: c, w: 760, h: 200, onclick: (x) => { this.ui.answer = Math.max(0, Math.min(p - 1, Math.round(x))); this.update(); }});
    const rows = [];
    for (let n = 0; n < S.d; n++) {
      const post = this.ui.off.has(n) ? 0 : S.post(n, a, b), w = S.Wo[n * p + c];
      rows.push({n, k: raw.frequency[n], post, w, contrib: post * w});
    }
    const key = this.ui.sort;
    const val = (r) => (key === "abs" ? Math.abs(r.contrib) : r[key]);
    rows.sort((r1, r2) => (this.ui.desc ? val(r2) - val(r1) : val(r1) - val(r2)));
    this.contrib.replaceChildren();
    const head = h("tr", {}, this.contrib);
    for (const [k, label] of [["n", "neuron"], ["k", "frequency"], ["post", "activation"], ["w", "W_out[n, c]"], ["contrib", "contribution"], ["abs", "|contribution|"]]) {
      h("th", {"data-sort": k, class: k === key ? "hmx-on" : "", onclick: () => {
        this.ui.desc = this.ui.sort === k ? !this.ui.desc : true;
        this.ui.sort = k;
        this.update();
      }}, head, label + (k === key ? (this.ui.desc ? " ↓" : " ↑") : ""));
    }
    for (const r of rows) {
      const tr = h("tr", {"data-n": r.n, onclick: () => { this.ui.neuron = r.n; this.setView("neurons"); }}, this.contrib);
      for (const v of [r.n, r.k, fmt(r.post, 4), fmt(r.w, 4), fmt(r.contrib, 4), fmt(Math.abs(r.contrib), 4)]) h("td", {}, tr, String(v));
    }
  }

  // ---------------------------------------------------------------- patching
  buildPatching(pane) {
    const row = h("div", {class: "hmx-row"}, pane);
    h("label", {for: "hmx-off-input"}, row, "neurons off ");
    this.offInput = h("input", {type: "text", id: "hmx-off-input", placeholder: "3, 17, 40-45", size: 30}, row);
    h("button", {type: "button", id: "hmx-off-apply", onclick: () => {
      const off = new Set(), d = this.state().d;
      for (const part of this.offInput.value.split(",")) {
        const m = part.trim().match(/^(\d+)(?:\s*-\s*(\d+))?$/);
        if (!m) continue;
        for (let i = Number(m[1]); i <= Number(m[2] ?? m[1]); i++) if (i < d) off.add(i);
      }
      this.ui.off = off;
      this.update();
    }}, row, "apply");
    h("button", {type: "button", id: "hmx-off-clear", onclick: () => { this.ui.off = new Set(); this.update(); }}, row, "all on");
    this.patchText = h("div", {id: "hmx-patch", class: "hmx-panel"}, pane);
    h("div", {class: "hmx-small"}, pane, "Each frequency's neurons zero-ablated: accuracy computed here from the weights, beside the one the model gave (precomputed in Python). Tick a frequency to switch its neurons off above.");
    this.ablTable = h("table", {id: "hmx-ablations", class: "hmx-table"}, pane);
  }

  drawPatching(S) {
    const off = this.ui.off, raw = S.raw;
    this.offInput.value = [...off].sort((x, y) => x - y).join(", ");
    const live = S.score(off);
    this.patchText.textContent = `${off.size} neurons off · accuracy ${pct(live.acc)} · loss ${fmt(live.loss, 4)} (all on: accuracy ${pct(raw.acc)})`;
    this.patchText.dataset.acc = String(live.acc);
    this.ablTable.replaceChildren();
    const head = h("tr", {}, this.ablTable);
    for (const t of ["off", "frequency", "neurons", "accuracy (model)", "accuracy (here)", "loss (model)", "loss (here)"]) h("th", {}, head, t);
    if (!raw.ablations) {
      h("td", {colspan: 7}, h("tr", {}, this.ablTable), "not precomputed for this state (the final snapshot has them)");
      return;
    }
    let worst = 0;
    for (const e of raw.ablations) {
      const mine = S.score(new Set(e.neurons));
      worst = Math.max(worst, Math.abs(mine.acc - e.acc));
      const tr = h("tr", {"data-k": e.k}, this.ablTable);
      const box = h("input", {type: "checkbox", "data-k": e.k}, h("td", {}, tr));
      box.checked = e.neurons.every((n) => off.has(n));
      box.addEventListener("change", () => {
        for (const n of e.neurons) { if (box.checked) off.add(n); else off.delete(n); }
        this.update();
      });
      for (const v of [e.k, e.neurons.join(" "), pct(e.acc), pct(mine.acc), fmt(e.loss, 4), fmt(mine.loss, 4)]) h("td", {}, tr, String(v));
      tr.dataset.model = String(e.acc);
      tr.dataset.here = String(mine.acc);
    }
    this.ablTable.dataset.worst = String(worst);
  }

  // ---------------------------------------------------------------- dynamics
  buildDynamics(pane) {
    const C = this.data.curves;
    const names = Object.keys(C.measures).filter((k) => !["train_acc", "val_acc", "train_loss", "val_loss", "restricted_loss", "excluded_loss"].includes(k));
    this.ui.measure = names[0] || null;
    this.accPlot = s("svg", {id: "hmx-curve-acc", class: "hmx-plot"}, pane);
    this.lossPlot = s("svg", {id: "hmx-curve-loss", class: "hmx-plot"}, pane);
    const row = h("div", {class: "hmx-row"}, pane);
    h("label", {for: "hmx-measure"}, row, "measure ");
    const sel = h("select", {id: "hmx-measure", onchange: (e) => { this.ui.measure = e.target.value; this.update(); }}, row);
    for (const n of names) h("option", {value: n}, sel, n);
    this.measurePlot = s("svg", {id: "hmx-curve-measure", class: "hmx-plot"}, pane);
    h("div", {class: "hmx-small"}, pane, "The line marks the slider's epoch; click a plot to jump to the nearest snapshot.");
  }

  drawDynamics(S) {
    const C = this.data.curves, M = C.measures, ep = S.raw.epoch;
    const epochs = this.data.states.map((st) => st.epoch);
    const jump = (x) => {
      let best = 0;
      epochs.forEach((e, i) => { if (Math.abs(e - x) < Math.abs(epochs[best] - x)) best = i; });
      this.setState(best);
    };
    const opt = {x: C.epochs, marker: ep, w: 760, h: 180, onclick: jump};
    const pick = (names, colours) => names.filter((k) => M[k]).map((k, i) => ({y: M[k], colour: colours[i], label: k}));
    plot(this.accPlot, pick(["train_acc", "val_acc"], ["#1f77b4", "#d62728"]), {...opt, title: `accuracy (epoch ${ep} marked)`});
    plot(this.lossPlot, pick(["train_loss", "val_loss", "restricted_loss", "excluded_loss"], ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]),
         {...opt, logY: true, title: "losses (log scale)"});
    if (this.ui.measure) plot(this.measurePlot, [{y: M[this.ui.measure], colour: "#333", dots: true, label: this.ui.measure}], {...opt, title: this.ui.measure});
  }

  // ---------------------------------------------------------------- sweep
  buildSweep(pane) {
    const Sw = this.data.sweep;
    h("div", {class: "hmx-small"}, pane, `Phase of each cell (most common over seeds ${Sw.seeds.join(", ")}), ${Sw.x_axis} across${Sw.y_axis ? ", " + Sw.y_axis + " up" : ""}. ` +
      `${Sw.embedded} of ${Sw.n_cells} cells carry their weights (bold outline): click one to open its first seed in the other views.`);
    this.phaseSvg = s("svg", {id: "hmx-phase", class: "hmx-plot"}, pane);
    const legend = h("div", {class: "hmx-small"}, pane);
    for (const [ph, col] of Object.entries(PHASE_COLOURS)) {
      h("span", {class: "hmx-swatch", style: `background:${col}`}, legend);
      legend.appendChild(document.createTextNode(` ${ph}  `));
    }
    this.cellText = h("div", {id: "hmx-cell", class: "hmx-panel"}, pane);
  }

  drawSweep() {
    const Sw = this.data.sweep, svg = this.phaseSvg;
    svg.replaceChildren();
    const nx = Sw.xs.length, ny = Sw.ys.length, cw = Math.max(18, Math.min(60, 600 / nx)), ch = Math.max(18, Math.min(50, 400 / ny));
    const m = {l: 90, b: 40, t: 8, r: 8}, W = m.l + nx * cw + m.r, H = m.t + ny * ch + m.b;
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    svg.setAttribute("width", W);
    svg.setAttribute("height", H);
    Sw.cells.forEach((c, i) => {
      const r = s("rect", {x: m.l + c.x * cw, y: m.t + (ny - 1 - c.y) * ch, width: cw - 1, height: ch - 1,
                           fill: c.phase ? PHASE_COLOURS[c.phase] || "#ccc" : "#fff", "data-cell": i,
                           class: c.state === null ? "hmx-cell" : "hmx-cell hmx-embedded"}, svg);
      if (c.state !== null && c.state === this.ui.state) r.classList.add("hmx-on");
      s("title", {}, r).textContent = `${c.label}: ${c.phase || "no runs"}, validation accuracy ${pct(c.val_acc)}${c.state === null ? " (weights not embedded)" : ""}`;
      if (c.state !== null) r.addEventListener("click", () => { this.setState(c.state); this.cellText.dataset.cell = String(i); });
    });
    Sw.xs.forEach((v, i) => { const t = s("text", {x: m.l + (i + 0.5) * cw, y: H - m.b + 14, "text-anchor": "middle", class: "hmx-tick"}, svg); t.textContent = v; });
    Sw.ys.forEach((v, j) => { const t = s("text", {x: m.l - 4, y: m.t + (ny - 1 - j + 0.6) * ch, "text-anchor": "end", class: "hmx-tick"}, svg); t.textContent = v; });
    const xl = s("text", {x: m.l + nx * cw / 2, y: H - 6, "text-anchor": "middle", class: "hmx-title"}, svg);
    xl.textContent = Sw.x_axis;
    if (Sw.y_axis) { const yl = s("text", {x: 4, y: m.t + 10, class: "hmx-title"}, svg); yl.textContent = Sw.y_axis; }
    const raw = this.state().raw;
    this.cellText.textContent = `open: ${raw.cell || "?"} · accuracy ${pct(raw.acc)} · loss ${fmt(raw.loss, 4)}`;
  }
}

/** anywidget's entry point (also the static page's): draw the explorer of `model.get("data")`
 *  into `el`. Returns the clean-up function anywidget calls when the view goes away. */
export function render({model, el}) {
  el.classList.add("hmx-host");
  el.hmxExplorer = new Explorer(model, el);  // kept on the element for page checks
  const redraw = () => { el.replaceChildren(); el.hmxExplorer = new Explorer(model, el); };
  if (model.on) model.on("change:data", redraw);
  return () => { if (model.off) model.off("change:data", redraw); el.replaceChildren(); };
}

export default {render};
