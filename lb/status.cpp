// Rendering of the admin views: /status JSON, /metrics text, the `status` command's table.
// Pure functions of an AdminView; no sockets.
#include "lb/admin.hpp"

// Boost.JSON header-only: its implementation is compiled here, in this one translation unit.
#include <boost/json/src.hpp>
#include <prometheus/metric_family.h>
#include <prometheus/text_serializer.h>

#include <unistd.h>

#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

namespace apilb::lb {

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
    case Outcome::passed: return "passed";
    case Outcome::not_ready: return "not_ready";
    case Outcome::failed: return "failed";
    case Outcome::inconclusive: return "inconclusive";
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

// Builds one metric family at a time.
class Families {
 public:
  MetricFamily& add(std::string name, std::string help, MetricType type) {
    families_.push_back(MetricFamily{std::move(name), std::move(help), type, {}});
    return families_.back();
  }
  std::vector<MetricFamily> take() { return std::move(families_); }

 private:
  std::vector<MetricFamily> families_;
};

ClientMetric gauge(double v, std::vector<ClientMetric::Label> labels = {}) {
  ClientMetric m;
  m.label = std::move(labels);
  m.gauge.value = v;
  return m;
}

ClientMetric counter(double v, std::vector<ClientMetric::Label> labels = {}) {
  ClientMetric m;
  m.label = std::move(labels);
  m.counter.value = v;
  return m;
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
  std::string why;
  doc["ready"] = ready(view, &why);
  if (!why.empty()) doc["not_ready_reason"] = why;
  doc["panic_mode"] = view.panic;
  doc["connections_active"] = view.connections;
  doc["started"] = rfc3339(view.started);
  json::array targets;
  for (const auto& t : view.targets) {
    json::object o;
    o["address"] = t.name;
    o["origin"] = std::string(healthcheck::to_string(t.origin));
    o["state"] = std::string(healthcheck::to_string(t.state));
    o["since"] = rfc3339(t.since);
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
  Families f;
  auto per_target = [&](std::string name, std::string help, MetricType type, auto value) {
    auto& family = f.add("apiserver_lb_" + std::move(name), std::move(help), type);
    for (const auto& t : view.targets) {
      const double v = value(t);
      family.metric.push_back(type == MetricType::Counter ? counter(v, {{"target", t.name}})
                                                          : gauge(v, {{"target", t.name}}));
    }
  };
  using S = healthcheck::TargetStatus;
  per_target("target_up", "Whether the target takes new connections (1) or not (0).",
             MetricType::Gauge, [](const S& t) { return t.state == TargetState::up ? 1.0 : 0.0; });
  per_target("target_draining", "Whether the target is draining: no new connections, established ones finish.",
             MetricType::Gauge, [](const S& t) { return t.state == TargetState::draining ? 1.0 : 0.0; });
  per_target("connections_active", "Connections currently relayed to the target.", MetricType::Gauge,
             [](const S& t) { return double(t.stats->active.load(std::memory_order_relaxed)); });
  per_target("connections_total", "Connections relayed to the target since start.", MetricType::Counter,
             [](const S& t) { return double(t.stats->total.load(std::memory_order_relaxed)); });
  per_target("connect_failures_total", "Failed connects to the target (refused, timed out).",
             MetricType::Counter,
             [](const S& t) { return double(t.stats->connect_failures.load(std::memory_order_relaxed)); });
  per_target("failovers_total", "Times the target left service (up to down or draining).",
             MetricType::Counter, [](const S& t) { return double(t.left_service); });

  auto& bytes = f.add("apiserver_lb_bytes_total",
                      "Bytes relayed, by target and direction (upstream: client to target).",
                      MetricType::Counter);
  for (const auto& t : view.targets) {
    bytes.metric.push_back(counter(double(t.stats->bytes_upstream.load(std::memory_order_relaxed)),
                                   {{"direction", "upstream"}, {"target", t.name}}));
    bytes.metric.push_back(counter(double(t.stats->bytes_downstream.load(std::memory_order_relaxed)),
                                   {{"direction", "downstream"}, {"target", t.name}}));
  }

  auto& checks = f.add("apiserver_lb_health_check_duration_seconds",
                       "Duration of active health checks.", MetricType::Histogram);
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
    checks.metric.push_back(std::move(m));
  }

  f.add("apiserver_lb_panic_mode", "1 while no target is healthy and every target is tried in turn.",
        MetricType::Gauge).metric.push_back(gauge(view.panic ? 1 : 0));
  std::string why;
  f.add("apiserver_lb_ready", "1 when /readyz answers 200.", MetricType::Gauge)
      .metric.push_back(gauge(ready(view, &why) ? 1 : 0));
  auto& reloads = f.add("apiserver_lb_config_reloads_total", "Configuration reloads (SIGHUP), by result.",
                        MetricType::Counter);
  reloads.metric.push_back(counter(double(view.reloads_succeeded), {{"result", "success"}}));
  reloads.metric.push_back(counter(double(view.reloads_failed), {{"result", "failure"}}));
  f.add("apiserver_lb_target_feed_errors_total", "targets_file updates refused (invalid or emptying).",
        MetricType::Counter).metric.push_back(counter(double(view.feed_errors)));
  f.add("apiserver_lb_client_connections_active", "Client connections currently open.",
        MetricType::Gauge).metric.push_back(gauge(double(view.connections)));
  f.add("apiserver_lb_client_connections_rejected_total", "Client connections closed at once by limits.max_connections.",
        MetricType::Counter).metric.push_back(counter(double(view.rejected)));
  f.add("apiserver_lb_client_connections_failed_total", "Client connections closed because no target answered.",
        MetricType::Counter).metric.push_back(counter(double(view.failed)));
  auto& relay = f.add("apiserver_lb_relay_bytes_total", "Bytes relayed, by mechanism.", MetricType::Counter);
  relay.metric.push_back(counter(double(view.bytes_copied), {{"mode", "copy"}}));
  relay.metric.push_back(counter(double(view.bytes_spliced), {{"mode", "splice"}}));

  const ProcessFigures p = read_process();
  f.add("process_open_fds", "Number of open file descriptors.", MetricType::Gauge)
      .metric.push_back(gauge(p.open_fds));
  f.add("process_resident_memory_bytes", "Resident memory size in bytes.", MetricType::Gauge)
      .metric.push_back(gauge(p.resident_bytes));
  f.add("process_cpu_seconds_total", "User and system CPU time spent in seconds.", MetricType::Counter)
      .metric.push_back(counter(p.cpu_seconds));
  f.add("process_start_time_seconds", "Start time of the process since the Unix epoch in seconds.",
        MetricType::Gauge)
      .metric.push_back(gauge(std::chrono::duration<double>(view.started.time_since_epoch()).count()));

  return prometheus::TextSerializer().Serialize(f.take());
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
  char line[512];
  std::snprintf(line, sizeof line, "%-28s %-9s %-8s %-20s %6s  %s\n", "TARGET", "STATE", "ORIGIN",
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
    std::snprintf(line, sizeof line, "%-28s %-9s %-8s %-20s %6s  %s\n",
                  text(t.if_contains("address")).c_str(), text(t.if_contains("state")).c_str(),
                  text(t.if_contains("origin")).c_str(), text(t.if_contains("since")).c_str(),
                  text(t.if_contains("connections_active")).c_str(), last.c_str());
    out += line;
  }
  return out;
}

}  // namespace apilb::lb
