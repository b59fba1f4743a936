#include "discovery/gate.hpp"

#include <gtest/gtest.h>

#include <set>
#include <string>

namespace apilb::discovery {
namespace {

using namespace std::chrono_literals;
using Clock = Gate::Clock;

Endpoint at(const std::string& host, bool ready = true) {
  return {.address = {host, 6443}, .ready = ready, .terminating = false};
}

// Health as a test sets it: which hosts pass their checks, which another source names too.
struct Health {
  std::set<std::string> up;
  std::set<std::string> elsewhere = {};
  HealthView view() const {
    return {.up = [this](const config::Address& a) { return up.contains(a.host); },
            .elsewhere = [this](const config::Address& a) { return elsewhere.contains(a.host); },
            .up_total = up.size()};
  }
};

std::vector<std::string> hosts(const std::vector<Endpoint>& list) {
  std::vector<std::string> out;
  for (const auto& e : list) out.push_back(e.address.host);
  return out;
}

const Clock::time_point t0{};

TEST(Gate, AppliesAdditionsAndTheFirstListAtOnce) {
  Gate gate(60s);
  Health health;
  auto first = gate.propose({at("10.0.0.2"), at("10.0.0.1")}, health.view(), t0);
  ASSERT_TRUE(first.apply);
  EXPECT_EQ(hosts(*first.apply), (std::vector<std::string>{"10.0.0.1", "10.0.0.2"}));
  EXPECT_TRUE(first.why.empty());
  health.up = {"10.0.0.1", "10.0.0.2"};
  auto more = gate.propose({at("10.0.0.1"), at("10.0.0.2"), at("10.0.0.3")}, health.view(), t0);
  ASSERT_TRUE(more.apply);
  EXPECT_EQ(more.apply->size(), 3u);
  EXPECT_FALSE(gate.holding());
  EXPECT_FALSE(
      gate.propose({at("10.0.0.3"), at("10.0.0.1"), at("10.0.0.2")}, health.view(), t0).apply)
      << "the same list in another order is no change";
}

TEST(Gate, DrainingIsNotRemovalAndAppliesAtOnce) {
  Gate gate(60s, {at("10.0.0.1"), at("10.0.0.2"), at("10.0.0.3")});
  Health health{.up = {"10.0.0.1", "10.0.0.2", "10.0.0.3"}};
  auto d = gate.propose({at("10.0.0.1", false), at("10.0.0.2", false), at("10.0.0.3")},
                        health.view(), t0);
  ASSERT_TRUE(d.apply);
  EXPECT_FALSE((*d.apply)[0].ready);
  EXPECT_FALSE(gate.holding());
}

TEST(Gate, RemovingOneOfThreeHealthyAppliesAtOnce) {
  Gate gate(60s, {at("10.0.0.1"), at("10.0.0.2"), at("10.0.0.3")});
  Health health{.up = {"10.0.0.1", "10.0.0.2", "10.0.0.3"}};
  auto d = gate.propose({at("10.0.0.1"), at("10.0.0.2")}, health.view(), t0);
  ASSERT_TRUE(d.apply);
  EXPECT_EQ(d.apply->size(), 2u);
}

TEST(Gate, RemovingTargetsThatAreDownAppliesAtOnceHoweverMany) {
  Gate gate(60s, {at("10.0.0.1"), at("10.0.0.2"), at("10.0.0.3")});
  Health health{.up = {"10.0.0.1"}};
  auto d = gate.propose({at("10.0.0.1")}, health.view(), t0);
  ASSERT_TRUE(d.apply);
  EXPECT_EQ(hosts(*d.apply), std::vector<std::string>{"10.0.0.1"});
}

TEST(Gate, HoldsBackDroppingTwoOfThreeHealthyThenAppliesAsFarAsHealthAgrees) {
  Gate gate(60s, {at("10.0.0.1"), at("10.0.0.2"), at("10.0.0.3")});
  Health health{.up = {"10.0.0.1", "10.0.0.2", "10.0.0.3"}};
  auto held = gate.propose({at("10.0.0.1")}, health.view(), t0);
  EXPECT_FALSE(held.apply);
  EXPECT_TRUE(held.warn);
  EXPECT_NE(held.why.find("2 of the 3 healthy targets"), std::string::npos) << held.why;
  EXPECT_NE(held.why.find("10.0.0.2:6443, 10.0.0.3:6443"), std::string::npos) << held.why;
  EXPECT_TRUE(gate.holding());
  EXPECT_EQ(gate.held_total(), 1u);

  EXPECT_FALSE(gate.tick(health.view(), t0 + 59s).apply) << "not before confirm_after";
  auto after = gate.tick(health.view(), t0 + 60s);
  EXPECT_FALSE(after.apply) << "both still pass their checks: nothing changes";
  EXPECT_NE(after.why.find("keeping 10.0.0.2:6443, 10.0.0.3:6443"), std::string::npos) << after.why;
  EXPECT_TRUE(gate.tick(health.view(), t0 + 61s).why.empty()) << "said once";

  health.up.erase("10.0.0.2");  // health checks now agree about one of them
  auto one = gate.tick(health.view(), t0 + 62s);
  ASSERT_TRUE(one.apply);
  EXPECT_EQ(hosts(*one.apply), (std::vector<std::string>{"10.0.0.1", "10.0.0.3"}));
  EXPECT_TRUE(gate.holding());

  health.up.erase("10.0.0.3");
  auto both = gate.tick(health.view(), t0 + 63s);
  ASSERT_TRUE(both.apply);
  EXPECT_EQ(hosts(*both.apply), std::vector<std::string>{"10.0.0.1"});
  EXPECT_NE(both.why.find("health checks agree"), std::string::npos) << both.why;
  EXPECT_FALSE(gate.holding());
}

TEST(Gate, HoldsBackAnEmptyListForeverWhileTheTargetsPassTheirChecks) {
  Gate gate(5s, {at("10.0.0.1"), at("10.0.0.2")});
  Health health{.up = {"10.0.0.1", "10.0.0.2"}};
  auto held = gate.propose({}, health.view(), t0);
  EXPECT_FALSE(held.apply);
  EXPECT_NE(held.why.find("remove every discovered target"), std::string::npos) << held.why;
  EXPECT_FALSE(gate.tick(health.view(), t0 + 1h).apply);
  EXPECT_EQ(gate.applied().size(), 2u);
  // The cluster names them again: the hold ends without a change.
  auto back = gate.propose({at("10.0.0.2"), at("10.0.0.1")}, health.view(), t0 + 2h);
  EXPECT_FALSE(back.apply);
  EXPECT_FALSE(gate.holding());
}

TEST(Gate, AnEmptyListOfTargetsThatAreAllDownAppliesAfterConfirmAfter) {
  Gate gate(5s, {at("10.0.0.1")});
  Health health;
  EXPECT_FALSE(gate.propose({}, health.view(), t0).apply);
  auto after = gate.tick(health.view(), t0 + 5s);
  ASSERT_TRUE(after.apply);
  EXPECT_TRUE(after.apply->empty());
}

TEST(Gate, TargetsThatAnotherSourceNamesDoNotCount) {
  Gate gate(60s, {at("10.0.0.1"), at("10.0.0.2"), at("10.0.0.3")});
  Health health{.up = {"10.0.0.1", "10.0.0.2", "10.0.0.3"}, .elsewhere = {"10.0.0.2", "10.0.0.3"}};
  auto d = gate.propose({at("10.0.0.1")}, health.view(), t0);
  ASSERT_TRUE(d.apply) << "10.0.0.2 and .3 stay as targets of the feed: nothing leaves service";
}

TEST(Gate, ANewerSafeListReplacesTheOneHeldBack) {
  Gate gate(60s, {at("10.0.0.1"), at("10.0.0.2"), at("10.0.0.3")});
  Health health{.up = {"10.0.0.1", "10.0.0.2", "10.0.0.3"}};
  EXPECT_FALSE(gate.propose({at("10.0.0.1")}, health.view(), t0).apply);
  auto next = gate.propose({at("10.0.0.1"), at("10.0.0.2"), at("10.0.0.3"), at("10.0.0.4")},
                           health.view(), t0 + 1s);
  ASSERT_TRUE(next.apply);
  EXPECT_EQ(next.apply->size(), 4u);
  EXPECT_FALSE(gate.holding());
  EXPECT_FALSE(gate.tick(health.view(), t0 + 2min).apply);
}

TEST(Gate, ZeroConfirmAfterAppliesAsFarAsHealthAgreesAtOnce) {
  Gate gate(0s, {at("10.0.0.1"), at("10.0.0.2"), at("10.0.0.3"), at("10.0.0.4")});
  Health health{.up = {"10.0.0.1", "10.0.0.2", "10.0.0.3"}};  // 10.0.0.4 is down
  auto d = gate.propose({at("10.0.0.1")}, health.view(), t0);
  ASSERT_TRUE(d.apply);
  EXPECT_EQ(hosts(*d.apply), (std::vector<std::string>{"10.0.0.1", "10.0.0.2", "10.0.0.3"}));
  EXPECT_NE(d.why.find("except 10.0.0.2:6443, 10.0.0.3:6443"), std::string::npos) << d.why;
}

}  // namespace
}  // namespace apilb::discovery
