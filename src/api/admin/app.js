// Herald admin page: a client of Herald's public API, nothing more.
//
// Rules this file keeps:
// - Every value that came from a user, a receiver or the API is put in the page as text
//   (`h()` turns strings into text nodes; attributes are set with setAttribute); nothing
//   is ever parsed as markup or code, no inline handler, no link built from data.
// - The token lives in sessionStorage (gone with the tab), is sent only in the
//   Authorization header, never in a URL.
// - The numbers come from the account-scoped /api/v1/stats, never from /metrics.
"use strict";

const TOKEN = "herald.token";
const ROLE = "herald.role";
const ACCOUNT = "herald.account";
const store = window.sessionStorage;

// ---------------------------------------------------------------- DOM helpers

function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "value") el.value = value;
    else if (key === "checked") el.checked = true;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

// Replaces an element's children, skipping absent ones.
function put(el, ...children) {
  el.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
}

// `kind` (a state or result name from the API) picks the colour; the text is for people.
function badge(kind, text) {
  return h("span", { class: "badge " + String(kind).replace(/[^a-z_]/g, "") }, text || String(kind).replace(/_/g, " "));
}

function when(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return isNaN(d) ? String(iso) : d.toLocaleString();
}

let noticeTimer = null;
function notice(text, bad) {
  const el = document.getElementById("notice");
  el.textContent = text;
  el.className = bad ? "bad" : "";
  el.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => { el.hidden = true; }, 6000);
}

// ---------------------------------------------------------------- the API

class ApiError extends Error {
  constructor(status, error) {
    super(error && error.message ? error.message : "HTTP " + status);
    this.status = status;
    this.code = error && error.code;
    this.field = error && error.field;
  }
}

async function api(method, path, body, options) {
  const headers = { Authorization: "Bearer " + store.getItem(TOKEN) };
  const account = store.getItem(ACCOUNT);
  if (account && !(options && options.unscoped)) headers["Herald-Account"] = account;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, {
    method,
    headers,
    // `options.raw`: the body is already JSON text (a filter keeps its numbers as typed).
    body: body === undefined ? undefined : options && options.raw ? body : JSON.stringify(body),
    cache: "no-store",
    credentials: "omit",
  });
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
  if (res.status === 401) {
    signOut("The token was refused; sign in again.");
    throw new ApiError(401, data && data.error);
  }
  if (!res.ok) throw new ApiError(res.status, data && data.error ? data.error : { message: text });
  return data;
}

function describe(err) {
  if (err instanceof ApiError) return (err.field ? err.field + ": " : "") + err.message + " (" + err.status + ")";
  return String(err && err.message ? err.message : err);
}

// ---------------------------------------------------------------- sign-in

function signOut(message) {
  store.removeItem(TOKEN);
  store.removeItem(ROLE);
  store.removeItem(ACCOUNT);
  render();
  if (message) notice(message, true);
}

async function signIn(token) {
  // The admin token may list accounts; an API key is refused with 403.
  const res = await fetch("/api/v1/accounts?limit=500", {
    headers: { Authorization: "Bearer " + token }, cache: "no-store", credentials: "omit",
  });
  if (res.status === 200) {
    const page = await res.json();
    store.setItem(TOKEN, token);
    store.setItem(ROLE, "admin");
    if (page.data.length > 0) store.setItem(ACCOUNT, page.data[0].id);
    return;
  }
  if (res.status === 403) {
    store.setItem(TOKEN, token);
    store.setItem(ROLE, "key");
    store.removeItem(ACCOUNT);
    return;
  }
  throw new Error(res.status === 401 ? "This token is not an API key or the admin token." : "Herald answered " + res.status + ".");
}

function signInView(main) {
  const input = h("input", { type: "password", id: "token", autocomplete: "off", "data-testid": "token", required: true });
  const error = h("p", { class: "error", "data-testid": "signin-error" });
  const form = h("form", { class: "card signin", "data-testid": "signin" },
    h("h1", null, "Sign in to Herald"),
    h("label", { for: "token" }, "API key or admin token"),
    input,
    h("p", { class: "muted" }, "Kept in this tab only (sessionStorage); sent as a bearer token."),
    error,
    h("button", { type: "submit", "data-testid": "signin-submit" }, "Sign in"));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.textContent = "";
    try {
      await signIn(input.value.trim());
      render();
    } catch (e) {
      error.textContent = describe(e);
    }
  });
  main.replaceChildren(form);
  input.focus();
}

