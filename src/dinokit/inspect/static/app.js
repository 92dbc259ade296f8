// dinokit inspect: the page. Plain JavaScript, no dependencies, talks only to its own server.
"use strict";

const $ = (id) => document.getElementById(id);

const state = {
  info: null,
  status: null,
  version: 0,          // id of the descriptor set the shown pictures come from
  view: "similarity",
  point: null,         // {image, x, y} in original pixels of that image
  seq: 0,              // last query sent
  shownSeq: 0,         // last query shown
  inFlight: false,
  pendingPoint: null,  // hover point waiting for the query in flight
  polling: null,
  cards: [],
  pairs: null,
};

// --- requests ------------------------------------------------------------------
async function api(path, options) {
  const resp = await fetch(path, options);
  let body = null;
  try { body = await resp.json(); } catch (e) { body = null; }
  if (!resp.ok) {
    const err = new Error((body && body.error) || `${resp.status} ${resp.statusText}`);
    err.status = resp.status;
    throw err;
  }
  return body;
}

function params(obj) {
  return new URLSearchParams(Object.entries(obj).map(([k, v]) => [k, String(v)])).toString();
}

// --- status --------------------------------------------------------------------
function showStatus(st, message) {
  const text = $("status-text");
  const bar = $("status-progress");
  const box = $("status");
  box.classList.toggle("error", st.state === "error" || Boolean(message));
  document.body.dataset.state = message ? "error" : st.state;
  bar.hidden = st.state !== "computing";
  $("apply").disabled = st.state === "computing";
  if (message) {
    text.textContent = message;
  } else if (st.state === "computing") {
    const p = st.progress;
    bar.max = Math.max(1, p.total);
    bar.value = p.done;
    const t = st.target;
    text.textContent = `computing layer ${t.layer} ${t.facet}${t.bin ? " binned" : ""}, stride ${t.stride}: ` +
      `${p.done}/${p.total} images` + (st.elapsed != null ? ` (${st.elapsed.toFixed(1)} s)` : "");
  } else if (st.state === "error") {
    text.textContent = st.error;
  } else if (st.state === "ready") {
    text.textContent = `ready (${st.seconds.toFixed(2)} s to compute)`;
  } else {
    text.textContent = "no descriptors yet";
  }
  if (st.settings) {
    const s = st.settings;
    $("current-settings").textContent =
      `Shown: layer ${s.layer}, ${s.facet}${s.bin ? ", log-binned" : ""}, stride ${s.stride}.`;
  }
}

function setForm(s) {
  $("layer").value = String(s.layer);
  $("facet").value = s.facet;
  $("stride").value = String(s.stride);
  $("bin").checked = Boolean(s.bin);
}

async function pollStatus() {
  let st;
  try {
    st = await api("/api/status");
  } catch (e) {
    showStatus({ state: "error" }, `server unreachable: ${e.message}`);
    schedulePoll(2000);
    return;
  }
  state.status = st;
  showStatus(st);
  if (st.ready && st.version !== state.version) {
    state.version = st.version;
    refresh();
  }
  if (st.state === "computing" || !st.ready) schedulePoll(st.state === "computing" ? 300 : 1000);
}

function schedulePoll(ms) {
  clearTimeout(state.polling);
  state.polling = setTimeout(pollStatus, ms);
}

// --- layout --------------------------------------------------------------------
function option(sel, value, label) {
  const o = document.createElement("option");
  o.value = String(value);
  o.textContent = label === undefined ? String(value) : label;
  sel.appendChild(o);
}

