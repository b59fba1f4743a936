// relay.engine end to end: auto picks io_uring where the kernel allows it and falls back to epoll,
// with one log line, where io_uring is refused for real: no-uring runs the balancer under a seccomp
// filter that refuses io_uring_setup/enter/register with EPERM, as Docker's default profile does.
#include "tests/support/backends.hpp"
#include "tests/support/process.hpp"
#include "tests/support/wait.hpp"

#include <gtest/gtest.h>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

#include <linux/io_uring.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <regex>

namespace apilb::test {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;

constexpr auto kDeadline = 10s;

std::size_t count(const std::string& text, std::string_view needle) {
  std::size_t n = 0;
  for (auto at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

// apiserver-lb in front of an echo backend, with its admin API, optionally under no-uring; an
// empty `engine` leaves relay.engine out of the config (the default). The
// suite's APILB_RELAY_ENGINE (set when ctest runs everything on one engine) is cleared: these
// tests choose the engine themselves.
class Balancer {
 public:
  Balancer(std::string_view engine, bool refuse_uring) : admin_port_(free_port()) {
    const std::string relay =
        engine.empty() ? "" : "relay: { engine: " + std::string(engine) + " }\n";
    const auto config =
        dir_.write("config.yaml", relay + "health: { interval: 200ms, timeout: 100ms }\n");
    std::vector<std::string> args{"run",
                                  "--config",
                                  config.string(),
                                  "--listen",
                                  "127.0.0.1:0",
                                  "--admin",
                                  "127.0.0.1:" + std::to_string(admin_port_),
                                  "--target",
                                  to_string(echo_.endpoint())};
    if (refuse_uring) {
      args.insert(args.begin(), APILB_BINARY);
      process_.emplace(APILB_NO_URING, args, SpawnOptions().with_env("APILB_RELAY_ENGINE="));
    } else {
      process_.emplace(APILB_BINARY, args, SpawnOptions().with_env("APILB_RELAY_ENGINE="));
    }
  }
  ChildProcess& process() { return *process_; }
  // Waits for the listening line; the balancer's port, 0 if it exited instead.
  std::uint16_t started() {
    wait_until(
        [&] {
          return process_->log().find(" listening on ") != std::string::npos ||
                 !process_->running();
        },
        kDeadline, 10ms);
    std::smatch m;
    const std::string log = process_->log();
    if (!std::regex_search(log, m, std::regex(R"(listening on 127\.0\.0\.1:(\d+))"))) return 0;
    return static_cast<std::uint16_t>(std::stoi(m[1]));
  }
  tcp::endpoint admin() const { return loopback(admin_port_); }

 private:
  TempDir dir_;
  EchoBackend echo_;
  std::uint16_t admin_port_;
  std::optional<ChildProcess> process_;
};

void expect_echo(std::uint16_t port) {
  asio::io_context io;
  tcp::socket s(io);
  s.connect(loopback(port));
  const std::string text = "through the relay";
  asio::write(s, asio::buffer(text));
  std::string reply(text.size(), '\0');
  asio::read(s, asio::buffer(reply));
  EXPECT_EQ(reply, text);
}

void expect_engine(const tcp::endpoint& admin, std::string_view engine) {
  const auto status = http_get(admin, "/status", kDeadline);
  ASSERT_EQ(status.status, 200) << status.error.message();
  EXPECT_NE(status.body.find("\"engine\":\"" + std::string(engine) + "\""), std::string::npos)
      << status.body.substr(0, 300);
  const auto metrics = http_get(admin, "/metrics", kDeadline);
  EXPECT_NE(
      metrics.body.find("apiserver_lb_relay_engine{engine=\"" + std::string(engine) + "\"} 1"),
      std::string::npos);
}

// Why this process cannot set up an io_uring (a sysctl, a container's seccomp profile, an old
// kernel), or "" when it can: where it cannot, `auto` has nothing to pick.
std::string uring_refused_here() {
  io_uring_params params{};
  const long fd = ::syscall(__NR_io_uring_setup, 4, &params);
  if (fd < 0) return std::string("io_uring_setup: ") + std::strerror(errno);
  ::close(static_cast<int>(fd));
  return {};
}

// Asked for, and by default: a static pod's config under a container runtime's seccomp profile.
TEST(Engine, AutoFallsBackToEpollWithOneLogLineWhereSeccompRefusesIoUring) {
  for (const std::string_view engine : {"auto", ""}) {
    SCOPED_TRACE(engine.empty() ? "relay.engine unset" : "relay.engine auto");
    Balancer lb(engine, true);
    const auto port = lb.started();
    ASSERT_NE(port, 0) << lb.process().log();
    const std::string log = lb.process().log();
    EXPECT_EQ(count(log, "io_uring unavailable"), 1u) << log;
    EXPECT_NE(log.find("relay.engine auto: io_uring unavailable (io_uring_setup failed: Operation "
                       "not permitted (refused by a seccomp profile or kernel.io_uring_disabled)); "
                       "using epoll"),
              std::string::npos)
        << log;
    EXPECT_NE(log.find("worker threads (epoll)"), std::string::npos) << log;
    expect_echo(port);
    expect_engine(lb.admin(), "epoll");
  }
}

TEST(Engine, UringRefusesToStartWithAClearErrorWhereSeccompRefusesIoUring) {
  Balancer lb("uring", true);
  EXPECT_EQ(lb.started(), 0);
  const auto status = lb.process().wait_exit(kDeadline);
  ASSERT_TRUE(status.has_value());
  EXPECT_NE(*status, 0);
  EXPECT_NE(lb.process().log().find("relay.engine is uring but io_uring is unavailable: "
                                    "io_uring_setup failed: Operation not permitted"),
            std::string::npos)
      << lb.process().log();
}

// Asked for, and by default (no relay.engine in the file).
TEST(Engine, AutoPicksUringWhereTheKernelAllowsIt) {
  if (const auto why = uring_refused_here(); !why.empty()) GTEST_SKIP() << why;
  for (const std::string_view engine : {"auto", ""}) {
    SCOPED_TRACE(engine.empty() ? "relay.engine unset" : "relay.engine auto");
    Balancer lb(engine, false);
    const auto port = lb.started();
    ASSERT_NE(port, 0) << lb.process().log();
    EXPECT_EQ(lb.process().log().find("io_uring unavailable"), std::string::npos)
        << lb.process().log();
    expect_echo(port);
    expect_engine(lb.admin(), "uring");
  }
}

TEST(Engine, EpollIsTakenAsAskedEvenWhereIoUringWorks) {
  Balancer lb("epoll", false);
  const auto port = lb.started();
  ASSERT_NE(port, 0) << lb.process().log();
  expect_echo(port);
  expect_engine(lb.admin(), "epoll");
}

}  // namespace
}  // namespace apilb::test
