// Flock's delivery dashboard: a plain ES module, no build step, no dependency. It reads the
// API (every call carries the API key the user gave, kept in sessionStorage only) and follows
// GET /api/v1/events to update what it shows. Pages: #/ (recent workflows), #/w/<id> (one
// workflow), #/failed (failed deliveries), #/agents. Data is put in the page as text only.

const KEY = "flock.key";
const PAGE = 25;
const main = document.getElementById("main");
const live = document.getElementById("live");
const keyForm = document.getElementById("key-form");
const keyInput = document.getElementById("key");
const keyError = document.getElementById("key-error");
const forget = document.getElementById("forget-key");

// A 401, with the key it was sent with (a later key may have replaced it meanwhile).
class Unauthorized extends Error {
  constructor(message, used) {
    super(message);
    this.used = used;
  }
}

function key() {
  return sessionStorage.getItem(KEY);
}

function headers(extra = {}) {
  const h = { ...extra };
  const k = key();
  if (k) h.authorization = `Bearer ${k}`;
  return h;
}

async function api(path, options = {}) {
  const used = key();
  const response = await fetch(path, { ...options, headers: headers(options.headers) });
  if (response.status === 401) throw new Unauthorized(await message(response), used);
  if (!response.ok) throw new Error(await message(response));
  return response.json();
}

async function message(response) {
  try {
    const body = await response.json();
    return body.error ? body.error.message : `${response.status}`;
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

// h("tag", {attr: value, onclick: fn}, ...children): an element with text children only.
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "class") el.className = value;
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function when(text) {
  if (!text) return "";
  const at = new Date(text);
  return isNaN(at) ? text : at.toLocaleString();
}

function state(text) {
  return h("span", { class: `state-${text}` }, text);
}

function cell(label, ...children) {
  return h("td", { "data-label": label }, ...children);
}

function askForKey(reason) {
  keyForm.hidden = false;
  keyError.textContent = reason || "";
  keyInput.focus();
}

keyForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const value = keyInput.value.trim();
  if (!value) return;
  sessionStorage.setItem(KEY, value);
  keyInput.value = "";
  keyForm.hidden = true;
  forget.hidden = false;
  stream.restart();
  route();
});

forget.addEventListener("click", () => {
  sessionStorage.removeItem(KEY);
  forget.hidden = true;
  stream.stop();
  askForKey("");
});

// The event stream: fetch (so that the key goes in a header), read frames, hand each event to
// the page shown; reconnect with Last-Event-ID after an end or an error.
const stream = {
  controller: null,
  lastId: null,
  listeners: new Set(),
  stopped: false,
  stop() {
    this.stopped = true;
    if (this.controller) this.controller.abort();
    live.textContent = "offline";
    live.classList.remove("on");
  },
  restart() {
    this.stop();
    this.stopped = false;
    this.lastId = null;
    this.connect();
  },
  async connect() {
    if (this.stopped) return;
    const controller = new AbortController();
    this.controller = controller;
    const extra = this.lastId ? { "last-event-id": this.lastId } : {};
    const used = key();
    try {
      const response = await fetch("/api/v1/events", { headers: headers(extra), signal: controller.signal });
      if (response.status === 401) {
        // Unless a newer key took over meanwhile (it has its own stream).
        if (this.controller === controller && key() === used) {
          this.stopped = true;
          askForKey(await message(response));
        }
        return;
      }
      if (!response.ok) throw new Error(`${response.status}`);
      live.textContent = "live";
      live.classList.add("on");
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          this.frame(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
      }
    } catch (error) {
      if (controller.signal.aborted) return;
    }
    live.textContent = "reconnecting";
    live.classList.remove("on");
    if (!this.stopped && this.controller === controller) setTimeout(() => this.connect(), 2000);
  },
  frame(text) {
    let id = null;
    let name = null;
    let data = null;
    for (const line of text.split("\n")) {
      if (line.startsWith("id: ")) id = line.slice(4);
      else if (line.startsWith("event: ")) name = line.slice(7);
      else if (line.startsWith("data: ")) data = line.slice(6);
    }
    if (id) this.lastId = id;
    if (!name || !data) return;
    const event = JSON.parse(data);
    event.kind = name;
    for (const listener of this.listeners) listener(event);
  },
};

// Calls `fn` at most once per `ms`, after the last call.
function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

let current = { leave() {} };

// Each route() is a visit. A page shows itself only while its visit is the current one, so a
// render that ends after the reader moved on (a fetch in flight, a debounced refresh from the
// stream) cannot cover the page they moved to.
let visit = 0;

function show(title, ...children) {
  main.replaceChildren(h("h1", {}, title), ...children);
}

