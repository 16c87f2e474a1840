// tracker brand app: sign-in, sign-out and the hash router. Views live in app_*.js modules.
import { ApiError, api, el, getView, session } from "./app_core.js";
import "./app_manage.js";
import "./app_links.js";
import "./app_reports.js";
import "./app_keys.js";
import "./app_payouts.js";
import "./app_quality.js";

const $ = (sel) => document.querySelector(sel);

function signedIn(data) {
  Object.assign(session, { brand: data.brand, scope: data.scope, csrf: data.csrf_token, keyId: data.key_id });
  $("#brand-name").textContent = data.brand.name;
  $("#scope").textContent = data.scope === "write" ? "can edit" : "read only";
  $("#signin-screen").hidden = true;
  $("#app-screen").hidden = false;
  route();
}

function signedOut(message) {
  Object.assign(session, { brand: null, scope: "", csrf: "", keyId: "" });
  $("#app-screen").hidden = true;
  $("#signin-screen").hidden = false;
  $("#signin-form .form-error").textContent = message || "";
  document.body.dataset.state = "signed-out";
  $("#signin-key").focus();
}

async function route() {
  const name = (location.hash || "#campaigns").slice(1);
  const view = getView(name) || getView("campaigns");
  const current = getView(name) ? name : "campaigns";
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.view === current);
  const root = el("section", { id: `view-${current}`, "data-view": current });
  $("#view").replaceChildren(root);
  document.body.dataset.state = "loading";
  try {
    await view.render(root);
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return;
    root.append(el("p", { class: "form-error", role: "alert", text: e.message }));
  }
  document.body.dataset.state = "ready";
}

async function signIn(key) {
  const resp = await fetch("/app/signin", { method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json" }, body: JSON.stringify({ key }) });
  const data = await resp.json();
  if (!resp.ok) throw new Error(data.error.message);
  signedIn(data);
}

$("#signin-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const input = $("#signin-key");
  try {
    await signIn(input.value.trim());
    input.value = "";
  } catch (e) {
    $("#signin-form .form-error").textContent = e.message;
  }
});

// A new brand with the admin token (kept only in this form), then signed in with its key.
$("#brand-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = ev.target;
  const error = f.querySelector(".form-error");
  error.textContent = "";
  try {
    const resp = await fetch("/api/v1/brands", { method: "POST", headers: { "Content-Type": "application/json",
      Authorization: "Bearer " + f.elements.admin.value.trim() },
    body: JSON.stringify({ name: f.elements.name.value.trim(), currency: f.elements.currency.value.trim().toUpperCase() }) });
    const data = await resp.json();
    if (!resp.ok) throw new Error(data.error.message);
    f.reset();
    $("#brand-key-once code").textContent = data.api_key;
    $("#brand-key-once").hidden = false;
    $("#signin-key").value = data.api_key;
  } catch (e) {
    error.textContent = e.message;
  }
});

$("#signout").addEventListener("click", async () => {
  try {
    await api("POST", "/app/signout");
  } finally {
    signedOut("Signed out.");
  }
});

window.addEventListener("signed-out", () => signedOut("Your session ended; sign in again."));
window.addEventListener("hashchange", () => { if (session.brand) route(); });

(async () => {
  const resp = await fetch("/app/session", { credentials: "same-origin" });
  if (resp.ok) signedIn(await resp.json());
  else signedOut("");
})();