async function header() {
  const signedIn = !!store.getItem(TOKEN);
  document.getElementById("nav").hidden = !signedIn;
  document.getElementById("sign-out").hidden = !signedIn;
  const who = document.getElementById("who");
  who.replaceChildren();
  for (const a of document.querySelectorAll("#nav a")) {
    a.classList.toggle("current", a.getAttribute("href") === currentPath());
  }
  if (!signedIn) return;
  if (store.getItem(ROLE) !== "admin") {
    who.append("API key");
    return;
  }
  const page = await api("GET", "/api/v1/accounts?limit=500", undefined, { unscoped: true });
  const select = h("select", { "data-testid": "account", "aria-label": "Account" },
    page.data.map((a) => h("option", { value: a.id }, a.name + " · " + a.id)));
  select.value = store.getItem(ACCOUNT) || "";
  select.addEventListener("change", () => { store.setItem(ACCOUNT, select.value); render(); });
  who.append("admin token, acting for ", select);
}

// ---------------------------------------------------------------- dashboard

function tile(label, value, testid) {
  return h("div", { class: "tile", "data-testid": testid },
    h("div", { class: "value" }, value), h("div", { class: "label" }, label));
}

// Over the last five minutes, the current unfinished one counted for the time it has run.
function perSecond(minutes, field) {
  const recent = minutes.slice(-5);
  if (recent.length === 0) return "0.00/s";
  const started = Date.parse(recent[recent.length - 1].minute);
  const current = isNaN(started) ? 60 : Math.min(60, Math.max(1, (Date.now() - started) / 1000));
  const seconds = (recent.length - 1) * 60 + current;
  return (recent.reduce((sum, m) => sum + m[field], 0) / seconds).toFixed(2) + "/s";
}

async function dashboard(main) {
  const s = await api("GET", "/api/v1/stats");
  const minutes = s.per_minute || [];
  const ratio = s.success_ratio === null || s.success_ratio === undefined ? "—" : (100 * s.success_ratio).toFixed(1) + "%";
  const peak = Math.max(1, ...minutes.map((m) => m.attempts), ...minutes.map((m) => m.events));
  const chart = h("div", { class: "chart", "data-testid": "chart" },
    minutes.map((m) => {
      const bar = h("div", { class: "bar" + (m.attempts > m.succeeded ? " failed" : ""), title: when(m.minute) + ": " + m.events + " events, " + m.attempts + " attempts, " + m.succeeded + " succeeded" });
      bar.style.height = (100 * Math.max(m.events, m.attempts) / peak).toFixed(1) + "%";
      return bar;
    }));
  put(main,
    h("h1", null, "Dashboard"),
    h("div", { class: "tiles" },
      tile("ingest rate (5 min)", perSecond(minutes, "events"), "ingest-rate"),
      tile("delivered (5 min)", perSecond(minutes, "succeeded"), "delivered-rate"),
      tile("delivery attempts (5 min)", perSecond(minutes, "attempts"), "delivery-rate"),
      tile("success ratio (" + s.window_minutes + " min)", ratio, "success-ratio"),
      tile("pending deliveries", s.pending, "pending"),
      tile("dead letters", s.dead_letters, "dead-letters"),
      tile("open circuit breakers", s.open_breakers, "open-breakers"),
      tile("events (" + s.window_minutes + " min)", s.events, "events"),
      tile("webhooks", s.webhooks, "webhooks")),
    h("h2", null, "Activity by minute"),
    h("div", { class: "card" }, chart,
      h("p", { class: "muted" }, "Bar height: events or attempts in the minute, whichever is higher; red: some attempts failed.")));
}

// ---------------------------------------------------------------- webhooks

function headersText(headers) {
  return Object.entries(headers || {}).map(([k, v]) => k + ": " + v).join("\n");
}

function parseHeaders(text) {
  const out = {};
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    const at = line.indexOf(":");
    if (at < 1) throw new Error("Each header line is `Name: value`.");
    out[line.slice(0, at).trim()] = line.slice(at + 1).trim();
  }
  return out;
}

