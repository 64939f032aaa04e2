// Cancel a running task from the page; drop a good and an encrypted PDF on it, see the typed
// error, retry the failed file and follow the new task; filter the task list.
// DASHBOARD_FILES: JSON list of paths (the good one first); DASHBOARD_ARTIFACTS: a directory.

import { readFileSync } from "node:fs";
import { basename, join } from "node:path";
import { currentTask, enterKey, env, run, waitForEnd } from "./browser.mjs";

const INGEST_TIMEOUT_MS = 120_000;

await run(async (page, seen) => {
  await enterKey(page, seen, env("DASHBOARD_KEY"));

  await page.locator("#tasks li.task", { hasText: "test.forever" })
    .getByRole("button", { name: /^Follow task/ }).click();
  await page.waitForFunction(() => /tick \d+|ticking/.test(
    document.querySelector("#files .file-detail")?.textContent ?? ""));
  await page.click("#cancel");
  await waitForEnd(page, "canceled");
  seen.canceled = await currentTask(page);

  // dropped on the page, as from a file manager
  const files = JSON.parse(env("DASHBOARD_FILES")).map((path) => ({
    name: basename(path), base64: readFileSync(path).toString("base64") }));
  const dropped = await page.evaluateHandle((list) => {
    const transfer = new DataTransfer();
    for (const { name, base64 } of list) {
      const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
      transfer.items.add(new File([bytes], name, { type: "application/pdf" }));
    }
    return transfer;
  }, files);
  await page.dispatchEvent("#drop", "dragover", { dataTransfer: dropped });
  await page.dispatchEvent("#drop", "drop", { dataTransfer: dropped });
  await waitForEnd(page, "completed", INGEST_TIMEOUT_MS);
  seen.batch = await currentTask(page);
  seen.batch_id = await page.locator("#current-id").getAttribute("title");
  await page.screenshot({ path: join(env("DASHBOARD_ARTIFACTS"), "dashboard-failed.png") });

  await page.click("#retry");
  await page.waitForFunction((old) => document.querySelector("#current-id").title !== old,
                             seen.batch_id);
  await waitForEnd(page, "failed", INGEST_TIMEOUT_MS);
  seen.retried = await currentTask(page);
  seen.retried_id = await page.locator("#current-id").getAttribute("title");

  await page.selectOption("#filter-status", "failed");
  await page.click("#tasks-filter button[type=submit]");
  await page.waitForFunction(() => {  // the dead-letter view: no canceled task in it
    const rows = [...document.querySelectorAll("#tasks li.task")];
    return rows.length > 0 && rows.every((row) => row.dataset.state !== "canceled");
  });
  seen.failed_list = await page.locator("#tasks li.task").allInnerTexts();

  await page.selectOption("#filter-status", "");
  await page.fill("#filter-kind", "test.forever");
  await page.click("#tasks-filter button[type=submit]");
  await page.waitForFunction(() => {
    const rows = [...document.querySelectorAll("#tasks li.task .task-kind")];
    return rows.length > 0 && rows.every((k) => k.textContent === "test.forever");
  });
  seen.kind_list = await page.locator("#tasks li.task").allInnerTexts();
  seen.error_visible = await page.locator("#error").isVisible();
});
