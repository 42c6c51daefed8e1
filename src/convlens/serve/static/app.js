// convlens explorer: a thin client of the JSON API under /api (same-origin only, no libraries).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { imageId: null, layer: null, unit: null, camTarget: null, offset: 0, limit: 16, acts: null, status: null, featvisJob: null };

// ---------------------------------------------------------------- API helpers
async function api(path, options) {
  const res = await fetch(path, options);
  let body = null;
  try { body = await res.json(); } catch (e) { body = null; }
  if (!res.ok) {
    const msg = body && body.error ? body.error : `${res.status} ${res.statusText}`;
    const err = new Error(msg);
    err.status = res.status;
    throw err;
  }
  return body;
}

function showError(msg) { $("error-text").textContent = msg; $("error-bar").hidden = false; }
function clearError() { $("error-bar").hidden = true; $("error-text").textContent = ""; }
let busyCount = 0;
function busy(delta) { busyCount += delta; $("busy").hidden = busyCount <= 0; }
async function guarded(fn) {
  busy(1);
  try { return await fn(); } catch (e) { showError(e.message); return null; } finally { busy(-1); }
}
function fmt(v, digits = 4) {
  if (v === null || v === undefined) return "–";
  if (typeof v !== "number") return String(v);
  if (v !== 0 && (Math.abs(v) < 1e-3 || Math.abs(v) >= 1e6)) return v.toExponential(3);
  return Number(v.toPrecision(digits)).toString();
}
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}
function decodeFloat32(b64) {
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return new Float32Array(bytes.buffer);
}

// viridis, 9 anchors interpolated linearly
const VIRIDIS = [[68,1,84],[71,44,122],[59,81,139],[44,113,142],[33,144,141],[39,173,129],[92,200,99],[170,220,50],[253,231,37]];
function viridis(t) {
  t = Math.min(1, Math.max(0, t)) * (VIRIDIS.length - 1);
  const i = Math.min(VIRIDIS.length - 2, Math.floor(t)), f = t - i;
  const a = VIRIDIS[i], b = VIRIDIS[i + 1];
  return [a[0] + f * (b[0] - a[0]), a[1] + f * (b[1] - a[1]), a[2] + f * (b[2] - a[2])];
}

// ---------------------------------------------------------------- status
async function loadStatus() {
  const s = await api("/api/status");
  state.status = s;
  $("model-info").textContent = `model ${s.model} (${s.pretrained ? "pretrained" : "random weights"}) on ${s.device}, input ${s.input_size.join("x")} (CxHxW)`;
  $("cache-info").textContent = `cache ${(s.cache_bytes / 1048576).toFixed(1)} / ${(s.cache_limit_bytes / 1048576).toFixed(0)} MB`;
}

// ---------------------------------------------------------------- panel 1: images and prediction
async function loadImages(selectId) {
  const list = await api("/api/images");
  const sel = $("image-select");
  sel.replaceChildren(...list.map((im) => el("option", { value: im.id, text: `${im.name}${im.source === "upload" ? " (upload)" : ""}` })));
  const pick = selectId || state.imageId || (list[0] && list[0].id);
  if (pick) { sel.value = pick; await selectImage(pick); }
}

async function selectImage(id) {
  state.imageId = id;
  state.camTarget = null;
  state.unit = null;
  $("cam-target").textContent = "top-1";
  const src = `/api/images/${encodeURIComponent(id)}/image`;
  for (const img of ["image-view", "cam-image", "rf-image"]) $(img).src = src;
  $("cam-heat").removeAttribute("src");
  $("erf-image").removeAttribute("src");
  $("rf-box").hidden = true;
  $("acts-grid").replaceChildren(); // the old image's cells must not be clickable while the new ones load
  $("top5").replaceChildren();
  await guarded(loadPrediction);
  if (state.layer) await guarded(loadActivations);
  guarded(runCam);
  guarded(loadStatus);
}

