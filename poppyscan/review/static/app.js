// poppyscan desk review: plots in priority order, one decision per plot, saved at once (POST /api/decision).
"use strict";

const SVGNS = "http://www.w3.org/2000/svg";
const KEY_DECISION = { "1": "confirmed", "2": "rejected", "3": "unsure", "0": null };
const LABEL = { confirmed: "confirmed", rejected: "rejected", unsure: "unsure" };

const state = {
  run: null,          // /api/run answer
  plots: [],          // plot records in priority order (rank 1 first)
  byId: new Map(),    // plot_id -> record
  cards: new Map(),   // plot_id -> card element
  dots: new Map(),    // plot_id -> overview circle
  currentId: null,
  queue: Promise.resolve(),  // decisions are posted one at a time, in the order they were made
  pending: 0,
};

const $ = (id) => document.getElementById(id);
const fmt = (v, digits) => (v === null || v === undefined ? "–" : Number(v).toFixed(digits));

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

// ---- filtering and navigation -------------------------------------------------------------------
function filters() {
  return {
    minProb: parseFloat($("min-prob").value),
    decision: $("decision-filter").value,
    over500: $("over500").checked,
  };
}

function visible(p, f = filters()) {
  if ((p.prob_mean ?? p.prob_max ?? 0) < f.minProb - 1e-9) return false;
  if (f.over500 && !p.over_500_plants) return false;
  if (f.decision === "undecided") return !p.decision;
  if (f.decision !== "all") return p.decision === f.decision;
  return true;
}

function shown() { const f = filters(); return state.plots.filter((p) => visible(p, f)); }

// The next (step=+1) or previous (step=-1) shown plot, by priority rank from the current one.
function neighbour(step) {
  const list = shown();
  if (!list.length) return null;
  const cur = state.byId.get(state.currentId);
  if (!cur) return list[0];
  if (step > 0) return list.find((p) => p.rank > cur.rank) || null;
  for (let i = list.length - 1; i >= 0; i--) if (list[i].rank < cur.rank) return list[i];
  return null;
}

function applyFilters() {
  const f = filters();
  $("min-prob-out").textContent = f.minProb.toFixed(2);
  let n = 0;
  for (const p of state.plots) {
    const vis = visible(p, f);
    state.cards.get(p.plot_id).hidden = !vis;
    const dot = state.dots.get(p.plot_id);
    if (dot) dot.style.display = vis ? "" : "none";
    if (vis) n++;
  }
  $("shown-count").textContent = `showing ${n} of ${state.plots.length} plots`;
  const cur = state.byId.get(state.currentId);
  if (!cur || !visible(cur, f)) select(neighbour(+1)?.plot_id ?? shown()[0]?.plot_id ?? null);
}

// ---- rendering ----------------------------------------------------------------------------------
function plantsText(p) { return p.est_plants === null ? "–" : `~${Math.round(p.est_plants)} plants`; }

function buildCard(p) {
  const img = el("img", { loading: "lazy", alt: `plot ${p.plot_id}`, src: `/api/chip/${p.plot_id}.jpg` });
  const quick = el("div", { class: "quick" });
  for (const [d, label, title] of [["confirmed", "✓", "confirm (1)"], ["rejected", "✗", "reject (2)"],
                                    ["unsure", "?", "unsure (3)"]]) {
    const b = el("button", { type: "button", title, text: label, "data-decision": d });
    b.addEventListener("click", (ev) => { ev.stopPropagation(); select(p.plot_id); decide(d); });
    quick.append(b);
  }
  const meta = el("div", { class: "meta" },
    el("b", { text: `#${p.rank} · plot ${p.plot_id}` }), el("br"),
    el("span", { class: "num", text: `P̄ ${fmt(p.prob_mean ?? p.prob_max, 2)} · ${fmt(p.area_m2, 1)} m² · ${plantsText(p)}` }));
  const card = el("div", { class: "card", "data-id": String(p.plot_id), tabindex: "-1" }, img, meta, quick);
  if (p.over_500_plants) card.append(el("span", { class: "flag", text: "≥500" }));
  card.append(el("span", { class: "badge", hidden: "" }));
  card.addEventListener("click", () => select(p.plot_id));
  return card;
}

function paintCard(p) {
  const card = state.cards.get(p.plot_id);
  card.classList.remove("confirmed", "rejected", "unsure");
  const badge = card.querySelector(".badge");
  if (p.decision) {
    card.classList.add(p.decision);
    badge.className = `badge ${p.decision}`;
    badge.textContent = LABEL[p.decision];
    badge.hidden = false;
  } else {
    badge.hidden = true;
  }
  const dot = state.dots.get(p.plot_id);
  if (dot) dot.setAttribute("class", (p.decision || "undecided") + (p.plot_id === state.currentId ? " current" : ""));
}

