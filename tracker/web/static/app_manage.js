// tracker brand app: campaigns, influencers, stores, fees, FX rates.
import {
  api, canWrite, copyButton, el, filled, form, lists, nameOf, once, options, registerView, session, table, td,
} from "./app_core.js";

const commissionText = (c) => (c.type === "percent" ? `${c.value} %` : `${c.value} ${session.brand.currency} flat`);

function editRow(colspan, content) {
  return el("tr", { class: "editing" }, el("td", { colspan }, content));
}

// ------------------------------------------------------------------ campaigns

function campaignFields(c) {
  return [
    { name: "name", label: "Name", value: c ? c.name : "", required: !c },
    { name: "type", label: "Commission", options: [["percent", "percent of net revenue"], ["flat", "flat per sale"]],
      value: c ? c.commission.type : "percent" },
    { name: "value", label: "Value", value: c ? c.commission.value : "", placeholder: "10" },
    { name: "window", label: "Attribution window (days)", type: "number", value: c ? c.attribution_window_days : 30 },
    { name: "fallback_url", label: "Fallback URL for dead links (optional)", type: "url",
      value: c ? c.fallback_url || "" : "", placeholder: "https://shop.example/" },
  ];
}

function campaignBody(v, editing) {
  const body = { name: v.name, commission: v.value === "" ? undefined : { type: v.type, value: v.value },
    attribution_window_days: v.window === "" ? undefined : Number(v.window) };
  if (editing) body.fallback_url = v.fallback_url;
  else if (v.fallback_url) body.fallback_url = v.fallback_url;
  if (!editing && v.domains) body.allowed_domains = v.domains.split(",").map((d) => d.trim()).filter(Boolean);
  return filled(body);
}

async function renderCampaigns(root) {
  const { items } = await api("GET", "/api/v1/campaigns");
  const rows = items.map((c) => {
    const row = el("tr", { "data-id": c.id, class: c.archived ? "archived" : null },
      td(c.name), td(commissionText(c.commission)), td(`${c.attribution_window_days} d`), td(c.fallback_url),
      td(c.archived ? "archived" : "active"), el("td", {}, canWrite() ? [
        el("button", { type: "button", class: "small secondary", "data-action": "edit", text: "Edit",
          on: { click: () => row.after(editRow(6, form(`campaign-edit-${c.id}`, campaignFields(c), "Save",
            async (v) => { await api("PATCH", `/api/v1/campaigns/${c.id}`, campaignBody(v, true)); show(root); }))) } }),
        el("button", { type: "button", class: "small secondary", "data-action": "archive",
          text: c.archived ? "Unarchive" : "Archive",
          on: { click: async () => { await api("PATCH", `/api/v1/campaigns/${c.id}`, { archived: !c.archived }); show(root); } } }),
      ] : []));
    return row;
  });
  root.append(el("h2", { text: "Campaigns" }));
  if (canWrite()) {
    root.append(form("campaign-form", [...campaignFields(null),
      { name: "domains", label: "Allowed destination domains (comma separated, optional)", placeholder: "shop.example" }],
    "Create campaign", async (v, f) => {
      await api("POST", "/api/v1/campaigns", campaignBody(v, false));
      f.reset();
      show(root);
    }));
  }
  root.append(table("campaigns-table", [{ label: "Name" }, { label: "Commission" }, { label: "Window" },
    { label: "Fallback URL" }, { label: "Status" }, { label: "" }], rows));
}

// ------------------------------------------------------------------ influencers

function influencerFields(i) {
  return [
    { name: "name", label: "Name", value: i ? i.name : "", required: !i },
    { name: "handle", label: "Handle", value: i ? i.handle || "" : "", placeholder: "@anna" },
    { name: "platform", label: "Platform", value: i ? i.platform || "" : "", placeholder: "instagram" },
  ];
}

