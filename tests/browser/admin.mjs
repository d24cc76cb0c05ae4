// Drives headless Chromium through Herald's admin page. Run by tests/admin_page.rs, which
// starts Herald and a receiver on 127.0.0.1 and passes their addresses in the environment:
//   HERALD_URL, API_KEY, ADMIN_TOKEN, RECEIVER_URL (where the webhook points),
//   CONTROL_URL (GET /control/fail | /control/ok switches the receiver), ARTIFACTS (a folder
//   for screenshots), HOSTILE_NAME, HOSTILE_HEADER, HOSTILE_BODY (planted markup).
// Exits 0 when every step held; otherwise prints the step and exits 1 (with failure.png).
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const env = process.env;
const base = env.HERALD_URL;
const shots = env.ARTIFACTS;
mkdirSync(shots, { recursive: true });
const DEADLINE_MS = 20000;

let step = "start";
const external = [];
const consoleErrors = [];

function check(cond, what) {
  if (!cond) throw new Error(what);
}

async function until(what, fn) {
  const end = Date.now() + DEADLINE_MS;
  for (;;) {
    if (await fn()) return;
    if (Date.now() > end) throw new Error("timed out waiting for " + what);
    await new Promise((r) => setTimeout(r, 150));
  }
}

async function ingest(event) {
  const res = await fetch(base + "/api/v1/events", {
    method: "POST",
    headers: { Authorization: "Bearer " + env.API_KEY, "Content-Type": "application/json" },
    body: JSON.stringify({ event, data: { lead_id: "ld_browser" } }),
  });
  check(res.status === 202, "ingest answered " + res.status);
  return (await res.json()).id;
}

async function deadCount() {
  const res = await fetch(base + "/api/v1/deliveries?status=dead", { headers: { Authorization: "Bearer " + env.API_KEY } });
  return (await res.json()).data.length;
}

async function control(what) {
  const res = await fetch(env.CONTROL_URL + "/control/" + what);
  check(res.ok, "receiver control " + what + " answered " + res.status);
}

