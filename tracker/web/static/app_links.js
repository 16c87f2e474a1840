// tracker brand app: links (create per influencer, copy, QR, disable, change destination, bulk from a CSV).
import { api, canWrite, copyButton, el, filled, form, lists, nameOf, options, registerView, table, td } from "./app_core.js";

// "name,handle,platform" lines (a header line naming "name" is skipped); quotes around a field are dropped.
export function parseCsv(text) {
  const rows = [];
  for (const line of text.split(/\r?\n/)) {
    if (!line.trim()) continue;
    const cells = line.split(",").map((c) => c.trim().replace(/^"(.*)"$/, "$1").trim());
    if (rows.length === 0 && cells[0].toLowerCase() === "name") continue;
    rows.push({ name: cells[0], handle: cells[1] || "", platform: cells[2] || "" });
  }
  return rows;
}

// A .csv file picked from disk fills the CSV box (read here, never uploaded as a file).
function csvFile(root) {
  const input = el("input", { id: "bulk-file", type: "file", accept: ".csv,text/csv,text/plain" });
  input.addEventListener("change", async () => {
    const file = input.files[0];
    if (file) root.querySelector("#bulk-form [name=csv]").value = await file.text();
  });
  return el("div", {}, el("label", { for: "bulk-file", text: "…or pick a CSV file" }), input);
}

async function bulkCreate(values, influencers, report) {
  const people = parseCsv(values.csv);
  if (!people.length) throw new Error("Paste at least one line: name,handle,platform.");
  const results = [];
  for (const person of people) {
    try {
      let inf = influencers.find((i) => i.name === person.name && !i.archived);
      if (!inf) {
        inf = await api("POST", "/api/v1/influencers", filled(person));
        influencers.push(inf);
      }
      const link = await api("POST", "/api/v1/links", { campaign_id: values.campaign_id, influencer_id: inf.id,
        destination_url: values.destination_url });
      results.push(el("tr", { "data-result": "ok" }, td(person.name), td(link.short_url), td("created")));
    } catch (e) {
      results.push(el("tr", { "data-result": "error" }, td(person.name), td(""), td(e.message)));
    }
  }
  report.replaceChildren(table("bulk-results", [{ label: "Influencer" }, { label: "Short link" }, { label: "Result" }],
    results));
}

function linkRow(link, campaigns, influencers, refresh) {
  const row = el("tr", { "data-code": link.code, class: link.disabled ? "archived" : null });
  const actions = el("td", {}, copyButton(link.short_url),
    el("button", { type: "button", class: "small secondary", "data-action": "qr", text: "QR",
      on: { click: () => row.after(el("tr", {}, el("td", { colspan: 6 },
        el("img", { class: "qr", alt: `QR code of ${link.short_url}`, src: `/api/v1/links/${encodeURIComponent(link.code)}/qr?size=320` }),
        el("a", { href: `/api/v1/links/${encodeURIComponent(link.code)}/qr?format=png&size=1024`, download: `${link.code}.png`,
          text: "Download PNG" })))) } }));
  if (canWrite()) {
    actions.append(
      el("button", { type: "button", class: "small secondary", "data-action": "toggle", text: link.disabled ? "Enable" : "Disable",
        on: { click: async () => { await api("PATCH", `/api/v1/links/${link.code}`, { disabled: !link.disabled }); refresh(); } } }),
      el("button", { type: "button", class: "small secondary", "data-action": "destination", text: "Change destination",
        on: { click: () => row.after(el("tr", {}, el("td", { colspan: 6 }, form(`link-edit-${link.code}`, [
          { name: "destination_url", label: "New destination", type: "url", value: link.destination_url },
        ], "Save", async (v) => { await api("PATCH", `/api/v1/links/${link.code}`, v); refresh(); })))) } }));
  }
  row.append(el("td", {}, el("code", { text: link.code }), el("div", { class: "hint", text: link.short_url })),
    td(nameOf(influencers, link.influencer_id)), td(nameOf(campaigns, link.campaign_id)),
    td(link.destination_url), td(link.disabled ? "disabled" : link.coupon_code ? `coupon ${link.coupon_code}` : "live"), actions);
  return row;
}

async function renderLinks(root) {
  const [{ campaigns, influencers }, { items }] = await Promise.all([lists(), api("GET", "/api/v1/links")]);
  const refresh = async () => { root.replaceChildren(); await renderLinks(root); };
  const liveCampaigns = options(campaigns.filter((c) => !c.archived));
  root.append(el("h2", { text: "Links" }));
  if (canWrite()) {
    if (!liveCampaigns.length || !influencers.length) {
      root.append(el("p", { class: "hint", text: "Create a campaign and an influencer first." }));
    }
    root.append(form("link-form", [
      { name: "campaign_id", label: "Campaign", options: liveCampaigns },
      { name: "influencer_id", label: "Influencer", options: options(influencers.filter((i) => !i.archived)) },
      { name: "destination_url", label: "Destination", type: "url", placeholder: "https://shop.example/product", required: true },
      { name: "coupon_code", label: "Coupon code (optional)" },
      { name: "code", label: "Custom code (optional; codes are case-sensitive)" },
    ], "Create link", async (v, f) => {
      await api("POST", "/api/v1/links", filled(v));
      f.reset();
      refresh();
    }));
    const report = el("div", { id: "bulk-report" });
    root.append(el("details", { id: "bulk" }, el("summary", { text: "Bulk: one link per influencer from a CSV" }),
      el("p", { class: "hint", text: "One line per influencer: name,handle,platform. Influencers that do not exist yet are created." }),
      form("bulk-form", [
        { name: "campaign_id", label: "Campaign", options: liveCampaigns },
        { name: "destination_url", label: "Destination", type: "url", required: true },
        { name: "csv", label: "CSV", type: "textarea", placeholder: "name,handle,platform\nAnna,@anna,instagram" },
      ], "Create links", (v) => bulkCreate(v, influencers, report), "stacked"), csvFile(root), report));
  }
  root.append(table("links-table", [{ label: "Code" }, { label: "Influencer" }, { label: "Campaign" },
    { label: "Destination" }, { label: "Status" }, { label: "" }], items.map((l) => linkRow(l, campaigns, influencers, refresh))));
}

registerView("links", { title: "Links", render: renderLinks });
