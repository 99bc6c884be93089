// hookd's dashboard: one tab at a time, its panels fetched from /api/<panel> (read-only JSON)
// and drawn with plain DOM and uPlot. Every second /api/head says whether anything new was
// committed; the open tab then reloads its panels (no page reload). No text from the database
// is ever parsed as HTML: it goes in with textContent.
"use strict";

const main = document.getElementById("main");
const liveBadge = document.getElementById("live");
const POLL_MS = 1000;
const RANGES = ["1h", "24h", "7d", "30d"];

function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v);
  }
  for (const kid of kids.flat(Infinity)) {
    if (kid == null || kid === false) continue;
    el.append(kid instanceof Node ? kid : String(kid));
  }
  return el;
}

const fmt = (n) => (n == null ? "–" : Number(n).toLocaleString("en-US"));
const pct = (x) => (x == null ? "–" : (x * 100).toFixed(1) + "%");
const dur = (x) => (x == null ? "–" : x >= 1000 ? (x / 1000).toFixed(2) + " s" : Math.round(x) + " ms");
const bytes = (n) => {
  if (n == null) return "–";
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + units[i];
};
const pad = (n) => String(n).padStart(2, "0");
function when(t) {
  if (t == null) return "–";
  const d = new Date(t * 1000);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}
