#include "config/config.hpp"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <memory>
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

template <typename Table, typename E>
constexpr std::string_view name_of(const Table& table, E value) noexcept {
  const auto it = std::ranges::find(table, value, &Named<E>::value);
  return it == table.end() ? "?" : it->name;
}

template <typename Table>
constexpr auto value_of(const Table& table, std::string_view name) noexcept {
  const auto it = std::ranges::find(table, name, &Table::value_type::name);
  return it == table.end() ? std::nullopt : std::optional(it->value);
}

std::string in_quotes(std::string_view text) { return '"' + std::string(text) + '"'; }

template <typename Range, typename Projection>
std::string join(const Range& items, Projection name) {
  std::string out;
  for (const auto& item : items)
    out += (out.empty() ? "" : ", ") + std::string(std::invoke(name, item));
  return out;
}

Position position(const YAML::Mark& mark) noexcept {
  if (mark.is_null()) return {};
  return {mark.line + 1, mark.column + 1};  // yaml-cpp counts from 0
}

// Thrown anywhere below read_config() and caught only by parse_config(), next to yaml-cpp's own
// exceptions: each field reader stays a straight line instead of passing a result up every level.
struct Invalid {
  YAML::Mark mark;
  std::string field;
  std::string reason;
};

enum class Role { listen, target };  // listen: IP literal and port required; target: names, :6443

class Field;
struct Key {
  std::string_view name;
  std::function<void(const Field&)> read;
};

// One value of the document with its dotted path and position: every reader below takes one, so
// an error names the field and the line without the caller repeating either. Borrows `seen`.
class Field {
 public:
  Field(YAML::Node node, std::string path, YAML::Mark mark, Positions& seen)
      : node_(std::move(node)), path_(std::move(path)), mark_(mark), seen_(&seen) {
    seen[path_] = position(mark_);
  }

  [[noreturn]] void fail(std::string reason) const {
    throw Invalid{mark_, path_, std::move(reason)};
  }

  // A map of settings: each key known to `keys` goes to its reader; others are errors.
  void fields(std::initializer_list<Key> keys) const {
    if (node_.IsNull()) return;  // `health:` with nothing under it: all defaults
    expect(YAML::NodeType::Map);
    std::vector<std::string> done;
    for (const auto& entry : node_) {
      const std::string name = entry.first.Scalar();
      const auto key = std::ranges::find(keys, name, &Key::name);
      if (key == keys.end())
        throw Invalid{
            entry.first.Mark(), path_,
            "unknown key " + in_quotes(name) + " (valid: " + join(keys, &Key::name) + ")"};
      if (std::ranges::find(done, name) != done.end())
        throw Invalid{entry.first.Mark(), path_, "duplicate key " + in_quotes(name)};
      done.push_back(name);
      key->read(child(entry.second, path_.empty() ? name : path_ + '.' + name, entry.first.Mark()));
    }
  }

  // A string; an absent value (`ca_file:`, `~`) reads as "".
  std::string text() const {
    if (node_.IsNull()) return {};
    expect(YAML::NodeType::Scalar);
    return node_.Scalar();
  }

  // A scalar that must not be empty: the start of every typed value below.
  std::string token() const {
    std::string t = text();
    if (t.empty()) fail("missing value");
    return t;
  }