async function loadPrediction() {
  const id = state.imageId;
  const top = await api(`/api/images/${encodeURIComponent(id)}/predict`);
  if (id !== state.imageId) return; // another image was chosen meanwhile: drop the stale answer
  const ol = $("top5");
  ol.replaceChildren(...top.map((t) => {
    const li = el("li", { "data-class": String(t.class) },
      el("span", { class: "bar" }), el("span", { class: "label", text: t.label }), el("span", { class: "prob mono", text: `${(100 * t.prob).toFixed(2)}%` }));
    li.querySelector(".bar").style.width = `${Math.max(1, 100 * t.prob)}%`;
    li.addEventListener("click", () => {
      for (const o of ol.children) o.classList.remove("selected");
      li.classList.add("selected");
      state.camTarget = t.class;
      $("cam-target").textContent = `${t.label} (${t.class})`;
      guarded(runCam);
    });
    return li;
  }));
}

async function upload(file) {
  clearError();
  const fd = new FormData();
  fd.append("file", file, file.name);
  const res = await guarded(() => api("/api/images", { method: "POST", body: fd }));
  if (res) await loadImages(res.id);
}

function setupUpload() {
  $("upload-input").addEventListener("change", (ev) => { const f = ev.target.files[0]; if (f) upload(f); ev.target.value = ""; });
  const zone = $("drop-zone");
  zone.addEventListener("dragover", (ev) => { ev.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (ev) => {
    ev.preventDefault(); zone.classList.remove("over");
    const f = ev.dataTransfer.files[0]; if (f) upload(f);
  });
  $("image-select").addEventListener("change", (ev) => { clearError(); selectImage(ev.target.value); });
}

// ---------------------------------------------------------------- panel 2: network
let layerData = null;
const expanded = new Set();
async function loadNetwork() {
  layerData = await api("/api/layers");
  $("cam-layers").replaceChildren(...["auto", ...layerData.map_layers].map((n) => el("option", { value: n })));
  $("net-totals").textContent = `${layerData.total_params.toLocaleString()} params, ${(layerData.total_macs / 1e9).toFixed(3)} GMACs`;
  renderNetwork();
}

function pair(v) { if (v === null || v === undefined) return "–"; return v[0] === v[1] ? String(v[0]) : `${v[0]}x${v[1]}`; }
function renderNetwork() {
  const depth = Math.max(1, parseInt($("net-depth").value || "2", 10));
  const maps = new Set(layerData.map_layers);
  const rows = layerData.layers;
  const table = el("table", { id: "layer-table" });
  table.append(el("thead", {}, el("tr", {}, ...["layer", "type", "output HxWxC", "params", "MACs", "k/s/p/d", "RF", "jump"].map((h) => el("th", { text: h })))));
  const body = el("tbody");
  const hasChildren = new Set(rows.filter((r) => r.depth > 1).map((r) => r.name.split(".").slice(0, -1).join(".")));
  for (const r of rows) {
    const key = r.call ? `${r.name}#${r.call}` : r.name;
    const parent = r.name.split(".").slice(0, -1).join(".");
    const visible = r.depth <= depth || isOpen(parent);
    if (!visible) continue;
    const tr = el("tr", { class: "layer-row", "data-layer": key });
    if (maps.has(key)) tr.classList.add("has-map");
    if (key === state.layer) tr.classList.add("selected");
    const toggle = hasChildren.has(r.name) ? el("span", { class: "toggle", text: (r.depth < depth || expanded.has(r.name)) ? "▾" : "▸" }) : el("span", { class: "toggle", text: "" });
    toggle.addEventListener("click", (ev) => { ev.stopPropagation(); if (expanded.has(r.name)) expanded.delete(r.name); else expanded.add(r.name); renderNetwork(); });
    const name = el("td", {}, toggle, document.createTextNode("\u00a0".repeat(2 * (r.depth - 1)) + key + (maps.has(key) ? " ▦" : "")));
    const win = r.kernel ? [r.kernel, r.stride, r.padding, r.dilation].map(pair).join("/") : "–";
    tr.append(name, el("td", { text: r.type }), el("td", { text: (r.output_shape || []).join("x") }),
      el("td", { text: r.params.toLocaleString() }), el("td", { text: r.macs.toLocaleString() }), el("td", { text: win }),
      el("td", { text: pair(r.receptive_field) + (r.rf_exact ? "" : "~") }), el("td", { text: r.jump ? pair(r.jump) : "global" }));
    if (maps.has(key)) tr.addEventListener("click", () => selectLayer(key));
    body.append(tr);
  }
  table.append(body);
  $("network").replaceChildren(table);
  function isOpen(p) {
    // a row deeper than the depth shows when every ancestor below the depth is expanded
    let parts = p.split(".");
    while (parts.length >= depth && parts.join("")) {
      if (!expanded.has(parts.join("."))) return false;
      parts = parts.slice(0, -1);
    }
    return true;
  }
}

async function loadGraph() {
  const depth = Math.max(1, parseInt($("net-depth").value || "2", 10));
  const res = await fetch(`/api/graph.svg?depth=${depth}`);
  if (!res.ok) { let m = `${res.status}`; try { m = (await res.json()).error; } catch (e) { /* not JSON */ } throw new Error(m); }
  const text = await res.text();
  const doc = new DOMParser().parseFromString(text, "image/svg+xml");
  const svg = document.importNode(doc.documentElement, true);
  const maps = new Set(layerData ? layerData.map_layers : []);
  for (const g of svg.querySelectorAll("g.node")) {
    const name = g.getAttribute("data-module") || "";
    if (name === state.layer) g.classList.add("selected");
    if (maps.has(name)) g.addEventListener("click", () => selectLayer(name));
  }
  $("network-graph").replaceChildren(svg);
}

function netView() { return document.querySelector("input[name=net-view]:checked").value; }
function showNetwork() {
  const graph = netView() === "graph";
  $("network").hidden = graph; $("network-graph").hidden = !graph;
  if (graph) guarded(loadGraph); else if (layerData) renderNetwork();
}

async function selectLayer(name) {
  state.layer = name;
  state.offset = 0;
  state.unit = null;
  $("acts-grid").replaceChildren();
  for (const tr of document.querySelectorAll("tr.layer-row")) tr.classList.toggle("selected", tr.dataset.layer === name);
  for (const g of document.querySelectorAll("#network-graph g.node")) g.classList.toggle("selected", g.getAttribute("data-module") === name);
  await guarded(loadActivations);
}

// ---------------------------------------------------------------- panel 3: activations
async function loadActivations() {
  if (!state.imageId || !state.layer) return;
  const id = state.imageId, layer = state.layer, offset = state.offset;
  const q = new URLSearchParams({ layer, offset, limit: state.limit });
  const a = await api(`/api/images/${encodeURIComponent(id)}/activations?${q}`);
  if (id !== state.imageId || layer !== state.layer || offset !== state.offset) return; // stale
  state.acts = a;
  const [C, H, W] = a.shape;
  $("acts-layer").textContent = `${a.layer}: ${H}x${W}x${C} (HxWxC)`;
  $("acts-page").textContent = `channels ${a.offset + 1}–${Math.min(C, a.offset + a.limit)} of ${C}`;
  $("acts-prev").disabled = a.offset === 0;
  $("acts-next").disabled = a.offset + a.limit >= C;
  $("legend-min").textContent = fmt(a.min);
  $("legend-max").textContent = fmt(a.max);
  const lg = $("legend").getContext("2d");
  for (let x = 0; x < 256; x++) { const [r, g, b] = viridis(x / 255); lg.fillStyle = `rgb(${r},${g},${b})`; lg.fillRect(x, 0, 1, 12); }
  const span = a.max > a.min ? a.max - a.min : 1;
  const cells = a.maps.map((m) => {
    const data = decodeFloat32(m.data);
    const cv = el("canvas", { width: W, height: H, "data-channel": String(m.channel) });
    const ctx = cv.getContext("2d");
    const img = ctx.createImageData(W, H);
    for (let k = 0; k < H * W; k++) {
      const [r, g, b] = viridis((data[k] - a.min) / span);
      img.data[4 * k] = r; img.data[4 * k + 1] = g; img.data[4 * k + 2] = b; img.data[4 * k + 3] = 255;
    }
    ctx.putImageData(img, 0, 0);
    const at = (ev) => {
      const rect = cv.getBoundingClientRect();
      const j = Math.min(W - 1, Math.max(0, Math.floor(((ev.clientX - rect.left) / rect.width) * W)));
      const i = Math.min(H - 1, Math.max(0, Math.floor(((ev.clientY - rect.top) / rect.height) * H)));
      return [i, j];
    };
    cv.addEventListener("mousemove", (ev) => { const [i, j] = at(ev); $("acts-hover").textContent = `c=${m.channel} i=${i} j=${j}: ${fmt(data[i * W + j], 6)}`; });
    cv.addEventListener("click", (ev) => {
      const [i, j] = at(ev);
      for (const c of document.querySelectorAll(".cell")) c.classList.remove("selected");
      cv.parentElement.classList.add("selected");
      selectUnit(m.channel, i, j, data[i * W + j]);
    });
    return el("div", { class: "cell" }, cv, el("div", { text: `ch ${m.channel} · mean ${fmt(m.mean, 3)}` }));
  });
  $("acts-grid").replaceChildren(...cells);
  guarded(loadStatus);
}

// ---------------------------------------------------------------- panel 4: the unit
async function selectUnit(c, i, j, value) {
  state.unit = { c, i, j, value };
  $("unit-at").textContent = `${state.layer}, channel ${c}, row ${i}, column ${j}`;
  $("unit-value").textContent = fmt(value, 7);
  $("unit-value").dataset.value = String(value);
  for (const id of ["trace-total", "trace-value", "trace-error", "trace-bias"]) { $(id).textContent = "…"; delete $(id).dataset.value; }
  $("trace-terms").replaceChildren();
  $("unit-message").textContent = "";
  $("rf-box").hidden = true;
  $("erf-image").removeAttribute("src");
  $("featvis-image").removeAttribute("src");
  $("featvis-status").textContent = "";
  $("patches").replaceChildren();
  $("patches-status").textContent = "";
  const q = new URLSearchParams({ layer: state.layer, c, i, j });
  if (!state.status.features.unit) { $("unit-message").textContent = "this convlens has no unit tracing"; return; }
  try {
    busy(1);
    const id = state.imageId, unit = state.unit;
    const u = await api(`/api/images/${encodeURIComponent(id)}/unit?${q}`);
    if (id !== state.imageId || unit !== state.unit) return; // stale
    showTrace(u);
  } catch (e) {
    $("unit-message").textContent = e.message;
    if (e.status !== 501) showError(e.message);
  } finally { busy(-1); }
  guarded(() => loadErf(q));
}

function showTrace(u) {
  $("trace-total").textContent = fmt(u.total, 7); $("trace-total").dataset.value = String(u.total);
  $("trace-value").textContent = fmt(u.value, 7); $("trace-value").dataset.value = String(u.value);
  $("trace-error").textContent = fmt(u.abs_error, 3);
  $("trace-bias").textContent = u.bias === null || u.bias === undefined ? "none" : fmt(u.bias, 6);
  const terms = (u.terms || []).slice().sort((a, b) => Math.abs(b.sum) - Math.abs(a.sum));
  const label = { linear: "input feature", add: "branch", multiply: "factor", concat: "input" }[u.kind] || "input channel";
  const what = u.patch ? "Σ patch × kernel" : "contribution";
  const t = el("table", {}, el("thead", {}, el("tr", {}, el("th", { text: label }), el("th", { text: what }))));
  const tb = el("tbody");
  for (const term of terms.slice(0, 64)) tb.append(el("tr", {}, el("td", { text: String(term.channel) }), el("td", { class: "mono", text: fmt(term.sum, 6) })));
  t.append(tb);
  const parts = [el("p", { class: "mono", text: u.formula || "" })];
  // patch x kernel for the largest contributions (conv): the numbers that add up to each channel's sum
  if (u.patch && u.kernel && u.in_channels) {
    for (const term of terms.slice(0, 3)) {
      const k = u.in_channels.indexOf(term.channel);
      if (k < 0) continue;
      const mat = (m) => m.map((row) => row.map((v) => fmt(v, 3)).join(" ")).join(" | ");
      parts.push(el("p", { class: "mono small", text: `ch ${term.channel}: patch [${mat(u.patch[k])}] ⊙ kernel [${mat(u.kernel[k])}] → ${fmt(term.sum, 6)}` }));
    }
  }
  $("trace-terms").replaceChildren(...parts, t);
  $("unit-message").textContent = `${terms.length} terms (largest first${terms.length > 64 ? ", 64 shown" : ""}) + bias = total; check: |model − traced| = ${fmt(u.abs_error, 3)}`;
  if (u.rf_box) drawBox(u.rf_box);
  const rf = u.rf ? `theoretical field ${u.rf.size ? u.rf.size.join("x") : ""} px${u.rf.exact === false ? " at most (an upper bound)" : ""}, box (top, left, bottom, right) ${u.rf_box.join(", ")} (orange)` : "";
  let erf = "";
  if (u.erf && u.erf.zero_gradient) erf = "; effective field: the gradient is zero on this image (the unit is off)";
  else if (u.erf) erf = `; effective field (heat): ${fmt(100 * u.erf.mass_in_box, 3)}% of |∂y/∂x| inside the box, r50 ${fmt(u.erf.r50, 3)} px, r90 ${fmt(u.erf.r90, 3)} px`;
  $("rf-info").textContent = rf + erf;
}

function drawBox(box) {
  const [top, left, bottom, right] = box;
  const [, H, W] = state.status.input_size;
  const sx = 224 / W, sy = 224 / H;
  const b = $("rf-box");
  b.style.left = `${left * sx}px`; b.style.top = `${top * sy}px`;
  b.style.width = `${(right - left + 1) * sx}px`; b.style.height = `${(bottom - top + 1) * sy}px`;
  b.hidden = false;
}

async function loadErf(q) {
  if (!state.status.features.erf) return;
  const id = state.imageId, unit = state.unit;
  const r = await api(`/api/images/${encodeURIComponent(id)}/erf?${q}`);
  if (id !== state.imageId || unit !== state.unit) return; // stale
  if (r && r.heatmap) { $("erf-image").src = r.heatmap; $("erf-image").style.opacity = 0.9; }
}

async function runFeatvis() {
  if (!state.unit) { showError("select a unit first: click a cell of the activation grid."); return; }
  const q = new URLSearchParams({ layer: state.layer, channel: state.unit.c, steps: 128, size: 128 });
  const job = await guarded(() => api(`/api/featvis?${q}`, { method: "POST" }));
  if (!job) return;
  state.featvisJob = job.id;
  $("featvis-cancel").disabled = false;
  pollJob(job.id);
}

async function pollJob(id) {
  let j;
  try { j = await api(`/api/jobs/${id}`); } catch (e) { showError(e.message); return; }
  $("featvis-progress").max = Math.max(1, j.total); $("featvis-progress").value = j.done;
  $("featvis-status").textContent = `${j.status} ${j.done}/${j.total || "?"} steps`;
  if (j.status === "done") { $("featvis-image").src = j.result; $("featvis-cancel").disabled = true; return; }
  if (j.status === "error" || j.status === "cancelled") { $("featvis-cancel").disabled = true; if (j.error) showError(j.error); return; }
  if (state.featvisJob === id) setTimeout(() => pollJob(id), 400);
}

async function runPatches() {
  if (!state.unit) { showError("select a unit first: click a cell of the activation grid."); return; }
  const q = new URLSearchParams({ layer: state.layer, channel: state.unit.c, k: 9 });
  const job = await guarded(() => api(`/api/top-patches?${q}`, { method: "POST" }));
  if (!job) return;
  state.patchesJob = job.id;
  $("patches-cancel").disabled = false;
  $("patches").replaceChildren();
  pollPatches(job.id);
}

async function pollPatches(id) {
  let j;
  try { j = await api(`/api/jobs/${id}`); } catch (e) { showError(e.message); return; }
  $("patches-progress").max = Math.max(1, j.total); $("patches-progress").value = j.done;
  $("patches-status").textContent = `${j.status}: ${j.done}/${j.total || "?"} images`;
  if (j.status === "done") {
    $("patches-cancel").disabled = true;
    $("patches").replaceChildren(...j.result.map((p) => el("div", { class: "patch" },
      el("img", { src: p.crop, alt: `${p.name} at (${p.y}, ${p.x})` }), el("div", { text: `${p.name} (${p.y},${p.x})` }), el("div", { class: "mono", text: fmt(p.value, 4) }))));
    return;
  }
  if (j.status === "error" || j.status === "cancelled") { $("patches-cancel").disabled = true; if (j.error) showError(j.error); return; }
  if (state.patchesJob === id) setTimeout(() => pollPatches(id), 400);
}

// ---------------------------------------------------------------- panel 5: CAM
async function runCam() {
  if (!state.imageId) return;
  const q = new URLSearchParams({ method: $("cam-method").value || "gradcam", layer: $("cam-layer").value.trim() || "auto" });
  if (state.camTarget !== null) q.set("target", state.camTarget);
  const id = state.imageId, key = q.toString();
  state.camKey = key;
  const r = await api(`/api/images/${encodeURIComponent(id)}/cam?${q}`);
  if (id !== state.imageId || key !== state.camKey) return; // stale
  $("cam-heat").src = r.heatmap;
  $("cam-heat").style.opacity = $("cam-alpha").value;
  $("cam-info").textContent = `${r.method} on ${r.layer} for ${r.label} (class ${r.target}, p = ${fmt(r.score, 3)})`;
  $("cam-metrics-out").replaceChildren();
}

async function camMetrics() {
  const q = new URLSearchParams({ method: $("cam-method").value, layer: $("cam-layer").value.trim() || "auto", metrics: "true" });
  if (state.camTarget !== null) q.set("target", state.camTarget);
  const r = await api(`/api/images/${encodeURIComponent(state.imageId)}/cam?${q}`);
  const out = $("cam-metrics-out");
  out.replaceChildren(...Object.entries(r.metrics).flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { class: "mono", text: fmt(v, 4) })]));
}

