#include "admin/render.hpp"

#include "admin/status_page.hpp"

// Boost.JSON header-only: its implementation is compiled here, in this one translation unit.
#include <prometheus/metric_family.h>
#include <prometheus/text_serializer.h>
#include <boost/json/src.hpp>

#include <unistd.h>

#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

namespace apilb::admin {

namespace json = boost::json;
using healthcheck::Outcome;
using healthcheck::TargetState;
using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

namespace {

std::string rfc3339(std::chrono::system_clock::time_point t) {
  const std::time_t secs = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char out[32];
  std::strftime(out, sizeof out, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return out;
}

std::string_view to_string(Outcome o) {
  switch (o) {
    case Outcome::passed:
      return "passed";
    case Outcome::not_ready:
      return "not_ready";
    case Outcome::failed:
      return "failed";
    case Outcome::inconclusive:
      return "inconclusive";
  }
  return "?";
}

std::string fmt_latency(double ms) {
  char out[32];
  std::snprintf(out, sizeof out, " (%.1fms)", ms);
  return out;
}

double seconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

// Process figures from /proc/self, as the Prometheus client libraries name them.
struct ProcessFigures {
  double open_fds = 0;
  double resident_bytes = 0;
  double cpu_seconds = 0;
};

ProcessFigures read_process() {
  ProcessFigures p;
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec))
    ++p.open_fds;
  const double page = static_cast<double>(::sysconf(_SC_PAGESIZE));
  const double ticks = static_cast<double>(::sysconf(_SC_CLK_TCK));
  std::ifstream statm("/proc/self/statm");
  double size = 0, resident = 0;
  if (statm >> size >> resident) p.resident_bytes = resident * page;
  std::ifstream stat("/proc/self/stat");
  std::string line;
  if (std::getline(stat, line)) {
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    std::istringstream rest(line.substr(line.rfind(')') + 2));
    std::string field;
    double utime = 0, stime = 0;
    for (int i = 1; i <= 13 && rest >> field; ++i) {
      if (i == 12) utime = std::stod(field);
      if (i == 13) stime = std::stod(field);
    }
    p.cpu_seconds = (utime + stime) / ticks;
  }
  return p;
}

ClientMetric sample(MetricType type, double v, std::vector<ClientMetric::Label> labels) {
  ClientMetric m;
  m.label = std::move(labels);
  if (type == MetricType::Counter) m.counter.value = v;
  else m.gauge.value = v;
  return m;
}

double load(const std::atomic<std::uint64_t>& a) {
  return double(a.load(std::memory_order_relaxed));
}
double load(const std::atomic<std::int64_t>& a) {
  return double(a.load(std::memory_order_relaxed));
}

using healthcheck::TargetStatus;
using Label = ClientMetric::Label;

// The metrics of /metrics as tables: one row per family, each with its series, computed from an
// Input: a target's status (the series repeat per target, with the target label last) or the
// whole view.
template <typename Input>
struct Family {
  struct Series {
    std::vector<Label> labels;
    double (*value)(const Input&);
  };
  const char* name;
  const char* help;
  MetricType type;
  std::vector<Series> series;
};

// Appends one family's series for `input` to `family`.
template <typename Input>
void add_series(MetricFamily& family, const Family<Input>& f, const Input& input,
                const std::vector<Label>& extra = {}) {
  for (const auto& s : f.series) {
    auto labels = s.labels;
    labels.insert(labels.end(), extra.begin(), extra.end());
    family.metric.push_back(sample(f.type, s.value(input), std::move(labels)));
  }
}

const std::vector<Family<TargetStatus>>& target_families() {
  using S = TargetStatus;
  constexpr auto G = MetricType::Gauge;
  constexpr auto C = MetricType::Counter;
  static const std::vector<Family<TargetStatus>> table = {
      {"apiserver_lb_target_up",
       "Whether the target takes new connections (1) or not (0).",
       G,
       {{{}, [](const S& t) { return t.state == TargetState::up ? 1.0 : 0.0; }}}},
      {"apiserver_lb_target_draining",
       "Whether the target is draining: no new connections, established ones finish.",
       G,
       {{{}, [](const S& t) { return t.state == TargetState::draining ? 1.0 : 0.0; }}}},
      {"apiserver_lb_connections_active",
       "Connections currently relayed to the target.",
       G,
       {{{}, [](const S& t) { return load(t.stats->active); }}}},
      {"apiserver_lb_connections_total",
       "Connections relayed to the target since start.",
       C,
       {{{}, [](const S& t) { return load(t.stats->total); }}}},
      {"apiserver_lb_connect_failures_total",
       "Failed connects to the target (refused, timed out).",
       C,
       {{{}, [](const S& t) { return load(t.stats->connect_failures); }}}},
      {"apiserver_lb_failovers_total",
       "Times the target left service (up to down or draining).",
       C,
       {{{}, [](const S& t) { return double(t.left_service); }}}},
      {"apiserver_lb_bytes_total",
       "Bytes relayed, by target and direction (upstream: client to target).",
       C,
       {{{{"direction", "upstream"}}, [](const S& t) { return load(t.stats->bytes_upstream); }},
        {{{"direction", "downstream"}},
         [](const S& t) { return load(t.stats->bytes_downstream); }}}},
  };
  return table;
}

struct Inputs {
  const AdminView& view;
  ProcessFigures process;
};

const std::vector<Family<Inputs>>& view_families() {
  using I = Inputs;
  constexpr auto G = MetricType::Gauge;
  constexpr auto C = MetricType::Counter;
  static const std::vector<Family<Inputs>> table = {
      {"apiserver_lb_panic_mode",
       "1 while no target is healthy and every target is tried in turn.",
       G,
       {{{}, [](const I& i) { return i.view.panic ? 1.0 : 0.0; }}}},
      {"apiserver_lb_ready",
       "1 when /readyz answers 200.",
       G,
       {{{}, [](const I& i) { return ready(i.view, nullptr) ? 1.0 : 0.0; }}}},
      {"apiserver_lb_config_reloads_total",
       "Configuration reloads (SIGHUP), by result.",
       C,
       {{{{"result", "success"}}, [](const I& i) { return double(i.view.reloads_succeeded); }},
        {{{"result", "failure"}}, [](const I& i) { return double(i.view.reloads_failed); }}}},
      {"apiserver_lb_config_last_reload_successful",
       "0 when the last reload (SIGHUP) was refused: the file on disk is not in force.",
       G,
       {{{}, [](const I& i) { return i.view.last_reload_ok ? 1.0 : 0.0; }}}},
      {"apiserver_lb_target_feed_errors_total",
       "targets_file updates refused (invalid or emptying).",
       C,
       {{{}, [](const I& i) { return double(i.view.feed_errors); }}}},
      {"apiserver_lb_client_connections_active",
       "Client connections currently open.",
       G,
       {{{}, [](const I& i) { return double(i.view.connections); }}}},
      {"apiserver_lb_client_connections_rejected_total",
       "Client connections closed at once by limits.max_connections.",
       C,
       {{{}, [](const I& i) { return double(i.view.rejected); }}}},
      {"apiserver_lb_client_connections_failed_total",
       "Client connections closed because no target answered.",
       C,
       {{{}, [](const I& i) { return double(i.view.failed); }}}},
      {"apiserver_lb_client_connections_replayed_total",
       "Client connections whose target closed before answering, moved with their first flight to "
       "another target.",
       C,
       {{{}, [](const I& i) { return double(i.view.replayed); }}}},
      {"apiserver_lb_client_connections_rebalanced_total",
       "Long-lived client connections closed by rebalance so that they reconnect to a target "
       "with fewer.",
       C,
       {{{}, [](const I& i) { return double(i.view.rebalanced); }}}},
      {"apiserver_lb_relay_bytes_total",
       "Bytes relayed, by mechanism.",
       C,
       {{{{"mode", "copy"}}, [](const I& i) { return double(i.view.bytes_copied); }},
        {{{"mode", "splice"}}, [](const I& i) { return double(i.view.bytes_spliced); }}}},
      {"apiserver_lb_relay_engine",
       "1 for the event engine the workers run (relay.engine auto picks uring where the kernel "
       "allows it).",
       G,
       {{{{"engine", "uring"}},
         [](const I& i) { return i.view.engine == config::Engine::uring ? 1.0 : 0.0; }},
        {{{"engine", "epoll"}},
         [](const I& i) { return i.view.engine == config::Engine::epoll ? 1.0 : 0.0; }}}},
      {"apiserver_lb_bugs_total",
       "Exceptions that escaped a coroutine: bugs, logged as critical; the process kept serving.",
       C,
       {{{}, [](const I& i) { return double(i.view.bugs); }}}},
      {"process_open_fds",
       "Number of open file descriptors.",
       G,
       {{{}, [](const I& i) { return i.process.open_fds; }}}},
      {"process_resident_memory_bytes",
       "Resident memory size in bytes.",
       G,
       {{{}, [](const I& i) { return i.process.resident_bytes; }}}},
      {"process_cpu_seconds_total",
       "User and system CPU time spent in seconds.",
       C,
       {{{}, [](const I& i) { return i.process.cpu_seconds; }}}},
      {"process_start_time_seconds",
       "Start time of the process since the Unix epoch in seconds.",
       G,
       {{{},
         [](const I& i) {
           return std::chrono::duration<double>(i.view.started.time_since_epoch()).count();
         }}}},
  };
  return table;
}

const std::vector<Family<DiscoveryStatus>>& discovery_families() {
  using D = DiscoveryStatus;
  constexpr auto G = MetricType::Gauge;
  constexpr auto C = MetricType::Counter;
  static const std::vector<Family<DiscoveryStatus>> table = {
      {"apiserver_lb_discovery_targets",
       "Targets discovered from the cluster's EndpointSlices, in force.",
       G,
       {{{}, [](const D& d) { return double(d.targets); }}}},
      {"apiserver_lb_discovery_holding",
       "1 while a discovered change is held back (it would empty the list or take out more than "
       "half of the healthy targets).",
       G,
       {{{}, [](const D& d) { return d.holding ? 1.0 : 0.0; }}}},
      {"apiserver_lb_discovery_held_back_total",
       "Discovered changes held back by the safety rules.",
       C,
       {{{}, [](const D& d) { return double(d.held_back); }}}},
      {"apiserver_lb_discovery_lists_total",
       "Full lists of the EndpointSlices taken.",
       C,
       {{{}, [](const D& d) { return double(d.lists); }}}},
      {"apiserver_lb_discovery_watch_events_total",
       "Watch events read, bookmarks included.",
       C,
       {{{}, [](const D& d) { return double(d.events); }}}},
      {"apiserver_lb_discovery_errors_total",
       "Failed connections, requests and watch streams of discovery.",
       C,
       {{{}, [](const D& d) { return double(d.errors); }}}},
  };
  return table;
}

// 1 for each source that names a target: config, file, discovery or fallback.
MetricFamily target_sources(const AdminView& view) {
  MetricFamily family{"apiserver_lb_target_source",
                      "1 for each source that names the target (config, file, discovery, "
                      "fallback).",
                      MetricType::Gauge,
                      {}};
  for (const auto& t : view.targets)
    for (const auto source : t.sources)
      family.metric.push_back(
          sample(MetricType::Gauge, 1,
                 {{"source", std::string(healthcheck::to_string(source))}, {"target", t.name}}));
  return family;
}

MetricFamily check_durations(const AdminView& view) {
  MetricFamily family{"apiserver_lb_health_check_duration_seconds",
                      "Duration of active health checks.",
                      MetricType::Histogram,
                      {}};
  for (const auto& t : view.targets) {
    ClientMetric m;
    m.label = {{"target", t.name}};
    m.histogram.sample_count = t.checks.count;
    m.histogram.sample_sum = t.checks.sum;
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i < healthcheck::CheckHistogram::kBounds.size(); ++i) {
      cumulative += t.checks.counts[i];
      m.histogram.bucket.push_back({cumulative, healthcheck::CheckHistogram::kBounds[i]});
    }
    m.histogram.bucket.push_back({t.checks.count, std::numeric_limits<double>::infinity()});
    family.metric.push_back(std::move(m));
  }
  return family;
}

}  // namespace

