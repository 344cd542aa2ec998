// The canaryguard dashboard: one page, no build step, nothing fetched from elsewhere.
//
// Everything shown comes from the REST API under /api/v1 with the token the person signed in
// with, kept in this tab's sessionStorage only. Data goes into the page as text, never as HTML:
// deployment names, reasons and notes are typed by people (the page's Content-Security-Policy
// also makes any HTML sink throw). Live updates come from the event stream (SSE), read with
// fetch() because EventSource cannot send an Authorization header; figures that move without
// events (the canary's metrics) are read again a few seconds after each read ends.
//
// A hidden tab holds no connection and reads nothing: browsers allow six HTTP/1.1 connections
// per host, and six tabs each holding a stream would leave none for the seventh (nor for the
// six themselves). It resumes from the last event it saw when it is shown again.

const API = "/api/v1";
const TOKEN_KEY = "canaryguard.token";
const REFRESH_MS = 3000; // after a read ends, the next; metrics move without an event
const DEBOUNCE_MS = 100; // a rollback commits several events at once: one refresh for them all
const EVENT_GAP_MS = 1000; // events refresh a view at most once a second, however many come
const EVENTS_SHOWN = 50;
const ROLLBACKS_SHOWN = 20;
const SNAPSHOTS_SHOWN = 25;
const LOG_PAGE = 1000;
const RETRY_MAX_MS = 15000;
const EVENT_PREFIX = "io.canaryguard.";
const ROLE_RANK = ["reporter", "viewer", "operator", "admin"];
const FLEET_ROLLBACKS = 100; // the overview looks for open rollbacks among this many newest

// The server's rule for deployment names (canaryguard.domain.rollout: _NAME and
// RESERVED_LAST_PARTS). Every part starts with a letter or digit, so "." and ".." never pass:
// a browser would collapse them in the request's URL, and the page would act on another name.
const NAME_RULE = /^[a-z0-9][a-z0-9._-]{0,62}(\/[a-z0-9][a-z0-9._-]{0,62}){0,3}$/;
const RESERVED_LAST_PARTS = new Set([
  "abort",
  "assignment",
  "canary",
  "config",
  "metrics",
  "observations",
  "promote",
  "rollbacks",
  "snapshots",
  "split",
  "status",
  "verdict",
  "veto",
]);

function isDeploymentName(name) {
  if (!NAME_RULE.test(name)) return false;
  const parts = name.split("/");
  if (parts.some((part) => part === "." || part === "..")) return false; // the rule says so too
  return parts.length === 1 || !RESERVED_LAST_PARTS.has(parts[parts.length - 1]);
}

// ---------------------------------------------------------------- DOM, as text only

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = String(value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value === true) node.setAttribute(key, "");
    else node.setAttribute(key, String(value));
  }
  put(node, children);
  return node;
}

function put(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : String(child)); // strings become text nodes
  }
  return node;
}

function fill(node, ...children) {
  node.replaceChildren();
  return put(node, children);
}

// ---------------------------------------------------------------- formatting

const number = new Intl.NumberFormat("en");
const count = (n) => number.format(Number(n ?? 0));
const errorRate = (v) => (v && v.requests ? Math.min(v.errors / v.requests, 1) : 0);
const percent = (fraction) => `${(fraction * 100).toFixed(2)} %`;
const millis = (value) => `${Number(value ?? 0).toFixed(1)} ms`;
const share = (basisPoints) => `${number.format(basisPoints / 100)} %`;
const ref = (policy) => (policy ? `${policy.name}@${policy.version}` : "");
const shortType = (type) => String(type).replace(EVENT_PREFIX, "");

function when(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  const p = (n) => String(n).padStart(2, "0");
  return (
    `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ` +
    `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`
  );
}

const time = (iso) => (iso ? el("time", { datetime: iso, title: iso, text: when(iso) }) : "");
const badge = (kind, text) => el("span", { class: `badge ${kind}`, text });
const stateBadge = (state) => badge(`state state-${state}`, state);
const deploymentHash = (name) =>
  `#/deployments/${name.split("/").map(encodeURIComponent).join("/")}`;
const deploymentPath = (name) =>
  `/deployments/${name.split("/").map(encodeURIComponent).join("/")}`;

function orList(items) {
  if (items.length < 2) return items.join("");
  return `${items.slice(0, -1).join(", ")} or ${items[items.length - 1]}`;
}

// ---------------------------------------------------------------- the API

const session = {
  get token() {
    return sessionStorage.getItem(TOKEN_KEY);
  },
  keep(token) {
    sessionStorage.setItem(TOKEN_KEY, token);
  },
  forget() {
    sessionStorage.removeItem(TOKEN_KEY);
  },
};

class ApiError extends Error {
  constructor(status, detail, problem) {
    super(detail);
    this.status = status; // 0: no answer
    this.detail = detail;
    this.problem = problem;
  }
}

async function request(method, path, { body, token } = {}) {
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  const init = { method, headers, cache: "no-store", credentials: "omit" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(API + path, init);
  } catch (error) {
    throw new ApiError(0, `the server did not answer (${error.message})`, null);
  }
  const text = await response.text();
  let payload = null;
  try {
    payload = text ? JSON.parse(text) : null;
  } catch {
    payload = null;
  }
  if (!response.ok) {
    const detail =
      payload && typeof payload.detail === "string" ? payload.detail : text || response.statusText;
    throw new ApiError(response.status, detail, payload);
  }
  return payload;
}

// A call with the signed-in token; a 401 means the token is gone (revoked, expired): sign out.
async function api(method, path, body) {
  const token = session.token;
  try {
    return await request(method, path, { body, token });
  } catch (error) {
    if (error instanceof ApiError && error.status === 401 && token && token === session.token) {
      signOut("The server no longer accepts this token: sign in again.", error.detail);
    }
    throw error;
  }
}

const query = (params) => `?${new URLSearchParams(params)}`;
const capital = (text) => `${text[0].toUpperCase()}${text.slice(1)}`;

// What a refusal means for the person, in one sentence; the server's detail is shown after it.
function explain(error, doing) {
  if (!(error instanceof ApiError)) return `${doing} failed: ${error}`;
  if (error.status === 0) return `The server did not answer: ${doing} may not have happened.`;
  if (error.status === 401) return "This token is unknown, revoked or expired.";
  if (error.status === 403) {
    const match = /^the (\w+) role may not do this; it needs (.+)$/.exec(error.detail);
    if (match) {
      const needed = match[2]
        .split(", ")
        .sort((a, b) => ROLE_RANK.indexOf(a) - ROLE_RANK.indexOf(b));
      return `This token is a ${match[1]}: ${doing} needs ${orList(needed)}.`;
    }
    return `Refused: ${doing} is not allowed.`;
  }
  if (error.status === 404) return `Not found (${doing}).`;
  if (error.status === 409 || error.status === 412) return `Refused (${doing}): a conflict.`;
  return `${capital(doing)} failed (HTTP ${error.status}).`;
}