// ---------------------------------------------------------------- panel 6: arithmetic playground
const PG = ["input", "kernel", "stride", "padding", "dilation"];
let pgTimer = null, pgAnim = null;
function pgValues() {
  const v = {};
  for (const k of PG) v[k] = parseInt($(`pg-${k}-n`).value, 10);
  v.op = $("pg-op").value; v.same = $("pg-same").checked; v.ceil = $("pg-ceil").checked;
  v.outpad = parseInt($("pg-outpad").value || "0", 10);
  return v;
}
function pgQuery(v, convention, padding) {
  const q = new URLSearchParams({ input: `${v.input}x${v.input}x1`, kernel: v.kernel, stride: v.stride, padding, dilation: v.dilation, op: v.op, convention });
  if (v.op === "conv" || v.op === "convtranspose") q.set("filters", 1);
  if (v.op === "convtranspose" && convention === "torch") q.set("output_padding", v.outpad);
  if (v.ceil && v.op !== "conv" && convention === "torch") q.set("ceil_mode", "true");
  return `/api/shape?${q}`;
}
async function pgUpdate() {
  const v = pgValues();
  const torchPad = v.same && v.op !== "convtranspose" ? "same" : String(v.padding);
  const tLabel = v.op === "convtranspose" ? "Keras Conv2DTranspose" : "TensorFlow";
  $("pg-tf-same-label").textContent = `${tLabel} SAME`; $("pg-tf-valid-label").textContent = `${tLabel} VALID`;
  const settle = (p) => p.then((r) => ({ ok: true, r }), (e) => ({ ok: false, e }));
  const [t, s, va] = await Promise.all([
    settle(api(pgQuery(v, "torch", torchPad))),
    settle(api(pgQuery({ ...v, ceil: false }, "tf", "same"))),
    settle(api(pgQuery({ ...v, ceil: false }, "tf", "valid"))),
  ]);
  $("pg-torch").textContent = t.ok ? String(t.r.output[0]) : "✕";
  $("pg-tf-same").textContent = s.ok ? String(s.r.output[0]) : "✕";
  $("pg-tf-valid").textContent = va.ok ? String(va.r.output[0]) : "✕";
  if (!t.ok) { $("pg-formula").textContent = ""; $("pg-note").textContent = `PyTorch: ${t.e.message}`; $("pg-code").textContent = ""; drawPg(null); return; }
  const r = t.r;
  $("pg-formula").textContent = `${r.formula}\nH: ${r.axes[0].substituted}`;
  $("pg-note").textContent = r.notes.join(" ");
  const pad = v.same ? "'same'" : String(v.padding);
  if (v.op === "convtranspose") {
    $("pg-code").textContent = `torch.nn.ConvTranspose2d(in_channels=1, out_channels=1, kernel_size=${v.kernel}, stride=${v.stride}, padding=${v.padding}, output_padding=${v.outpad}, dilation=${v.dilation})  # ${v.input}x${v.input} -> ${r.output[0]}x${r.output[1]}`;
    drawPg(null);
    $("pg-step").textContent = "a transposed convolution scatters each input value as a kernel-sized stamp at stride spacing (no sliding window to animate)";
    return;
  }
  const code = v.op === "conv"
    ? `torch.nn.Conv2d(in_channels=1, out_channels=1, kernel_size=${v.kernel}, stride=${v.stride}, padding=${pad}, dilation=${v.dilation})  # ${v.input}x${v.input} -> ${r.output[0]}x${r.output[1]}`
    : `torch.nn.${v.op === "maxpool" ? "MaxPool2d" : "AvgPool2d"}(kernel_size=${v.kernel}, stride=${v.stride}, padding=${v.padding}${v.op === "maxpool" ? `, dilation=${v.dilation}` : ""}, ceil_mode=${v.ceil ? "True" : "False"})  # ${v.input}x${v.input} -> ${r.output[0]}x${r.output[1]}`;
  $("pg-code").textContent = code;
  drawPg(r);
}

