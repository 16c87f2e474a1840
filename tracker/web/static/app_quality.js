// tracker brand app: the review queue (flagged conversions, approve or reject with a note), the coupon-leak
// suspects with their evidence, and the quality rules.
import { api, canWrite, el, form, lists, nameOf, registerView, table, td } from "./app_core.js";

// Kept between redraws: which part of the queue is shown, the last message.
const state = { status: "open", notice: "" };
const when = (ts) => (ts ? ts.slice(0, 19).replace("T", " ") : null);
const join = (items) => items.join(", ");

export function evidence(ev) {
  return Object.entries(ev || {}).map(([k, v]) =>
    `${k}: ${Array.isArray(v) ? v.join(", ") : v !== null && typeof v === "object" ? JSON.stringify(v) : v}`).join("; ");
}

function decisionCell(item, root) {
  if (!canWrite()) return td("");
  const note = el("input", { type: "text", class: "note", placeholder: "note", "aria-label": `Note on ${item.order_id}` });
  const error = el("p", { class: "form-error", role: "alert" });
  const decide = async (decision, button) => {
    button.disabled = true;
    try {
      await api("POST", `/api/v1/conversions/${encodeURIComponent(item.conversion_id)}/review`,
        { decision, note: note.value.trim() });
      state.notice = `Order ${item.order_id}: ${decision === "approve" ? "approved" : "rejected"}.`;
      await redraw(root);
    } catch (e) {
      error.textContent = e.message;
      button.disabled = false;
    }
  };
  return el("td", {}, note,
    el("button", { type: "button", class: "small secondary", "data-action": "approve", text: "Approve",
      on: { click: (ev) => decide("approve", ev.target) } }),
    el("button", { type: "button", class: "small danger", "data-action": "reject", text: "Reject",
      on: { click: (ev) => decide("reject", ev.target) } }), error);
}

function queueRow(item, influencers, root) {
  const review = item.review_status + (item.note ? ` (${item.note})` : "");
  return el("tr", { "data-order": item.order_id, "data-id": item.conversion_id },
    td(when(item.occurred_at)), td(item.order_id), td(nameOf(influencers, item.influencer_id)), td(item.link_code),
    el("td", { "data-flags": item.flags.join(","), text: join(item.flags) }), td(evidence(item.evidence)),
    td(`${item.amount} ${item.currency}`, "num"), td(`${item.commission} ${item.currency}`, "num"),
    el("td", { "data-review": item.review_status, text: review }),
    item.review_status === "open" ? decisionCell(item, root) : td(""));
}

function leakRow(leak, influencers) {
  return el("tr", { "data-coupon": leak.coupon_code }, td(leak.coupon_code), td(nameOf(influencers, leak.influencer_id)),
    td(leak.link_code), td(leak.coupon_conversions, "num"), td(leak.click_conversions, "num"),
    td(join(leak.countries.map((c) => `${c.country || "?"} ${c.conversions}`))), td(join(leak.link_click_countries)),
    el("td", { "data-foreign": leak.foreign_countries.join(","), text: join(leak.foreign_countries) || "–" }),
    td(when(leak.first_order_at)), td(when(leak.last_order_at)), td(join(leak.reasons)));
}

function rulesPart(rules, root) {
  const fields = [
    { name: "min_click_seconds", label: "fast_click: seconds from click to order under (0: off)", type: "number",
      value: rules.min_click_seconds },
    { name: "max_conversions_per_visitor_day", label: "visitor_repeat: orders a visitor-day over (0: off)",
      type: "number", value: rules.max_conversions_per_visitor_day },
    { name: "self_referral", label: "self_referral", type: "checkbox", value: rules.self_referral },
    { name: "coupon_leak", label: "coupon_leak", type: "checkbox", value: rules.coupon_leak },
    { name: "coupon_leak_factor", label: "Coupon-leak factor (coupon-only to click sales)", value: rules.coupon_leak_factor },
  ];
  const part = el("details", { id: "rules" }, el("summary", { text: "Rules" }));
  if (!canWrite()) {
    part.append(table("rules-table", [{ label: "Rule" }, { label: "Value" }],
      fields.map((f) => el("tr", { "data-rule": f.name }, td(f.label), td(f.value)))));
    return part;
  }
  part.append(form("rules-form", fields, "Save rules", async (v) => {
    await api("PUT", "/api/v1/rules", { ...v, min_click_seconds: Number(v.min_click_seconds),
      max_conversions_per_visitor_day: Number(v.max_conversions_per_visitor_day) });
    state.notice = "Rules saved; flags follow at the next read.";
    await redraw(root);
  }));
  return part;
}

async function renderReview(root) {
  const [{ influencers }, queue, leaks, rules] = await Promise.all([lists(),
    api("GET", `/api/v1/rules/review-queue?status=${state.status}`), api("GET", "/api/v1/rules/coupon-leaks"),
    api("GET", "/api/v1/rules")]);
  const notice = el("p", { id: "review-notice", class: "notice", role: "status", text: state.notice });
  state.notice = "";  // shown once
  const which = el("select", { id: "review-status", "aria-label": "Show" },
    [["open", "to review"], ["decided", "decided"], ["all", "all flagged"]].map(([v, t]) =>
      el("option", { value: v, text: t, selected: v === state.status })));
  which.addEventListener("change", () => { state.status = which.value; redraw(root); });
  root.append(el("h2", { text: "Review queue" }), el("p", { class: "hint", text:
    "Conversions a quality rule flagged, oldest first. Approve releases the commission; reject voids it. " +
    "Each decision and its note are in the audit log." }), notice,
  el("div", { class: "controls" }, el("label", { for: "review-status", text: "Show" }), which));
  root.append(queue.items.length ? table("review-table", [{ label: "Ordered" }, { label: "Order" },
    { label: "Influencer" }, { label: "Link" }, { label: "Flags" }, { label: "Evidence" },
    { label: "Amount", num: true }, { label: "Commission", num: true }, { label: "Review" }, { label: "" }],
  queue.items.map((item) => queueRow(item, influencers, root)))
    : el("p", { id: "review-none", class: "hint", text: state.status === "open" ? "Nothing to review." : "No decisions yet." }));
  root.append(el("h2", { text: `Coupon leaks, ${leaks.from} to ${leaks.to}` }), el("p", { class: "hint", text:
    `A coupon is suspect when its coupon-only sales exceed ${leaks.factor} times its link's click sales, or come ` +
    "from countries where the link had no clicks." }));
  root.append(leaks.items.length ? table("leaks-table", [{ label: "Coupon" }, { label: "Influencer" }, { label: "Link" },
    { label: "Coupon sales", num: true }, { label: "Click sales", num: true }, { label: "Order countries" },
    { label: "Click countries" }, { label: "Foreign" }, { label: "First order" }, { label: "Last order" },
    { label: "Why" }], leaks.items.map((leak) => leakRow(leak, influencers)))
    : el("p", { id: "leaks-none", class: "hint", text: "No suspect coupons in these 7 days." }));
  root.append(rulesPart(rules, root));
}

// After a change or a choice; a failure to read is shown in the view.
async function redraw(root) {
  root.replaceChildren();
  try {
    await renderReview(root);
  } catch (e) {
    root.append(el("p", { class: "form-error", role: "alert", text: e.message }));
  }
}

registerView("review", { title: "Review", render: renderReview });