function notice(kind, text, detail) {
  const role = kind === "error" ? "alert" : "status";
  return el(
    "div",
    { class: `notice ${kind}`, role },
    el("p", { text }),
    detail
      ? el("p", { class: "detail" }, "Server: ", el("q", { class: "problem", text: detail }))
      : null,
  );
}

const errorNotice = (error, doing) =>
  notice("error", explain(error, doing), error instanceof ApiError ? error.detail : null);

// ---------------------------------------------------------------- the live event stream

// Server-Sent Events as the spec reads them, from text chunks that may split lines anywhere.
class SseParser {
  constructor(onMessage, onRetry) {
    this.onMessage = onMessage;
    this.onRetry = onRetry;
    this.buffer = "";
    this.data = [];
    this.event = "";
    this.id = null;
  }

  feed(chunk) {
    let text = this.buffer + chunk;
    let held = "";
    if (text.endsWith("\r")) {
      // maybe the first half of "\r\n": decide when the next chunk comes
      held = "\r";
      text = text.slice(0, -1);
    }
    const lines = text.split(/\r\n|\r|\n/);
    this.buffer = lines.pop() + held;
    for (const line of lines) this.line(line);
  }

  line(line) {
    if (line === "") {
      if (this.data.length) {
        this.onMessage({ id: this.id, event: this.event || "message", data: this.data.join("\n") });
      }
      this.data = [];
      this.event = "";
      return;
    }
    if (line.startsWith(":")) return; // a comment: heartbeats
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.data.push(value);
    else if (field === "event") this.event = value;
    else if (field === "id" && !value.includes("\0")) this.id = value;
    else if (field === "retry" && /^\d+$/.test(value)) this.onRetry(Number(value));
  }
}

// The event stream of one view: every event (the overview) or one deployment's. It starts from
// the position the view gives (the newest event it has read), so nothing committed between
// that read and the connection is missed, and resumes from the last event seen after a drop.
class LiveStream {
  constructor({ deployment, after, onEvent, onOpen, onState, onReset }) {
    this.path = `${API}/events${deployment ? query({ deployment }) : ""}`;
    this.onEvent = onEvent;
    this.onOpen = onOpen;
    this.onState = onState;
    this.onReset = onReset;
    this.lastEventId = after ?? null;
    this.retryMs = 1000;
    this.stopped = false;
    this.controller = null;
  }

  start() {
    this.run();
  }

  stop() {
    this.stopped = true;
    if (this.controller) this.controller.abort();
  }

  async run() {
    let failures = 0;
    let resets = 0;
    while (!this.stopped) {
      this.controller = new AbortController();
      const headers = { Accept: "text/event-stream", Authorization: `Bearer ${session.token}` };
      // the server replays exactly the events after this one: nothing is missed across a drop
      const fromPosition = this.lastEventId !== null;
      if (fromPosition) headers["Last-Event-ID"] = this.lastEventId;
      this.onState(failures ? "reconnecting" : "connecting");
      try {
        const response = await fetch(this.path, {
          headers,
          cache: "no-store",
          credentials: "omit",
          signal: this.controller.signal,
        });
        if (this.stopped) {
          await response.body?.cancel();
          return;
        }
        if (response.status === 401) {
          const detail = await response.text().catch(() => "");
          let problem = null;
          try {
            problem = JSON.parse(detail);
          } catch {
            problem = null;
          }
          signOut(
            "The server no longer accepts this token: sign in again.",
            problem?.detail ?? detail,
          );
          return;
        }
        if (response.status === 400 && fromPosition) {
          // an id beyond the newest event: from another database (one restored or replaced).
          // The view reads its events afresh and says where to start; a second refusal in a
          // row starts at the newest event.
          await response.body?.cancel();
          resets += 1;
          this.lastEventId = resets > 1 ? null : ((await this.onReset()) ?? null);
          continue;
        }
        if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
        failures = 0;
        resets = 0;
        this.onState("live");
        this.onOpen(fromPosition);
        await this.read(response.body);
      } catch {
        if (this.stopped) return;
      }
      if (this.stopped) return;
      failures += 1;
      this.onState("reconnecting");
      const wait = Math.min(this.retryMs * 2 ** Math.min(failures - 1, 4), RETRY_MAX_MS);
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
  }

  async read(body) {
    const parser = new SseParser(
      (message) => {
        if (this.stopped) return;
        if (message.id !== null) this.lastEventId = message.id;
        let cloudEvent;
        try {
          cloudEvent = JSON.parse(message.data);
        } catch {
          return;
        }
        this.onEvent(cloudEvent);
      },
      (ms) => {
        this.retryMs = ms;
      },
    );
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    for (;;) {
      const { value, done } = await reader.read();
      if (done || this.stopped) return;
      parser.feed(value);
    }
  }
}

// ---------------------------------------------------------------- views

// A view reloads what it shows. One load at a time: the next poll starts REFRESH_MS after the
// last load ended (a slow server is polled less, never continuously); refreshes asked for by
// events wait until EVENT_GAP_MS after the last load started, so a burst of events costs one
// load; a hidden view loads nothing and keeps no timer.
class View {
  constructor() {
    this.closed = false;
    this.paused = document.hidden;
    this.loading = false;
    this.dirty = false; // asked for while loading: once more when the load ends
    this.timer = null;
    this.due = Infinity; // when the timer fires
    this.lastStart = -Infinity;
    this.position = null; // where this view's event stream starts: the newest event it read
    this.streamReady = false;
  }

  // The position to start the event stream from, once what the view shows from the event log
  // has been read (null: the newest event, with a refresh when the stream opens).
  async startPosition() {
    return null;
  }

  // The stream's position was refused (another database): start again from what this returns.
  async restart() {
    return null;
  }

  close() {
    this.closed = true;
    this.cancelTimer();
  }

  pause() {
    this.paused = true;
    this.cancelTimer();
  }

  resume() {
    this.paused = false;
    this.refresh();
  }

  cancelTimer() {
    clearTimeout(this.timer);
    this.timer = null;
    this.due = Infinity;
  }

  // Load in `delay` ms, unless a load is already due sooner.
  plan(delay) {
    if (this.closed || this.paused) return;
    if (this.loading) {
      this.dirty = true;
      return;
    }
    if (delay <= 0) {
      this.cancelTimer();
      this.run();
      return;
    }
    const at = Date.now() + delay;
    if (at >= this.due) return;
    clearTimeout(this.timer);
    this.due = at;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.due = Infinity;
      this.run();
    }, delay);
  }

  // Now: a person's action, the view opened or shown again.
  refresh() {
    this.plan(0);
  }

  // An event: soon, and at most once per EVENT_GAP_MS however many come.
  schedule() {
    this.plan(Math.max(DEBOUNCE_MS, this.lastStart + EVENT_GAP_MS - Date.now()));
  }

  async run() {
    if (this.closed || this.paused) return;
    this.loading = true;
    this.dirty = false;
    this.lastStart = Date.now();
    try {
      await this.load();
    } finally {
      this.loading = false;
      if (this.dirty) {
        this.dirty = false;
        this.schedule();
      } else {
        this.plan(REFRESH_MS);
      }
    }
  }
}

