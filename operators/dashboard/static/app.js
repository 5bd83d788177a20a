// The rectune dashboard: polls the JSON API every 5 s and draws the arms, three charts and
// the tuner's cycles. Plain DOM and SVG, no libraries (nothing is fetched from elsewhere).
"use strict";

const REFRESH_MS = 5000;
const COLORS = ["#2f6fed", "#e8590c", "#0ca678", "#ae3ec9", "#f59f00", "#1098ad", "#d6336c", "#5c7cfa"];
const ACTIONS_BY_STATE = {
  champion: [],
  active: ["pause", "retire", "promote"],
  candidate: ["pause", "retire", "promote"],
  paused: ["resume", "retire"],
  retired: [],
};
let adminRequired = false;
let colorOf = {};

function $(id) { return document.getElementById(id); }

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  for (const child of children) node.append(child);
  return node;
}

function pct(value) { return (100 * value).toFixed(1) + "%"; }
function ctr(value) { return value.toFixed(4); }

function age(seconds) {
  for (const [unit, length] of [["d", 86400], ["h", 3600], ["m", 60]]) {
    if (seconds >= length) return (seconds / length).toFixed(1) + unit;
  }
  return seconds.toFixed(0) + "s";
}

function shortValue(value) {
  return typeof value === "number" && !Number.isInteger(value) ? Number(value.toPrecision(4)) : value;
}

function describeConfiguration(configuration) {
  const params = Object.entries(configuration.params).map(([k, v]) => `${k}=${shortValue(v)}`).join(" ");
  return params ? `${configuration.strategy} ${params}` : configuration.strategy;
}

function showError(message, source = "action") {
  const box = $("error");
  box.textContent = message;
  box.dataset.source = source;
  box.hidden = !message;
}

// The API's error in words: a service's {error}, or FastAPI's {detail} (a string, or a list of
// field errors for a malformed request).
function errorText(body, response) {
  if (body.error) return body.error;
  if (Array.isArray(body.detail)) return body.detail.map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("; ");
  return body.detail || response.statusText;
}

async function getJson(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" } });
  const body = await response.json();
  if (!response.ok) throw new Error(errorText(body, response));
  return body;
}

function windowParam() {
  const value = $("window").value;
  return value ? `?window=${value}` : "";
}

// -- arms ---------------------------------------------------------------------------------------

function renderArms(overview) {
  adminRequired = overview.admin_token_required;
  $("token-box").hidden = !adminRequired;
  const body = $("arms").querySelector("tbody");
  body.replaceChildren();
  $("no-arms").hidden = overview.arms.length > 0;
  overview.arms.forEach((arm, index) => {
    colorOf[arm.arm_id] = colorOf[arm.arm_id] || COLORS[Object.keys(colorOf).length % COLORS.length];
    const stats = arm.stats;
    const row = el("tr", { id: `arm-${arm.arm_id}`, "data-arm": arm.arm_id });
    const swatch = el("span", { style: `color:${colorOf[arm.arm_id]}` }, "■ ");
    row.append(
      el("td", { class: "arm" }, swatch, arm.arm_id),
      el("td", { class: `state state-${arm.state}`, title: arm.state_reason }, arm.state),
      el("td", { class: "origin" }, arm.origin),
      el("td", { class: "config" }, describeConfiguration(arm.configuration)),
      el("td", { class: "num share" }, stats ? pct(stats.share) : "-"),
      el("td", { class: "num impressions" }, stats ? String(stats.impressions) : "0"),
      el("td", { class: "num ctr" }, stats ? ctr(stats.ctr) : "-",
        el("span", { class: "interval" }, stats ? ` [${ctr(stats.ctr_low)}, ${ctr(stats.ctr_high)}]` : "")),
      el("td", { class: "num pbest" }, stats ? stats.probability_best.toFixed(3) : "-"),
      el("td", { class: "model" }, arm.freshness
        ? `${age(arm.freshness.age_seconds)} old, ${arm.freshness.interactions_since_fit} new interactions`
        : "not fitted yet"),
      actionCell(arm),
    );
    body.append(row);
  });
}

function actionCell(arm) {
  const cell = el("td", { class: "actions" });
  for (const action of ACTIONS_BY_STATE[arm.state] || []) {
    const button = el("button", { type: "button", "data-action": action }, action);
    button.addEventListener("click", () => changeState(arm.arm_id, action));
    cell.append(button);
  }
  return cell;
}

async function changeState(armId, action) {
  const warning = action === "retire" ? " Retiring is final." : "";
  if (!window.confirm(`${action} arm ${armId}?${warning}`)) return;
  const headers = { "Content-Type": "application/json", Accept: "application/json" };
  const token = $("token").value;
  if (token) headers.Authorization = `Bearer ${token}`;
  try {
    const response = await fetch(`/api/arms/${encodeURIComponent(armId)}/state`, {
      method: "POST", headers, body: JSON.stringify({ action, reason: `${action} from the dashboard` }),
    });
    const body = await response.json();
    if (!response.ok) throw new Error(errorText(body, response));
    showError("");
    await refresh();
  } catch (error) {
    showError(`${action} ${armId}: ${error.message}`);
  }
}

// -- charts -------------------------------------------------------------------------------------

const SVG = "http://www.w3.org/2000/svg";

function svgEl(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  return node;
}