function webhookForm(existing, done) {
  const w = existing || { name: "", description: "", url: "", events: ["*"], headers: {}, max_retries: "", timeout: "", ordering: "none", max_in_flight: "", rate_limit: null, filter: null, body_format: "original" };
  const field = (label, input) => h("div", null, h("label", { for: input.id }, label), input);
  const name = h("input", { id: "wh-name", value: w.name, "data-testid": "wh-name", required: true });
  const description = h("input", { id: "wh-description", value: w.description });
  const url = h("input", { id: "wh-url", value: w.url, type: "url", "data-testid": "wh-url", required: true, size: 50 });
  const events = h("input", { id: "wh-events", value: (w.events || []).join(", "), "data-testid": "wh-events" });
  const initialHeaders = headersText(w.headers);
  const headers = h("textarea", { id: "wh-headers", "data-testid": "wh-headers", placeholder: "X-Team: sales" });
  headers.value = initialHeaders;
  const retries = h("input", { id: "wh-retries", type: "number", min: 0, value: w.max_retries, "data-testid": "wh-retries" });
  const timeout = h("input", { id: "wh-timeout", type: "number", min: 1, value: w.timeout });
  const inFlight = h("input", { id: "wh-inflight", type: "number", min: 1, value: w.max_in_flight });
  const rate = h("input", { id: "wh-rate", type: "number", min: 1, value: w.rate_limit === null ? "" : w.rate_limit, placeholder: "none" });
  const choice = (id, current, options) => {
    const select = h("select", { id, "data-testid": id });
    for (const [value, label] of options) select.append(h("option", { value, selected: value === current }, label));
    return select;
  };
  const ordering = choice("wh-ordering", w.ordering || "none", [
    ["none", "Any order, up to max in flight at once"],
    ["strict", "Strict: one at a time, in event order"],
  ]);
  const bodyFormat = choice("wh-body-format", w.body_format || "original", [
    ["original", "Original: data exactly as sent (verify the raw body)"],
    ["javascript", "JavaScript: as JSON.stringify(JSON.parse(body)) writes it"],
  ]);
  const initialFilter = w.filter === null || w.filter === undefined ? "" : JSON.stringify(w.filter, null, 2);
  const filter = h("textarea", { id: "wh-filter", "data-testid": "wh-filter", placeholder: '{"data.qualityScore": {"$gte": 80}}' });
  filter.value = initialFilter;
  const error = h("p", { class: "error", "data-testid": "wh-error" });
  const form = h("form", { class: "card", "data-testid": "webhook-form" },
    h("h2", null, existing ? "Edit webhook" : "New webhook"),
    h("div", { class: "row" }, field("Name", name), field("URL (https)", url)),
    h("div", { class: "row" }, field("Events (names, family.* or *)", events), field("Description", description)),
    h("div", { class: "row" }, field("Max retries", retries), field("Timeout (s)", timeout), field("Max in flight", inFlight), field("Rate limit (/s)", rate)),
    h("div", { class: "row" }, field("Order", ordering), field("Body format", bodyFormat)),
    field("Content filter (JSON; empty for none): only events it passes are delivered", filter),
    field("Custom headers (one `Name: value` per line; credential values show as ****)", headers),
    error,
    h("button", { type: "submit", "data-testid": "wh-save" }, existing ? "Save" : "Create"), " ",
    h("button", { type: "button", class: "quiet", onclick: () => done(null) }, "Cancel"));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.textContent = "";
    try {
      const body = {
        name: name.value,
        description: description.value,
        url: url.value.trim(),
        events: events.value.split(/[\s,]+/).filter(Boolean),
        ordering: ordering.value,
        body_format: bodyFormat.value,
      };
      if (retries.value !== "") body.max_retries = Number(retries.value);
      if (timeout.value !== "") body.timeout = Number(timeout.value);
      if (inFlight.value !== "") body.max_in_flight = Number(inFlight.value);
      if (rate.value !== "" || existing) body.rate_limit = rate.value === "" ? null : Number(rate.value);
      // Masked values (****) are sent back only if the user changed the headers.
      if (!existing || headers.value !== initialHeaders) body.headers = parseHeaders(headers.value);
      // The filter goes as typed (JSON.parse would round its numbers), only if it changed;
      // the server says what is wrong with it.
      let text = JSON.stringify(body);
      if (filter.value !== initialFilter) {
        const raw = filter.value.trim() || "null";
        try { JSON.parse(raw); } catch (e) { throw new Error("filter: not JSON (" + e.message + ")"); }
        text = text.slice(0, -1) + ',"filter":' + raw + "}";
      }
      const saved = existing
        ? await api("PATCH", "/api/v1/webhooks/" + encodeURIComponent(existing.id), text, { raw: true })
        : await api("POST", "/api/v1/webhooks", text, { raw: true });
      done(saved);
    } catch (e) {
      error.textContent = describe(e);
    }
  });
  return form;
}

