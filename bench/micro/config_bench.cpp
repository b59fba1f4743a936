// Config parsing: start-up, every SIGHUP, every `check-config`, and the feed on every inotify
// event.
#include "config/config.hpp"
#include "config/feed.hpp"

#include <benchmark/benchmark.h>

#include <stdexcept>
#include <string>

namespace apilb::bench {
namespace {

// The README's full example.
constexpr std::string_view kConfig = R"(listen: ["0.0.0.0:6443"]
admin: { listen: "127.0.0.1:9445" }
targets: ["10.0.0.11:6443", "10.0.0.12:6443", "10.0.0.13:6443"]
targets_file: /etc/apiserver-lb/targets.yaml
first_master: "10.0.0.11:6443"
balance: least_connections
health: { mode: tcp, interval: 2s, timeout: 1s, rise: 2, fall: 2,
          path: /readyz, ca_file: "", cert_file: "", key_file: "" }
upstream: { connect_timeout: 2s, retries: 2, on_target_down: close }
tcp: { keepalive_idle: 30s, keepalive_interval: 10s, keepalive_count: 3, user_timeout: 30s }
relay: { splice: auto, buffer_size: 16384 }
limits: { max_connections: 100000 }
drain_timeout: 30s
threads: 0
log: { level: info, format: text }
)";

void parse_config(benchmark::State& state) {
  for (auto _ : state) {
    auto parsed = config::parse_config(kConfig, "config.yaml");
    if (!parsed) throw std::runtime_error(parsed.error().message());
    benchmark::DoNotOptimize(parsed);
  }
}
BENCHMARK(parse_config);

// Parse plus the cross-field validation, as `run` and `check-config` do.
void parse_and_finalize_config(benchmark::State& state) {
  for (auto _ : state) {
    auto parsed = config::parse_config(kConfig, "config.yaml");
    if (parsed) parsed = config::finalize(std::move(*parsed), {}, "config.yaml");
    if (!parsed) throw std::runtime_error(parsed.error().message());
    benchmark::DoNotOptimize(parsed);
  }
}
BENCHMARK(parse_and_finalize_config);

// A bad value: the error path (yaml-cpp exception caught at the boundary, file:line:col message).
void parse_config_error(benchmark::State& state) {
  const std::string bad = std::string(kConfig) + "bogus: 1\n";
  for (auto _ : state) {
    auto parsed = config::parse_config(bad, "config.yaml");
    if (parsed) throw std::runtime_error("accepted an unknown key");
    benchmark::DoNotOptimize(parsed);
  }
}
BENCHMARK(parse_config_error);

// The installer's feed with `n` targets.
void parse_feed(benchmark::State& state) {
  std::string yaml = "targets:\n";
  for (int i = 0; i < state.range(0); ++i)
    yaml += "  - 10.0." + std::to_string(i / 250) + "." + std::to_string(i % 250 + 1) + ":6443\n";
  for (auto _ : state) {
    auto feed = config::parse_feed(yaml, "targets.yaml");
    if (!feed) throw std::runtime_error(feed.error().message());
    benchmark::DoNotOptimize(feed);
  }
}
BENCHMARK(parse_feed)->Arg(3)->Arg(50);

}  // namespace
}  // namespace apilb::bench
