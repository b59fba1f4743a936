#include "healthcheck/probe.hpp"

#include "base/coroutine.hpp"
#include "config/address.hpp"
#include "config/duration.hpp"
#include "healthcheck/tls.hpp"

#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

#include <optional>
#include <utility>

namespace apilb::healthcheck {

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using asio::awaitable;
using asio::ip::tcp;
using base::use_nothrow;
using boost::system::error_code;
using config::HealthMode;

namespace {

// A verbose /readyz is about 1 KiB; anything much larger is not an apiserver's answer.
constexpr std::uint64_t kBodyLimit = 64 * 1024;

ProbeResult passed() { return {Outcome::passed, {}, {}, false}; }
ProbeResult not_ready(std::string reason) {
  return {Outcome::not_ready, std::move(reason), {}, false};
}
ProbeResult failed(std::string reason, bool refused = false) {
  return {Outcome::failed, std::move(reason), {}, refused};
}

// Short and stable words for the network outcomes an operator will read in /status and logs.
// `ssl` (optional) adds why a certificate was refused.
std::string describe(const error_code& ec, SSL* ssl = nullptr) {
  if (ec == asio::error::connection_refused) return "connection refused";
  if (ec == asio::error::connection_reset) return "connection reset";
  if (ec == asio::error::eof || ec == ssl::error::stream_truncated ||
      ec == http::error::end_of_stream || ec == http::error::partial_message) {
    return "connection closed";
  }
  if (ec == asio::error::timed_out) return "timed out";
  if (ec == asio::error::host_unreachable) return "host unreachable";
  if (ec == asio::error::network_unreachable) return "network unreachable";
  if (ec == asio::error::operation_aborted) return "cancelled";
  if (ec.category() == asio::error::get_ssl_category()) {
    const auto code = static_cast<unsigned long>(static_cast<unsigned int>(ec.value()));
    const char* reason = ERR_reason_error_string(code);
    std::string text = reason != nullptr ? reason : "OpenSSL error " + std::to_string(code);
    if (ssl != nullptr && ERR_GET_REASON(code) == SSL_R_CERTIFICATE_VERIFY_FAILED) {
      if (const long verify = SSL_get_verify_result(ssl); verify != X509_V_OK) {
        text.append(" (").append(X509_verify_cert_error_string(verify)).append(")");
      }
    }
    return text;
  }
  return ec.message();
}

// "/readyz" -> "/readyz?verbose"; "/readyz?exclude=etcd" -> "/readyz?exclude=etcd&verbose".
std::string verbose_target(const std::string& path) {
  return path + (path.find('?') == std::string::npos ? "?verbose" : "&verbose");
}

}  // namespace

struct Prober::Impl {
  explicit Impl(const config::Health& h) : health(h) {
    if (health.mode != HealthMode::tcp)
      tls.emplace(make_client_context({health.ca_file, health.cert_file, health.key_file},
                                      PeerCheck::enforce,
                                      {"health.ca_file", "health.cert_file", "health.key_file"}));
    timeout_reason = "timeout after " + config::format_duration(health.timeout);
  }

  // One check without a deadline: probe() races it against one.
  awaitable<ProbeResult> check(asio::any_io_executor executor, tcp::endpoint endpoint,
                               std::string host);
  // SNI and the name or address the certificate must carry; a reason when OpenSSL refuses them.
  std::optional<std::string> prepare(SSL* ssl, const std::string& host) const;
  awaitable<ProbeResult> ask_readyz(ssl::stream<tcp::socket>& stream, std::string host_header);

