// Follow a running task from the task list; the test then stops the web process, lets the task
// finish meanwhile and starts the web again with another secret, so the page's stream token now
// answers 401. The page must fetch a fresh token and catch up from the last event it saw.

import { currentTask, enterKey, env, nextLine, run, send } from "./browser.mjs";

await run(async (page, seen) => {
  await enterKey(page, seen, env("DASHBOARD_KEY"));
  await page.locator("#tasks li.task", { hasText: "test.echo" })
    .getByRole("button", { name: /^Follow task/ }).click();
  await page.waitForFunction(
    () => document.querySelector("#current-live").textContent.startsWith("stream live"));
  seen.before = await currentTask(page);
  send({ following: true });
  await nextLine();
  await page.waitForFunction(() =>
    document.querySelector("#current-status").textContent === "completed"
    && document.querySelector("#current-live").textContent.startsWith("stream ended"),
  null, { timeout: 60_000, polling: 100 });
  seen.after = await currentTask(page);
});
