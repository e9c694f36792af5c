// The pages: each takes the route context and returns the page's element.
import { get, post, seg } from "./api.js";
import { ago, copyButton, h, pretty, stateName, table, when } from "./dom.js";
import { remember, sparkline } from "./spark.js";

const PAGE_SIZE = 50;
const STATES = ["PENDING", "SCHEDULED", "RUNNING", "COMPLETED", "FAILED", "CANCELLED", "DEAD_LETTERED"];
const TERMINAL = new Set(["STATE_COMPLETED", "STATE_CANCELLED", "STATE_DEAD_LETTERED"]);
const tokens = new Map(); // query string -> page tokens seen (for Previous)

const num = (value) => Number(value || 0);
const taskLink = (task) => h("a", { href: `#/task/${seg(task.id)}` }, h("code", {}, task.id));
const stateTag = (state) => h("span", { class: "state", "data-state": state }, stateName(state));

async function overview(ctx) {
  ctx.refreshEvery(2000);
  const { queues = [] } = await get("/api/v1/queues");
  remember(queues);
  const toggle = (q) => {
    const verb = q.paused ? "resume" : "pause";
    return h("button", {
      type: "button",
      "data-key": `${verb}-${q.queue}`,
      "aria-label": `${verb} queue ${q.queue}`,
      onclick: () => ctx.act(() => post(`/api/v1/queues/${seg(q.queue)}:${verb}`)),
    }, q.paused ? "Resume" : "Pause");
  };
  const byPriority = (q) => {
    const p = q.pending_by_priority || {};
    return `${num(q.pending)} (${num(p.high)}/${num(p.medium)}/${num(p.low)})`;
  };
  return h("section", {},
    h("h1", {}, "Queues"),
    table([
      ["Queue", (q) => h("a", { href: `#/tasks?queue=${seg(q.queue)}` }, q.queue)],
      ["Depth (high/med/low)", byPriority, true],
      ["Running", (q) => num(q.running), true],
      ["Scheduled", (q) => num(q.scheduled), true],
      ["Retrying", (q) => num(q.retrying), true],
      ["Dead", (q) => h("a", { href: `#/dead?queue=${seg(q.queue)}` }, String(num(q.dead_lettered))), true],
      ["Done/min", (q) => num(q.completed_last_minute), true],
      ["Throughput", (q) => sparkline(q.queue)],
      ["Failed/min", (q) => num(q.failed_last_minute), true],
      ["Oldest", (q) => q.oldest_pending_age || "", true],
      ["State", (q) => (q.paused ? "paused" : "active")],
      ["", toggle],
    ], queues, "No queues yet: submit a task."),
    h("p", { class: "muted" }, "Refreshed every 2 s."));
}

function submitForm(ctx) {
  const type = h("input", { id: "submit-type", required: true, value: "test_task" });
  const queue = h("input", { id: "submit-queue", placeholder: "default" });
  const payload = h("textarea", { id: "submit-payload", rows: 2, cols: 30 }, "{}");
  return h("details", {},
    h("summary", {}, "Submit a task"),
    h("form", {
      class: "bar",
      onsubmit: (event) => {
        event.preventDefault();
        ctx.act(async () => {
          let body;
          try {
            body = JSON.parse(payload.value || "{}");
          } catch (error) {
            throw new Error(`payload is not JSON: ${error.message}`);
          }
          const { task } = await post("/api/v1/tasks", { type: type.value, queue: queue.value, payload: body });
          location.hash = `#/task/${seg(task.id)}`;
        });
      },
    },
    h("label", { for: "submit-type" }, "Type", type),
    h("label", { for: "submit-queue" }, "Queue", queue),
    h("label", { for: "submit-payload" }, "Payload (JSON)", payload),
    h("button", { type: "submit" }, "Submit")));
}

const FILTERS = ["state", "queue", "type", "after", "before", "key"];
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
// A datetime-local value (the browser's time zone) as RFC 3339 for the API.
const instant = (local) => (local ? new Date(local).toISOString() : "");

