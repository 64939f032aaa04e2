// Load /docs (Swagger UI over /openapi.json), wait for it to render, open POST /tasks and report
// each kind it lists with the params it shows; then authorize with the key, try a submit with
// bad params and report the answer the page shows. Screenshots into DASHBOARD_ARTIFACTS.

import { join } from "node:path";
import { env, run } from "./browser.mjs";

const artifacts = env("DASHBOARD_ARTIFACTS");
const origin = new URL(env("DASHBOARD_URL")).origin;

/** Each `oneOf` branch of the request body: its title, its `kind` and its params' names. */
function branches(oneOf) {
  const children = (node, path) => [...node.querySelectorAll(`:scope > ${path}`)];
  const title = (article) => article.querySelector(
    ":scope > .json-schema-2020-12-head .json-schema-2020-12__title");
  const properties = (article) => children(article,
    ".json-schema-2020-12-body > .json-schema-2020-12-keyword--properties > ul > li > article");
  return children(oneOf, ".json-schema-2020-12-keyword__children > li > article").map((branch) => {
    const seen = { title: title(branch).textContent, kind: null, params: [], hidden: [] };
    for (const property of properties(branch)) {
      const name = title(property).textContent;
      if (name === "kind") {
        seen.kind = JSON.parse(property.querySelector(
          ".json-schema-2020-12-keyword--const .json-schema-2020-12-json-viewer__value").textContent);
      } else if (name === "params") {
        for (const param of properties(property)) {
          seen.params.push(title(param).textContent);
          if (!title(param).checkVisibility()) seen.hidden.push(title(param).textContent);
        }
      }
    }
    return seen;
  });
}

await run(async (page, seen) => {
  seen.foreign_requests = [];
  page.on("request", (r) => {
    if (new URL(r.url()).origin !== origin) seen.foreign_requests.push(r.url());
  });
  seen.console_errors.length = 0;  // the dashboard's, which `run` opens first
  await page.goto(`${env("DASHBOARD_URL")}/docs`);
  await page.locator(".swagger-ui .info .title").waitFor();
  seen.title = await page.locator(".swagger-ui .info .title").innerText();

  const submit = page.locator(".opblock-post",
    { has: page.locator(".opblock-summary-path[data-path='/tasks']") });
  await submit.locator(".opblock-summary-control").click();
  const body = submit.locator(".opblock-section-request-body");
  const oneOf = body.locator(".json-schema-2020-12-keyword--oneOf").first();
  await oneOf.waitFor();
  seen.kinds = await oneOf.evaluate(branches);
  seen.examples = await body.locator(".examples-select select option").allInnerTexts();
  await page.screenshot({ path: join(artifacts, "docs.png") });
  await page.evaluate((top) => window.scrollTo(0, top - 20),
    await oneOf.evaluate((el) => el.getBoundingClientRect().top + window.scrollY));
  await page.screenshot({ path: join(artifacts, "docs-params.png") });

  // authorize with the key, then send a demo of too many steps from the page (its 422 is
  // the one console error there may be from here on)
  seen.console_errors_before_trying = [...seen.console_errors];
  seen.console_errors.length = 0;
  await page.locator(".auth-wrapper .authorize").click();
  const scheme = page.locator(".auth-container").first();  // `key`, the first scheme
  await scheme.locator("input").fill(env("DASHBOARD_KEY"));
  await scheme.locator(".auth-btn-wrapper .authorize").click();
  await scheme.locator(".auth-btn-wrapper .btn-done").click();
  await submit.locator(".try-out__btn").click();
  await body.getByRole("tab", { name: "Edit Value" }).click();
  await submit.locator("textarea.body-param__text").fill(
    JSON.stringify({ kind: "demo", params: { steps: 10001 } }));
  await submit.locator(".execute").click();
  const status = submit.locator(".live-responses-table td.response-col_status:not(.col_header)");
  await status.waitFor();
  seen.tried = {
    status: (await status.innerText()).trim(),
    body: await submit.locator(".live-responses-table .response-col_description pre").first()
      .innerText(),
  };
  // the answer at the top: the curl line above it holds the key
  await status.evaluate((el) => el.scrollIntoView({ block: "start" }));
  await page.screenshot({ path: join(artifacts, "docs-tried.png") });
});