  template <typename Int>
  Int integer(Int min, Int max) const {
    const std::string t = token();
    long long value = 0;
    const auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), value);
    const bool too_big = ec == std::errc::result_out_of_range;
    if (end != t.data() + t.size() || (ec != std::errc{} && !too_big))
      fail(in_quotes(t) + " is not a whole number");
    if (too_big || std::cmp_less(value, min) || std::cmp_greater(value, max))
      fail("must be between " + std::to_string(min) + " and " + std::to_string(max) + ", got " + t);
    return static_cast<Int>(value);
  }

  Duration duration(Duration min, Duration max = Duration::max()) const {
    const std::string t = token();
    const auto d = parse_duration(t);
    if (!d) fail(in_quotes(t) + " is not a duration");
    if (*d < min || *d > max)
      fail((max == Duration::max()
                ? "must be at least " + format_duration(min)
                : "must be between " + format_duration(min) + " and " + format_duration(max)) +
           ", got " + t);
    return *d;
  }

  // For settings the kernel takes in whole seconds (TCP keepalive): "1500ms" would be truncated.
  Duration seconds(Duration min, Duration max) const {
    const Duration d = duration(min, max);
    if (d % 1s != 0ms) fail("must be a whole number of seconds, got " + format_duration(d));
    return d;
  }

  template <typename Table>
  auto choice(const Table& table) const {
    const std::string t = token();
    if (const auto value = value_of(table, t)) return *value;
    fail(in_quotes(t) + " is not one of " + join(table, &Table::value_type::name));
  }

  Address address(Role role) const {
    const std::string t = token();
    std::string why;
    const auto address =
        role == Role::listen ? parse_listen_address(t, &why) : parse_address(t, &why);
    if (!address) fail(in_quotes(t) + ": " + why);
    return *address;
  }

  // A list of addresses; `targets:` with nothing after it is an empty list.
  std::vector<Address> addresses(Role role) const {
    std::vector<Address> out;
    if (node_.IsNull()) return out;
    expect(YAML::NodeType::Sequence);
    for (const auto& item : node_)
      out.push_back(
          child(item, path_ + '[' + std::to_string(out.size()) + ']', mark_).address(role));
    return out;
  }

 private:
  // An absent value's own mark points past it, at the next line: use its key's instead.
  Field child(const YAML::Node& node, std::string path, const YAML::Mark& key_mark) const {
    return {node, std::move(path), node.IsNull() ? key_mark : node.Mark(), *seen_};
  }

  void expect(YAML::NodeType::value type) const {
    static constexpr auto kind = [](YAML::NodeType::value t) {
      switch (t) {
        case YAML::NodeType::Map:
          return "a map";
        case YAML::NodeType::Sequence:
          return "a list";
        case YAML::NodeType::Scalar:
          return "a single value";
        default:
          return "nothing";
      }
    };
    if (node_.Type() != type)
      fail(std::string("expected ") + kind(type) + ", got " + kind(node_.Type()));
  }

  YAML::Node node_;
  std::string path_;
  YAML::Mark mark_;
  Positions* seen_;
};

void read(const Field& f, Admin& admin) {
  f.fields({{"listen", [&](const Field& v) {
               // "" (or nothing) turns the admin server off.
               if (v.text().empty())
                 admin.listen.reset();
               else
                 admin.listen = v.address(Role::listen);
             }}});
}

void read(const Field& f, Health& h) {
  f.fields({
      {"mode", [&](const Field& v) { h.mode = v.choice(kHealthModes); }},
      {"interval", [&](const Field& v) { h.interval = v.duration(1ms); }},
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
  if (!c.health.cert_file.empty() && c.health.key_file.empty())
    return {{"health.cert_file", "needs health.key_file as well"}};
  if (c.health.cert_file.empty() && !c.health.key_file.empty())
    return {{"health.key_file", "needs health.cert_file as well"}};
  return std::nullopt;
}

}  // namespace

Result<Config> parse_config(std::string_view yaml, std::string_view file) {
  const auto error = [&](const YAML::Mark& mark, std::string field, std::string reason) {
    const Position at = position(mark);
    return Error{std::string(file), at.line, at.column, std::move(field), std::move(reason)};
  };
  // The one place where yaml-cpp's exceptions, and ours, become values.
  try {
    return read_config(YAML::Load(std::string(yaml)));
  } catch (const Invalid& e) {
    return error(e.mark, e.field, e.reason);
  } catch (const YAML::Exception& e) {
    return error(e.mark, "", "invalid YAML: " + e.msg);
  }
}

Result<Config> load_config(const std::filesystem::path& file) {
  const auto unreadable = [&] {
    return Error{file.string(), 0, 0, "", std::string("cannot read: ") + std::strerror(errno)};
  };
  struct Close {
    void operator()(std::FILE* f) const noexcept { std::fclose(f); }
  };
  const std::unique_ptr<std::FILE, Close> in(std::fopen(file.c_str(), "rb"));
  if (!in) return unreadable();
  std::string text;
  char buffer[8192];
  while (const auto n = std::fread(buffer, 1, sizeof buffer, in.get())) text.append(buffer, n);
  if (std::ferror(in.get())) return unreadable();  // e.g. EISDIR: fopen accepts a directory
  return parse_config(text, file.string());
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
std::optional<LogLevel> parse_log_level(std::string_view name) noexcept {
  return value_of(kLogLevels, name);
}

}  // namespace apilb::config
