// tracker brand app: reports, a table per dimension, date presets, the previous period beside, CSV.
import { api, el, registerView, session, table, td } from "./app_core.js";

const DIMENSIONS = [
  ["influencer", "Influencer", (r) => r.influencer_name || r.influencer_id],
  ["campaign", "Campaign", (r) => r.campaign_name || r.campaign_id],
  ["link", "Link", (r) => r.link_code],
  ["country", "Country", (r) => r.country || "unknown"],
  ["device", "Device", (r) => r.device || "unknown"],
  ["day", "Day", (r) => r.day],
];
const METRICS = [
  ["clicks", "Clicks", "count"], ["unique_clicks", "Unique", "count"], ["conversions", "Sales", "count"],
  ["revenue", "Revenue", "money"], ["commission", "Commission", "money"], ["fees", "Fees", "money"],
  ["cost", "Cost", "money"], ["roi", "ROI", "percent"], ["conversion_rate", "Conv. rate", "percent"],
  ["epc", "EPC", "money"], ["aov", "AOV", "money"],
];
const PRESETS = [["7", "Last 7 days"], ["30", "Last 30 days"], ["90", "Last 90 days"], ["month", "This month"],
  ["last-month", "Last month"]];
const state = { dimension: "influencer", preset: "30", from: "", to: "", tz: "UTC", compare: true };

const iso = (d) => d.toISOString().slice(0, 10);
function addDays(day, n) {
  const d = new Date(day + "T00:00:00Z");
  d.setUTCDate(d.getUTCDate() + n);
  return iso(d);
}
function today(tz) {
  try {
    return new Intl.DateTimeFormat("en-CA", { timeZone: tz, year: "numeric", month: "2-digit", day: "2-digit" }).format(new Date());
  } catch (e) {
    return iso(new Date());
  }
}
export function presetRange(preset, now) {
  if (preset === "month") return [now.slice(0, 8) + "01", now];
  if (preset === "last-month") {
    const first = now.slice(0, 8) + "01";
    const end = addDays(first, -1);
    return [end.slice(0, 8) + "01", end];
  }
  return [addDays(now, -(Number(preset) - 1)), now];
}
// The period of the same length just before [from, to].
export function previousRange(from, to) {
  const days = Math.round((new Date(to + "T00:00:00Z") - new Date(from + "T00:00:00Z")) / 86400000) + 1;
  return [addDays(from, -days), addDays(from, -1)];
}

function format(value, kind) {
  if (value === null || value === undefined) return "–";
  if (kind === "count") return Number(value).toLocaleString("en-US");
  if (kind === "percent") return `${(Number(value) * 100).toFixed(1)} %`;
  return `${value} ${session.brand.currency}`;
}
function delta(now, before, kind) {
  if (now === null || before === null || before === undefined || kind === "percent") return null;
  const a = Number(now);
  const b = Number(before);
  if (b === 0) return null;
  const change = ((a - b) / Math.abs(b)) * 100;
  return el("span", { class: `delta ${change > 0 ? "up" : change < 0 ? "down" : ""}`,
    text: `${change > 0 ? "+" : ""}${change.toFixed(0)} % vs ${format(before, kind)}` });
}

function query(dimension, from, to, fmt) {
  const q = new URLSearchParams({ from, to, tz: state.tz, group_by: dimension });
  if (fmt) q.set("format", fmt);
  return "/api/v1/reports?" + q.toString();
}

async function renderReports(root) {
  if (!state.from) [state.from, state.to] = presetRange(state.preset, today(state.tz));
  const status = el("p", { id: "report-status", role: "status", class: "hint" });
  const error = el("p", { class: "form-error", role: "alert" });
  const tabs = el("div", { class: "tabs", role: "group", "aria-label": "Dimension" },
    DIMENSIONS.map(([key, label]) => el("button", { type: "button", class: "secondary", "data-dimension": key,
      "aria-pressed": String(key === state.dimension), text: label,
      on: { click: () => { state.dimension = key; redraw(root); } } })));
  const presets = el("select", { id: "report-preset", "aria-label": "Period" },
    [...PRESETS, ["custom", "Custom"]].map(([v, t]) => el("option", { value: v, text: t, selected: v === state.preset })));
  const from = el("input", { id: "report-from", type: "date", value: state.from, "aria-label": "From" });
  const to = el("input", { id: "report-to", type: "date", value: state.to, "aria-label": "To" });
  const tz = el("input", { id: "report-tz", value: state.tz, size: 16, "aria-label": "Time zone" });
  const compare = el("input", { id: "report-compare", type: "checkbox", checked: state.compare });
  presets.addEventListener("change", () => {
    state.preset = presets.value;
    if (state.preset !== "custom") [state.from, state.to] = presetRange(state.preset, today(state.tz));
    redraw(root);
  });
  const apply = () => {
    Object.assign(state, { from: from.value, to: to.value, tz: tz.value || "UTC", preset: "custom", compare: compare.checked });
    redraw(root);
  };
  for (const input of [from, to, tz, compare]) input.addEventListener("change", apply);
  const csv = el("a", { id: "report-csv", class: "button", href: query(state.dimension, state.from, state.to, "csv"),
    download: `report-${state.dimension}-${state.from}-${state.to}.csv`, text: "Download CSV" });
  root.append(el("h2", { text: "Reports" }), el("div", { class: "controls" }, presets, from, to, tz,
    el("label", {}, compare, " compare with the previous period"), csv), tabs, status, error);

  const [prevFrom, prevTo] = previousRange(state.from, state.to);
  let report;
  let before = null;
  try {
    [report, before] = await Promise.all([api("GET", query(state.dimension, state.from, state.to)),
      state.compare ? api("GET", query(state.dimension, prevFrom, prevTo)) : Promise.resolve(null)]);
  } catch (e) {
    error.textContent = e.message;
    return;
  }
  const dim = DIMENSIONS.find(([key]) => key === state.dimension);
  const keyOf = (r) => JSON.stringify([dim[2](r)]);
  const old = new Map((before ? before.rows : []).map((r) => [keyOf(r), r]));
  const cells = (r, prev) => METRICS.map(([m, , kind]) => el("td", { class: "num", "data-metric": m },
    format(r[m], kind), prev ? delta(r[m], prev[m], kind) : null));
  const rows = report.rows.map((r) => el("tr", { "data-key": dim[2](r) }, td(dim[2](r)), cells(r, old.get(keyOf(r)))));
  const totals = el("tr", { class: "totals", "data-key": "totals" }, el("td", {}, el("strong", { text: "Total" })),
    cells(report.totals, before ? before.totals : null));
  status.textContent = `${report.meta.from} to ${report.meta.to} (${report.meta.tz})` +
    (state.compare ? `, compared with ${prevFrom} to ${prevTo}` : "") +
    `. Unattributed: ${report.totals.unattributed_conversions} sales, ${format(report.totals.unattributed_revenue, "money")}.`;
  root.append(table("report-table", [{ label: dim[1] }, ...METRICS.map(([, label]) => ({ label, num: true }))],
    [...rows, totals]));
}

function redraw(root) {
  root.replaceChildren();
  return renderReports(root);
}

registerView("reports", { title: "Reports", render: renderReports });