// `show` for the visit under way when a page starts.
function shower() {
  const mine = visit;
  return (title, ...children) => {
    if (mine === visit) show(title, ...children);
  };
}

function fail(error) {
  if (error instanceof Unauthorized && error.used !== key()) {
    // Refused for a key since replaced: the page is being shown again with the new one.
    return;
  }
  if (error instanceof Unauthorized) {
    askForKey(error.message);
    show("A key is needed", h("p", {}, "Give an API key with the read scope (and redeliver, to redeliver)."));
  } else {
    show("Something went wrong", h("p", { class: "error", role: "alert" }, error.message));
  }
}

function summaryOf(deliveries) {
  const count = { delivered: 0, pending: 0, failed: 0 };
  for (const d of deliveries) count[d.state] += 1;
  if (!deliveries.length) return h("span", { class: "muted" }, "no webhook");
  return h(
    "span",
    { class: "summary" },
    h("span", { class: "state-delivered" }, `${count.delivered} delivered`),
    count.pending ? h("span", { class: "state-pending" }, `${count.pending} pending`) : null,
    count.failed ? h("span", { class: "state-failed" }, `${count.failed} failed`) : null,
  );
}

// Recent workflows: the newest first, one row per workflow (its first, external artifact),
// paged by the list route's cursor; each row's status and deliveries read as it is shown.
async function workflowsPage(cursor) {
  const display = shower();
  const query = new URLSearchParams({ produced_by: "external", order: "newest_first", limit: String(PAGE) });
  if (cursor) query.set("cursor", cursor);
  const page = await api(`/api/v1/artifacts?${query}`);
  const body = h("tbody", { id: "workflows" });
  const rows = new Map();
  const refreshRow = async (correlation, first) => {
    const [status, hooks] = await Promise.all([
      api(`/api/v1/correlations/${correlation}/status`),
      api(`/api/v1/correlations/${correlation}/webhooks`),
    ]);
    const row = h(
      "tr",
      { "data-correlation": correlation, "data-state": status.state },
      cell("Workflow", h("a", { href: `#/w/${correlation}`, class: "mono" }, correlation)),
      cell("Started with", first.type),
      cell("Started", when(status.started_at)),
      cell("State", state(status.state)),
      cell("Artifacts", String(status.artifact_count)),
      cell("Deliveries", summaryOf(hooks.deliveries)),
    );
    const old = rows.get(correlation);
    if (old) old.replaceWith(row);
    rows.set(correlation, row);
    return row;
  };
  const built = await Promise.all(page.items.map((a) => refreshRow(a.correlation_id, a)));
  body.replaceChildren(...built);
  let total = page.pagination.total;
  const exact = page.pagination.total_exact;
  const count = h("span", { class: "muted", id: "count" }, "");
  const recount = () => {
    count.textContent = `${total}${exact ? "" : "+"} workflows`;
  };
  recount();
  display(
    "Recent workflows",
    h(
      "div",
      { class: "toolbar" },
      count,
      cursor ? h("button", { type: "button", class: "secondary", onclick: () => navigate("#/") }, "Newest") : null,
      page.pagination.next_cursor
        ? h("button", { type: "button", class: "secondary", id: "older", onclick: () => navigate(`#/?after=${page.pagination.next_cursor}`) }, "Older")
        : null,
    ),
    h(
      "table",
      {},
      h("thead", {}, h("tr", {}, ...["Workflow", "Started with", "Started", "State", "Artifacts", "Deliveries"].map((t) => h("th", { scope: "col" }, t)))),
      body,
    ),
    page.items.length ? null : h("p", { class: "muted", id: "empty" }, "No workflows yet."),
  );
  const firsts = new Map(page.items.map((a) => [a.correlation_id, a]));
  const changed = new Set();
  const flush = debounce(async () => {
    const ids = [...changed];
    changed.clear();
    for (const id of ids) {
      if (firsts.has(id)) await refreshRow(id, firsts.get(id)).catch(() => {});
    }
  }, 150);
  const listener = async (event) => {
    const id = event.correlation_id;
    if (!cursor && event.kind === "artifact.published" && event.artifact.produced_by === "external" && !firsts.has(id)) {
      firsts.set(id, event.artifact);
      const row = await refreshRow(id, event.artifact).catch(() => null);
      if (row) {
        total += 1;
        recount();
        body.prepend(row);
        document.getElementById("empty")?.remove();
        while (body.children.length > PAGE) body.lastElementChild.remove();
      }
      return;
    }
    if (firsts.has(id)) {
      changed.add(id);
      flush();
    }
  };
  stream.listeners.add(listener);
  return { leave: () => stream.listeners.delete(listener) };
}