async function renderInfluencers(root) {
  const { items } = await api("GET", "/api/v1/influencers");
  const rows = items.map((i) => {
    const row = el("tr", { "data-id": i.id, class: i.archived ? "archived" : null },
      td(i.name), td(i.handle), td(i.platform), td(i.archived ? "archived" : "active"),
      el("td", {}, canWrite() ? [
        el("button", { type: "button", class: "small secondary", "data-action": "edit", text: "Edit",
          on: { click: () => row.after(editRow(5, form(`influencer-edit-${i.id}`, influencerFields(i), "Save",
            async (v) => { await api("PATCH", `/api/v1/influencers/${i.id}`, v); show(root); }))) } }),
        el("button", { type: "button", class: "small secondary", "data-action": "archive",
          text: i.archived ? "Unarchive" : "Archive",
          on: { click: async () => { await api("PATCH", `/api/v1/influencers/${i.id}`, { archived: !i.archived }); show(root); } } }),
        el("button", { type: "button", class: "small secondary", "data-action": "portal", text: "Portal link",
          on: { click: async () => {
            const link = await api("POST", `/api/v1/influencers/${i.id}/portal-link`);
            row.after(editRow(5, once(`A one-time sign-in link for ${i.name}'s portal (valid until ${link.expires_at}):`, link.url)));
          } } }),
      ] : []));
    return row;
  });
  root.append(el("h2", { text: "Influencers" }));
  if (canWrite()) {
    root.append(form("influencer-form", influencerFields(null), "Add influencer", async (v, f) => {
      await api("POST", "/api/v1/influencers", filled(v));
      f.reset();
      show(root);
    }));
  }
  root.append(table("influencers-table", [{ label: "Name" }, { label: "Handle" }, { label: "Platform" },
    { label: "Status" }, { label: "" }], rows));
}

// ------------------------------------------------------------------ stores

function storeSetup(store) {
  const base = location.origin;
  if (store.platform === "custom") {
    return el("div", {},
      once("Postback secret (signs POST /api/v1/conversions), shown this once:", store.secret),
      once("Postback token (for GET /postback), shown this once:", store.postback_token),
      el("p", { class: "hint", text: "Sign a postback (bash, openssl):" }),
      el("pre", { text:
        `BODY='{"order_id":"A-1001","amount":"49.90","currency":"${session.brand.currency}","click_id":"<click id>"}'\n` +
        `T=$(date +%s)\nSIG=$(printf '%s.%s' "$T" "$BODY" | openssl dgst -sha256 -hmac '${store.secret}' | sed 's/^.* //')\n` +
        `curl -X POST ${base}/api/v1/conversions -H 'Content-Type: application/json' \\\n` +
        `  -H 'X-Store-Id: ${store.id}' -H "X-Signature: t=$T,v1=$SIG" -d "$BODY"` }),
      el("p", { class: "hint", text: "Or a URL the shop platform fires (GET):" }),
      el("pre", { text: `${base}/postback?store_id=${store.id}&token=${store.postback_token}&order_id={order_id}` +
        `&amount={total}&currency={currency}&click_id={click_id}&coupon_code={coupon}&status=approved` }));
  }
  const steps = {
    shopify: "Shopify admin → Settings → Notifications → Webhooks → Create webhook, once per event (Order creation, " +
      "Order payment, Order update, Order cancellation, Refund create), format JSON, URL:",
    woocommerce: "WooCommerce → Settings → Advanced → Webhooks → Add webhook (Order created, Order updated), " +
      "the same secret, delivery URL:",
    stripe: "Stripe Dashboard → Developers → Webhooks → the endpoint → Update details, URL:",
  };
  return el("div", {}, el("p", { text: steps[store.platform] }), el("code", { class: "secret", text: store.webhook_url }),
    " ", copyButton(store.webhook_url),
    el("p", { class: "hint", text: "Add the click-id carrier to every page of the store (before </head>):" }),
    el("pre", { text: `<script src="${base}/t.js" data-param="click_id" async></script>` }),
    el("p", { class: "hint", text: "docs/STORES.md has each platform's steps in full." }));
}

async function renderStores(root) {
  const { items } = await api("GET", "/api/v1/stores");
  const created = el("div", { id: "store-created" });
  root.append(el("h2", { text: "Stores" }));
  if (canWrite()) {
    root.append(form("store-form", [
      { name: "name", label: "Name", required: true },
      { name: "platform", label: "Platform", options: [["custom", "custom (postbacks)"], ["shopify", "Shopify"],
        ["woocommerce", "WooCommerce"], ["stripe", "Stripe"]] },
      { name: "webhook_secret", label: "Platform webhook signing secret (Shopify, WooCommerce, Stripe)", type: "password" },
      { name: "allowed_ips", label: "Allowed IPs for GET /postback (comma separated, optional)" },
    ], "Add store", async (v, f) => {
      const body = filled({ name: v.name, platform: v.platform, webhook_secret: v.webhook_secret });
      if (v.allowed_ips) body.allowed_ips = v.allowed_ips.split(",").map((x) => x.trim()).filter(Boolean);
      const store = await api("POST", "/api/v1/stores", body);
      f.reset();
      await show(root);
      root.querySelector("#store-created").replaceChildren(el("h2", { text: `Set up ${store.name}` }), storeSetup(store));
    }));
  }
  root.append(created, table("stores-table", [{ label: "Name" }, { label: "Platform" }, { label: "Id" },
    { label: "Webhook URL" }], items.map((s) => el("tr", { "data-id": s.id },
    td(s.name), td(s.platform), td(s.id), el("td", {}, s.webhook_url ? [s.webhook_url, " ", copyButton(s.webhook_url)] : "–")))));
}

