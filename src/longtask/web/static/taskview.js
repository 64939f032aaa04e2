// The followed task: one bar per file plus an overall bar, kept from a snapshot (GET /tasks/{id})
// and then the task's events (status, item, progress); for an agent run, its steps and answer.

import { AnswerView } from "./answer.js";
import { $, el, percentText, when } from "./dom.js";
import { TERMINAL } from "./status.js";


export class TaskView {
  constructor(task) {
    this.id = task.id;
    this.kind = task.kind;
    this.status = task.status;
    this.percent = task.progress;
    this.error = task.error;
    this.lastSeq = task.last_seq;
    this.lastAt = null;  // when the newest event seen was stored (each event's data has `at`)
    this.snapshotSeq = task.last_seq;
    this.received = 0;  // events applied since the snapshot: each once, however often we reconnect
    this.streamState = TERMINAL.includes(task.status) ? "ended" : "connecting";
    this.items = new Map();
    for (const item of task.items ?? []) {
      this.items.set(item.index, {
        name: item.name, status: item.status, stage: item.stage, message: item.message,
        percent: item.progress, error: item.error, ...counts(item.result),
      });
    }
    // an agent's steps are only events: its stream is replayed from the start (see `fromSeq`)
    this.answer = task.kind === "agent" ? new AnswerView(task) : null;
  }

  // where the task's stream starts
  get fromSeq() {
    return this.answer ? 0 : this.snapshotSeq;
  }

  get ended() {
    return TERMINAL.includes(this.status);
  }

  apply(type, data, seq) {
    if (type === "step") this.answer?.applyStep(data);
    if (seq <= this.snapshotSeq) return;  // replayed for the steps: the snapshot has the rest
    this.lastSeq = seq;
    this.lastAt = data.at ?? this.lastAt;
    this.received += 1;
    if (type === "status") this.applyStatus(data);
    else if (type === "item") this.applyItem(data);
    else if (type === "progress") this.applyProgress(data);
  }

  applyStatus(data) {
    this.status = data.status;
    this.answer?.applyResult(data.result);
    if (data.error) this.error = data.error;
    if (data.status === "completed") this.percent = 100;
    for (const outcome of data.result?.items ?? []) {
      this.applyItem({ item: outcome.index, name: outcome.name, status: outcome.status,
                       error: outcome.error, result: outcome.result });
    }
    if (this.ended) {
      for (const item of this.items.values()) {
        if (!TERMINAL.includes(item.status)) item.status = "canceled";
      }
    }
  }

  applyItem(data) {
    const item = this.item(data.item, data.name);
    if (TERMINAL.includes(item.status)) return;  // an item's outcome never changes back
    item.status = data.status;
    if (data.error) item.error = data.error;
    Object.assign(item, counts(data.result));
    if (TERMINAL.includes(data.status)) item.percent = 100;
  }

  applyProgress(data) {
    const item = this.item(data.item, data.name);
    if (data.task_percent !== undefined) this.percent = Math.max(this.percent, data.task_percent);
    if (TERMINAL.includes(item.status)) return;
    item.status = "running";
    item.percent = Math.max(item.percent ?? 0, data.percent ?? 0);
    item.stage = data.stage ?? item.stage;
    item.message = data.message ?? item.message;
    for (const key of ["pages", "pages_total", "chunks", "chunks_total"]) {
      if (data[key] !== undefined) item[key] = data[key];
    }
  }

  item(index, name) {
    if (!this.items.has(index)) this.items.set(index, { name, status: "pending", percent: 0 });
    const item = this.items.get(index);
    if (name) item.name = name;
    return item;
  }

  render() {
    $("current").hidden = false;
    $("current-id").textContent = this.id.slice(0, 8);
    $("current-id").title = this.id;
    const badge = $("current-status");
    const failed = [...this.items.values()].filter((i) => i.status === "failed").length;
    badge.textContent = this.error ? `${this.status}: ${this.error.code}`
      : this.status === "completed" && failed ? `completed · ${failed} failed` : this.status;
    badge.dataset.state = this.status;
    $("overall-bar").value = this.percent;
    $("current-live").textContent =
      `stream ${this.streamState} · last event #${this.lastSeq} · ${this.received} received`;
    $("current-live").title = this.lastAt ? `event #${this.lastSeq} at ${when(this.lastAt)}` : "";
    const done = [...this.items.values()].filter((i) => TERMINAL.includes(i.status)).length;
    $("overall-text").textContent =
      `${percentText(this.percent)} · ${done} of ${this.items.size} done`;
    $("files").replaceChildren(...[...this.items.entries()]
      .sort(([a], [b]) => a - b).map(([, item]) => fileRow(item)));
    $("cancel").disabled = this.ended;
    const anyBad = [...this.items.values()].some((i) => i.status !== "completed");
    $("retry").disabled = !(this.ended && (this.status !== "completed" || anyBad));
    $("agent").hidden = !this.answer;
    this.answer?.render(this.ended);
  }
}

function fileRow(item) {
  const state = item.error && item.status !== "completed"
    ? `${item.status}: ${item.error.code}` : item.status;
  const details = [TERMINAL.includes(item.status) ? null : item.stage];
  if (item.pages_total) details.push(`pages ${item.pages ?? 0}/${item.pages_total}`);
  if (item.chunks_total) details.push(`chunks ${item.chunks ?? 0}/${item.chunks_total}`);
  const label = `${item.name}: ${percentText(item.percent)}`;
  return el("li", { class: "file", "data-state": item.status },
    el("div", { class: "bar-line" },
      el("span", { class: "file-name", text: item.name }),
      el("span", { class: "file-state", text: state })),
    el("progress", { max: 100, value: item.percent ?? 0, "aria-label": label }),
    el("div", { class: "bar-line muted" },
      el("span", { class: "file-detail",
                   text: item.error?.message ?? details.filter(Boolean).join(" · ") }),
      el("span", { class: "pct", text: percentText(item.percent) })));
}

function counts(result) {
  if (!result || typeof result !== "object") return {};
  const out = {};
  if (result.pages !== undefined) out.pages = out.pages_total = result.pages;
  if (result.chunks !== undefined) out.chunks = out.chunks_total = result.chunks;
  return out;
}
