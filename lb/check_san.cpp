#include "lb/check_san.hpp"

#include "config/address.hpp"
#include "config/duration.hpp"

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <memory>
#include <utility>
#include <variant>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>

namespace apilb::lb {
namespace {

namespace asio = boost::asio;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;

constexpr std::string_view kUsage =
    "usage: apiserver-lb check-san --server HOST:PORT --address HOST[:PORT] [--ca FILE] [--timeout DURATION]\n"
    "  --server   an apiserver (a master's host:port): whose serving certificate to read\n"
    "  --address  the balancer's address clients will use (load-balancer-address, controlPlaneEndpoint)\n"
    "  --ca       also verify the certificate chain against this CA bundle (PEM)\n"
    "  --timeout  for connect and TLS handshake together (default 10s)\n"
    "exit 0: a SAN covers the address; 1: none does (or the chain does not verify); 2: no TLS connection\n";

std::string lower(std::string_view s) {
  std::string out(s);
  std::ranges::transform(out, out.begin(), [](unsigned char c) {
    return static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  });
  return out;
}

std::string_view without_trailing_dot(std::string_view s) {
  if (s.ends_with('.')) s.remove_suffix(1);
  return s;
}

// An IP literal as the bytes a certificate's iPAddress holds: 4 for IPv4 (also for an
// IPv4-mapped IPv6 address, as Go's net.IP.Equal treats them as equal), 16 for IPv6.
std::optional<std::vector<unsigned char>> ip_bytes(std::string_view text) {
  boost::system::error_code ec;
  auto address = asio::ip::make_address(std::string(text), ec);
  if (ec) return std::nullopt;
  if (address.is_v6() && address.to_v6().is_v4_mapped())
    address = asio::ip::make_address_v4(asio::ip::v4_mapped, address.to_v6());
  if (address.is_v4()) {
    const auto b = address.to_v4().to_bytes();
    return std::vector<unsigned char>(b.begin(), b.end());
  }
  const auto b = address.to_v6().to_bytes();
  return std::vector<unsigned char>(b.begin(), b.end());
}

// --- reading the certificate ----------------------------------------------------------------------

struct X509Free {
  void operator()(X509* x) const noexcept { X509_free(x); }
};
struct BioFree {
  void operator()(BIO* b) const noexcept { BIO_free(b); }
};

std::string print_name(const X509_NAME* name) {
  std::unique_ptr<BIO, BioFree> bio(BIO_new(BIO_s_mem()));
  if (!bio || X509_NAME_print_ex(bio.get(), name, 0, XN_FLAG_RFC2253) < 0) return "?";
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);
  return n > 0 ? std::string(data, static_cast<std::size_t>(n)) : std::string("(empty)");
}

std::string print_time(const ASN1_TIME* time) {
  std::unique_ptr<BIO, BioFree> bio(BIO_new(BIO_s_mem()));
  if (!bio || ASN1_TIME_print(bio.get(), time) != 1) return "?";
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<std::size_t>(std::max(n, 0L)));
}

std::string asn1_text(const ASN1_STRING* s) {
  return std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                     static_cast<std::size_t>(ASN1_STRING_length(s)));
}

std::string ip_san(const ASN1_OCTET_STRING* s) {
  const unsigned char* data = ASN1_STRING_get0_data(s);
  const int length = ASN1_STRING_length(s);
  if (length == 4) {
    asio::ip::address_v4::bytes_type b;
    std::copy_n(data, 4, b.begin());
    return "IP:" + asio::ip::address_v4(b).to_string();
  }
  if (length == 16) {
    asio::ip::address_v6::bytes_type b;
    std::copy_n(data, 16, b.begin());
    return "IP:" + asio::ip::address_v6(b).to_string();
  }
  return "IP:(malformed, " + std::to_string(length) + " bytes)";
}