function buildPanel(info) {
  const c = info.choices;
  c.layers.forEach((l) => option($("layer"), l, l === info.model.depth - 1 ? `${l} (last)` : l));
  c.facets.forEach((f) => option($("facet"), f));
  c.strides.forEach((s) => option($("stride"), s, s === info.model.patch_size ? `${s} (patch)` : s));
  c.colormaps.forEach((m) => option($("cmap"), m));
  info.images.forEach((im, i) => {
    option($("corr-a"), i, `${i + 1}: ${im.name}`);
    option($("corr-b"), i, `${i + 1}: ${im.name}`);
  });
  if (info.images.length > 1) $("corr-b").value = "1";
  else {
    const radio = document.querySelector('input[name="view"][value="correspondences"]');
    radio.disabled = true;
    $("view-corr").classList.add("disabled");
    $("view-corr").title = "needs two images";
  }
  fillPcaShow();
  setForm(info.initial);
  const m = info.model;
  $("model").textContent = `${m.name || "custom model"} · patch ${m.patch_size} · ${m.depth} blocks · ` +
    `${m.heads} heads · load size ${m.load_size === null ? "original" : m.load_size} · ${m.device}`;
  $("colorbar").src = `/api/colorbar?${params({ cmap: $("cmap").value })}`;
}

function fillPcaShow() {
  const sel = $("pca-show");
  const keep = sel.value;
  sel.textContent = "";
  const k = clampInt($("pca-components").value, 3, 16, 4);
  option(sel, "rgb", "RGB (last three)");
  for (let i = 1; i <= k; i++) option(sel, i, `component ${i}`);
  sel.value = [...sel.options].some((o) => o.value === keep) ? keep : "rgb";
}

function buildGallery(info) {
  const gallery = $("gallery");
  info.images.forEach((im, i) => {
    const fig = document.createElement("figure");
    fig.className = "card";
    fig.dataset.index = String(i);
    const stage = document.createElement("div");
    stage.className = "stage";
    const ratio = im.width / im.height;
    stage.style.aspectRatio = `${im.width} / ${im.height}`;
    stage.style.width = `min(100%, calc(72vh * ${ratio.toFixed(5)}))`;
    const base = document.createElement("img");
    base.className = "base";
    base.src = im.url;
    base.alt = im.name;
    base.draggable = false;
    const overlay = document.createElement("img");
    overlay.className = "overlay";
    overlay.alt = "";
    overlay.hidden = true;
    const markers = document.createElement("div");
    markers.className = "markers";
    stage.append(base, overlay, markers);
    const cap = document.createElement("figcaption");
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = `${i + 1}. ${im.name}`;
    const meta = document.createElement("span");
    meta.className = "meta";
    meta.textContent = `${im.width}×${im.height}`;
    const score = document.createElement("span");
    score.className = "score";
    cap.append(name, meta, score);
    fig.append(stage, cap);
    gallery.appendChild(fig);
    state.cards.push({ fig, stage, base, overlay, markers, score, info: im });
    stage.addEventListener("click", (e) => onPoint(i, e, true));
    stage.addEventListener("mousemove", (e) => { if ($("hover").checked) onPoint(i, e, false); });
    base.addEventListener("load", drawLinks);
  });
}

function toImage(i, e) {
  const card = state.cards[i];
  const r = card.base.getBoundingClientRect();
  const fx = Math.min(Math.max((e.clientX - r.left) / r.width, 0), 1);
  const fy = Math.min(Math.max((e.clientY - r.top) / r.height, 0), 1);
  return { image: i, x: fx * card.info.width, y: fy * card.info.height };
}

// --- markers and overlays --------------------------------------------------------
function clearCard(card) {
  card.markers.textContent = "";
  card.overlay.hidden = true;
  card.overlay.removeAttribute("src");
  card.score.textContent = "";
  card.fig.classList.remove("query");
}

function addMarker(card, kind, xy, extra) {
  const m = document.createElement("div");
  m.className = `marker ${kind}`;
  m.style.left = `${(100 * xy[0]) / card.info.width}%`;
  m.style.top = `${(100 * xy[1]) / card.info.height}%`;
  m.dataset.x = xy[0].toFixed(2);
  m.dataset.y = xy[1].toFixed(2);
  if (extra) extra(m);
  card.markers.appendChild(m);
  return m;
}