function buildOverview(run) {
  const svg = $("overview");
  svg.replaceChildren();
  const ext = run.extent;
  if (!ext) return;
  const w = Math.max(ext[2] - ext[0], 1e-9), h = Math.max(ext[3] - ext[1], 1e-9);
  const pad = Math.max(w, h) * 0.03;
  svg.setAttribute("viewBox", `${-pad} ${-pad} ${w + 2 * pad} ${h + 2 * pad}`);
  const X = (x) => x - ext[0], Y = (y) => ext[3] - y;
  for (const fp of run.footprints) {
    const [x0, y0, x1, y1] = fp.bounds;
    if (fp.image) {
      const im = document.createElementNS(SVGNS, "image");
      im.setAttribute("href", `/api/overview/${fp.index}.png`);
      im.setAttribute("x", X(x0)); im.setAttribute("y", Y(y1));
      im.setAttribute("width", x1 - x0); im.setAttribute("height", y1 - y0);
      im.setAttribute("preserveAspectRatio", "none");
      svg.append(im);
    }
    const r = document.createElementNS(SVGNS, "rect");
    r.setAttribute("class", "footprint");
    r.setAttribute("x", X(x0)); r.setAttribute("y", Y(y1));
    r.setAttribute("width", x1 - x0); r.setAttribute("height", y1 - y0);
    const t = document.createElementNS(SVGNS, "title"); t.textContent = fp.name; r.append(t);
    svg.append(r);
  }
  const radius = Math.max(w, h) / 70;
  for (const p of [...state.plots].reverse()) {  // highest priority drawn last, on top
    if (p.x === null || p.y === null) continue;
    const c = document.createElementNS(SVGNS, "circle");
    c.setAttribute("cx", X(p.x)); c.setAttribute("cy", Y(p.y)); c.setAttribute("r", radius);
    const t = document.createElementNS(SVGNS, "title");
    t.textContent = `plot ${p.plot_id} · P̄ ${fmt(p.prob_mean ?? p.prob_max, 2)}`;
    c.append(t);
    c.addEventListener("click", () => select(p.plot_id));
    state.dots.set(p.plot_id, c);
    svg.append(c);
  }
}

function renderFocus() {
  const p = state.byId.get(state.currentId);
  $("focus-empty").hidden = !!p;
  $("focus-body").hidden = !p;
  if (!p) return;
  $("focus-id").textContent = `Plot ${p.plot_id} · #${p.rank} of ${state.plots.length}`;
  $("focus-flag").hidden = !p.over_500_plants;
  const src = `/api/chip/${p.plot_id}.jpg`;
  if ($("focus-chip").getAttribute("src") !== src) $("focus-chip").setAttribute("src", src);
  for (const b of document.querySelectorAll(".buttons button")) {
    b.classList.toggle("active", !!p.decision && b.dataset.decision === p.decision);
  }
  $("focus-decision").textContent = p.decision
    ? `${LABEL[p.decision]}${p.reviewer ? " by " + p.reviewer : ""}${p.time ? " · " + p.time.replace("T", " ") : ""}`
    : "not reviewed yet";
  const rows = [
    ["probability max / mean", `${fmt(p.prob_max, 2)} / ${fmt(p.prob_mean, 2)}`],
    ["area", `${fmt(p.area_m2, 1)} m² (${fmt(p.area_mu, 3)} 亩)`],
    ["est. plants", `${p.est_plants === null ? "–" : Math.round(p.est_plants)}${p.over_500_plants ? " — criminal-case size" : ""}`],
    ["lon, lat (WGS84)", `${fmt(p.lon, 6)}, ${fmt(p.lat, 6)}`],
    ["mosaic", p.mosaic || "–"],
  ];
  $("focus-table").replaceChildren(...rows.map(([k, v]) => el("tr", {}, el("th", { text: k }), el("td", { text: v }))));
}

function select(id) {
  const old = state.currentId;
  state.currentId = id;
  for (const pid of [old, id]) {
    if (pid === null || !state.cards.has(pid)) continue;
    state.cards.get(pid).classList.toggle("current", pid === id);
    paintCard(state.byId.get(pid));
  }
  const card = state.cards.get(id);
  if (card && !card.hidden) card.scrollIntoView({ block: "nearest" });
  renderFocus();
  // warm the next chips so keyboard review never waits on the server
  let p = state.byId.get(id);
  const list = shown();
  const i = list.indexOf(p);
  for (const q of list.slice(i + 1, i + 4)) new Image().src = `/api/chip/${q.plot_id}.jpg`;
}

