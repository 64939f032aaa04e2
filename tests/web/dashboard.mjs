// Drives the dashboard in Debian's chromium (playwright-core, no browser download) and prints,
// as one JSON line, what the page showed; tests/web/test_dashboard.py asserts on it.
//
// Input (environment): DASHBOARD_URL, DASHBOARD_KEY, DASHBOARD_FILES (JSON list of paths),
// DASHBOARD_QUERY, DASHBOARD_ARTIFACTS (a directory for screenshots), CHROMIUM (executable).
// Every wait is on a condition with a deadline; nothing sleeps.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--no-first-run"];
const INGEST_TIMEOUT_MS = 180_000;
const STEP_TIMEOUT_MS = 30_000;

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};

const url = env("DASHBOARD_URL");
const files = JSON.parse(env("DASHBOARD_FILES"));
const artifacts = env("DASHBOARD_ARTIFACTS");
const profile = mkdtempSync(join(tmpdir(), "longtask-chromium-"));
const seen = { console_errors: [] };

const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ARGS,
  viewport: { width: 1280, height: 900 },
});
try {
  const page = context.pages()[0] ?? await context.newPage();
  page.setDefaultTimeout(STEP_TIMEOUT_MS);
  page.on("console", (msg) => { if (msg.type() === "error") seen.console_errors.push(msg.text()); });
  page.on("pageerror", (err) => seen.console_errors.push(String(err)));

  await page.goto(`${url}/`);
  seen.title = await page.title();
  seen.heading = await page.locator("h1").innerText();

  // a wrong key: the API's 401 shows in the page
  await page.fill("#key-input", "lt_not-a-key");
  await page.click("#key-form button[type=submit]");
  await page.locator("#error").waitFor({ state: "visible" });
  seen.bad_key_error = await page.locator("#error-text").innerText();

  await page.fill("#key-input", env("DASHBOARD_KEY"));
  await page.click("#key-form button[type=submit]");
  await page.locator("#error").waitFor({ state: "hidden" });
  seen.key_status = await page.locator("#key-status").innerText();
  // from here on, with a good key, nothing may fail
  seen.console_errors = [];
  seen.failed_requests = [];
  page.on("response", (r) => { if (r.status() >= 400) seen.failed_requests.push(`${r.status()} ${r.url()}`); });

  await page.setInputFiles("#file-input", files);
  await page.locator("#files li.file").nth(files.length - 1).waitFor();
  seen.rows_at_start = await page.locator("#files li.file").count();
  await page.waitForFunction((count) => {
    const rows = [...document.querySelectorAll("#files li.file")];
    return rows.length === count && rows.every((row) =>
      row.querySelector(".file-state").textContent === "completed"
      && row.querySelector(".pct").textContent === "100%");
  }, files.length, { timeout: INGEST_TIMEOUT_MS, polling: 100 });

  seen.files = await page.locator("#files li.file").evaluateAll((rows) => rows.map((row) => ({
    name: row.querySelector(".file-name").textContent,
    state: row.querySelector(".file-state").textContent,
    percent: row.querySelector(".pct").textContent,
    detail: row.querySelector(".file-detail").textContent,
    bar: row.querySelector("progress").getAttribute("aria-label"),
  })));
  seen.overall = await page.locator("#overall-text").innerText();
  seen.task_status = await page.locator("#current-status").innerText();
  seen.cancel_disabled = await page.locator("#cancel").isDisabled();

  // the task list refreshes when the task ends
  await page.locator("#tasks li.task", { hasText: "completed" }).first().waitFor();
  seen.task_list = await page.locator("#tasks li.task").allInnerTexts();

  await page.fill("#search-input", env("DASHBOARD_QUERY"));
  await page.click("#search-form button[type=submit]");
  await page.locator("#results li.result").first().waitFor();
  const first = page.locator("#results li.result").first();
  seen.first_result = {
    filename: await first.locator(".result-file").innerText(),
    pages: await first.locator(".result-pages").innerText(),
    snippet: await first.locator(".snippet").innerText(),
  };
  seen.error_visible = await page.locator("#error").isVisible();

  await page.screenshot({ path: join(artifacts, "dashboard.png"), fullPage: true });
  await page.setViewportSize({ width: 390, height: 844 });
  await page.locator("main").waitFor();
  seen.phone_overflow_px = await page.evaluate(
    () => document.documentElement.scrollWidth - window.innerWidth);
  await page.screenshot({ path: join(artifacts, "dashboard-phone.png"), fullPage: true });
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
process.stdout.write(`${JSON.stringify(seen)}\n`);
