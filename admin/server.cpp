// The admin HTTP server. One of the two translation units with Beast's HTTP (with cli/status.cpp).
#include "admin/server.hpp"

#include "admin/render.hpp"
#include "admin/status_page.hpp"
#include "base/coroutine.hpp"
#include "config/address.hpp"

#include <spdlog/spdlog.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <sys/socket.h>

#include <thread>

namespace apilb::admin {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::awaitable;
using asio::ip::tcp;
using base::use_nothrow;

namespace {

constexpr std::size_t kHeaderLimit = 8 * 1024;  // nothing we serve needs more
constexpr std::size_t kMaxConnections = 256;    // beyond this, new admin connections are closed
constexpr auto kIdleTimeout = std::chrono::seconds(10);
constexpr std::string_view kPageCsp =
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src "
    "'self'; "
    "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

struct Reply {
  http::status status;
  std::string content_type;
  std::string body;
};

Reply text(http::status s, std::string body) {
  return {s, "text/plain; charset=utf-8", std::move(body)};
}

// Sends `reply`; a HEAD request gets the same headers (Content-Length included) and no body.
template <typename Stream>
awaitable<bool> send(Stream& stream, const http::request<http::empty_body>& request,
                     Reply&& reply) {
  http::response<http::string_body> response{reply.status, request.version()};
  response.set(http::field::server, "apiserver-lb");
  response.set(http::field::content_type, reply.content_type);
  response.set(http::field::cache_control, "no-store");
  // The status page runs its own inline script and talks to this server only.
  if (reply.content_type.starts_with("text/html"))
    response.set("Content-Security-Policy", kPageCsp);
  response.keep_alive(request.keep_alive());
  if (request.method() == http::verb::head) {
    http::response<http::empty_body> head{response.base()};
    head.content_length(reply.body.size());
    auto [ec, n] = co_await http::async_write(stream, head, use_nothrow);
    co_return !ec;
  }
  response.body() = std::move(reply.body);
  response.prepare_payload();
  auto [ec, n] = co_await http::async_write(stream, response, use_nothrow);
  co_return !ec;
}

}  // namespace

struct AdminServer::Impl : std::enable_shared_from_this<AdminServer::Impl> {
  Impl(const tcp::endpoint& ep, asio::any_io_executor c, Gather g)
      : control(std::move(c)), gather(std::move(g)), acceptor(io) {
    acceptor.open(ep.protocol());
    acceptor.set_option(tcp::acceptor::reuse_address(true));
    boost::system::error_code ec;
    acceptor.bind(ep, ec);
    if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) throw std::system_error(ec, "admin: cannot listen on " + config::to_string(ep));
    fd = acceptor.native_handle();
  }
  Impl(int listening, asio::any_io_executor c, Gather g)
      : control(std::move(c)), gather(std::move(g)), acceptor(io), fd(listening) {
    sockaddr_storage address{};
    socklen_t length = sizeof address;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
    boost::system::error_code ec;
    acceptor.assign(address.ss_family == AF_INET6 ? tcp::v6() : tcp::v4(), fd, ec);
    if (ec) throw std::system_error(ec, "admin: cannot take over the inherited listener");
  }

  awaitable<void> accept_loop();
  awaitable<void> serve(tcp::socket socket);
  awaitable<Reply> handle(const http::request<http::empty_body>& request);
  awaitable<AdminView> view();

  asio::io_context io{1};
  asio::any_io_executor control;
  Gather gather;
  tcp::acceptor acceptor;
  int fd;  // the acceptor's, for an upgrade to hand over
  std::size_t connections = 0;
  bool alive = true;  // false once the AdminServer is gone; read and written on `control` only
  std::jthread thread;
};

awaitable<void> AdminServer::Impl::accept_loop() {
  for (;;) {
    auto [ec, socket] = co_await acceptor.async_accept(use_nothrow);
    if (ec == asio::error::operation_aborted) co_return;
    if (ec) {
      // Out of descriptors: wait a little instead of spinning on the error.
      asio::steady_timer backoff(io, std::chrono::milliseconds(100));
      co_await backoff.async_wait(use_nothrow);
      continue;
    }
    if (connections >= kMaxConnections) continue;  // `socket` closes as it goes out of scope
    base::spawn(io, serve(std::move(socket)), "an admin connection");
  }
}