function secretCard(w) {
  const card = h("div", { class: "card secret", "data-testid": "secret" },
    h("strong", null, "Signing secret of " + w.name + " (shown once, copy it now): "),
    h("code", { class: "mono", "data-testid": "secret-value" }, w.secret), " ",
    h("button", { type: "button", class: "quiet", onclick: () => card.remove() }, "Dismiss"));
  return card;
}

function testCard(w, outcome) {
  return h("div", { class: "card", "data-testid": "test-result" },
    h("h2", null, "Test send to " + w.name),
    h("p", null, badge(outcome.success ? "success" : "failed"), " ",
      outcome.status_code === null ? "no answer" : "HTTP " + outcome.status_code,
      " · " + outcome.latency_ms.toFixed(1) + " ms"),
    outcome.error ? h("p", { class: "error" }, outcome.error) : null,
    outcome.filter_passed === null || outcome.filter_passed === undefined ? null
      : h("p", { "data-testid": "test-filter" }, outcome.filter_passed
        ? "The sample passes the content filter."
        : "The sample does not pass the content filter: a live event like it would not be delivered."),
    h("label", null, "Response body"),
    h("pre", { "data-testid": "test-body" }, outcome.response_body));
}

async function webhooks(main) {
  const page = await api("GET", "/api/v1/webhooks?limit=500");
  const panel = h("div", { id: "panel" });
  const show = (node) => { panel.replaceChildren(node); panel.scrollIntoView({ block: "nearest" }); };
  const reload = () => webhooks(main).catch((e) => notice(describe(e), true));
  const act = (fn) => async () => {
    try { await fn(); } catch (e) { notice(describe(e), true); }
  };
  const rows = page.data.map((w) => h("tr", { "data-testid": "webhook-row", "data-id": w.id },
    h("td", null, h("div", { "data-testid": "webhook-name" }, w.name), w.description ? h("div", { class: "muted" }, w.description) : null),
    h("td", { class: "mono url" }, w.url),
    h("td", null, w.events.join(", ")),
    h("td", { "data-testid": "webhook-state" }, badge(w.status.state),
      w.status.disabled_reason ? h("div", { class: "muted" }, w.status.disabled_reason) : null),
    h("td", null, w.status.last_status_code === null ? "—" : w.status.last_status_code),
    h("td", { class: "error" }, w.status.last_error || ""),
    h("td", null, w.status.pending),
    h("td", null, w.status.dead_letters),
    h("td", { class: "actions" },
      h("button", { type: "button", class: "quiet", "data-testid": "wh-test", onclick: act(async () => {
        const outcome = await api("POST", "/api/v1/webhooks/" + encodeURIComponent(w.id) + "/test", {});
        show(testCard(w, outcome));
      }) }, "Test"),
      h("button", { type: "button", class: "quiet", "data-testid": "wh-edit", onclick: () => show(webhookForm(w, (saved) => {
        panel.replaceChildren();
        if (saved) { notice("Saved " + saved.name + "."); reload(); }
      })) }, "Edit"),
      h("button", { type: "button", class: "quiet", "data-testid": "wh-toggle", onclick: act(async () => {
        await api("PATCH", "/api/v1/webhooks/" + encodeURIComponent(w.id), { is_active: !w.is_active });
        notice((w.is_active ? "Disabled " : "Enabled ") + w.name + ".");
        reload();
      }) }, w.is_active ? "Disable" : "Enable"),
      h("button", { type: "button", class: "quiet", "data-testid": "wh-rotate", onclick: act(async () => {
        if (!window.confirm("Issue a new signing secret for " + w.name + "?")) return;
        const rotated = await api("POST", "/api/v1/webhooks/" + encodeURIComponent(w.id) + "/rotate-secret");
        show(secretCard(rotated));
      }) }, "Rotate secret"),
      h("button", { type: "button", class: "quiet", "data-testid": "wh-recover", onclick: act(async () => {
        const since = new Date(Date.now() - 7 * 24 * 3600 * 1000).toISOString().replace(/\.\d+Z$/, "Z");
        const answer = await api("POST", "/api/v1/webhooks/" + encodeURIComponent(w.id) + "/recover", { since });
        notice("Re-queued " + answer.requeued + " dead deliveries of " + w.name + " (last 7 days).");
        reload();
      }) }, "Recover dead"),
      h("button", { type: "button", class: "quiet", "data-testid": "wh-deliveries", onclick: () => go("/admin/deliveries?webhook_id=" + encodeURIComponent(w.id)) }, "Deliveries"),
      h("button", { type: "button", class: "danger", "data-testid": "wh-delete", onclick: act(async () => {
        if (!window.confirm("Delete " + w.name + "? Its queued deliveries die.")) return;
        await api("DELETE", "/api/v1/webhooks/" + encodeURIComponent(w.id));
        notice("Deleted " + w.name + ".");
        reload();
      }) }, "Delete"))));
  put(main,
    h("h1", null, "Webhooks"),
    h("p", null, h("button", { type: "button", "data-testid": "wh-new", onclick: () => show(webhookForm(null, (saved) => {
      panel.replaceChildren();
      if (saved) {
        reload().then(() => document.getElementById("panel").replaceChildren(secretCard(saved)));
      }
    })) }, "New webhook")),
    panel,
    rows.length === 0 ? h("p", { class: "muted" }, "No webhooks yet.") :
      h("table", { "data-testid": "webhooks" },
        h("thead", null, h("tr", null, ["Name", "URL", "Events", "Status", "Last code", "Last error", "Pending", "Dead", ""].map((t) => h("th", null, t)))),
        h("tbody", null, rows)),
    page.next_cursor ? h("p", { class: "muted" }, "Showing the first 500.") : null);
}