// Redraw `container` with `render()` without losing the focused control: a control redrawn
// while it has focus gets it back (the same `data-focus` key).
function keepingFocus(container, render) {
  const active = document.activeElement;
  const key = active && container.contains(active) ? active.dataset.focus : undefined;
  render();
  if (key === undefined || container.contains(active)) return;
  const again = [...container.querySelectorAll("[data-focus]")].find(
    (node) => node.dataset.focus === key,
  );
  if (again && !again.disabled) again.focus();
}

// Put `nodes` in `container` in that order, moving only what must move: a node that stays
// where it is keeps its focus, and a click in progress on it is not lost.
function reconcile(container, nodes) {
  nodes.forEach((node, i) => {
    const current = container.children[i];
    if (current !== node) container.insertBefore(node, current ?? null);
  });
  while (container.children.length > nodes.length) container.lastElementChild.remove();
}

function metricPair(canary, stable, format, worse) {
  return el(
    "div",
    { class: "pair" },
    el(
      "span",
      { class: worse ? "canary worse" : "canary" },
      el("abbr", { title: "canary", text: "c" }),
      " ",
      format(canary),
    ),
    el(
      "span",
      { class: "stable" },
      el("abbr", { title: "stable", text: "s" }),
      " ",
      format(stable),
    ),
  );
}

function verdictCell(verdict) {
  if (!verdict) return "";
  if (!verdict.judged) return badge("verdict not_judged", "not judged");
  const parts = [badge(`verdict ${verdict.verdict}`, verdict.verdict)];
  const evidence = [verdict.condition, verdict.reason].filter(Boolean).join(": ");
  if (evidence) parts.push(el("div", { class: "evidence", text: evidence }));
  const decision = verdict.decision;
  if (decision && decision.veto_until && !decision.rollback_id && !decision.vetoed_by) {
    parts.push(
      el(
        "div",
        { class: "evidence" },
        "automatic rollback at ",
        time(decision.veto_until),
        " unless vetoed",
      ),
    );
  }
  return parts;
}

class Overview extends View {
  constructor() {
    super();
    this.notice = el("div", { class: "notices" });
    this.body = el("tbody");
    this.updated = el("p", { class: "updated" });
    this.rollbacksChanged = 0;
    this.rollbacksRead = -1;
    this.openRollbacks = null;
    this.root = el(
      "section",
      { class: "overview" },
      el("h1", { text: "Deployments" }),
      this.notice,
      el(
        "table",
        { id: "deployments" },
        el(
          "thead",
          {},
          el(
            "tr",
            {},
            [
              "deployment",
              "state",
              "stable",
              "canary",
              "canary %",
              "revision",
              "requests",
              "error rate",
              "p99",
              "verdict",
            ].map((heading) => el("th", { scope: "col", text: heading })),
          ),
        ),
        this.body,
      ),
      this.updated,
    );
  }

  onEvent(cloudEvent) {
    if (shortType(cloudEvent.type).startsWith("rollback.")) this.rollbacksChanged += 1;
    this.schedule(); // any deployment's change, or a new deployment
  }

  reopened() {
    this.rollbacksChanged += 1; // events may have been missed: read everything again
    this.schedule();
  }

  // Open rollbacks by deployment, among the newest of the fleet (the API lists rollbacks newest
  // first, without a status filter). Read again only after a rollback event: every change of a
  // rollback's status is one.
  async fleetRollbacks() {
    const changes = this.rollbacksChanged;
    if (this.openRollbacks && this.rollbacksRead === changes) return this.openRollbacks;
    let records;
    try {
      records = await api("GET", `/rollbacks${query({ limit: FLEET_ROLLBACKS })}`);
    } catch {
      return this.openRollbacks ?? new Map(); // shown without them until the next read
    }
    const open = new Map();
    for (const r of records) {
      if (r.status !== "pending" && r.status !== "running") continue;
      if (!open.has(r.deployment)) open.set(r.deployment, []);
      open.get(r.deployment).push(r);
    }
    this.openRollbacks = open;
    this.rollbacksRead = changes;
    return open;
  }

  async load() {
    let deployments, fleet;
    try {
      [deployments, fleet] = await Promise.all([api("GET", "/deployments"), this.fleetRollbacks()]);
    } catch (error) {
      if (!this.closed) fill(this.notice, errorNotice(error, "reading the deployments"));
      return;
    }
    // the figures of running canaries; one that cannot be read is shown without them
    const figures = await Promise.all(
      deployments.map((d) =>
        d.canary
          ? Promise.all([
              api("GET", `${deploymentPath(d.name)}/status`),
              api("GET", `${deploymentPath(d.name)}/verdict`),
            ]).catch(() => [null, null])
          : [null, null],
      ),
    );
    if (this.closed) return;
    fill(this.notice);
    if (!deployments.length) {
      fill(
        this.body,
        el(
          "tr",
          {},
          el(
            "td",
            { colspan: 10, class: "empty" },
            "No deployments yet: ",
            el("code", { text: "canaryguard deploy create NAME --stable POLICY@VERSION" }),
          ),
        ),
      );
    } else {
      keepingFocus(this.body, () =>
        fill(
          this.body,
          deployments.map((d, i) => this.row(d, fleet.get(d.name) ?? [], ...figures[i])),
        ),
      );
    }
    fill(this.updated, "Updated ", time(new Date().toISOString()));
  }

  row(d, fleetOpen, status, verdict) {
    const m = status ? status.metrics : null;
    const open = new Map(fleetOpen.map((r) => [r.id, r]));
    for (const r of status ? status.open_rollbacks : []) open.set(r.id, r); // fresher
    const cells = m
      ? [
          metricPair(m.canary.requests, m.stable.requests, count, false),
          metricPair(
            errorRate(m.canary),
            errorRate(m.stable),
            percent,
            errorRate(m.canary) > errorRate(m.stable),
          ),
          metricPair(m.canary.p99_ms, m.stable.p99_ms, millis, m.canary.p99_ms > m.stable.p99_ms),
          verdictCell(verdict),
        ]
      : ["", "", "", ""];
    return el(
      "tr",
      { "data-deployment": d.name },
      el(
        "th",
        { scope: "row" },
        el("a", { href: deploymentHash(d.name), text: d.name, "data-focus": `open:${d.name}` }),
      ),
      el(
        "td",
        {},
        stateBadge(d.state),
        [...open.values()].map((r) =>
          el("div", { class: "evidence", text: `rollback ${r.id} ${r.status}` }),
        ),
      ),
      el("td", { class: "ref", text: ref(d.stable) }),
      el("td", { class: "ref", text: ref(d.canary) }),
      el("td", { class: "num split", text: d.canary ? share(d.split.canary_basis_points) : "" }),
      el("td", { class: "num revision", text: d.revision }),
      cells.map((cell) => el("td", {}, cell)),
    );
  }
}