bool ready(const AdminView& view, std::string* why) {
  auto fail = [&](std::string reason) {
    if (why) *why = std::move(reason);
    return false;
  };
  if (!view.listening) return fail("not listening");
  if (view.targets.empty()) return fail("no target configured");
  if (view.panic) return fail("panic mode: no target is healthy");
  return true;
}

std::string render_status_json(const AdminView& view) {
  json::object doc;
  doc["listeners"] = json::array(view.listeners.begin(), view.listeners.end());
  doc["balance"] = std::string(config::to_string(view.balance));
  doc["engine"] = std::string(config::to_string(view.engine));
  std::string why;
  doc["ready"] = ready(view, &why);
  if (!why.empty()) doc["not_ready_reason"] = why;
  doc["panic_mode"] = view.panic;
  doc["connections_active"] = view.connections;
  doc["started"] = rfc3339(view.started);
  doc["pid"] = view.pid;
  // Ages are computed here, on one clock: a browser's clock may be off by minutes.
  const auto now = std::chrono::system_clock::now();
  const auto age = [now](std::chrono::system_clock::time_point t) {
    return std::chrono::duration<double>(now - t).count();
  };
  doc["now"] = rfc3339(now);
  doc["now_ms"] =
      std::chrono::duration<double, std::milli>(now.time_since_epoch()).count();  // for rates
  doc["connections_rejected"] = view.rejected;
  doc["connections_failed"] = view.failed;
  doc["feed_errors"] = view.feed_errors;
  doc["reloads"] = json::object{{"succeeded", view.reloads_succeeded},
                                {"failed", view.reloads_failed},
                                {"last_ok", view.last_reload_ok}};
  json::array changes;
  for (const auto& c : view.changes)
    changes.push_back(json::object{{"at", rfc3339(c.at)},
                                   {"seconds_ago", age(c.at)},
                                   {"target", c.target},
                                   {"from", c.from},
                                   {"to", c.to},
                                   {"reason", c.reason}});
  doc["recent_changes"] = std::move(changes);
  if (view.config) doc["config"] = config_json(*view.config);
  if (const auto& d = view.discovery) {
    json::object o{{"state", d->state},           {"resource_version", d->resource_version},
                   {"last_error", d->last_error}, {"targets", d->targets},
                   {"holding", d->holding},       {"held_back", d->held_back},
                   {"lists", d->lists},           {"watches", d->watches},
                   {"events", d->events},         {"errors", d->errors}};
    if (d->holding) o["holding_seconds"] = d->holding_seconds;
    if (d->lists > 0) o["last_list"] = rfc3339(d->last_list);
    doc["discovery"] = std::move(o);
  }
  json::array targets;
  for (const auto& t : view.targets) {
    json::object o;
    o["address"] = t.name;
    o["origin"] = std::string(healthcheck::to_string(t.origin));
    o["state"] = std::string(healthcheck::to_string(t.state));
    json::array sources;
    for (const auto source : t.sources) sources.emplace_back(healthcheck::to_string(source));
    o["sources"] = std::move(sources);
    o["since"] = rfc3339(t.since);
    o["seconds_in_state"] = age(t.since);
    o["failovers"] = t.left_service;
    json::object last;
    last["result"] = std::string(to_string(t.last.outcome));
    last["reason"] = t.last.reason;
    last["latency_ms"] = seconds(t.last.latency) * 1000.0;
    o["last_check"] = std::move(last);
    o["connections_active"] = t.stats->active.load(std::memory_order_relaxed);
    o["connections_total"] = t.stats->total.load(std::memory_order_relaxed);
    o["connect_failures"] = t.stats->connect_failures.load(std::memory_order_relaxed);
    o["bytes_upstream"] = t.stats->bytes_upstream.load(std::memory_order_relaxed);
    o["bytes_downstream"] = t.stats->bytes_downstream.load(std::memory_order_relaxed);
    targets.push_back(std::move(o));
  }
  doc["targets"] = std::move(targets);
  return json::serialize(doc) + "\n";
}