// One workflow: its artifacts as a timeline (who produced what from what), its deliveries
// with their attempts and a redeliver button for failed ones; read again on its events.
async function workflowPage(id) {
  const display = shower();
  const render = async () => {
    const [status, artifacts, hooks, agents] = await Promise.all([
      api(`/api/v1/correlations/${id}/status`),
      api(`/api/v1/artifacts?correlation_id=${id}&limit=500`),
      api(`/api/v1/correlations/${id}/webhooks`),
      api("/api/v1/agents"),
    ]);
    const consumes = new Map(agents.agents.map((a) => [a.name, a.consumes]));
    const items = artifacts.items;
    const timeline = h(
      "ol",
      { class: "timeline", id: "timeline" },
      items.map((artifact, i) => {
        // What it was made from: the latest earlier artifact of a type its agent consumes.
        const wants = consumes.get(artifact.produced_by) || [];
        let from = null;
        for (let j = i - 1; j >= 0; j -= 1) {
          if (wants.includes(items[j].type)) {
            from = j;
            break;
          }
        }
        return h(
          "li",
          { "data-artifact": artifact.id, "data-type": artifact.type },
          h("strong", {}, `#${i + 1} ${artifact.type}`),
          " by ",
          h("code", {}, artifact.produced_by),
          from !== null ? ` from #${from + 1} ${items[from].type}` : "",
          h("div", { class: "muted" }, when(artifact.created_at), " ", h("code", {}, artifact.id)),
        );
      }),
    );
    const rows = hooks.deliveries.map((d) =>
      h(
        "tr",
        { "data-delivery": d.id, "data-state": d.state },
        cell("#", String(d.sequence)),
        cell("Receiver", h("code", {}, d.url)),
        cell("State", state(d.state), d.failure ? ` (${d.failure})` : ""),
        cell(
          "Attempts",
          d.attempts.length
            ? h(
                "ol",
                { class: "attempts" },
                d.attempts.map((a) =>
                  h(
                    "li",
                    { "data-attempt": a.number, "data-status": a.status_code ?? a.error_kind },
                    `${when(a.started_at)}: `,
                    a.status_code ? `HTTP ${a.status_code}` : a.error_kind,
                    ` in ${a.duration_ms} ms`,
                  ),
                ),
              )
            : h("span", { class: "muted" }, d.next_attempt_at ? `due ${when(d.next_attempt_at)}` : "in flight"),
        ),
        cell(
          "",
          d.state === "failed"
            ? h("button", { type: "button", class: "redeliver", "data-delivery": d.id, onclick: (e) => redeliver(e.currentTarget, d.id) }, "Redeliver")
            : null,
        ),
      ),
    );
    display(
      `Workflow ${id}`,
      h("p", {}, state(status.state), ` \u00b7 ${status.artifact_count} artifacts \u00b7 ${status.error_count} errors \u00b7 started ${when(status.started_at)}`),
      h("p", { id: "action", role: "status", "aria-live": "polite", class: "muted" }, ""),
      h("h2", {}, "Artifacts"),
      timeline,
      h("h2", {}, "Deliveries"),
      hooks.deliveries.length
        ? h(
            "table",
            { id: "deliveries" },
            h("thead", {}, h("tr", {}, ...["#", "Receiver", "State", "Attempts", ""].map((t) => h("th", { scope: "col" }, t)))),
            h("tbody", {}, rows),
          )
        : h("p", { class: "muted" }, "This workflow has no webhook."),
    );
  };
  const redeliver = async (button, delivery) => {
    button.disabled = true;
    try {
      await api(`/api/v1/webhooks/deliveries/${delivery}/redeliver`, { method: "POST" });
      document.getElementById("action").textContent = "Queued again.";
    } catch (error) {
      document.getElementById("action").textContent = error.message;
      button.disabled = false;
    }
    await render().catch(fail);
  };
  await render();
  const again = debounce(() => render().catch(() => {}), 150);
  const listener = (event) => {
    if (event.correlation_id === id) again();
  };
  stream.listeners.add(listener);
  return { leave: () => stream.listeners.delete(listener) };
}

function localInput(date) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}

