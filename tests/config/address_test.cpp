#include "config/address.hpp"

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

namespace apilb::config {
namespace {

// The reason parse_address gives for `text`, or a failure when it parses.
std::string rejection(std::string_view text) {
  std::string why;
  if (const auto address = parse_address(text, &why)) {
    ADD_FAILURE() << "\"" << text << "\" parsed as " << address->to_string();
    return {};
  }
  return why;
}

TEST(ParseAddress, ReadsIpv4WithPort) {
  EXPECT_EQ(parse_address("10.0.0.11:443"), (Address{"10.0.0.11", 443}));
}

TEST(ParseAddress, UsesPort6443WhenNoneIsWritten) {
  EXPECT_EQ(parse_address("10.0.0.11"), (Address{"10.0.0.11", 6443}));
  EXPECT_EQ(parse_address("master-1.example"), (Address{"master-1.example", 6443}));
  EXPECT_EQ(parse_address("[fd00::11]"), (Address{"fd00::11", 6443}));
}

TEST(ParseAddress, UsesTheGivenDefaultPort) {
  EXPECT_EQ(parse_address("localhost", nullptr, 80), (Address{"localhost", 80}));
  EXPECT_EQ(parse_address("localhost:81", nullptr, 80), (Address{"localhost", 81}));
}

TEST(ParseAddress, RequiresAPortWhenThereIsNoDefault) {
  std::string why;
  EXPECT_EQ(parse_address("10.0.0.11", &why, std::nullopt), std::nullopt);
  EXPECT_EQ(why, "missing port");
  EXPECT_EQ(parse_address("[::1]", &why, std::nullopt), std::nullopt);
  EXPECT_EQ(why, "missing port");
  EXPECT_EQ(parse_address("[::1]:1", &why, std::nullopt), (Address{"::1", 1}));
}

TEST(ParseAddress, ReadsBracketedIpv6) {
  EXPECT_EQ(parse_address("[::1]:6443"), (Address{"::1", 6443}));
  EXPECT_EQ(parse_address("[fd00::11]:65535"), (Address{"fd00::11", 65535}));
  EXPECT_EQ(parse_address("[::ffff:10.0.0.1]:1"), (Address{"::ffff:10.0.0.1", 1}));
}

TEST(ParseAddress, ReadsHostNames) {
  EXPECT_EQ(parse_address("master-1.example:443"), (Address{"master-1.example", 443}));
  EXPECT_EQ(parse_address("LocalHost"), (Address{"LocalHost", 6443}));
  EXPECT_EQ(parse_address("xn--bcher-kva.example"), (Address{"xn--bcher-kva.example", 6443}));
  EXPECT_EQ(parse_address("1a.example"), (Address{"1a.example", 6443}));
  EXPECT_EQ(parse_address(std::string(63, 'a') + ".example"),
            (Address{std::string(63, 'a') + ".example", 6443}));
}

TEST(ParseAddress, RejectsMalformedFormsWithAReason) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", "empty address"},
      {":6443", "missing host"},
      {"master-1:", "missing port"},
      {"master-1:0", "port 0 is out of range"},
      {"master-1:65536", "port 65536 is out of range"},
      {"10.0.0.1:99999", "port 99999 is out of range"},
      {"master-1:99999999999999999999999", "port 99999999999999999999999 is out of range"},
      {"master-1:https", "port \"https\" is not a number"},
      {"master-1:-1", "port \"-1\" is not a number"},
      {"master-1:+80", "port \"+80\" is not a number"},
      {"master-1: 80", "port \" 80\" is not a number"},
      {"::1", "an IPv6 address must be in brackets, as in [fd00::1]:6443"},
      {"fd00::1:6443", "an IPv6 address must be in brackets, as in [fd00::1]:6443"},
      {"[::1", "missing ']' after the IPv6 address"},
      {"[::1]6443", "unexpected \"6443\" after ']'"},
      {"[::1]:", "missing port"},
      {"[]:6443", "\"\" is not an IPv6 address"},
      {"[10.0.0.1]:6443", "\"10.0.0.1\" is not an IPv6 address"},
      {"[master-1]:6443", "\"master-1\" is not an IPv6 address"},
      {"[zz::1]:6443", "\"zz::1\" is not an IPv6 address"},
      {"[fe80::1%eth0]:6443", "\"fe80::1%eth0\" is not an IPv6 address"},
      {"master_1", "\"master_1\" is not a valid host name"},
      {"-master", "\"-master\" is not a valid host name"},
      {"master-.example", "\"master-.example\" is not a valid host name"},
      {"master..example", "\"master..example\" is not a valid host name"},
      {".example", "\".example\" is not a valid host name"},
      {"master.example.", "\"master.example.\" is not a valid host name"},
      {"mas ter", "\"mas ter\" is not a valid host name"},
      {std::string(64, 'a'), "\"" + std::string(64, 'a') + "\" is not a valid host name"},
      {"master.123", "\"master.123\" is not a valid host name"},
      {"999.1.1.1", "\"999.1.1.1\" is not a valid IPv4 address"},
      {"10.0.1", "\"10.0.1\" is not a valid IPv4 address"},
      {"1.2.3.4.5:80", "\"1.2.3.4.5\" is not a valid IPv4 address"},
      {"010.0.0.1", "\"010.0.0.1\" is not a valid IPv4 address"},
  };
  for (const auto& [text, reason] : cases) {
    SCOPED_TRACE(text);
    EXPECT_EQ(rejection(text), reason);
  }
}