function describeEvent(e) {
  const d = e.data || {};
  switch (shortType(e.type)) {
    case "deployment.created":
      return `stable ${d.stable}`;
    case "canary.started":
      return `${d.canary} on ${d.percentage} % (${d.criterion})`;
    case "split.changed":
      return `${d.from_percentage} % → ${d.to_percentage} %`;
    case "canary.promoted":
      return `stable is now ${d.stable}`;
    case "canary.aborted":
      return d.reason;
    case "config.changed":
      return Object.keys(d.changes || {}).join(", ");
    case "snapshot.created":
      return `${d.snapshot_id} (${d.kind}${d.pinned ? ", pinned" : ""})`;
    case "canary.regression_detected":
      return d.action === "veto_window"
        ? `${d.condition}: ${d.reason}; rolls back at ${when(d.veto_until)} unless vetoed`
        : `${d.condition}: ${d.reason}; automatic rollback is off`;
    case "rollback.auto_triggered":
      return `${d.rollback_id}: ${d.reason}`;
    case "rollback.auto_vetoed":
      return `vetoed by ${d.vetoed_by}: ${d.condition}: ${d.reason}`;
    case "rollback.manual_initiated":
      return `${d.rollback_id} by ${d.initiated_by}: ${d.reason}`;
    case "rollback.progress":
      return `${d.rollback_id}: stage ${d.stage}, canary at ${d.percentage} %`;
    case "rollback.completed":
      return `${d.rollback_id}: ${d.success ? d.final_state : "failed"} in ${Number(d.duration_ms).toFixed(1)} ms`;
    case "rollback.cancelled":
      return `${d.rollback_id} ${d.status} by ${d.closed_by}`;
    case "rollback.failed":
      return `${d.rollback_id}: ${d.error}`;
    default:
      return JSON.stringify(d).slice(0, 200);
  }
}

function rollbackProgress(r) {
  if (r.mode !== "staged" || !r.stages.length) return r.status === "completed" ? "done" : "";
  const applied = r.stages.filter((s) => s.applied_at);
  const last = applied[applied.length - 1];
  return el(
    "div",
    { class: "progress" },
    el("progress", {
      max: r.stages.length,
      value: applied.length,
      "aria-label": `${applied.length} of ${r.stages.length} stages`,
    }),
    ` ${applied.length}/${r.stages.length} stages`,
    last ? `, canary at ${last.target_percentage} %` : "",
    r.held ? el("div", { class: "evidence", text: `held: ${r.held}` }) : null,
    r.status === "running" && r.next_step_at
      ? el("div", { class: "evidence" }, "next step ", time(r.next_step_at))
      : null,
  );
}

class DeploymentPage extends View {
  constructor(name) {
    super();
    this.name = name;
    this.path = deploymentPath(name);
    this.deployment = null;
    this.snapshots = [];
    this.events = new Map(); // CloudEvents by sequence number (the log and the stream overlap)
    this.busy = new Set(); // actions sent and not yet answered: their buttons stay disabled
    this.rollbackRows = new Map(); // rollback id -> { key, node }: unchanged rows are kept
    this.decisionKey = null; // the decision drawn, to redraw it only when it changes
    this.formAction = undefined; // the action of the open form
    this.loadNotice = el("div", { class: "notices" });
    this.actionNotice = el("div", { class: "notices", id: "action-result" });
    this.summary = el("dl", { class: "summary" });
    this.figures = el("div", { class: "figures" });
    this.verdict = el("div", { class: "verdict-detail" });
    this.decision = el("div", { class: "decision-slot" });
    this.rollbacks = el("tbody");
    this.snapshotRows = el("tbody");
    this.eventList = el("ul", { class: "events" });
    this.form = el("div", { class: "form-slot" });
    this.buttons = {
      // disabled until the deployment is read: each action sends the revision it shows
      rollback: el(
        "button",
        { type: "button", class: "danger", disabled: true, onclick: () => this.rollbackForm() },
        "Roll back…",
      ),
      promote: el(
        "button",
        { type: "button", disabled: true, onclick: () => this.promoteForm() },
        "Promote…",
      ),
      abort: el(
        "button",
        { type: "button", disabled: true, onclick: () => this.abortForm() },
        "Abort…",
      ),
    };
    this.title = el("span", { class: "name", text: name });
    this.updated = el("p", { class: "updated" });
    this.root = el(
      "section",
      { class: "deployment", "data-deployment": name },
      el("p", { class: "back" }, el("a", { href: "#/", text: "← all deployments" })),
      el("h1", {}, this.title),
      this.loadNotice,
      this.summary,
      el(
        "section",
        { class: "actions", "aria-label": "actions" },
        el("h2", { text: "Actions" }),
        el("div", { class: "buttons" }, Object.values(this.buttons)),
        this.actionNotice,
        this.form,
      ),
      el("section", {}, el("h2", { text: "Canary vs stable" }), this.figures),
      el("section", {}, el("h2", { text: "Detector" }), this.verdict, this.decision),
      el(
        "section",
        {},
        el("h2", { text: "Rollbacks" }),
        el(
          "table",
          { id: "rollbacks" },
          el(
            "thead",
            {},
            el(
              "tr",
              {},
              [
                "id",
                "kind",
                "mode",
                "status",
                "progress",
                "reason",
                "by",
                "started",
                "took",
                "",
              ].map((h) => el("th", { scope: "col", text: h })),
            ),
          ),
          this.rollbacks,
        ),
      ),
      el(
        "section",
        {},
        el("h2", { text: "Snapshots" }),
        el(
          "table",
          { id: "snapshots" },
          el(
            "thead",
            {},
            el(
              "tr",
              {},
              ["id", "kind", "revision", "taken", "pinned"].map((h) =>
                el("th", { scope: "col", text: h }),
              ),
            ),
          ),
          this.snapshotRows,
        ),
      ),
      el("section", {}, el("h2", { text: "Recent events" }), this.eventList),
      this.updated,
    );
  }

  onEvent(cloudEvent) {
    if (cloudEvent.subject !== this.name) return;
    this.remember([cloudEvent]);
    this.schedule();
  }

  reopened() {
    this.schedule();
  }

  // The stream starts from the newest event of the log read: none is missed in between.
  async startPosition() {
    return this.loadEvents();
  }

  // The server does not know the stream's position (another database): read the list afresh.
  async restart() {
    this.events.clear();
    fill(this.eventList);
    return this.loadEvents();
  }

  remember(events) {
    for (const e of events) this.events.set(Number(e.id), e);
    const seqs = [...this.events.keys()].sort((a, b) => b - a);
    for (const seq of seqs.slice(EVENTS_SHOWN)) this.events.delete(seq);
    fill(
      this.eventList,
      seqs.slice(0, EVENTS_SHOWN).map((seq) => {
        const e = this.events.get(seq);
        return el(
          "li",
          { "data-seq": seq, "data-type": shortType(e.type) },
          time(e.time),
          " ",
          el("span", { class: "type", text: shortType(e.type) }),
          " ",
          el("span", { class: "what", text: describeEvent(e) }),
        );
      }),
    );
  }