// a viewport of at most VIEW cells per side follows the window, so large inputs stay readable
const VIEW = 24, OVIEW = 16;
function viewStart(pos, len, size, total) {
  if (total <= size) return 0;
  return Math.max(0, Math.min(total - size, pos - Math.floor((size - len) / 2)));
}
function drawPg(r) {
  if (pgAnim) { clearInterval(pgAnim); pgAnim = null; }
  const cv = $("pg-canvas"), ctx = cv.getContext("2d");
  ctx.clearRect(0, 0, cv.width, cv.height);
  if (!r) return;
  const [pt, pb, pl, pr] = r.padding;
  const H = r.input[0], W = r.input[1];
  const PH = H + pt + pb, PW = W + pl + pr;
  const OH = r.output[0], OW = r.output[1];
  const [kh, kw] = r.kernel, [sh, sw] = r.stride, [dh, dw] = r.dilation;
  const keh = dh * (kh - 1) + 1, kew = dw * (kw - 1) + 1;
  const vh = Math.min(PH, Math.max(VIEW, keh)), vw = Math.min(PW, Math.max(VIEW, kew));
  const ovh = Math.min(OH, OVIEW), ovw = Math.min(OW, OVIEW);
  const cell = Math.max(2, Math.min(22, Math.floor(270 / Math.max(vh, vw))));
  const ocell = Math.max(2, Math.min(22, Math.floor(170 / Math.max(ovh, ovw, 1))));
  const x0 = 4, y0 = 18;
  ctx.font = "11px system-ui, sans-serif";
  const label0 = `padded input ${PH}x${PW}`;
  const ox = x0 + Math.max(vw * cell + 40, ctx.measureText(label0 + ": rows 000..000, cols 000..000").width + 24);
  let step = 0;
  const total = Math.max(1, OH * OW);
  const frame = () => {
    const oi = Math.floor(step / OW) % Math.max(OH, 1), oj = step % OW;
    const top = oi * sh, left = oj * sw;
    const r0 = viewStart(top, keh, vh, PH), c0 = viewStart(left, kew, vw, PW);
    const or0 = viewStart(oi, 1, ovh, OH), oc0 = viewStart(oj, 1, ovw, OW);
    ctx.clearRect(0, 0, cv.width, cv.height);
    ctx.fillStyle = "#5b6475"; ctx.font = "11px system-ui, sans-serif";
    ctx.fillText(vh < PH || vw < PW ? `${label0}: rows ${r0}..${r0 + vh - 1}, cols ${c0}..${c0 + vw - 1}` : label0, x0, 12);
    ctx.fillText(`output ${OH}x${OW}`, ox, 12);
    const gap = cell > 3 ? 1 : 0, ogap = ocell > 3 ? 1 : 0;
    for (let i = 0; i < vh; i++) for (let j = 0; j < vw; j++) {
      const pi = r0 + i, pj = c0 + j;
      const inPad = pi < pt || pi >= pt + H || pj < pl || pj >= pl + W;
      ctx.fillStyle = inPad ? "#f3e3c3" : "#e7edf6";
      ctx.fillRect(x0 + j * cell, y0 + i * cell, cell - gap, cell - gap);
    }
    ctx.fillStyle = "rgba(232,89,12,0.8)";
    for (let a = 0; a < kh; a++) for (let b = 0; b < kw; b++) {
      const i = top + a * dh - r0, j = left + b * dw - c0;
      if (i >= 0 && i < vh && j >= 0 && j < vw) ctx.fillRect(x0 + j * cell, y0 + i * cell, cell - gap, cell - gap);
    }
    for (let i = 0; i < ovh; i++) for (let j = 0; j < ovw; j++) {
      ctx.fillStyle = or0 + i === oi && oc0 + j === oj ? "#e8590c" : "#dbe6f7";
      ctx.fillRect(ox + j * ocell, y0 + i * ocell, ocell - ogap, ocell - ogap);
    }
    $("pg-step").textContent = `output (${oi}, ${oj}) reads padded rows ${top}..${top + keh - 1}, cols ${left}..${left + kew - 1} (sand = padding)`;
    step = (step + 1) % total;
  };
  frame();
  pgAnim = setInterval(frame, 450);
}

