// What every dashboard scenario shares: Debian's chromium under playwright-core (no browser
// download) in a fresh profile, the page's console errors and failed requests collected, and a
// line protocol with the pytest side: JSON messages out on stdout, "go" lines in on stdin.
// Every wait is on a condition with a deadline; nothing sleeps.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--no-first-run"];
export const STEP_TIMEOUT_MS = 30_000;

export function env(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

export function send(message) {
  process.stdout.write(`${JSON.stringify(message)}\n`);
}

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

/** Wait for the test's next line on stdin (it answers once it has done its part). */
export async function nextLine() {
  const { value, done } = await lines.next();
  if (done) throw new Error("the test closed stdin");
  return value;
}

/** Run `scenario(page, seen)` in a fresh browser, then print `seen` as the last line. */
export async function run(scenario) {
  const profile = mkdtempSync(join(tmpdir(), "longtask-chromium-"));
  const seen = { console_errors: [], page_errors: [], failed_requests: [] };
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ARGS,
    viewport: { width: 1280, height: 900 },
  });
  try {
    const page = context.pages()[0] ?? await context.newPage();
    page.setDefaultTimeout(STEP_TIMEOUT_MS);
    page.on("console", (m) => { if (m.type() === "error") seen.console_errors.push(m.text()); });
    page.on("pageerror", (err) => seen.page_errors.push(String(err)));
    await page.goto(`${env("DASHBOARD_URL")}/`);
    await scenario(page, seen);
  } finally {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  }
  send({ done: true, seen });
  process.exit(0);  // stdin stays open otherwise
}

/** Save the key through the form; from then on count what fails. */
export async function enterKey(page, seen, key) {
  await page.fill("#key-input", key);
  await page.click("#key-form button[type=submit]");
  await page.locator("#error").waitFor({ state: "hidden" });
  seen.console_errors.length = 0;
  page.on("response", (r) => {
    if (r.status() >= 400) seen.failed_requests.push(`${r.status()} ${new URL(r.url()).pathname}`);
  });
}

/** What the followed task's panel shows. */
export async function currentTask(page) {
  return {
    status: await page.locator("#current-status").innerText(),
    overall: await page.locator("#overall-text").innerText(),
    live: await page.locator("#current-live").innerText(),
    live_title: await page.locator("#current-live").getAttribute("title"),
    cancel_disabled: await page.locator("#cancel").isDisabled(),
    retry_disabled: await page.locator("#retry").isDisabled(),
    files: await page.locator("#files li.file").evaluateAll((rows) => rows.map((row) => ({
      name: row.querySelector(".file-name").textContent,
      state: row.querySelector(".file-state").textContent,
      percent: row.querySelector(".pct").textContent,
      detail: row.querySelector(".file-detail").textContent,
      bar: row.querySelector("progress").getAttribute("aria-label"),
    }))),
  };
}

/** Wait until the followed task's badge reads `status` and its stream has ended. */
export async function waitForEnd(page, status, timeout = STEP_TIMEOUT_MS) {
  await page.waitForFunction((wanted) =>
    document.querySelector("#current-status").textContent.startsWith(wanted)
    && document.querySelector("#current-live").textContent.startsWith("stream ended"),
  status, { timeout, polling: 100 });
}
