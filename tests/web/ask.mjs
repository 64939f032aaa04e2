// Ask a question from the keyboard and follow the agent run: its steps, the answer as it is
// written (every text the answer box ever showed is recorded), then the citations.
// ASK_QUESTION; DASHBOARD_ARTIFACTS: a directory; ASK_SCREENSHOT: a file name in it.

import { join } from "node:path";
import { enterKey, env, run, waitForEnd } from "./browser.mjs";

const ANSWER_TIMEOUT_MS = 120_000;

await run(async (page, seen) => {
  await enterKey(page, seen, env("DASHBOARD_KEY"));
  await page.evaluate(() => {
    const box = document.querySelector("#agent-answer");
    window.answerTexts = [];
    new MutationObserver(() => window.answerTexts.push(box.textContent))
      .observe(box, { childList: true, characterData: true, subtree: true });
  });

  await page.focus("#ask-input");
  await page.keyboard.type(env("ASK_QUESTION"));
  await page.keyboard.press("Enter");
  await waitForEnd(page, "completed", ANSWER_TIMEOUT_MS);

  seen.task_id = await page.locator("#current-id").getAttribute("title");
  seen.question = await page.locator("#agent-question").innerText();
  seen.steps = await page.locator("#agent-steps li.step").evaluateAll((rows) => rows.map((row) => ({
    number: row.querySelector(".step-number").textContent,
    call: row.querySelector(".step-call").textContent,
    summary: row.querySelector(".step-summary").textContent,
    note: row.querySelector(".step-note")?.textContent ?? null,
  })));
  seen.answer = await page.locator("#agent-answer").evaluate((box) => box.textContent);
  seen.answer_busy = await page.locator("#agent-answer").getAttribute("aria-busy");
  seen.answer_texts = await page.evaluate(() => window.answerTexts);
  seen.method = await page.locator("#agent-method").isVisible()
    ? await page.locator("#agent-method").innerText() : null;
  seen.citations_title = await page.locator("#agent-citations-title").isVisible();
  seen.citations = await page.locator("#agent-citations li").allInnerTexts();
  seen.error_visible = await page.locator("#error").isVisible();
  await page.screenshot({ path: join(env("DASHBOARD_ARTIFACTS"), env("ASK_SCREENSHOT")),
                          fullPage: true });
});
