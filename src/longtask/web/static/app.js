// The dashboard: an API key, uploads, questions, the followed task, the task list and search.

import { Api } from "./api.js";
import { $, el, percentText, when } from "./dom.js";
import { TaskStream } from "./stream.js";
import { TaskView } from "./taskview.js";

const KEY_STORAGE = "longtask.key";
const PAGE_SIZE = 20;
const SNIPPET_CHARS = 320;

const api = new Api(() => localStorage.getItem(KEY_STORAGE));
let view = null;
let stream = null;
let nextCursor = null;

function showError(err) {
  $("error-text").textContent = err?.message ?? String(err);
  $("error").hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error-text").textContent = "";
}

// each user action: clear the last error, report this one's
function action(fn) {
  return async (event) => {
    event?.preventDefault?.();
    clearError();
    try {
      await fn(event);
    } catch (err) {
      showError(err);
    }
  };
}

// --- the key -------------------------------------------------------------------------------

function showKey() {
  const key = localStorage.getItem(KEY_STORAGE);
  $("key-status").textContent = key ? `saved: ${key.slice(0, 6)}…` : "no key saved";
  $("key-input").value = "";
}

$("key-form").addEventListener("submit", action(async () => {
  const key = $("key-input").value.trim();
  if (!key) throw new Error("paste an API key (make one with `longtask keys create`)");
  localStorage.setItem(KEY_STORAGE, key);
  showKey();
  await loadTasks();
}));

$("key-clear").addEventListener("click", action(() => {
  localStorage.removeItem(KEY_STORAGE);
  stream?.stop();
  view = null;
  $("current").hidden = true;
  showKey();
  $("tasks").replaceChildren();
  $("results").replaceChildren();
}));

// --- uploads -------------------------------------------------------------------------------

async function upload(files) {
  if (!files.length) return;
  const form = new FormData();
  for (const file of files) form.append("files", file, file.name);
  const task = await api.post("/documents", form);
  await follow(task.id);
  await loadTasks();
}

const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", action(async (e) => {
  drop.classList.remove("over");
  await upload([...e.dataTransfer.files]);
}));
$("file-input").addEventListener("change", action(async (e) => {
  const files = [...e.target.files];
  e.target.value = "";  // choosing the same files again uploads them again
  await upload(files);
}));

// --- questions (an agent run over the documents) ---------------------------------------------

$("ask-form").addEventListener("submit", action(async () => {
  const question = $("ask-input").value.trim();
  if (!question) return;
  const task = await api.postJson("/tasks", { kind: "agent", params: { question } });
  await follow(task.id);
  await loadTasks();
}));

// --- the followed task ---------------------------------------------------------------------

async function follow(taskId) {
  stream?.stop();
  const task = await api.get(`/tasks/${taskId}`);
  view = new TaskView(task);
  view.render();
  if (view.ended && !view.answer) return;
  const current = view;
  stream = new TaskStream(api, taskId, view.fromSeq, {
    onEvent: (type, data, seq) => {
      if (view !== current) return;
      current.apply(type, data, seq);
      current.render();
      if (type === "status" && current.ended && seq > current.snapshotSeq) {
        loadTasks().catch(showError);
      }
    },
    onLive: (type, data) => {
      if (view !== current) return;
      current.answer?.applyLive(type, data);
      current.answer?.renderText();
    },
    onEnd: (ended) => {
      if (view !== current) return;
      current.status = ended.status;
      current.applyStatus({ status: ended.status, error: ended.error, result: ended.result });
      current.render();
    },
    onState: (state) => {
      if (view !== current) return;
      current.streamState = state;
      current.render();
    },
  });
  await stream.open();
}

$("cancel").addEventListener("click", action(async () => {
  if (!view) return;
  await api.post(`/tasks/${view.id}/cancel`);
}));

$("retry").addEventListener("click", action(async () => {
  if (!view) return;
  const task = await api.post(`/tasks/${view.id}/retry`);
  await follow(task.id);
  await loadTasks();
}));

// --- the task list -------------------------------------------------------------------------

async function loadTasks(more = false) {
  const page = await api.get("/tasks", {
    status: $("filter-status").value, kind: $("filter-kind").value.trim(),
    limit: PAGE_SIZE, cursor: more ? nextCursor : null,
  });
  const rows = page.tasks.map(taskRow);
  if (more) $("tasks").append(...rows);
  else $("tasks").replaceChildren(...rows);
  nextCursor = page.next_cursor;
  $("tasks-more").hidden = !nextCursor;
  $("tasks-empty").hidden = $("tasks").children.length > 0;
}

function taskRow(task) {
  const files = task.items_total > 1 ? `${task.items_done}/${task.items_total} items` : "";
  const failed = task.items_failed ? `${task.items_failed} failed` : "";
  return el("li", { class: "task", "data-state": task.status },
    el("div", { class: "bar-line" },
      el("span", { class: "task-kind", text: task.kind }),
      el("span", { class: "badge", "data-state": task.status, text: task.status })),
    el("div", { class: "bar-line muted" },
      el("span", { text: [when(task.created_at), files, failed].filter(Boolean).join(" · ") }),
      el("span", { class: "pct", text: percentText(task.progress) })),
    el("button", { type: "button", class: "quiet", text: "Follow",
                   "aria-label": `Follow task ${task.id}`,
                   onclick: action(() => follow(task.id)) }));
}

$("tasks-filter").addEventListener("submit", action(() => loadTasks()));
$("tasks-refresh").addEventListener("click", action(() => loadTasks()));
$("tasks-more").addEventListener("click", action(() => loadTasks(true)));

// --- search --------------------------------------------------------------------------------

$("search-form").addEventListener("submit", action(async () => {
  const q = $("search-input").value.trim();
  if (!q) return;
  const found = await api.get("/search", { q, k: 5 });
  $("results").replaceChildren(...found.results.map(resultRow));
  $("results-empty").hidden = found.results.length > 0;
}));

function resultRow(hit) {
  const pages = hit.page_start === hit.page_end
    ? `page ${hit.page_start}` : `pages ${hit.page_start}–${hit.page_end}`;
  const text = hit.text.length > SNIPPET_CHARS
    ? `${hit.text.slice(0, SNIPPET_CHARS).trimEnd()}…` : hit.text;
  return el("li", { class: "result" },
    el("div", { class: "bar-line" },
      el("span", { class: "result-file", text: hit.filename }),
      el("span", { class: "result-pages muted",
                   text: `${pages} · score ${hit.score.toFixed(2)}` })),
    el("p", { class: "snippet", text }));
}

// --- start ---------------------------------------------------------------------------------

$("error-close").addEventListener("click", clearError);
showKey();
if (localStorage.getItem(KEY_STORAGE)) loadTasks().catch(showError);
