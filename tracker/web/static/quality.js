// The review queue and the coupon-leak list: reads the quality API with the brand key kept by /dashboard.
(() => {
  "use strict";
  const KEY_STORAGE = "tracker.apiKey";
  const $ = (sel) => document.querySelector(sel);

  function status(text, error) {
    const el = $("#status");
    el.textContent = text;
    el.classList.toggle("error", Boolean(error));
  }

  async function call(path, options) {
    const key = localStorage.getItem(KEY_STORAGE);
    if (!key) throw new Error("Paste your API key first.");
    const headers = { Authorization: "Bearer " + key };
    if (options && options.body) headers["Content-Type"] = "application/json";
    const resp = await fetch(path, Object.assign({ headers }, options || {}));
    const body = await resp.json().catch(() => ({}));
    if (!resp.ok) throw new Error((body.error && body.error.message) || "HTTP " + resp.status);
    return body;
  }

  function cell(tr, text, cls) {
    const td = document.createElement("td");
    td.textContent = text == null ? "" : String(text);
    if (cls) td.className = cls;
    tr.appendChild(td);
    return td;
  }

  function evidence(ev) {
    return Object.entries(ev || {}).map(([k, v]) => k + ": " + (Array.isArray(v) ? v.join(", ") : v)).join("; ");
  }

  async function decide(item, decision, note) {
    try {
      await call("/api/v1/conversions/" + encodeURIComponent(item.conversion_id) + "/review",
        { method: "POST", body: JSON.stringify({ decision, note }) });
      status("Order " + item.order_id + ": " + (decision === "approve" ? "approved" : "rejected") + ".");
      await loadQueue();
    } catch (err) {
      status(err.message, true);
    }
  }

  async function loadQueue() {
    const which = $("#queue-status").value;
    const body = await call("/api/v1/rules/review-queue?status=" + encodeURIComponent(which));
    const tbody = $("#queue tbody");
    tbody.replaceChildren();
    for (const item of body.items) {
      const tr = document.createElement("tr");
      tr.dataset.order = item.order_id;
      cell(tr, item.occurred_at.replace("T", " ").slice(0, 19));
      cell(tr, item.order_id);
      cell(tr, item.link_code);
      cell(tr, item.flags.join(", ")).dataset.flags = item.flags.join(",");
      cell(tr, evidence(item.evidence));
      cell(tr, item.amount + " " + item.currency, "num");
      cell(tr, item.commission + " " + item.currency, "num");
      cell(tr, item.review_status + (item.note ? " (" + item.note + ")" : "")).dataset.review = item.review_status;
      const td = cell(tr, "");
      const note = document.createElement("input");
      note.placeholder = "note";
      note.size = 12;
      note.className = "note";
      td.appendChild(note);
      for (const [decision, label] of [["approve", "Approve"], ["reject", "Reject"]]) {
        const b = document.createElement("button");
        b.type = "button";
        b.textContent = label;
        b.className = decision === "approve" ? "secondary approve" : "reject";
        b.addEventListener("click", () => decide(item, decision, note.value));
        td.appendChild(b);
      }
      tbody.appendChild(tr);
    }
    if (!body.items.length) status(which === "open" ? "Nothing to review." : "No decisions yet.");
  }

  async function loadLeaks() {
    const body = await call("/api/v1/rules/coupon-leaks");
    const tbody = $("#leaks tbody");
    tbody.replaceChildren();
    for (const leak of body.items) {
      const tr = document.createElement("tr");
      tr.dataset.coupon = leak.coupon_code;
      cell(tr, leak.coupon_code);
      cell(tr, leak.link_code);
      cell(tr, leak.coupon_conversions, "num");
      cell(tr, leak.click_conversions, "num");
      cell(tr, leak.countries.map((c) => (c.country || "?") + " " + c.conversions).join(", "));
      cell(tr, leak.link_click_countries.join(", "));
      cell(tr, leak.foreign_countries.join(", ")).dataset.foreign = leak.foreign_countries.join(",");
      cell(tr, leak.first_order_at.replace("T", " ").slice(0, 19));
      cell(tr, leak.last_order_at.replace("T", " ").slice(0, 19));
      cell(tr, leak.reasons.join(", "));
      tbody.appendChild(tr);
    }
  }

  async function load() {
    try {
      status("Loading…");
      await Promise.all([loadQueue(), loadLeaks()]);
      if ($("#status").textContent === "Loading…") status("");
    } catch (err) {
      status(err.message, true);
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    const saved = localStorage.getItem(KEY_STORAGE);
    if (saved) $("#api-key").value = saved;
    $("#key-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const key = $("#api-key").value.trim();
      if (!key) return status("Paste your API key first.", true);
      localStorage.setItem(KEY_STORAGE, key);
      load();
    });
    $("#refresh").addEventListener("click", load);
    $("#queue-status").addEventListener("change", load);
    if (saved) load();
  });
})();