  // The newest events of the deployment: the log reads oldest first, so page to its end. The
  // newest sequence number read (as the stream's ids are written), or null when the log could
  // not be read.
  async loadEvents() {
    const kept = [];
    let after = 0;
    try {
      for (;;) {
        const page = await api(
          "GET",
          `/events/log${query({ deployment: this.name, after, limit: LOG_PAGE })}`,
        );
        kept.push(...page);
        kept.splice(0, Math.max(0, kept.length - EVENTS_SHOWN));
        if (page.length < LOG_PAGE || this.closed) break;
        after = Number(page[page.length - 1].id);
      }
    } catch (error) {
      if (!this.closed) put(this.loadNotice, errorNotice(error, "reading the events"));
      return null;
    }
    if (this.closed) return null;
    this.remember(kept);
    return kept.length ? String(kept[kept.length - 1].id) : String(after);
  }

  async load() {
    let status, verdict, rollbacks, snapshots;
    try {
      [status, verdict, rollbacks, snapshots] = await Promise.all([
        api("GET", `${this.path}/status`),
        api("GET", `${this.path}/verdict`),
        api("GET", `${this.path}/rollbacks${query({ limit: ROLLBACKS_SHOWN })}`),
        api("GET", `${this.path}/snapshots`),
      ]);
    } catch (error) {
      if (!this.closed) fill(this.loadNotice, errorNotice(error, `reading ${this.name}`));
      return;
    }
    if (this.closed) return;
    fill(this.loadNotice);
    this.deployment = status.deployment;
    this.snapshots = snapshots;
    this.renderSummary(status);
    this.renderFigures(status.metrics);
    this.renderVerdict(verdict);
    this.renderRollbacks(rollbacks);
    this.renderSnapshots(snapshots);
    this.syncButtons();
    fill(this.updated, "Updated ", time(new Date().toISOString()));
  }

  // Enabled when the deployment is read and no such action waits for its answer.
  syncButtons() {
    const d = this.deployment;
    const hasCanary = Boolean(d && d.canary);
    this.buttons.rollback.disabled = !d || this.busy.has("rollback");
    this.buttons.promote.disabled = !hasCanary || this.busy.has("promote");
    this.buttons.abort.disabled = !hasCanary || this.busy.has("abort");
  }

  renderSummary(status) {
    const d = status.deployment;
    const r = status.rollbacks;
    const split = d.split;
    const groups = [
      split.canary_groups.length ? `canary: ${split.canary_groups.join(", ")}` : "",
      split.stable_groups.length ? `stable: ${split.stable_groups.join(", ")}` : "",
    ].filter(Boolean);
    const row = (term, ...value) => [el("dt", { text: term }), el("dd", {}, ...value)];
    fill(
      this.summary,
      row(
        "state",
        stateBadge(d.state),
        " since ",
        time(d.state_since),
        d.state_reason ? el("span", { class: "reason", text: `: ${d.state_reason}` }) : null,
      ),
      row("revision", el("span", { class: "revision", text: d.revision })),
      row("stable", el("span", { class: "ref", text: ref(d.stable) })),
      row(
        "canary",
        d.canary
          ? [
              el("span", { class: "ref", text: ref(d.canary) }),
              " on ",
              el("span", { class: "split", text: share(split.canary_basis_points) }),
              ` (by ${split.criterion}${split.attribute ? ` ${split.attribute}` : ""})`,
            ]
          : "none",
      ),
      groups.length ? row("groups", groups.join("; ")) : null,
      row(
        "rollbacks",
        `${r.total_rollbacks} (${r.auto_rollbacks} automatic, ${r.manual_rollbacks} manual, ${r.failed_rollbacks} failed)`,
      ),
      row(
        "confirmation",
        d.config.require_second_person
          ? "a second person confirms every manual rollback"
          : "not required",
      ),
    );
  }

  renderFigures(m) {
    const rows = ["canary", "stable"].map((variant) => {
      const v = m[variant];
      return el(
        "tr",
        { "data-variant": variant },
        el("th", { scope: "row", text: variant }),
        [
          count(v.requests),
          count(v.errors),
          percent(errorRate(v)),
          millis(v.requests ? v.latency_sum_ms / v.requests : 0),
          millis(v.p50_ms),
          millis(v.p99_ms),
          millis(v.latency_max_ms),
        ].map((text) => el("td", { class: "num", text })),
      );
    });
    fill(
      this.figures,
      el(
        "table",
        { id: "figures" },
        el("caption", {
          text: `the last ${number.format(m.window_seconds / 60)} min, until ${when(m.until)}`,
        }),
        el(
          "thead",
          {},
          el(
            "tr",
            {},
            ["variant", "requests", "errors", "error rate", "mean", "p50", "p99", "max"].map((h) =>
              el("th", { scope: "col", text: h }),
            ),
          ),
        ),
        el("tbody", {}, rows),
      ),
    );
  }

  renderVerdict(v) {
    if (!v.judged) {
      fill(
        this.verdict,
        el("p", {}, badge("verdict not_judged", "not judged"), " no canary under judgement"),
      );
      this.renderDecision(null);
      return;
    }
    const parts = [el("p", {}, verdictCell(v))];
    if (v.waiting) parts.push(el("p", { class: "evidence", text: `waiting: ${v.waiting}` }));
    if (v.tests.length) {
      parts.push(
        el(
          "table",
          { class: "tests" },
          el("caption", {
            text: "sequential tests (rolls back when the e-value reaches the threshold)",
          }),
          el(
            "thead",
            {},
            el(
              "tr",
              {},
              [
                "test",
                "e-value",
                "threshold",
                "canary",
                "stable",
                "canary requests",
                "stable requests",
              ].map((h) => el("th", { scope: "col", text: h })),
            ),
          ),
          el(
            "tbody",
            {},
            v.tests.map((t) =>
              el(
                "tr",
                {},
                el("th", { scope: "row", text: t.name }),
                [
                  t.e_value.toFixed(2),
                  number.format(Math.round(t.threshold)),
                  percent(t.canary_rate),
                  percent(t.stable_rate),
                  count(t.canary_requests),
                  count(t.stable_requests),
                ].map((text) => el("td", { class: "num", text })),
              ),
            ),
          ),
        ),
      );
    }
    if (v.conditions.length) {
      parts.push(
        el(
          "ul",
          { class: "conditions" },
          v.conditions.map((c) =>
            el(
              "li",
              { class: c.fired ? "fired" : "" },
              el("strong", { text: c.fired ? "fired" : "ok" }),
              ` ${c.fired_as}: ${c.reason}`,
            ),
          ),
        ),
      );
    }
    fill(this.verdict, parts);
    this.renderDecision(v.decision ?? null);
  }