  config::Health health;
  std::optional<ssl::context> tls;  // tls and https modes only
  std::string timeout_reason;
};

// Without a CA nothing is verified, so there is no name to check.
std::optional<std::string> Prober::Impl::prepare(SSL* ssl, const std::string& host) const {
  return expect_peer_name(ssl, host, !health.ca_file.empty());
}

awaitable<ProbeResult> Prober::Impl::check(asio::any_io_executor executor, tcp::endpoint endpoint,
                                           std::string host) {
  // Cancellation (the deadline, or the caller) comes back as operation_aborted values, never
  // throws.
  co_await asio::this_coro::throw_if_cancelled(false);

  tcp::socket socket(executor);
  boost::system::error_code open_ec;
  socket.open(endpoint.protocol(), open_ec);
  if (open_ec)
    co_return ProbeResult{
        Outcome::inconclusive, "cannot open a socket: " + open_ec.message(), {}, false};
  auto [connect_ec] = co_await socket.async_connect(endpoint, use_nothrow);
  if (connect_ec)
    co_return failed(describe(connect_ec), connect_ec == asio::error::connection_refused);
  if (health.mode == HealthMode::tcp) co_return passed();

  ssl::stream<tcp::socket> stream(std::move(socket), *tls);
  if (auto why = prepare(stream.native_handle(), host)) co_return failed(std::move(*why));
  auto [handshake_ec] = co_await stream.async_handshake(ssl::stream_base::client, use_nothrow);
  if (handshake_ec)
    co_return failed("TLS handshake: " + describe(handshake_ec, stream.native_handle()));
  // No close_notify: the apiserver does not need one, and waiting for its reply would cost time.
  if (health.mode == HealthMode::tls) co_return passed();

  std::string host_header = config::Address{host, endpoint.port()}.to_string();
  co_return co_await ask_readyz(stream, std::move(host_header));
}

awaitable<ProbeResult> Prober::Impl::ask_readyz(ssl::stream<tcp::socket>& stream,
                                                std::string host_header) {
  http::request<http::empty_body> request(http::verb::get, verbose_target(health.path), 11);
  request.set(http::field::host, host_header);
  request.set(http::field::user_agent, "apiserver-lb/" APILB_VERSION);
  request.set(http::field::accept, "text/plain");
  request.set(http::field::connection, "close");
  auto [write_ec, written] = co_await http::async_write(stream, request, use_nothrow);
  if (write_ec) co_return failed("HTTP request: " + describe(write_ec));

  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(kBodyLimit);
  auto [read_ec, read] = co_await http::async_read(stream, buffer, parser, use_nothrow);
  // Once the status line is in, it decides: a body cut short or too long does not change the
  // answer.
  if (read_ec && !parser.is_header_done()) co_return failed("HTTP response: " + describe(read_ec));

  const auto& response = parser.get();
  const unsigned status = response.result_int();
  if (status == 200) co_return passed();
  std::string reason = "HTTP " + std::to_string(status);
  // A cluster without anonymous access answers every target alike: say what to change.
  if ((status == 401 || status == 403) && health.cert_file.empty())
    reason += " (anonymous " + health.path +
              " refused: set health.cert_file and key_file, or use mode tls)";
  if (const std::string checks = failing_checks(response.body()); !checks.empty())
    reason += ": " + checks;
  co_return not_ready(std::move(reason));
}

Prober::Prober(const config::Health& health) : impl_(std::make_unique<Impl>(health)) {}

Prober::~Prober() = default;

awaitable<ProbeResult> Prober::probe(asio::any_io_executor executor, tcp::endpoint endpoint,
                                     std::string host) {
  using namespace asio::experimental::awaitable_operators;
  co_await asio::this_coro::throw_if_cancelled(false);

  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  if (host.empty()) host = endpoint.address().to_string();

  const auto start = std::chrono::steady_clock::now();
  asio::steady_timer deadline(executor, impl_->health.timeout);
  auto winner = co_await (impl_->check(executor, endpoint, std::move(host)) ||
                          deadline.async_wait(use_nothrow));

  ProbeResult result;
  if ((co_await asio::this_coro::cancellation_state).cancelled() != asio::cancellation_type::none) {
    result =
        failed("cancelled");  // by the caller (shutdown, reload): whatever the race saw is moot
  } else if (winner.index() == 0) {
    result = std::move(std::get<0>(winner));
  } else {
    const auto [timer_ec] = std::get<1>(winner);
    result = failed(timer_ec ? describe(timer_ec) : impl_->timeout_reason);
  }
  result.latency = std::chrono::steady_clock::now() - start;
  co_return result;
}

}  // namespace apilb::healthcheck
