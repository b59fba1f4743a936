// End to end: the real apiserver-lb binary, real flags, signals and sockets.
#include "tests/e2e/lb_process.hpp"
#include "tests/support/backends.hpp"
#include "tests/support/process.hpp"
#include "tests/support/wait.hpp"

#include <gtest/gtest.h>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

#include <csignal>

namespace apilb::test {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;

constexpr auto kDeadline = 10s;

std::string echo(tcp::socket& s, std::string_view text) {
  asio::write(s, asio::buffer(text));
  std::string reply(text.size(), '\0');
  asio::read(s, asio::buffer(reply));
  return reply;
}

TEST(Run, PrintsItsVersion) {
  ChildProcess p(APILB_BINARY, {"version"});
  EXPECT_EQ(p.wait_exit(kDeadline), 0);
  EXPECT_TRUE(p.log().starts_with("apiserver-lb "));
}

TEST(Run, RejectsAnUnknownFlagWithUsage) {
  ChildProcess p(APILB_BINARY, {"run", "--bogus"});
  EXPECT_EQ(p.wait_exit(kDeadline), 2);
  EXPECT_NE(p.log().find("unknown flag --bogus"), std::string::npos) << p.log();
}

TEST(Run, SendsEverythingToTheFirstMasterWhenNoTargetIsConfigured) {
  EchoBackend master;
  LbProcess lb({"--first-master", to_string(master.endpoint())});
  EXPECT_TRUE(lb.process().wait_for_log("(fallback)", kDeadline)) << lb.process().log();
  for (int i = 0; i < 3; ++i) {
    const auto reply =
        fetch(lb.endpoint(), "kubectl get nodes", kDeadline, AfterSend::shut_down_write);
    EXPECT_EQ(reply.data, "kubectl get nodes");
  }
  EXPECT_GE(master.accepted(), 3u);  // plus the health checks
}

TEST(Run, SigtermDrainsALiveConnectionThenExitsZero) {
  EchoBackend backend;
  LbProcess lb({"--target", to_string(backend.endpoint())});
  asio::io_context io;
  tcp::socket watch(io);
  watch.connect(lb.endpoint());
  ASSERT_EQ(echo(watch, "watch?"), "watch?");

  lb.process().send_signal(SIGTERM);
  ASSERT_TRUE(lb.process().wait_for_log("draining", kDeadline));
  // No longer accepting, but the live connection still works.
  EXPECT_TRUE(wait_until([&] { return !port_accepts(lb.endpoint()); }, kDeadline));
  EXPECT_EQ(echo(watch, "still flowing"), "still flowing");
  EXPECT_TRUE(lb.process().running());

  watch.close();
  EXPECT_EQ(lb.process().wait_exit(kDeadline), 0) << lb.process().log();
}

TEST(Run, SigtermClosesWhatIsLeftAfterTheDrainTimeout) {
  EchoBackend backend;
  TempDir dir;
  const auto config = dir.write("config.yaml", "drain_timeout: 300ms\n");
  LbProcess lb({"--config", config.string(), "--target", to_string(backend.endpoint())});
  asio::io_context io;
  tcp::socket watch(io);
  watch.connect(lb.endpoint());
  ASSERT_EQ(echo(watch, "long watch"), "long watch");
  lb.process().send_signal(SIGTERM);
  EXPECT_EQ(lb.process().wait_exit(kDeadline), 0) << lb.process().log();
  EXPECT_NE(lb.process().log().find("closing 1 connections"), std::string::npos);
}

TEST(Run, FailsClearlyWhenTheListenAddressIsTaken) {
  EchoBackend squatter;  // a plain listener without SO_REUSEPORT holds the port
  ChildProcess p(APILB_BINARY, {"run", "--listen", to_string(squatter.endpoint()), "--admin", "",
                                "--target", "127.0.0.1:1"});
  EXPECT_EQ(p.wait_exit(kDeadline), 1);
  EXPECT_NE(p.log().find("cannot listen on 127.0.0.1:"), std::string::npos) << p.log();
}

TEST(Run, RefusesToSplitItsPortWithASecondInstance) {
  const std::string listen = "127.0.0.1:" + std::to_string(free_port());
  const std::vector<std::string> args{"run", "--listen", listen,       "--admin",
                                      "",    "--target", "127.0.0.1:1"};
  ChildProcess first(APILB_BINARY, args);
  ASSERT_TRUE(first.wait_for_log("listening on", kDeadline)) << first.log();
  // SO_REUSEPORT would let the second one bind too, and take half of the first one's clients.
  ChildProcess second(APILB_BINARY, args);
  EXPECT_EQ(second.wait_exit(kDeadline), 1);
  EXPECT_NE(second.log().find("cannot listen on " + listen + ": another process listens there"),
            std::string::npos)
      << second.log();
  EXPECT_TRUE(first.running());
}

TEST(CheckConfig, ReportsFileLineAndFieldAndExitsOne) {
  TempDir dir;
  const auto file =
      dir.write("config.yaml", "targets: [\"10.0.0.11:6443\"]\nhealth:\n  interval: 2x\n");
  ChildProcess p(APILB_BINARY, {"check-config", "--config", file.string()});
  EXPECT_EQ(p.wait_exit(kDeadline), 1);
  EXPECT_NE(p.log().find(file.string() + ":3:13: health.interval: \"2x\" is not a duration"),
            std::string::npos)
      << p.log();
}

TEST(CheckConfig, AcceptsAValidFile) {
  TempDir dir;
  const auto file =
      dir.write("config.yaml", "listen: [\"127.0.0.1:16443\"]\ntargets: [\"10.0.0.11\"]\n");
  ChildProcess p(APILB_BINARY, {"check-config", "--config", file.string()});
  EXPECT_EQ(p.wait_exit(kDeadline), 0) << p.log();
}

}  // namespace
}  // namespace apilb::test