function showOverlay(card, url, pixelated) {
  card.overlay.src = url;
  card.overlay.classList.toggle("pixelated", Boolean(pixelated));
  card.overlay.hidden = false;
}

function fmt(v, d = 3) { return Number(v).toFixed(d); }

// --- similarity -------------------------------------------------------------------
function onPoint(i, e, pinned) {
  if (!state.info) return;
  const p = toImage(i, e);
  if (state.view !== "similarity") setView("similarity", false);
  if (pinned || !state.inFlight) {
    query(p);
  } else {
    state.pendingPoint = p;
  }
}

async function query(p) {
  state.point = p;
  const seq = ++state.seq;
  state.inFlight = true;
  try {
    const res = await api(`/api/query?${params({ image: p.image, x: fmt(p.x, 2), y: fmt(p.y, 2),
      cmap: $("cmap").value, scale: $("scale").value })}`);
    if (seq > state.shownSeq && state.view === "similarity") {
      state.shownSeq = seq;
      showSimilarity(res);
    }
  } catch (e) {
    showStatus(state.status || { state: "error" }, e.message);
  } finally {
    state.inFlight = false;
    if (state.pendingPoint) {
      const next = state.pendingPoint;
      state.pendingPoint = null;
      query(next);
    }
  }
}

function showSimilarity(res) {
  const q = res.query;
  clearLinks();
  const rows = [];
  res.maps.forEach((m) => {
    const card = state.cards[m.image];
    clearCard(card);
    showOverlay(card, m.heatmap, false);
    card.overlay.dataset.version = String(res.version);
    if (m.image === q.image) {
      card.fig.classList.add("query");
      addMarker(card, "query", q.xy);
    }
    addMarker(card, "best", m.best_xy, (el) => { el.dataset.score = fmt(m.best_score, 4); });
    card.score.textContent = `best ${fmt(m.best_score)} at (${fmt(m.best_xy[0], 0)}, ${fmt(m.best_xy[1], 0)}) · ` +
      `range ${fmt(m.vmin, 2)}…${fmt(m.vmax, 2)}`;
    const name = escapeHtml(card.info.name);
    rows.push(`<tr><td><span class="trunc" title="${name}">${m.image + 1}. ${name}</span></td>` +
      `<td class="num">${fmt(m.best_score)}</td>` +
      `<td class="num">(${fmt(m.best_xy[0], 0)}, ${fmt(m.best_xy[1], 0)})</td></tr>`);
  });
  const scale = $("scale").value;
  $("vmin").textContent = scale === "joint" ? fmt(res.maps[0].vmin, 2) : "low (per image)";
  $("vmax").textContent = scale === "joint" ? fmt(res.maps[0].vmax, 2) : "high";
  const s = res.settings;
  $("readout").innerHTML =
    `<div>Point (${fmt(q.xy[0], 1)}, ${fmt(q.xy[1], 1)}) in image ${q.image + 1}, patch ${q.patch_index}</div>` +
    `<div class="hint">layer ${s.layer} ${s.facet}${s.bin ? " binned" : ""}, stride ${s.stride} · ` +
    `${fmt(res.timing_ms.similarity + res.timing_ms.render, 1)} ms on the server</div>` +
    `<table>${rows.join("")}</table>`;
  document.body.dataset.shown = String(state.shownSeq);
}

function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

// --- other views ---------------------------------------------------------------
async function showSaliency() {
  const res = await api(`/api/saliency?${params({ cmap: $("cmap").value })}`);
  if (state.view !== "saliency") return;
  clearLinks();
  res.maps.forEach((m) => {
    const card = state.cards[m.image];
    clearCard(card);
    showOverlay(card, m.heatmap, false);
    card.score.textContent = "CLS-attention saliency, last block";
  });
  $("vmin").textContent = "0";
  $("vmax").textContent = "1";
  $("readout").textContent = "Saliency: attention of the CLS token to each patch (min-max scaled per image).";
}

