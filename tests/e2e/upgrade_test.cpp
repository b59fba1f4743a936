// `apiserver-lb upgrade` end to end: the running process hands its listening sockets to a new one
// and drains, under continuous load (new connections and long-lived streams), 200 times in a row;
// failed upgrades leave the old process serving; health state and the last good feed carry over.
#include "tests/e2e/installer.hpp"
#include "tests/e2e/streams.hpp"

#include <poll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <thread>

namespace apilb::test {
namespace {

// Orphaned descendants (an old process's successor, once the old one exits) become this
// process's children, so their exit status can be read.
void become_subreaper() { ::prctl(PR_SET_CHILD_SUBREAPER, 1); }

// The exit status of `pid`, a descendant that is (or will become) our child, within `deadline`.
std::optional<int> wait_descendant(pid_t pid, std::chrono::milliseconds deadline) {
  std::optional<int> code;
  wait_until(
      [&] {
        int status = 0;
        if (::waitpid(pid, &status, WNOHANG) != pid) return false;
        code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        return true;
      },
      deadline, 10ms);
  return code;
}

struct Upgraded {
  int exit_code = -1;
  pid_t pid = 0;  // the new process, on success
  std::string output;
};

Upgraded upgrade(const Installer& installer, std::vector<std::string> extra = {}) {
  std::vector<std::string> args{"upgrade", "--socket", installer.path("upgrade.sock").string()};
  args.insert(args.end(), extra.begin(), extra.end());
  ChildProcess p(APILB_BINARY, args);
  Upgraded u;
  u.exit_code = p.wait_exit(60s).value_or(-1);
  u.output = p.log();
  std::smatch m;
  if (std::regex_search(u.output, m, std::regex(R"(upgraded: pid (\d+))"))) u.pid = std::stoi(m[1]);
  return u;
}

std::string upgrade_config(const Installer& installer, const std::string& extra = "") {
  return "upgrade: { socket: " + installer.path("upgrade.sock").string() + " }\nthreads: 2\n" +
         extra;
}

// An installer's apiserver-lb with an upgrade socket in its temp dir and `feed` in its feed.
std::unique_ptr<Installer> start(
    const std::vector<tcp::endpoint>& feed, const std::string& extra = "",
    const std::string& health = "{ interval: 200ms, timeout: 150ms }") {
  auto installer = std::make_unique<Installer>("", false);
  installer->write_config(upgrade_config(*installer, extra), health);
  std::vector<std::string> set{"set"};
  for (const auto& t : feed) set.push_back(to_string(t));
  installer->targets(set);
  installer->start();
  return installer;
}

TEST(Upgrade, TwoHundredUpgradesUnderLoadFailNoConnectionAndCutNoStream) {
  become_subreaper();
  EchoBackend a, b;
  auto owned = start({a.endpoint(), b.endpoint()}, "drain_timeout: 5s\n");
  Installer& installer = *owned;
  ASSERT_TRUE(installer.wait_state(a.endpoint(), "up"));
  ASSERT_TRUE(installer.wait_state(b.endpoint(), "up"));
  const tcp::endpoint lb = installer.lb().endpoint();
  // Enough for a few hundred thousand requests: the hand-overs, not the load's end, bound the run.
  Load load1([lb] { return echo_through(lb); }, 2'000'000),
      load2([lb] { return echo_through(lb); }, 2'000'000);
  Streams streams(lb, 8);
  const int rounds = std::getenv("APILB_UPGRADES") ? std::atoi(std::getenv("APILB_UPGRADES")) : 200;

  std::vector<pid_t> old;  // every process that handed over, the first (our own child) excepted
  pid_t serving = installer.lb().process().pid();
  const auto started = steady_clock::now();
  for (int i = 0; i < rounds; ++i) {
    const Upgraded u = upgrade(installer);
    ASSERT_EQ(u.exit_code, 0) << "upgrade " << i << ": " << u.output
                              << installer.lb().process().log();
    ASSERT_GT(u.pid, 0) << u.output;
    if (i > 0) old.push_back(serving);
    serving = u.pid;
    // Both loads went on through the hand-over: a few requests on the new process each.
    ASSERT_TRUE(load1.more(3));
    ASSERT_TRUE(load2.more(3));
  }
  const auto took = steady_clock::now() - started;
  ASSERT_TRUE(load1.more(10));
  streams.stop();
  load1.stop();
  load2.stop();

  const Latencies latency({&load1, &load2});
  std::printf(
      "%d upgrades in %.1f s: %zu new connections, %zu failed; longest %.1f ms, p99 %.1f "
      "ms, p50 %.2f ms; streams: %d ended on their own, %d cut, %ld echoes\n",
      rounds, std::chrono::duration<double>(took).count(), latency.count,
      load1.failures() + load2.failures(), latency.longest_ms, latency.p99_ms, latency.p50_ms,
      streams.completed(), streams.cut(), streams.echoes());
  EXPECT_EQ(load1.failures() + load2.failures(), 0u);
  EXPECT_EQ(streams.cut(), 0);

  // Every process that handed over drained and exited 0; the first one is our own child.
  EXPECT_EQ(installer.lb().process().wait_exit(kDeadline), 0);
  int clean = 0;
  for (pid_t pid : old) clean += wait_descendant(pid, kDeadline) == 0;
  EXPECT_EQ(clean, static_cast<int>(old.size()));
  ::kill(serving, SIGTERM);
  EXPECT_EQ(wait_descendant(serving, kDeadline), 0);
}

TEST(Upgrade, ABadConfigOrABinaryThatFailsLeavesTheOldProcessServing) {
  become_subreaper();
  EchoBackend a;
  auto owned = start({a.endpoint()});
  Installer& installer = *owned;
  ASSERT_TRUE(installer.wait_state(a.endpoint(), "up"));
  const tcp::endpoint lb = installer.lb().endpoint();
  Load load([lb] { return echo_through(lb); });

  std::ofstream(installer.config(), std::ios::app) << "balance: sideways\n";
  Upgraded u = upgrade(installer);
  EXPECT_EQ(u.exit_code, 1) << u.output;
  EXPECT_NE(u.output.find("config.yaml:"), std::string::npos) << u.output;
  EXPECT_NE(u.output.find("keeps serving"), std::string::npos) << u.output;

  u = upgrade(installer, {"--binary", "/bin/false"});
  EXPECT_EQ(u.exit_code, 1) << u.output;
  EXPECT_NE(u.output.find("exited with status 1 before taking over"), std::string::npos)
      << u.output;

  u = upgrade(installer, {"--binary", "/nonexistent/apiserver-lb"});
  EXPECT_EQ(u.exit_code, 1) << u.output;
  EXPECT_NE(u.output.find("cannot run /nonexistent/apiserver-lb"), std::string::npos) << u.output;

  EXPECT_TRUE(installer.lb().process().running());
  ASSERT_TRUE(load.more(10));
  EXPECT_TRUE(load.stopped_without_failure());

  // Fixed, it goes through.
  installer.write_config(upgrade_config(installer));
  u = upgrade(installer);
  ASSERT_EQ(u.exit_code, 0) << u.output << installer.lb().process().log();
  EXPECT_EQ(installer.lb().process().wait_exit(kDeadline), 0);
  ::kill(u.pid, SIGTERM);
  EXPECT_EQ(wait_descendant(u.pid, kDeadline), 0);
}

TEST(Upgrade, KeepsHealthStateAndTheLastGoodListOfABrokenFeed) {
  become_subreaper();
  EchoBackend a;
  std::optional<EchoBackend> b(std::in_place);
  const tcp::endpoint b_endpoint = b->endpoint();
  // Slow checks: a state the new process shows at once comes from the old one, not from its own.
  auto owned = start({a.endpoint(), b_endpoint}, "", "{ interval: 2s, timeout: 1s }");
  Installer& installer = *owned;
  ASSERT_TRUE(installer.wait_state(a.endpoint(), "up"));
  b.reset();
  ASSERT_TRUE(installer.wait_state(b_endpoint, "down")) << installer.status();
  std::ofstream(installer.feed(), std::ios::trunc) << "targets: [broken\n";
  ASSERT_TRUE(
      installer.lb().process().wait_for_log("keeping the last good list (2 targets)", kDeadline));

  const Upgraded u = upgrade(installer);
  ASSERT_EQ(u.exit_code, 0) << u.output << installer.lb().process().log();
  // The admin API moved with the listeners: this is the new process answering.
  EXPECT_NE(installer.status().find("\"pid\":" + std::to_string(u.pid)), std::string::npos)
      << installer.status();
  EXPECT_EQ(installer.state(a.endpoint()), "up") << installer.status();
  EXPECT_EQ(installer.state(b_endpoint), "down") << installer.status();
  EXPECT_TRUE(installer.lb().process().wait_for_log("starting from the last good list", kDeadline))
      << installer.lb().process().log();
  const std::string through = echo_through(installer.lb().endpoint());
  EXPECT_EQ(through, "ok");
  EXPECT_EQ(installer.lb().process().wait_exit(kDeadline), 0);
  ::kill(u.pid, SIGTERM);
  EXPECT_EQ(wait_descendant(u.pid, kDeadline), 0);
}

// systemd's side of Type=notify, played by the test: READY=1 once listening, and at an upgrade the
// old process names the new one (MAINPID=) so the unit follows it.
TEST(Upgrade, TellsSystemdWhenReadyAndWhichProcessServesAfterAnUpgrade) {
  become_subreaper();
  TempDir dir;
  const auto notify_path = dir / "notify.sock";
  const int notify = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, notify_path.c_str(), sizeof address.sun_path - 1);
  ASSERT_EQ(::bind(notify, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  const auto next_message = [&] {
    pollfd p{notify, POLLIN, 0};
    char buffer[512];
    if (::poll(&p, 1, 10000) != 1) return std::string();
    const auto n = ::recv(notify, buffer, sizeof buffer, 0);
    return n > 0 ? std::string(buffer, static_cast<std::size_t>(n)) : std::string();
  };
  EchoBackend a;
  const std::string socket = (dir / "upgrade.sock").string();
  const auto config = dir.write("config.yaml", "upgrade: { socket: " + socket + " }\n");
  LbProcess lb({"--config", config.string(), "--target", to_string(a.endpoint())}, kDeadline,
               SpawnOptions{}.with_env("NOTIFY_SOCKET=" + notify_path.string()));
  EXPECT_EQ(next_message(), "READY=1");
  ChildProcess upgrade(APILB_BINARY, {"upgrade", "--socket", socket});
  ASSERT_EQ(upgrade.wait_exit(60s), 0) << upgrade.log() << lb.process().log();
  std::smatch m;
  const std::string out = upgrade.log();
  ASSERT_TRUE(std::regex_search(out, m, std::regex(R"(pid (\d+))")));
  EXPECT_EQ(next_message(), "MAINPID=" + std::string(m[1]) + "\nREADY=1");
  EXPECT_EQ(lb.process().wait_exit(kDeadline), 0);
  ::kill(std::stoi(m[1]), SIGTERM);
  EXPECT_EQ(wait_descendant(std::stoi(m[1]), kDeadline), 0);
  ::close(notify);
}

}  // namespace
}  // namespace apilb::test