// Failed deliveries across workflows since a time, and "redeliver all since ...".
async function failedPage(sinceParam) {
  const display = shower();
  const since = sinceParam ? new Date(sinceParam) : new Date(Date.now() - 24 * 3600 * 1000);
  const input = h("input", { type: "datetime-local", id: "since", value: localInput(since), step: "1" });
  const result = h("p", { id: "bulk-result", role: "status", "aria-live": "polite" }, "");
  const body = h("tbody", { id: "failed" });
  const note = h("p", { class: "muted", id: "failed-count" }, "");
  const sinceIso = () => new Date(input.value).toISOString();
  const render = async () => {
    const page = await api(`/api/v1/webhooks/deliveries/failed?since=${encodeURIComponent(sinceIso())}&limit=500`);
    body.replaceChildren(
      ...page.deliveries.map((d) => {
        const last = d.attempts[d.attempts.length - 1];
        return h(
          "tr",
          { "data-delivery": d.id, "data-correlation": d.correlation_id },
          cell("Failed", when(d.completed_at)),
          cell("Workflow", h("a", { href: `#/w/${d.correlation_id}`, class: "mono" }, d.correlation_id)),
          cell("#", String(d.sequence)),
          cell("Receiver", h("code", {}, d.url)),
          cell("Why", d.failure || "", last ? ` (last: ${last.status_code ? `HTTP ${last.status_code}` : last.error_kind})` : ""),
        );
      }),
    );
    note.textContent = `${page.deliveries.length}${page.truncated ? "+" : ""} failed since ${since.toLocaleString()}`;
  };
  const all = h(
    "button",
    {
      type: "button",
      id: "redeliver-all",
      onclick: async () => {
        all.disabled = true;
        try {
          const answer = await api("/api/v1/webhooks/deliveries/redeliver", {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ since: sinceIso() }),
          });
          result.textContent = `Queued ${answer.queued} again${answer.more ? "; more remain, press again" : ""}.`;
          result.dataset.queued = String(answer.queued);
        } catch (error) {
          result.textContent = error.message;
        }
        all.disabled = false;
        await render().catch(fail);
      },
    },
    "Redeliver all since \u2026",
  );
  display(
    "Failed deliveries",
    h(
      "div",
      { class: "toolbar" },
      h("label", { for: "since" }, "Failed since"),
      input,
      h("button", { type: "button", class: "secondary", onclick: () => navigate(`#/failed?since=${encodeURIComponent(sinceIso())}`) }, "Show"),
      all,
    ),
    result,
    note,
    h("table", {}, h("thead", {}, h("tr", {}, ...["Failed", "Workflow", "#", "Receiver", "Why"].map((t) => h("th", { scope: "col" }, t)))), body),
  );
  await render();
  const again = debounce(() => render().catch(() => {}), 200);
  const listener = (event) => {
    if (event.kind === "delivery.failed" || event.kind === "delivery.delivered") again();
  };
  stream.listeners.add(listener);
  return { leave: () => stream.listeners.delete(listener) };
}

async function agentsPage() {
  const display = shower();
  const { agents } = await api("/api/v1/agents");
  display(
    "Agents",
    agents.length
      ? h(
          "table",
          { id: "agents" },
          h("thead", {}, h("tr", {}, ...["Agent", "Kind", "Consumes", "Publishes", "Timeout"].map((t) => h("th", { scope: "col" }, t)))),
          h(
            "tbody",
            {},
            agents.map((a) =>
              h(
                "tr",
                {},
                cell("Agent", h("code", {}, a.name)),
                cell("Kind", a.kind),
                cell("Consumes", a.consumes.join(", ")),
                cell("Publishes", a.publishes.join(", ")),
                cell("Timeout", `${a.timeout_ms} ms`),
              ),
            ),
          ),
        )
      : h("p", { class: "muted" }, "No agents are configured."),
  );
  return { leave() {} };
}

function navigate(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

async function route() {
  current.leave();
  current = { leave() {} };
  visit += 1;
  const mine = visit;
  const [path, search] = location.hash.replace(/^#/, "").split("?");
  const params = new URLSearchParams(search || "");
  for (const link of document.querySelectorAll("nav a")) {
    const target = link.getAttribute("href").replace(/^#/, "");
    link.toggleAttribute("aria-current", false);
    if (target === (path || "/") || (target === "/" && path.startsWith("/w/"))) link.setAttribute("aria-current", "page");
  }
  try {
    let page;
    if (path.startsWith("/w/")) page = await workflowPage(path.slice(3));
    else if (path === "/failed") page = await failedPage(params.get("since"));
    else if (path === "/agents") page = await agentsPage();
    else page = await workflowsPage(params.get("after"));
    if (mine !== visit) {
      // Moved on while it loaded.
      page.leave();
      return;
    }
    current = page;
    main.focus({ preventScroll: true });
  } catch (error) {
    if (mine === visit) fail(error);
  }
}

window.addEventListener("hashchange", route);
forget.hidden = !key();
stream.restart();
route();