async function showPca() {
  const k = clampInt($("pca-components").value, 3, 16, 4);
  $("pca-info").textContent = "Computing…";
  const res = await api(`/api/pca?${params({ components: k, show: $("pca-show").value })}`);
  if (state.view !== "pca") return;
  clearLinks();
  res.maps.forEach((m) => {
    const card = state.cards[m.image];
    clearCard(card);
    showOverlay(card, m.picture, true);
    card.score.textContent = res.show === "rgb" ? `components ${k - 2}–${k} as RGB` : `component ${res.show}`;
  });
  const ratio = res.explained_variance_ratio.map((r) => `${(100 * r).toFixed(1)}%`).join(", ");
  $("pca-info").textContent = `Explained variance: ${ratio}.`;
  $("readout").textContent = "PCA: one basis fitted on all images' descriptors.";
}

async function showCorrespondences() {
  const a = Number($("corr-a").value);
  const b = Number($("corr-b").value);
  state.cards.forEach(clearCard);
  clearLinks();
  if (a === b) {
    $("corr-info").textContent = "Choose two different images.";
    return;
  }
  $("corr-info").textContent = "Computing…";
  const res = await api(`/api/correspondences?${params({ a, b,
    num_pairs: clampInt($("corr-k").value, 1, 100, 10), thresh: clampFloat($("corr-thresh").value, 0, 0.99, 0.05) })}`);
  if (state.view !== "correspondences") return;
  state.cards.forEach(clearCard);
  const ca = state.cards[res.a];
  const cb = state.cards[res.b];
  res.pairs.forEach((p, k) => {
    [[ca, p.a], [cb, p.b]].forEach(([card, xy]) => addMarker(card, "pair", xy, (el) => {
      el.style.background = p.color;
      const label = document.createElement("span");
      label.textContent = String(k + 1);
      el.appendChild(label);
    }));
  });
  ca.score.textContent = `image A · ${res.pairs.length} points`;
  cb.score.textContent = `image B · ${res.pairs.length} points`;
  state.pairs = res;
  drawLinks();
  $("corr-info").textContent = `${res.pairs.length} correspondences from ${res.num_best_buddies} best buddies ` +
    `(layer ${res.settings.layer} ${res.settings.facet}${res.settings.bin ? " binned" : ""}; ` +
    "the paper uses layer 9 keys, log-binned).";
  const table = document.createElement("table");
  res.pairs.forEach((p, k) => {
    const tr = table.insertRow();
    const dot = document.createElement("span");
    dot.textContent = "● ";
    dot.style.color = p.color;  // CSSOM, allowed by the page's content security policy
    const first = tr.insertCell();
    first.append(dot, String(k + 1));
    [`(${fmt(p.a[0], 0)}, ${fmt(p.a[1], 0)})`, `(${fmt(p.b[0], 0)}, ${fmt(p.b[1], 0)})`, fmt(p.similarity, 2)]
      .forEach((text) => { const c = tr.insertCell(); c.className = "num"; c.textContent = text; });
  });
  $("readout").replaceChildren(table);
}

function clearLinks() {
  state.pairs = null;
  $("links").textContent = "";
}

function drawLinks() {
  const svg = $("links");
  svg.textContent = "";
  const res = state.pairs;
  if (!res || state.view !== "correspondences") return;
  const g = $("gallery").getBoundingClientRect();
  const ra = state.cards[res.a].base.getBoundingClientRect();
  const rb = state.cards[res.b].base.getBoundingClientRect();
  const ia = state.cards[res.a].info;
  const ib = state.cards[res.b].info;
  const ns = "http://www.w3.org/2000/svg";
  res.pairs.forEach((p) => {
    const line = document.createElementNS(ns, "line");
    line.setAttribute("x1", ra.left - g.left + (p.a[0] / ia.width) * ra.width);
    line.setAttribute("y1", ra.top - g.top + (p.a[1] / ia.height) * ra.height);
    line.setAttribute("x2", rb.left - g.left + (p.b[0] / ib.width) * rb.width);
    line.setAttribute("y2", rb.top - g.top + (p.b[1] / ib.height) * rb.height);
    line.setAttribute("stroke", p.color);
    svg.appendChild(line);
  });
}

