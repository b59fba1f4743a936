#include "discovery/watcher.hpp"

#include "base/coroutine.hpp"
#include "healthcheck/tls.hpp"

#include <spdlog/spdlog.h>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

#include <algorithm>
#include <array>
#include <fstream>
#include <optional>
#include <random>
#include <sstream>
#include <stdexcept>

namespace apilb::discovery {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using asio::awaitable;
using asio::ip::tcp;
using base::use_nothrow;
using std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace {

constexpr std::string_view kPath = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices";
constexpr std::string_view kSelector = "labelSelector=kubernetes.io%2Fservice-name%3Dkubernetes";
constexpr auto kConnectTimeout = 5s;
constexpr auto kRequestTimeout = 15s;
// A watch ends itself after timeoutSeconds; one silent for this much longer is blackholed.
constexpr auto kWatchSlack = 30s;
constexpr auto kBackoffFirst = 250ms;
constexpr auto kBackoffMax = 30s;
constexpr auto kHealthySession = 10s;  // a session that lasted this long resets the back-off
constexpr std::uint64_t kMaxList = 16 << 20;
constexpr std::size_t kMaxEvent = 4 << 20;

using Stream = beast::ssl_stream<beast::tcp_stream>;

ssl::context make_context(const Credentials& c) {
  ssl::context ctx(ssl::context::tls_client);
  SSL_CTX_set_min_proto_version(ctx.native_handle(), TLS1_2_VERSION);
  const auto load = [&](std::string_view what, auto&& step) {
    boost::system::error_code ec;
    step(ec);
    if (ec)
      throw std::runtime_error(c.source + ": the " + std::string(what) +
                               " does not load: " + ec.message());
  };
  load("CA", [&](auto& ec) { ctx.add_certificate_authority(asio::buffer(c.ca_pem), ec); });
  ctx.set_verify_mode(ssl::verify_peer);
  if (!c.cert_pem.empty()) {
    load("client certificate",
         [&](auto& ec) { ctx.use_certificate_chain(asio::buffer(c.cert_pem), ec); });
    load("client key",
         [&](auto& ec) { ctx.use_private_key(asio::buffer(c.key_pem), ssl::context::pem, ec); });
  }
  return ctx;
}

// An error as a line of the log; for a refused certificate, why it was refused.
std::string describe(const boost::system::error_code& ec, Stream& stream) {
  if (ec == asio::error::eof || ec == ssl::error::stream_truncated)
    return "the connection was closed";
  std::string text = ec.message();
  if (ec.category() == asio::error::get_ssl_category())
    if (const long verify = SSL_get_verify_result(stream.native_handle()); verify != X509_V_OK)
      text.append(" (").append(X509_verify_cert_error_string(verify)).append(")");
  return text;
}

// "HTTP 403 Forbidden: {...}" with the start of the body the apiserver sent (a Status object).
std::string refusal(const http::response<http::string_body>& res) {
  std::string body = res.body().substr(0, 300);
  std::ranges::replace(body, '\n', ' ');
  return fmt::format("HTTP {} {}{}{}", res.result_int(), std::string(res.reason()),
                     body.empty() ? "" : ": ", body);
}

// Full jitter over the upper half: [d/2, d].
steady_clock::duration jittered(steady_clock::duration d, std::mt19937_64& random) {
  std::uniform_int_distribution<steady_clock::rep> half(0, d.count() / 2);
  return d / 2 + steady_clock::duration(half(random));
}

}  // namespace

// What ended a session: logged, then retried after a back-off (`expected`: at once, at info).
struct Failure {
  std::string what;
  bool relist = false;    // the next attempt lists afresh
  bool expected = false;  // a 410 after compaction: part of the protocol, not an error
};

struct Watcher::Impl : std::enable_shared_from_this<Impl> {
  Impl(asio::any_io_executor ex, const config::Kubernetes& s, const Credentials& c, Through t,
       Changed ch)
      : executor(std::move(ex)),
        settings(s),
        credentials(c),
        ctx(make_context(c)),
        through(std::move(t)),
        changed(std::move(ch)),
        timer(executor) {}

  awaitable<void> run();
  awaitable<std::optional<Failure>> session();
  awaitable<std::optional<Failure>> list(Stream& stream, beast::flat_buffer& buffer);
  awaitable<std::optional<Failure>> watch(Stream& stream, beast::flat_buffer& buffer);
  std::optional<Failure> handle(std::string_view line);
  std::optional<http::request<http::empty_body>> request(const std::string& target,
                                                         std::string& why) const;
  void publish() {
    if (!stopped) changed(merge(slices));
  }
  void stop() {
    stopped = true;
    timer.cancel();
    if (open != nullptr) beast::get_lowest_layer(*open).close();
  }

