#include "config/config.hpp"

#include "config/yaml_util.hpp"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <array>
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

void read(const Field& f, Log& l) {
  f.fields({
      {"level", [&](const Field& v) { l.level = v.choice(kLogLevels); }},
      {"format", [&](const Field& v) { l.format = v.choice(kLogFormats); }},
  });
}

Config read_config(const YAML::Node& root) {
  Config c;
  Field(root, "", root.Mark(), c.positions)
      .fields({
          {"listen", [&](const Field& v) { c.listen = v.addresses(Role::listen); }},
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
      });
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

// Rules between fields. Returns the first broken one as (field, reason).
std::optional<std::pair<std::string, std::string>> broken_rule(const Config& c) {
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
  if (c.health.timeout > c.health.interval)
    return {{"health.timeout", format_duration(c.health.timeout) +
                                   " is longer than health.interval (" +
                                   format_duration(c.health.interval) + ")"}};
  if (c.health.down_interval && c.health.timeout > *c.health.down_interval)
    return {{"health.timeout", format_duration(c.health.timeout) +
                                   " is longer than health.down_interval (" +
                                   format_duration(*c.health.down_interval) + ")"}};
  if (!c.health.cert_file.empty() && c.health.key_file.empty())
    return {{"health.cert_file", "needs health.key_file as well"}};
  if (c.health.cert_file.empty() && !c.health.key_file.empty())
    return {{"health.key_file", "needs health.cert_file as well"}};
  return std::nullopt;
}

}  // namespace

Result<Config> parse_config(std::string_view yaml, std::string_view file) {
  return detail::parse_document<Config>(yaml, file, read_config);
}

Result<Config> load_config(const std::filesystem::path& file) {
  int error_number = 0;
  const auto text = detail::read_text(file, error_number);
  if (!text)
    return Error{file.string(), 0, 0, "",
                 std::string("cannot read: ") + std::strerror(error_number)};
  return parse_config(*text, file.string());
}

Result<Config> finalize(Config config, const Overrides& overrides, std::string_view file) {
  const auto replace = [&](auto& field, const auto& value, std::string_view path) {
    field = value;
    forget(config.positions, path);
  };
  if (!overrides.listen.empty()) replace(config.listen, overrides.listen, "listen");
  if (!overrides.targets.empty()) replace(config.targets, overrides.targets, "targets");
  if (overrides.first_master) replace(config.first_master, overrides.first_master, "first_master");
  if (overrides.admin) replace(config.admin.listen, *overrides.admin, "admin.listen");
  if (overrides.log_level) replace(config.log.level, *overrides.log_level, "log.level");

  if (auto broken = broken_rule(config)) {
    auto [field, reason] = std::move(*broken);
    const auto at = config.positions.find(field);
    const Position p = at == config.positions.end() ? Position{} : at->second;
    return Error{std::string(file), p.line, p.column, std::move(field), std::move(reason)};
  }
  return config;
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
