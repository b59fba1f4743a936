// The status page at `/`: HTML, CSS and a little plain JavaScript in one string, so the binary
// needs no file at run time and the page nothing from the network (it works air-gapped). The
// script polls /status (every 2 s; `/?refresh=0.5` for faster), rebuilds the page from it with
// textContent only (target names and check reasons are never parsed as HTML), and computes the
// per-second rates from two successive polls (timed by the server's clock).
#include "admin/status_page.hpp"

namespace apilb::admin {

namespace {

constexpr std::string_view kPage = R"html(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>apiserver-lb</title>
<style>
:root { --up: #1a7f37; --down: #cf222e; --drain: #9a6700; --panic: #8250df; --muted: #656d76;
        --line: #d0d7de; --bg: #f6f8fa; font: 15px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; }
body { margin: 0 auto; padding: 12px 16px 32px; max-width: 1600px; color: #1f2328; }
h1 { font-size: 1.3rem; margin: 0; }
h2 { font-size: 1.05rem; margin: 22px 0 6px; }
header { display: flex; flex-wrap: wrap; align-items: baseline; gap: 6px 14px; padding-bottom: 8px;
         border-bottom: 1px solid var(--line); }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; color: #fff; font-weight: 600;
         font-size: .85rem; white-space: nowrap; }
.up { background: var(--up); } .down { background: var(--down); } .draining { background: var(--drain); }
.unknown { background: var(--muted); } .panic { background: var(--panic); }
.muted { color: var(--muted); }
.stale { color: var(--down); font-weight: 600; }
dl.facts { display: grid; grid-template-columns: repeat(auto-fit, minmax(160px, 1fr)); gap: 4px 16px; margin: 10px 0; }
dl.facts div { background: var(--bg); border-radius: 6px; padding: 6px 10px; }
dl.facts dt { font-size: .8rem; color: var(--muted); } dl.facts dd { margin: 0; font-weight: 600; overflow-wrap: break-word; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 6px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-size: .8rem; color: var(--muted); font-weight: 600; white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.addr { font-family: ui-monospace, monospace; overflow-wrap: anywhere; }
tr[data-state="down"] td.addr { color: var(--down); }
ol.changes { list-style: none; padding: 0; margin: 0; font-size: .9rem; }
ol.changes li { padding: 3px 0; border-bottom: 1px dotted var(--line); overflow-wrap: anywhere; }
dl.config { columns: 300px; column-gap: 24px; margin: 0; font-size: .88rem; }
dl.config div { break-inside: avoid; display: flex; justify-content: space-between; gap: 10px; padding: 2px 0;
                border-bottom: 1px dotted var(--line); }
dl.config dt { color: var(--muted); } dl.config dd { margin: 0; font-family: ui-monospace, monospace; overflow-wrap: anywhere; text-align: right; }
/* A phone: every target becomes a card, each cell a labelled line. */
@media (max-width: 760px) {
  :root { font-size: 14px; }
  body { padding: 8px 10px 24px; }
  table, tbody, tr, td { display: block; width: auto; }
  thead { display: none; }
  tr { border: 1px solid var(--line); border-radius: 8px; margin-bottom: 10px; padding: 4px 8px; }
  td { border: 0; padding: 3px 0; display: flex; justify-content: space-between; gap: 12px; text-align: right; }
  td.num { white-space: normal; }
  td::before { content: attr(data-label); color: var(--muted); font-size: .8rem; text-align: left; flex: none; }
  td.addr { font-weight: 600; }
  td.addr::before { font-family: system-ui, sans-serif; font-weight: 400; }
}
</style>
</head>
<body>
<header>
  <h1>apiserver-lb</h1>
  <span id="ready" class="badge unknown">loading</span>
  <span id="reason" class="muted"></span>
  <span id="updated" class="muted"></span>
</header>
<dl class="facts" id="facts"></dl>
<h2>Targets</h2>
<table>
  <thead><tr><th>Target</th><th>State</th><th>Sources</th><th class="num">In state</th><th>Last check</th>
    <th class="num">Active</th><th class="num">Conn/s</th><th class="num">In / out per s</th>
    <th class="num">Connections</th><th class="num">Connect failures</th><th class="num">Failovers</th></tr></thead>
  <tbody id="targets"></tbody>
</table>
<h2>Recent state changes</h2>
<ol class="changes" id="changes"></ol>
<h2>Configuration in force</h2>
<dl class="config" id="config"></dl>
<p class="muted">Read-only. Data: <a href="status">/status</a> · <a href="metrics">/metrics</a> ·
  <a href="readyz">/readyz</a> · <a href="healthz">/healthz</a></p>
<script>
"use strict";
const refresh = Math.max(0.2, Number(new URLSearchParams(location.search).get("refresh")) || 2);
let previous = null;  // {at, targets: {address: {total, up, down}}}: the last poll, for rates

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of children) e.append(c);
  return e;
}
function duration(s) {
  if (s < 60) return s.toFixed(s < 10 ? 1 : 0) + "s";
  const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
  return d ? d + "d " + h + "h" : h ? h + "h " + m + "m" : m + "m " + Math.floor(s % 60) + "s";
}
function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  for (; n >= 1024 && i < units.length - 1; ++i) n /= 1024;
  return (i ? n.toFixed(1) : Math.round(n)) + " " + units[i];
}
// {health: {mode: "tcp"}} -> [["health.mode", "tcp"]]
function flatten(o, prefix = "", out = []) {
  for (const [k, v] of Object.entries(o)) {
    if (v && typeof v === "object" && !Array.isArray(v)) flatten(v, prefix + k + ".", out);
    else out.push([prefix + k, Array.isArray(v) ? v.join(", ") || "none" : v === null || v === "" ? "—" : String(v)]);
  }
  return out;
}
function stateOf(t, panic) { return panic && t.state !== "up" ? t.state + " · panic" : t.state; }

function render(s, at) {
  const ready = document.getElementById("ready");
  ready.textContent = s.panic_mode ? "PANIC MODE" : s.ready ? "ready" : "NOT READY";
  ready.className = "badge " + (s.panic_mode ? "panic" : s.ready ? "up" : "down");
  document.getElementById("reason").textContent = s.not_ready_reason || "";
  document.getElementById("facts").replaceChildren(...[
    ["Listeners", s.listeners.join(", ") || "none"], ["Balance", s.balance],
    ["Client connections", s.connections_active], ["Running for", duration((Date.parse(s.now) - Date.parse(s.started)) / 1000)],
    ["Reloads ok / refused", s.reloads.succeeded + " / " + s.reloads.failed + (s.reloads.last_ok ? "" : " (last refused)")],
    ["Feed errors", s.feed_errors], ["Rejected (limit) / failed", s.connections_rejected + " / " + s.connections_failed],
  ].map(([k, v]) => el("div", {}, el("dt", {}, k), el("dd", {}, String(v)))));

  const dt = previous ? (at - previous.at) / 1000 : 0;
  const now = {at, targets: {}};
  document.getElementById("targets").replaceChildren(...s.targets.map(t => {
    const before = previous && previous.targets[t.address];
    now.targets[t.address] = {total: t.connections_total, up: t.bytes_upstream, down: t.bytes_downstream};
    const rate = (a, b) => before && dt > 0 ? Math.max(0, a - b) / dt : null;
    const conns = rate(t.connections_total, before && before.total);
    const inps = rate(t.bytes_upstream, before && before.up), outps = rate(t.bytes_downstream, before && before.down);
    const lc = t.last_check;
    const check = lc.result + " (" + lc.latency_ms.toFixed(1) + " ms)" + (lc.reason ? ": " + lc.reason : "");
    const state = stateOf(t, s.panic_mode);
    const cell = (label, content, cls) => el("td", cls ? {"data-label": label, class: cls} : {"data-label": label}, content);
    return el("tr", {"data-target": t.address, "data-state": t.state},
      cell("Target", t.address, "addr"),
      cell("State", el("span", {class: "badge " + (s.panic_mode && t.state !== "up" ? "panic" : t.state)}, state)),
      cell("Sources", (t.sources || [t.origin]).join(", ")),
      cell("In state", duration(t.seconds_in_state), "num"),
      cell("Last check", check),
      cell("Active", String(t.connections_active), "num"),
      cell("Conn/s", conns === null ? "…" : conns.toFixed(1), "num"),
      cell("In / out per s", inps === null ? "…" : bytes(inps) + " / " + bytes(outps), "num"),
      cell("Connections", String(t.connections_total), "num"),
      cell("Connect failures", String(t.connect_failures), "num"),
      cell("Failovers", String(t.failovers), "num"));
  }));
  if (!s.targets.length) document.getElementById("targets").append(el("tr", {}, el("td", {colspan: 11}, "no target configured")));
  previous = now;

  const changes = s.recent_changes.slice().reverse().map(c => el("li", {},
    el("span", {class: "muted"}, c.at + " (" + duration(c.seconds_ago) + " ago) "),
    (c.target || "balancer") + ": " + c.from + " → ", el("b", {}, c.to), c.reason ? " — " + c.reason : ""));
  document.getElementById("changes").replaceChildren(...(changes.length ? changes : [el("li", {class: "muted"}, "none since start")]));
  document.getElementById("config").replaceChildren(...flatten(s.config || {}).map(([k, v]) =>
    el("div", {}, el("dt", {}, k), el("dd", {}, v))));
  const updated = document.getElementById("updated");
  updated.textContent = "updated " + new Date(at).toLocaleTimeString() + ", every " + refresh + " s";
  updated.className = "muted";
}

async function poll() {
  try {
    const reply = await fetch("status", {cache: "no-store"});
    if (!reply.ok) throw new Error("HTTP " + reply.status);
    const s = await reply.json();
    render(s, s.now_ms || Date.now());  // the server's clock: rates are not skewed by a slow fetch
    document.body.dataset.polls = String(Number(document.body.dataset.polls || 0) + 1);
  } catch (e) {
    const updated = document.getElementById("updated");
    updated.textContent = "admin API unreachable (" + e.message + "): the figures below are stale";
    updated.className = "stale";
  }
  setTimeout(poll, refresh * 1000);
}
poll();
</script>
</body>
</html>
)html";

}  // namespace

std::string_view status_page_html() noexcept { return kPage; }

}  // namespace apilb::admin
