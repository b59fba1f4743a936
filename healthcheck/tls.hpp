#pragma once

// TLS for the client side of apiserver-lb, shared by the tls/https probes and `check-san`: one
// context maker, one OpenSSL reason, one reading of a certificate and one answer to "does this
// certificate cover this host".

#include <boost/asio/ssl/context.hpp>

#include <array>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace apilb::healthcheck {

// The files a TLS client trusts (ca_file) and presents (cert_file, key_file); empty: none.
struct TlsFiles {
  std::string ca_file;
  std::string cert_file;
  std::string key_file;
};

// What the handshake does with the server's chain when a CA is given: `enforce` fails the
// handshake on a chain that does not verify, `record` completes it and leaves the result to
// SSL_get_verify_result (check-san shows the SANs either way). Without a CA nothing is verified.
enum class PeerCheck { enforce, record };

// How errors name the three files (the config field or the flag): {"health.ca_file", ...}.
using TlsFileNames = std::array<std::string_view, 3>;

// A TLS 1.2+ client context. Loads every file now, so a missing or malformed one is an error at
// start-up (or reload), not a failing check: throws std::runtime_error
// "health.ca_file: cannot load /path: No such file or directory"; an encrypted key is refused
// rather than prompted for.
boost::asio::ssl::context make_client_context(const TlsFiles& files, PeerCheck check,
                                              const TlsFileNames& names);

// Before a handshake: SNI for a DNS name (RFC 6066 permits no IP literal there) and, when `verify`,
// the name the server's certificate must cover (an IP SAN for an IP literal, a DNS SAN without
// partial wildcards for a name), checked by OpenSSL inside the handshake. The probes and
// discovery's watch set it up the same way. nullopt, or why it could not be set up
// ("TLS setup: bad host name ...").
std::optional<std::string> expect_peer_name(SSL* ssl, const std::string& host, bool verify);

// The reason of the first error OpenSSL queued (the one closest to the cause); clears the queue.
std::string openssl_reason();

// A certificate as check-san prints it. Subject alternative names are written as OpenSSL's config
// syntax writes them: "DNS:*.example.com", "IP:10.0.0.1", "IP:fd00::1"; other kinds
// ("email:...", "URI:...") are listed, never matched.
struct CertificateSummary {
  std::string subject;  // RFC 2253
  std::string issuer;
  std::string not_after;
  std::vector<std::string> sans;
};
// The peer certificate of a completed handshake; nullopt when the server sent none.
std::optional<CertificateSummary> peer_certificate(SSL* ssl);

// Which SAN covers `host` (an IP literal, bracketed or not, or a DNS name), decided as the Go
// clients that talk to an apiserver (kubectl, kubelet, client-go) decide it: an IP only by an equal
// IP SAN (compared as bytes; an IPv4 address equals its IPv4-mapped IPv6 form), a name only by a
// DNS SAN (see dns_name_matches). The common name is never used (Go ignores it since 1.15).
// The first covering SAN, or nullopt. Pure: no I/O.
//
// Why not X509_check_host / X509_check_ip_asc, which the probes use inside the handshake
// (SSL_set1_host): check-san predicts what Go clients will accept, and OpenSSL differs from Go at
// the edges (an IPv4-mapped IPv6 address, "*.com"). The probes verify as OpenSSL does because
// OpenSSL is what they run.
std::optional<std::string> covering_san(const std::vector<std::string>& sans,
                                        std::string_view host);

// A DNS-ID against a name, RFC 6125 6.4: ASCII case-insensitive, one trailing dot ignored on
// either; "*" matches exactly one non-empty label and only as the whole left-most label of a
// pattern with at least one more label ("*.example.com" matches "a.example.com", not
// "example.com", "a.b.example.com" or anything for "f*.example.com" or "*").
bool dns_name_matches(std::string_view pattern, std::string_view name);

}  // namespace apilb::healthcheck
