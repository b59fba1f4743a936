// Fuzzes `host:port` parsing (targets, first_master, --target) and local listen addresses: any
// text is an Address that prints and parses back to itself, or a refusal that says why.
#include "config/address.hpp"
#include "tests/fuzz/fuzz_support.hpp"

namespace {

using apilb::fuzz::check;
namespace config = apilb::config;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text = apilb::fuzz::as_text(data, size);
  std::string why;
  const auto target = config::parse_address(text, &why);
  if (target) {
    check(!target->host.empty(), "a target has a host", text);
    check(target->port != 0, "a target's port is not 0", text);
    check(target->is_ipv6() == (target->host.find(':') != std::string::npos),
          "is_ipv6 is about the host", text);
    const auto again = config::parse_address(target->to_string());
    check(again && *again == *target, "a target prints and parses back", text);
  } else {
    check(!why.empty(), "a refused target says why", text);
  }

  why.clear();
  const auto strict = config::parse_address(text, &why, std::nullopt);
  if (strict)
    check(target && *strict == *target, "a port made mandatory changes nothing when one is given",
          text);
  else check(!why.empty(), "a refused address says why", text);

  why.clear();
  const auto listen = config::parse_listen_address(text, &why);
  if (listen) {
    check(config::is_ip_literal(listen->host), "a listen address is an IP literal", text);
    const auto again = config::parse_listen_address(listen->to_string());
    check(again && *again == *listen, "a listen address prints and parses back", text);
    if (listen->port != 0)
      check(target && *target == *listen, "a listen address is a valid target too", text);
  } else {
    check(!why.empty(), "a refused listen address says why", text);
  }
  return 0;
}
