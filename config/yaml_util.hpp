#pragma once

// Internal to config/: the YAML reading that the config file and the target feed share. Include it
// only from config/*.cpp; it exposes yaml-cpp, which apilb_config links privately.

#include "config/address.hpp"
#include "config/config.hpp"
#include "config/duration.hpp"
#include "config/error.hpp"
#include "config/file.hpp"

#include <yaml-cpp/depthguard.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <filesystem>
#include <functional>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace apilb::config::detail {

std::string in_quotes(std::string_view text);

template <typename Range, typename Projection>
std::string join(const Range& items, Projection name) {
  std::string out;
  for (const auto& item : items)
    out += (out.empty() ? "" : ", ") + std::string(std::invoke(name, item));
  return out;
}

// The value named `name` in a table of {name, value} pairs, nullopt when none is.
template <typename Table>
constexpr auto value_of(const Table& table, std::string_view name) noexcept {
  const auto it = std::ranges::find(table, name, &Table::value_type::name);
  return it == table.end() ? std::nullopt : std::optional(it->value);
}

Position position(const YAML::Mark& mark) noexcept;

// Thrown anywhere below a document reader and caught only by parse_document(), next to
// yaml-cpp's own exceptions: each field reader stays a straight line instead of passing a result
// up every level.
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
  Field(YAML::Node node, std::string path, YAML::Mark mark, Positions& seen);

  [[noreturn]] void fail(std::string reason) const;

  bool is_null() const { return node_.IsNull(); }
  bool is_map() const { return node_.IsMap(); }
  bool is_list() const { return node_.IsSequence(); }

  // A map of settings: each key known to `keys` goes to its reader; others are errors.
  void fields(std::initializer_list<Key> keys) const;

  // A list: `read` gets each item as "path[i]"; an absent value (`targets:`) is an empty list.
  void items(const std::function<void(const Field&)>& read) const;

  // A string; an absent value (`ca_file:`, `~`) reads as "".
  std::string text() const;

  // A scalar that must not be empty: the start of every typed value below.
  std::string token() const;

  // `true` or `false`, nothing looser: yaml-cpp would also take yes/no/on/off/y/n.
  bool boolean() const;

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

  Duration duration(Duration min, Duration max = Duration::max()) const;

  // A decimal number such as 1.5.
  double number(double min, double max) const;

  // For settings the kernel takes in whole seconds (TCP keepalive): "1500ms" would be truncated.
  Duration seconds(Duration min, Duration max) const;

  template <typename Table>
  auto choice(const Table& table) const {
    const std::string t = token();
    if (const auto value = value_of(table, t)) return *value;
    fail(in_quotes(t) + " is not one of " + join(table, &Table::value_type::name));
  }

  Address address(Role role) const;

  // A list of addresses; `targets:` with nothing after it is an empty list.
  std::vector<Address> addresses(Role role) const;

 private:
  // An absent value's own mark points past it, at the next line: use its key's instead.
  Field child(const YAML::Node& node, std::string path, const YAML::Mark& key_mark) const;
  void expect(YAML::NodeType::value type) const;

  YAML::Node node_;
  std::string path_;
  YAML::Mark mark_;
  Positions* seen_;
};

// The one place where yaml-cpp's exceptions, and Invalid, become values: loads `yaml` and hands the
// root to `read`. `file` only names the source in errors.
template <typename T, typename Read>
Result<T> parse_document(std::string_view yaml, std::string_view file, Read read) {
  const auto error = [&](const YAML::Mark& mark, std::string field, std::string reason) {
    const Position at = position(mark);
    return Error{std::string(file), at.line, at.column, std::move(field), std::move(reason)};
  };
  try {
    return read(YAML::Load(std::string(yaml)));
  } catch (const Invalid& e) {
    return error(e.mark, e.field, e.reason);
  } catch (const YAML::DeepRecursion& e) {  // its own message says "bad file"
    return error(e.mark, "",
                 "invalid YAML: nested too deeply (" + std::to_string(e.depth()) + " levels)");
  } catch (const YAML::Exception& e) {
    return error(e.mark, "", "invalid YAML: " + e.msg);
  }
}

}  // namespace apilb::config::detail