// ---------------------------------------------------------------- deliveries

function attemptView(a) {
  return h("div", { class: "attempt", "data-testid": "attempt" },
    h("p", null, h("strong", null, "Attempt " + a.attempt), " ", badge(a.result), " ",
      a.status_code === null ? "no answer" : h("span", { "data-testid": "attempt-status" }, "HTTP " + a.status_code),
      " · " + a.latency_ms.toFixed(1) + " ms · " + when(a.started_at)),
    a.error ? h("p", { class: "error", "data-testid": "attempt-error" }, a.error) : null,
    h("details", null, h("summary", null, "Request headers"),
      h("table", null, h("tbody", null, Object.entries(a.request_headers || {}).map(([k, v]) =>
        h("tr", null, h("td", { class: "mono" }, k), h("td", { class: "mono" }, v)))))),
    h("label", null, "Response body"),
    h("pre", { "data-testid": "attempt-body" }, a.response_body !== null ? a.response_body
      : a.result === "success" ? "(not kept for successful attempts)" : "(empty)"));
}

async function deliveryDetail(id, panel, refresh) {
  const d = await api("GET", "/api/v1/deliveries/" + encodeURIComponent(id));
  const canRetry = d.status === "dead";
  panel.replaceChildren(h("div", { class: "card", "data-testid": "delivery-detail", "data-id": d.id },
    h("h2", null, "Delivery ", h("span", { class: "mono" }, d.id)),
    h("p", null, badge(d.status), d.dead_reason ? " " + d.dead_reason : "", " · event ", h("span", { class: "mono" }, d.event), " (", h("span", { class: "mono" }, d.event_id), ")",
      " · webhook ", h("span", { class: "mono" }, d.webhook_id)),
    h("p", { class: "muted" }, "Created " + when(d.created_at) + " · queued " + when(d.queued_at) +
      (d.finished_at ? " · finished " + when(d.finished_at) : "") + (d.next_attempt_at ? " · next attempt " + when(d.next_attempt_at) : "")),
    canRetry ? h("button", { type: "button", "data-testid": "retry", onclick: async () => {
      try {
        await api("POST", "/api/v1/deliveries/" + encodeURIComponent(d.id) + "/retry");
        notice("Queued again.");
        await refresh();
        await deliveryDetail(d.id, panel, refresh);
      } catch (e) { notice(describe(e), true); }
    } }, "Retry now") : null,
    " ",
    h("button", { type: "button", class: "quiet", "data-testid": "detail-refresh", onclick: () => deliveryDetail(d.id, panel, refresh).catch((e) => notice(describe(e), true)) }, "Refresh"),
    h("h2", null, d.attempts.length + " attempt" + (d.attempts.length === 1 ? "" : "s")),
    d.attempts.slice().reverse().map(attemptView)));
}

