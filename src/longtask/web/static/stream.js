// A task's events over EventSource, each passed on once, in order, across reconnects.
//
// EventSource reconnects by itself after a drop and sends Last-Event-ID. It gives up (readyState
// CLOSED) when the server answers anything but a stream: 401 once the stream token expired, or
// 204 when the task has ended and every event was sent. On giving up we ask the task itself: if
// it ended and we saw its last event, we are done; otherwise fetch a fresh token and reopen with
// ?after=<last seq seen>. Events at or below the last seen sequence number are dropped, so a
// replay never counts twice. A failure on the way is reported as the stream's state
// ("reconnecting", with the reason), not as an error of the page: it mends itself.
//
// Live LLM text (`delta`, `text`) is never stored and has no id of its own (it arrives with the
// id of the stored event before it), so it bypasses that check and goes to `onLive`.
//
// Every event's data has `at`: when it was stored (live text: made), ISO 8601 in UTC.

import { TERMINAL } from "./status.js";

const TYPES = ["status", "item", "progress", "step"];
const LIVE_TYPES = ["delta", "text"];
const MAX_BACKOFF_MS = 15000;

export class TaskStream {
  constructor(api, taskId, lastSeq, { onEvent, onLive = () => {}, onEnd, onState }) {
    this.api = api;
    this.taskId = taskId;
    this.lastSeq = lastSeq;
    this.onEvent = onEvent;
    this.onLive = onLive;
    this.onEnd = onEnd;
    this.onState = onState;
    this.source = null;
    this.timer = null;
    this.failures = 0;
    this.stopped = false;
  }

  async open() {
    if (this.stopped) return;
    let grant;
    try {
      grant = await this.api.post(`/tasks/${this.taskId}/stream-token`);
    } catch (err) {
      this.later(err);
      return;
    }
    if (this.stopped) return;
    const url = new URL(grant.events_url, location.href);
    if (this.lastSeq > 0) url.searchParams.set("after", String(this.lastSeq));
    const source = new EventSource(url);
    this.source = source;
    for (const type of TYPES) source.addEventListener(type, (e) => this.receive(e));
    for (const type of LIVE_TYPES) {
      source.addEventListener(type, (e) => this.onLive(type, JSON.parse(e.data)));
    }
    source.addEventListener("open", () => {
      this.failures = 0;
      this.onState("live");
    });
    source.addEventListener("error", () => {
      if (source !== this.source) return;
      if (source.readyState === EventSource.CLOSED) this.recover();
      else this.onState("reconnecting");
    });
  }

  receive(event) {
    const seq = Number(event.lastEventId);
    if (!Number.isFinite(seq) || seq <= this.lastSeq) return;
    this.lastSeq = seq;
    const data = JSON.parse(event.data);
    this.onEvent(event.type, data, seq);
    if (event.type === "status" && TERMINAL.includes(data.status)) this.stop();
  }

  async recover() {
    this.source = null;
    this.onState("reconnecting");
    try {
      const task = await this.api.get(`/tasks/${this.taskId}`);
      if (TERMINAL.includes(task.status) && task.last_seq <= this.lastSeq) {
        this.stop();
        this.onEnd(task);
        return;
      }
    } catch (err) {
      this.later(err);
      return;
    }
    this.later();
  }

  later(err) {
    if (this.stopped) return;
    this.onState(err ? `reconnecting (${err.message})` : "reconnecting");
    this.failures += 1;
    const delay = Math.min(MAX_BACKOFF_MS, 250 * 2 ** Math.min(this.failures, 6));
    this.timer = setTimeout(() => this.open(), delay);
  }

  stop() {
    if (!this.stopped) this.onState("ended");
    this.stopped = true;
    clearTimeout(this.timer);
    this.source?.close();
    this.source = null;
  }
}