  // The monitor's decision, with Veto… while it waits: redrawn only when it changes.
  renderDecision(decision) {
    const key = JSON.stringify(decision);
    if (key === this.decisionKey) return;
    this.decisionKey = key;
    if (!decision) {
      fill(this.decision);
      return;
    }
    const waiting = decision.veto_until && !decision.rollback_id && !decision.vetoed_by;
    keepingFocus(this.decision, () =>
      fill(
        this.decision,
        el(
          "div",
          { class: "decision" },
          el(
            "p",
            {},
            "Decision: ",
            decision.reason,
            decision.rollback_id ? ` (rollback ${decision.rollback_id})` : "",
            decision.vetoed_by ? ` vetoed by ${decision.vetoed_by}` : "",
          ),
          waiting
            ? el(
                "p",
                {},
                "Rolls back at ",
                time(decision.veto_until),
                " unless vetoed. ",
                el(
                  "button",
                  {
                    type: "button",
                    "data-focus": "veto",
                    "data-action": "veto",
                    disabled: this.busy.has("veto"),
                    onclick: () => this.vetoForm(decision),
                  },
                  "Veto…",
                ),
              )
            : null,
        ),
      ),
    );
  }

  // A row is built again only when its rollback changed: its buttons keep their focus, and a
  // click is never lost to a redraw. Whether an action on it waits is syncBusy's.
  renderRollbacks(records) {
    const rows = new Map();
    const nodes = records.map((r) => {
      const key = JSON.stringify(r);
      const kept = this.rollbackRows.get(r.id);
      const node = kept && kept.key === key ? kept.node : this.rollbackRow(r);
      rows.set(r.id, { key, node });
      return node;
    });
    this.rollbackRows = rows;
    if (!nodes.length) {
      nodes.push(el("tr", {}, el("td", { colspan: 10, class: "empty", text: "No rollbacks." })));
    }
    keepingFocus(this.rollbacks, () => reconcile(this.rollbacks, nodes));
  }

  rollbackRow(r) {
    const action = `rollback:${r.id}`;
    const button = (label, verb, onclick) =>
      el(
        "button",
        {
          type: "button",
          "data-focus": `${verb}:${r.id}`,
          "data-action": action,
          disabled: this.busy.has(action),
          onclick,
        },
        label,
      );
    const actions = [];
    if (r.status === "pending") {
      actions.push(
        button("Confirm…", "confirm", () => this.confirmForm(r)),
        button("Cancel…", "cancel", () => this.cancelForm(r)),
      );
    }
    if (r.status === "running" && r.mode === "staged") {
      actions.push(button("Finish now…", "escalate", () => this.escalateForm(r)));
    }
    const by = [
      r.actor,
      r.confirmed_by ? `confirmed by ${r.confirmed_by}` : "",
      r.cancelled_by ? `cancelled by ${r.cancelled_by}` : "",
    ]
      .filter(Boolean)
      .join(", ");
    return el(
      "tr",
      { "data-rollback": r.id, "data-status": r.status },
      el("td", { class: "id", text: r.id }),
      el("td", { text: r.kind }),
      el("td", { text: r.mode }),
      el(
        "td",
        {},
        badge(`status status-${r.status}`, r.status),
        r.status === "pending" && r.expires_at
          ? el("div", { class: "evidence" }, "expires ", time(r.expires_at))
          : null,
        r.error ? el("div", { class: "evidence", text: r.error }) : null,
      ),
      el("td", {}, rollbackProgress(r)),
      el("td", { class: "reason", text: r.reason }),
      el("td", { text: by }),
      el("td", {}, time(r.started_at || r.created_at)),
      el("td", {
        class: "num",
        text: r.duration_ms === null || r.duration_ms === undefined ? "" : millis(r.duration_ms),
      }),
      el("td", {}, actions),
    );
  }

  renderSnapshots(snapshots) {
    const newest = [...snapshots].sort((a, b) => b.seq - a.seq);
    const rows = newest
      .slice(0, SNAPSHOTS_SHOWN)
      .map((s) =>
        el(
          "tr",
          { "data-snapshot": s.id },
          el("td", { class: "id", text: s.id }),
          el("td", { text: s.kind }),
          el("td", { class: "num", text: s.revision }),
          el("td", {}, time(s.created_at)),
          el("td", { text: s.pinned ? "pinned" : "" }),
        ),
      );
    if (newest.length > SNAPSHOTS_SHOWN) {
      rows.push(
        el(
          "tr",
          {},
          el(
            "td",
            { colspan: 5, class: "empty" },
            `${newest.length - SNAPSHOTS_SHOWN} older: `,
            el("code", { text: `canaryguard snapshot list ${this.name}` }),
          ),
        ),
      );
    }
    if (!rows.length)
      rows.push(el("tr", {}, el("td", { colspan: 5, class: "empty", text: "No snapshots." })));
    fill(this.snapshotRows, rows);
  }

  // ---- actions: each asks first, sends the revision shown (a change in between is refused
  // with 409, not silently overruled), and shows the server's answer as it is

  say(node) {
    fill(this.actionNotice, node);
  }

  // Close the form; with `action`, only if the form open is still that action's (the person
  // may have opened another while it waited for its answer).
  closeForm(action) {
    if (action !== undefined && this.formAction !== action) return;
    this.formAction = undefined;
    fill(this.form);
  }

  // Buttons that send an action carry its key (data-action): disabled while it waits.
  syncBusy() {
    this.syncButtons();
    for (const node of this.root.querySelectorAll("button[data-action]")) {
      node.disabled = this.busy.has(node.dataset.action);
    }
  }

  // Send an action once. `key` names what it acts on ("promote", "rollback:ID"): until the
  // answer comes, every button for it stays disabled, however often the page is redrawn. A
  // conflict closes the form: what it showed is out of date, and the next try starts from the
  // deployment as it is now.
  async act(key, doing, call, done) {
    if (this.busy.has(key)) return;
    this.busy.add(key);
    this.syncBusy();
    this.say(notice("info", `${capital(doing)}…`));
    try {
      const result = await call();
      if (this.closed) return;
      this.closeForm(key);
      this.say(done(result));
    } catch (error) {
      if (this.closed) return;
      if (error instanceof ApiError && (error.status === 409 || error.status === 412)) {
        this.closeForm(key);
      }
      this.say(errorNotice(error, doing));
    } finally {
      this.busy.delete(key);
      if (!this.closed) {
        this.syncBusy();
        this.refresh();
      }
    }
  }