function renderProgress() {
  const counts = { confirmed: 0, rejected: 0, unsure: 0 };
  for (const p of state.plots) if (p.decision) counts[p.decision]++;
  const done = counts.confirmed + counts.rejected + counts.unsure;
  const total = state.plots.length;
  $("progress-fill").style.width = total ? `${(100 * done) / total}%` : "0";
  $("progress-text").textContent =
    `${done} / ${total} reviewed · ${counts.confirmed} confirmed · ${counts.rejected} rejected · ${counts.unsure} unsure`;
}

function setStatus(kind, text) { const s = $("save-status"); s.className = kind; s.textContent = text; }

function showBanner(text) { const b = $("banner"); b.textContent = text; b.hidden = !text; }

// ---- deciding -----------------------------------------------------------------------------------
function decide(decision) {
  const p = state.byId.get(state.currentId);
  if (!p) return;
  const next = $("auto-advance").checked && decision ? neighbour(+1) : null;
  const before = { decision: p.decision, reviewer: p.reviewer, time: p.time };
  p.decision = decision || null;
  p.reviewer = reviewer();
  p.time = null;
  paintCard(p); renderProgress(); renderFocus();
  if (next) select(next.plot_id); else if (!visible(p)) select(neighbour(+1)?.plot_id ?? null);
  state.pending++;
  setStatus("saving", "saving…");
  const body = JSON.stringify({ plot_id: p.plot_id, decision: decision || null, reviewer: reviewer() });
  state.queue = state.queue.then(async () => {
    try {
      const r = await fetch("/api/decision", { method: "POST", headers: { "Content-Type": "application/json" }, body });
      const answer = await r.json().catch(() => ({}));
      if (!r.ok) throw new Error(answer.error || `HTTP ${r.status}`);
      p.time = answer.saved.time;
      p.reviewer = answer.saved.reviewer;
      state.pending--;
      if (!state.pending) { setStatus("ok", `all decisions saved · ${answer.reviewed} / ${answer.total}`); showBanner(""); }
    } catch (err) {
      state.pending--;
      Object.assign(p, before);  // show what is really stored
      setStatus("error", "NOT SAVED");
      showBanner(`Decision for plot ${p.plot_id} was not saved (${err.message}). Is \`poppyscan review\` still running? ` +
                 "Restart it and reload this page.");
    }
    paintCard(p); renderProgress();
    if (p.plot_id === state.currentId) renderFocus();
  });
}

function reviewer() { return $("reviewer").value.trim(); }

function onKey(ev) {
  if (ev.target.matches("input[type=text], select") || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const k = ev.key;
  if (["j", "ArrowDown", "ArrowRight"].includes(k)) { const n = neighbour(+1); if (n) select(n.plot_id); }
  else if (["k", "ArrowUp", "ArrowLeft"].includes(k)) { const n = neighbour(-1); if (n) select(n.plot_id); }
  else if (k in KEY_DECISION) decide(KEY_DECISION[k]);
  else return;
  ev.preventDefault();
}

// ---- start --------------------------------------------------------------------------------------
async function init() {
  let run;
  try {
    const r = await fetch("/api/run", { cache: "no-store" });
    run = await r.json();
    if (!r.ok) throw new Error(run.error || `HTTP ${r.status}`);
  } catch (err) {
    showBanner(`Cannot load the run: ${err.message}`);
    return;
  }
  state.run = run;
  state.plots = run.plots;
  for (const p of run.plots) state.byId.set(p.plot_id, p);
  $("run-name").textContent = run.run;
  $("run-name").title = run.run_dir;
  document.title = `review · ${run.run}`;
  const saved = localStorage.getItem("poppyscan.reviewer");
  $("reviewer").value = saved !== null ? saved : run.reviewer || "";
  $("reviewer").addEventListener("change", () => localStorage.setItem("poppyscan.reviewer", reviewer()));
  buildOverview(run);
  const grid = $("grid");
  for (const p of run.plots) { const c = buildCard(p); state.cards.set(p.plot_id, c); grid.append(c); paintCard(p); }
  for (const b of document.querySelectorAll(".buttons button")) {
    b.addEventListener("click", () => decide(b.dataset.decision || null));
  }
  $("next").addEventListener("click", () => { const n = neighbour(+1); if (n) select(n.plot_id); });
  $("prev").addEventListener("click", () => { const n = neighbour(-1); if (n) select(n.plot_id); });
  for (const id of ["min-prob", "decision-filter", "over500"]) $(id).addEventListener("input", applyFilters);
  document.addEventListener("keydown", onKey);
  window.addEventListener("beforeunload", (ev) => { if (state.pending) { ev.preventDefault(); ev.returnValue = ""; } });
  renderProgress();
  const first = run.plots.find((p) => !p.decision) || run.plots[0];
  applyFilters();
  select(first ? first.plot_id : null);
}

init();
