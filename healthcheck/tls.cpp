#include "healthcheck/tls.hpp"

#include "config/address.hpp"

#include <boost/asio/ip/address.hpp>

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <stdexcept>

namespace apilb::healthcheck {
namespace {

namespace asio = boost::asio;
namespace ssl = asio::ssl;

[[noreturn]] void cannot_load(std::string_view name, const std::string& path,
                              const std::string& why) {
  throw std::runtime_error(std::string(name) + ": cannot load " + path + ": " + why);
}

// OpenSSL says "system lib" for a missing file; open it first so that the error says why.
void check_readable(std::string_view name, const std::string& path) {
  std::FILE* file = std::fopen(path.c_str(), "r");
  if (file == nullptr) cannot_load(name, path, std::strerror(errno));
  std::fclose(file);
}

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
  auto* names =
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  if (names == nullptr) return sans;
  for (int i = 0; i < sk_GENERAL_NAME_num(names); ++i) {
    const GENERAL_NAME* name = sk_GENERAL_NAME_value(names, i);
    switch (name->type) {
      case GEN_DNS:
        sans.push_back("DNS:" + asn1_text(name->d.dNSName));
        break;
      case GEN_IPADD:
        sans.push_back(ip_san(name->d.iPAddress));
        break;
      case GEN_EMAIL:
        sans.push_back("email:" + asn1_text(name->d.rfc822Name));
        break;
      case GEN_URI:
        sans.push_back("URI:" + asn1_text(name->d.uniformResourceIdentifier));
        break;
      default:
        sans.push_back("othername:(type " + std::to_string(name->type) + ")");
        break;
    }
  }
  GENERAL_NAMES_free(names);
  return sans;
}

}  // namespace

std::string openssl_reason() {
  const unsigned long code = ERR_peek_error();
  const char* reason = code != 0 ? ERR_reason_error_string(code) : nullptr;
  ERR_clear_error();
  if (reason != nullptr) return reason;
  return code != 0 ? "OpenSSL error " + std::to_string(code) : "unknown OpenSSL error";
}

ssl::context make_client_context(const TlsFiles& files, PeerCheck check,
                                 const TlsFileNames& names) {
  ssl::context context(ssl::context::tls_client);
  SSL_CTX* ctx = context.native_handle();
  ERR_clear_error();
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  // An encrypted key would make OpenSSL prompt on the terminal: refuse it instead.
  SSL_CTX_set_default_passwd_cb(ctx, [](char*, int, int, void*) { return 0; });
  // Without a CA (or with `record`) the handshake does not fail on the chain; OpenSSL still
  // verifies it when it has a CA and keeps the result for SSL_get_verify_result.
  const bool enforce = !files.ca_file.empty() && check == PeerCheck::enforce;
  SSL_CTX_set_verify(ctx, enforce ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, nullptr);
  auto load = [&](std::string_view name, const std::string& path, auto loader) {
    if (path.empty()) return;
    check_readable(name, path);
    if (loader(ctx, path.c_str()) != 1) cannot_load(name, path, openssl_reason());
  };
  load(names[0], files.ca_file,
       [](SSL_CTX* c, const char* p) { return SSL_CTX_load_verify_locations(c, p, nullptr); });
  load(names[1], files.cert_file, SSL_CTX_use_certificate_chain_file);
  // Also checks the key against the certificate loaded above ("key values mismatch").
  load(names[2], files.key_file, [](SSL_CTX* c, const char* p) {
    return SSL_CTX_use_PrivateKey_file(c, p, SSL_FILETYPE_PEM);
  });
  if (!files.cert_file.empty() && !files.key_file.empty() && SSL_CTX_check_private_key(ctx) != 1)
    cannot_load(names[2], files.key_file,
                "does not match " + std::string(names[1]) + ": " + openssl_reason());
  return context;
}

std::optional<std::string> expect_peer_name(SSL* ssl, const std::string& host, bool verify) {
  const bool ip = config::is_ip_literal(host);
  if (!ip && SSL_set_tlsext_host_name(ssl, host.c_str()) != 1)
    return "TLS setup: " + openssl_reason();
  if (!verify) return std::nullopt;
  if (ip) {
    if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host.c_str()) != 1)
      return "TLS setup: bad IP address " + host;
  } else {
    SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    if (SSL_set1_host(ssl, host.c_str()) != 1) return "TLS setup: bad host name " + host;
  }
  return std::nullopt;
}

std::optional<CertificateSummary> peer_certificate(SSL* ssl) {
  const std::unique_ptr<X509, X509Free> cert(SSL_get1_peer_certificate(ssl));
  if (!cert) return std::nullopt;
  CertificateSummary out;
  out.subject = print_name(X509_get_subject_name(cert.get()));
  out.issuer = print_name(X509_get_issuer_name(cert.get()));
  out.not_after = print_time(X509_get0_notAfter(cert.get()));
  out.sans = subject_alt_names(cert.get());
  return out;
}

bool dns_name_matches(std::string_view pattern_text, std::string_view name_text) {
  const std::string pattern = lower(without_trailing_dot(pattern_text));
  const std::string name = lower(without_trailing_dot(name_text));
  if (pattern.empty() || name.empty()) return false;
  if (!pattern.starts_with("*.")) return pattern.find('*') == std::string::npos && pattern == name;
  // "*.rest": rest must be a plain name, and the name's first label one non-empty label.
  const std::string_view rest = std::string_view(pattern).substr(2);
  if (rest.empty() || rest.find('*') != std::string_view::npos || rest.starts_with('.'))
    return false;
  const auto dot = name.find('.');
  if (dot == 0 || dot == std::string::npos) return false;
  return std::string_view(name).substr(dot + 1) == rest;
}

std::optional<std::string> covering_san(const std::vector<std::string>& sans,
                                        std::string_view host) {
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

}  // namespace apilb::healthcheck