std::string render_metrics(const AdminView& view) {
  std::vector<MetricFamily> families;
  auto family = [&](const auto& f) -> MetricFamily& {
    return families.emplace_back(MetricFamily{f.name, f.help, f.type, {}});
  };
  for (const auto& f : target_families()) {
    MetricFamily& out = family(f);
    for (const auto& t : view.targets) add_series(out, f, t, {{"target", t.name}});
  }
  families.push_back(check_durations(view));
  families.push_back(target_sources(view));
  if (view.discovery)
    for (const auto& f : discovery_families()) add_series(family(f), f, *view.discovery);
  const Inputs inputs{view, read_process()};
  for (const auto& f : view_families()) add_series(family(f), f, inputs);
  return prometheus::TextSerializer().Serialize(families);
}

std::optional<std::string> render_status_table(std::string_view status_json, bool* is_ready) {
  boost::system::error_code ec;
  const json::value doc = json::parse(status_json, ec);
  if (ec || !doc.is_object() || !doc.as_object().contains("targets")) return std::nullopt;
  const json::object& o = doc.as_object();
  const auto text = [](const json::value* v) {
    if (!v) return std::string();
    if (v->is_string()) return std::string(v->as_string());
    return json::serialize(*v);
  };
  const bool r = o.contains("ready") && o.at("ready").is_bool() && o.at("ready").as_bool();
  if (is_ready) *is_ready = r;
  std::string out = r ? "ready" : "NOT READY: " + text(o.if_contains("not_ready_reason"));
  out += "  (balance " + text(o.if_contains("balance")) + ", " +
         text(o.if_contains("connections_active")) + " connections)\n";
  if (const auto* dv = o.if_contains("discovery"); dv && dv->is_object()) {
    const json::object& d = dv->as_object();
    out += "discovery: " + text(d.if_contains("state")) + " (resourceVersion " +
           text(d.if_contains("resource_version")) + "), " + text(d.if_contains("targets")) +
           " targets";
    if (const auto* h = d.if_contains("holding"); h && h->is_bool() && h->as_bool())
      out += ", a change held back";
    if (const auto error = text(d.if_contains("last_error")); !error.empty())
      out += "; last error: " + error;
    out += "\n";
  }
  char line[512];
  std::snprintf(line, sizeof line, "%-28s %-9s %-17s %-20s %6s  %s\n", "TARGET", "STATE", "SOURCES",
                "SINCE", "ACTIVE", "LAST CHECK");
  out += line;
  for (const json::value& tv : o.at("targets").as_array()) {
    if (!tv.is_object()) continue;
    const json::object& t = tv.as_object();
    std::string last;
    if (const auto* lc = t.if_contains("last_check"); lc && lc->is_object()) {
      const auto& l = lc->as_object();
      last = text(l.if_contains("result"));
      if (const auto* ms = l.if_contains("latency_ms"); ms && ms->is_number())
        last += fmt_latency(ms->to_number<double>());
      if (const auto reason = text(l.if_contains("reason")); !reason.empty()) last += ": " + reason;
    }
    // Every source that names it; a /status from before sources existed has only the origin.
    std::string sources;
    if (const auto* sv = t.if_contains("sources"); sv && sv->is_array())
      for (const json::value& source : sv->as_array())
        sources += (sources.empty() ? "" : ",") + text(&source);
    if (sources.empty()) sources = text(t.if_contains("origin"));
    std::snprintf(line, sizeof line, "%-28s %-9s %-17s %-20s %6s  %s\n",
                  text(t.if_contains("address")).c_str(), text(t.if_contains("state")).c_str(),
                  sources.c_str(), text(t.if_contains("since")).c_str(),
                  text(t.if_contains("connections_active")).c_str(), last.c_str());
    out += line;
  }
  return out;
}

}  // namespace apilb::admin
