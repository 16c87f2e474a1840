// tracker brand app, shared parts: the session, API calls, small DOM helpers, the view registry.
// No key is kept here: requests ride on the HttpOnly session cookie; changes carry the CSRF token.

export const session = { brand: null, scope: "", csrf: "", keyId: "" };
const views = new Map();

// A view: { title, render(root) }. Other modules add theirs (payouts, review) with registerView;
// a nav slot of the same name in app.html is shown when it is registered.
export function registerView(name, view) {
  views.set(name, view);
  const slot = document.querySelector(`nav a[data-slot="${name}"]`);
  if (slot) slot.hidden = false;
}
export const getView = (name) => views.get(name);

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export async function api(method, path, body) {
  const headers = {};
  const init = { method, headers, credentials: "same-origin" };
  if (method !== "GET" && method !== "HEAD") headers["X-CSRF-Token"] = session.csrf;
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(path, init);
  if (resp.status === 204) return null;
  let data = null;
  try {
    data = await resp.json();
  } catch (e) { /* not JSON */ }
  if (!resp.ok) {
    const err = data && data.error ? data.error : { code: "http_" + resp.status, message: `The server answered ${resp.status}.` };
    if (resp.status === 401 && err.code === "invalid_session") window.dispatchEvent(new CustomEvent("signed-out"));
    throw new ApiError(resp.status, err.code, err.message);
  }
  return data;
}

// ------------------------------------------------------------------ DOM helpers

export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "text") node.textContent = v;
    else if (k === "on") for (const [ev, fn] of Object.entries(v)) node.addEventListener(ev, fn);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c);
  return node;
}

// A form of fields [{name, label, type?, options?, value?, required?, placeholder?}] whose submit
// calls onSubmit(values); an API error's message is shown in the form, the form kept as typed.
export function form(id, fields, submitLabel, onSubmit, cls = "inline") {
  const error = el("p", { class: "form-error", role: "alert" });
  const f = el("form", { id, class: cls, autocomplete: "off" });
  for (const field of fields) {
    const inputId = `${id}-${field.name}`;
    let input;
    if (field.options) {
      input = el("select", { id: inputId, name: field.name },
        field.options.map(([value, text]) => el("option", { value, text, selected: value === field.value })));
    } else if (field.type === "textarea") {
      input = el("textarea", { id: inputId, name: field.name, rows: 4, placeholder: field.placeholder });
      input.value = field.value || "";
    } else {
      input = el("input", { id: inputId, name: field.name, type: field.type || "text", placeholder: field.placeholder,
        required: field.required, step: field.step });
      if (field.type === "checkbox") input.checked = Boolean(field.value);
      else if (field.value !== undefined && field.value !== null) input.value = field.value;
    }
    f.append(el("div", {}, el("label", { for: inputId, text: field.label }), input));
  }
  f.append(el("div", {}, el("button", { type: "submit", text: submitLabel })), error);
  f.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.textContent = "";
    const values = {};
    for (const field of fields) {
      const input = f.elements[field.name];
      values[field.name] = field.type === "checkbox" ? input.checked : input.value.trim();
    }
    const button = f.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      await onSubmit(values, f);
    } catch (e) {
      error.textContent = e.message;
    } finally {
      button.disabled = false;
    }
  });
  return f;
}

export function table(id, headers, rows) {
  const head = el("tr", {}, headers.map((h) => el("th", { class: h.num ? "num" : null, text: h.label })));
  return el("div", { class: "table-wrap" }, el("table", { id }, el("thead", {}, head), el("tbody", {}, rows)));
}

export const td = (text, cls) => el("td", { class: cls, text: text === null || text === undefined ? "–" : String(text) });

export function copyButton(text, label = "Copy") {
  const b = el("button", { type: "button", class: "small secondary", "data-copy": "", text: label });
  b.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(text);
      b.textContent = "Copied!";
    } catch (e) {
      b.textContent = "Select and copy";
    }
  });
  return b;
}

// Something shown once (a secret, a token): with a copy button.
export function once(title, value) {
  return el("div", { class: "once" }, el("p", { text: title }), el("code", { class: "secret", text: value }), " ",
    copyButton(value));
}

export const options = (items, label = (x) => x.name) => items.map((x) => [x.id, label(x)]);
export const nameOf = (items, id) => (items.find((x) => x.id === id) || { name: id }).name;
export const canWrite = () => session.scope === "write";

// The brand's campaigns and influencers, read once per view.
export async function lists() {
  const [c, i] = await Promise.all([api("GET", "/api/v1/campaigns"), api("GET", "/api/v1/influencers")]);
  return { campaigns: c.items, influencers: i.items };
}

// Only the fields the user filled in (an empty input means "not sent").
export function filled(values) {
  return Object.fromEntries(Object.entries(values).filter(([, v]) => v !== "" && v !== null && v !== undefined));
}
