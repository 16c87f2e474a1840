// tracker brand app: payouts (run for a period, list by status, open one to see its lines, CSV, mark paid).
import { api, canWrite, el, filled, form, lists, options, registerView, session, table, td } from "./app_core.js";

// Kept between redraws: the status filter, the payout opened, the last message.
const state = { status: "", open: "", notice: "" };
const today = () => new Date().toISOString().slice(0, 10);
const when = (ts) => (ts ? ts.slice(0, 16).replace("T", " ") : null);
const pid = (id) => encodeURIComponent(id);

function detail(p, root) {
  const lines = p.lines.map((line) => el("tr", { "data-kind": line.kind }, td(line.order_id), td(line.conversion_id),
    td(line.kind), td(`${line.amount} ${p.currency}`, "num")));
  const box = el("div", { id: "payout-detail", class: "card", "data-payout": p.id, "data-status": p.status },
    el("h2", { text: `Payout ${p.id}: ${p.influencer_name || p.influencer_id}, ${p.amount} ${p.currency}` }),
    el("p", { class: "hint", text: p.status === "paid"
      ? `Paid ${when(p.paid_at)}, reference ${p.reference || "–"}.` : `Open: commission up to ${p.period_end}.` }),
    table("payout-lines", [{ label: "Order" }, { label: "Conversion" }, { label: "Kind" }, { label: "Amount", num: true }],
      lines),
    // A plain link: the GET rides on the session cookie like every read.
    el("p", {}, el("a", { id: "payout-csv", class: "button", href: `/api/v1/payouts/${pid(p.id)}?format=csv`,
      download: `payout-${p.id}.csv`, text: "Download CSV" })));
  if (p.status === "open" && canWrite()) {
    box.append(form("paid-form", [
      { name: "reference", label: "Payment reference (bank transfer id, optional)", placeholder: "SEPA-2027-001" },
    ], "Mark paid", async (v) => {
      await api("POST", `/api/v1/payouts/${pid(p.id)}/paid`, { reference: v.reference });
      state.notice = `Payout ${p.id} marked paid.`;
      await redraw(root);
    }));
  }
  return box;
}

function payoutRow(p, root) {
  return el("tr", { "data-payout": p.id, "data-status": p.status, class: p.id === state.open ? "selected" : null },
    td(when(p.created_at)), td(p.influencer_name || p.influencer_id), td(p.period_end), td(p.lines.length, "num"),
    el("td", { class: "num", "data-amount": p.amount, text: `${p.amount} ${p.currency}` }),
    el("td", { class: "status", text: p.status }), td(p.reference),
    el("td", {}, el("button", { type: "button", class: "small secondary", "data-action": "open", text: "Open",
      on: { click: () => { state.open = p.id; state.notice = ""; redraw(root); } } })));
}

async function renderPayouts(root) {
  const query = state.status ? `?status=${state.status}` : "";
  const [{ influencers }, { items }] = await Promise.all([lists(), api("GET", "/api/v1/payouts" + query)]);
  const notice = el("p", { id: "payouts-notice", class: "notice", role: "status", text: state.notice });
  state.notice = "";  // shown once
  root.append(el("h2", { text: "Payouts" }), el("p", { class: "hint", text:
    "A payout gathers an influencer's payable commission up to a day (after its hold), less open clawbacks. " +
    `Amounts are in ${session.brand.currency}, as the API gives them.` }));
  if (canWrite()) {
    root.append(form("payout-run-form", [
      { name: "period_end", label: "Commission up to (UTC day)", type: "date", value: today() },
      { name: "influencer_id", label: "Influencer", options: [["", "every influencer"], ...options(influencers)] },
    ], "Run payouts", async (v) => {
      const made = await api("POST", "/api/v1/payouts", filled(v));
      state.notice = made.items.length ? `${made.items.length} payout(s) created.` : "Nothing new to pay for this period.";
      await redraw(root);
    }));
  }
  const filter = el("select", { id: "payouts-filter", "aria-label": "Status" },
    [["", "all"], ["open", "open"], ["paid", "paid"]].map(([v, t]) => el("option", { value: v, text: t,
      selected: v === state.status })));
  filter.addEventListener("change", () => { state.status = filter.value; redraw(root); });
  root.append(notice, el("div", { class: "controls" }, el("label", { for: "payouts-filter", text: "Show" }), filter));
  root.append(items.length ? table("payouts-table", [{ label: "Created" }, { label: "Influencer" },
    { label: "Up to" }, { label: "Lines", num: true }, { label: "Amount", num: true }, { label: "Status" },
    { label: "Reference" }, { label: "" }], items.map((p) => payoutRow(p, root)))
    : el("p", { id: "payouts-none", class: "hint", text: "No payouts yet." }));
  if (state.open) {
    // Read on its own: the opened payout may be outside the filter.
    try {
      root.append(detail(await api("GET", `/api/v1/payouts/${pid(state.open)}`), root));
    } catch (e) {
      state.open = "";
      root.append(el("p", { class: "form-error", role: "alert", text: e.message }));
    }
  }
}

// After a change or a choice; a failure to read is shown in the view.
async function redraw(root) {
  root.replaceChildren();
  try {
    await renderPayouts(root);
  } catch (e) {
    root.append(el("p", { class: "form-error", role: "alert", text: e.message }));
  }
}

registerView("payouts", { title: "Payouts", render: renderPayouts });
