// Loopback component tests of the supervisor: real probes against in-process fakes, the control
// io_context run by the test thread until what it waits for has been published.
#include "healthcheck/supervisor.hpp"

#include "tests/support/backends.hpp"

#include <gtest/gtest.h>
#include <boost/asio/io_context.hpp>

#include <optional>

namespace apilb::healthcheck {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using std::chrono::steady_clock;

constexpr auto kDeadline = 10s;

config::Address address_of(const asio::ip::tcp::endpoint& ep) {
  return {ep.address().to_string(), ep.port()};
}

config::Health fast_checks(config::Duration interval = 100ms) {
  config::Health h;
  h.interval = interval;
  h.timeout = std::min<config::Duration>(interval, 300ms);
  h.rise = 2;
  h.fall = 2;
  return h;
}

// A supervisor on an io_context the test runs, recording every published snapshot.
class Harness {
 public:
  explicit Harness(const config::Health& health,
                   config::OnTargetDown on_down = config::OnTargetDown::close)
      : supervisor_(io_.get_executor(), health, on_down, [this](TargetSetPtr set) {
          latest_ = std::move(set);
          ++published_;
        }) {}

  Supervisor& supervisor() { return supervisor_; }
  // Runs the control loop until `pred` holds; false at the deadline.
  bool run_until(const std::function<bool()>& pred,
                 std::chrono::milliseconds deadline = kDeadline) {
    const auto until = steady_clock::now() + deadline;
    while (!pred()) {
      if (steady_clock::now() >= until) return false;
      io_.run_one_for(10ms);
    }
    return true;
  }
  TargetState state(std::size_t config_index) const {
    return supervisor_.status().at(config_index).state;
  }
  const TargetSetPtr& latest() const { return latest_; }
  int published() const { return published_; }

