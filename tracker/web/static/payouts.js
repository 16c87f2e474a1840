// tracker payouts page: plain JS, no build step, talks only to this origin.
"use strict";

(() => {
  const KEY_STORAGE = "tracker.apiKey";
  const $ = (sel) => document.querySelector(sel);

  function status(text, isError) {
    const el = $("#status");
    el.textContent = text;
    el.className = isError ? "error" : "";
  }
  function el(tag, attrs, parent, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    if (parent) parent.appendChild(node);
    return node;
  }
  async function call(method, path, body, raw) {
    const key = localStorage.getItem(KEY_STORAGE);
    if (!key) throw new Error("Paste your API key above and press Save.");
    const headers = { Authorization: "Bearer " + key };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    if (!resp.ok) {
      let message = `The server answered ${resp.status}.`;
      try { message = (await resp.json()).error.message; } catch (e) { /* not JSON */ }
      throw new Error(message);
    }
    return raw ? resp.blob() : resp.json();
  }

  function showLines(p) {
    $("#detail").hidden = false;
    $("#detail-title").textContent = `Lines of ${p.id} · ${p.influencer_name} · ${p.amount} ${p.currency}`;
    const body = $("#lines tbody");
    body.replaceChildren();
    for (const line of p.lines) {
      const tr = el("tr", { "data-kind": line.kind }, body);
      el("td", {}, tr, line.order_id);
      el("td", {}, tr, line.conversion_id);
      el("td", {}, tr, line.kind);
      el("td", { class: "num" }, tr, `${line.amount} ${p.currency}`);
    }
  }

  async function download(p) {
    const blob = await call("GET", `/api/v1/payouts/${encodeURIComponent(p.id)}?format=csv`, undefined, true);
    const a = el("a", { href: URL.createObjectURL(blob), download: `payout-${p.id}.csv` }, document.body);
    a.click();
    a.remove();
  }

  async function markPaid(p, input) {
    try {
      await call("POST", `/api/v1/payouts/${encodeURIComponent(p.id)}/paid`, { reference: input.value.trim() });
      status(`Payout ${p.id} marked paid.`);
      await load();
    } catch (e) {
      status(e.message, true);
    }
  }

  function render(items) {
    const body = $("#payouts tbody");
    body.replaceChildren();
    for (const p of items) {
      const tr = el("tr", { "data-payout": p.id, "data-status": p.status }, body);
      el("td", {}, tr, p.created_at.slice(0, 16).replace("T", " "));
      el("td", {}, tr, p.influencer_name || p.influencer_id);
      el("td", {}, tr, p.period_end);
      el("td", { class: "num" }, tr, String(p.lines.length));
      el("td", { class: "num", "data-amount": p.amount }, tr, `${p.amount} ${p.currency}`);
      el("td", { class: "status" }, tr, p.status);
      el("td", {}, tr, p.reference || "");
      const actions = el("td", { class: "actions" }, tr);
      el("button", { type: "button", class: "secondary lines" }, actions, "Lines").addEventListener(
        "click", () => showLines(p));
      el("button", { type: "button", class: "secondary csv" }, actions, "CSV").addEventListener(
        "click", () => download(p).catch((e) => status(e.message, true)));
      if (p.status === "open") {
        const ref = el("input", { type: "text", class: "reference", placeholder: "reference", size: "12" }, actions);
        el("button", { type: "button", class: "paid" }, actions, "Mark paid").addEventListener(
          "click", () => markPaid(p, ref));
      }
    }
    $("#none").hidden = items.length > 0;
  }

  async function load() {
    const filter = $("#filter").value;
    const answer = await call("GET", "/api/v1/payouts" + (filter ? `?status=${filter}` : ""));
    render(answer.items);
    document.body.dataset.loaded = String(answer.items.length);
  }

  async function run(event) {
    event.preventDefault();
    try {
      const body = $("#period-end").value ? { period_end: $("#period-end").value } : {};
      const made = await call("POST", "/api/v1/payouts", body);
      status(made.items.length ? `${made.items.length} payout(s) created.` : "Nothing new to pay for this period.");
      await load();
    } catch (e) {
      status(e.message, true);
    }
  }

  function start() {
    $("#period-end").value = new Date().toISOString().slice(0, 10);
    $("#api-key").value = localStorage.getItem(KEY_STORAGE) || "";
    $("#key-form").addEventListener("submit", (e) => {
      e.preventDefault();
      localStorage.setItem(KEY_STORAGE, $("#api-key").value.trim());
      load().catch((err) => status(err.message, true));
    });
    $("#run-form").addEventListener("submit", run);
    $("#filter").addEventListener("change", () => load().catch((e) => status(e.message, true)));
    if (localStorage.getItem(KEY_STORAGE)) load().catch((e) => status(e.message, true));
  }

  document.addEventListener("DOMContentLoaded", start);
})();
