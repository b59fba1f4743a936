#include "discovery/slice.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <optional>
#include <tuple>
#include <utility>

namespace apilb::discovery {
namespace {

using json = nlohmann::json;

// Thrown anywhere below a reader and caught only by parse_json(): each reader stays a straight
// line, as config/'s YAML readers do.
struct Invalid {
  std::string path;
  std::string reason;
};

[[noreturn]] void fail(std::string path, std::string reason) {
  throw Invalid{std::move(path), std::move(reason)};
}

std::string member_path(std::string_view path, std::string_view key) {
  return path.empty() ? std::string(key) : std::string(path) + '.' + std::string(key);
}

std::string item_path(std::string_view path, std::size_t i) {
  return std::string(path) + '[' + std::to_string(i) + ']';
}

const char* kind(const json& value) noexcept {
  switch (value.type()) {
    case json::value_t::object:
      return "an object";
    case json::value_t::array:
      return "an array";
    case json::value_t::string:
      return "a string";
    case json::value_t::boolean:
      return "a boolean";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
    case json::value_t::number_float:
      return "a number";
    default:
      return "null";
  }
}

// A value as the user wrote it, for error messages: JSON text, cut short (a fuzzer's megabyte
// string does not belong in a log line).
std::string shown(const json& value) {
  constexpr std::size_t kMax = 80;
  std::string text = value.dump(-1, ' ', false, json::error_handler_t::replace);
  if (text.size() > kMax) text = text.substr(0, kMax - 3) + "...";
  return text;
}

// Every reader takes the value and its JSON path, so an error names the field without the
// caller repeating it.
const json& object(const json& value, const std::string& path) {
  if (!value.is_object()) fail(path, std::string("expected an object, got ") + kind(value));
  return value;
}

// The member `key` of `parent` (an object), nullptr when it is absent or null: the API server
// omits empty fields, and a client must read an explicit null the same way.
const json* member(const json& parent, const char* key) {
  const auto it = parent.find(key);
  return it == parent.end() || it->is_null() ? nullptr : &*it;
}

const json* optional_array(const json& parent, const char* key, const std::string& path) {
  const json* value = member(parent, key);
  if (value != nullptr && !value->is_array())
    fail(member_path(path, key), std::string("expected an array, got ") + kind(*value));
  return value;
}

std::optional<std::string> optional_string(const json& parent, const char* key,
                                           const std::string& path) {
  const json* value = member(parent, key);
  if (value == nullptr) return std::nullopt;
  if (!value->is_string())
    fail(member_path(path, key), std::string("expected a string, got ") + kind(*value));
  return value->get<std::string>();
}

std::string required_string(const json& parent, const char* key, const std::string& path) {
  auto value = optional_string(parent, key, path);
  if (!value || value->empty()) fail(member_path(path, key), "missing");
  return std::move(*value);
}

std::optional<bool> optional_bool(const json& parent, const char* key, const std::string& path) {
  const json* value = member(parent, key);
  if (value == nullptr) return std::nullopt;
  if (!value->is_boolean())
    fail(member_path(path, key), std::string("expected true or false, got ") + shown(*value));
  return value->get<bool>();
}

// A whole number in [min, max]; 6443.0 is refused, as Go's decoder refuses it for the API's
// int32 fields.
std::optional<std::int64_t> optional_integer(const json& parent, const char* key,
                                             const std::string& path, std::int64_t min,
                                             std::int64_t max) {
  const json* value = member(parent, key);
  if (value == nullptr) return std::nullopt;
  const std::string at = member_path(path, key);
  if (!value->is_number_integer()) fail(at, shown(*value) + " is not a whole number");
  // nlohmann::json keeps a non-negative integer as unsigned, a negative one as signed.
  std::int64_t number = 0;
  bool in_range = false;
  if (value->is_number_unsigned()) {
    const auto u = value->get<std::uint64_t>();
    in_range =
        u <= static_cast<std::uint64_t>(max) && (min <= 0 || u >= static_cast<std::uint64_t>(min));
    number = static_cast<std::int64_t>(u);
  } else {
    number = value->get<std::int64_t>();
    in_range = number >= min && number <= max;
  }
  if (!in_range)
    fail(at, "must be between " + std::to_string(min) + " and " + std::to_string(max) + ", got " +
                 shown(*value));
  return number;
}

// `kind`, when the object names one, must be `expected`: a Pod or an Endpoints object here means
// the request went to the wrong URL. List items carry no kind.
void check_kind(const json& parent, const std::string& path, std::string_view expected) {
  const auto named = optional_string(parent, "kind", path);
  if (named && *named != expected)
    fail(member_path(path, "kind"), shown(json(*named)) + " is not " + std::string(expected));
}

enum class Family { ipv4, ipv6 };

// The address in inet_ntop's canonical text ("fd00::1", not "fd00:0:0::1"), so that two slices
// spelling one address differently merge as one; nullopt when `text` is not of `family`.
std::optional<std::string> canonical(const std::string& text, Family family) {
  const int af = family == Family::ipv4 ? AF_INET : AF_INET6;
  in6_addr bytes{};  // large enough for either
  if (text.size() >= INET6_ADDRSTRLEN || text.find('\0') != std::string::npos ||
      ::inet_pton(af, text.c_str(), &bytes) != 1)
    return std::nullopt;
  char out[INET6_ADDRSTRLEN];
  if (::inet_ntop(af, &bytes, out, sizeof out) == nullptr) return std::nullopt;
  return std::string(out);
}

std::string read_address(const json& value, const std::string& path, Family family) {
  if (!value.is_string()) fail(path, std::string("expected a string, got ") + kind(value));
  const auto& text = value.get_ref<const std::string&>();
  if (auto address = canonical(text, family)) return std::move(*address);
  const Family other = family == Family::ipv4 ? Family::ipv6 : Family::ipv4;
  if (canonical(text, other))
    fail(path, shown(value) + " is not an " + (family == Family::ipv4 ? "IPv4" : "IPv6") +
                   " address, as the slice's addressType says");
  fail(path, shown(value) + " is not an IP address");
}

// The port the slice's endpoints are reached on: the one named `port_name`, or the only one
// whatever its name; nullopt when there is none, it is not TCP, or it has no number (an
// EndpointPort without a port means "all ports", which names nothing to connect to).
std::optional<std::uint16_t> read_port(const json& slice, const std::string& path,
                                       std::string_view port_name) {
  const json* ports = optional_array(slice, "ports", path);
  if (ports == nullptr) return std::nullopt;
  std::optional<std::uint16_t> chosen;
  for (std::size_t i = 0; i < ports->size(); ++i) {
    const std::string at = item_path(member_path(path, "ports"), i);
    const json& port = object((*ports)[i], at);
    const std::string name = optional_string(port, "name", at).value_or("");
    const std::string protocol = optional_string(port, "protocol", at).value_or("TCP");
    const auto number = optional_integer(port, "port", at, 1, 65535);
    if (!chosen && number && protocol == "TCP" && (ports->size() == 1 || name == port_name))
      chosen = static_cast<std::uint16_t>(*number);
  }
  return chosen;
}

struct SliceObject {
  std::string name;
  std::string resource_version;
  std::vector<Endpoint> endpoints;
};

// metadata.name (required: slices are kept by name) and metadata.resourceVersion.
void read_metadata(const json& parent, const std::string& path, SliceObject& out) {
  const json* metadata = member(parent, "metadata");
  const std::string at = member_path(path, "metadata");
  if (metadata == nullptr) fail(at, "missing");
  object(*metadata, at);
  out.name = required_string(*metadata, "name", at);
  out.resource_version = optional_string(*metadata, "resourceVersion", at).value_or("");
}

SliceObject read_slice(const json& value, const std::string& path, std::string_view port_name) {
  const json& slice = object(value, path);
  check_kind(slice, path, "EndpointSlice");
  SliceObject out;
  read_metadata(slice, path, out);
  const std::string address_type = required_string(slice, "addressType", path);
  // FQDN names no address to balance to; a type added after v1 is skipped the same way, so a
  // newer cluster does not stop discovery.
  if (address_type != "IPv4" && address_type != "IPv6") return out;
  const Family family = address_type == "IPv4" ? Family::ipv4 : Family::ipv6;
  const auto port = read_port(slice, path, port_name);

  const json* endpoints = optional_array(slice, "endpoints", path);
  if (endpoints == nullptr) return out;
  for (std::size_t i = 0; i < endpoints->size(); ++i) {
    const std::string at = item_path(member_path(path, "endpoints"), i);
    const json& endpoint = object((*endpoints)[i], at);
    const json* addresses = optional_array(endpoint, "addresses", at);
    if (addresses == nullptr || addresses->empty()) fail(member_path(at, "addresses"), "missing");
    std::vector<std::string> hosts;
    for (std::size_t j = 0; j < addresses->size(); ++j)
      hosts.push_back(
          read_address((*addresses)[j], item_path(member_path(at, "addresses"), j), family));
    bool ready = true;
    bool terminating = false;
    if (const json* conditions = member(endpoint, "conditions")) {
      const std::string conditions_at = member_path(at, "conditions");
      object(*conditions, conditions_at);
      ready = optional_bool(*conditions, "ready", conditions_at).value_or(true);
      optional_bool(*conditions, "serving", conditions_at);  // checked, not used
      terminating = optional_bool(*conditions, "terminating", conditions_at).value_or(false);
    }
    // The addresses of one endpoint are fungible (the API's words): one backend, which the
    // first names, as kube-proxy reads it. Taking each would weigh that master twice.
    if (port)
      out.endpoints.push_back(
          Endpoint{config::Address{std::move(hosts.front()), *port}, ready, terminating});
  }
  return out;
}

SliceList read_list(const json& value, std::string_view port_name) {
  const json& root = object(value, "");
  check_kind(root, "", "EndpointSliceList");
  SliceList list;
  const json* metadata = member(root, "metadata");
  if (metadata == nullptr) fail("metadata", "missing");
  object(*metadata, "metadata");
  list.resource_version = required_string(*metadata, "resourceVersion", "metadata");
  const json* items = optional_array(root, "items", "");
  if (items == nullptr) return list;
  std::map<std::string, std::size_t, std::less<>> index;  // name -> the item that named it
  for (std::size_t i = 0; i < items->size(); ++i) {
    const std::string at = item_path("items", i);
    SliceObject slice = read_slice((*items)[i], at, port_name);
    if (const auto [it, inserted] = index.try_emplace(slice.name, i); !inserted)
      fail(at + ".metadata.name",
           shown(json(slice.name)) + " is already items[" + std::to_string(it->second) + ']');
    list.slices.emplace(std::move(slice.name), std::move(slice.endpoints));
  }
  return list;
}

WatchEvent read_event(const json& value, std::string_view port_name) {
  using Type = WatchEvent::Type;
  static constexpr std::pair<std::string_view, Type> kTypes[] = {
      {"ADDED", Type::added},       {"MODIFIED", Type::modified}, {"DELETED", Type::deleted},
      {"BOOKMARK", Type::bookmark}, {"ERROR", Type::error},
  };
  const json& root = object(value, "");
  const std::string type = required_string(root, "type", "");
  const auto known = std::ranges::find(kTypes, type, &std::pair<std::string_view, Type>::first);
  if (known == std::end(kTypes))
    fail("type", shown(json(type)) + " is not ADDED, MODIFIED, DELETED, BOOKMARK or ERROR");
  const json* object_value = member(root, "object");
  if (object_value == nullptr) fail("object", "missing");
  const json& event_object = object(*object_value, "object");

  WatchEvent event;
  event.type = known->second;
  switch (event.type) {
    case Type::added:
    case Type::modified: {
      SliceObject slice = read_slice(event_object, "object", port_name);
      event.name = std::move(slice.name);
      event.resource_version = std::move(slice.resource_version);
      event.endpoints = std::move(slice.endpoints);
      break;
    }
    case Type::deleted: {  // the last state of the slice: only its name matters
      check_kind(event_object, "object", "EndpointSlice");
      SliceObject slice;
      read_metadata(event_object, "object", slice);
      event.name = std::move(slice.name);
      event.resource_version = std::move(slice.resource_version);
      break;
    }
    case Type::bookmark: {  // an object with only kind and metadata.resourceVersion
      const json* metadata = member(event_object, "metadata");
      if (metadata == nullptr) fail("object.metadata", "missing");
      object(*metadata, "object.metadata");
      event.resource_version = required_string(*metadata, "resourceVersion", "object.metadata");
      break;
    }
    case Type::error: {  // a Status
      check_kind(event_object, "object", "Status");
      event.code =
          static_cast<int>(optional_integer(event_object, "code", "object", 0, 999).value_or(0));
      event.message = optional_string(event_object, "message", "object").value_or("");
      if (event.message.empty())
        event.message = optional_string(event_object, "reason", "object").value_or("");
      break;
    }
  }
  return event;
}

// The one place where a JSON document's errors, and Invalid, become values.
template <typename T, typename Read>
config::Result<T> parse_json(std::string_view text, std::string_view source, Read read) {
  const auto error = [&](std::string field, std::string reason) {
    return config::Error{std::string(source), 0, 0, std::move(field), std::move(reason)};
  };
  try {
    return read(json::parse(text.begin(), text.end()));
  } catch (const Invalid& e) {
    return error(e.path, e.reason);
  } catch (const json::exception& e) {
    // "[json.exception.parse_error.101] parse error at line 1, column 2: ...": keep the part
    // after the bracket, which says where and what.
    std::string what = e.what();
    if (const auto close = what.find("] "); what.starts_with("[json.") && close != what.npos)
      what.erase(0, close + 2);
    constexpr std::size_t kMax = 200;
    if (what.size() > kMax) what = what.substr(0, kMax - 3) + "...";
    return error("", "invalid JSON: " + what);
  }
}

// Address order: IPv4 before IPv6, each by its bytes, then anything else (a name, only from code
// that built an Endpoint by hand); then the text (which ties only for equal hosts: parsing made
// it canonical) and the port. Equal keys are equal addresses.
auto order_key(const config::Address& address) {
  std::array<unsigned char, 16> bytes{};
  int rank = 2;
  const std::string& host = address.host;
  if (host.size() < INET6_ADDRSTRLEN && host.find('\0') == std::string::npos) {
    if (::inet_pton(AF_INET, host.c_str(), bytes.data()) == 1) rank = 0;
    else if (::inet_pton(AF_INET6, host.c_str(), bytes.data()) == 1) rank = 1;
  }
  return std::tuple(rank, bytes, host, address.port);
}

}  // namespace

config::Result<SliceList> parse_slice_list(std::string_view json_text, std::string_view port_name,
                                           std::string_view source) {
  return parse_json<SliceList>(json_text, source,
                               [&](const json& root) { return read_list(root, port_name); });
}

config::Result<WatchEvent> parse_watch_event(std::string_view json_text, std::string_view port_name,
                                             std::string_view source) {
  return parse_json<WatchEvent>(json_text, source,
                                [&](const json& root) { return read_event(root, port_name); });
}

bool apply(Slices& slices, const WatchEvent& event) {
  switch (event.type) {
    case WatchEvent::Type::added:
    case WatchEvent::Type::modified: {
      const auto it = slices.find(event.name);
      if (it == slices.end()) {
        slices.emplace(event.name, event.endpoints);
        return true;
      }
      if (it->second == event.endpoints) return false;
      it->second = event.endpoints;
      return true;
    }
    case WatchEvent::Type::deleted: {
      const auto it = slices.find(event.name);
      if (it == slices.end()) return false;
      slices.erase(it);
      return true;
    }
    case WatchEvent::Type::bookmark:
    case WatchEvent::Type::error:
      return false;
  }
  return false;
}

std::vector<Endpoint> merge(const Slices& slices) {
  std::vector<std::pair<decltype(order_key(config::Address{})), const Endpoint*>> all;
  for (const auto& entry : slices)
    for (const Endpoint& endpoint : entry.second)
      all.emplace_back(order_key(endpoint.address), &endpoint);
  std::ranges::sort(all, {}, &decltype(all)::value_type::first);

  std::vector<Endpoint> out;
  for (std::size_t i = 0; i < all.size();) {
    const Endpoint& first = *all[i].second;
    Endpoint merged{first.address, false, true};
    for (; i < all.size() && all[i].second->address == first.address; ++i) {
      const Endpoint& e = *all[i].second;
      merged.ready = merged.ready || (e.ready && !e.terminating);
      merged.terminating = merged.terminating && e.terminating;
    }
    out.push_back(std::move(merged));
  }
  return out;
}

}  // namespace apilb::discovery
