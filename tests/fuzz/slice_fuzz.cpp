// Fuzzes the EndpointSlice parsers, which read what an apiserver (or anything answering on its
// port) sends: any text gives a list or an event, or an Error, and what they yield keeps the
// invariants the gate relies on (every address once, in order, printable and parsable).
#include "config/address.hpp"
#include "discovery/slice.hpp"
#include "tests/fuzz/fuzz_support.hpp"

#include <set>
#include <string>

namespace {

using apilb::fuzz::check;
namespace discovery = apilb::discovery;

void check_merged(const discovery::Slices& slices, std::string_view text) {
  const auto merged = discovery::merge(slices);
  std::set<std::string> seen;
  for (const auto& e : merged) {
    check(seen.insert(e.address.to_string()).second, "merge names every address once", text);
    check(apilb::config::is_ip_literal(e.address.host), "an endpoint is an IP literal", text);
    const auto again = apilb::config::parse_address(e.address.to_string());
    check(again && *again == e.address, "every address prints and parses back", text);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text = apilb::fuzz::as_text(data, size);
  if (const auto list = discovery::parse_slice_list(text, "https", "list"); list) {
    check_merged(list->slices, text);
  } else {
    check(!list.error().message().empty(), "an error says why", text);
  }
  const auto event = discovery::parse_watch_event(text, "https", "watch");
  if (!event) {
    check(!event.error().message().empty(), "an error says why", text);
    return 0;
  }
  discovery::Slices slices;
  const bool changed = discovery::apply(slices, *event);
  using Type = discovery::WatchEvent::Type;
  if (event->type == Type::bookmark || event->type == Type::error)
    check(!changed, "bookmarks and errors change nothing", text);
  check_merged(slices, text);
  return 0;
}