std::vector<std::string> subject_alt_names(X509* cert) {
  std::vector<std::string> sans;
  auto* names = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  if (names == nullptr) return sans;
  for (int i = 0; i < sk_GENERAL_NAME_num(names); ++i) {
    const GENERAL_NAME* name = sk_GENERAL_NAME_value(names, i);
    switch (name->type) {
      case GEN_DNS: sans.push_back("DNS:" + asn1_text(name->d.dNSName)); break;
      case GEN_IPADD: sans.push_back(ip_san(name->d.iPAddress)); break;
      case GEN_EMAIL: sans.push_back("email:" + asn1_text(name->d.rfc822Name)); break;
      case GEN_URI: sans.push_back("URI:" + asn1_text(name->d.uniformResourceIdentifier)); break;
      default: sans.push_back("othername:(type " + std::to_string(name->type) + ")"); break;
    }
  }
  GENERAL_NAMES_free(names);
  return sans;
}

struct Certificate {
  std::string subject;
  std::string issuer;
  std::string not_after;
  std::vector<std::string> sans;
  long verify_result = X509_V_OK;  // meaningful only when a CA file was given
};

struct Failure {
  std::string message;
};

// Connects, handshakes and reads the peer's certificate, all within `timeout`. `sni` is sent as
// the server name unless empty. The chain is verified against `ca_file` when one is given, but a
// failure is reported in the result rather than by aborting the handshake, so the SANs are still
// shown.
std::variant<Certificate, Failure> fetch_certificate(const config::Address& server, const std::string& sni,
                                                     const std::string& ca_file, std::chrono::milliseconds timeout) {
  ssl::context context(ssl::context::tls_client);
  context.set_verify_mode(ssl::verify_none);  // OpenSSL still verifies and keeps the result
  if (!ca_file.empty()) {
    boost::system::error_code ec;
    context.load_verify_file(ca_file, ec);
    if (ec) return Failure{"cannot load CA file " + ca_file + ": " + ec.message()};
  }

  asio::io_context io;
  tcp::resolver resolver(io);
  ssl::stream<tcp::socket> stream(io, context);
  if (!sni.empty()) SSL_set_tlsext_host_name(stream.native_handle(), sni.c_str());

  std::optional<std::string> error;
  bool done = false;
  resolver.async_resolve(server.host, std::to_string(server.port), [&](auto ec, tcp::resolver::results_type results) {
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
        if (hec) error = "TLS handshake with " + server.to_string() + " failed: " + hec.message();
        done = true;
      });
    });
  });
  io.run_for(timeout);
  if (error) return Failure{*error};
  if (!done)
    return Failure{"no TLS handshake with " + server.to_string() + " within " + config::format_duration(timeout)};

  const std::unique_ptr<X509, X509Free> cert(SSL_get1_peer_certificate(stream.native_handle()));
  if (!cert) return Failure{server.to_string() + " presented no certificate"};
  Certificate out;
  out.subject = print_name(X509_get_subject_name(cert.get()));
  out.issuer = print_name(X509_get_issuer_name(cert.get()));
  out.not_after = print_time(X509_get0_notAfter(cert.get()));
  out.sans = subject_alt_names(cert.get());
  out.verify_result = SSL_get_verify_result(stream.native_handle());
  return out;
}

int usage_error(const std::string& message) {
  std::fprintf(stderr, "apiserver-lb check-san: %s\n%s", message.c_str(), kUsage.data());
  return 2;
}

}  // namespace

bool dns_name_matches(std::string_view pattern_text, std::string_view name_text) {
  const std::string pattern = lower(without_trailing_dot(pattern_text));
  const std::string name = lower(without_trailing_dot(name_text));
  if (pattern.empty() || name.empty()) return false;
  if (!pattern.starts_with("*.")) return pattern.find('*') == std::string::npos && pattern == name;
  // "*.rest": rest must be a plain name, and the name's first label one non-empty label.
  const std::string_view rest = std::string_view(pattern).substr(2);
  if (rest.empty() || rest.find('*') != std::string_view::npos || rest.starts_with('.')) return false;
  const auto dot = name.find('.');
  if (dot == 0 || dot == std::string::npos) return false;
  return std::string_view(name).substr(dot + 1) == rest;
}

std::optional<std::string> covering_san(const std::vector<std::string>& sans, std::string_view host) {
  if (host.starts_with('[') && host.ends_with(']')) host = host.substr(1, host.size() - 2);
  const auto wanted_ip = ip_bytes(host);
  for (const std::string& san : sans) {
    const std::string_view value = std::string_view(san).substr(san.find(':') + 1);
    if (wanted_ip) {
      if (san.starts_with("IP:") && ip_bytes(value) == wanted_ip) return san;
    } else if (san.starts_with("DNS:") && dns_name_matches(value, host)) {
      return san;
    }
  }
  return std::nullopt;
}