async function tasks(ctx) {
  const q = ctx.query;
  const filters = Object.fromEntries(FILTERS.map((name) => [name, q.get(name) || ""]));
  const key = new URLSearchParams(filters).toString();
  const seen = tokens.get(key) || [""];
  tokens.set(key, seen);
  const pageNo = Math.min(num(q.get("page")), seen.length - 1);
  const reply = await get("/api/v1/tasks", {
    page_size: PAGE_SIZE,
    page_token: seen[pageNo],
    state: filters.state ? `STATE_${filters.state}` : "",
    queue: filters.queue,
    type: filters.type,
    created_after: instant(filters.after),
    created_before: instant(filters.before),
    idempotency_key: filters.key,
  });
  const list = reply.tasks || [];
  if (reply.next_page_token) seen[pageNo + 1] = reply.next_page_token;
  const go = (page) => `#/tasks?${new URLSearchParams({ ...filters, page })}`;
  const state = h("select", { id: "filter-state" },
    h("option", { value: "" }, "any"),
    STATES.map((s) => h("option", { value: s, selected: s === filters.state }, stateName(s))));
  const input = (name, attrs) => h("input", { id: `filter-${name}`, value: filters[name], ...attrs });
  const queue = input("queue");
  const type = input("type");
  const after = input("after", { type: "datetime-local", step: 1 });
  const before = input("before", { type: "datetime-local", step: 1 });
  const search = input("key", { type: "search", placeholder: "task id or idempotency key", size: 28 });
  const form = h("form", {
    class: "bar",
    role: "search",
    onsubmit: (event) => {
      event.preventDefault();
      const text = search.value.trim();
      if (UUID_RE.test(text)) {
        ctx.navigate(`#/task/${seg(text.toLowerCase())}`); // an id: straight to its page
        return;
      }
      const chosen = {
        state: state.value,
        queue: queue.value.trim(),
        type: type.value.trim(),
        after: after.value,
        before: before.value,
        key: text,
      };
      const set = Object.fromEntries(Object.entries(chosen).filter(([, value]) => value));
      ctx.navigate(`#/tasks?${new URLSearchParams(set)}`);
    },
  },
  h("label", { for: "filter-state" }, "State", state),
  h("label", { for: "filter-queue" }, "Queue", queue),
  h("label", { for: "filter-type" }, "Type", type),
  h("label", { for: "filter-after" }, "Created after", after),
  h("label", { for: "filter-before" }, "Created before", before),
  h("label", { for: "filter-key" }, "Id or idempotency key", search),
  h("button", { type: "submit" }, "Filter"));
  const pager = h("nav", { class: "bar", "aria-label": "Pages of tasks" },
    pageNo > 0 ? h("a", { href: go(pageNo - 1), id: "prev" }, "← Previous") : null,
    h("span", { class: "muted", id: "page-no" }, `Page ${pageNo + 1}`),
    reply.next_page_token ? h("a", { href: go(pageNo + 1), id: "next" }, "Next →") : null);
  return h("section", {},
    h("h1", {}, "Tasks"),
    submitForm(ctx),
    form,
    table([
      ["Id", taskLink],
      ["Type", (t) => t.type],
      ["Queue", (t) => t.queue],
      ["State", (t) => stateTag(t.state)],
      ["Attempts", (t) => `${num(t.attempts)}/${num(t.max_retries) + 1}`, true],
      ["Created", (t) => when(t.created_at)],
    ], list, "No tasks match."),
    pager);
}

function traceLink(ctx, task) {
  const parent = (task.trace_context || {}).traceparent || "";
  const id = parent.split("-")[1] || "";
  if (!id) return h("span", { class: "muted" }, "none");
  const base = ctx.config.trace_url || "";
  if (!base) return h("code", {}, id);
  const href = base.includes("{trace_id}") ? base.replace("{trace_id}", id) : `${base.replace(/\/$/, "")}/trace/${id}`;
  return h("a", { href, rel: "noreferrer", target: "_blank" }, h("code", {}, id));
}