function clampInt(v, lo, hi, dflt) {
  const n = parseInt(v, 10);
  return Number.isFinite(n) ? Math.min(Math.max(n, lo), hi) : dflt;
}

function clampFloat(v, lo, hi, dflt) {
  const n = parseFloat(v);
  return Number.isFinite(n) ? Math.min(Math.max(n, lo), hi) : dflt;
}

// --- view switching -------------------------------------------------------------
function setView(view, doRefresh = true) {
  state.view = view;
  document.body.dataset.view = view;
  const radio = document.querySelector(`input[name="view"][value="${view}"]`);
  if (radio) radio.checked = true;
  if (doRefresh) refresh();
}

async function refresh() {
  if (!state.status || !state.status.ready) return;
  try {
    if (state.view === "similarity") {
      state.cards.forEach(clearCard);
      clearLinks();
      if (state.point) await query(state.point);
      else $("readout").textContent = "Click a point in any image.";
    } else if (state.view === "saliency") {
      await showSaliency();
    } else if (state.view === "pca") {
      await showPca();
    } else {
      await showCorrespondences();
    }
    showStatus(state.status);
  } catch (e) {
    showStatus(state.status || { state: "error" }, e.message);
    if (e.status === 503) schedulePoll(500);
  }
}

async function applySettings(ev) {
  ev.preventDefault();
  const body = {
    layer: Number($("layer").value),
    facet: $("facet").value,
    bin: $("bin").checked,
    stride: Number($("stride").value),
  };
  try {
    const st = await api("/api/settings", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    state.status = st;
    showStatus(st);
    if (st.state === "computing") schedulePoll(200);
    else if (st.version !== state.version) { state.version = st.version; refresh(); }
  } catch (e) {
    showStatus(state.status || { state: "error" }, e.message);
  }
}

function wire() {
  document.querySelectorAll('input[name="view"]').forEach((r) =>
    r.addEventListener("change", () => { if (r.checked) setView(r.value); }));
  $("settings-form").addEventListener("submit", applySettings);
  const opacity = $("opacity");
  const setOpacity = () => {
    document.documentElement.style.setProperty("--overlay-opacity", opacity.value);
    $("opacity-value").textContent = Number(opacity.value).toFixed(2);
  };
  opacity.addEventListener("input", setOpacity);
  setOpacity();
  $("cmap").addEventListener("change", () => {
    $("colorbar").src = `/api/colorbar?${params({ cmap: $("cmap").value })}`;
    refresh();
  });
  $("scale").addEventListener("change", refresh);
  $("pca-components").addEventListener("change", () => { fillPcaShow(); refresh(); });
  $("pca-show").addEventListener("change", refresh);
  ["corr-a", "corr-b", "corr-k", "corr-thresh"].forEach((id) => $(id).addEventListener("change", refresh));
  window.addEventListener("resize", drawLinks);
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && state.view === "similarity") {
      state.point = null;
      state.cards.forEach(clearCard);
      $("readout").textContent = "Click a point in any image.";
    }
  });
}

async function main() {
  setView("similarity", false);
  try {
    state.info = await api("/api/info");
  } catch (e) {
    showStatus({ state: "error" }, `cannot load the page data: ${e.message}`);
    return;
  }
  buildPanel(state.info);
  buildGallery(state.info);
  wire();
  await pollStatus();
  if (state.status && state.status.settings) setForm(state.status.settings);
}

main();
