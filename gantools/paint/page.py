"""The paint page: one self-contained HTML document (inline CSS and script, no CDN, works offline).

The brush paints a mask at the model's own resolution (one cell per image pixel, shown enlarged),
so what the page sends is exactly what the user sees outlined. The page talks only to its own
server (`connect-src 'self'`); images arrive as PNG data URIs.
"""

from __future__ import annotations

# The page's own <meta> copy; the server also sends it as a header, with frame-ancestors (which a
# <meta> policy may not carry).
PAGE_POLICY = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; "
               "connect-src 'self'; base-uri 'none'; form-action 'none'")
SECURITY_POLICY = PAGE_POLICY + "; frame-ancestors 'none'"

PAGE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="__POLICY__">
<link rel="icon" href="data:,">
<title>gantools paint</title>
<style>
  :root { --accent: #2f6fde; --warn: #a35200; --line: #d4d7dd; font-family: system-ui, sans-serif; }
  body { margin: 0; color: #1d2430; background: #f5f6f8; }
  header { padding: 10px 18px; background: #1d2430; color: #fff; font-size: 15px; }
  header b { font-size: 17px; margin-right: 8px; }
  main { display: flex; flex-wrap: wrap; gap: 18px; padding: 16px; align-items: flex-start; }
  section { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 12px; }
  #stage { position: relative; width: min(512px, 92vw); aspect-ratio: 1; background: #000; cursor: crosshair;
           touch-action: none; }
  #stage img, #stage canvas { position: absolute; inset: 0; width: 100%; height: 100%;
                              image-rendering: pixelated; }
  .row { display: flex; flex-wrap: wrap; gap: 8px; align-items: center; margin-top: 10px; }
  button, .button { font: inherit; padding: 5px 11px; border: 1px solid #aab; border-radius: 5px;
                    background: #fff; cursor: pointer; text-decoration: none; color: inherit; }
  button:disabled { opacity: .45; cursor: default; }
  button.primary { background: var(--accent); color: #fff; border-color: var(--accent); font-weight: 600; }
  .button input { display: none; }
  #canvas-side { max-width: min(512px, 92vw); }
  #tools { width: 330px; }
  h2 { font-size: 14px; margin: 4px 0 8px; text-transform: uppercase; letter-spacing: .04em; color: #566; }
  #palette { display: grid; grid-template-columns: 1fr 1fr; gap: 3px 10px; max-height: 260px; overflow: auto; }
  #palette label { white-space: nowrap; font-size: 14px; }
  #palette label.weak { color: #99a; }
  #palette .n { color: #667; font-size: 12px; }
  #seed { width: 6em; }
  #busy { display: none; } body.uploading #busy { display: flex; }
  progress { width: 200px; }
  #status { min-height: 1.3em; margin-top: 8px; font-size: 14px; color: #445; }
  #status.error { color: #b00020; }
  #changed table { border-collapse: collapse; font-size: 13px; width: 100%; margin-top: 6px; }
  #changed td, #changed th { padding: 2px 6px; text-align: right; border-bottom: 1px solid #eee; }
  #changed td:first-child, #changed th:first-child { text-align: left; }
  #changed tr.edited td { font-weight: 700; }
  #change-note { color: var(--warn); font-size: 14px; }
  #change-head, #source { font-size: 13px; color: #556; }
  .hint { font-size: 12px; color: #667; margin-top: 6px; }
  #concept-note:not(:empty) { color: var(--warn); font-size: 13px; margin-top: 8px; }
</style>
</head>
<body>
<header><b>gantools paint</b><span id="model"></span></header>
<main>
<section id="canvas-side">
  <div id="stage"><img id="image" alt="the image being painted"><canvas id="mask"></canvas></div>
  <div class="row">
    <label>brush <input type="range" id="brush" min="1" max="16" value="6"></label><span id="brush-size"></span>
    <label><input type="radio" name="tool" value="draw" checked> draw</label>
    <label><input type="radio" name="tool" value="erase"> erase</label>
    <button id="clear">Clear</button>
  </div>
  <div class="row">
    <button id="undo" disabled>Undo</button><button id="redo" disabled>Redo</button>
    <label>seed <input type="number" id="seed" min="0" value="0"></label>
    <button id="new-sample">New sample</button><button id="random" title="a random seed">Random</button>
    <label class="button">Upload image<input type="file" id="upload" accept="image/*"></label>
    <a class="button" id="download" download="paint.png" href="#">Download PNG</a>
  </div>
  <div class="row" id="busy"><progress id="progress"></progress><span id="progress-text"></span></div>
  <div id="source"></div>
  <div id="status" role="status"></div>
</section>
<section id="tools">
  <h2>Concepts <span id="layer" class="n"></span></h2>
  <div id="palette"></div>
  <div id="concept-note" role="note"></div>
  <div class="row">
    <label><input type="radio" name="action" value="remove" checked> Remove</label>
    <label><input type="radio" name="action" value="add"> Add</label>
  </div>
  <div class="row">
    <label>strength <input type="range" id="strength" min="0" max="1" step="0.05" value="1"></label>
    <span id="strength-value">1.00</span>
  </div>
  <div id="strength-note" class="hint"></div>
  <div class="row"><button id="apply" class="primary">Apply</button></div>
  <h2 style="margin-top:16px">What changed</h2>
  <div id="changed"><div id="change-head">No edit yet: brush over the image, choose a concept, Apply.</div>
    <p id="change-note"></p><table id="change-table"></table></div>
</section>
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const canvas = $("mask"), ctx = canvas.getContext("2d");
let S = 0, session = null, mask = null, drawing = false, last = null, studio = null, canUndo = false, canRedo = false;

function status(text, error) { $("status").textContent = text || ""; $("status").className = error ? "error" : ""; }

async function api(method, path, body, file) {
  const headers = {};
  if (session) headers["X-Paint-Session"] = session;
  let payload;
  if (file) { payload = file; headers["Content-Type"] = file.type || "application/octet-stream"; }
  else if (method === "POST") { payload = JSON.stringify(body || {}); headers["Content-Type"] = "application/json"; }
  const response = await fetch(path, { method, headers, body: payload });
  let data;
  try { data = await response.json(); } catch (e) { data = { error: response.status + " " + response.statusText }; }
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

function pct(v) { return (100 * v).toFixed(1) + "%"; }

function showChange(change) {
  const table = $("change-table");
  table.textContent = "";
  $("change-note").textContent = "";
  if (!change) { $("change-head").textContent = "No edit yet: brush over the image, choose a concept, Apply."; return; }
  $("change-head").textContent = (change.action === "remove" ? "Removed " : "Added ") + change.concept +
    " (" + change.units.length + " units of " + change.layer + ", strength " + change.strength.toFixed(2) +
    ") in " + pct(change.region_fraction) + " of the image; inside the stroke " + change.concept + " went " +
    pct(change.inside.before) + " \u2192 " + pct(change.inside.after) + ".";
  $("change-note").textContent = [change.note].concat(change.notes || []).filter(Boolean).join(" \u2022 ");
  const head = table.insertRow();
  for (const t of ["concept", "before", "after", "change"]) { const th = document.createElement("th"); th.textContent = t; head.appendChild(th); }
  const rows = Object.entries(change.fractions).filter(([c, f]) => c === change.concept || f.before > 5e-4 || f.after > 5e-4);
  rows.sort((a, b) => (b[0] === change.concept) - (a[0] === change.concept) ||
    Math.abs(b[1].after - b[1].before) - Math.abs(a[1].after - a[1].before));
  for (const [c, f] of rows) {
    const tr = table.insertRow();
    if (c === change.concept) tr.className = "edited";
    const d = f.after - f.before;
    for (const t of [c, pct(f.before), pct(f.after), (d >= 0 ? "+" : "") + (100 * d).toFixed(1)]) tr.insertCell().textContent = t;
  }
}

function show(view) {
  session = view.session;
  $("image").src = view.image;
  $("download").href = view.image;
  if (view.seed !== null) $("seed").value = view.seed;
  canUndo = view.can_undo; canRedo = view.can_redo;
  $("undo").disabled = !canUndo;
  $("redo").disabled = !canRedo;
  $("source").textContent = view.source + (view.steps > 1 ? " \u00b7 edit " + view.step + " of " + (view.steps - 1) : "");
  showChange(view.change);
}

function drawMask() {
  const img = ctx.createImageData(S, S);
  for (let i = 0; i < S * S; i++) if (mask[i]) img.data.set([255, 40, 200, 120], 4 * i);
  ctx.putImageData(img, 0, 0);
}

function stamp(x, y) {
  const size = +$("brush").value, r = size / 2, on = document.querySelector("input[name=tool]:checked").value === "draw" ? 1 : 0;
  const x0 = Math.max(0, Math.floor(x - r)), x1 = Math.min(S - 1, Math.floor(x + r));
  const y0 = Math.max(0, Math.floor(y - r)), y1 = Math.min(S - 1, Math.floor(y + r));
  for (let py = y0; py <= y1; py++) for (let px = x0; px <= x1; px++) {
    const dx = px + 0.5 - x, dy = py + 0.5 - y;
    if (dx * dx + dy * dy <= r * r || (px === Math.floor(x) && py === Math.floor(y))) mask[py * S + px] = on;
  }
}

function position(e) {
  const rect = canvas.getBoundingClientRect();
  return [Math.min(S - 1e-3, Math.max(0, (e.clientX - rect.left) / rect.width * S)),
          Math.min(S - 1e-3, Math.max(0, (e.clientY - rect.top) / rect.height * S))];
}

function strokeTo(p) {
  const [x0, y0] = last, [x1, y1] = p, step = Math.max(0.25, +$("brush").value / 4);
  const n = Math.max(1, Math.ceil(Math.hypot(x1 - x0, y1 - y0) / step));
  for (let i = 1; i <= n; i++) stamp(x0 + (x1 - x0) * i / n, y0 + (y1 - y0) * i / n);
  last = p;
  drawMask();
}

canvas.addEventListener("pointerdown", (e) => {
  if (!S) return;
  drawing = true; canvas.setPointerCapture(e.pointerId); last = position(e); stamp(last[0], last[1]); drawMask();
});
canvas.addEventListener("pointermove", (e) => { if (drawing) strokeTo(position(e)); });
for (const ev of ["pointerup", "pointercancel"]) canvas.addEventListener(ev, () => { drawing = false; });

function clearMask() { mask.fill(0); drawMask(); }

function buildPalette() {
  const box = $("palette");
  box.textContent = "";
  const entries = studio.concepts.slice().sort((a, b) => b.units - a.units || (a.weak - b.weak));
  entries.forEach((c, i) => {
    const label = document.createElement("label");
    if (c.weak) label.className = "weak";
    label.title = c.note || (c.units + " interpretable units at " + studio.layer + "; best IoU " + c.best_iou.toFixed(3));
    const input = document.createElement("input");
    input.type = "radio"; input.name = "concept"; input.value = c.name; input.checked = i === 0;
    const n = document.createElement("span"); n.className = "n"; n.textContent = " " + c.units + (c.units === 1 ? " unit" : " units");
    label.append(input, " " + c.name, n);
    box.appendChild(label);
  });
  conceptNote();
}

function conceptNote() {
  const chosen = document.querySelector("input[name=concept]:checked");
  const c = chosen && studio.concepts.find((e) => e.name === chosen.value);
  let text = "";
  if (c && c.weak) {
    text = "\u26a0 " + c.name + " is weak at " + studio.layer + ": " + (c.note || "no interpretable unit") +
      ". It stays in the palette, but the model rarely draws it: an edit may change little or nothing.";
  } else if (c && c.note) {
    text = c.note + ": its top " + studio.top + " units are used all the same (they still act on it).";
  }
  $("concept-note").textContent = text;
}

function strengthNote() {
  // The dissection keeps one high level per unit (its 0.99 quantile, q99) besides the mean, so Add's
  // target is q99 and the slider says how far towards it, not which quantile.
  const s = +$("strength").value, add = document.querySelector("input[name=action]:checked").value === "add";
  $("strength-value").textContent = s.toFixed(2);
  $("strength-note").textContent = add
    ? "Add: the units go " + Math.round(100 * s) + "% of the way from their value to their q99 level " +
      "(the 0.99 quantile of their activations in the dissection; the only high level it stores)."
    : "Remove: " + Math.round(100 * s) + "% of the units' activation is switched off (0 keeps it, 1 sets it to zero).";
}

async function busy(label, work) {
  const buttons = document.querySelectorAll("button");
  buttons.forEach((b) => { b.disabled = true; });
  status(label);
  try { await work(); status(""); }
  catch (e) { status(e.message, true); }
  finally { buttons.forEach((b) => { b.disabled = false; }); $("undo").disabled = !canUndo; $("redo").disabled = !canRedo; }
}

$("apply").addEventListener("click", () => {
  if (!mask.some((v) => v)) { status("Brush over the image first: the stroke is where the concept is added or removed.", true); return; }
  const concept = document.querySelector("input[name=concept]:checked");
  if (!concept) { status("Choose a concept.", true); return; }
  const body = { concept: concept.value, action: document.querySelector("input[name=action]:checked").value,
                 strength: +$("strength").value, layer: studio.layer, mask: Array.from(mask, (v) => (v ? "1" : "0")).join("") };
  busy("applying\u2026", async () => { show(await api("POST", "/api/apply", body)); clearMask(); });
});
$("undo").addEventListener("click", () => busy("", async () => show(await api("POST", "/api/undo"))));
$("redo").addEventListener("click", () => busy("", async () => show(await api("POST", "/api/redo"))));
$("clear").addEventListener("click", clearMask);
$("brush").addEventListener("input", () => { $("brush-size").textContent = $("brush").value + " px"; });
$("palette").addEventListener("change", conceptNote);
$("strength").addEventListener("input", strengthNote);
for (const r of document.querySelectorAll("input[name=action]")) r.addEventListener("change", strengthNote);
function loadSample() {
  const seed = Math.max(0, Math.floor(+$("seed").value || 0));
  busy("drawing sample " + seed + "\u2026", async () => { show(await api("POST", "/api/sample", { seed })); clearMask(); });
}
$("new-sample").addEventListener("click", loadSample);
$("seed").addEventListener("keydown", (e) => { if (e.key === "Enter") loadSample(); });
$("random").addEventListener("click", () => { $("seed").value = Math.floor(Math.random() * 100000); loadSample(); });
$("upload").addEventListener("change", () => {
  const file = $("upload").files[0];
  $("upload").value = "";
  if (!file) return;
  if (file.size > studio.max_upload_bytes) { status("This file is too large: at most " + studio.max_upload_bytes + " bytes.", true); return; }
  document.body.classList.add("uploading");
  $("progress").removeAttribute("value"); $("progress-text").textContent = "inverting " + file.name + "\u2026";
  const timer = setInterval(async () => {
    try {
      const job = await api("GET", "/api/progress");
      if (job.total) { $("progress").max = job.total; $("progress").value = job.completed; }
      if (job.task) $("progress-text").textContent = job.task + (job.total ? " " + job.completed + "/" + job.total : "");
    } catch (e) { /* the next poll tries again */ }
  }, 300);
  busy("inverting " + file.name + " layer-wise (this takes a while on a CPU)\u2026", async () => {
    try { show(await api("POST", "/api/upload?name=" + encodeURIComponent(file.name), null, file)); clearMask(); }
    finally { clearInterval(timer); document.body.classList.remove("uploading"); }
  });
});
document.addEventListener("keydown", (e) => {
  if (!(e.ctrlKey || e.metaKey) || e.key.toLowerCase() !== "z" || e.target.tagName === "INPUT" && e.target.type === "number") return;
  e.preventDefault();
  (e.shiftKey ? $("redo") : $("undo")).click();
});

(async () => {
  try {
    studio = await api("GET", "/api/studio");
    S = studio.size; canvas.width = S; canvas.height = S; mask = new Uint8Array(S * S);
    $("brush").max = Math.max(2, Math.round(S / 4)); $("brush").value = Math.max(1, Math.round(S / 10));
    $("brush-size").textContent = $("brush").value + " px";
    $("model").textContent = studio.model + " \u00b7 " + S + "\u00d7" + S + " px \u00b7 segmenter: " + studio.segmenter;
    $("layer").textContent = "\u00b7 units at " + studio.layer;
    buildPalette();
    strengthNote();
    show(await api("POST", "/api/session", {}));
    document.body.dataset.ready = "1";
  } catch (e) { status("Could not start: " + e.message, true); }
})();
</script>
</body>
</html>
""".replace("__POLICY__", PAGE_POLICY)