  openForm(title, fields, submitLabel, onSubmit, { danger = false, action } = {}) {
    const submit = el(
      "button",
      {
        type: "submit",
        class: danger ? "danger" : "",
        "data-action": action,
        disabled: action !== undefined && this.busy.has(action),
      },
      submitLabel,
    );
    const form = el(
      "form",
      { class: "action-form", "aria-label": title },
      el("h3", { text: title }),
      fields,
      el(
        "div",
        { class: "buttons" },
        submit,
        el("button", { type: "button", onclick: () => this.closeForm() }, "Cancel"),
      ),
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      onSubmit(form);
    });
    this.formAction = action;
    fill(this.form, form);
    const first = form.querySelector("textarea, input, select");
    if (first) first.focus();
    return form;
  }

  // The last step before an action that needs no more input: what will happen, in words, and
  // the one button that does it.
  sure(title, lines, yesLabel, action, run, { danger = false, back } = {}) {
    const yes = el(
      "button",
      {
        type: "button",
        class: danger ? "danger" : "",
        "data-action": action,
        disabled: this.busy.has(action),
        onclick: run,
      },
      yesLabel,
    );
    const backButton = el(
      "button",
      { type: "button", onclick: back ?? (() => this.closeForm()) },
      "Back",
    );
    this.formAction = action;
    fill(
      this.form,
      el(
        "div",
        { class: "action-form", role: "group", "aria-label": title },
        el("h3", { text: title }),
        lines,
        el("div", { class: "buttons" }, yes, backButton),
      ),
    );
    (yes.disabled ? backButton : yes).focus();
  }

  snapshotText(id) {
    const s = this.snapshots.find((snapshot) => snapshot.id === id);
    return s ? `snapshot ${id} (${s.kind}, revision ${s.revision})` : `snapshot ${id}`;
  }

  reasonField(placeholder) {
    return el(
      "label",
      { class: "field" },
      "Reason ",
      el("span", { class: "hint", text: "(goes into the audit log)" }),
      el("textarea", { name: "reason", required: true, maxlength: 2000, rows: 2, placeholder }),
    );
  }

  rollbackForm() {
    const d = this.deployment;
    const second = Boolean(d && d.config.require_second_person);
    const targets = el(
      "select",
      { name: "to" },
      el("option", { value: "", text: "the state before the canary (default)" }),
      [...this.snapshots]
        .sort((a, b) => b.seq - a.seq)
        .map((s) =>
          el("option", {
            value: s.id,
            text: `${s.id} (${s.kind}, revision ${s.revision}, ${when(s.created_at)})`,
          }),
        ),
    );
    this.openForm(
      `Roll back ${this.name}`,
      [
        this.reasonField("canary errors 2.1 % vs 1.0 %"),
        el("label", { class: "field" }, "Target ", targets),
        el(
          "label",
          { class: "check" },
          el("input", { type: "checkbox", name: "staged" }),
          " staged: walk traffic back in the configured stages",
        ),
        second
          ? el("p", {
              class: "hint",
              text: "This deployment needs a second person: the rollback waits until another operator confirms it.",
            })
          : null,
      ],
      "Continue…",
      (form) => this.rollbackConfirm(form, second),
      { danger: true },
    );
  }

  rollbackConfirm(form, second) {
    const reason = form.elements.reason.value.trim();
    const to = form.elements.to.value || null;
    const staged = form.elements.staged.checked;
    const revision = this.deployment ? this.deployment.revision : null;
    const target = to ? this.snapshotText(to) : "the state before the canary";
    this.sure(
      "confirm the rollback",
      [
        el(
          "p",
          {},
          second ? "Request a rollback of " : "Roll back ",
          el("strong", { text: this.name }),
          ` (revision ${revision}) to ${target}${staged ? ", in stages" : ", at once"}${second ? ", to be confirmed by another operator" : ""}?`,
        ),
        el("p", { class: "reason" }, "Reason: ", el("q", { text: reason })),
      ],
      second ? "Request rollback" : "Confirm rollback",
      "rollback",
      () =>
        this.act(
          "rollback",
          "rolling back",
          () =>
            api("POST", `${this.path}/rollbacks`, {
              reason,
              to,
              staged,
              confirm: !second,
              expected_revision: revision,
            }),
          (record) => this.rolledBack(record),
        ),
      {
        danger: true,
        back: () => {
          this.formAction = undefined;
          fill(this.form, form);
        },
      },
    );
  }

  rolledBack(r) {
    if (r.status === "pending") {
      return notice(
        "info",
        `Rollback ${r.id} waits for another operator's confirmation until ${when(r.expires_at)}; nothing changed yet. ` +
          `They confirm it here or with: canaryguard rollback confirm ${r.id}`,
      );
    }
    if (r.status === "running")
      return notice("ok", `Staged rollback ${r.id} is running; its progress is below.`);
    return notice(
      "ok",
      `Rolled back ${r.deployment} (${r.id}) in ${millis(r.duration_ms)}: revision ${r.revision_before} → ${r.revision_after}; the state before is kept as snapshot ${r.pre_snapshot_id}.`,
    );
  }

  promoteForm() {
    const d = this.deployment;
    if (!d || !d.canary) return;
    const revision = d.revision;
    this.openForm(
      `Promote ${this.name}`,
      [
        el(
          "p",
          {},
          "Make ",
          el("strong", { text: ref(d.canary) }),
          ` the stable version for everyone (now ${ref(d.stable)}, revision ${revision})?`,
        ),
      ],
      "Promote",
      () =>
        this.act(
          "promote",
          "promoting",
          () => api("POST", `${this.path}/promote`, { expected_revision: revision }),
          (after) =>
            notice(
              "ok",
              `Promoted: stable is now ${ref(after.stable)} (revision ${after.revision}).`,
            ),
        ),
      { action: "promote" },
    );
  }

  abortForm() {
    const d = this.deployment;
    if (!d || !d.canary) return;
    const revision = d.revision;
    this.openForm(
      `Abort the canary of ${this.name}`,
      [
        el(
          "p",
          {},
          "Stop ",
          el("strong", { text: ref(d.canary) }),
          `; stable serves everyone again (revision ${revision}).`,
        ),
        this.reasonField("wrong release window"),
      ],
      "Abort canary",
      (form) =>
        this.act(
          "abort",
          "aborting the canary",
          () =>
            api("POST", `${this.path}/abort`, {
              reason: form.elements.reason.value.trim(),
              expected_revision: revision,
            }),
          (after) => notice("ok", `Canary aborted: ${after.state} (revision ${after.revision}).`),
        ),
      { danger: true, action: "abort" },
    );
  }

  escalateForm(r) {
    const action = `rollback:${r.id}`;
    this.openForm(
      `Finish rollback ${r.id} now`,
      [
        el("p", { text: "The rest of the stages at once: the target snapshot is restored now." }),
        this.reasonField("stage held too long"),
      ],
      "Finish now",
      (form) =>
        this.act(
          action,
          "finishing the rollback",
          () =>
            api("POST", `/rollbacks/${encodeURIComponent(r.id)}/escalate`, {
              reason: form.elements.reason.value.trim(),
            }),
          (record) => notice("ok", `Rollback ${record.id} finished at once: ${record.status}.`),
        ),
      { danger: true, action },
    );
  }

  pendingLines(r, question) {
    return [
      el(
        "p",
        {},
        question,
        " ",
        el("strong", { class: "id", text: r.id }),
        " of ",
        el("strong", { text: r.deployment }),
        `: to ${this.snapshotText(r.target_snapshot_id)}, ${r.mode === "staged" ? "in stages" : "at once"}, asked by ${r.actor}.`,
      ),
      el("p", { class: "reason" }, "Reason: ", el("q", { text: r.reason })),
    ];
  }

  confirmForm(r) {
    const action = `rollback:${r.id}`;
    this.sure(
      `Confirm rollback ${r.id}`,
      this.pendingLines(r, "Carry out rollback"),
      "Confirm rollback",
      action,
      () =>
        this.act(
          action,
          "confirming the rollback",
          () => api("POST", `/rollbacks/${encodeURIComponent(r.id)}/confirm`),
          (record) => this.rolledBack(record),
        ),
      { danger: true },
    );
  }

  cancelForm(r) {
    const action = `rollback:${r.id}`;
    this.sure(
      `Cancel rollback ${r.id}`,
      [
        this.pendingLines(r, "Cancel rollback"),
        el("p", { text: "Nothing changes, and it can no longer be confirmed." }),
      ],
      "Cancel rollback",
      action,
      () =>
        this.act(
          action,
          "cancelling the rollback",
          () => api("POST", `/rollbacks/${encodeURIComponent(r.id)}/cancel`),
          (record) => notice("ok", `Rollback ${record.id} cancelled; nothing changed.`),
        ),
    );
  }

  vetoForm(decision) {
    this.sure(
      "Veto the automatic rollback",
      [
        el(
          "p",
          {},
          "Keep the canary of ",
          el("strong", { text: this.name }),
          " running? The monitor found ",
          el("q", { text: [decision.condition, decision.reason].filter(Boolean).join(": ") }),
          " and rolls it back at ",
          time(decision.veto_until),
          " unless vetoed.",
        ),
      ],
      "Veto rollback",
      "veto",
      () =>
        this.act(
          "veto",
          "vetoing the automatic rollback",
          () => api("POST", `${this.path}/veto`),
          (vetoed) => notice("ok", `Automatic rollback vetoed: ${vetoed.reason}`),
        ),
      { danger: true },
    );
  }
}

