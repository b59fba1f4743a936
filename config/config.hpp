#pragma once

#include "config/address.hpp"
#include "config/duration.hpp"
#include "config/error.hpp"

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace apilb::config {

inline constexpr std::string_view kDefaultConfigPath = "/etc/apiserver-lb/config.yaml";

enum class Balance { least_connections, round_robin, random_two };
enum class HealthMode { tcp, tls, https };
enum class OnTargetDown { close, keep };
enum class LogFormat { text, json };
enum class LogLevel { trace, debug, info, warn, error, critical, off };
// auto: buffered reads for small messages, splice(2) once a direction moves bulk data.
enum class SpliceMode { automatic, always, never };
// Which first flights (the client's bytes before the target's first byte) are replayed on another
// target when the target closes or resets before answering: a TLS handshake only, any, or none.
enum class ReplayFirstFlight { tls, always, never };
// The workers' event engine. auto: io_uring where the kernel offers it (and no seccomp profile or
// sysctl refuses it), else epoll; uring: io_uring or refuse to start.
enum class Engine { automatic, uring, epoll };

struct Admin {
  std::optional<Address> listen = Address{"127.0.0.1", 9445};  // nullopt: admin server disabled
};

struct Health {
  HealthMode mode = HealthMode::tcp;
  Duration interval = std::chrono::seconds(2);
  // How often a target that is settled down (every recent check failed) is checked, one probe at
  // a time; unset: `interval`. Faster, overlapping probes are for a change that is building.
  std::optional<Duration> down_interval;
  Duration timeout = std::chrono::seconds(1);
  int rise = 2;
  int fall = 2;
  std::string path = "/readyz";
  std::string ca_file;
  std::string cert_file;
  std::string key_file;

  Duration settled_down_interval() const { return down_interval.value_or(interval); }
};

struct Upstream {
  Duration connect_timeout = std::chrono::seconds(2);
  int retries = 2;  // extra attempts on other targets after the first failed connect
  OnTargetDown on_target_down = OnTargetDown::close;
  ReplayFirstFlight replay_first_flight = ReplayFirstFlight::tls;
};

// TCP settings applied to client and upstream sockets alike.
struct Tcp {
  Duration keepalive_idle = std::chrono::seconds(30);  // 0 disables TCP keepalive
  Duration keepalive_interval = std::chrono::seconds(10);
  int keepalive_count = 3;
  Duration user_timeout = std::chrono::seconds(30);  // TCP_USER_TIMEOUT; 0 = kernel default
};

struct Relay {
  SpliceMode splice = SpliceMode::automatic;
  std::uint32_t buffer_size = 16 * 1024;  // bytes per pooled buffer, [1 KiB, 1 MiB]
  // Chosen once at start; a reload keeps the running one.
  Engine engine = Engine::automatic;
};

struct Limits {
  std::uint32_t max_connections = 100000;
};

// One entry of `listeners`: another port of the same targets (konnectivity :8132, the rke2/k3s
// supervisor :9345, etcd :2379), sharing the one target list and feed.
struct Listener {
  std::vector<Address> listen;
  std::uint16_t target_port = 0;  // each target's port behind it; 0 (unset): the listen port
  // Follow the checks of the targets on this port (the main listener's, or another entry's)
  // instead of checking this port; unset: `health` below.
  std::optional<std::uint16_t> health_from;
  Health health;  // the top-level `health` with this entry's own `health` fields over it

  std::uint16_t port() const { return target_port ? target_port : listen.front().port; }
};

// Closing a few of the oldest connections of a target that holds far more than its share, so that
// long-lived watches spread again after a failover. Off unless enabled.
struct Rebalance {
  bool enabled = false;
  double threshold = 1.5;  // the busiest target holds more than this times the fair share...
  Duration after = std::chrono::minutes(2);  // ...for this long
  double rate = 1.0;                         // connections closed per second at most, process-wide
};

// `apiserver-lb upgrade`: the Unix socket the running process hands its listeners over on.
struct Upgrade {
  std::string socket;  // "": $STATE_DIRECTORY/upgrade.sock, else /var/lib/apiserver-lb/upgrade.sock
  Duration timeout = std::chrono::seconds(30);  // for the new process to start serving

  std::string socket_path() const;
};

// `discovery.kubernetes`: list and watch the `kubernetes` Service's EndpointSlices
// (discovery.k8s.io/v1, namespace default) through the balancer's own listener.
struct Kubernetes {
  std::string kubeconfig;           // credentials from this kubeconfig's current context; or
  bool in_cluster = false;          // from the pod's service account
  std::string port_name = "https";  // the EndpointPort the masters are reached on
  Duration resync = std::chrono::minutes(5);  // a fresh list this often, whatever the watch says
};

// Targets the cluster names itself: a third source beside `targets` and `targets_file`.
struct Discovery {
  std::optional<Kubernetes> kubernetes;  // nullopt: no discovery
  // A change that would remove every target, or more than half of the healthy ones, waits this
  // long and then applies only if health checks agree.
  Duration confirm_after = std::chrono::seconds(60);
};

struct Log {
  LogLevel level = LogLevel::info;
  LogFormat format = LogFormat::text;
};

// Where a field was written in the file (1-based; 0 = not from the file).
struct Position {
  int line = 0;
  int column = 0;
};
// Field path ("health.timeout", "targets[1]") -> position. Lets finalize(), which checks fields
// against each other after flags were applied, still point at the line to fix.
using Positions = std::map<std::string, Position, std::less<>>;

// The whole configuration as validated; defaults are PRODUCT.md's.
struct Config {
  std::vector<Address> listen{Address{"0.0.0.0", 6443}};
  std::vector<Listener> listeners;  // more ports of the same targets
  Admin admin;
  std::vector<Address> targets;
  std::string targets_file;  // empty: no feed
  std::optional<Address> first_master;
  Balance balance = Balance::least_connections;
  Health health;
  Upstream upstream;
  Tcp tcp;
  Relay relay;
  Limits limits;
  Rebalance rebalance;
  Upgrade upgrade;
  Discovery discovery;
  Duration drain_timeout = std::chrono::seconds(30);
  unsigned threads = 0;  // 0 = one per core
  Log log;
  Positions positions;  // filled by parse_config(); empty for a Config built in code
};

// Command-line flags of `apiserver-lb run`; each one set replaces the file's value.
struct Overrides {
  std::vector<Address> listen;
  std::vector<Address> targets;
  std::optional<Address> first_master;
  std::optional<std::optional<Address>> admin;  // set to nullopt by `--admin ""` (disabled)
  std::optional<LogLevel> log_level;
};

// Parses YAML text. `file` only names the source in errors. Unknown keys, wrong types, malformed
// addresses/durations/enums and out-of-range numbers are errors naming file:line:col and the field.
Result<Config> parse_config(std::string_view yaml, std::string_view file);
// Reads and parses a file; an unreadable file is an Error with line 0.
Result<Config> load_config(const std::filesystem::path& file);
// Applies flags, then validates the cross-field rules (at least one listen address; a target or a
// first_master; timeouts shorter than intervals; cert_file and key_file together; no address listed
// twice; ...). Each value on its own was checked by parse_config() (or by the flag parser, which
// should use parse_address / parse_listen_address). check-config must call this too.
Result<Config> finalize(Config config, const Overrides& overrides, std::string_view file);

std::string_view to_string(Balance) noexcept;
std::string_view to_string(HealthMode) noexcept;
std::string_view to_string(OnTargetDown) noexcept;
std::string_view to_string(LogFormat) noexcept;
std::string_view to_string(LogLevel) noexcept;
std::string_view to_string(SpliceMode) noexcept;
std::string_view to_string(ReplayFirstFlight) noexcept;
std::string_view to_string(Engine) noexcept;
std::optional<LogLevel> parse_log_level(std::string_view) noexcept;
std::optional<Engine> parse_engine(std::string_view) noexcept;
// systemd's StateDirectory= ($STATE_DIRECTORY, the first of several); "" outside systemd.
std::string state_directory();

}  // namespace apilb::config
