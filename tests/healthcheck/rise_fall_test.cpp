// Pure tests of the rise/fall hysteresis: no sockets, no clock.
#include "healthcheck/rise_fall.hpp"

#include <gtest/gtest.h>

#include <string>

namespace apilb::healthcheck {
namespace {

// Feeds a sequence like "++-+" and returns the states after each result as "uudu".
std::string run(RiseFall& rf, std::string_view results) {
  std::string states;
  for (char r : results) {
    rf.record(r == '+');
    states += rf.state() == Health::up ? 'u' : rf.state() == Health::down ? 'd' : '?';
  }
  return states;
}

TEST(RiseFall, IsUnknownUntilTheFirstResultWhichDecidesAtOnce) {
  RiseFall up(2, 2), down(2, 2);
  EXPECT_EQ(up.state(), Health::unknown);
  EXPECT_EQ(up.record(true), Transition::went_up);
  EXPECT_EQ(down.record(false), Transition::went_down);
}

TEST(RiseFall, NeedsFallConsecutiveFailuresToGoDown) {
  RiseFall rf(2, 3);
  EXPECT_EQ(run(rf, "+--"), "uuu");
  EXPECT_EQ(rf.record(false), Transition::went_down);
}

TEST(RiseFall, NeedsRiseConsecutivePassesToComeBack) {
  RiseFall rf(3, 2);
  EXPECT_EQ(run(rf, "-++"), "ddd");
  EXPECT_EQ(rf.record(true), Transition::went_up);
}

TEST(RiseFall, AFailureBetweenPassesRestartsTheClimbAfterGoingDown) {
  RiseFall rf(2, 2);
  // Down, one pass, one failure drops back to the bottom: two fresh passes are needed.
  EXPECT_EQ(run(rf, "-+-++"),
            "dddd"
            "u");
}

TEST(RiseFall, APassBetweenFailuresOnlyClimbsOneStepWhileUp) {
  RiseFall rf(2, 3);
  // Up at the top (4); - to 3, + back to 4, -- to 2 (still up), - goes down.
  EXPECT_EQ(run(rf, "+-+--"), "uuuuu");
  EXPECT_EQ(rf.record(false), Transition::went_down);
}

TEST(RiseFall, FlappingEveryOtherCheckNeverLeavesUpWhenFallIsTwo) {
  RiseFall rf(2, 2);
  EXPECT_EQ(run(rf, "+-+-+-+-+-"), "uuuuuuuuuu");
}

TEST(RiseFall, FlappingEveryOtherCheckNeverComesBackWhenRiseIsTwo) {
  RiseFall rf(2, 2);
  EXPECT_EQ(run(rf, "-+-+-+-+-+"), "dddddddddd");
}

TEST(RiseFall, RiseAndFallOfOneFollowEveryResult) {
  RiseFall rf(1, 1);
  EXPECT_EQ(run(rf, "+-+-"), "udud");
}

TEST(RiseFall, ReportsATransitionOnlyOnTheResultThatCrossesTheEdge) {
  RiseFall rf(2, 2);
  EXPECT_EQ(rf.record(true), Transition::went_up);
  EXPECT_EQ(rf.record(true), Transition::none);
  EXPECT_EQ(rf.record(false), Transition::none);
  EXPECT_EQ(rf.record(false), Transition::went_down);
  EXPECT_EQ(rf.record(false), Transition::none);
  EXPECT_EQ(rf.record(true), Transition::none);
  EXPECT_EQ(rf.record(true), Transition::went_up);
}

TEST(RiseFall, IsInTransitionOnlyWhileResultsPointTheOtherWay) {
  RiseFall rf(2, 2);
  EXPECT_FALSE(rf.in_transition());
  rf.record(true);  // top
  EXPECT_FALSE(rf.in_transition());
  rf.record(false);  // one step down, still up
  EXPECT_TRUE(rf.in_transition());
  rf.record(false);  // down, bottom
  EXPECT_FALSE(rf.in_transition());
  rf.record(true);  // one step up, still down
  EXPECT_TRUE(rf.in_transition());
}

}  // namespace
}  // namespace apilb::healthcheck
