// `apiserver-lb check-san`: does the apiserver's serving certificate name the balancer's address?
// Moving an installer's `load-balancer-address` (or kubeadm's `controlPlaneEndpoint`) to a new
// balancer whose address the certificate does not list breaks every client at once with
// "x509: certificate is valid for ..., not ...": this check runs before the switch. Connects with
// TLS, sending the address as SNI when it is a name (as clients of the balancer will), prints the
// certificate's SANs and whether one covers the address. Exit code: 0 covered (and, with --ca, the
// chain verifies); 1 not covered or not verified, saying which SAN to add or why verification
// failed; 2 no TLS connection within the timeout (default 10s) or a usage error.
#include "cli/flags.hpp"
#include "config/address.hpp"
#include "config/duration.hpp"
#include "healthcheck/tls.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <optional>
#include <stdexcept>
#include <variant>

namespace apilb::cli {
namespace {

namespace asio = boost::asio;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;

constexpr std::string_view kUsage =
    "usage: apiserver-lb check-san --server HOST:PORT --address HOST[:PORT] [--ca FILE] [--timeout "
    "DURATION]\n"
    "  --server   an apiserver (a master's host:port): whose serving certificate to read\n"
    "  --address  the balancer's address clients will use (load-balancer-address, "
    "controlPlaneEndpoint)\n"
    "  --ca       also verify the certificate chain against this CA bundle (PEM)\n"
    "  --timeout  for connect and TLS handshake together (default 10s)\n"
    "exit 0: a SAN covers the address; 1: none does (or the chain does not verify); 2: no TLS "
    "connection\n";

struct Certificate {
  healthcheck::CertificateSummary summary;
  long verify_result = X509_V_OK;  // meaningful only when a CA file was given
};

struct NoConnection {
  std::string message;
};

// Connects, handshakes and reads the peer's certificate, all within `timeout`. `sni` is sent as
// the server name unless empty. The chain is verified against `ca_file` when one is given, but a
// failure is reported in the result rather than by aborting the handshake, so the SANs are still
// shown.
std::variant<Certificate, NoConnection> fetch_certificate(const config::Address& server,
                                                          const std::string& sni,
                                                          const std::string& ca_file,
                                                          std::chrono::milliseconds timeout) {
  std::optional<ssl::context> made;
  try {
    made.emplace(healthcheck::make_client_context({ca_file, {}, {}}, healthcheck::PeerCheck::record,
                                                  {"--ca", "", ""}));
  } catch (const std::runtime_error& e) {
    return NoConnection{e.what()};
  }
  ssl::context& context = *made;

  asio::io_context io;
  tcp::resolver resolver(io);
  ssl::stream<tcp::socket> stream(io, context);
  if (!sni.empty()) SSL_set_tlsext_host_name(stream.native_handle(), sni.c_str());

  std::optional<std::string> error;
  bool done = false;
  resolver.async_resolve(
      server.host, std::to_string(server.port), [&](auto ec, tcp::resolver::results_type results) {
        if (ec) {
          error = "cannot resolve " + server.host + ": " + ec.message();
          return;
        }
        asio::async_connect(stream.next_layer(), results, [&](auto cec, const tcp::endpoint&) {
          if (cec) {
            error = "cannot connect to " + server.to_string() + ": " + cec.message();
            return;
          }
          stream.async_handshake(ssl::stream_base::client, [&](auto hec) {
            if (hec)
              error = "TLS handshake with " + server.to_string() + " failed: " + hec.message();
            done = true;
          });
        });
      });
  io.run_for(timeout);
  if (error) return NoConnection{*error};
  if (!done)
    return NoConnection{"no TLS handshake with " + server.to_string() + " within " +
                        config::format_duration(timeout)};

  auto summary = healthcheck::peer_certificate(stream.native_handle());
  if (!summary) return NoConnection{server.to_string() + " presented no certificate"};
  return Certificate{std::move(*summary), SSL_get_verify_result(stream.native_handle())};
}

}  // namespace

int check_san(std::span<char*> args) {
  Flags flags(args, kUsage);
  std::optional<config::Address> server;
  std::optional<config::Address> address;
  std::string ca_file;
  std::chrono::milliseconds timeout = std::chrono::seconds(10);
  while (auto f = flags.next()) {
    if (*f == "--server") {
      server = flags.target();
    } else if (*f == "--address") {
      address = flags.target();
    } else if (*f == "--ca") {
      ca_file = std::string(flags.value());
    } else if (*f == "--timeout") {
      const std::string_view text = flags.value();
      const auto d = config::parse_duration(text);
      if (!d || d->count() <= 0)
        flags.fail("check-san: --timeout: \"" + std::string(text) + "\" is not a duration");
      timeout = *d;
    } else {
      flags.fail("check-san: unknown flag " + std::string(*f));
    }
  }
  if (!server) flags.fail("check-san: --server is required");
  if (!address) flags.fail("check-san: --address is required");

  // The server name clients will send through the balancer: an apiserver with --tls-sni-cert-key
  // may serve another certificate for it. Go clients send none for an IP address.
  const std::string sni = config::is_ip_literal(address->host) ? "" : address->host;
  const auto fetched = fetch_certificate(*server, sni, ca_file, timeout);
  if (const auto* failure = std::get_if<NoConnection>(&fetched)) {
    std::fprintf(stderr, "apiserver-lb check-san: %s\n", failure->message.c_str());
    return 2;
  }
  const auto& cert = std::get<Certificate>(fetched);
  const std::string server_name = server->to_string();
  std::printf("server:  %s\nsubject: %s\nissuer:  %s\nexpires: %s\n", server_name.c_str(),
              cert.summary.subject.c_str(), cert.summary.issuer.c_str(),
              cert.summary.not_after.c_str());
  std::printf("SANs (%zu):\n", cert.summary.sans.size());
  for (const auto& san : cert.summary.sans) std::printf("  %s\n", san.c_str());

  int status = 0;
  const std::string& host = address->host;
  if (const auto san = healthcheck::covering_san(cert.summary.sans, host)) {
    std::printf("OK: %s is covered by %s\n", host.c_str(), san->c_str());
  } else {
    const std::string add = (config::is_ip_literal(host) ? "IP:" : "DNS:") + host;
    std::printf(
        "MISSING: the certificate of %s has no SAN for %s; add %s to the apiserver certificate's "
        "SANs\n",
        server_name.c_str(), host.c_str(), add.c_str());
    if (config::is_ip_literal(host) &&
        std::ranges::find(cert.summary.sans, "DNS:" + host) != cert.summary.sans.end())
      std::printf("  (DNS:%s is there, but clients match an IP address only against IP SANs)\n",
                  host.c_str());
    status = 1;
  }
  if (!ca_file.empty()) {
    if (cert.verify_result == X509_V_OK) {
      std::printf("TRUSTED: the chain of %s verifies against %s\n", server_name.c_str(),
                  ca_file.c_str());
    } else {
      std::printf("UNTRUSTED: the certificate of %s does not verify against %s: %s\n",
                  server_name.c_str(), ca_file.c_str(),
                  X509_verify_cert_error_string(cert.verify_result));
      status = 1;
    }
  }
  std::fflush(stdout);
  return status;
}

}  // namespace apilb::cli
