// tracker brand dashboard: plain JS, no build step, talks only to this origin.
"use strict";

(() => {
  const KEY_STORAGE = "tracker.apiKey";
  const SVG = "http://www.w3.org/2000/svg";
  const $ = (sel) => document.querySelector(sel);
  const state = { currency: "", day: null, influencer: null, campaign: null, sort: { key: "revenue", dir: -1 } };

  // ---------------------------------------------------------------- formatting
  const dash = "–";
  const count = (n) => (n === null || n === undefined ? dash : Number(n).toLocaleString("en-US"));
  function money(s) {
    if (s === null || s === undefined) return dash;
    const neg = s.startsWith("-");
    const [int, frac] = (neg ? s.slice(1) : s).split(".");
    const grouped = int.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
    return `${neg ? "-" : ""}${grouped}${frac !== undefined ? "." + frac : ""} ${state.currency}`.trim();
  }
  const percent = (s) => (s === null || s === undefined ? dash : `${(Number(s) * 100).toFixed(1)} %`);
  const plain = (s) => (s === null || s === undefined ? dash : String(s));

  // ---------------------------------------------------------------- dates
  function todayIn(tz) {
    try {
      return new Intl.DateTimeFormat("en-CA", { timeZone: tz, year: "numeric", month: "2-digit", day: "2-digit" })
        .format(new Date());
    } catch (e) {
      return new Date().toISOString().slice(0, 10);
    }
  }
  function addDays(iso, days) {
    const d = new Date(iso + "T00:00:00Z");
    d.setUTCDate(d.getUTCDate() + days);
    return d.toISOString().slice(0, 10);
  }
  function setRange(days) {
    const to = todayIn($("#tz").value || "UTC");
    $("#to").value = to;
    $("#from").value = addDays(to, -(days - 1));
  }

  // ---------------------------------------------------------------- API
  function status(text, isError) {
    const el = $("#status");
    el.textContent = text;
    el.className = isError ? "error" : "";
  }
  function query(group, format) {
    const q = new URLSearchParams({ from: $("#from").value, to: $("#to").value, tz: $("#tz").value || "UTC" });
    if (group) q.set("group_by", group);
    if (format) q.set("format", format);
    return "/api/v1/reports?" + q.toString();
  }
  async function call(group, format) {
    const key = localStorage.getItem(KEY_STORAGE);
    if (!key) throw new Error("Paste your API key above and press Save.");
    const resp = await fetch(query(group, format), { headers: { Authorization: "Bearer " + key } });
    if (!resp.ok) {
      let message = `The server answered ${resp.status}.`;
      try {
        message = (await resp.json()).error.message;
      } catch (e) { /* not JSON */ }
      throw new Error(message);
    }
    return format === "csv" ? resp.blob() : resp.json();
  }

  async function load() {
    status("Loading…");
    try {
      const [day, influencer, campaign] = await Promise.all([call("day"), call("influencer"), call("campaign")]);
      state.currency = day.meta ? day.meta.currency : "";
      Object.assign(state, { day, influencer, campaign });
      renderTotals(day.totals);
      renderChart(day.rows);
      renderLeaderboard();
      renderCampaigns();
      status(`${day.meta.from} to ${day.meta.to} (${day.meta.tz})`);
    } catch (e) {
      status(e.message, true);
    }
  }

  async function downloadCsv(group) {
    try {
      const blob = await call(group, "csv");
      const a = document.createElement("a");
      a.href = URL.createObjectURL(blob);
      a.download = `report-${$("#from").value}-${$("#to").value}-${group}.csv`;
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(a.href), 10000);
    } catch (e) {
      status(e.message, true);
    }
  }

  // ---------------------------------------------------------------- rendering
  function renderTotals(t) {
    const set = (metric, text) => { $(`#totals [data-metric="${metric}"]`).textContent = text; };
    set("clicks", count(t.clicks));
    set("unique_clicks", `${count(t.unique_clicks)} unique · ${count(t.bot_clicks)} bots`);
    set("conversions", count(t.conversions));
    set("conversion_rate", `${percent(t.conversion_rate)} of clicks`);
    set("revenue", money(t.revenue));
    set("unattributed_revenue", `+ ${money(t.unattributed_revenue)} unattributed (${count(t.unattributed_conversions)})`);
    set("cost", money(t.cost));
    set("commission_fees", `${money(t.commission)} commission + ${money(t.fees)} fees`);
    set("roi", percent(t.roi));
    set("epc", `EPC ${money(t.epc)}`);
    set("payable_commission", money(t.payable_commission));
    set("commission_status", `${money(t.pending_commission)} pending · ${money(t.paid_commission)} paid`);
  }

  function svg(tag, attrs, parent) {
    const el = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
    if (parent) parent.appendChild(el);
    return el;
  }

  function renderChart(rows) {
    const byDay = new Map(rows.map((r) => [r.day, r]));
    const days = [];
    for (let d = $("#from").value; d <= $("#to").value && days.length < 400; d = addDays(d, 1)) days.push(d);
    const series = [
      { key: "clicks", label: "Clicks", value: (r) => (r ? r.clicks : 0), text: count, cls: "s-clicks" },
      { key: "conversions", label: "Conversions", value: (r) => (r ? r.conversions : 0), text: count, cls: "s-conv" },
      { key: "revenue", label: "Revenue", value: (r) => (r ? Number(r.revenue) : 0),
        raw: (r) => (r ? r.revenue : "0"), text: money, cls: "s-rev" },
    ];
    const W = 960, H = 96, GAP = 34, LEFT = 110;
    const root = svg("svg", { viewBox: `0 0 ${W} ${series.length * (H + GAP) + 8}`, role: "img",
      "aria-label": "Clicks, conversions and revenue per day", class: "chart" });
    const step = (W - LEFT - 10) / Math.max(days.length, 1);
    series.forEach((s, i) => {
      const top = i * (H + GAP) + 20;
      const values = days.map((d) => s.value(byDay.get(d)));
      const max = Math.max(...values, 0);
      const total = values.reduce((a, b) => a + b, 0);
      const g = svg("g", { "data-series": s.key }, root);
      const title = svg("text", { x: 0, y: top - 6, class: "series-label" }, g);
      title.textContent = s.label;
      const peak = svg("text", { x: 0, y: top + 12, class: "axis" }, g);
      peak.textContent = `max ${s.text(s.raw ? String(max) : max)}`;
      svg("line", { x1: LEFT, x2: W - 10, y1: top + H, y2: top + H, class: "baseline" }, g);
      days.forEach((d, j) => {
        const r = byDay.get(d);
        const v = values[j];
        const h = max > 0 ? (v / max) * H : 0;
        const rect = svg("rect", {
          x: (LEFT + j * step + step * 0.1).toFixed(2), y: (top + H - h).toFixed(2),
          width: Math.max(step * 0.8, 1).toFixed(2), height: h.toFixed(2), class: s.cls,
          "data-day": d, "data-value": s.raw ? s.raw(r) : v,
        }, g);
        svg("title", {}, rect).textContent = `${d}: ${s.text(s.raw ? s.raw(r) : v)}`;
      });
      g.setAttribute("data-total", s.raw ? total.toFixed(2) : String(total));
    });
    const first = svg("text", { x: LEFT, y: series.length * (H + GAP) + 4, class: "axis" }, root);
    first.textContent = days[0] || "";
    const last = svg("text", { x: W - 10, y: series.length * (H + GAP) + 4, class: "axis end" }, root);
    last.textContent = days[days.length - 1] || "";
    $("#chart").replaceChildren(root);
  }

  function sortValue(row, key) {
    const v = row[key];
    if (v === null || v === undefined) return -Infinity;
    return typeof v === "string" && key.endsWith("_name") ? v.toLowerCase() : Number(v);
  }

  function cell(tr, text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    tr.appendChild(td);
    return td;
  }

  function renderLeaderboard() {
    if (!state.influencer) return;
    const { key, dir } = state.sort;
    const rows = [...state.influencer.rows].sort((a, b) => {
      const x = sortValue(a, key), y = sortValue(b, key);
      if (x < y) return -dir;
      if (x > y) return dir;
      return String(a.influencer_name).localeCompare(String(b.influencer_name));
    });
    const body = $("#leaderboard tbody");
    body.replaceChildren();
    rows.forEach((r, i) => {
      const tr = document.createElement("tr");
      tr.dataset.influencerId = r.influencer_id;
      cell(tr, String(i + 1), "num");
      cell(tr, r.influencer_name || r.influencer_id, "name");
      cell(tr, count(r.clicks), "num").dataset.metric = "clicks";
      cell(tr, count(r.unique_clicks), "num").dataset.metric = "unique_clicks";
      cell(tr, count(r.conversions), "num").dataset.metric = "conversions";
      cell(tr, money(r.revenue), "num").dataset.metric = "revenue";
      cell(tr, money(r.commission), "num").dataset.metric = "commission";
      cell(tr, money(r.fees), "num").dataset.metric = "fees";
      cell(tr, money(r.cost), "num").dataset.metric = "cost";
      cell(tr, percent(r.roi), "num").dataset.metric = "roi";
      cell(tr, percent(r.conversion_rate), "num").dataset.metric = "conversion_rate";
      cell(tr, money(r.epc), "num").dataset.metric = "epc";
      body.appendChild(tr);
    });
    document.querySelectorAll("#leaderboard th[data-key]").forEach((th) => {
      th.classList.toggle("sorted", th.dataset.key === key);
      th.setAttribute("aria-sort", th.dataset.key === key ? (dir < 0 ? "descending" : "ascending") : "none");
    });
  }

  function renderCampaigns() {
    if (!state.campaign) return;
    const rows = [...state.campaign.rows].sort((a, b) => Number(b.revenue) - Number(a.revenue));
    const body = $("#campaigns tbody");
    body.replaceChildren();
    rows.forEach((r) => {
      const tr = document.createElement("tr");
      tr.dataset.campaignId = r.campaign_id;
      cell(tr, r.campaign_name || r.campaign_id, "name");
      cell(tr, count(r.clicks), "num").dataset.metric = "clicks";
      cell(tr, count(r.conversions), "num").dataset.metric = "conversions";
      cell(tr, money(r.revenue), "num").dataset.metric = "revenue";
      cell(tr, money(r.commission), "num").dataset.metric = "commission";
      cell(tr, money(r.fees), "num").dataset.metric = "fees";
      cell(tr, money(r.cost), "num").dataset.metric = "cost";
      cell(tr, percent(r.roi), "num").dataset.metric = "roi";
      cell(tr, money(r.aov), "num").dataset.metric = "aov";
      body.appendChild(tr);
    });
  }

  // ---------------------------------------------------------------- wiring
  document.addEventListener("DOMContentLoaded", () => {
    $("#tz").value = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
    setRange(30);
    const saved = localStorage.getItem(KEY_STORAGE);
    if (saved) $("#api-key").value = saved;

    $("#key-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const key = $("#api-key").value.trim();
      if (!key) return status("Paste your API key first.", true);
      localStorage.setItem(KEY_STORAGE, key);
      load();
    });
    $("#forget-key").addEventListener("click", () => {
      localStorage.removeItem(KEY_STORAGE);
      $("#api-key").value = "";
      status("The key was removed from this browser.");
    });
    $("#refresh").addEventListener("click", load);
    document.querySelectorAll("[data-days]").forEach((b) =>
      b.addEventListener("click", () => { setRange(Number(b.dataset.days)); load(); }));
    document.querySelectorAll("button.csv").forEach((b) =>
      b.addEventListener("click", () => downloadCsv(b.dataset.group)));
    $("#lb-sort").addEventListener("change", () => {
      state.sort = { key: $("#lb-sort").value, dir: -1 };
      renderLeaderboard();
    });
    document.querySelectorAll("#leaderboard th[data-key]").forEach((th) =>
      th.addEventListener("click", () => {
        const key = th.dataset.key;
        state.sort = { key, dir: state.sort.key === key ? -state.sort.dir : key.endsWith("_name") ? 1 : -1 };
        renderLeaderboard();
      }));
    if (saved) load();
  });
})();
