#pragma once

// Waiting with deadlines instead of sleeping: tests poll a condition until it holds, and a deadline
// only ever fails a test (it never makes one pass). Keep the deadlines generous; they cost nothing
// when the condition comes true early.

#include <chrono>
#include <functional>
#include <thread>

#include <boost/asio/ip/tcp.hpp>

namespace apilb::test {

// Calls `pred` until it returns true (then returns true) or until `deadline` has passed (then
// returns false after one last call). Sleeps `poll` between calls: polling is the point here.
inline bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds deadline,
                       std::chrono::milliseconds poll = std::chrono::milliseconds(5)) {
  const auto until = std::chrono::steady_clock::now() + deadline;
  for (;;) {
    if (pred()) return true;
    if (std::chrono::steady_clock::now() >= until) return pred();
    std::this_thread::sleep_for(poll);
  }
}

// True when a TCP connect to `endpoint` completes within `timeout`; the connection is closed at
// once. False for a refused connect and for one that does not complete in time (a blackhole).
bool port_accepts(const boost::asio::ip::tcp::endpoint& endpoint,
                  std::chrono::milliseconds timeout = std::chrono::milliseconds(250));

}  // namespace apilb::test