function ago(t) {
  if (t == null) return "never";
  const s = Date.now() / 1000 - t;
  if (s < 0) return "in the future";
  if (s < 90) return Math.round(s) + " s ago";
  if (s < 5400) return Math.round(s / 60) + " min ago";
  if (s < 129600) return Math.round(s / 3600) + " h ago";
  return Math.round(s / 86400) + " d ago";
}
const num = (n, attrs) => h("td", { class: "num", "data-n": n == null ? "" : n, ...attrs }, fmt(n));
const card = (id, label, value) => h("div", { class: "card", id }, h("div", { class: "n" }, value), h("div", { class: "l" }, label));
const table = (heads, rows, attrs) =>
  h("table", attrs || {}, h("thead", {}, h("tr", {}, heads.map((x) => h("th", { class: x.endsWith("#") ? "num" : null }, x.replace(/#$/, ""))))), h("tbody", {}, rows));
const link = (hash, text) => h("a", { href: "#" + hash, class: "session" }, text);

async function api(name, params) {
  const q = new URLSearchParams(Object.entries(params || {}).filter(([, v]) => v != null && v !== "")).toString();
  const r = await fetch("/api/" + name + (q ? "?" + q : ""), { cache: "no-store" });
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

// -- charts (uPlot) ---------------------------------------------------------------------------
const PALETTE = ["#2f6fde", "#e8590c", "#2b8a3e", "#c2255c", "#7048e8", "#0b7285", "#a61e4d", "#5c940d", "#d9480f", "#364fc7", "#087f5b", "#862e9c"];
let charts = [];
function chart(title, x, series, opts) {
  const names = Object.keys(series);
  const box = h("div", { class: "chart", "data-chart": title });
  if (!x.length || !names.length) {
    box.append(h("div", { class: "muted" }, title + ": nothing in this range"));
    return box;
  }
  const bars = opts && opts.bars && uPlot.paths.bars ? uPlot.paths.bars({ size: [0.7, 40] }) : null;
  const u = new uPlot(
    {
      title,
      width: Math.max(400, main.clientWidth - 40),
      height: 240,
      scales: { x: { time: true } },
      series: [{}, ...names.map((n, i) => ({ label: n, stroke: PALETTE[i % PALETTE.length], width: 1.5, paths: bars, fill: bars ? PALETTE[i % PALETTE.length] + "99" : null, points: { show: false } }))],
      axes: [{}, { size: 60 }],
    },
    [x, ...names.map((n) => series[n])],
    box,
  );
  charts.push(u);
  return box;
}

function rangeSelect(value, onChange, choices) {
  return h("label", {}, "range ", h("select", { id: "range", onchange: (e) => onChange(e.target.value) },
    (choices || RANGES).map((r) => h("option", { value: r, selected: r === value ? "" : null }, r))));
}

function eventRows(events, opts) {
  const rows = [];
  for (const e of events) {
    const tr = h("tr", { class: "event" + (seen.size && !seen.has(e.eid) ? " new" : ""), "data-eid": e.eid },
      h("td", {}, when(e.ts)),
      opts && opts.noType ? null : h("td", {}, link("kinds/" + encodeURIComponent(e.type), e.type)),
      opts && opts.noSession ? null : h("td", {}, e.session ? link("sessions/" + encodeURIComponent(e.session), e.session) : "–"),
      h("td", { class: "text" }, opts && opts.fields ? e.fields || e.summary : e.summary));
    const detail = h("tr", { hidden: "" }, h("td", { colspan: 4 }, h("pre", {}, e.data)));
    tr.addEventListener("click", () => detail.toggleAttribute("hidden"));
    rows.push(tr, detail);
  }
  return rows;
}
let seen = new Set();

// -- tabs -------------------------------------------------------------------------------------
const view = { overview: { range: "24h" }, activity: { range: "" }, tools: { range: "24h" }, sessions: { range: "7d" }, git: { range: "30d" }, kinds: { range: "7d" } };

const TABS = {
  overview: {
    controls: () => h("div", { class: "controls" }, rangeSelect(view.overview.range, (r) => { view.overview.range = r; refresh(); }, ["24h", "7d", "30d"])),
    load: () => api("overview", { range: view.overview.range }),
    render(d) {
      const s = d.states;
      return [
        h("div", { class: "cards" },
          card("total-events", "events stored", fmt(d.totals.events)),
          card("in-range", `events in ${d.range}`, fmt(d.totals.in_range)),
          card("total-types", "kinds", fmt(d.totals.types)),
          card("total-sessions", "sessions", fmt(d.totals.sessions)),
          card("total-rejected", "rejected lines", fmt(d.totals.rejected)),
          card("kind-states", "kinds by state", `${s.live} live · ${s.stale} stale · ${s.never} never` + (s.future ? ` · ${s.future} future` : ""))),
        chart(`events per hour by kind, last ${d.range}`, d.chart.x, d.chart.series),
        h("h2", {}, "Every kind"),
        table(["kind", "state", "events#", "last hour#", "last seen"],
          d.kinds.map((k) => h("tr", { "data-type": k.type },
            h("td", {}, link("kinds/" + encodeURIComponent(k.type), k.type)),
            h("td", {}, h("span", { class: "state " + k.state }, k.state)),
            num(k.count), num(k.last_hour),
            h("td", {}, k.last_ts == null ? "never" : `${when(k.last_ts)} (${ago(k.last_ts)})`))),
          { id: "kinds-table" }),
      ];
    },
  },
  activity: {
    controls() {
      const v = view.activity;
      const input = (name, label, size) => h("label", {}, label + " ", h("input", { name, value: v[name] || "", size, oninput: debounce((e) => { v[name] = e.target.value; refresh(); }) }));
      return h("div", { class: "controls" }, input("type", "kind", 16), input("session", "session", 20),
        rangeSelect(v.range, (r) => { v.range = r; refresh(); }, ["", ...RANGES]), input("q", "text", 20));
    },
    load() {
      const v = view.activity;
      const since = v.range ? Date.now() / 1000 - { "1h": 3600, "24h": 86400, "7d": 604800, "30d": 2592000 }[v.range] : null;
      return api("activity", { type: v.type, session: v.session, q: v.q, since, limit: 200 });
    },
    render: (d) => [
      d.partial ? h("p", { class: "muted" }, "the text search ran out of time: these are the matches found so far (narrow the range)") : null,
      table(["time", "kind", "session", "event"], eventRows(d.events), { id: "activity-table" }),
    ],
  },
  tools: {
    controls: () => h("div", { class: "controls" }, rangeSelect(view.tools.range, (r) => { view.tools.range = r; refresh(); })),
    load: () => api("tools", { range: view.tools.range }),
    render: (d) => [
      h("div", { class: "cards" }, card("tool-calls", `tool calls in ${d.range}`, fmt(d.calls)),
        card("tool-failed", "failed", fmt(d.failed)),
        card("tool-lost", "never closed in an ended session (listed below)", fmt(d.lost))),
      table(["tool", "calls#", "closed#", "failed#", "failure rate#", "timed#", "p50#", "p95#"],
        d.tools.map((t) => h("tr", { "data-tool": t.tool }, h("td", {}, t.tool), num(t.calls), num(t.closed), num(t.failed),
          h("td", { class: "num" }, pct(t.failure_rate)), num(t.timed), bucketCell(t.p50_bucket), bucketCell(t.p95_bucket))),
        { id: "tools-table" }),
      h("p", { class: "muted", id: "tools-note" }, `Counted over whole hours from ${when(d.since)}. Durations are Claude Code's own duration_ms; ` +
        `p50 and p95 are read from buckets ${Math.round((d.bucket_ratio - 1) * 100)}% wide, so they are approximate to that width (hover for the bucket).`),
      h("h2", {}, "Slowest calls"),
      d.slowest.length ? callTable(d.slowest, "slowest-table") : h("p", { class: "muted" }, "none"),
      h("h2", {}, "Calls that never closed"),
      h("p", { class: "muted" }, `Among the newest ${fmt(d.unclosed_searched)} calls of the range` +
        (d.unclosed_searched_since ? ` (since ${when(d.unclosed_searched_since)})` : "") + "; lost: their session ended after them."),
      d.unclosed.length ? callTable(d.unclosed, "unclosed-table") : h("p", { class: "muted" }, "none"),
    ],
  },
  sessions: {
    controls: () => h("div", { class: "controls" }, rangeSelect(view.sessions.range, (r) => { view.sessions.range = r; refresh(); })),
    load: () => (route.arg ? api("session", { id: route.arg }) : api("sessions", { range: view.sessions.range })),
    render: (d) => (route.arg ? sessionView(d) : sessionList(d)),
  },
  git: {
    controls: () => h("div", { class: "controls" }, rangeSelect(view.git.range, (r) => { view.git.range = r; refresh(); })),
    load: () => api("git", { range: view.git.range }),
    render: (d) => [
      chart(`commits per day by repository, last ${d.range}`, d.commits.x, d.commits.series, { bars: true }),
      h("h2", {}, "Branches"),
      table(["repository", "branch", "commits#", "merges#", "rewrites#", "last activity"],
        d.branches.map((b) => h("tr", {}, h("td", {}, b.repo), h("td", {}, b.branch || "–"), num(b.commits), num(b.merges), num(b.rewrites), h("td", {}, when(b.last_ts)))),
        { id: "branches-table" }),
      h("h2", {}, "Merges and rewrites (amend, rebase)"),
      table(["time", "kind", "session", "event"], eventRows(d.merges_and_rewrites), { id: "git-changes-table" }),
    ],
  },
  kinds: {
    controls: () => h("div", { class: "controls" }, rangeSelect(view.kinds.range, (r) => { view.kinds.range = r; refresh(); })),
    load: () => api("kinds", { type: route.arg, range: view.kinds.range }),
    render(d) {
      const list = table(["kind", "events#", "first", "last"],
        d.types.map((t) => h("tr", { "data-type": t.type }, h("td", {}, link("kinds/" + encodeURIComponent(t.type), t.type)), num(t.count), h("td", {}, when(t.first_ts)), h("td", {}, when(t.last_ts)))),
        { id: "types-table" });
      if (!d.type) return [h("p", { class: "muted" }, "Every event kind ever stored, planned or not. Choose one."), list];
      return [
        h("h2", {}, d.type),
        chart(`${d.type} per hour, last ${d.range}`, d.chart.x, d.chart.series),
        h("h2", {}, "Latest events"),
        table(["time", "session", "fields"], eventRows(d.events, { noType: true, fields: true }), { id: "kind-events-table" }),
        h("h2", {}, "All kinds"), list,
      ];
    },
  },
  health: {
    controls: () => null,
    load: () => api("health"),
    render: (d) => healthView(d),
  },
};

const bucketCell = (b) => h("td", { class: "num", title: b ? `between ${dur(b.lo)} and ${b.hi == null ? "∞" : dur(b.hi)}` : "" }, b ? "≈ " + dur(b.ms) : "–");

function callTable(calls, id) {
  return table(["started", "tool", "session", "status", "duration#"],
    calls.map((c) => h("tr", {}, h("td", {}, when(c.started)), h("td", {}, c.tool || "?"),
      h("td", {}, c.session ? link("sessions/" + encodeURIComponent(c.session), c.session) : "–"), h("td", {}, c.status), h("td", { class: "num" }, dur(c.duration_ms)))),
    { id });
}

const usageCells = (s) => [h("td", { class: "num" }, s.cost_usd == null ? "–" : "$" + Number(s.cost_usd).toFixed(4)),
  num(s.input_tokens), num(s.output_tokens), num(s.cache_read_tokens)];

function sessionList(d) {
  const heads = ["session", "started", "duration", "prompts#", "tool calls#", "failures#", "events#", "end"];
  if (d.usage) heads.push("cost#", "input tokens#", "output tokens#", "cache read#");
  return [
    table(heads, d.sessions.map((s) => h("tr", { "data-session": s.session },
      h("td", {}, link("sessions/" + encodeURIComponent(s.session), s.session)), h("td", {}, when(s.started)),
      h("td", { class: "num" }, dur(((s.ended || s.last_seen) - s.started) * 1000)),
      num(s.prompts), num(s.tool_calls), num(s.tool_failures), num(s.events), h("td", {}, s.end_reason || (s.ended ? "ended" : "–")),
      d.usage ? usageCells(s) : null)), { id: "sessions-table" }),
    d.usage ? null : h("p", { class: "muted" }, "cost and tokens appear here once Claude Code's telemetry is recorded (the session_usage view)."),
  ];
}

function sessionView(d) {
  const s = d.stats;
  if (!s) return [h("p", { class: "error" }, `no session ${d.session}`)];
  return [
    h("p", {}, link("sessions", "← all sessions")),
    h("h2", {}, "Session " + d.session),
    h("div", { class: "cards" }, card("session-started", "started", when(s.started)), card("session-prompts", "prompts", fmt(s.prompts)),
      card("session-tools", "tool calls", fmt(s.tool_calls)), card("session-failures", "failures", fmt(s.tool_failures)),
      card("session-events", "events", fmt(s.events)), s.cost_usd != null ? card("session-cost", "cost", "$" + Number(s.cost_usd).toFixed(4)) : null,
      s.cwd ? card("session-cwd", "directory", s.cwd) : null),
    h("h2", {}, "Timeline"),
    table(["time", "kind", "event"], eventRows(d.events, { noSession: true }), { id: "session-timeline" }),
    h("h2", {}, "Tool calls"),
    table(["started", "tool", "status", "duration#"], d.tool_calls.map((c) => h("tr", {}, h("td", {}, when(c.started)), h("td", {}, c.tool || "?"), h("td", {}, c.status), h("td", { class: "num" }, dur(c.duration_ms))))),
  ];
}

function healthView(d) {
  const dm = d.daemon;
  const since = dm ? dm.since_start : null;
  const rejected = Object.values(d.rejected_by_reason).reduce((a, b) => a + b, 0);
  const dropped = d.spool.dropped ? d.spool.dropped.events : 0;
  const kv = (obj) => table(["", "#"], Object.entries(obj || {}).map(([k, v]) => h("tr", { "data-key": k }, h("td", {}, k), num(v))));
  return [
    h("div", { class: "cards" },
      card("daemon-state", "daemon", dm ? `running, pid ${dm.pid}` : "not answering"),
      card("writer-state", "writer", dm ? dm.writer.state : "–"),
      card("health-rejected", "rejected lines", fmt(rejected)),
      card("spool-waiting", "spool files waiting", fmt(d.spool.waiting)),
      card("spool-dropped", "dropped (spool full)", fmt(dropped)),
      card("db-size", "database (+ WAL)", `${bytes(d.files.db_bytes)} + ${bytes(d.files.wal_bytes)}`),
      card("mirror-size", "mirror", bytes(d.files.mirror_bytes))),
    h("h2", {}, "Rejected lines by reason"), h("div", { id: "rejected-reasons" }, kv(d.rejected_by_reason)),
    dm ? [
      h("h2", {}, "Daemon since start"), kv({ received: since.received, committed: since.committed, rejected: since.rejected, duplicates: since.duplicates, spooled: since.spooled, connections: since.connections, ...Object.fromEntries(Object.entries(since.connections_closed).map(([k, v]) => ["closed: " + k, v])) }),
      h("h2", {}, "Listeners and queue"),
      kv({ "open batch": dm.queue.open_batch, "batches at the writer": dm.queue.inflight_batches, "followers (tail -f)": dm.followers,
        "HTTP connections open": dm.http ? dm.http.open_connections : null, "HTTP requests": dm.http ? dm.http.requests : null,
        "events/s, last 10 s": dm.rate.last_10s }),
    ] : h("p", { class: "muted" }, "The daemon does not answer on its control socket: figures since its start are unavailable."),
    h("h2", {}, "Latest rejected lines"),
    table(["time", "reason", "detail", "size#", "preview"], d.rejected_latest.map((r) => h("tr", {}, h("td", {}, when(r.recv_ts)), h("td", {}, r.reason), h("td", { class: "text" }, r.detail), num(r.size), h("td", { class: "text" }, h("pre", {}, r.preview))))),
    h("h2", {}, "This dashboard"), kv(d.dashboard ? { ...d.dashboard.counts, "queries stopped (time limit)": d.dashboard.interrupted } : {}),
  ];
}

// -- routing, refreshing, live ----------------------------------------------------------------
const route = { tab: "overview", arg: null };
let controlsFor = null;
let results = null;
let loading = null;
let again = false;
let head = { eid: -1, rid: -1 };

function debounce(fn) {
  let t = null;
  return (e) => { clearTimeout(t); t = setTimeout(() => fn(e), 250); };
}

function parseRoute() {
  const [tab, ...rest] = location.hash.slice(1).split("/");
  route.tab = TABS[tab] ? tab : "overview";
  route.arg = rest.length ? decodeURIComponent(rest.join("/")) : null;
  for (const a of document.querySelectorAll("#tabs a")) a.classList.toggle("active", a.dataset.tab === route.tab);
}

function show() {
  parseRoute();
  const key = route.tab + "/" + (route.arg || "");
  if (controlsFor !== key) {
    controlsFor = key;
    seen = new Set();
    main.replaceChildren();
    const c = TABS[route.tab].controls();
    results = h("div", { id: "results" });
    main.append(...[c, results].filter(Boolean));
    document.body.dataset.rendered = "";
    window.tabStarted = performance.now();
  }
  return refresh();
}

async function refresh() {
  if (loading) { again = true; return loading; }
  const tab = route.tab;
  const target = results;
  loading = (async () => {
    let nodes;
    const old = charts;
    charts = [];
    try {
      const data = await TABS[tab].load();
      nodes = TABS[tab].render(data);
      for (const e of data.events || []) seen.add(e.eid);
    } catch (e) {
      nodes = [h("p", { class: "error" }, String(e.message || e))];
    }
    if (target !== results) return; // the tab changed meanwhile
    for (const c of old) c.destroy();
    target.replaceChildren(...[nodes].flat(Infinity).filter(Boolean));
    if (!document.body.dataset.rendered) {
      window.firstPaintMs = performance.now() - window.tabStarted; // since the tab was chosen
      if (window.paintedAt === undefined) window.paintedAt = performance.now(); // since navigation
    }
    document.body.dataset.rendered = tab;
    document.body.dataset.refreshed = String(Date.now());
  })();
  try { await loading; } finally { loading = null; }
  if (again) { again = false; return refresh(); }
}

async function poll() {
  try {
    const now = await api("head");
    liveBadge.className = "ok";
    liveBadge.textContent = "live · last event #" + now.eid;
    if (now.eid !== head.eid || now.rid !== head.rid || (route.tab === "health" && head.eid !== -1)) {
      const first = head.eid === -1;
      head = now;
      if (!first) await refresh();
    }
  } catch (e) {
    liveBadge.className = "down";
    liveBadge.textContent = String(e.message || e).slice(0, 80);
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

window.addEventListener("hashchange", show);
show();
poll();
