#pragma once

// Stand-in masters on hosts of their own (network namespaces) and the client side that watches a
// balancer in front of them: shared by the multi-host tests (netns_test.cpp) and the failover
// comparison with HAProxy (bench/failover.sh, failover_compare.cpp).

#include "tests/e2e/load.hpp"
#include "tests/support/netns.hpp"
#include "tests/support/process.hpp"
#include "tests/support/wait.hpp"

#include <algorithm>
#include <chrono>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace apilb::test {

constexpr std::uint16_t kApiserverPort = 6443;

inline long long ms(std::chrono::steady_clock::duration d) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
}

// An apiserver-standin (plain HTTP) in a TestHost of its own, listening on the host's address,
// port 6443, when the constructor returns.
class HostedMaster {
 public:
  explicit HostedMaster(const std::string& name) : name_(name) { start(); }
  // A new stand-in process on the same host and port (after a kill, say).
  void start() {
    process_.reset();
    auto argv = host_.run_in();
    argv.insert(argv.end(),
                {APILB_STANDIN, "--listen", to_string(endpoint()), "--name", name_, "--plain"});
    process_.emplace(argv.front(), std::vector<std::string>(argv.begin() + 1, argv.end()));
    if (!process_->wait_for_log(" listening on ", std::chrono::seconds(10)))
      throw std::runtime_error(name_ + " did not start in " + host_.name() + ":\n" +
                               process_->log());
  }
  TestHost& host() { return host_; }
  ChildProcess& process() { return *process_; }
  tcp::endpoint endpoint() const { return host_.endpoint(kApiserverPort); }
  std::string address() const { return to_string(endpoint()); }

 private:
  std::string name_;
  TestHost host_;  // declared before the process: it goes last
  std::optional<ChildProcess> process_;
};

// A kept-alive plain-HTTP connection through the balancer. Knows which stand-in answered.
class HttpClient {
 public:
  explicit HttpClient(const tcp::endpoint& ep) : socket_(io_) { socket_.connect(ep); }
  // GET / on this connection: the stand-in's name, or "" when the connection is gone.
  std::string who() { return who_answers(socket_, buffer_); }
  // True once the balancer has closed this connection (EOF or reset). Does not block.
  bool closed() {
    socket_.non_blocking(true);
    char byte;
    boost::system::error_code ec;
    socket_.receive(boost::asio::buffer(&byte, 1), tcp::socket::message_peek, ec);
    socket_.non_blocking(false);
    return ec && ec != boost::asio::error::would_block;
  }

 private:
  boost::asio::io_context io_;
  tcp::socket socket_;
  std::string buffer_;
};

// Plain-HTTP `GET /` through the balancer on a new connection: the stand-in's name, or "" when it
// failed. Bounded: a request lost with a silent host fails after `deadline`, it never hangs. (In
// a namespace of its own: call it on a thread inside that namespace.)
inline std::string who_plain(const tcp::endpoint& lb,
                             std::chrono::milliseconds deadline = std::chrono::seconds(3)) {
  const auto reply = http_get(lb, "/", deadline);
  if (!reply.ok() || reply.status != 200) return "";
  std::string body = reply.body;
  while (!body.empty() && body.back() == '\n') body.pop_back();
  return body;
}

// New-connection load on `threads` threads (a Load each). More than one: a request caught in
// flight by a failure is lost with the host and stalls its thread until the balancer closes it;
// the others must keep asking meanwhile.
class Loads {
 public:
  Loads(const tcp::endpoint& lb, int threads) {
    for (int i = 0; i < threads; ++i)
      loads_.push_back(std::make_unique<Load>([lb] { return who_plain(lb); }));
  }
  void stop() {
    for (auto& load : loads_) load->stop();
  }
  std::size_t total() {
    std::size_t n = 0;
    for (auto& load : loads_) n += load->total();
    return n;
  }
  // The requests that started after `after`, in the order they started.
  std::vector<Load::Result> since(std::chrono::steady_clock::time_point after) {
    std::vector<Load::Result> all;
    for (auto& load : loads_) {
      auto some = load->since(after);
      all.insert(all.end(), some.begin(), some.end());
    }
    std::sort(all.begin(), all.end(),
              [](const auto& a, const auto& b) { return a.started < b.started; });
    return all;
  }

 private:
  std::vector<std::unique_ptr<Load>> loads_;
};

// Waits for apiserver-lb (`process`) to log `address (config): ... -> state: why` after `from` (a
// log size taken earlier: older lines do not count) and returns when it saw it; `why`, if given,
// gets the reason.
inline std::optional<std::chrono::steady_clock::time_point> wait_state(
    const ChildProcess& process, const std::string& address, const std::string& state,
    std::size_t from = 0, std::string* why = nullptr,
    std::chrono::milliseconds deadline = std::chrono::seconds(10)) {
  const std::string needle = address + " (config): ";
  const std::string arrow = "-> " + state + ": ";
  const bool seen = wait_until(
      [&] {
        const std::string log = process.log();
        for (auto at = log.find(needle, from); at != std::string::npos;
             at = log.find(needle, at + 1)) {
          const std::string line = log.substr(at, log.find('\n', at) - at);
          if (const auto to = line.find(arrow); to != std::string::npos) {
            if (why)
              *why = line.substr(to + arrow.size(), line.rfind(" (was ") - to - arrow.size());
            return true;
          }
        }
        return false;
      },
      deadline, std::chrono::milliseconds(2));
  if (!seen) return std::nullopt;
  return std::chrono::steady_clock::now();
}

}  // namespace apilb::test
