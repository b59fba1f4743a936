#pragma once

// `apiserver-lb check-san`: does the apiserver's serving certificate name the balancer's address?
// Moving an installer's `load-balancer-address` (or kubeadm's `controlPlaneEndpoint`) to a new
// balancer whose address the certificate does not list breaks every client at once with
// "x509: certificate is valid for ..., not ...": this check runs before the switch.

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace apilb::lb {

// Subject alternative names are written as OpenSSL's config syntax writes them: "DNS:*.example.com",
// "IP:10.0.0.1", "IP:fd00::1". Other kinds ("email:...", "URI:...") are listed, never matched.

// Which SAN covers `host` (an IP literal without brackets, or a DNS name), decided as the Go
// clients that talk to an apiserver (kubectl, kubelet, client-go) decide it: an IP only by an equal
// IP SAN (compared as bytes; an IPv4 address equals its IPv4-mapped IPv6 form), a name only by a
// DNS SAN (see dns_name_matches). The common name is never used (Go ignores it since 1.15).
// The first covering SAN, or nullopt. Pure: no I/O.
std::optional<std::string> covering_san(const std::vector<std::string>& sans, std::string_view host);
inline bool san_covers(const std::vector<std::string>& sans, std::string_view host) {
  return covering_san(sans, host).has_value();
}

// A DNS-ID against a name, RFC 6125 6.4: ASCII case-insensitive, one trailing dot ignored on
// either; "*" matches exactly one non-empty label and only as the whole left-most label of a
// pattern with at least one more label ("*.example.com" matches "a.example.com", not
// "example.com", "a.b.example.com" or anything for "f*.example.com" or "*").
bool dns_name_matches(std::string_view pattern, std::string_view name);

// `apiserver-lb check-san --server HOST:PORT --address HOST[:PORT] [--ca FILE] [--timeout DURATION]`
// with `args` the arguments after "check-san". Connects to the server with TLS, sending the
// address as SNI when it is a name (as clients of the balancer will), prints the certificate's
// SANs and whether one covers the address. Exit code: 0 covered (and, with --ca, the chain verifies);
// 1 not covered or not verified, saying which SAN to add or why verification failed; 2 no TLS
// connection within the timeout (default 10s) or a usage error.
int check_san_command(std::span<char*> args);

}  // namespace apilb::lb