async function task(ctx) {
  const id = ctx.args[0] || "";
  const { task: t } = await get(`/api/v1/tasks/${seg(id)}`, { view: "TASK_VIEW_FULL" });
  if (!TERMINAL.has(t.state)) ctx.refreshEvery(1000);
  const action = (verb, label, enabled) =>
    h("button", {
      type: "button",
      id: verb,
      "data-key": verb,
      disabled: !enabled,
      onclick: () => ctx.act(() => post(`/api/v1/tasks/${seg(t.id)}:${verb}`)),
    }, label);
  const canRetry = ["STATE_FAILED", "STATE_DEAD_LETTERED"].includes(t.state);
  const err = t.last_error;
  const block = (title, value) => {
    const text = pretty(value);
    return h("div", {}, h("h2", {}, title, " ", copyButton(text, `Copy ${title.toLowerCase()}`)), h("pre", {}, text));
  };
  return h("section", {},
    h("h1", {}, "Task ", h("code", {}, t.id)),
    h("div", { class: "bar" },
      action("cancel", "Cancel", !TERMINAL.has(t.state)),
      action("retry", "Retry", canRetry)),
    h("dl", {},
      h("dt", {}, "State"), h("dd", { id: "task-state" }, stateTag(t.state)),
      h("dt", {}, "Type"), h("dd", {}, t.type),
      h("dt", {}, "Queue"), h("dd", {}, t.queue),
      h("dt", {}, "Priority"), h("dd", {}, stateName(t.priority).replace("priority ", "")),
      h("dt", {}, "Attempts"), h("dd", {}, `${num(t.attempts)} of ${num(t.max_retries) + 1}`),
      h("dt", {}, "Worker"), h("dd", {}, t.worker_id || "—"),
      h("dt", {}, "Created"), h("dd", {}, when(t.created_at)),
      h("dt", {}, "Scheduled"), h("dd", {}, when(t.scheduled_at)),
      h("dt", {}, "Started"), h("dd", {}, when(t.started_at)),
      h("dt", {}, "Finished"), h("dd", {}, when(t.finished_at)),
      h("dt", {}, "Idempotency key"), h("dd", {}, t.idempotency_key || "—"),
      h("dt", {}, "Trace"), h("dd", {}, traceLink(ctx, t))),
    block("Payload", t.payload),
    block("Result", t.result),
    h("h2", {}, "Last attempt's error"),
    err && (err.message || err.type)
      ? h("div", { id: "task-error" },
        h("p", {}, h("strong", {}, err.type || "Error"), ": ", err.message, err.permanent ? " (permanent)" : ""),
        err.traceback ? h("pre", {}, err.traceback) : null)
      : h("p", { class: "muted" }, "None."),
    h("h2", {}, "Attempts"),
    attemptTable(t));
}

// Every attempt of the task (newest first), its error and traceback.
function attemptTable(t) {
  const history = [...(t.attempt_history || [])].reverse();
  const outcome = (a) => {
    if (a.error && (a.error.type || a.error.message)) return h("strong", {}, a.error.type || "Error");
    if (!a.ended_at) return "running";
    return stateName(t.state);
  };
  const traceback = (a) => (a.error && a.error.traceback
    ? h("details", {}, h("summary", {}, "Traceback"), h("pre", {}, a.error.traceback))
    : "");
  return h("div", { id: "attempts" }, table([
    ["#", (a) => num(a.attempt), true],
    ["Worker", (a) => (a.worker_id ? h("code", {}, a.worker_id) : "—")],
    ["Started", (a) => when(a.started_at)],
    ["Ended", (a) => when(a.ended_at)],
    ["Outcome", outcome],
    ["Message", (a) => (a.error && a.error.message) || ""],
    ["", traceback],
  ], history, "Not run yet."));
}