awaitable<AdminView> AdminServer::Impl::view() {
  // The supervisor lives on the control thread: gather there, render here. (Named locals rather
  // than temporaries inside co_await expressions: GCC 12 miscompiles some of those.)
  // A request may be waiting here when the control thread destroys the server (a reload that moves
  // the admin address, shutdown): the gathering keeps Impl alive and gathers nothing then.
  auto on_control = [self = shared_from_this()]() -> awaitable<AdminView> {
    if (!self->alive) co_return AdminView{};
    co_return self->gather();
  };
  // Moved, not copied: a copy in this frame (which the admin io_context owns) would keep Impl, and
  // so the io_context, alive for ever.
  AdminView v = co_await asio::co_spawn(control, std::move(on_control), asio::use_awaitable);
  co_return v;
}

awaitable<Reply> AdminServer::Impl::handle(const http::request<http::empty_body>& request) {
  if (request.method() != http::verb::get && request.method() != http::verb::head)
    co_return text(http::status::method_not_allowed, "only GET and HEAD\n");
  const std::string_view target(request.target().data(), request.target().size());
  const std::string_view path = target.substr(0, target.find('?'));
  if (path == "/")
    co_return Reply{http::status::ok, "text/html; charset=utf-8", std::string(status_page_html())};
  if (path == "/healthz") co_return text(http::status::ok, "ok\n");
  if (path == "/readyz") {
    const AdminView v = co_await view();
    std::string why;
    if (ready(v, &why)) co_return text(http::status::ok, "ok\n");
    co_return text(http::status::service_unavailable, why + "\n");
  }
  if (path == "/status") {
    const AdminView v = co_await view();
    co_return Reply{http::status::ok, "application/json", render_status_json(v)};
  }
  if (path == "/metrics") {
    const AdminView v = co_await view();
    co_return Reply{http::status::ok, "text/plain; version=0.0.4; charset=utf-8",
                    render_metrics(v)};
  }
  co_return text(http::status::not_found,
                 "not found: try /, /healthz, /readyz, /status, /metrics\n");
}

awaitable<void> AdminServer::Impl::serve(tcp::socket socket) {
  ++connections;
  struct Count {
    std::size_t& n;
    ~Count() { --n; }
  } count{connections};
  beast::tcp_stream stream(std::move(socket));
  beast::flat_buffer buffer;
  for (;;) {
    // A slow or idle client gets kIdleTimeout per request, then the connection is closed.
    stream.expires_after(kIdleTimeout);
    http::request_parser<http::empty_body> parser;
    parser.header_limit(kHeaderLimit);
    parser.body_limit(0);
    auto [ec, n] = co_await http::async_read(stream, buffer, parser, use_nothrow);
    if (ec == http::error::header_limit || ec == http::error::body_limit) {
      http::request<http::empty_body> closing;
      closing.keep_alive(false);
      Reply too_large = text(http::status::request_header_fields_too_large, "request too large\n");
      co_await send(stream, closing, std::move(too_large));
      break;
    }
    if (ec) break;
    const auto& request = parser.get();
    Reply reply = co_await handle(request);
    const bool sent = co_await send(stream, request, std::move(reply));
    if (!sent || !request.keep_alive()) break;
  }
  beast::error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
}

AdminServer::AdminServer(const tcp::endpoint& endpoint, asio::any_io_executor control,
                         Gather gather)
    : impl_(std::make_shared<Impl>(endpoint, std::move(control), std::move(gather))) {
  start();
}

AdminServer::AdminServer(int listening, asio::any_io_executor control, Gather gather)
    : impl_(std::make_shared<Impl>(listening, std::move(control), std::move(gather))) {
  start();
}

void AdminServer::start() {
  base::spawn(impl_->io, impl_->accept_loop(), "the admin accept loop");
  impl_->thread = std::jthread([impl = impl_.get()] {
    auto guard = asio::make_work_guard(impl->io);
    impl->io.run();
  });
}

AdminServer::~AdminServer() {
  impl_->alive = false;
  impl_->io.stop();
  impl_->thread = {};  // joins
}

tcp::endpoint AdminServer::endpoint() const { return impl_->acceptor.local_endpoint(); }

int AdminServer::native_handle() const { return impl_->fd; }

}  // namespace apilb::admin
