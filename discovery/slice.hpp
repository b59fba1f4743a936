#pragma once

// The `kubernetes` Service's EndpointSlices (discovery.k8s.io/v1) as discovery reads them: the
// list response, the watch stream's events, and the addresses they name. Pure functions on text
// and values, parsed with nlohmann::json (never exposed here); safe from any thread.

#include "config/address.hpp"
#include "config/error.hpp"

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace apilb::discovery {

// One address of a slice, on the port the slice names `port_name`.
struct Endpoint {
  config::Address address;
  // conditions.ready (absent: true, as the API says to read it) and conditions.terminating
  // (absent: false). A master that is not ready or is terminating drains: no new connections.
  bool ready = true;
  bool terminating = false;
  friend bool operator==(const Endpoint&, const Endpoint&) = default;
};

// Slice name -> its endpoints. FQDN slices and addresses without a port named `port_name`
// contribute nothing.
using Slices = std::map<std::string, std::vector<Endpoint>, std::less<>>;

// GET .../endpointslices?labelSelector=kubernetes.io/service-name=kubernetes
struct SliceList {
  std::string resource_version;  // metadata.resourceVersion: where the watch starts
  Slices slices;
};

struct WatchEvent {
  enum class Type { added, modified, deleted, bookmark, error };
  Type type = Type::bookmark;
  std::string resource_version;     // the object's metadata.resourceVersion ("" for an error)
  std::string name;                 // the slice's metadata.name (added, modified, deleted)
  std::vector<Endpoint> endpoints;  // added, modified
  int code = 0;         // error: the Status object's code (410: resourceVersion too old)
  std::string message;  // error: the Status object's message
};

// `source` names the text in errors ("GET /apis/...: items[0].endpoints[1].addresses: ..."), with
// the JSON path of the field that is wrong. `port_name`: the EndpointPort whose port the
// endpoints are reached on ("https"); a slice with a single port uses it whatever its name.
config::Result<SliceList> parse_slice_list(std::string_view json, std::string_view port_name,
                                           std::string_view source);
// One line of the watch stream (one JSON object; a trailing newline is allowed).
config::Result<WatchEvent> parse_watch_event(std::string_view json, std::string_view port_name,
                                             std::string_view source);
// Applies an added/modified/deleted event to `slices`; returns whether the map changed (a slice
// added, its endpoints replaced by different ones, or removed). Bookmarks and errors change
// nothing. Call it qualified, `discovery::apply(...)`: Slices is a std::map, so argument-dependent
// lookup also finds std::apply, which wins for a non-const event and does not compile.
bool apply(Slices& slices, const WatchEvent& event);

// Every address (host and port) the slices name, once each, in address order: IPv4 before IPv6,
// each by the address's bytes (10.0.0.9 before 10.0.0.10), then by port. One that several slices
// name is ready if any of them says it is ready and not terminating, and terminating if all of
// them say so; so `ready` here already excludes terminating endpoints.
std::vector<Endpoint> merge(const Slices& slices);

}  // namespace apilb::discovery