async function dead(ctx) {
  const queue = ctx.query.get("queue") || "";
  const [{ queues = [] }, reply] = await Promise.all([
    get("/api/v1/queues"),
    get("/api/v1/tasks", { state: "STATE_DEAD_LETTERED", queue, page_size: 200 }),
  ]);
  const list = reply.tasks || [];
  const groups = new Map();
  for (const t of list) {
    const k = `${t.queue}\u0000${(t.last_error || {}).type || ""}`;
    groups.set(k, (groups.get(k) || 0) + 1);
  }
  const withDead = queues.filter((q) => num(q.dead_lettered) > 0 && (!queue || q.queue === queue));
  const purgeBox = (q) => {
    const typed = h("input", { id: `purge-confirm-${q.queue}`, "data-key": `purge-confirm-${q.queue}`, autocomplete: "off" });
    const go = h("button", {
      type: "button",
      class: "danger",
      disabled: true,
      id: `purge-${q.queue}`,
      onclick: () => ctx.act(() => post(`/api/v1/queues/${seg(q.queue)}/deadLetters:purge`, { confirm: true })),
    }, `Purge ${num(q.dead_lettered)} dead letters`);
    typed.addEventListener("input", () => {
      go.disabled = typed.value !== q.queue;
    });
    return h("details", { class: "confirm" },
      h("summary", {}, "Purge…"),
      h("label", { for: typed.id }, `Type the queue name “${q.queue}” to delete its dead letters for good`, typed),
      go);
  };
  return h("section", {},
    h("h1", {}, queue ? `Dead letters in ${queue}` : "Dead letters"),
    table([
      ["Queue", (q) => h("a", { href: `#/dead?queue=${seg(q.queue)}` }, q.queue)],
      ["Dead", (q) => num(q.dead_lettered), true],
      ["", (q) => h("button", {
        type: "button",
        id: `requeue-all-${q.queue}`,
        onclick: () => ctx.act(() => post(`/api/v1/queues/${seg(q.queue)}/deadLetters:requeue`)),
      }, "Requeue all")],
      ["", purgeBox],
    ], withDead, "No dead letters."),
    h("h2", {}, "By error type"),
    table([
      ["Queue", (g) => g[0].split("\u0000")[0]],
      ["Error type", (g) => g[0].split("\u0000")[1] || "—"],
      ["Count", (g) => g[1], true],
    ], [...groups.entries()], "None."),
    h("h2", {}, "Tasks"),
    table([
      ["Id", taskLink],
      ["Type", (t) => t.type],
      ["Queue", (t) => t.queue],
      ["Error", (t) => ((t.last_error || {}).message || "")],
      ["Updated", (t) => when(t.updated_at)],
      ["", (t) => h("button", {
        type: "button",
        "data-requeue": t.id,
        onclick: () => ctx.act(() => post(`/api/v1/tasks/${seg(t.id)}:retry`)),
      }, "Requeue")],
    ], list, "No dead-lettered tasks."),
    reply.next_page_token ? h("p", { class: "muted" }, "Showing the newest 200.") : null);
}

async function workers() {
  const { workers: list = [] } = await get("/api/v1/workers", { page_size: 200 });
  const metrics = (w) => (w.metrics_address
    ? h("a", { href: `http://${w.metrics_address}/metrics`, rel: "noreferrer", target: "_blank" }, w.metrics_address)
    : "—");
  return h("section", {},
    h("h1", {}, "Workers"),
    table([
      ["Id", (w) => h("code", {}, w.id)],
      ["Host", (w) => `${w.hostname || ""}${w.pid ? ` (pid ${w.pid})` : ""}`],
      ["Status", (w) => stateName(w.status)],
      ["Queues", (w) => (w.queues || []).join(", ")],
      ["Types", (w) => (w.task_types || []).join(", ") || "any"],
      ["Leases held", (w) => `${num(w.active_tasks)}/${num(w.concurrency)}`, true],
      ["Last seen", (w) => ago(w.last_seen_at)],
      ["Version", (w) => w.version || ""],
      ["Metrics", metrics],
    ], list, "No workers connected."));
}

export const pages = { overview, tasks, task, dead, workers };
