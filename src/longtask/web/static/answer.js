// An agent run in the followed task's panel: its question, its steps as a list, the answer as the
// model writes it, then the citations of the stored result.
//
// Live text comes as `delta` events (put the text at its offset) and, after a reconnect, as a
// `text` event (the whole text so far: replace). A page can redraw, so it shows the text as it
// stands. What a step wrote before calling a tool moves into that step's line; the last step's
// text is the answer. Once the task has ended, the stored answer replaces what streamed: a
// retried step may have written something else.

import { $, el, when } from "./dom.js";

const RETRIEVAL_ONLY = "Retrieval only: no LLM is configured, so these are the passages that "
  + "match best.";

export class AnswerView {
  constructor(task) {
    this.question = task.params?.question ?? "";
    this.steps = [];
    this.step = 0;  // the step writing `text`
    this.text = "";
    this.result = null;
    this.applyResult(task.result);
  }

  applyStep(data) {
    if (data.tool === null || data.tool === undefined) {  // the last: its event has the answer
      this.step = data.step;
      this.text = data.answer ?? "";
      return;
    }
    const wrote = data.step === this.step ? this.text : "";
    this.steps.push({ ...data, note: wrote });
    if (wrote) this.text = "";
  }

  applyLive(type, data) {
    if (data.step !== this.step) {
      this.step = data.step;
      this.text = "";
    }
    const offset = type === "text" ? 0 : data.offset;
    if (offset <= this.text.length) this.text = this.text.slice(0, offset) + data.text;
  }

  applyResult(result) {
    if (result && typeof result === "object" && "answer" in result) this.result = result;
  }

  render(ended) {
    $("agent-question").textContent = this.question;
    $("agent-steps").replaceChildren(...this.steps.map(stepRow));
    const result = this.result;
    $("agent-method").hidden = result?.method !== "retrieval_only";
    $("agent-method").textContent = RETRIEVAL_ONLY;
    this.renderText();
    $("agent-answer").setAttribute("aria-busy", String(!ended));
    const citations = result?.citations ?? [];
    $("agent-citations-title").hidden = citations.length === 0;
    $("agent-citations").replaceChildren(...citations.map((cited) =>
      el("li", { class: "citation", text: `${cited.filename}, p. ${cited.page}` })));
  }

  renderText() {
    const result = this.result;
    $("agent-answer").textContent = result ? result.answer ?? result.message ?? "" : this.text;
  }
}

function stepRow(step) {
  return el("li", { class: "step", title: step.at ? when(step.at) : null },
    el("span", { class: "step-number", text: `Step ${step.step}` }),
    el("span", { class: "step-call", text: `${step.tool}(${args(step.arguments)})` }),
    el("span", { class: "step-summary muted", text: step.summary ? `→ ${step.summary}` : "" }),
    step.note ? el("p", { class: "step-note", text: step.note }) : null);
}

// search("levain"), read_pages(document_id="…", first=2): the call, as a person reads it
function args(values) {
  const entries = Object.entries(values ?? {});
  if (entries.length === 1) return JSON.stringify(entries[0][1]);
  return entries.map(([name, value]) => `${name}=${JSON.stringify(value)}`).join(", ");
}