// ---------------------------------------------------------------- sign-in and the shell

const app = { view: null, live: null };
const main = document.getElementById("main");
const signOutButton = document.getElementById("sign-out");
const liveBadge = document.getElementById("live");

const LIVE_TEXT = {
  connecting: "connecting…",
  live: "live",
  reconnecting: "reconnecting…",
  paused: "paused",
};

function showLive(state) {
  liveBadge.hidden = false;
  liveBadge.className = `live is-${state}`;
  liveBadge.textContent = LIVE_TEXT[state];
}

// Open the view's event stream: once it knows where to start, and only while the tab is shown.
function connect() {
  const view = app.view;
  if (!view || app.live || !view.streamReady || document.hidden || !session.token) return;
  const live = new LiveStream({
    deployment: view instanceof DeploymentPage ? view.name : null,
    after: view.position,
    onEvent: (cloudEvent) => view.onEvent(cloudEvent),
    // from a known position the missed events are replayed; from none, read everything again
    onOpen: (fromPosition) => fromPosition || view.reopened(),
    onState: showLive,
    onReset: () => view.restart(),
  });
  app.live = live;
  live.start();
}

// Close the stream, keeping the view's position: it resumes from the last event it saw.
function disconnect() {
  if (!app.live) return;
  app.live.stop();
  if (app.view) app.view.position = app.live.lastEventId;
  app.live = null;
}

async function prepareStream(view) {
  showLive("connecting");
  const position = await view.startPosition();
  if (view !== app.view || view.closed) return;
  view.position = position;
  view.streamReady = true;
  connect();
}

function stopLive() {
  disconnect();
  liveBadge.hidden = true;
}

function signOut(text, detail) {
  session.forget();
  stopLive();
  if (app.view) app.view.close();
  app.view = null;
  showSignIn(notice(text.startsWith("Signed out") ? "info" : "error", text, detail));
}

function showSignIn(message) {
  signOutButton.hidden = true;
  document.title = "Sign in · canaryguard";
  const input = el("input", {
    type: "password",
    name: "token",
    id: "token",
    autocomplete: "off",
    spellcheck: "false",
    required: true,
  });
  const submit = el("button", { type: "submit" }, "Sign in");
  const result = el("div", { class: "notices" }, message);
  const form = el(
    "form",
    { class: "sign-in", "aria-label": "sign in" },
    el("label", { for: "token", text: "API token" }),
    input,
    submit,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const token = input.value.trim();
    if (!token) return;
    submit.disabled = true;
    fill(result, notice("info", "Checking the token…"));
    try {
      await request("GET", "/deployments", { token }); // viewer or more reads the dashboard
    } catch (error) {
      submit.disabled = false;
      fill(result, errorNotice(error, "reading the dashboard"));
      return;
    }
    session.keep(token);
    show();
  });
  fill(
    main,
    el(
      "section",
      { class: "sign-in-page" },
      el("h1", { text: "Sign in" }),
      el(
        "p",
        {},
        "Paste an API token (",
        el("code", { text: "canaryguard token create --role viewer --name NAME" }),
        "). A viewer sees everything; an operator also rolls back, promotes and aborts. ",
        "The token stays in this tab only: signing out or closing the tab forgets it.",
      ),
      form,
      result,
    ),
  );
  input.focus();
}

// The deployment name in the address, or undefined for the overview; null when the address
// names no deployment the server could have (the page shows so, and reads nothing for it).
function routeName() {
  const prefix = "#/deployments/";
  if (!location.hash.startsWith(prefix)) return undefined;
  const raw = location.hash.slice(prefix.length);
  let name;
  try {
    name = decodeURIComponent(raw);
  } catch {
    return null;
  }
  return isDeploymentName(name) ? name : null;
}

function notADeployment() {
  const shown = location.hash.slice("#/deployments/".length);
  return el(
    "section",
    { class: "deployment" },
    el("p", { class: "back" }, el("a", { href: "#/", text: "← all deployments" })),
    el("h1", { text: "Not a deployment name" }),
    el(
      "div",
      { class: "notice error", role: "alert" },
      el("p", {
        text:
          "The address does not name a deployment: it is not a deployment name (lower-case " +
          "letters, digits, '.', '_' and '-', in up to four parts separated by '/', no '.' " +
          "or '..' parts). Nothing was read for it.",
      }),
      el(
        "p",
        { class: "detail" },
        "Address: ",
        el("code", { text: shown.length > 300 ? `${shown.slice(0, 300)}…` : shown }),
      ),
    ),
  );
}

function show() {
  disconnect();
  if (app.view) app.view.close();
  app.view = null;
  if (!session.token) {
    stopLive();
    showSignIn(null);
    return;
  }
  signOutButton.hidden = false;
  const name = routeName();
  if (name === null) {
    liveBadge.hidden = true;
    document.title = "Not a deployment · canaryguard";
    fill(main, notADeployment());
    return;
  }
  const view = name === undefined ? new Overview() : new DeploymentPage(name);
  app.view = view;
  document.title = name === undefined ? "Deployments · canaryguard" : `${name} · canaryguard`;
  fill(main, view.root);
  view.refresh();
  prepareStream(view);
}

// A hidden tab lets go of its stream (the browser's six connections per host are shared by all
// tabs) and stops reading; shown again, it reads at once and resumes from its last event.
function onVisibility() {
  const view = app.view;
  if (!view) return;
  if (document.hidden) {
    disconnect();
    view.pause();
    showLive("paused");
  } else {
    view.resume();
    if (view.streamReady) connect();
  }
}

signOutButton.addEventListener("click", () => signOut("Signed out: this tab forgot the token."));
window.addEventListener("hashchange", show);
document.addEventListener("visibilitychange", onVisibility);
show();