TEST(ParseAddress, WorksWithoutAReasonOut) {
  EXPECT_EQ(parse_address("master-1:0"), std::nullopt);
  EXPECT_EQ(parse_listen_address("localhost:1"), std::nullopt);
}

TEST(ParseAddress, RoundTripsThroughToString) {
  for (const auto* text :
       {"10.0.0.11:6443", "[::1]:6443", "[fd00::11]:1", "master-1.example:443"}) {
    const auto address = parse_address(text);
    ASSERT_TRUE(address) << text;
    EXPECT_EQ(address->to_string(), text);
  }
}

TEST(ParseListenAddress, AcceptsIpLiteralsWithAPort) {
  EXPECT_EQ(parse_listen_address("0.0.0.0:6443"), (Address{"0.0.0.0", 6443}));
  EXPECT_EQ(parse_listen_address("[::]:7443"), (Address{"::", 7443}));
}

TEST(ParseListenAddress, RefusesHostNamesAndMissingPorts) {
  std::string why;
  EXPECT_EQ(parse_listen_address("localhost:6443", &why), std::nullopt);
  EXPECT_EQ(why, "needs an IP address to listen on, not a host name");
  EXPECT_EQ(parse_listen_address("0.0.0.0", &why), std::nullopt);
  EXPECT_EQ(why, "missing port");
  EXPECT_EQ(parse_listen_address("0.0.0.0:70000", &why), std::nullopt);
  EXPECT_EQ(why, "port 70000 is out of range");
}

TEST(ParseListenAddress, AcceptsPortZeroForAKernelChosenPort) {
  EXPECT_EQ(parse_listen_address("127.0.0.1:0"), (Address{"127.0.0.1", 0}));
}

TEST(AddressToString, BracketsIpv6Only) {
  EXPECT_EQ((Address{"10.0.0.11", 6443}).to_string(), "10.0.0.11:6443");
  EXPECT_EQ((Address{"::1", 6443}).to_string(), "[::1]:6443");
  EXPECT_EQ((Address{"master-1", 443}).to_string(), "master-1:443");
  EXPECT_TRUE((Address{"::1", 1}).is_ipv6());
  EXPECT_FALSE((Address{"10.0.0.1", 1}).is_ipv6());
}

TEST(IsIpLiteral, AcceptsIpv4AndIpv6) {
  for (const auto* host : {"10.0.0.1", "0.0.0.0", "::", "::1", "fd00::11", "::ffff:10.0.0.1",
                           "1111:2222:3333:4444:5555:6666:7777:8888"})
    EXPECT_TRUE(is_ip_literal(host)) << host;
}

TEST(IsIpLiteral, RefusesNamesBracketsPortsAndOddForms) {
  for (const auto* host :
       {"", "localhost", "10.0.1", "010.0.0.1", "[::1]", "10.0.0.1:80", "fe80::1%eth0", "::1 "})
    EXPECT_FALSE(is_ip_literal(host)) << host;
  EXPECT_FALSE(is_ip_literal(std::string_view("10.0.0.1\0x", 10)));
  EXPECT_FALSE(is_ip_literal(std::string(100, '1')));
}

}  // namespace
}  // namespace apilb::config