async function deliveries(main) {
  const params = new URLSearchParams(location.search);
  const hooks = await api("GET", "/api/v1/webhooks?limit=500");
  const names = new Map(hooks.data.map((w) => [w.id, w.name]));
  const status = h("select", { id: "f-status", "data-testid": "f-status" },
    ["", "pending", "retrying", "succeeded", "dead"].map((s) => h("option", { value: s }, s || "any")));
  status.value = params.get("status") || "";
  const webhook = h("select", { id: "f-webhook", "data-testid": "f-webhook" },
    h("option", { value: "" }, "any"), hooks.data.map((w) => h("option", { value: w.id }, w.name)));
  webhook.value = params.get("webhook_id") || "";
  const event = h("input", { id: "f-event", "data-testid": "f-event", placeholder: "evt_…", value: params.get("event_id") || "" });
  const table = h("tbody");
  const panel = h("div", { id: "panel" });
  const more = h("button", { type: "button", class: "quiet", hidden: true }, "More");
  let cursor = null;

  const query = () => {
    const q = new URLSearchParams();
    if (status.value) q.set("status", status.value);
    if (webhook.value) q.set("webhook_id", webhook.value);
    if (event.value.trim()) q.set("event_id", event.value.trim());
    return q;
  };
  const load = async (append) => {
    const q = query();
    q.set("limit", "50");
    if (append && cursor) q.set("cursor", cursor);
    const page = await api("GET", "/api/v1/deliveries?" + q.toString());
    cursor = page.next_cursor;
    more.hidden = !cursor;
    const rows = page.data.map((d) => h("tr", { class: "clickable", "data-testid": "delivery-row", "data-id": d.id, "data-status": d.status,
      onclick: () => deliveryDetail(d.id, panel, () => load(false)).catch((e) => notice(describe(e), true)) },
      h("td", { class: "mono" }, d.id),
      h("td", null, d.event),
      h("td", null, names.get(d.webhook_id) || d.webhook_id),
      h("td", { "data-testid": "delivery-status" }, badge(d.status), d.dead_reason ? " " + d.dead_reason : ""),
      h("td", null, d.attempt_count),
      h("td", null, when(d.created_at)),
      h("td", null, when(d.next_attempt_at))));
    if (append) table.append(...rows); else table.replaceChildren(...rows);
  };
  const apply = async (ev) => {
    if (ev) ev.preventDefault();
    history.replaceState(null, "", "/admin/deliveries" + (query().toString() ? "?" + query().toString() : ""));
    panel.replaceChildren();
    try { await load(false); } catch (e) { notice(describe(e), true); }
  };
  more.addEventListener("click", () => load(true).catch((e) => notice(describe(e), true)));
  const filters = h("form", { class: "filters", "data-testid": "filters" },
    h("div", null, h("label", { for: "f-status" }, "Status"), status),
    h("div", null, h("label", { for: "f-webhook" }, "Webhook"), webhook),
    h("div", null, h("label", { for: "f-event" }, "Event id"), event),
    h("button", { type: "submit", "data-testid": "f-apply" }, "Apply"));
  filters.addEventListener("submit", apply);
  put(main,
    h("h1", null, "Deliveries"),
    filters,
    panel,
    h("table", { "data-testid": "deliveries" },
      h("thead", null, h("tr", null, ["Delivery", "Event", "Webhook", "Status", "Attempts", "Created", "Next attempt"].map((t) => h("th", null, t)))),
      table),
    more);
  await load(false);
}

// ---------------------------------------------------------------- routing

const VIEWS = { "/admin": dashboard, "/admin/webhooks": webhooks, "/admin/deliveries": deliveries };

function currentPath() {
  const path = location.pathname.replace(/\/+$/, "");
  return VIEWS[path] ? path : "/admin";
}

function go(path) {
  history.pushState(null, "", path);
  render();
}

let rendering = 0;
async function render() {
  const main = document.getElementById("app");
  const turn = ++rendering;
  if (!store.getItem(TOKEN)) {
    await header();
    signInView(main);
    return;
  }
  main.replaceChildren(h("p", { class: "muted" }, "Loading…"));
  try {
    await header();
    if (turn !== rendering) return;
    if (store.getItem(ROLE) === "admin" && !store.getItem(ACCOUNT)) {
      main.replaceChildren(h("div", { class: "card" }, "No accounts yet. Create one with POST /api/v1/accounts (see /docs)."));
      return;
    }
    await VIEWS[currentPath()](main);
  } catch (e) {
    if (turn === rendering && store.getItem(TOKEN)) main.replaceChildren(h("div", { class: "card error", "data-testid": "view-error" }, describe(e)));
  }
}

document.addEventListener("DOMContentLoaded", () => {
  for (const a of document.querySelectorAll("#nav a")) {
    a.addEventListener("click", (ev) => { ev.preventDefault(); go(a.getAttribute("href")); });
  }
  document.getElementById("sign-out").addEventListener("click", () => signOut());
  window.addEventListener("popstate", render);
  render();
});