 private:
  asio::io_context io_;
  TargetSetPtr latest_;
  int published_ = 0;
  Supervisor supervisor_;
};

TEST(Supervisor, PublishesNewTargetsAsUnknownThenUpAfterOnePassingCheck) {
  test::EchoBackend backend;
  Harness h(fast_checks());
  h.supervisor().set_targets({{address_of(backend.endpoint())}});
  ASSERT_TRUE(h.latest());
  EXPECT_EQ(h.latest()->targets()[0].state, TargetState::unknown);
  EXPECT_EQ(h.latest()->eligible().size(), 1u);  // usable before its first check
  ASSERT_TRUE(h.run_until([&] { return h.state(0) == TargetState::up; }));
  EXPECT_EQ(h.latest()->targets()[0].state, TargetState::up);
}

TEST(Supervisor, MarksAStoppedBackendDownWithinIntervalTimesFall) {
  test::EchoBackend alive, dying;
  Harness h(fast_checks(200ms));
  h.supervisor().set_targets({{address_of(alive.endpoint())}, {address_of(dying.endpoint())}});
  ASSERT_TRUE(
      h.run_until([&] { return h.state(0) == TargetState::up && h.state(1) == TargetState::up; }));

  dying.stop();
  const auto stopped = steady_clock::now();
  ASSERT_TRUE(h.run_until([&] { return h.state(1) == TargetState::down; }));
  const auto detected = steady_clock::now() - stopped;
  std::printf("detection after crash: %lld ms (interval 200ms, fall 2)\n",
              static_cast<long long>(
                  std::chrono::duration_cast<std::chrono::milliseconds>(detected).count()));
  EXPECT_LE(detected, 2 * 200ms + 500ms);
  EXPECT_EQ(h.supervisor().status()[1].last.reason, "connection refused");
  // Only the live target takes new connections. Its host refused the connect, so it resets what
  // the dead process held by itself: the balancer leaves those connections alone.
  ASSERT_EQ(h.latest()->eligible().size(), 1u);
  EXPECT_EQ(h.latest()->targets()[h.latest()->eligible()[0]].name,
            address_of(alive.endpoint()).to_string());
  EXPECT_FALSE(h.latest()->must_close(h.supervisor().status()[1].stats.get()));
  // A connect that times out (no host answers any more) closes them after all.
  h.supervisor().report_connect_failure(h.supervisor().status()[1].stats.get(), "connect timeout");
  EXPECT_TRUE(h.latest()->must_close(h.supervisor().status()[1].stats.get()));
}

// A silent target fails each probe only at the timeout. With timeout == interval, probes taken one
// after another would need interval + fall x timeout (400 + 3 x 400 = 1600 ms here); overlapping
// ones need interval + (fall - 1) x fast interval + timeout (400 + 2 x 100 + 400 = 1000 ms).
TEST(Supervisor, OverlapsProbesSoASilentTargetIsDownBeforeFallTimeouts) {
  auto backend = std::make_optional<test::EchoBackend>();
  const auto endpoint = backend->endpoint();
  config::Health health = fast_checks(400ms);
  health.timeout = 400ms;
  health.fall = 3;
  Harness h(health);
  h.supervisor().set_targets({{address_of(endpoint)}});
  ASSERT_TRUE(h.run_until([&] { return h.state(0) == TargetState::up; }));

  backend.reset();
  const test::BlackholeTarget silent(endpoint);  // the same port: now SYNs go unanswered
  const auto silenced = steady_clock::now();
  ASSERT_TRUE(h.run_until([&] { return h.state(0) == TargetState::down; }));
  const auto detected = steady_clock::now() - silenced;
  std::printf("detection of a silent target: %lld ms (interval 400ms, timeout 400ms, fall 3)\n",
              static_cast<long long>(
                  std::chrono::duration_cast<std::chrono::milliseconds>(detected).count()));
  EXPECT_EQ(h.supervisor().status()[0].last.reason, "timeout after 400ms");
  EXPECT_LT(detected, 1300ms) << "probes should overlap; one after another they take 1600 ms";
}

// Probes a silent target gets in `window` once it has settled down: each probe is one connect
// (one SYN; no retransmission within a timeout under the kernel's 1 s initial RTO).
std::uint64_t probes_while_down(const config::Health& health, std::chrono::milliseconds window) {
  auto backend = std::make_optional<test::EchoBackend>();
  const auto endpoint = backend->endpoint();
  Harness h(health);
  h.supervisor().set_targets({{address_of(endpoint)}});
  EXPECT_TRUE(h.run_until([&] { return h.state(0) == TargetState::up; }));
  backend.reset();
  const test::BlackholeTarget silent(endpoint);
  EXPECT_TRUE(h.run_until([&] { return h.state(0) == TargetState::down; }));
  // Let the probes still in flight from the transition end (each within the timeout).
  h.run_until([] { return false; }, std::chrono::milliseconds(health.timeout) + 50ms);
  const std::uint64_t before = h.supervisor().status()[0].checks.count;
  const auto end = steady_clock::now() + window;
  h.run_until([&] { return steady_clock::now() >= end; }, window + 1s);
  return h.supervisor().status()[0].checks.count - before;
}

// Overlapping and faster probes belong to a change that is building. A blackholed master that is
// down already gets one probe at a time, once per down_interval: before this it got one every
// fast interval (4x the configured rate), two in flight.
TEST(Supervisor, ProbesASettledDownTargetOncePerDownInterval) {
  config::Health health = fast_checks(300ms);
  health.timeout = 300ms;
  const auto window = 3000ms;
  const std::uint64_t at_interval = probes_while_down(health, window);
  std::printf("probes of a settled-down silent target in %lld ms: %llu (interval 300ms)\n",
              static_cast<long long>(window.count()), static_cast<unsigned long long>(at_interval));
  EXPECT_LE(at_interval, 11u);  // 3000 / 300, plus one at an edge; fast probes would be ~30
  EXPECT_GE(at_interval, 8u);

  health.down_interval = 1s;
  const std::uint64_t slower = probes_while_down(health, window);
  std::printf("... with down_interval 1s: %llu\n", static_cast<unsigned long long>(slower));
  EXPECT_LE(slower, 4u);
  EXPECT_GE(slower, 2u);
}

TEST(Supervisor, ASettledDownTargetComesBackWithoutWaitingAnotherDownInterval) {
  auto backend = std::make_optional<test::EchoBackend>();
  const auto endpoint = backend->endpoint();
  config::Health health = fast_checks(100ms);
  health.down_interval = 1s;
  Harness h(health);
  h.supervisor().set_targets({{address_of(endpoint)}});
  ASSERT_TRUE(h.run_until([&] { return h.state(0) == TargetState::up; }));
  backend.reset();
  ASSERT_TRUE(h.run_until([&] { return h.state(0) == TargetState::down; }));
  backend.emplace(endpoint);
  const auto back = steady_clock::now();
  ASSERT_TRUE(h.run_until([&] { return h.state(0) == TargetState::up; }));
  // One down_interval until the first pass at most, then rise - 1 fast probes, not rise intervals.
  EXPECT_LT(steady_clock::now() - back, 1s + 500ms);
}

TEST(Supervisor, ComesBackAfterRisePassingChecks) {
  auto backend = std::make_optional<test::EchoBackend>();
  const auto endpoint = backend->endpoint();
  Harness h(fast_checks());
  h.supervisor().set_targets({{address_of(endpoint)}});
  ASSERT_TRUE(h.run_until([&] { return h.state(0) == TargetState::up; }));
  backend.reset();
  ASSERT_TRUE(h.run_until([&] { return h.state(0) == TargetState::down; }));
  EXPECT_TRUE(h.latest()->panic());

  backend.emplace(endpoint);  // the same port again
  ASSERT_TRUE(h.run_until([&] { return h.state(0) == TargetState::up; }));
  EXPECT_FALSE(h.latest()->panic());
}

TEST(Supervisor, CountsAPassiveFailureAndProbesAgainAtOnce) {
  test::EchoBackend backend;
  Harness h(fast_checks(60s));  // active checks alone would take two minutes
  h.supervisor().set_targets({{address_of(backend.endpoint())}});
  ASSERT_TRUE(h.run_until([&] { return h.state(0) == TargetState::up; }));

  backend.stop();
  const auto stats = h.supervisor().status()[0].stats;
  h.supervisor().report_connect_failure(stats.get(), "connect timeout");
  // One passive failure (fall 2) plus the immediate probe's refusal: down in well under a second.
  ASSERT_TRUE(h.run_until([&] { return h.state(0) == TargetState::down; }, 2s));
}

TEST(Supervisor, IgnoresAPassiveFailureOfATargetItNoLongerChecks) {
  test::EchoBackend backend;
  Harness h(fast_checks());
  h.supervisor().set_targets({{address_of(backend.endpoint())}});
  TargetStats stranger;
  const int before = h.published();
  h.supervisor().report_connect_failure(&stranger, "connection refused");
  EXPECT_EQ(h.published(), before);
}

TEST(Supervisor, KeepsStateAndCountersOfTargetsThatStayInTheList) {
  test::EchoBackend a, b;
  Harness h(fast_checks());
  h.supervisor().set_targets({{address_of(a.endpoint())}});
  ASSERT_TRUE(h.run_until([&] { return h.state(0) == TargetState::up; }));
  const auto stats_a = h.supervisor().status()[0].stats;

  h.supervisor().set_targets(
      {{address_of(a.endpoint())}, {address_of(b.endpoint()), Origin::file}});
  EXPECT_EQ(h.state(0), TargetState::up);
  EXPECT_EQ(h.supervisor().status()[0].stats, stats_a);
  EXPECT_EQ(h.state(1), TargetState::unknown);
  EXPECT_EQ(h.supervisor().status()[1].origin, Origin::file);
  // The new one is not used until checked: one target is already up.
  EXPECT_EQ(h.latest()->eligible().size(), 1u);
  ASSERT_TRUE(h.run_until([&] { return h.state(1) == TargetState::up; }));
  EXPECT_EQ(h.latest()->eligible().size(), 2u);

  h.supervisor().set_targets({{address_of(b.endpoint()), Origin::file}});
  ASSERT_EQ(h.latest()->targets().size(), 1u);
  EXPECT_EQ(h.latest()->targets()[0].origin, Origin::file);
}

TEST(Supervisor, DrainFlagStopsNewConnectionsButClosesNothing) {
  test::EchoBackend a, b;
  Harness h(fast_checks());
  h.supervisor().set_targets({{address_of(a.endpoint())}, {address_of(b.endpoint())}});
  ASSERT_TRUE(
      h.run_until([&] { return h.state(0) == TargetState::up && h.state(1) == TargetState::up; }));
  h.supervisor().set_targets(
      {{address_of(a.endpoint())}, {address_of(b.endpoint()), Origin::config, true}});
  EXPECT_EQ(h.state(1), TargetState::draining);
  EXPECT_EQ(h.latest()->eligible().size(), 1u);
  EXPECT_FALSE(h.latest()->must_close(h.supervisor().status()[1].stats.get()));
}

TEST(Supervisor, PanicModeTriesFirstMasterLastWhenItIsNotATarget) {
  test::RefusingTarget dead_one, dead_two;
  test::EchoBackend first_master;
  const auto first = address_of(first_master.endpoint());
  Harness h(fast_checks());
  h.supervisor().set_targets({{address_of(dead_one.endpoint())}, {address_of(dead_two.endpoint())}},
                             first);
  ASSERT_TRUE(h.run_until([&] { return h.latest()->panic(); }));
  const auto& set = *h.latest();
  ASSERT_EQ(set.eligible().size(), 3u);
  const Target& last = set.targets()[set.eligible().back()];
  EXPECT_EQ(last.name, first.to_string());
  EXPECT_EQ(last.origin, Origin::fallback);
  EXPECT_FALSE(set.must_close(last.stats.get()));
  EXPECT_EQ(h.supervisor().status().size(), 2u) << "the last resort is not checked";
}

TEST(Supervisor, FirstMasterIsNoExtraTargetOutsidePanicModeOrWhenItIsATarget) {
  test::EchoBackend alive;
  test::RefusingTarget elsewhere;
  Harness h(fast_checks());
  h.supervisor().set_targets({{address_of(alive.endpoint())}}, address_of(elsewhere.endpoint()));
  ASSERT_TRUE(h.run_until([&] { return h.state(0) == TargetState::up; }));
  EXPECT_EQ(h.latest()->targets().size(), 1u);

  test::RefusingTarget dead;
  h.supervisor().set_targets({{address_of(dead.endpoint())}}, address_of(dead.endpoint()));
  ASSERT_TRUE(h.run_until([&] { return h.latest()->panic(); }));
  EXPECT_EQ(h.latest()->eligible().size(), 1u) << "first_master is already a target";
}

TEST(Supervisor, PanicModePrefersTheMostRecentlyHealthyTarget) {
  auto first = std::make_optional<test::EchoBackend>();
  auto second = std::make_optional<test::EchoBackend>();
  const auto second_address = address_of(second->endpoint());
  Harness h(fast_checks());
  h.supervisor().set_targets({{address_of(first->endpoint())}, {second_address}});
  ASSERT_TRUE(
      h.run_until([&] { return h.state(0) == TargetState::up && h.state(1) == TargetState::up; }));
  first.reset();
  ASSERT_TRUE(h.run_until([&] { return h.state(0) == TargetState::down; }));
  second.reset();
  ASSERT_TRUE(h.run_until([&] { return h.state(1) == TargetState::down; }));
  ASSERT_TRUE(h.latest()->panic());
  EXPECT_EQ(h.latest()->targets()[0].name, second_address.to_string());
}

TEST(Supervisor, StartsTargetsInTheStateAPreviousProcessHandedOver) {
  test::EchoBackend up_one, also_up;
  test::RefusingTarget down_one;
  Harness h(fast_checks(5s));  // no check comes before the asserts below
  TargetSpec up{address_of(up_one.endpoint())}, down{address_of(down_one.endpoint())},
      fresh{address_of(also_up.endpoint())};
  up.inherited = TargetState::up;
  down.inherited = TargetState::down;
  h.supervisor().set_targets({up, down, fresh});
  EXPECT_EQ(h.latest()->targets()[0].state, TargetState::up);
  EXPECT_EQ(h.latest()->targets()[1].state, TargetState::down);
  EXPECT_EQ(h.latest()->targets()[2].state, TargetState::unknown);
  // Only the up one takes connections: an unknown target is eligible only while none is up.
  ASSERT_EQ(h.latest()->eligible().size(), 1u);
  EXPECT_EQ(h.latest()->eligible()[0], 0u);
}

TEST(TargetSet, OnAnotherPortKeepsHostsStatesAndOrderWithTheirOwnCounters) {
  auto stats = std::make_shared<TargetStats>();
  std::vector<Target> targets(2);
  targets[0].address = {"10.0.0.1", 6443};
  targets[0].endpoint = {asio::ip::make_address("10.0.0.1"), 6443};
  targets[0].state = TargetState::down;
  targets[1].address = {"10.0.0.2", 6443};
  targets[1].endpoint = {asio::ip::make_address("10.0.0.2"), 6443};
  targets[1].state = TargetState::up;
  const TargetSet main(7, targets, true);
  std::vector<std::string> asked;
  const auto moved = main.on_port(9345, [&](const std::string& name) {
    asked.push_back(name);
    return stats;
  });
  EXPECT_EQ(moved->generation(), 7u);
  ASSERT_EQ(moved->targets().size(), 2u);
  EXPECT_EQ(moved->targets()[0].name, "10.0.0.1:9345");
  EXPECT_EQ(moved->targets()[0].endpoint.port(), 9345);
  EXPECT_EQ(moved->targets()[0].state, TargetState::down);
  EXPECT_EQ(moved->targets()[1].state, TargetState::up);
  EXPECT_EQ(asked, (std::vector<std::string>{"10.0.0.1:9345", "10.0.0.2:9345"}));
  ASSERT_EQ(moved->eligible().size(), 1u);
  EXPECT_TRUE(moved->must_close(stats.get()));  // the down one's counters are the shared `stats`

  // In panic mode the last resort moves too, and stays last.
  targets[1].state = TargetState::down;
  Target last;
  last.address = {"10.0.0.9", 6443};
  last.endpoint = {asio::ip::make_address("10.0.0.9"), 6443};
  const TargetSet panic(8, targets, true, &last);
  const auto moved_panic =
      panic.on_port(9345, [](const std::string&) { return std::make_shared<TargetStats>(); });
  EXPECT_TRUE(moved_panic->panic());
  ASSERT_EQ(moved_panic->targets().size(), 3u);
  EXPECT_EQ(moved_panic->targets()[2].name, "10.0.0.9:9345");
  EXPECT_EQ(moved_panic->eligible().size(), 3u);
}

}  // namespace
}  // namespace apilb::healthcheck
