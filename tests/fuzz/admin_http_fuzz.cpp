// Fuzzes the admin server's request handling without sockets or coroutines: the bytes a client
// sends go, in network-sized pieces, through Beast's request parser with the limits
// admin/server.cpp sets (8 KiB of header, no body), then through the same routing and reply
// building as AdminServer::Impl::serve(), request after request while the client keeps the
// connection alive. The first input byte picks the piece size, as segmentation is the client's to
// choose too.
#include "tests/fuzz/fuzz_support.hpp"

#include <boost/asio/buffer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include <algorithm>
#include <sstream>
#include <string>

namespace {

using apilb::fuzz::check;
namespace beast = boost::beast;
namespace http = beast::http;

constexpr std::size_t kHeaderLimit = 8 * 1024;  // as admin/server.cpp

// What AdminServer::Impl::handle() answers, without the AdminView (which needs the control thread):
// the status and whether a view would have been gathered.
http::status route(const http::request<http::empty_body>& request) {
  if (request.method() != http::verb::get && request.method() != http::verb::head)
    return http::status::method_not_allowed;
  const std::string_view target(request.target().data(), request.target().size());
  const std::string_view path = target.substr(0, target.find('?'));
  if (path == "/healthz" || path == "/readyz" || path == "/status" || path == "/metrics")
    return http::status::ok;
  return http::status::not_found;
}

// The reply as send() in admin/server.cpp builds it, serialised: a HEAD request gets the headers
// only.
std::string reply(const http::request<http::empty_body>& request, http::status status,
                  std::string body) {
  http::response<http::string_body> response{status, request.version()};
  response.set(http::field::server, "apiserver-lb");
  response.set(http::field::content_type, "text/plain; charset=utf-8");
  response.set(http::field::cache_control, "no-store");
  response.keep_alive(request.keep_alive());
  std::ostringstream out;
  if (request.method() == http::verb::head) {
    http::response<http::empty_body> head{response.base()};
    head.content_length(body.size());
    out << head;
  } else {
    response.body() = std::move(body);
    response.prepare_payload();
    out << response;
  }
  return std::move(out).str();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::size_t piece = data[0] == 0 ? size : data[0];
  std::string_view wire = apilb::fuzz::as_text(data + 1, size - 1);
  const std::string_view input = wire;

  beast::flat_buffer buffer;
  for (;;) {  // one request per round, as serve() loops
    http::request_parser<http::empty_body> parser;
    parser.header_limit(kHeaderLimit);
    parser.body_limit(0);
    beast::error_code ec;
    // http::read's loop: parse what is buffered; when the parser needs more, "receive" a piece.
    while (!parser.is_done()) {
      if (buffer.size() == 0 || ec == http::error::need_more) {
        if (wire.empty()) {
          if (parser.got_some()) parser.put_eof(ec);
          else ec = http::error::end_of_stream;
          break;
        }
        const auto n = std::min(piece, wire.size());
        buffer.commit(
            boost::asio::buffer_copy(buffer.prepare(n), boost::asio::buffer(wire.data(), n)));
        wire.remove_prefix(n);
      }
      ec = {};
      const std::size_t used = parser.put(buffer.data(), ec);
      check(used <= buffer.size(), "the parser uses no more than it is given", input);
      buffer.consume(used);
      if (ec && ec != http::error::need_more) break;
    }
    if (ec == http::error::header_limit || ec == http::error::body_limit) {
      http::request<http::empty_body> closing;
      closing.keep_alive(false);
      const std::string out =
          reply(closing, http::status::request_header_fields_too_large, "request too large\n");
      check(out.starts_with("HTTP/1.1 431 "), "an oversized request gets 431", input);
      return 0;
    }
    if (ec || !parser.is_done()) return 0;
    const auto& request = parser.get();
    check(request.target().size() < kHeaderLimit, "a request line fits the header limit", input);
    check(!parser.content_length() || *parser.content_length() == 0, "a request carries no body",
          input);
    const http::status status = route(request);
    const std::string out = reply(request, status, "ok\n");
    check(out.starts_with("HTTP/"), "a reply is HTTP", input);
    if (!request.keep_alive()) return 0;
  }
}
