#pragma once

// Client-side helpers of the end-to-end tests: continuous new-connection load that records who
// answered and what failed, and a peer-close check for held connections.

#include "tests/support/wait.hpp"

#include <gtest/gtest.h>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/write.hpp>

#include <algorithm>
#include <chrono>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace apilb::test {

// Runs `request` in a loop on its own thread (each call a new client connection) until stopped or
// after `limit` requests (50,000 unless given). A request returns who answered, or "" when it
// failed; it must bound itself in time. Any thread may read the results.
class Load {
 public:
  using Clock = std::chrono::steady_clock;
  struct Result {
    Clock::time_point started;
    Clock::duration took;
    std::string answered_by;  // empty: failed
  };

  explicit Load(std::function<std::string()> request, int limit = 50000)
      : request_(std::move(request)) {
    thread_ = std::jthread([this, limit](std::stop_token stop) {
      for (int i = 0; i < limit && !stop.stop_requested(); ++i) {
        const auto started = Clock::now();
        std::string name = request_();
        std::lock_guard lock(mutex_);
        results_.push_back({started, Clock::now() - started, std::move(name)});
      }
    });
  }
  ~Load() { stop(); }
  void stop() {
    thread_.request_stop();
    if (thread_.joinable()) thread_.join();
  }

  // The requests that started after `after`.
  std::vector<Result> since(Clock::time_point after = {}) {
    std::lock_guard lock(mutex_);
    std::vector<Result> out;
    std::copy_if(results_.begin(), results_.end(), std::back_inserter(out),
                 [&](const Result& r) { return r.started > after; });
    return out;
  }
  std::size_t total() {
    std::lock_guard lock(mutex_);
    return results_.size();
  }
  // Requests that started after `after` and got no answer. (One already in flight on a master
  // that crashes is lost with it: no balancer can replay a request it has already passed on.)
  std::size_t failures(Clock::time_point after = {}) { return answered_by("", after); }
  std::size_t answered_by(const std::string& name, Clock::time_point after = {}) {
    const auto results = since(after);
    return std::count_if(results.begin(), results.end(),
                         [&](const Result& r) { return r.answered_by == name; });
  }
  // Stops the load and says whether every request was answered (how many were not, if any).
  testing::AssertionResult stopped_without_failure() {
    stop();
    const std::size_t failed = failures();
    if (failed == 0) return testing::AssertionSuccess() << total() << " requests, none failed";
    return testing::AssertionFailure() << failed << " of " << total() << " requests failed";
  }
  // Waits until `n` more requests have completed.
  bool more(std::size_t n, std::chrono::milliseconds deadline = std::chrono::seconds(10)) {
    const std::size_t target = total() + n;
    return wait_until([&] { return total() >= target; }, deadline);
  }

 private:
  std::function<std::string()> request_;
  std::mutex mutex_;
  std::vector<Result> results_;
  std::jthread thread_;
};

// True once the peer has closed `socket` (EOF, reset) within `deadline`. Peeks: reads nothing.
inline bool peer_closed_within(boost::asio::ip::tcp::socket& socket,
                               std::chrono::milliseconds deadline) {
  socket.non_blocking(true);
  return wait_until(
      [&] {
        char byte;
        boost::system::error_code ec;
        socket.receive(boost::asio::buffer(&byte, 1), boost::asio::ip::tcp::socket::message_peek,
                       ec);
        return ec && ec != boost::asio::error::would_block;
      },
      deadline, std::chrono::milliseconds(2));
}

// `GET /` on a kept-alive connection (plain or TLS stream) to a stand-in apiserver: its name, or ""
// when the connection is gone. `buffer` carries bytes read past one response to the next call.
template <typename Stream>
std::string who_answers(Stream& stream, std::string& buffer) {
  namespace asio = boost::asio;
  boost::system::error_code ec;
  const std::string request = "GET / HTTP/1.1\r\nHost: apiserver\r\n\r\n";
  asio::write(stream, asio::buffer(request), ec);
  if (ec) return "";
  const std::size_t head = asio::read_until(stream, asio::dynamic_buffer(buffer), "\r\n\r\n", ec);
  if (ec) return "";
  std::size_t length = 0;
  const auto at = buffer.find("Content-Length: ");
  if (at != std::string::npos && at < head) length = std::stoul(buffer.substr(at + 16));
  if (buffer.size() < head + length)
    asio::read(stream, asio::dynamic_buffer(buffer),
               asio::transfer_exactly(head + length - buffer.size()), ec);
  if (ec) return "";
  std::string body = buffer.substr(head, length);
  buffer.erase(0, head + length);
  while (!body.empty() && body.back() == '\n') body.pop_back();
  return body;
}

}  // namespace apilb::test