// ------------------------------------------------------------------ fees

async function renderFees(root) {
  const [{ items }, { campaigns, influencers }] = await Promise.all([api("GET", "/api/v1/fees"), lists()]);
  root.append(el("h2", { text: "Fees" }), el("p", { class: "hint",
    text: "Flat amounts paid to influencers; reports add them to cost. Edits and deletions are in the audit log." }));
  if (canWrite()) {
    root.append(form("fee-form", [
      { name: "campaign_id", label: "Campaign", options: options(campaigns.filter((c) => !c.archived)) },
      { name: "influencer_id", label: "Influencer", options: options(influencers.filter((i) => !i.archived)) },
      { name: "amount", label: "Amount", placeholder: "250.00", required: true },
      { name: "currency", label: "Currency", value: session.brand.currency },
      { name: "date", label: "Date", type: "date" },
      { name: "note", label: "Note" },
    ], "Record fee", async (v, f) => {
      await api("POST", "/api/v1/fees", filled(v));
      f.reset();
      show(root);
    }));
  }
  const rows = items.map((fee) => {
    const row = el("tr", { "data-id": fee.id }, td(fee.date), td(nameOf(influencers, fee.influencer_id)),
      td(nameOf(campaigns, fee.campaign_id)), td(`${fee.amount} ${fee.currency}`, "num"),
      td(fee.original_currency !== fee.currency ? `${fee.original_amount} ${fee.original_currency}` : ""), td(fee.note),
      el("td", {}, canWrite() ? [
        el("button", { type: "button", class: "small secondary", "data-action": "edit", text: "Edit",
          on: { click: () => row.after(editRow(7, form(`fee-edit-${fee.id}`, [
            { name: "amount", label: "Amount", value: fee.original_amount },
            { name: "date", label: "Date", type: "date", value: fee.date },
            { name: "note", label: "Note", value: fee.note || "" },
          ], "Save", async (v) => {
            const body = {};
            if (v.amount !== fee.original_amount) body.amount = v.amount;
            if (v.date !== fee.date) body.date = v.date;
            if (v.note !== (fee.note || "")) body.note = v.note;
            await api("PATCH", `/api/v1/fees/${fee.id}`, body);
            show(root);
          }))) } }),
        el("button", { type: "button", class: "small danger", "data-action": "delete", text: "Delete",
          on: { click: async () => {
            if (!window.confirm(`Delete the fee of ${fee.amount} ${fee.currency}?`)) return;
            await api("DELETE", `/api/v1/fees/${fee.id}`);
            show(root);
          } } }),
      ] : []));
    return row;
  });
  root.append(table("fees-table", [{ label: "Date" }, { label: "Influencer" }, { label: "Campaign" },
    { label: "Amount", num: true }, { label: "Paid as" }, { label: "Note" }, { label: "" }], rows));
}

// ------------------------------------------------------------------ FX rates

async function renderRates(root) {
  const { items } = await api("GET", "/api/v1/fx-rates");
  root.append(el("h2", { text: "Exchange rates" }), el("p", { class: "hint",
    text: `Conversions and fees in another currency are converted into ${session.brand.currency} at these rates.` }));
  if (canWrite()) {
    root.append(form("rate-form", [
      { name: "currency", label: "Currency", placeholder: "EUR", required: true },
      { name: "rate", label: `1 unit in ${session.brand.currency}`, placeholder: "1.08", required: true },
    ], "Set rate", async (v, f) => {
      await api("PUT", `/api/v1/fx-rates/${encodeURIComponent(v.currency.toUpperCase())}`, { rate: v.rate });
      f.reset();
      show(root);
    }));
  }
  root.append(table("rates-table", [{ label: "Currency" }, { label: "Rate", num: true }, { label: "Updated" }],
    items.map((r) => el("tr", { "data-currency": r.currency }, td(r.currency), td(`${r.rate} ${r.base}`, "num"),
      td(r.updated_at)))));
}

// Re-draw the current view (after a change).
async function show(root) {
  const view = root.dataset.view;
  root.replaceChildren();
  await VIEWS[view].render(root);
}

const VIEWS = {
  campaigns: { title: "Campaigns", render: renderCampaigns },
  influencers: { title: "Influencers", render: renderInfluencers },
  stores: { title: "Stores", render: renderStores },
  fees: { title: "Fees", render: renderFees },
  rates: { title: "FX rates", render: renderRates },
};
for (const [name, view] of Object.entries(VIEWS)) registerView(name, view);
