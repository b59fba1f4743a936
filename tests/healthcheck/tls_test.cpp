// The SAN matching rules that check-san applies, as Go clients do; no I/O.
#include "healthcheck/tls.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace apilb::healthcheck {
namespace {

using Sans = std::vector<std::string>;

bool san_covers(const Sans& sans, std::string_view host) {
  return covering_san(sans, host).has_value();
}

TEST(CoveringSan, AnIpIsCoveredByTheEqualIpSan) {
  const Sans sans{"DNS:kubernetes", "IP:10.96.0.1", "IP:10.0.0.100"};
  EXPECT_EQ(covering_san(sans, "10.0.0.100"), "IP:10.0.0.100");
  EXPECT_EQ(covering_san(sans, "10.0.0.10"), std::nullopt);
  EXPECT_TRUE(san_covers(sans, "10.96.0.1"));
}

TEST(CoveringSan, ComparesIpv6AsBytesNotAsText) {
  const Sans sans{"IP:fd00:0:0:0:0:0:0:10"};
  EXPECT_EQ(covering_san(sans, "fd00::10"), "IP:fd00:0:0:0:0:0:0:10");
  EXPECT_EQ(covering_san(sans, "FD00:0::0:10"), "IP:fd00:0:0:0:0:0:0:10");
  EXPECT_EQ(covering_san(sans, "[fd00::10]"), "IP:fd00:0:0:0:0:0:0:10");
  EXPECT_FALSE(san_covers(sans, "fd00::1"));
}

TEST(CoveringSan, TreatsAnIpv4MappedAddressAsTheIpv4AddressLikeGoDoes) {
  EXPECT_TRUE(san_covers({"IP:10.0.0.1"}, "::ffff:10.0.0.1"));
  EXPECT_TRUE(san_covers({"IP:::ffff:10.0.0.1"}, "10.0.0.1"));
  EXPECT_FALSE(san_covers({"IP:10.0.0.1"}, "::10.0.0.1"));  // IPv4-compatible is another address
}

TEST(CoveringSan, NeverMatchesAnIpAgainstADnsSan) {
  EXPECT_FALSE(san_covers({"DNS:10.0.0.1"}, "10.0.0.1"));
  EXPECT_FALSE(san_covers({"DNS:*.0.0.1"}, "10.0.0.1"));
}

TEST(CoveringSan, NeverMatchesANameAgainstAnIpSanOrAnotherKind) {
  EXPECT_FALSE(
      san_covers({"IP:10.0.0.1", "email:lb.example.com", "URI:lb.example.com"}, "lb.example.com"));
}

TEST(CoveringSan, MatchesNamesIgnoringCaseAndATrailingDot) {
  const Sans sans{"DNS:LB.Example.com"};
  EXPECT_EQ(covering_san(sans, "lb.example.COM"), "DNS:LB.Example.com");
  EXPECT_TRUE(san_covers(sans, "lb.example.com."));
  EXPECT_FALSE(san_covers(sans, "lb2.example.com"));
}

TEST(CoveringSan, ReturnsTheFirstSanThatCovers) {
  EXPECT_EQ(covering_san({"DNS:*.example.com", "DNS:lb.example.com"}, "lb.example.com"),
            "DNS:*.example.com");
}

TEST(CoveringSan, NoSansCoverNothing) {
  EXPECT_FALSE(san_covers({}, "10.0.0.1"));
  EXPECT_FALSE(san_covers({}, "lb.example.com"));
}

TEST(DnsNameMatches, AWildcardStandsForExactlyOneLeftMostLabel) {
  EXPECT_TRUE(dns_name_matches("*.example.com", "lb.example.com"));
  EXPECT_TRUE(dns_name_matches("*.Example.com.", "LB.example.com"));
  EXPECT_FALSE(dns_name_matches("*.example.com", "example.com"));
  EXPECT_FALSE(dns_name_matches("*.example.com", "a.lb.example.com"));
  EXPECT_FALSE(dns_name_matches("*.example.com", ".example.com"));
  EXPECT_FALSE(dns_name_matches("*.example.com", "lb.example.org"));
}

TEST(DnsNameMatches, RefusesWildcardsAnywhereButTheWholeLeftMostLabel) {
  EXPECT_FALSE(dns_name_matches("lb*.example.com", "lb1.example.com"));
  EXPECT_FALSE(dns_name_matches("*lb.example.com", "xlb.example.com"));
  EXPECT_FALSE(dns_name_matches("lb.*.com", "lb.example.com"));
  EXPECT_FALSE(dns_name_matches("*.*.com", "lb.example.com"));
  EXPECT_FALSE(dns_name_matches("*", "localhost"));
  EXPECT_FALSE(dns_name_matches("*.", "localhost"));
  EXPECT_FALSE(dns_name_matches("lb.example.com", "*.example.com"));  // a literal "*" in the name
}

TEST(DnsNameMatches, EmptyNeverMatches) {
  EXPECT_FALSE(dns_name_matches("", ""));
  EXPECT_FALSE(dns_name_matches("example.com", ""));
  EXPECT_FALSE(dns_name_matches("", "example.com"));
}

}  // namespace
}  // namespace apilb::healthcheck
