// The installer's target feed and SIGHUP reloads, end to end: the real binary, real files written
// the ways installers write them, continuous client traffic that must never see a failure.
#include "tests/e2e/installer.hpp"
#include "tests/e2e/lb_process.hpp"
#include "tests/e2e/load.hpp"
#include "tests/support/backends.hpp"
#include "tests/support/process.hpp"
#include "tests/support/wait.hpp"

#include <gtest/gtest.h>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <regex>
#include <thread>

namespace apilb::test {
namespace {

TEST(Feed, AddRemoveAndReplaceUnderLoadFailNoClientAndCloseOnlyTheRemovedTargetsConnections) {
  EchoBackend a, b, c;
  Installer installer({a.endpoint()}, "drain_timeout: 1s\n");
  ASSERT_TRUE(installer.wait_state(a.endpoint(), "up"));
  Load load([lb = installer.lb().endpoint()] { return echo_through(lb); });
  Held on_a(installer.lb().endpoint());
  ASSERT_TRUE(on_a.echo("a"));

  installer.targets({"add", to_string(b.endpoint())});
  ASSERT_TRUE(installer.wait_state(b.endpoint(), "up")) << installer.status();
  installer.targets({"add", to_string(c.endpoint())});
  ASSERT_TRUE(installer.wait_state(c.endpoint(), "up")) << installer.status();
  // Three targets, one held connection on a: the next one goes to b or c (least connections).
  Held on_other(installer.lb().endpoint());
  ASSERT_TRUE(on_other.echo("b or c"));
  ASSERT_TRUE(load.more(20));

  // Replace a: remove it. Its connection lives on for drain_timeout, then closes.
  const auto removed = steady_clock::now();
  installer.targets({"remove", to_string(a.endpoint())});
  ASSERT_TRUE(wait_until([&] { return installer.state(a.endpoint()).empty(); }, kDeadline));
  EXPECT_TRUE(on_a.echo("still draining"));
  EXPECT_TRUE(on_a.closed_within(3s));
  const auto closed_after = steady_clock::now() - removed;
  std::printf("removed target: its connection closed %lld ms after the remove (drain_timeout 1s)\n",
              static_cast<long long>(
                  std::chrono::duration_cast<std::chrono::milliseconds>(closed_after).count()));
  EXPECT_GE(closed_after, 900ms);
  EXPECT_TRUE(on_other.echo("untouched"));
  ASSERT_TRUE(load.more(20));
  EXPECT_TRUE(load.stopped_without_failure());
}

TEST(Feed, KeepsTheLastGoodListWhenTheFileIsBrokenTruncatedOrInvalid) {
  EchoBackend a, b;
  Installer installer({a.endpoint(), b.endpoint()});
  ASSERT_TRUE(installer.wait_state(b.endpoint(), "up"));
  Load load([lb = installer.lb().endpoint()] { return echo_through(lb); });
  const std::vector<std::string> broken{"targets: [10.0.0.1:6443\n",
                                        "targets:\n  - 10.0.0.1:99999\n", ""};
  for (std::size_t i = 0; i < broken.size(); ++i) {
    std::ofstream(installer.feed(), std::ios::trunc) << broken[i];
    ASSERT_TRUE(wait_until(
        [&] { return installer.count_in_log("keeping the last good list (2 targets)") == i + 1; },
        kDeadline))
        << installer.lb().process().log();
    EXPECT_EQ(installer.state(a.endpoint()), "up");
    EXPECT_EQ(installer.state(b.endpoint()), "up");
  }
  EXPECT_NE(installer.lb().process().log().find("port 99999 is out of range"), std::string::npos);
  EXPECT_NE(installer.metrics().find("apiserver_lb_target_feed_errors_total 3"), std::string::npos);
  ASSERT_TRUE(load.more(10));
  EXPECT_TRUE(load.stopped_without_failure());
}

TEST(Feed, ARestartWithABrokenFeedStartsFromThePersistedList) {
  EchoBackend a, b;
  Installer installer({a.endpoint(), b.endpoint()});
  ASSERT_TRUE(installer.wait_state(a.endpoint(), "up"));
  installer.lb().process().send_signal(SIGTERM);
  ASSERT_EQ(installer.lb().process().wait_exit(kDeadline), 0);

  std::ofstream(installer.feed(), std::ios::trunc) << "targets: {broken\n";
  installer.start();
  EXPECT_TRUE(installer.lb().process().wait_for_log("starting from the last good list", kDeadline))
      << installer.lb().process().log();
  EXPECT_TRUE(installer.wait_state(a.endpoint(), "up"));
  EXPECT_TRUE(installer.wait_state(b.endpoint(), "up"));
}

TEST(Feed, DrainStopsNewConnectionsWhileEstablishedOnesContinue) {
  EchoBackend a, b;
  Installer installer({a.endpoint(), b.endpoint()});
  ASSERT_TRUE(installer.wait_state(a.endpoint(), "up"));
  ASSERT_TRUE(installer.wait_state(b.endpoint(), "up"));
  Held first(installer.lb().endpoint()), second(installer.lb().endpoint());
  ASSERT_TRUE(first.echo("1"));
  ASSERT_TRUE(second.echo("2"));
  ASSERT_TRUE(wait_until([&] { return a.active() >= 1 && b.active() >= 1; }, kDeadline));

  installer.targets({"drain", to_string(a.endpoint())});
  ASSERT_TRUE(installer.wait_state(a.endpoint(), "draining")) << installer.status();
  const auto a_before = a.accepted();
  for (int i = 0; i < 10; ++i)
    EXPECT_EQ(fetch(installer.lb().endpoint(), "new", kDeadline, AfterSend::shut_down_write).data,
              "new");
  // Health checks still connect to a draining target; client connections do not.
  EXPECT_LE(a.accepted() - a_before, 3u);
  EXPECT_TRUE(first.echo("still"));
  EXPECT_TRUE(second.echo("still"));

  installer.targets({"add", to_string(a.endpoint())});  // `add` ends the maintenance
  EXPECT_TRUE(installer.wait_state(a.endpoint(), "up"));
}

TEST(Feed, PicksUpAnAtomicRenameAndADeleteThenRecreate) {
  EchoBackend a, b;
  Installer installer("targets: [\"" + std::string(to_string(a.endpoint())) + "\"]\n", false);
  installer.start();
  ASSERT_TRUE(installer.wait_state(a.endpoint(), "up"));

  // Atomic replace, as installers do: write a temp file, rename it over the feed.
  const auto temp = installer.feed().parent_path() / "targets.yaml.new";
  std::ofstream(temp) << "targets:\n  - " << to_string(b.endpoint()) << "\n";
  std::filesystem::rename(temp, installer.feed());
  ASSERT_TRUE(installer.wait_state(b.endpoint(), "up")) << installer.lb().process().log();

  // Deleted: no feed, the static target alone remains.
  std::filesystem::remove(installer.feed());
  ASSERT_TRUE(wait_until([&] { return installer.state(b.endpoint()).empty(); }, kDeadline))
      << installer.lb().process().log();
  EXPECT_EQ(installer.state(a.endpoint()), "up");

  // Re-created in place.
  std::ofstream(installer.feed()) << "targets: [\"" << to_string(b.endpoint()) << "\"]\n";
  EXPECT_TRUE(installer.wait_state(b.endpoint(), "up")) << installer.lb().process().log();
}

TEST(Reload, TwoHundredSighupsUnderLoadFailNoConnectionAndDropNone) {
  EchoBackend a, b;
  Installer installer({a.endpoint(), b.endpoint()});
  ASSERT_TRUE(installer.wait_state(b.endpoint(), "up"));
  Load load([lb = installer.lb().endpoint()] { return echo_through(lb); });
  Held watch(installer.lb().endpoint());
  ASSERT_TRUE(watch.echo("watch"));
  for (std::size_t i = 1; i <= 200; ++i) {
    installer.lb().process().send_signal(SIGHUP);
    ASSERT_TRUE(wait_until(
        [&] { return installer.count_in_log("reloaded the configuration") >= i; }, kDeadline))
        << "reload " << i;
  }
  ASSERT_TRUE(load.more(20));
  load.stop();
  std::printf("200 reloads under load: %zu client connections, %zu failed\n", load.total(),
              load.failures());
  EXPECT_EQ(load.failures(), 0u);
  EXPECT_TRUE(watch.echo("still watching"));
  EXPECT_NE(installer.metrics().find("apiserver_lb_config_reloads_total{result=\"success\"} 200"),
            std::string::npos);
}

TEST(Reload, ABadConfigChangesNothingAndIsCounted) {
  EchoBackend a;
  Installer installer("targets: [\"" + std::string(to_string(a.endpoint())) + "\"]\n");
  ASSERT_TRUE(installer.wait_state(a.endpoint(), "up"));
  installer.write_config("balance: fastest\n");
  installer.lb().process().send_signal(SIGHUP);
  ASSERT_TRUE(installer.lb().process().wait_for_log("reload refused, nothing changed", kDeadline));
  EXPECT_NE(installer.lb().process().log().find(":3:10: balance: \"fastest\" is not one of"),
            std::string::npos)
      << installer.lb().process().log();
  EXPECT_NE(installer.metrics().find("apiserver_lb_config_reloads_total{result=\"failure\"} 1"),
            std::string::npos);
  EXPECT_EQ(fetch(installer.lb().endpoint(), "alive", kDeadline, AfterSend::shut_down_write).data,
            "alive");
}

TEST(Reload, AddsAndRemovesListenersLiveWithoutCuttingTheirConnections) {
  EchoBackend a;
  const auto first = free_port();
  auto second = free_port();
  while (second == first) second = free_port();  // two binds to port 0 may get the same port
  auto listen = [](std::initializer_list<std::uint16_t> ports) {
    std::string s = "listen: [";
    for (auto p : ports) s += "\"127.0.0.1:" + std::to_string(p) + "\",";
    s.back() = ']';
    return s + "\n";
  };
  const std::string target = "targets: [\"" + to_string(a.endpoint()) + "\"]\n";
  TempDir dir;
  const auto config = dir.write("config.yaml", listen({first}) + target);
  ChildProcess lb(APILB_BINARY, {"run", "--config", config.string(), "--admin", ""});
  ASSERT_TRUE(lb.wait_for_log("listening on", kDeadline)) << lb.log();
  ASSERT_TRUE(wait_until([&] { return port_accepts(loopback(first)); }, kDeadline)) << lb.log();
  Held via_first(loopback(first));
  ASSERT_TRUE(via_first.echo("first")) << lb.log();

  dir.write("config.yaml", listen({first, second}) + target);
  lb.send_signal(SIGHUP);
  ASSERT_TRUE(wait_until([&] { return port_accepts(loopback(second)); }, kDeadline)) << lb.log();

  dir.write("config.yaml", listen({second}) + target);
  lb.send_signal(SIGHUP);
  ASSERT_TRUE(wait_until([&] { return !port_accepts(loopback(first)); }, kDeadline)) << lb.log();
  EXPECT_TRUE(via_first.echo("established connections stay")) << lb.log();
  EXPECT_EQ(fetch(loopback(second), "second", kDeadline, AfterSend::shut_down_write).data, "second")
      << lb.log();
}

}  // namespace
}  // namespace apilb::test