function setupPlayground() {
  for (const k of PG) {
    const range = $(`pg-${k}`), num = $(`pg-${k}-n`);
    range.addEventListener("input", () => { num.value = range.value; schedulePg(); });
    num.addEventListener("input", () => { if (num.value !== "") { range.value = num.value; schedulePg(); } });
  }
  for (const id of ["pg-op", "pg-same", "pg-ceil"]) $(id).addEventListener("change", schedulePg);
  $("pg-outpad").addEventListener("input", schedulePg);
  pgUpdate();
}
function schedulePg() { clearTimeout(pgTimer); pgTimer = setTimeout(pgUpdate, 120); }

// ---------------------------------------------------------------- start
async function start() {
  $("error-close").addEventListener("click", clearError);
  setupUpload();
  setupPlayground();
  $("acts-prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - state.limit); guarded(loadActivations); });
  $("acts-next").addEventListener("click", () => { state.offset += state.limit; guarded(loadActivations); });
  $("net-depth").addEventListener("input", () => { if (netView() === "graph") guarded(loadGraph); else if (layerData) renderNetwork(); });
  for (const r of document.querySelectorAll("input[name=net-view]")) r.addEventListener("change", showNetwork);
  $("patches-run").addEventListener("click", runPatches);
  $("patches-cancel").addEventListener("click", async () => {
    if (state.patchesJob) await guarded(() => api(`/api/jobs/${state.patchesJob}`, { method: "DELETE" }));
  });
  $("cam-run").addEventListener("click", () => { clearError(); guarded(runCam); });
  $("cam-method").addEventListener("change", () => guarded(runCam));
  $("cam-layer").addEventListener("change", () => { clearError(); guarded(runCam); });
  $("cam-alpha").addEventListener("input", () => { $("cam-heat").style.opacity = $("cam-alpha").value; });
  $("cam-metrics").addEventListener("click", () => guarded(camMetrics));
  $("featvis-run").addEventListener("click", runFeatvis);
  $("featvis-cancel").addEventListener("click", async () => {
    if (state.featvisJob) await guarded(() => api(`/api/jobs/${state.featvisJob}`, { method: "DELETE" }));
  });
  await guarded(loadStatus);
  const methods = await guarded(() => api("/api/methods"));
  $("cam-method").replaceChildren(...(methods || ["gradcam"]).map((m) => el("option", { value: m, text: m })));
  await guarded(loadNetwork);
  await guarded(() => loadImages());
  document.body.dataset.ready = "1";
}
document.addEventListener("DOMContentLoaded", start);
