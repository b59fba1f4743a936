#include "config/duration.hpp"

#include <gtest/gtest.h>

namespace apilb::config {
namespace {

using namespace std::chrono_literals;

TEST(ParseDuration, ReadsEachUnit) {
  EXPECT_EQ(parse_duration("500ms"), Duration(500ms));
  EXPECT_EQ(parse_duration("2s"), Duration(2s));
  EXPECT_EQ(parse_duration("1m"), Duration(1min));
  EXPECT_EQ(parse_duration("1h"), Duration(1h));
}

TEST(ParseDuration, ReadsCompoundFormsFromLargestUnitToSmallest) {
  EXPECT_EQ(parse_duration("1m30s"), Duration(90s));
  EXPECT_EQ(parse_duration("2s500ms"), Duration(2500ms));
  EXPECT_EQ(parse_duration("1h2m3s4ms"), Duration(1h + 2min + 3s + 4ms));
  EXPECT_EQ(parse_duration("1h30s"), Duration(1h + 30s));
  EXPECT_EQ(parse_duration("90s"), Duration(90s));
}

TEST(ParseDuration, ReadsZeroWithOrWithoutAUnit) {
  EXPECT_EQ(parse_duration("0"), Duration::zero());
  EXPECT_EQ(parse_duration("0s"), Duration::zero());
  EXPECT_EQ(parse_duration("0ms"), Duration::zero());
}

TEST(ParseDuration, RejectsMalformedText) {
  for (const auto* text :
       {"",      "2",    "2x",    "s",    "ms", "1.5s", "-1s", "+1s",  "1 s", " 1s",  "1s ",
        "30s1m", "1s1s", "1ms1s", "1m30", "1d", "1us",  "1S",  "1sec", "00",  "0x10s"})
    EXPECT_EQ(parse_duration(text), std::nullopt) << '"' << text << '"';
}

TEST(ParseDuration, RejectsValuesThatOverflow) {
  EXPECT_EQ(parse_duration("9223372036854775807ms"), Duration::max());
  EXPECT_EQ(parse_duration("9223372036854775808ms"), std::nullopt);
  EXPECT_EQ(parse_duration("18446744073709551616ms"), std::nullopt);
  EXPECT_EQ(parse_duration("2562047788016h"), std::nullopt);
  EXPECT_EQ(parse_duration("2562047788015h30m"), std::nullopt);
}

TEST(FormatDuration, SplitsWholeSecondsIntoHoursMinutesAndSeconds) {
  EXPECT_EQ(format_duration(2s), "2s");
  EXPECT_EQ(format_duration(1min), "1m");
  EXPECT_EQ(format_duration(1h), "1h");
  EXPECT_EQ(format_duration(90s), "1m30s");
  EXPECT_EQ(format_duration(1h + 1min + 1s), "1h1m1s");
  EXPECT_EQ(format_duration(1h + 5s), "1h5s");
  EXPECT_EQ(format_duration(24h), "24h");
}

TEST(FormatDuration, WritesAnythingElseInMilliseconds) {
  EXPECT_EQ(format_duration(1ms), "1ms");
  EXPECT_EQ(format_duration(1500ms), "1500ms");
  EXPECT_EQ(format_duration(61500ms), "61500ms");
}

TEST(FormatDuration, WritesZeroAsZeroSeconds) {
  EXPECT_EQ(format_duration(Duration::zero()), "0s");
}

TEST(FormatDuration, WritesNegativeValuesWithASign) {
  EXPECT_EQ(format_duration(-2s), "-2s");
  EXPECT_EQ(format_duration(Duration::min()), "-9223372036854775808ms");
}

TEST(FormatDuration, IsReadBackExactlyByParseDuration) {
  for (const Duration d : {Duration(0), Duration(1), Duration(999), Duration(1000), Duration(61001),
                           Duration(3'600'000), Duration(3'723'000), Duration::max()})
    EXPECT_EQ(parse_duration(format_duration(d)), d) << format_duration(d);
}

}  // namespace
}  // namespace apilb::config