  asio::any_io_executor executor;
  config::Kubernetes settings;
  Credentials credentials;
  ssl::context ctx;
  Through through;
  Changed changed;
  asio::steady_timer timer;
  WatchStatus status;
  Slices slices;
  bool need_list = true;
  bool keep_alive = false;  // the last response left the connection open for the next request
  steady_clock::time_point next_list{};  // resync
  Stream* open = nullptr;                // the connection in use, for stop()
  bool stopped = false;
  std::mt19937_64 random{std::random_device{}()};
};

Watcher::Watcher(asio::any_io_executor executor, const config::Kubernetes& settings,
                 const Credentials& credentials, Through through, Changed changed)
    : impl_(std::make_shared<Impl>(std::move(executor), settings, credentials, std::move(through),
                                   std::move(changed))) {
  base::spawn(impl_->executor, impl_->run(), "the discovery watch");
}

Watcher::~Watcher() { impl_->stop(); }

const WatchStatus& Watcher::status() const { return impl_->status; }

awaitable<void> Watcher::Impl::run() {
  const auto self = shared_from_this();  // the coroutine outlives the Watcher by a turn or two
  auto backoff = steady_clock::duration(kBackoffFirst);
  while (!stopped) {
    status.state = "connecting";
    const auto started = steady_clock::now();
    auto failure = co_await session();
    if (stopped) break;
    if (!failure) continue;  // the watch ended as asked (timeoutSeconds): watch again
    if (failure->relist) need_list = true;
    if (steady_clock::now() - started > kHealthySession) backoff = kBackoffFirst;
    if (failure->expected) {
      spdlog::info("discovery: {}", failure->what);
      continue;
    }
    ++status.errors;
    status.last_error = failure->what;
    const auto wait = jittered(backoff, random);
    spdlog::warn("discovery: {}; trying again in {}ms", failure->what,
                 std::chrono::duration_cast<std::chrono::milliseconds>(wait).count());
    status.state = "backing off";
    timer.expires_after(wait);
    co_await timer.async_wait(use_nothrow);
    backoff = std::min<steady_clock::duration>(backoff * 2, kBackoffMax);
  }
}

// A GET with the credentials' bearer token; nullopt (and `why`) when the token file is unreadable.
std::optional<http::request<http::empty_body>> Watcher::Impl::request(const std::string& target,
                                                                      std::string& why) const {
  http::request<http::empty_body> req{http::verb::get, target, 11};
  const std::string& host = credentials.server_name;
  req.set(http::field::host, host.find(':') != std::string::npos ? '[' + host + ']' : host);
  req.set(http::field::user_agent, "apiserver-lb/" APILB_VERSION);
  req.set(http::field::accept, "application/json");
  std::string token = credentials.token;
  if (!credentials.token_file.empty()) {
    std::ifstream in(credentials.token_file);
    std::ostringstream text;
    text << in.rdbuf();
    token = text.str();
    while (!token.empty() && std::isspace(static_cast<unsigned char>(token.back())))
      token.pop_back();
    if (!in || token.empty()) {
      why = "cannot read the token " + credentials.token_file;
      return std::nullopt;
    }
  }
  if (!token.empty()) req.set(http::field::authorization, "Bearer " + token);
  return req;
}

// One connection through the balancer: a list when one is due, then watches for as long as the
// apiserver keeps the connection open.
awaitable<std::optional<Failure>> Watcher::Impl::session() {
  const tcp::endpoint endpoint = through();
  const std::string where = config::to_string(endpoint);
  Stream stream(executor, ctx);
  open = &stream;
  struct Forget {
    Stream*& open;
    ~Forget() { open = nullptr; }
  } forget{open};
  auto& socket = beast::get_lowest_layer(stream);
  socket.expires_after(kConnectTimeout);
  if (auto [ec] = co_await socket.async_connect(endpoint, use_nothrow); ec)
    co_return Failure{"cannot connect to the balancer's own listener " + where + ": " +
                      ec.message()};
  // SNI and the name the certificate must cover, as the https probe sets them.
  if (auto why =
          healthcheck::expect_peer_name(stream.native_handle(), credentials.server_name, true))
    co_return Failure{*why};
  socket.expires_after(kRequestTimeout);
  if (auto [ec] = co_await stream.async_handshake(ssl::stream_base::client, use_nothrow); ec)
    co_return Failure{"TLS handshake through " + where + ": " + describe(ec, stream)};
  beast::flat_buffer buffer;
  for (;;) {
    if (need_list || steady_clock::now() >= next_list) {
      if (auto failure = co_await list(stream, buffer)) co_return failure;
      if (!keep_alive) co_return std::nullopt;
    }
    if (auto failure = co_await watch(stream, buffer)) co_return failure;
    if (stopped || !keep_alive) co_return std::nullopt;
  }
}

awaitable<std::optional<Failure>> Watcher::Impl::list(Stream& stream, beast::flat_buffer& buffer) {
  status.state = "listing";
  const std::string target = std::string(kPath) + '?' + std::string(kSelector);
  std::string why;
  auto req = request(target, why);
  if (!req) co_return Failure{why};
  beast::get_lowest_layer(stream).expires_after(kRequestTimeout);
  if (auto [ec, n] = co_await http::async_write(stream, *req, use_nothrow); ec)
    co_return Failure{"list: " + describe(ec, stream)};
  http::response_parser<http::string_body> parser;
  parser.body_limit(kMaxList);
  if (auto [ec, n] = co_await http::async_read(stream, buffer, parser, use_nothrow); ec)
    co_return Failure{"list: " + describe(ec, stream)};
  if (stopped) co_return Failure{"stopped"};
  const auto& res = parser.get();
  if (res.result() != http::status::ok) co_return Failure{"list: " + refusal(res)};
  auto parsed = parse_slice_list(res.body(), settings.port_name, "list " + target);
  if (!parsed) co_return Failure{parsed.error().message()};
  slices = std::move(parsed->slices);
  status.resource_version = parsed->resource_version;
  ++status.lists;
  status.last_list = std::chrono::system_clock::now();
  need_list = false;
  next_list = steady_clock::now() + settings.resync;
  keep_alive = res.keep_alive();
  publish();
  co_return std::nullopt;
}

awaitable<std::optional<Failure>> Watcher::Impl::watch(Stream& stream, beast::flat_buffer& buffer) {
  status.state = "watching";
  ++status.watches;
  const auto opened = steady_clock::now();
  const auto until_list =
      std::max<steady_clock::duration>(next_list - opened, std::chrono::seconds(1));
  const auto timeout = std::chrono::duration_cast<std::chrono::seconds>(until_list);
  const std::string target =
      fmt::format("{}?{}&watch=1&allowWatchBookmarks=true&resourceVersion={}&timeoutSeconds={}",
                  kPath, kSelector, status.resource_version, timeout.count());
  std::string why;
  auto req = request(target, why);
  if (!req) co_return Failure{why};
  auto& socket = beast::get_lowest_layer(stream);
  socket.expires_after(kRequestTimeout);
  if (auto [ec, n] = co_await http::async_write(stream, *req, use_nothrow); ec)
    co_return Failure{"watch: " + describe(ec, stream)};
  http::response_parser<http::buffer_body> parser;
  parser.body_limit(boost::none);
  if (auto [ec, n] = co_await http::async_read_header(stream, buffer, parser, use_nothrow); ec)
    co_return Failure{"watch: " + describe(ec, stream)};
  if (const auto code = parser.get().result(); code != http::status::ok) {
    if (code == http::status::gone)
      co_return Failure{.what = "watch: resourceVersion " + status.resource_version +
                                " is gone (HTTP 410): listing again",
                        .relist = true,
                        .expected = true};
    co_return Failure{fmt::format("watch: HTTP {} {}", parser.get().result_int(),
                                  std::string(parser.get().reason()))};
  }
  std::string pending;
  std::array<char, 16384> chunk;
  bool any = false;
  while (!parser.is_done()) {
    parser.get().body().data = chunk.data();
    parser.get().body().size = chunk.size();
    socket.expires_after(timeout + kWatchSlack);
    // read_some: whatever has arrived (a whole read would wait for the buffer to fill).
    auto [ec, n] = co_await http::async_read_some(stream, buffer, parser, use_nothrow);
    if (ec == http::error::need_buffer) ec = {};
    if (stopped) co_return std::nullopt;
    if (ec) co_return Failure{"the watch stream broke: " + describe(ec, stream)};
    pending.append(chunk.data(), chunk.size() - parser.get().body().size);
    for (std::size_t newline; (newline = pending.find('\n')) != std::string::npos;) {
      const std::string line = pending.substr(0, newline);
      pending.erase(0, newline + 1);
      any = true;
      if (auto failure = handle(line)) co_return failure;
    }
    if (pending.size() > kMaxEvent)
      co_return Failure{.what = "watch: an event longer than 4 MiB", .relist = true};
  }
  if (auto failure = handle(pending)) co_return failure;
  keep_alive = parser.get().keep_alive();
  if (!any && steady_clock::now() - opened < std::chrono::seconds(1))
    co_return Failure{"the watch ended at once, with no event"};
  if (steady_clock::now() >= next_list) need_list = true;
  co_return std::nullopt;
}

// One event of the stream.
std::optional<Failure> Watcher::Impl::handle(std::string_view line) {
  if (line.find_first_not_of(" \t\r") == std::string_view::npos) return std::nullopt;
  auto event = parse_watch_event(line, settings.port_name, "watch event");
  if (!event) return Failure{.what = event.error().message(), .relist = true};
  ++status.events;
  using Type = WatchEvent::Type;
  if (event->type == Type::error) {
    if (event->code == 410)
      return Failure{.what = "watch: resourceVersion " + status.resource_version +
                             " is too old (410 Gone): listing again",
                     .relist = true,
                     .expected = true};
    return Failure{.what = fmt::format("watch: error {}: {}", event->code, event->message),
                   .relist = true};
  }
  if (!event->resource_version.empty()) status.resource_version = event->resource_version;
  if (event->type != Type::bookmark && discovery::apply(slices, *event)) publish();
  return std::nullopt;
}

}  // namespace apilb::discovery
