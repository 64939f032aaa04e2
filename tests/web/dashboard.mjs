// Upload three PDFs through the page, watch them finish, search, and take screenshots.
// DASHBOARD_FILES: JSON list of paths; DASHBOARD_QUERY; DASHBOARD_ARTIFACTS: a directory.

import { join } from "node:path";
import { currentTask, enterKey, env, run } from "./browser.mjs";

const INGEST_TIMEOUT_MS = 180_000;
const files = JSON.parse(env("DASHBOARD_FILES"));
const artifacts = env("DASHBOARD_ARTIFACTS");

await run(async (page, seen) => {
  seen.title = await page.title();
  seen.heading = await page.locator("h1").innerText();

  // a wrong key: the API's 401 shows in the page
  await page.fill("#key-input", "lt_not-a-key");
  await page.click("#key-form button[type=submit]");
  await page.locator("#error").waitFor({ state: "visible" });
  seen.bad_key_error = await page.locator("#error-text").innerText();

  await enterKey(page, seen, env("DASHBOARD_KEY"));
  seen.key_status = await page.locator("#key-status").innerText();

  await page.setInputFiles("#file-input", files);
  await page.locator("#files li.file").nth(files.length - 1).waitFor();
  seen.rows_at_start = await page.locator("#files li.file").count();
  await page.waitForFunction((count) => {
    const rows = [...document.querySelectorAll("#files li.file")];
    return rows.length === count && rows.every((row) =>
      row.querySelector(".file-state").textContent === "completed"
      && row.querySelector(".pct").textContent === "100%");
  }, files.length, { timeout: INGEST_TIMEOUT_MS, polling: 100 });
  seen.task = await currentTask(page);

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
});
