#include "config/address.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <charconv>

namespace apilb::config {
namespace {

constexpr bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }

constexpr bool is_label_char(char c) noexcept {
  return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-';
}

std::string in_quotes(std::string_view text) { return '"' + std::string(text) + '"'; }

// Records the reason and yields the empty optional of whatever the caller returns.
std::nullopt_t fail(std::string* why, std::string reason) {
  if (why != nullptr) *why = std::move(reason);
  return std::nullopt;
}

// RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens, 63 characters
// at most. An all-digit last label is refused (RFC 3696 §2) so that "10.0.1" never reaches
// getaddrinfo, which would read it as the legacy inet_aton form of 10.0.0.1.
bool is_host_name(std::string_view host) noexcept {
  if (host.size() > 253) return false;
  std::string_view label;
  for (std::string_view rest = host; !rest.empty();) {
    const auto dot = rest.find('.');
    label = rest.substr(0, dot);
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-' ||
        !std::ranges::all_of(label, is_label_char))
      return false;
    if (dot == std::string_view::npos) break;
    rest.remove_prefix(dot + 1);
    if (rest.empty()) return false;  // a trailing dot: an empty last label
  }
  return !label.empty() && !std::ranges::all_of(label, is_digit);
}

std::optional<std::uint16_t> parse_port(std::string_view text, std::string* why, bool allow_zero) {
  if (text.empty()) return fail(why, "missing port");
  if (!std::ranges::all_of(text, is_digit))
    return fail(why, "port " + in_quotes(text) + " is not a number");
  unsigned long port = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), port);
  if (ec != std::errc{} || (port == 0 && !allow_zero) || port > 65535)
    return fail(why, "port " + std::string(text) + " is out of range");
  return static_cast<std::uint16_t>(port);
}

}  // namespace

std::string join_host_port(std::string_view host, std::uint16_t port) {
  std::string out;
  const bool v6 = host.find(':') != std::string_view::npos;
  if (v6) out += '[';
  out += host;
  if (v6) out += ']';
  return out + ':' + std::to_string(port);
}

std::string Address::to_string() const { return join_host_port(host, port); }

bool is_ip_literal(std::string_view host) noexcept {
  // inet_pton wants a C string; the longest literal it accepts is INET6_ADDRSTRLEN - 1 characters.
  char text[INET6_ADDRSTRLEN];
  if (host.size() >= sizeof text || host.find('\0') != std::string_view::npos) return false;
  *std::ranges::copy(host, text).out = '\0';
  in6_addr buffer{};
  return ::inet_pton(AF_INET, text, &buffer) == 1 || ::inet_pton(AF_INET6, text, &buffer) == 1;
}

namespace {

std::optional<Address> parse(std::string_view text, std::string* why,
                             std::optional<std::uint16_t> default_port, bool allow_port_zero) {
  if (text.empty()) return fail(why, "empty address");
  std::string_view host;
  std::optional<std::string_view> port_text;  // nullopt: no ':port' written
  if (text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string_view::npos) return fail(why, "missing ']' after the IPv6 address");
    host = text.substr(1, close - 1);
    const auto rest = text.substr(close + 1);
    if (!rest.empty() && rest.front() != ':')
      return fail(why, "unexpected " + in_quotes(rest) + " after ']'");
    if (!rest.empty()) port_text = rest.substr(1);
    if (host.find(':') == std::string_view::npos || !is_ip_literal(host))
      return fail(why, in_quotes(host) + " is not an IPv6 address");
  } else {
    const auto colon = text.find(':');
    if (colon != std::string_view::npos && text.find(':', colon + 1) != std::string_view::npos)
      return fail(why, "an IPv6 address must be in brackets, as in [fd00::1]:6443");
    host = text.substr(0, colon);
    if (colon != std::string_view::npos) port_text = text.substr(colon + 1);
    if (host.empty()) return fail(why, "missing host");
    if (!is_ip_literal(host) && !is_host_name(host)) {
      const bool looks_numeric =
          std::ranges::all_of(host, [](char c) { return is_digit(c) || c == '.'; });
      return fail(why, in_quotes(host) + (looks_numeric ? " is not a valid IPv4 address"
                                                        : " is not a valid host name"));
    }
  }

  Address address{std::string(host), default_port.value_or(kDefaultPort)};
  if (port_text) {
    const auto port = parse_port(*port_text, why, allow_port_zero);
    if (!port) return std::nullopt;
    address.port = *port;
  } else if (!default_port) {
    return fail(why, "missing port");
  }
  return address;
}

}  // namespace

std::optional<Address> parse_address(std::string_view text, std::string* why,
                                     std::optional<std::uint16_t> default_port) {
  return parse(text, why, default_port, false);
}

// Port 0 lets the kernel choose (tests, demos); the startup log names the port it got.
std::optional<Address> parse_listen_address(std::string_view text, std::string* why) {
  auto address = parse(text, why, std::nullopt, true);
  if (address && !is_ip_literal(address->host))
    return fail(why, "needs an IP address to listen on, not a host name");
  return address;
}

}  // namespace apilb::config
