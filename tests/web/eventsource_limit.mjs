// A browser's own EventSource, refused over the tenant's open-stream limit: the server answers
// 200 with a `retry:`, an `error` event and the end of the stream, so the browser comes back by
// itself and, once a place is free, gets every event. (A 429 would have closed it for good.)

import { env, nextLine, run, send } from "./browser.mjs";

await run(async (page, seen) => {
  await page.evaluate((url) => {
    const TERMINAL = ["completed", "failed", "canceled"];
    const log = { events: [], refusals: [], drops: 0, opens: 0 };
    const source = new EventSource(url);
    window.followed = { log, source };
    source.addEventListener("open", () => { log.opens += 1; });
    source.addEventListener("error", (e) => {
      if (e.data) log.refusals.push(JSON.parse(e.data));  // the server's error event
      else log.drops += 1;  // the connection ended; EventSource reconnects unless CLOSED
      log.state_after_drop = source.readyState;
    });
    for (const type of ["status", "item", "progress"]) {
      source.addEventListener(type, (e) => {
        const data = JSON.parse(e.data);
        log.events.push({ id: Number(e.lastEventId), type, status: data.status ?? null });
        if (type === "status" && TERMINAL.includes(data.status)) source.close();
      });
    }
  }, env("EVENTS_URL"));
  await page.waitForFunction(() => window.followed.log.refusals.length > 0);
  send({ refused: true, state: await page.evaluate(() => window.followed.source.readyState) });
  await nextLine();  // the test frees a place and lets the task finish
  await page.waitForFunction(
    () => window.followed.log.events.some((e) => e.type === "status" && e.status === "completed"),
    null, { timeout: 60_000, polling: 100 });
  Object.assign(seen, await page.evaluate(() => window.followed.log));
});
