// Pure tests of target choice: no sockets, no event loop.
#include "lb/balance.hpp"

#include <gtest/gtest.h>

#include <map>

namespace apilb::lb {
namespace {

using healthcheck::Target;
using healthcheck::TargetSet;
using healthcheck::TargetState;

std::vector<Target> targets(std::initializer_list<TargetState> states) {
  std::vector<Target> out;
  std::uint16_t port = 6443;
  for (TargetState s : states) {
    Target t;
    t.address = {"10.0.0.1", port++};
    t.name = t.address.to_string();
    t.state = s;
    out.push_back(std::move(t));
  }
  return out;
}

TEST(Balancer, RoundRobinVisitsEveryEligibleTargetInTurn) {
  TargetSet set(1, targets({TargetState::up, TargetState::down, TargetState::up}), true);
  Balancer b(config::Balance::round_robin);
  std::map<std::uint32_t, int> picks;
  for (int i = 0; i < 10; ++i) ++picks[*b.pick(set, {})];
  EXPECT_EQ(picks.size(), 2u);
  EXPECT_EQ(picks[0], 5);
  EXPECT_EQ(picks[2], 5);
}

TEST(Balancer, LeastConnectionsPicksTheLowestActiveCount) {
  TargetSet set(1, targets({TargetState::up, TargetState::up, TargetState::up}), true);
  set.targets()[0].stats->active = 5;
  set.targets()[1].stats->active = 2;
  set.targets()[2].stats->active = 7;
  Balancer b(config::Balance::least_connections);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(b.pick(set, {}), 1u);
}

TEST(Balancer, LeastConnectionsSpreadsTiesInsteadOfPilingOnTheFirst) {
  TargetSet set(1, targets({TargetState::up, TargetState::up, TargetState::up}), true);
  Balancer b(config::Balance::least_connections);
  std::map<std::uint32_t, int> picks;
  for (int i = 0; i < 9; ++i) ++picks[*b.pick(set, {})];
  EXPECT_EQ(picks.size(), 3u);
}

TEST(Balancer, RandomTwoNeverPicksTheStrictlyMostLoadedOfThree) {
  TargetSet set(1, targets({TargetState::up, TargetState::up, TargetState::up}), true);
  set.targets()[0].stats->active = 1;
  set.targets()[1].stats->active = 9;
  set.targets()[2].stats->active = 1;
  Balancer b(config::Balance::random_two, 7);
  for (int i = 0; i < 200; ++i) EXPECT_NE(b.pick(set, {}), 1u);
}

TEST(Balancer, SkipsTargetsAlreadyTriedAndGivesUpWhenAllWere) {
  for (auto policy : {config::Balance::round_robin, config::Balance::least_connections,
                      config::Balance::random_two}) {
    TargetSet set(1, targets({TargetState::up, TargetState::up}), true);
    Balancer b(policy);
    Tried tried;
    const auto first = b.pick(set, tried);
    ASSERT_TRUE(first);
    tried.add(*first);
    const auto second = b.pick(set, tried);
    ASSERT_TRUE(second);
    EXPECT_NE(*second, *first);
    tried.add(*second);
    EXPECT_FALSE(b.pick(set, tried));
  }
}

TEST(Balancer, UsesUncheckedTargetsWhileNoneIsKnownUp) {
  TargetSet set(1, targets({TargetState::unknown, TargetState::down}), true);
  EXPECT_FALSE(set.panic());
  Balancer b(config::Balance::round_robin);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(b.pick(set, {}), 0u);
}

TEST(Balancer, PanicModeTriesEveryTargetInPreferenceOrder) {
  TargetSet set(1, targets({TargetState::down, TargetState::down, TargetState::draining}), true);
  EXPECT_TRUE(set.panic());
  Balancer b(config::Balance::least_connections);
  Tried tried;
  for (std::uint32_t expected = 0; expected < 3; ++expected) {
    const auto pick = b.pick(set, tried);
    ASSERT_TRUE(pick);
    EXPECT_EQ(*pick, expected);
    tried.add(*pick);
  }
}

TEST(TargetSet, ClosesConnectionsOfDownTargetsOnlyOutsidePanic) {
  TargetSet normal(1, targets({TargetState::up, TargetState::down}), true);
  EXPECT_FALSE(normal.must_close(normal.targets()[0].stats.get()));
  EXPECT_TRUE(normal.must_close(normal.targets()[1].stats.get()));

  TargetSet keep(2, targets({TargetState::up, TargetState::down}), false);
  EXPECT_FALSE(keep.must_close(keep.targets()[1].stats.get()));

  TargetSet panic(3, targets({TargetState::down, TargetState::down}), true);
  EXPECT_FALSE(panic.must_close(panic.targets()[0].stats.get()));

  // A refusing host resets the connections of a dead process itself.
  auto refusing = targets({TargetState::up, TargetState::down});
  refusing[1].refused = true;
  TargetSet refused(4, std::move(refusing), true);
  EXPECT_FALSE(refused.must_close(refused.targets()[1].stats.get()));
}

}  // namespace
}  // namespace apilb::lb
