#include "config/yaml_util.hpp"

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <memory>

namespace apilb::config::detail {

using namespace std::chrono_literals;

std::string in_quotes(std::string_view text) { return '"' + std::string(text) + '"'; }

namespace {

std::string format_number(double value) {
  std::string out = std::to_string(value);  // 1.500000
  out.erase(out.find_last_not_of('0') + 1);
  if (out.back() == '.') out.pop_back();
  return out;
}

}  // namespace

Position position(const YAML::Mark& mark) noexcept {
  if (mark.is_null()) return {};
  return {mark.line + 1, mark.column + 1};  // yaml-cpp counts from 0
}

Field::Field(YAML::Node node, std::string path, YAML::Mark mark, Positions& seen)
    : node_(std::move(node)), path_(std::move(path)), mark_(mark), seen_(&seen) {
  seen[path_] = position(mark_);
}

void Field::fail(std::string reason) const { throw Invalid{mark_, path_, std::move(reason)}; }

void Field::fields(std::initializer_list<Key> keys) const {
  if (node_.IsNull()) return;  // `health:` with nothing under it: all defaults
  expect(YAML::NodeType::Map);
  std::vector<std::string> done;
  for (const auto& entry : node_) {
    const std::string name = entry.first.Scalar();
    const auto key = std::ranges::find(keys, name, &Key::name);
    if (key == keys.end())
      throw Invalid{entry.first.Mark(), path_,
                    "unknown key " + in_quotes(name) + " (valid: " + join(keys, &Key::name) + ")"};
    if (std::ranges::find(done, name) != done.end())
      throw Invalid{entry.first.Mark(), path_, "duplicate key " + in_quotes(name)};
    done.push_back(name);
    key->read(child(entry.second, path_.empty() ? name : path_ + '.' + name, entry.first.Mark()));
  }
}

void Field::items(const std::function<void(const Field&)>& read) const {
  if (node_.IsNull()) return;
  expect(YAML::NodeType::Sequence);
  std::size_t i = 0;
  for (const auto& item : node_) read(child(item, path_ + '[' + std::to_string(i++) + ']', mark_));
}

std::string Field::text() const {
  if (node_.IsNull()) return {};
  expect(YAML::NodeType::Scalar);
  return node_.Scalar();
}

std::string Field::token() const {
  std::string t = text();
  if (t.empty()) fail("missing value");
  return t;
}

bool Field::boolean() const {
  const std::string t = token();
  if (t == "true") return true;
  if (t == "false") return false;
  fail(in_quotes(t) + " is not true or false");
}

double Field::number(double min, double max) const {
  const std::string t = token();
  double value = 0;
  const auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), value);
  if (ec != std::errc{} || end != t.data() + t.size()) fail(in_quotes(t) + " is not a number");
  if (!(value >= min && value <= max))
    fail("must be between " + format_number(min) + " and " + format_number(max) + ", got " + t);
  return value;
}

Duration Field::duration(Duration min, Duration max) const {
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

Duration Field::seconds(Duration min, Duration max) const {
  const Duration d = duration(min, max);
  if (d % 1s != 0ms) fail("must be a whole number of seconds, got " + format_duration(d));
  return d;
}

Address Field::address(Role role) const {
  const std::string t = token();
  std::string why;
  const auto address =
      role == Role::listen ? parse_listen_address(t, &why) : parse_address(t, &why);
  if (!address) fail(in_quotes(t) + ": " + why);
  return *address;
}

std::vector<Address> Field::addresses(Role role) const {
  std::vector<Address> out;
  items([&](const Field& item) { out.push_back(item.address(role)); });
  return out;
}

Field Field::child(const YAML::Node& node, std::string path, const YAML::Mark& key_mark) const {
  return {node, std::move(path), node.IsNull() ? key_mark : node.Mark(), *seen_};
}

void Field::expect(YAML::NodeType::value type) const {
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

}  // namespace apilb::config::detail
