#include "config/config.hpp"

#include "config/yaml_util.hpp"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <utility>

namespace apilb::config {

using namespace std::chrono_literals;

std::string Error::message() const {
  std::string out = file;
  if (line > 0) out += ':' + std::to_string(line) + ':' + std::to_string(column);
  if (!out.empty()) out += ": ";
  if (!field.empty()) out += field + ": ";
  return out + reason;
}

void throw_exception_from_error(const Error& e, const boost::source_location&) {
  throw std::runtime_error(e.message());
}

namespace {

using detail::Field;
using detail::in_quotes;
using detail::Role;
using detail::value_of;

template <typename E>
struct Named {
  std::string_view name;
  E value;
};

// One table per enum serves parsing, error messages and to_string(); listed in the order users
// read them in messages.
constexpr std::array<Named<Balance>, 3> kBalances{
    {{"round_robin", Balance::round_robin},
     {"least_connections", Balance::least_connections},
     {"random_two", Balance::random_two}}};
constexpr std::array<Named<HealthMode>, 3> kHealthModes{
    {{"tcp", HealthMode::tcp}, {"tls", HealthMode::tls}, {"https", HealthMode::https}}};
constexpr std::array<Named<OnTargetDown>, 2> kOnTargetDown{
    {{"close", OnTargetDown::close}, {"keep", OnTargetDown::keep}}};
constexpr std::array<Named<LogFormat>, 2> kLogFormats{
    {{"text", LogFormat::text}, {"json", LogFormat::json}}};
constexpr std::array<Named<LogLevel>, 7> kLogLevels{{{"trace", LogLevel::trace},
                                                     {"debug", LogLevel::debug},
                                                     {"info", LogLevel::info},
                                                     {"warn", LogLevel::warn},
                                                     {"error", LogLevel::error},
                                                     {"critical", LogLevel::critical},
                                                     {"off", LogLevel::off}}};
constexpr std::array<Named<SpliceMode>, 3> kSpliceModes{{{"auto", SpliceMode::automatic},
                                                         {"always", SpliceMode::always},
                                                         {"never", SpliceMode::never}}};

constexpr std::array<Named<ReplayFirstFlight>, 3> kReplayModes{
    {{"tls", ReplayFirstFlight::tls},
     {"always", ReplayFirstFlight::always},
     {"never", ReplayFirstFlight::never}}};

constexpr std::array<Named<Engine>, 3> kEngines{
    {{"auto", Engine::automatic}, {"uring", Engine::uring}, {"epoll", Engine::epoll}}};

template <typename Table, typename E>
constexpr std::string_view name_of(const Table& table, E value) noexcept {
  const auto it = std::ranges::find(table, value, &Named<E>::value);
  return it == table.end() ? "?" : it->name;
}

void read(const Field& f, Admin& admin) {
  f.fields({{"listen", [&](const Field& v) {
               // "" (or nothing) turns the admin server off.
               if (v.text().empty()) admin.listen.reset();
               else admin.listen = v.address(Role::listen);
             }}});
}

void read(const Field& f, Health& h) {
  f.fields({
      {"mode", [&](const Field& v) { h.mode = v.choice(kHealthModes); }},
      {"interval", [&](const Field& v) { h.interval = v.duration(1ms); }},
      {"down_interval", [&](const Field& v) { h.down_interval = v.duration(1ms); }},
      {"timeout", [&](const Field& v) { h.timeout = v.duration(1ms); }},
      {"rise", [&](const Field& v) { h.rise = v.integer(1, 100); }},
      {"fall", [&](const Field& v) { h.fall = v.integer(1, 100); }},
      {"path",
       [&](const Field& v) {
         h.path = v.token();
         // It goes verbatim into the request line: a space or control character would break it.
         const bool bad =
             std::ranges::any_of(h.path, [](unsigned char c) { return c <= ' ' || c == 0x7f; });
         if (h.path.front() != '/' || bad)
           v.fail(in_quotes(h.path) + " is not a URL path starting with /");
       }},
      {"ca_file", [&](const Field& v) { h.ca_file = v.text(); }},
      {"cert_file", [&](const Field& v) { h.cert_file = v.text(); }},
      {"key_file", [&](const Field& v) { h.key_file = v.text(); }},
  });
}

void read(const Field& f, Upstream& u) {
  f.fields({
      {"connect_timeout", [&](const Field& v) { u.connect_timeout = v.duration(1ms); }},
      {"retries", [&](const Field& v) { u.retries = v.integer(0, 10); }},
      {"on_target_down", [&](const Field& v) { u.on_target_down = v.choice(kOnTargetDown); }},
      {"replay_first_flight",
       [&](const Field& v) { u.replay_first_flight = v.choice(kReplayModes); }},
  });
}

void read(const Field& f, Tcp& t) {
  // Linux caps TCP_KEEPIDLE and TCP_KEEPINTVL at 32767 s; TCP_USER_TIMEOUT is an int of ms.
  constexpr Duration kMaxKeepalive = 32767s;
  f.fields({
      {"keepalive_idle", [&](const Field& v) { t.keepalive_idle = v.seconds(0s, kMaxKeepalive); }},
      {"keepalive_interval",
       [&](const Field& v) { t.keepalive_interval = v.seconds(1s, kMaxKeepalive); }},
      {"keepalive_count", [&](const Field& v) { t.keepalive_count = v.integer(1, 100); }},
      {"user_timeout", [&](const Field& v) { t.user_timeout = v.duration(0ms, 24h); }},
  });
}

void read(const Field& f, Relay& r) {
  f.fields({
      {"splice", [&](const Field& v) { r.splice = v.choice(kSpliceModes); }},
      {"engine", [&](const Field& v) { r.engine = v.choice(kEngines); }},
      {"buffer_size",
       [&](const Field& v) { r.buffer_size = v.integer<std::uint32_t>(1024, 1 << 20); }},
  });
}

void read(const Field& f, Limits& l) {
  f.fields({{"max_connections", [&](const Field& v) {
               l.max_connections = v.integer<std::uint32_t>(1, 10'000'000);
             }}});
}

void read(const Field& f, Rebalance& r) {
  f.fields({
      {"enabled", [&](const Field& v) { r.enabled = v.boolean(); }},
      {"threshold", [&](const Field& v) { r.threshold = v.number(1.05, 100); }},
      {"after", [&](const Field& v) { r.after = v.duration(0ms); }},
      {"rate", [&](const Field& v) { r.rate = v.number(0.01, 10000); }},
  });
}

void read(const Field& f, Upgrade& u) {
  f.fields({
      {"socket", [&](const Field& v) { u.socket = v.text(); }},
      {"timeout", [&](const Field& v) { u.timeout = v.duration(100ms); }},
  });
}

// An entry of `listeners`. Its health fields go over a copy of the top-level `health`, which is
// why `listeners` is read after everything else.
void read(const Field& f, Listener& l, const Health& main_health) {
  l.health = main_health;
  f.fields({
      {"listen",
       [&](const Field& v) {
         // One address, or a list of them (both families, say).
         if (v.is_list()) l.listen = v.addresses(Role::listen);
         else l.listen = {v.address(Role::listen)};
       }},
      {"target_port", [&](const Field& v) { l.target_port = v.integer<std::uint16_t>(1, 65535); }},
      {"health_from", [&](const Field& v) { l.health_from = v.integer<std::uint16_t>(1, 65535); }},
      {"health", [&](const Field& v) { read(v, l.health); }},
  });
  if (l.listen.empty()) f.fail("needs a listen address");
}

void read(const Field& f, Discovery& d) {
  f.fields({
      {"kubernetes",
       [&](const Field& v) {
         Kubernetes& k = d.kubernetes.emplace();
         v.fields({
             {"kubeconfig", [&](const Field& w) { k.kubeconfig = w.token(); }},
             {"in_cluster", [&](const Field& w) { k.in_cluster = w.boolean(); }},
             {"port_name", [&](const Field& w) { k.port_name = w.token(); }},
             {"resync", [&](const Field& w) { k.resync = w.duration(1s); }},
         });
         if (k.kubeconfig.empty() && !k.in_cluster)
           v.fail("needs kubeconfig: FILE or in_cluster: true (how to reach the apiserver)");
         if (!k.kubeconfig.empty() && k.in_cluster)
           v.fail("kubeconfig and in_cluster: true exclude each other: keep one");
       }},
      {"confirm_after", [&](const Field& v) { d.confirm_after = v.duration(0ms); }},
  });
}

void read(const Field& f, Log& l) {
  f.fields({
      {"level", [&](const Field& v) { l.level = v.choice(kLogLevels); }},
      {"format", [&](const Field& v) { l.format = v.choice(kLogFormats); }},
  });
}

Config read_config(const YAML::Node& root) {
  Config c;
  std::optional<Field> listeners;
  Field(root, "", root.Mark(), c.positions)
      .fields({
          {"listen", [&](const Field& v) { c.listen = v.addresses(Role::listen); }},
          {"listeners", [&](const Field& v) { listeners = v; }},  // below, once `health` is
          {"admin", [&](const Field& v) { read(v, c.admin); }},
          {"targets", [&](const Field& v) { c.targets = v.addresses(Role::target); }},
          {"targets_file", [&](const Field& v) { c.targets_file = v.text(); }},
          {"first_master", [&](const Field& v) { c.first_master = v.address(Role::target); }},
          {"balance", [&](const Field& v) { c.balance = v.choice(kBalances); }},
          {"health", [&](const Field& v) { read(v, c.health); }},
          {"upstream", [&](const Field& v) { read(v, c.upstream); }},
          {"tcp", [&](const Field& v) { read(v, c.tcp); }},
          {"relay", [&](const Field& v) { read(v, c.relay); }},
          {"limits", [&](const Field& v) { read(v, c.limits); }},
          {"drain_timeout", [&](const Field& v) { c.drain_timeout = v.duration(0ms); }},
          {"threads", [&](const Field& v) { c.threads = v.integer(0u, 1024u); }},
          {"log", [&](const Field& v) { read(v, c.log); }},
          {"rebalance", [&](const Field& v) { read(v, c.rebalance); }},
          {"upgrade", [&](const Field& v) { read(v, c.upgrade); }},
          {"discovery", [&](const Field& v) { read(v, c.discovery); }},
      });
  if (listeners)
    listeners->items([&](const Field& v) { read(v, c.listeners.emplace_back(), c.health); });
  c.positions.erase("");  // the document itself is not a field
  return c;
}

// Drops the file's positions for a field that a flag replaced: an error in it is not in the file.
void forget(Positions& positions, std::string_view path) {
  std::erase_if(positions, [&](const auto& entry) {
    const std::string_view key = entry.first;
    return key.starts_with(path) && (key.size() == path.size() || key[path.size()] == '[');
  });
}

using Broken = std::optional<std::pair<std::string, std::string>>;

Broken broken_rule(const Health& h, const std::string& path) {
  if (h.timeout > h.interval)
    return {{path + ".timeout", format_duration(h.timeout) + " is longer than " + path +
                                    ".interval (" + format_duration(h.interval) + ")"}};
  if (h.down_interval && h.timeout > *h.down_interval)
    return {{path + ".timeout", format_duration(h.timeout) + " is longer than " + path +
                                    ".down_interval (" + format_duration(*h.down_interval) + ")"}};
  if (!h.cert_file.empty() && h.key_file.empty())
    return {{path + ".cert_file", "needs " + path + ".key_file as well"}};
  if (h.cert_file.empty() && !h.key_file.empty())
    return {{path + ".key_file", "needs " + path + ".cert_file as well"}};
  return std::nullopt;
}

// The ports the main listener's targets are known to use (the feed's are known only at run time).
std::vector<std::uint16_t> static_target_ports(const Config& c) {
  std::vector<std::uint16_t> ports;
  for (const Address& a : c.targets) ports.push_back(a.port);
  if (c.first_master) ports.push_back(c.first_master->port);
  return ports;
}

Broken broken_listener_rule(const Config& c) {
  const auto main_ports = static_target_ports(c);
  const auto is_main_port = [&](std::uint16_t port) {
    return std::ranges::find(main_ports, port) != main_ports.end();
  };
  std::vector<Address> seen = c.listen;
  if (c.admin.listen) seen.push_back(*c.admin.listen);
  for (std::size_t i = 0; i < c.listeners.size(); ++i) {
    const Listener& l = c.listeners[i];
    const std::string path = "listeners[" + std::to_string(i) + "]";
    for (std::size_t j = 0; j < l.listen.size(); ++j) {
      if (std::ranges::find(seen, l.listen[j]) != seen.end())
        return {{path + ".listen" + (l.listen.size() > 1 ? '[' + std::to_string(j) + ']' : ""),
                 in_quotes(l.listen[j].to_string()) + " is already a listen address"}};
      seen.push_back(l.listen[j]);
    }
    const std::string port = std::to_string(l.port());
    if (is_main_port(l.port()))
      return {{path + ".target_port", port + " is the port of `targets`: list " +
                                          in_quotes(l.listen.front().to_string()) +
                                          " under the top-level listen instead"}};
    for (std::size_t j = 0; j < i; ++j)
      if (c.listeners[j].port() == l.port())
        return {{path + ".target_port",
                 port + " is listeners[" + std::to_string(j) + "]'s target port already"}};
    if (!l.health_from) {
      if (auto broken = broken_rule(l.health, path + ".health")) return broken;
      continue;
    }
    const std::string from = std::to_string(*l.health_from);
    if (*l.health_from == l.port())
      return {{path + ".health_from", from + " is this listener's own target port"}};
    const auto source = std::ranges::find(c.listeners, *l.health_from, &Listener::port);
    if (source != c.listeners.end()) {
      if (source->health_from)
        return {{path + ".health_from", "the listener on port " + from +
                                            " follows another one's checks itself (no chains)"}};
    } else if (!main_ports.empty() && !is_main_port(*l.health_from)) {
      return {{path + ".health_from", "no targets use port " + from +
                                          ": name the port of `targets` or of another listener"}};
    }
  }
  return std::nullopt;
}

// Rules between fields. Returns the first broken one as (field, reason).
Broken broken_rule(const Config& c) {
  if (c.listen.empty()) return {{"listen", "needs at least one address"}};
  for (const auto& [name, list] :
       {std::pair{"listen", &c.listen}, std::pair{"targets", &c.targets}}) {
    for (std::size_t i = 0; i < list->size(); ++i) {
      const auto first = std::ranges::find(*list, (*list)[i]) - list->begin();
      if (std::cmp_less(first, i))
        return {{std::string(name) + '[' + std::to_string(i) + ']',
                 in_quotes((*list)[i].to_string()) + " is already listed as " + name + '[' +
                     std::to_string(first) + ']'}};
    }
  }
  if (c.admin.listen && std::ranges::find(c.listen, *c.admin.listen) != c.listen.end())
    return {{"admin.listen", in_quotes(c.admin.listen->to_string()) + " is also a listen address"}};
  if (c.targets.empty() && c.targets_file.empty() && !c.first_master)
    return {
        {"targets", "no targets, no targets_file and no first_master: nothing to send traffic to"}};
  if (auto broken = broken_rule(c.health, "health")) return broken;
  return broken_listener_rule(c);
}

}  // namespace

Result<Config> parse_config(std::string_view yaml, std::string_view file) {
  return detail::parse_document<Config>(yaml, file, read_config);
}

Result<Config> load_config(const std::filesystem::path& file) {
  int error_number = 0;
  const auto text = read_text(file, error_number);
  if (!text)
    return Error{file.string(), 0, 0, "",
                 std::string("cannot read: ") + std::strerror(error_number)};
  return parse_config(*text, file.string());
}

Result<Config> finalize(Config config, const Overrides& overrides, std::string_view file) {
  std::vector<std::string_view> replaced;
  const auto replace = [&](auto& field, const auto& value, std::string_view path) {
    field = value;
    forget(config.positions, path);
    replaced.push_back(path);
  };
  if (!overrides.listen.empty()) replace(config.listen, overrides.listen, "listen");
  if (!overrides.targets.empty()) replace(config.targets, overrides.targets, "targets");
  if (overrides.first_master) replace(config.first_master, overrides.first_master, "first_master");
  if (overrides.admin) replace(config.admin.listen, *overrides.admin, "admin.listen");
  if (overrides.log_level) replace(config.log.level, *overrides.log_level, "log.level");

  if (auto broken = broken_rule(config)) {
    auto [field, reason] = std::move(*broken);
    // A field left at its default has no position: point at the nearest one written around it.
    Position p;
    const bool from_flag = std::ranges::any_of(
        replaced, [&, &path = field](std::string_view flag) { return path.starts_with(flag); });
    for (std::string_view path = field; !path.empty() && !from_flag;) {
      if (const auto at = config.positions.find(path); at != config.positions.end()) {
        p = at->second;
        break;
      }
      const auto dot = path.rfind('.'), bracket = path.rfind('[');
      const auto cut = dot == path.npos       ? bracket
                       : bracket == path.npos ? dot
                                              : std::max(dot, bracket);
      if (cut == path.npos) break;
      path = path.substr(0, cut);
    }
    return Error{std::string(file), p.line, p.column, std::move(field), std::move(reason)};
  }
  return config;
}

std::string state_directory() {
  const char* state = std::getenv("STATE_DIRECTORY");
  if (!state || !*state) return {};
  return std::string(state, std::strcspn(state, ":"));  // systemd may list several
}

std::string Upgrade::socket_path() const {
  if (!socket.empty()) return socket;
  const std::string state = state_directory();
  return (state.empty() ? std::string("/var/lib/apiserver-lb") : state) + "/upgrade.sock";
}

std::string_view to_string(Balance v) noexcept { return name_of(kBalances, v); }
std::string_view to_string(HealthMode v) noexcept { return name_of(kHealthModes, v); }
std::string_view to_string(OnTargetDown v) noexcept { return name_of(kOnTargetDown, v); }
std::string_view to_string(LogFormat v) noexcept { return name_of(kLogFormats, v); }
std::string_view to_string(LogLevel v) noexcept { return name_of(kLogLevels, v); }
std::string_view to_string(SpliceMode v) noexcept { return name_of(kSpliceModes, v); }
std::string_view to_string(ReplayFirstFlight v) noexcept { return name_of(kReplayModes, v); }
std::string_view to_string(Engine v) noexcept { return name_of(kEngines, v); }
std::optional<Engine> parse_engine(std::string_view name) noexcept {
  return value_of(kEngines, name);
}
std::optional<LogLevel> parse_log_level(std::string_view name) noexcept {
  return value_of(kLogLevels, name);
}

}  // namespace apilb::config
