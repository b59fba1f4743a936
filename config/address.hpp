#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace apilb::config {

inline constexpr std::uint16_t kDefaultPort = 6443;

// A `host:port` as written by the user: an IPv4 literal, a bracketed IPv6 literal or a DNS name.
// A plain value type; resolution to endpoints happens where the I/O is (lb/, healthcheck/).
struct Address {
  std::string host;  // without brackets: "10.0.0.11", "::1", "master-1.example"
  std::uint16_t port = kDefaultPort;

  bool is_ipv6() const noexcept { return host.find(':') != std::string::npos; }
  // "10.0.0.11:6443", "[::1]:6443", "master-1.example:6443".
  std::string to_string() const;
  friend bool operator==(const Address&, const Address&) = default;
};

// Parses "host:port", "[v6]:port", "host", "[v6]" (port 6443 unless `default_port` says otherwise;
// nullopt makes the port mandatory). An IPv6 literal must be bracketed even without a port:
// "fd00::1:6443" is itself a valid IPv6 address, so no unbracketed form can be read safely.
// Returns nullopt and a reason ("missing port", "port 70000 is out of range", ...) on failure.
std::optional<Address> parse_address(std::string_view text, std::string* why = nullptr,
                                     std::optional<std::uint16_t> default_port = kDefaultPort);

// A local address to bind (`listen`, `admin.listen`, `--listen`, `--admin`): an IP literal and an
// explicit port, "0.0.0.0:6443" or "[::]:6443"; port 0 lets the kernel choose. Names are refused:
// what they resolve to can change.
std::optional<Address> parse_listen_address(std::string_view text, std::string* why = nullptr);

// The one way an endpoint is written, in logs, errors and /status: "10.0.0.11:6443",
// "[::1]:6443" (IPv6 always bracketed), "master-1.example:6443".
std::string join_host_port(std::string_view host, std::uint16_t port);
// The same for an Asio endpoint (anything with address().to_string() and port()), without making
// config/ depend on Asio.
template <typename Endpoint>
std::string to_string(const Endpoint& endpoint) {
  return join_host_port(endpoint.address().to_string(), endpoint.port());
}

// True when `host` is an IPv4 or IPv6 literal (no brackets).
bool is_ip_literal(std::string_view host) noexcept;

}  // namespace apilb::config