int check_san_command(std::span<char*> args) {
  std::optional<std::string> server_text;
  std::optional<std::string> address_text;
  std::string ca_file;
  std::chrono::milliseconds timeout = std::chrono::seconds(10);
  for (std::size_t i = 0; i < args.size(); ++i) {
    std::string_view flag = args[i];
    std::optional<std::string_view> value;  // --flag=value or --flag value
    if (const auto eq = flag.find('='); flag.starts_with("--") && eq != std::string_view::npos) {
      value = flag.substr(eq + 1);
      flag = flag.substr(0, eq);
    }
    if (flag != "--server" && flag != "--address" && flag != "--ca" && flag != "--timeout")
      return usage_error("unknown argument \"" + std::string(flag) + "\"");
    if (!value) {
      if (i + 1 == args.size()) return usage_error(std::string(flag) + " needs a value");
      value = args[++i];
    }
    if (flag == "--server") {
      server_text = std::string(*value);
    } else if (flag == "--address") {
      address_text = std::string(*value);
    } else if (flag == "--ca") {
      ca_file = std::string(*value);
    } else if (const auto d = config::parse_duration(*value); d && d->count() > 0) {
      timeout = *d;
    } else {
      return usage_error("--timeout: \"" + std::string(*value) + "\" is not a duration");
    }
  }
  if (!server_text) return usage_error("--server is required");
  if (!address_text) return usage_error("--address is required");
  std::string why;
  const auto server = config::parse_address(*server_text, &why);
  if (!server) return usage_error("--server: \"" + *server_text + "\": " + why);
  const auto address = config::parse_address(*address_text, &why);
  if (!address) return usage_error("--address: \"" + *address_text + "\": " + why);

  // The server name clients will send through the balancer: an apiserver with --tls-sni-cert-key
  // may serve another certificate for it. Go clients send none for an IP address.
  const std::string sni = config::is_ip_literal(address->host) ? "" : address->host;
  const auto fetched = fetch_certificate(*server, sni, ca_file, timeout);
  if (const auto* failure = std::get_if<Failure>(&fetched)) {
    std::fprintf(stderr, "apiserver-lb check-san: %s\n", failure->message.c_str());
    return 2;
  }
  const auto& cert = std::get<Certificate>(fetched);
  const std::string server_name = server->to_string();
  std::printf("server:  %s\nsubject: %s\nissuer:  %s\nexpires: %s\n", server_name.c_str(), cert.subject.c_str(),
              cert.issuer.c_str(), cert.not_after.c_str());
  std::printf("SANs (%zu):\n", cert.sans.size());
  for (const auto& san : cert.sans) std::printf("  %s\n", san.c_str());

  int status = 0;
  const std::string& host = address->host;
  if (const auto san = covering_san(cert.sans, host)) {
    std::printf("OK: %s is covered by %s\n", host.c_str(), san->c_str());
  } else {
    const std::string add = (config::is_ip_literal(host) ? "IP:" : "DNS:") + host;
    std::printf("MISSING: the certificate of %s has no SAN for %s; add %s to the apiserver certificate's SANs\n",
                server_name.c_str(), host.c_str(), add.c_str());
    if (config::is_ip_literal(host) && std::ranges::find(cert.sans, "DNS:" + host) != cert.sans.end())
      std::printf("  (DNS:%s is there, but clients match an IP address only against IP SANs)\n", host.c_str());
    status = 1;
  }
  if (!ca_file.empty()) {
    if (cert.verify_result == X509_V_OK) {
      std::printf("TRUSTED: the chain of %s verifies against %s\n", server_name.c_str(), ca_file.c_str());
    } else {
      std::printf("UNTRUSTED: the certificate of %s does not verify against %s: %s\n", server_name.c_str(),
                  ca_file.c_str(), X509_verify_cert_error_string(cert.verify_result));
      status = 1;
    }
  }
  std::fflush(stdout);
  return status;
}

}  // namespace apilb::lb