// lines: [{name, color, points: [[x, y or null], ...]}]; y axis from 0 to the largest y.
function lineChart(svg, lines, formatY) {
  svg.replaceChildren();
  const width = svg.clientWidth || 480, height = svg.clientHeight || 220;
  const perRow = Math.max(1, Math.floor((width - 52) / 120));
  const legendRows = Math.ceil(lines.length / perRow);
  const left = 52, right = 10, top = 10, bottom = 22 + 12 * legendRows;
  const points = lines.flatMap((line) => line.points.filter((p) => p[1] !== null));
  if (points.length === 0) {
    svg.append(Object.assign(svgEl("text", { x: left, y: height / 2 }), { textContent: "no impressions in this window yet" }));
    return;
  }
  const xs = points.map((p) => p[0]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
  const y1 = Math.max(...points.map((p) => p[1]), 1e-9) * 1.1;
  const sx = (x) => left + ((x - x0) / (x1 - x0)) * (width - left - right);
  const sy = (y) => top + (1 - y / y1) * (height - top - bottom);
  for (const fraction of [0, 0.5, 1]) {
    const y = sy(fraction * y1);
    svg.append(svgEl("line", { x1: left, x2: width - right, y1: y, y2: y, stroke: "#eaecf0" }));
    svg.append(Object.assign(svgEl("text", { x: 4, y: y + 3 }), { textContent: formatY(fraction * y1) }));
  }
  for (const x of [x0, x1]) {
    const label = new Date(x * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    svg.append(Object.assign(svgEl("text", { x: x === x0 ? left : width - right - 60, y: height - bottom + 12 }), { textContent: label }));
  }
  lines.forEach((line, index) => {
    const drawn = line.points.filter((p) => p[1] !== null);
    const path = drawn.map((p, i) => `${i ? "L" : "M"}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join("");
    svg.append(svgEl("path", { d: path, fill: "none", stroke: line.color, "stroke-width": 1.8, "data-line": line.name }));
    const legendX = left + (index % perRow) * 120;
    const legendY = height - 6 - 12 * (legendRows - 1 - Math.floor(index / perRow));
    const legend = svgEl("text", { x: legendX, y: legendY, class: "legend", style: `fill:${line.color}` });
    legend.textContent = line.name;
    svg.append(legend);
  });
}

function renderSeries(data) {
  const totals = {};
  for (const series of data.series) {
    for (const bucket of series.buckets) totals[bucket.start] = (totals[bucket.start] || 0) + bucket.impressions;
  }
  const lines = (valueOf) => data.series.map((series) => ({
    name: series.arm_id,
    color: colorOf[series.arm_id] || "#888",
    points: series.buckets.map((b) => [b.start, valueOf(b)]),
  }));
  lineChart($("ctr-chart"), lines((b) => (b.impressions ? b.clicks / b.impressions : null)), ctr);
  lineChart($("share-chart"), lines((b) => (totals[b.start] ? b.impressions / totals[b.start] : null)), pct);
  const versus = data.bandit_vs_champion;
  lineChart($("bandit-chart"), [
    { name: "bandit (all traffic)", color: "#2f6fed", points: versus.starts.map((s, i) => [s, versus.bandit_ctr[i]]) },
    { name: `champion ${data.champion}`, color: "#027a48", points: versus.starts.map((s, i) => [s, versus.champion_ctr[i]]) },
  ], ctr);
  const gained = versus.clicks_against_champion_alone;
  $("bandit-summary").textContent = versus.impressions
    ? `Over this window: CTR ${ctr(versus.bandit_ctr_overall)} for all traffic against ${ctr(versus.champion_ctr_overall)} ` +
      `for the champion's share; ${gained === null ? "no champion impressions to compare" :
        `${gained >= 0 ? "+" : ""}${gained.toFixed(0)} clicks against serving the champion alone (estimated on its share)`}.`
    : "";
}

// -- tuner --------------------------------------------------------------------------------------

function renderCycles(data) {
  const box = $("cycles");
  if (data.cycles.length === 0) return;
  box.replaceChildren();
  for (const cycle of data.cycles) {
    const when = new Date(cycle.recorded_at * 1000).toLocaleString();
    const section = el("div", { class: "cycle", "data-cycle": cycle.cycle_id },
      el("h3", {}, `cycle ${cycle.cycle_id} · ${when}${cycle.dry_run ? " · dry run" : ""}`));
    const table = el("table", {});
    table.append(el("tr", {}, el("th", {}, "kind"), el("th", {}, "arm"), el("th", {}, "configuration"),
      el("th", {}, "screen NDCG"), el("th", {}, "outcome"), el("th", {}, "rationale")));
    for (const entry of cycle.entries) {
      const configuration = entry.configuration ? describeConfiguration(JSON.parse(entry.configuration)) : "";
      table.append(el("tr", {},
        el("td", {}, entry.kind), el("td", {}, entry.arm_id), el("td", { class: "config" }, configuration),
        el("td", { class: "num" }, entry.ndcg === null ? "" : entry.ndcg.toFixed(4)),
        el("td", {}, entry.outcome), el("td", {}, el("div", { class: "rationale" }, entry.rationale))));
    }
    section.append(table);
    box.append(section);
  }
}

// -- refresh ------------------------------------------------------------------------------------

async function refresh() {
  try {
    const windowSeconds = $("window").value || "3600";
    const [overview, series, tuner] = await Promise.all([
      getJson(`/api/overview${windowParam()}`),
      getJson(`/api/series?window=${windowSeconds}&bucket=${Math.max(10, windowSeconds / 60)}`),
      getJson("/api/tuner?limit=100"),
    ]);
    renderArms(overview);
    renderSeries(series);
    renderCycles(tuner);
    if ($("error").dataset.source === "refresh") showError("");
    $("status").textContent = `updated ${new Date().toLocaleTimeString()}`;
    $("status").dataset.updated = String(overview.generated_at);
  } catch (error) {
    showError(`refresh failed: ${error.message}`, "refresh");
  }
}

$("window").addEventListener("change", refresh);
refresh();
setInterval(refresh, REFRESH_MS);
