// tracker brand app: API keys (create, rotate, revoke). A new or rotated key is shown once.
import { api, canWrite, el, form, once, registerView, session, table, td } from "./app_core.js";

async function renderKeys(root) {
  const [{ items }, { items: influencers }] = await Promise.all([api("GET", "/api/v1/keys"),
    api("GET", "/api/v1/influencers")]);
  const shown = el("div", { id: "key-shown" });
  const redraw = async (fresh) => {
    root.replaceChildren();
    await renderKeys(root);
    if (fresh) root.querySelector("#key-shown").replaceChildren(once(`The key "${fresh.name}", shown this once:`, fresh.key));
  };
  root.append(el("h2", { text: "API keys" }), el("p", { class: "hint", text:
    "write: everything; read: reports and lists only; influencer: that influencer's own data (/api/v1/me). " +
    "Rotating or revoking the key you signed in with ends this session." }));
  if (canWrite()) {
    root.append(form("key-form", [
      { name: "name", label: "Name", required: true, placeholder: "BI dashboards" },
      { name: "scope", label: "Scope", options: [["read", "read"], ["write", "write"], ["influencer", "influencer"]] },
      { name: "influencer_id", label: "Influencer (influencer keys)", options: [["", "–"],
        ...influencers.map((i) => [i.id, i.name])] },
    ], "Create key", async (v) => {
      const body = { name: v.name, scope: v.scope };
      if (v.influencer_id) body.influencer_id = v.influencer_id;
      await redraw(await api("POST", "/api/v1/keys", body));
    }));
  }
  const rows = items.map((k) => el("tr", { "data-id": k.id }, td(k.name), td(k.scope), td(k.prefix + "…"),
    td(k.last_used_at), td(k.id === session.keyId ? "this session" : ""),
    el("td", {}, canWrite() ? [
      el("button", { type: "button", class: "small secondary", "data-action": "rotate", text: "Rotate",
        on: { click: async () => redraw(await api("POST", `/api/v1/keys/${k.id}/rotate`)) } }),
      el("button", { type: "button", class: "small danger", "data-action": "revoke", text: "Revoke",
        on: { click: async (ev) => {
          if (!window.confirm(`Revoke the key "${k.name}"? It stops working within seconds.`)) return;
          try {
            await api("DELETE", `/api/v1/keys/${k.id}`);
            await redraw(null);
          } catch (e) {
            ev.target.closest("td").append(el("p", { class: "form-error", role: "alert", text: e.message }));
          }
        } } }),
    ] : [])));
  root.append(shown, table("keys-table", [{ label: "Name" }, { label: "Scope" }, { label: "Starts with" },
    { label: "Last used" }, { label: "" }, { label: "" }], rows));
}

registerView("keys", { title: "API keys", render: renderKeys });
