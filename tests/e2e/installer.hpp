#pragma once

// apiserver-lb as an installer runs it: a config file and a targets_file in a temp dir, the admin
// API, the `targets` tool; plus the client side most end-to-end tests share (an echo round trip on
// a new connection, a held connection).

#include "tests/e2e/lb_process.hpp"
#include "tests/e2e/load.hpp"
#include "tests/support/backends.hpp"
#include "tests/support/process.hpp"
#include "tests/support/wait.hpp"

#include <gtest/gtest.h>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

#include <filesystem>
#include <optional>
#include <regex>
#include <string>
#include <vector>

namespace apilb::test {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using std::chrono::steady_clock;

constexpr auto kDeadline = 10s;

// New connections through the balancer in a loop, each an echo round trip.
inline std::string echo_through(const tcp::endpoint& lb) {
  const auto r = fetch(lb, "ping", 5s, AfterSend::shut_down_write);
  return !r.error && r.data == "ping" ? "ok" : "";
}

// A kept-alive connection through the balancer.
class Held {
 public:
  explicit Held(const tcp::endpoint& lb) : socket_(io_) { socket_.connect(lb); }
  bool echo(std::string_view text) {
    boost::system::error_code ec;
    asio::write(socket_, asio::buffer(text), ec);
    std::string reply(text.size(), '\0');
    if (!ec) asio::read(socket_, asio::buffer(reply), ec);
    return !ec && reply == text;
  }
  bool closed_within(std::chrono::milliseconds deadline) {
    return peer_closed_within(socket_, deadline);
  }

 private:
  asio::io_context io_;
  tcp::socket socket_;
};

// apiserver-lb with a config file and a targets_file in a temp dir, and its admin API.
class Installer {
 public:
  explicit Installer(const std::string& extra_config = "", bool start = true)
      : admin_port_(free_port()), extra_(extra_config) {
    write_config(extra_config);
    if (start) this->start();
  }
  // Started with these targets in its feed, written by `targets set` as an installer would.
  explicit Installer(const std::vector<tcp::endpoint>& feed, const std::string& extra_config = "")
      : Installer(extra_config, false) {
    std::vector<std::string> set{"set"};
    for (const auto& t : feed) set.push_back(to_string(t));
    targets(set);
    start();
  }
  void start() {
    lb_.reset();
    lb_.emplace(std::vector<std::string>{"--config", config_.string(), "--admin",
                                         "127.0.0.1:" + std::to_string(admin_port_)});
  }
  void write_config(const std::string& extra,
                    const std::string& health = "{ interval: 200ms, timeout: 150ms }") {
    config_ = dir_.write("config.yaml",
                         "targets_file: " + feed().string() + "\nhealth: " + health + "\n" + extra);
  }
  std::filesystem::path feed() const { return dir_ / "targets.yaml"; }
  std::filesystem::path config() const { return config_; }
  std::filesystem::path path(std::string_view name) const { return dir_ / name; }
  tcp::endpoint admin() const { return loopback(admin_port_); }
  // `apiserver-lb targets ARGS... --file FEED`: the installer's own tool.
  void targets(std::vector<std::string> args) {
    args.insert(args.begin(), "targets");
    args.push_back("--file");
    args.push_back(feed().string());
    ChildProcess p(APILB_BINARY, args);
    ASSERT_EQ(p.wait_exit(kDeadline), 0) << p.log();
  }
  LbProcess& lb() { return *lb_; }
  std::string status() { return http_get(loopback(admin_port_), "/status", kDeadline).body; }
  std::string metrics() { return http_get(loopback(admin_port_), "/metrics", kDeadline).body; }
  // The state /status shows for `target`, or "" when it is not listed.
  std::string state(const tcp::endpoint& target) {
    std::smatch m;
    const std::string s = status();
    const std::regex re("\"address\":\"" +
                        std::regex_replace(to_string(target), std::regex(R"([.\[\]])"), R"(\$&)") +
                        R"(\",\"origin\":\"\w+\",\"state\":\"(\w+)\")");
    return std::regex_search(s, m, re) ? std::string(m[1]) : "";
  }
  bool wait_state(const tcp::endpoint& target, const std::string& state) {
    return wait_until([&] { return this->state(target) == state; }, kDeadline, 20ms);
  }
  std::size_t count_in_log(const std::string& needle) {
    const std::string log = lb_->process().log();
    std::size_t n = 0;
    for (auto at = log.find(needle); at != std::string::npos; at = log.find(needle, at + 1)) ++n;
    return n;
  }

 private:
  TempDir dir_;
  std::uint16_t admin_port_;
  std::string extra_;
  std::filesystem::path config_;
  std::optional<LbProcess> lb_;
};

}  // namespace apilb::test
