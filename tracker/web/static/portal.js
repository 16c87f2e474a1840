// The influencer portal: reads /api/v1/me/* with the session cookie and draws the page.
// No dependency; everything comes from this origin (CSP default-src 'self').
(function () {
  "use strict";
  const SVG = "http://www.w3.org/2000/svg";
  const tz = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  const $ = (sel) => document.querySelector(sel);
  let currency = "";
  let cursor = null;

  function today() {
    // YYYY-MM-DD of the viewer's own calendar day.
    return new Date().toLocaleDateString("en-CA", { timeZone: tz });
  }
  function addDays(iso, n) {
    const d = new Date(iso + "T00:00:00Z");
    d.setUTCDate(d.getUTCDate() + n);
    return d.toISOString().slice(0, 10);
  }
  function days(from, to) {
    const out = [];
    for (let d = from; d <= to && out.length < 400; d = addDays(d, 1)) out.push(d);
    return out;
  }
  function money(s) { return s == null ? "–" : `${s} ${currency}`; }
  function percent(s) { return s == null ? "–" : `${(Number(s) * 100).toFixed(1)} %`; }
  function status(text, isError) {
    const el = $("#status");
    el.textContent = text || "";
    el.classList.toggle("error", !!isError);
  }
  function el(tag, attrs, parent, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text != null) node.textContent = text;
    if (parent) parent.appendChild(node);
    return node;
  }
  function svg(tag, attrs, parent) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (parent) parent.appendChild(node);
    return node;
  }

  async function api(path) {
    const r = await fetch(path, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (r.status === 401) { window.location.reload(); throw new Error("signed out"); }
    const body = await r.json();
    if (!r.ok) throw new Error(body.error ? body.error.message : `HTTP ${r.status}`);
    return body;
  }
  function range() { return `from=${$("#from").value}&to=${$("#to").value}`; }

  async function copy(text, button) {
    try {
      await navigator.clipboard.writeText(text);
    } catch (e) {
      // Plain-http origins other than localhost have no clipboard API: select and copy.
      const area = el("textarea", {}, document.body, text);
      area.select();
      document.execCommand("copy");
      area.remove();
    }
    const was = button.textContent;
    button.textContent = "Copied!";
    button.dataset.copied = text;
    setTimeout(() => { button.textContent = was; }, 1500);
  }

  function renderKpis(t) {
    for (const node of document.querySelectorAll("[data-metric]")) {
      const m = node.dataset.metric;
      const v = t[m];
      if (m === "epc") node.textContent = v == null ? "–" : `${Number(v).toFixed(2)} ${currency}`;
      else if (["commission", "revenue"].includes(m)) node.textContent = money(v);
      else if (m === "conversion_rate") node.textContent = percent(v);
      else node.textContent = v == null ? "–" : String(v);
    }
  }

  function renderChart(rows, from, to) {
    const byDay = Object.fromEntries(rows.map((r) => [r.day, r]));
    const list = days(from, to);
    // As wide as its box (a phone gets a taller chart, not a tiny one).
    const W = Math.max(320, Math.min(720, $("#chart").clientWidth || 720)), H = 220, L = 36, R = 44, T = 12, B = 24;
    const n = Math.max(list.length, 1), slot = (W - L - R) / n;
    const maxClicks = Math.max(1, ...list.map((d) => (byDay[d] ? byDay[d].clicks : 0)));
    const earn = list.map((d) => (byDay[d] ? Number(byDay[d].commission) : 0));
    const maxEarn = Math.max(...earn, 0) || 1;
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img",
      "aria-label": "Clicks, unique clicks and earnings by day" });
    for (const f of [0, 0.5, 1]) {
      const y = T + (H - T - B) * (1 - f);
      svg("line", { x1: L, x2: W - R, y1: y, y2: y, class: "grid-line" }, root);
      svg("text", { x: L - 4, y: y + 4, class: "axis end" }, root).textContent = String(Math.round(maxClicks * f));
      svg("text", { x: W - 2, y: y + 4, class: "axis end" }, root).textContent = (maxEarn * f).toFixed(0);
    }
    const groups = { clicks: svg("g", { "data-series": "clicks" }, root),
      unique_clicks: svg("g", { "data-series": "unique_clicks" }, root) };
    const bw = Math.max(1, slot * 0.38);
    list.forEach((d, i) => {
      const row = byDay[d] || { clicks: 0, unique_clicks: 0, commission: "0" };
      [["clicks", 0, "b-clicks"], ["unique_clicks", 1, "b-uniques"]].forEach(([key, k, cls]) => {
        const v = row[key] || 0;
        const h = ((H - T - B) * v) / maxClicks;
        const rect = svg("rect", { x: L + i * slot + slot * 0.1 + k * bw, y: H - B - h, width: bw, height: h,
          class: cls, "data-day": d, "data-value": v }, groups[key]);
        svg("title", {}, rect).textContent = `${d}: ${v} ${key === "clicks" ? "clicks" : "unique clicks"}`;
      });
    });
    const pts = list.map((d, i) => [L + i * slot + slot / 2, H - B - ((H - T - B) * earn[i]) / maxEarn]);
    const line = svg("g", { "data-series": "commission" }, root);
    svg("polyline", { points: pts.map((p) => p.join(",")).join(" "), class: "earn" }, line);
    list.forEach((d, i) => {
      const dot = svg("circle", { cx: pts[i][0], cy: pts[i][1], r: 3, class: "dot", "data-day": d,
        "data-value": byDay[d] ? byDay[d].commission : "0" }, line);
      svg("title", {}, dot).textContent = `${d}: ${money(byDay[d] ? byDay[d].commission : "0")} earned`;
    });
    svg("text", { x: L, y: H - 6, class: "axis" }, root).textContent = from;
    svg("text", { x: W - R, y: H - 6, class: "axis end" }, root).textContent = to;
    $("#chart").replaceChildren(root);
  }

  function renderLinks(links, perLink) {
    const box = $("#links");
    box.replaceChildren();
    if (!links.length) el("p", { class: "empty" }, box, "No links yet: the brand mints them for you.");
    const stats = Object.fromEntries(perLink.map((r) => [r.link_code, r]));
    for (const link of links) {
      const card = el("article", { class: "link" + (link.disabled ? " disabled" : ""), "data-code": link.code }, box);
      el("img", { class: "qr", src: link.qr_svg, alt: `QR code of ${link.short_url}`, width: "96", height: "96" }, card);
      const body = el("div", {}, card);
      el("div", { class: "url" }, body, link.short_url);
      const meta = el("div", { class: "meta" }, body, `${link.campaign_name} → ${link.destination_url}`);
      if (link.disabled) meta.textContent += " (disabled)";
      const actions = el("div", { class: "actions" }, body);
      const b = el("button", { type: "button", class: "copy", "data-copy": "url" }, actions, "Copy link");
      b.addEventListener("click", () => copy(link.short_url, b));
      if (link.coupon_code) {
        const c = el("button", { type: "button", class: "ghost copy", "data-copy": "coupon" }, actions,
          `Copy code ${link.coupon_code}`);
        c.addEventListener("click", () => copy(link.coupon_code, c));
      }
      el("a", { href: link.qr_png + "&size=1024", download: `qr-${link.code}.png` }, actions, "QR as PNG");
      const s = stats[link.code] || { clicks: 0, unique_clicks: 0, conversions: 0, commission: "0.00" };
      const line = el("div", { class: "stats" }, card);
      for (const [label, key, fmt] of [["clicks", "clicks"], ["unique", "unique_clicks"], ["sales", "conversions"],
        ["earned", "commission", money]]) {
        const span = el("span", {}, line);
        el("b", { "data-link-metric": key }, span, fmt ? fmt(s[key]) : String(s[key]));
        span.append(` ${label}`);
      }
    }
  }

  function renderStatuses(list) {
    const box = $("#by-status");
    box.replaceChildren();
    if (!list.length) el("p", { class: "empty" }, box, "Nothing yet in this range.");
    for (const s of list) {
      const card = el("div", { class: "status-card", "data-status": s.status }, box);
      el("div", { class: "label" }, card, `${s.status} · ${s.conversions} ${s.conversions === 1 ? "sale" : "sales"}`);
      el("div", { class: "value" }, card, money(s.commission));
    }
  }

  function addConversions(items, reset) {
    const body = $("#conversions tbody");
    if (reset) body.replaceChildren();
    for (const c of items) {
      const tr = el("tr", { "data-conversion": c.conversion_id }, body);
      el("td", {}, tr, new Date(c.occurred_at).toLocaleString(undefined, { timeZone: tz }));
      el("td", {}, tr, c.order_id);
      el("td", {}, tr, c.link_code);
      el("td", { class: "num" }, tr, `${c.amount} ${c.currency}`);
      el("td", { class: "num" }, tr, `${c.commission} ${c.currency}`);
      el("span", { class: `pill ${c.status}` }, el("td", {}, tr), c.status);
    }
    $("#no-conversions").hidden = body.children.length > 0;
  }

  async function loadMore() {
    const page = await api(`/api/v1/me/conversions?${range()}&limit=50&cursor=${encodeURIComponent(cursor)}`);
    addConversions(page.items, false);
    cursor = page.next_cursor;
    $("#more").hidden = !cursor;
  }

  function renderPayouts(list) {
    const body = $("#payouts tbody");
    body.replaceChildren();
    for (const p of list) {
      const tr = el("tr", { "data-payout": p.id }, body);
      el("td", {}, tr, new Date(p.created_at).toLocaleDateString(undefined, { timeZone: tz }));
      el("td", {}, tr, p.period_end);
      el("td", { class: "num" }, tr, String(p.lines.length));
      el("td", { class: "num", "data-amount": p.amount }, tr, money(p.amount));
      el("span", { class: `pill ${p.status}` }, el("td", {}, tr), p.status);
      el("td", {}, tr, p.reference || "");
    }
    $("#no-payouts").hidden = list.length > 0;
  }

  function renderStatement(st) {
    $("#head-hash").textContent = st.head_hash;
    $("#statement-count").textContent = String(st.entries.length);
    $("#statement-balance").textContent = money(st.totals.balance);
  }

  async function loadMoney() {
    const [pay, st] = await Promise.all([api("/api/v1/me/payouts"), api("/api/v1/me/statement")]);
    renderPayouts(pay.items);
    renderStatement(st);
  }

  let links = [];
  async function load() {
    const from = $("#from").value, to = $("#to").value;
    if (!from || !to || from > to) { status("Pick a start date before the end date.", true); return; }
    status("Loading…");
    try {
      const q = `${range()}&tz=${encodeURIComponent(tz)}`;
      const [byDay, byLink, conv] = await Promise.all([
        api(`/api/v1/me/report?${q}&group_by=day`),
        api(`/api/v1/me/report?${q}&group_by=link`),
        api(`/api/v1/me/conversions?${range()}&limit=50`),
      ]);
      renderKpis(byDay.totals);
      renderChart(byDay.rows, from, to);
      renderLinks(links, byLink.rows);
      renderStatuses(conv.commission_by_status);
      addConversions(conv.items, true);
      cursor = conv.next_cursor;
      $("#more").hidden = !cursor;
      status("");
      document.body.dataset.loaded = `${from}..${to}`;
    } catch (e) {
      status(`Could not load your figures: ${e.message}`, true);
    }
  }

  function preset(n) {
    const to = today();
    $("#to").value = to;
    $("#from").value = addDays(to, -(n - 1));
    for (const b of document.querySelectorAll(".presets button")) b.classList.toggle("on", b.dataset.days === String(n));
  }

  async function start() {
    preset(30);
    for (const b of document.querySelectorAll(".presets button")) {
      b.addEventListener("click", () => { preset(Number(b.dataset.days)); load(); });
    }
    for (const id of ["#from", "#to"]) {
      $(id).addEventListener("change", () => {
        for (const b of document.querySelectorAll(".presets button")) b.classList.remove("on");
        load();
      });
    }
    $("#more").addEventListener("click", loadMore);
    try {
      const [me, mine] = await Promise.all([api("/api/v1/me"), api("/api/v1/me/links")]);
      currency = me.brand.currency;
      links = mine.items;
      $("#brand-name").textContent = me.brand.name;
      $("#influencer-name").textContent = `Hi ${me.influencer.name}`;
      document.title = `${me.influencer.name} · ${me.brand.name}`;
    } catch (e) {
      status(`Could not load your portal: ${e.message}`, true);
      return;
    }
    await Promise.all([load(), loadMoney().catch((e) => status(`Could not load your payouts: ${e.message}`, true))]);
    document.body.dataset.money = "1";
  }

  document.addEventListener("DOMContentLoaded", start);
})();
