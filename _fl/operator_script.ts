/**
 * The operator view page's script, served as `operator.js`: it takes a
 * snapshot (`GET api/snapshot`), follows the job's `round` and `site` events
 * (Server-Sent Events from `GET api/events`, polling the snapshot while the
 * stream is down), renders the sites, the rounds and two SVG plots (round
 * time, and a metric chosen from those the rounds report), and sends the
 * operator's "remove" and "stop" as POSTs that carry the page's token in the
 * `x-fedcomm-token` header. Site names come from the sites: they are written
 * with `textContent` only, never as HTML.
 *
 * @module
 */

/** The script (plain JavaScript, run by the browser). */
export const PAGE_SCRIPT = String.raw`"use strict";
(() => {
  const token = document.querySelector('meta[name="fedcomm-token"]').getAttribute("content");
  const MAX_ROUNDS = 1000;
  const SVG = "http://www.w3.org/2000/svg";
  const model = {
    job: "", state: "", round: undefined, of: undefined, strategy: "", reason: null, totals: null,
    sites: new Map(), rounds: new Map(),
  };
  let live = false;
  let scheduled = false;
  let refreshTimer = undefined;
  const byId = (id) => document.getElementById(id);

  function el(tag, text, attrs) {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = String(text);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    return node;
  }

  function svgEl(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  function bytes(n) {
    if (typeof n !== "number") return "";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? n : n.toFixed(1)) + " " + units[i];
  }

  function ago(t) {
    if (typeof t !== "number" && typeof t !== "string") return "";
    const ms = Date.now() - new Date(t).getTime();
    if (!Number.isFinite(ms)) return "";
    return ms < 1500 ? "now" : Math.round(ms / 1000) + " s ago";
  }

  function count(v) { return Array.isArray(v) ? v.length : (typeof v === "number" ? v : ""); }

  function setStatus(text, error) {
    const status = byId("status");
    status.textContent = text;
    status.className = error ? "error" : "";
  }

  function schedule() {
    if (scheduled) return;
    scheduled = true;
    requestAnimationFrame(() => { scheduled = false; render(); });
  }

  // ------------------------------------------------------------ model

  function addSite(site) {
    if (!site || typeof site !== "object") return;
    const history = site.history && typeof site.history === "object" ? site.history : {};
    const merged = Object.assign({}, history, site);
    if (typeof merged.name !== "string") return;
    model.sites.set(merged.name, merged);
  }

  function addRound(record) {
    if (!record || typeof record !== "object" || typeof record.round !== "number") return;
    model.rounds.set((record.kind || "train") + ":" + record.round, record);
    if (model.round === undefined || record.round > model.round) model.round = record.round;
    while (model.rounds.size > MAX_ROUNDS) model.rounds.delete(model.rounds.keys().next().value);
  }

  function applySnapshot(snapshot) {
    if (!snapshot || typeof snapshot !== "object") return;
    if (typeof snapshot.job === "string") model.job = snapshot.job;
    if (typeof snapshot.state === "string") model.state = snapshot.state;
    if (typeof snapshot.round === "number") model.round = snapshot.round;
    if (typeof snapshot.rounds === "number") model.of = snapshot.rounds;
    if (typeof snapshot.strategy === "string") model.strategy = snapshot.strategy;
    model.reason = typeof snapshot.reason === "string" ? snapshot.reason : null;
    model.totals = snapshot.totals && typeof snapshot.totals === "object" ? snapshot.totals : null;
    const sites = Array.isArray(snapshot.sites) ? snapshot.sites : Object.values(snapshot.sites || {});
    model.sites.clear();
    for (const site of sites) addSite(site);
    const rounds = Array.isArray(snapshot.recent) ? snapshot.recent : [];
    for (const record of rounds) addRound(record);
    schedule();
  }

  async function refresh() {
    try {
      const response = await fetch("api/snapshot", { cache: "no-store" });
      if (!response.ok) throw new Error("snapshot: " + response.status + " " + response.statusText);
      applySnapshot(await response.json());
    } catch (error) {
      if (!live) byId("feed").textContent = "coordinator unreachable (" + error.message + ")";
    }
  }

  function refreshSoon() {
    if (refreshTimer !== undefined) return;
    refreshTimer = setTimeout(() => { refreshTimer = undefined; refresh(); }, 1000);
  }

  // ------------------------------------------------------------ actions

  async function post(path) {
    const response = await fetch(path, { method: "POST", headers: { "x-fedcomm-token": token } });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.error || response.status + " " + response.statusText);
    return body;
  }

  async function removeSite(name, button) {
    button.disabled = true;
    try {
      await post("api/sites/" + encodeURIComponent(name) + "/remove");
      setStatus("Removed site \u201c" + name + "\u201d", false);
    } catch (error) {
      button.disabled = false;
      setStatus("Could not remove \u201c" + name + "\u201d: " + error.message, true);
    }
    refresh();
  }

  async function stopJob() {
    const button = byId("stop");
    button.disabled = true;
    try {
      await post("api/stop");
      setStatus("Stop requested: the job ends after the sites are told", false);
    } catch (error) {
      button.disabled = false;
      setStatus("Could not stop the job: " + error.message, true);
    }
    refresh();
  }

  // ------------------------------------------------------------ rendering

  function renderSites() {
    const body = byId("sites").tBodies[0];
    const rows = [];
    const names = [...model.sites.keys()].sort();
    for (const name of names) {
      const site = model.sites.get(name);
      const row = el("tr", undefined, { "data-site": name });
      const state = (site.state || "") + (site.removed === true ? " (removed)" : "");
      row.append(el("td", name), el("td", state, { class: "text state-" + site.state }));
      const rounds = typeof site.taken === "number" ? site.taken : count(site.rounds);
      row.append(el("td", site.id ?? ""), el("td", rounds), el("td", count(site.late)));
      row.append(el("td", count(site.failures)), el("td", bytes(site.bytesIn)));
      row.append(el("td", bytes(site.bytesOut)), el("td", ago(site.lastSeen)));
      const cell = el("td");
      const button = el("button", "remove", { type: "button", class: "remove" });
      button.disabled = site.state === "gone" || site.removed === true;
      button.addEventListener("click", () => removeSite(name, button));
      cell.append(button);
      row.append(cell);
      rows.push(row);
    }
    body.replaceChildren(...rows);
    byId("site-count").textContent = "(" + names.length + ")";
  }

  function sortedRounds() {
    return [...model.rounds.values()].sort((a, b) =>
      a.round - b.round || String(a.kind).localeCompare(String(b.kind)));
  }

  function metricsText(metrics) {
    if (!metrics || typeof metrics !== "object") return "";
    return Object.entries(metrics).map(([k, v]) =>
      k + " " + (typeof v === "number" ? +v.toPrecision(4) : v)).join(", ");
  }

  function renderRounds(rounds) {
    const rows = rounds.slice(-50).reverse().map((r) => {
      const row = el("tr", undefined, { "data-round": r.round, "data-kind": r.kind || "" });
      row.append(el("td", r.round), el("td", r.kind || "", { class: "text" }));
      row.append(el("td", count(r.sampled)), el("td", count(r.answered)), el("td", count(r.late)));
      row.append(el("td", count(r.missing)), el("td", count(r.failed)));
      row.append(el("td", typeof r.ms === "number" ? Math.round(r.ms) + " ms" : ""));
      row.append(el("td", metricsText(r.metrics), { class: "text" }));
      return row;
    });
    byId("rounds").tBodies[0].replaceChildren(...rows);
  }

  function metricNames(rounds) {
    const names = new Set();
    for (const r of rounds) {
      for (const [k, v] of Object.entries(r.metrics || {})) if (typeof v === "number") names.add(k);
    }
    return [...names].sort();
  }

  function renderMetricChoice(names) {
    const select = byId("metric");
    const chosen = select.value || (names.includes("accuracy") ? "accuracy" : names[0]);
    const current = [...select.options].map((o) => o.value).join("\n");
    if (current !== names.join("\n")) {
      select.replaceChildren(...names.map((n) => el("option", n, { value: n })));
    }
    if (chosen !== undefined) select.value = chosen;
    return select.value;
  }

  function chart(svg, points, digits) {
    const W = 480, H = 180, L = 52, R = 12, T = 12, B = 26;
    const nodes = [];
    if (points.length === 0) {
      nodes.push(svgEl("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "no rounds yet"));
      svg.replaceChildren(...nodes);
      return;
    }
    const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
    let x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
    if (x0 === x1) { x0 -= 1; x1 += 1; }
    if (y0 === y1) { y0 -= Math.abs(y0) * 0.1 || 1; y1 += Math.abs(y1) * 0.1 || 1; }
    const px = (x) => L + (x - x0) / (x1 - x0) * (W - L - R);
    const py = (y) => H - B - (y - y0) / (y1 - y0) * (H - T - B);
    nodes.push(svgEl("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }));
    nodes.push(svgEl("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }));
    nodes.push(svgEl("text", { x: L - 4, y: T + 8, "text-anchor": "end" }, y1.toFixed(digits)));
    nodes.push(svgEl("text", { x: L - 4, y: H - B, "text-anchor": "end" }, y0.toFixed(digits)));
    nodes.push(svgEl("text", { x: L, y: H - 8, "text-anchor": "start" }, "round " + x0));
    nodes.push(svgEl("text", { x: W - R, y: H - 8, "text-anchor": "end" }, "round " + x1));
    const line = points.map((p) => px(p[0]).toFixed(1) + "," + py(p[1]).toFixed(1)).join(" ");
    nodes.push(svgEl("polyline", { class: "line", points: line }));
    for (const [x, y] of points) {
      const dot = svgEl("circle", { class: "dot", cx: px(x), cy: py(y), r: 3 });
      dot.append(svgEl("title", {}, "round " + x + ": " + y.toFixed(digits)));
      nodes.push(dot);
    }
    svg.replaceChildren(...nodes);
  }

  function renderPlots(rounds) {
    const train = rounds.filter((r) => r.kind === "train" && typeof r.ms === "number");
    const timed = train.length > 0 ? train : rounds.filter((r) => typeof r.ms === "number");
    chart(byId("plot-time"), timed.map((r) => [r.round, r.ms]), 0);
    const metric = renderMetricChoice(metricNames(rounds));
    const values = new Map();
    for (const r of rounds) {
      const v = r.metrics ? r.metrics[metric] : undefined;
      if (typeof v !== "number" || !Number.isFinite(v)) continue;
      if (!values.has(r.round) || r.kind === "evaluate") values.set(r.round, v);
    }
    chart(byId("plot-metric"), [...values.entries()], 3);
  }

  function renderTotals() {
    const t = model.totals;
    byId("totals").textContent = !t ? "" : [
      t.rounds + " rounds", t.evaluations + " evaluations", t.results + " results",
      t.late + " late", t.failures + " failures", t.missing + " missing",
      t.refused + " logins refused", bytes(t.bytesIn) + " in", bytes(t.bytesOut) + " out",
    ].join(" · ");
  }

  function render() {
    byId("job").textContent = model.job + (model.strategy ? " (" + model.strategy + ")" : "");
    byId("state").textContent = (model.state || "…") + (model.reason ? ": " + model.reason : "");
    byId("round").textContent = (model.round === undefined ? "–" : String(model.round)) +
      (model.of === undefined ? "" : " of " + model.of);
    const over = ["stopping", "stopped", "done", "failed"].includes(model.state);
    byId("stop").disabled = byId("stop").disabled || over;
    renderTotals();
    renderSites();
    const rounds = sortedRounds();
    renderRounds(rounds);
    renderPlots(rounds);
  }

  // ------------------------------------------------------------ feed

  function follow() {
    const events = new EventSource("api/events");
    const parse = (handler) => (event) => {
      try { handler(JSON.parse(event.data)); } catch (error) { setStatus(error.message, true); }
    };
    events.addEventListener("open", () => { live = true; byId("feed").textContent = "live"; });
    events.addEventListener("error", () => {
      live = false;
      byId("feed").textContent = "reconnecting… (polling)";
    });
    events.addEventListener("snapshot", parse(applySnapshot));
    events.addEventListener("round", parse((record) => { addRound(record); schedule(); refreshSoon(); }));
    events.addEventListener("site", parse((site) => { addSite(site); schedule(); }));
  }

  byId("stop").addEventListener("click", stopJob);
  byId("metric").addEventListener("change", schedule);
  setInterval(() => { if (!live) refresh(); }, 5000);
  setInterval(schedule, 5000); // "last seen" ages
  refresh();
  follow();
})();
`;