const browser = await chromium.launch({
  executablePath: env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
// The network is cut: anything not asked of Herald itself is refused and remembered.
await context.route("**/*", (route) => {
  const url = route.request().url();
  if (url.startsWith(base + "/")) return route.continue();
  external.push(url);
  return route.abort();
});
const page = await context.newPage();
const refused = [];
// Chromium logs every non-2xx answer as a console error; those are checked by URL below,
// every other console error (a CSP violation, a script error) fails the test.
page.on("console", (m) => {
  if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) consoleErrors.push(m.text());
});
const asked = new Set();
page.on("response", (r) => {
  const path = new URL(r.url()).pathname;
  asked.add(path);
  if (r.status() >= 400) refused.push(r.request().method() + " " + path + " " + r.status());
});
page.on("pageerror", (e) => consoleErrors.push(String(e)));
page.on("dialog", (d) => d.accept());
const shot = (name) => page.screenshot({ path: join(shots, name + ".png"), fullPage: true });

try {
  step = "the API docs render offline";
  const doc = await (await fetch(base + "/openapi.json")).json();
  const operations = Object.values(doc.paths).reduce((n, item) => n + Object.keys(item).length, 0);
  await page.goto(base + "/docs");
  await until("Swagger UI to list every operation", async () => (await page.locator(".opblock").count()) === operations);
  await shot("00-docs");

  step = "sign in with an API key";
  await page.goto(base + "/admin");
  await page.getByTestId("signin").waitFor();
  await shot("01-signin");
  await page.getByTestId("token").fill(env.API_KEY);
  await page.getByTestId("signin-submit").click();
  await page.getByTestId("pending").waitFor();
  check(!page.url().includes(env.API_KEY), "the token is in the URL");
  const stored = await page.evaluate(() => [sessionStorage.getItem("herald.token"), localStorage.length, document.cookie]);
  check(stored[0] === env.API_KEY && stored[1] === 0 && stored[2] === "", "token storage: " + JSON.stringify(stored));
  await shot("02-dashboard");

  step = "create a webhook with planted markup";
  await page.getByRole("link", { name: "Webhooks" }).click();
  await page.getByTestId("wh-new").click();
  await page.getByTestId("wh-name").fill(env.HOSTILE_NAME);
  await page.getByTestId("wh-url").fill(env.RECEIVER_URL);
  await page.getByTestId("wh-events").fill("lead.*");
  await page.getByTestId("wh-retries").fill("1");
  await page.getByTestId("wh-headers").fill("X-Note: " + env.HOSTILE_HEADER);
  await page.getByTestId("wh-save").click();
  await page.getByTestId("secret-value").waitFor();
  const secret = await page.getByTestId("secret-value").textContent();
  check(secret.startsWith("whsec_"), "secret shown: " + secret);
  const name = await page.getByTestId("webhook-name").first().textContent();
  check(name === env.HOSTILE_NAME, "the name is shown as text: " + name);
  await shot("03-webhook-created");

  step = "send a test and see the answer";
  await page.getByTestId("wh-test").click();
  await page.getByTestId("test-result").waitFor();
  const testText = await page.getByTestId("test-result").textContent();
  check(testText.includes("HTTP 200"), "test result: " + testText);
  check((await page.getByTestId("test-body").textContent()) === env.HOSTILE_BODY, "test body shown as text");
  await shot("04-test-send");

  step = "see a delivery and its attempt";
  await ingest("lead.qualified");
  await page.getByRole("link", { name: "Deliveries" }).click();
  const row = page.locator('[data-testid="delivery-row"][data-status="succeeded"]').first();
  await until("a succeeded delivery in the list", async () => {
    await page.getByTestId("f-apply").click();
    await page.waitForTimeout(100);
    return (await row.count()) > 0;
  });
  await row.click();
  await page.getByTestId("attempt").first().waitFor();
  check((await page.getByTestId("attempt-status").first().textContent()) === "HTTP 200", "attempt status");
  const okBody = await page.getByTestId("attempt-body").first().textContent();
  check(okBody === "(not kept for successful attempts)", "a successful attempt's body: " + okBody);
  const detail = await page.getByTestId("delivery-detail").textContent();
  check(detail.includes(env.HOSTILE_HEADER), "the custom header is listed as text");
  await shot("05-delivery-succeeded");

  step = "make the receiver fail until a delivery is dead";
  await control("fail");
  const deadEvent = await ingest("lead.bounced");
  await page.getByTestId("f-status").selectOption("dead");
  await page.getByTestId("f-event").fill(deadEvent);
  const dead = page.locator('[data-testid="delivery-row"][data-status="dead"]').first();
  await until("the delivery to be dead", async () => {
    await page.getByTestId("f-apply").click();
    await page.waitForTimeout(100);
    return (await dead.count()) > 0;
  });
  await dead.click();
  await page.getByTestId("retry").waitFor();
  const deadDetail = await page.getByTestId("delivery-detail").textContent();
  check(deadDetail.includes("retries_exhausted") && deadDetail.includes("HTTP 500"), "dead detail: " + deadDetail);
  check((await page.getByTestId("attempt").count()) === 2, "two attempts (max_retries 1)");
  const failedBody = await page.getByTestId("attempt-body").first().textContent();
  check(failedBody === env.HOSTILE_BODY, "the receiver's answer shown as text: " + failedBody);
  await shot("06-delivery-dead");

  step = "retry it from the page and see it succeed";
  await control("ok");
  await page.getByTestId("retry").click();
  await until("the retried delivery to succeed", async () => {
    await page.getByTestId("detail-refresh").click();
    await page.waitForTimeout(150);
    const text = await page.getByTestId("delivery-detail").textContent();
    return text.includes("succeeded") && text.includes("HTTP 200");
  });
  await shot("07-delivery-retried");

  step = "disable, enable and rotate from the webhooks page";
  await page.getByRole("link", { name: "Webhooks" }).click();
  await page.getByTestId("wh-toggle").click();
  await until("the webhook to show paused", async () => (await page.getByTestId("webhook-state").first().textContent()).includes("paused"));
  await page.getByTestId("wh-toggle").click();
  await until("the webhook to show enabled", async () => !(await page.getByTestId("webhook-state").first().textContent()).includes("paused"));
  await page.getByTestId("wh-rotate").click();
  await page.getByTestId("secret-value").waitFor();
  check((await page.getByTestId("secret-value").textContent()) !== secret, "a new secret");
  await page.getByTestId("wh-edit").click();
  await page.getByTestId("wh-events").fill("lead.*, email.*");
  await page.getByTestId("wh-save").click();
  await until("the edited events in the list", async () => (await page.getByTestId("webhook-row").first().textContent()).includes("lead.*, email.*"));
  await shot("08-webhooks");

  step = "a content filter: the server's refusal shown, then one that saves";
  await page.getByTestId("wh-edit").click();
  await page.getByTestId("wh-filter").fill('{"data.qualityScore": {"$regex": "9"}}');
  await page.getByTestId("wh-save").click();
  await until("the filter's refusal", async () => ((await page.getByTestId("wh-error").textContent()) || "").includes("unknown operator `$regex`"));
  const refusal = await page.getByTestId("wh-error").textContent();
  check(refusal.startsWith("filter: ") && refusal.includes("(422)"), "the refusal names the field: " + refusal);
  await shot("08b-filter-refused");
  await page.getByTestId("wh-filter").fill('{"data.crmId": 9007199254740993}');
  await page.getByTestId("wh-ordering").selectOption("strict");
  await page.getByTestId("wh-save").click();
  await page.getByTestId("webhook-form").waitFor({ state: "detached" });
  const saved = await (await fetch(base + "/api/v1/webhooks?limit=1", { headers: { Authorization: "Bearer " + env.API_KEY } })).text();
  check(saved.includes('"filter":{"data.crmId":9007199254740993}'), "the filter stored as typed: " + saved);
  check(saved.includes('"ordering":"strict"'), "strict ordering stored");
  await page.getByTestId("wh-edit").click();
  await page.getByTestId("wh-filter").fill("");
  await page.getByTestId("wh-ordering").selectOption("none");
  await page.getByTestId("wh-save").click();
  await page.getByTestId("webhook-form").waitFor({ state: "detached" });
  const cleared = await (await fetch(base + "/api/v1/webhooks?limit=1", { headers: { Authorization: "Bearer " + env.API_KEY } })).text();
  check(cleared.includes('"filter":null') && cleared.includes('"ordering":"none"'), "the filter removed: " + cleared);

  step = "recover a webhook's dead letters from the page";
  await control("fail");
  await ingest("email.bounced");
  await until("a second dead letter", async () => (await deadCount()) === 1);
  await control("ok");
  await page.getByTestId("wh-recover").click();
  await until("the recover notice", async () => ((await page.locator("#notice").textContent()) || "").includes("Re-queued 1 dead"));
  await until("no dead letters", async () => (await deadCount()) === 0);

  step = "the dashboard counts the account's own activity";
  await page.getByRole("link", { name: "Dashboard" }).click();
  await page.getByTestId("dead-letters").waitFor();
  check((await page.getByTestId("dead-letters").textContent()).startsWith("0"), "no dead letters left");
  check((await page.getByTestId("webhooks").textContent()).startsWith("1"), "one webhook");
  // Another account sent 5 events (tests/admin_page.rs): the page shows this account's
  // own count (its 3 events and the herald.* events of its webhook), as the API gives it.
  const own = await (await fetch(base + "/api/v1/stats", { headers: { Authorization: "Bearer " + env.API_KEY } })).json();
  const events = await page.getByTestId("events").textContent();
  check(own.events >= 3 && events === own.events + "events (" + own.window_minutes + " min)", "events: " + events + " vs " + own.events);
  check(!(await page.getByTestId("ingest-rate").textContent()).startsWith("0.00/s"), "events were ingested lately");
  await shot("09-dashboard");

  step = "sign in with the admin token, acting for the account";
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByTestId("token").fill(env.ADMIN_TOKEN);
  await page.getByTestId("signin-submit").click();
  await page.getByTestId("account").waitFor();
  // Two accounts: pick the one the key belongs to (its name, too, is shown as text).
  const ours = page.locator('[data-testid="account"] option', { hasText: "Browser & <Co>" });
  check((await ours.count()) === 1, "the account is listed by its name");
  await page.getByTestId("account").selectOption(await ours.getAttribute("value"));
  await page.getByRole("link", { name: "Webhooks" }).click();
  await until("the account's webhook under the admin token", async () =>
    (await page.getByTestId("webhook-row").count()) === 1 &&
    (await page.getByTestId("webhook-name").first().textContent()) === env.HOSTILE_NAME);
  await shot("10-admin");
  await page.getByTestId("wh-delete").click();
  await until("the webhook to be gone", async () => (await page.getByTestId("webhook-row").count()) === 0);

  step = "nothing planted ran, nothing left the machine";
  check(await page.evaluate(() => window.__pwned === undefined), "planted script ran: " + await page.evaluate(() => String(window.__pwned)));
  check((await page.locator("#app img, #app script").count()) === 0, "planted elements in the page");
  check(external.length === 0, "requests to other origins: " + external.join(", "));
  check(!asked.has("/metrics"), "the page read /metrics");
  check(asked.has("/api/v1/stats"), "the page read /api/v1/stats");
  check(consoleErrors.length === 0, "console errors: " + consoleErrors.join(" | "));
  // The only refusals: signing in with an API key asks for the account list (403 tells the
  // page it holds a key, not the admin token), and the bad filter the test typed (422).
  check(refused.length === 2 && refused[0] === "GET /api/v1/accounts 403" && /^PATCH \/api\/v1\/webhooks\/wh_\w+ 422$/.test(refused[1]),
    "refused requests: " + refused.join(", "));
  console.log("OK: " + external.length + " external requests, " + consoleErrors.length + " console errors");
} catch (e) {
  console.error("FAILED at step '" + step + "': " + (e && e.stack ? e.stack : e));
  await shot("failure").catch(() => {});
  await browser.close();
  process.exit(1);
}
await browser.close();
