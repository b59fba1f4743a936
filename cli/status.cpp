// `apiserver-lb status`: the targets table from a running balancer's /status.
#include "admin/render.hpp"
#include "cli/flags.hpp"
#include "config/address.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <cstdio>
#include <optional>
#include <string>

namespace apilb::cli {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::ip::tcp;

constexpr std::string_view kDefaultAdmin = "127.0.0.1:9445";
constexpr std::string_view kUsage =
    "usage: apiserver-lb status [--admin ADDR]   (default 127.0.0.1:9445)\n"
    "exit 0: ready; 1: not ready; 2: no answer or a usage error\n";

}  // namespace

int status(std::span<char*> args) {
  Flags flags(args, kUsage);
  std::optional<config::Address> address;
  while (auto f = flags.next()) {
    if (*f == "--admin") address = flags.local(flags.value());
    else flags.fail("status: unknown flag " + std::string(*f));
  }
  if (!address) address = config::parse_listen_address(kDefaultAdmin);
  asio::io_context io;
  beast::tcp_stream stream(io);
  stream.expires_after(std::chrono::seconds(5));
  beast::error_code ec;
  stream.connect(tcp::endpoint(asio::ip::make_address(address->host), address->port), ec);
  http::request<http::empty_body> request{http::verb::get, "/status", 11};
  request.set(http::field::host, address->to_string());
  request.set(http::field::connection, "close");
  if (!ec) http::write(stream, request, ec);
  beast::flat_buffer buffer;
  http::response<http::string_body> response;
  if (!ec) http::read(stream, buffer, response, ec);
  if (ec || response.result() != http::status::ok) {
    std::fprintf(stderr, "apiserver-lb status: no answer from http://%s/status: %s\n",
                 address->to_string().c_str(),
                 ec ? ec.message().c_str() : std::to_string(response.result_int()).c_str());
    return 2;
  }
  bool is_ready = false;
  const auto table = admin::render_status_table(response.body(), &is_ready);
  if (!table) {
    std::fprintf(stderr,
                 "apiserver-lb status: http://%s/status did not answer with a status document\n",
                 address->to_string().c_str());
    return 2;
  }
  std::fputs(table->c_str(), stdout);
  return is_ready ? 0 : 1;
}

}  // namespace apilb::cli
