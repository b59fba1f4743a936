#include "discovery/slice.hpp"

#include <gtest/gtest.h>

#include <string>
#include <string_view>
#include <vector>

namespace apilb::discovery {
namespace {

constexpr std::string_view kSource = "GET /apis/discovery.k8s.io/v1/endpointslices";

Endpoint endpoint(std::string host, std::uint16_t port = 6443, bool ready = true,
                  bool terminating = false) {
  return {config::Address{std::move(host), port}, ready, terminating};
}

SliceList list(std::string_view json) {
  auto result = parse_slice_list(json, "https", kSource);
  if (!result) {
    ADD_FAILURE() << result.error().message() << "\nin:\n" << json;
    return {};
  }
  return *result;
}

// One slice in a list, its name "kubernetes".
std::vector<Endpoint> slice(std::string_view slice_json) {
  const SliceList parsed = list(R"({"kind":"EndpointSliceList","metadata":{"resourceVersion":"1"},
                                    "items":[)" +
                                std::string(slice_json) + "]}");
  const auto it = parsed.slices.find("kubernetes");
  if (it == parsed.slices.end()) {
    ADD_FAILURE() << "no slice named kubernetes in:\n" << slice_json;
    return {};
  }
  return it->second;
}

std::string list_error(std::string_view json) {
  auto result = parse_slice_list(json, "https", kSource);
  if (result) {
    ADD_FAILURE() << "parsed, expected an error:\n" << json;
    return {};
  }
  EXPECT_EQ(result.error().file, kSource);
  EXPECT_EQ(result.error().line, 0);
  return result.error().message();
}

// The error for a list of one slice: `slice_json`.
std::string slice_error(std::string_view slice_json) {
  return list_error(R"({"metadata":{"resourceVersion":"1"},"items":[)" + std::string(slice_json) +
                    "]}");
}

WatchEvent event(std::string_view json) {
  auto result = parse_watch_event(json, "https", kSource);
  if (!result) {
    ADD_FAILURE() << result.error().message() << "\nin:\n" << json;
    return {};
  }
  return *result;
}

std::string event_error(std::string_view json) {
  auto result = parse_watch_event(json, "https", kSource);
  if (result) {
    ADD_FAILURE() << "parsed, expected an error:\n" << json;
    return {};
  }
  return result.error().message();
}

std::string error_of(std::string_view field, std::string_view reason) {
  return std::string(kSource) + ": " + std::string(field) + ": " + std::string(reason);
}

// As the apiserver serves it (kubectl get endpointslices -o json, trimmed).
constexpr std::string_view kList = R"({
  "kind": "EndpointSliceList",
  "apiVersion": "discovery.k8s.io/v1",
  "metadata": {"resourceVersion": "12"},
  "items": [
    {
      "metadata": {"name": "kubernetes", "namespace": "default", "resourceVersion": "11",
                   "labels": {"kubernetes.io/service-name": "kubernetes"}},
      "addressType": "IPv4",
      "endpoints": [
        {"addresses": ["10.0.0.11"], "conditions": {"ready": true, "serving": true,
                                                    "terminating": false}},
        {"addresses": ["10.0.0.12"], "conditions": {"ready": false}, "nodeName": "master-2"}
      ],
      "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}]
    },
    {
      "metadata": {"name": "kubernetes-v6", "resourceVersion": "10"},
      "addressType": "IPv6",
      "endpoints": [{"addresses": ["fd00::11"], "conditions": {}}],
      "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}]
    }
  ]
}
)";

// ---- The list ----

TEST(ParseSliceList, ReadsTheResourceVersionAndEverySlice) {
  const SliceList parsed = list(kList);
  EXPECT_EQ(parsed.resource_version, "12");
  ASSERT_EQ(parsed.slices.size(), 2u);
  EXPECT_EQ(parsed.slices.at("kubernetes"),
            (std::vector<Endpoint>{endpoint("10.0.0.11"), endpoint("10.0.0.12", 6443, false)}));
  EXPECT_EQ(parsed.slices.at("kubernetes-v6"), std::vector<Endpoint>{endpoint("fd00::11")});
}

TEST(ParseSliceList, ReadsAnEmptyListAndNullItems) {
  EXPECT_TRUE(list(R"({"metadata":{"resourceVersion":"3"},"items":[]})").slices.empty());
  const SliceList null_items = list(R"({"metadata":{"resourceVersion":"3"},"items":null})");
  EXPECT_EQ(null_items.resource_version, "3");
  EXPECT_TRUE(null_items.slices.empty());
}

TEST(ParseSliceList, ReadyDefaultsToTrueAndTerminatingToFalse) {
  const auto endpoints = slice(R"({"metadata":{"name":"kubernetes"},"addressType":"IPv4",
    "ports":[{"name":"https","port":6443}],
    "endpoints":[
      {"addresses":["10.0.0.1"]},
      {"addresses":["10.0.0.2"],"conditions":null},
      {"addresses":["10.0.0.3"],"conditions":{"ready":null,"terminating":null}},
      {"addresses":["10.0.0.4"],"conditions":{"ready":false,"serving":true,"terminating":true}}
    ]})");
  EXPECT_EQ(endpoints,
            (std::vector<Endpoint>{endpoint("10.0.0.1"), endpoint("10.0.0.2"), endpoint("10.0.0.3"),
                                   endpoint("10.0.0.4", 6443, false, true)}));
}

TEST(ParseSliceList, UsesTheOnlyPortWhateverItsName) {
  EXPECT_EQ(slice(R"({"metadata":{"name":"kubernetes"},"addressType":"IPv4",
                      "endpoints":[{"addresses":["10.0.0.1"]}],
                      "ports":[{"name":"api","port":8443,"protocol":"TCP"}]})"),
            std::vector<Endpoint>{endpoint("10.0.0.1", 8443)});
  EXPECT_EQ(slice(R"({"metadata":{"name":"kubernetes"},"addressType":"IPv4",
                      "endpoints":[{"addresses":["10.0.0.1"]}], "ports":[{"port":8443}]})"),
            std::vector<Endpoint>{endpoint("10.0.0.1", 8443)});
}

TEST(ParseSliceList, PicksThePortNamedPortNameAmongSeveral) {
  EXPECT_EQ(slice(R"({"metadata":{"name":"kubernetes"},"addressType":"IPv4",
                      "endpoints":[{"addresses":["10.0.0.1"]}],
                      "ports":[{"name":"metrics","port":9100},{"name":"https","port":6443}]})"),
            std::vector<Endpoint>{endpoint("10.0.0.1", 6443)});
}

TEST(ParseSliceList, ASliceWithoutAUsablePortContributesNothing) {
  for (const std::string_view ports : {
           R"("ports":[{"name":"metrics","port":9100},{"name":"grpc","port":9000}])",
           R"("ports":[])", R"("ports":null)",
           R"("ports":[{"name":"https","port":6443,"protocol":"UDP"}])",
           R"("ports":[{"name":"https","port":null}])",  // "all ports": nothing to connect to
       }) {
    const auto endpoints = slice(R"({"metadata":{"name":"kubernetes"},"addressType":"IPv4",
                                     "endpoints":[{"addresses":["10.0.0.1"]}],)" +
                                 std::string(ports) + "}");
    EXPECT_TRUE(endpoints.empty()) << ports;
  }
}

TEST(ParseSliceList, SkipsFqdnSlicesWithoutReadingTheirAddresses) {
  const SliceList parsed = list(R"({"metadata":{"resourceVersion":"1"},"items":[
    {"metadata":{"name":"kubernetes"},"addressType":"FQDN",
     "endpoints":[{"addresses":["master-1.example"]}],"ports":[{"name":"https","port":6443}]}]})");
  ASSERT_EQ(parsed.slices.count("kubernetes"), 1u);
  EXPECT_TRUE(parsed.slices.at("kubernetes").empty());
}

TEST(ParseSliceList, NullOrMissingEndpointsAreNone) {
  EXPECT_TRUE(slice(R"({"metadata":{"name":"kubernetes"},"addressType":"IPv4","endpoints":null,
                        "ports":[{"name":"https","port":6443}]})")
                  .empty());
  EXPECT_TRUE(slice(R"({"metadata":{"name":"kubernetes"},"addressType":"IPv4",
                        "ports":[{"name":"https","port":6443}]})")
                  .empty());
}

TEST(ParseSliceList, StoresIPv6WithoutBracketsInCanonicalForm) {
  const auto endpoints = slice(R"({"metadata":{"name":"kubernetes"},"addressType":"IPv6",
    "endpoints":[{"addresses":["fd00:0:0::11"]},{"addresses":["FD00::12"]}],
    "ports":[{"name":"https","port":6443}]})");
  ASSERT_EQ(endpoints, (std::vector<Endpoint>{endpoint("fd00::11"), endpoint("fd00::12")}));
  EXPECT_EQ(endpoints[0].address.to_string(), "[fd00::11]:6443");
}

TEST(ParseSliceList, TakesTheFirstOfAnEndpointsFungibleAddresses) {
  EXPECT_EQ(slice(R"({"metadata":{"name":"kubernetes"},"addressType":"IPv4",
                      "endpoints":[{"addresses":["10.0.0.1","10.0.0.2"]}],
                      "ports":[{"name":"https","port":6443}]})"),
            std::vector<Endpoint>{endpoint("10.0.0.1")});
}

// ---- Errors name the JSON path ----

TEST(ParseSliceList, NamesTheAddressThatIsNotAnIpAddress) {
  EXPECT_EQ(slice_error(R"({"metadata":{"name":"kubernetes"},"addressType":"IPv4",
    "endpoints":[{"addresses":["10.0.0.1"]},{"addresses":["x"]}],"ports":[{"port":6443}]})"),
            error_of("items[0].endpoints[1].addresses[0]", "\"x\" is not an IP address"));
  EXPECT_EQ(slice_error(R"({"metadata":{"name":"kubernetes"},"addressType":"IPv4",
    "endpoints":[{"addresses":["fd00::1"]}],"ports":[{"port":6443}]})"),
            error_of("items[0].endpoints[0].addresses[0]",
                     "\"fd00::1\" is not an IPv4 address, as the slice's addressType says"));
  EXPECT_EQ(slice_error(R"({"metadata":{"name":"kubernetes"},"addressType":"IPv6",
    "endpoints":[{"addresses":["[fd00::1]"]}],"ports":[{"port":6443}]})"),
            error_of("items[0].endpoints[0].addresses[0]", "\"[fd00::1]\" is not an IP address"));
  EXPECT_EQ(
      slice_error(R"({"metadata":{"name":"kubernetes"},"addressType":"IPv4",
    "endpoints":[{"addresses":["10.0.0.1\u0000"]}],"ports":[{"port":6443}]})"),
      error_of("items[0].endpoints[0].addresses[0]", "\"10.0.0.1\\u0000\" is not an IP address"));
}

TEST(ParseSliceList, NamesTheFieldOfTheWrongType) {
  const std::string head = R"({"metadata":{"name":"kubernetes"},"addressType":"IPv4",)";
  EXPECT_EQ(slice_error(head + R"("endpoints":"10.0.0.1"})"),
            error_of("items[0].endpoints", "expected an array, got a string"));
  EXPECT_EQ(slice_error(head + R"("endpoints":[["10.0.0.1"]]})"),
            error_of("items[0].endpoints[0]", "expected an object, got an array"));
  EXPECT_EQ(slice_error(head + R"("endpoints":[{"addresses":[11]}]})"),
            error_of("items[0].endpoints[0].addresses[0]", "expected a string, got a number"));
  EXPECT_EQ(slice_error(head + R"("endpoints":[{"addresses":[]}]})"),
            error_of("items[0].endpoints[0].addresses", "missing"));
  EXPECT_EQ(
      slice_error(head + R"("endpoints":[{"addresses":["10.0.0.1"],
                                               "conditions":{"ready":"yes"}}]})"),
      error_of("items[0].endpoints[0].conditions.ready", "expected true or false, got \"yes\""));
  EXPECT_EQ(slice_error(head + R"("endpoints":[{"addresses":["10.0.0.1"],"conditions":[]}]})"),
            error_of("items[0].endpoints[0].conditions", "expected an object, got an array"));
  EXPECT_EQ(slice_error(head + R"("ports":[{"name":"https","port":70000}]})"),
            error_of("items[0].ports[0].port", "must be between 1 and 65535, got 70000"));
  EXPECT_EQ(slice_error(head + R"("ports":[{"name":"https","port":-1}]})"),
            error_of("items[0].ports[0].port", "must be between 1 and 65535, got -1"));
  EXPECT_EQ(slice_error(head + R"("ports":[{"name":"https","port":6443.5}]})"),
            error_of("items[0].ports[0].port", "6443.5 is not a whole number"));
  EXPECT_EQ(slice_error(head + R"("ports":[{"name":"https","port":"6443"}]})"),
            error_of("items[0].ports[0].port", "\"6443\" is not a whole number"));
  EXPECT_EQ(slice_error(head + R"("ports":[{"name":7,"port":6443}]})"),
            error_of("items[0].ports[0].name", "expected a string, got a number"));
  EXPECT_EQ(slice_error(R"({"metadata":{"name":"kubernetes"}})"),
            error_of("items[0].addressType", "missing"));
  EXPECT_EQ(slice_error(R"({"metadata":{},"addressType":"IPv4"})"),
            error_of("items[0].metadata.name", "missing"));
  EXPECT_EQ(slice_error(R"({"addressType":"IPv4"})"), error_of("items[0].metadata", "missing"));
  EXPECT_EQ(slice_error(R"({"kind":"Endpoints","metadata":{"name":"kubernetes"}})"),
            error_of("items[0].kind", "\"Endpoints\" is not EndpointSlice"));
}

TEST(ParseSliceList, RefusesAListWithoutAResourceVersionOrWithTwoSlicesOfOneName) {
  EXPECT_EQ(list_error(R"({"kind":"EndpointSliceList","metadata":{},"items":[]})"),
            error_of("metadata.resourceVersion", "missing"));
  EXPECT_EQ(list_error(R"({"items":[]})"), error_of("metadata", "missing"));
  EXPECT_EQ(list_error(R"({"kind":"Status","metadata":{"resourceVersion":"1"}})"),
            error_of("kind", "\"Status\" is not EndpointSliceList"));
  EXPECT_EQ(list_error(R"({"metadata":{"resourceVersion":"1"},"items":[
      {"metadata":{"name":"a"},"addressType":"FQDN"},
      {"metadata":{"name":"b"},"addressType":"FQDN"},
      {"metadata":{"name":"a"},"addressType":"FQDN"}]})"),
            error_of("items[2].metadata.name", "\"a\" is already items[0]"));
}

TEST(ParseSliceList, SaysWhereTheJsonIsInvalid) {
  EXPECT_EQ(list_error("[1, 2]"), std::string(kSource) + ": expected an object, got an array");
  const std::string truncated = list_error(R"({"metadata":)");
  EXPECT_TRUE(truncated.starts_with(std::string(kSource) + ": invalid JSON: parse error at line 1"))
      << truncated;
  const std::string bad_utf8 = list_error("{\"metadata\":{\"resourceVersion\":\"\xff\"}}");
  EXPECT_NE(bad_utf8.find("invalid JSON"), std::string::npos) << bad_utf8;
}

// Every prefix of a valid document, and each value replaced by one of every other JSON type: an
// error or a result, never a crash (the sanitizers in the asan build make sure of that).
TEST(ParseSliceList, SurvivesTruncatedAndRetypedInput) {
  const std::string text(kList);
  for (std::size_t n = 0; n < text.rfind('}'); ++n) {
    const auto result = parse_slice_list(std::string_view(text).substr(0, n), "https", kSource);
    EXPECT_FALSE(result) << "prefix of " << n << " bytes parsed";
  }
  int errors = 0;
  for (const std::string_view other :
       {"null", "true", "-7", "1e999", "\"s\"", "[]", "{}", "[[]]"}) {
    // Replace each scalar or opening bracket after a ':' or '[' with `other`, one at a time.
    for (std::size_t at = 0; at < text.size(); ++at) {
      if (text[at] != ':' && text[at] != '[') continue;
      std::size_t start = text.find_first_not_of(" \n", at + 1);
      std::size_t end = start;
      if (text[start] == '"') {
        end = text.find('"', start + 1) + 1;
      } else if (text[start] == '{' || text[start] == '[') {
        int depth = 0;
        for (end = start; end < text.size(); ++end) {
          if (text[end] == '{' || text[end] == '[') ++depth;
          if ((text[end] == '}' || text[end] == ']') && --depth == 0) break;
        }
        ++end;
      } else {
        end = text.find_first_of(",}]", start);
      }
      const std::string mutated = text.substr(0, start) + std::string(other) + text.substr(end);
      if (!parse_slice_list(mutated, "https", kSource)) ++errors;
      if (!parse_watch_event(R"({"type":"ADDED","object":)" + mutated + "}", "https", kSource))
        ++errors;
    }
  }
  EXPECT_GT(errors, 0);
}

TEST(ParseSliceList, SurvivesDeeplyNestedInput) {
  constexpr std::size_t kDepth = 100000;
  EXPECT_EQ(list_error(std::string(kDepth, '[') + std::string(kDepth, ']')),
            std::string(kSource) + ": expected an object, got an array");
  EXPECT_FALSE(parse_watch_event(R"({"type":"ADDED","object":)" + std::string(kDepth, '['), "https",
                                 kSource));
}

// ---- Watch events ----

TEST(ParseWatchEvent, ReadsAnAddedSlice) {
  const WatchEvent e = event(R"({"type":"ADDED","object":{"kind":"EndpointSlice",
    "apiVersion":"discovery.k8s.io/v1","metadata":{"name":"kubernetes","resourceVersion":"12"},
    "addressType":"IPv4","endpoints":[{"addresses":["10.0.0.11"],
    "conditions":{"ready":true,"serving":true,"terminating":false}}],
    "ports":[{"name":"https","port":6443,"protocol":"TCP"}]}})"
                             "\n");  // as the stream ends each line
  EXPECT_EQ(e.type, WatchEvent::Type::added);
  EXPECT_EQ(e.name, "kubernetes");
  EXPECT_EQ(e.resource_version, "12");
  EXPECT_EQ(e.endpoints, std::vector<Endpoint>{endpoint("10.0.0.11")});
}

TEST(ParseWatchEvent, ReadsAModifiedSlice) {
  const WatchEvent e = event(R"({"type":"MODIFIED","object":{"metadata":{"name":"kubernetes",
    "resourceVersion":"13"},"addressType":"IPv4","endpoints":[{"addresses":["10.0.0.11"],
    "conditions":{"ready":true,"terminating":true}}],"ports":[{"name":"https","port":6443}]}})");
  EXPECT_EQ(e.type, WatchEvent::Type::modified);
  EXPECT_EQ(e.resource_version, "13");
  EXPECT_EQ(e.endpoints, std::vector<Endpoint>{endpoint("10.0.0.11", 6443, true, true)});
}

TEST(ParseWatchEvent, ReadsOnlyTheNameOfADeletedSlice) {
  const WatchEvent e = event(R"({"type":"DELETED","object":{"kind":"EndpointSlice",
    "metadata":{"name":"kubernetes-abcde","resourceVersion":"14"}}})");
  EXPECT_EQ(e.type, WatchEvent::Type::deleted);
  EXPECT_EQ(e.name, "kubernetes-abcde");
  EXPECT_EQ(e.resource_version, "14");
  EXPECT_TRUE(e.endpoints.empty());
}

TEST(ParseWatchEvent, ReadsTheResourceVersionOfABookmark) {
  const WatchEvent e = event(R"({"type":"BOOKMARK","object":{"kind":"EndpointSlice",
    "apiVersion":"discovery.k8s.io/v1","metadata":{"resourceVersion":"15",
    "annotations":{"k8s.io/initial-events-end":"true"}}}})");
  EXPECT_EQ(e.type, WatchEvent::Type::bookmark);
  EXPECT_EQ(e.resource_version, "15");
  EXPECT_EQ(e.name, "");
}

TEST(ParseWatchEvent, ReadsTheStatusOfAnError) {
  const WatchEvent e = event(R"json({"type":"ERROR","object":{"kind":"Status","apiVersion":"v1",
    "metadata":{},"status":"Failure","message":"too old resource version: 5 (10)",
    "reason":"Expired","code":410}})json");
  EXPECT_EQ(e.type, WatchEvent::Type::error);
  EXPECT_EQ(e.code, 410);
  EXPECT_EQ(e.message, "too old resource version: 5 (10)");
  EXPECT_EQ(e.resource_version, "");
  EXPECT_EQ(event(R"({"type":"ERROR","object":{"kind":"Status","reason":"Expired"}})").message,
            "Expired");
}

TEST(ParseWatchEvent, NamesTheFieldThatIsWrong) {
  EXPECT_EQ(event_error(R"({"type":"SYNC","object":{}})"),
            error_of("type", "\"SYNC\" is not ADDED, MODIFIED, DELETED, BOOKMARK or ERROR"));
  EXPECT_EQ(event_error(R"({"object":{}})"), error_of("type", "missing"));
  EXPECT_EQ(event_error(R"({"type":"ADDED"})"), error_of("object", "missing"));
  EXPECT_EQ(event_error(R"({"type":"ADDED","object":"x"})"),
            error_of("object", "expected an object, got a string"));
  EXPECT_EQ(event_error(R"({"type":"ADDED","object":{"metadata":{"name":"kubernetes"},
    "addressType":"IPv4","endpoints":[{"addresses":["10.0.0.300"]}]}})"),
            error_of("object.endpoints[0].addresses[0]", "\"10.0.0.300\" is not an IP address"));
  EXPECT_EQ(event_error(R"({"type":"BOOKMARK","object":{"metadata":{}}})"),
            error_of("object.metadata.resourceVersion", "missing"));
  EXPECT_EQ(event_error(R"({"type":"ERROR","object":{"kind":"Status","code":"410"}})"),
            error_of("object.code", "\"410\" is not a whole number"));
  EXPECT_EQ(event_error(R"({"type":"ADDED","object":{}} {"type":"ADDED","object":{}})")
                .find("invalid JSON"),
            std::string(kSource).size() + 2);
}

// ---- apply() and merge() ----

WatchEvent slice_event(WatchEvent::Type type, std::string name, std::vector<Endpoint> endpoints) {
  WatchEvent e;
  e.type = type;
  e.name = std::move(name);
  e.endpoints = std::move(endpoints);
  return e;
}

TEST(Apply, AddsReplacesAndDeletesSlicesAndSaysWhetherAnythingChanged) {
  using Type = WatchEvent::Type;
  Slices slices;
  EXPECT_TRUE(discovery::apply(slices, slice_event(Type::added, "a", {endpoint("10.0.0.1")})));
  EXPECT_EQ(slices.at("a"), std::vector<Endpoint>{endpoint("10.0.0.1")});
  EXPECT_FALSE(discovery::apply(slices, slice_event(Type::modified, "a", {endpoint("10.0.0.1")})));
  EXPECT_TRUE(discovery::apply(
      slices, slice_event(Type::modified, "a", {endpoint("10.0.0.1", 6443, false)})));
  EXPECT_EQ(slices.at("a"), std::vector<Endpoint>{endpoint("10.0.0.1", 6443, false)});
  // A MODIFIED for a slice never seen (the watch started after it was added) adds it.
  EXPECT_TRUE(discovery::apply(slices, slice_event(Type::modified, "b", {endpoint("10.0.0.2")})));
  EXPECT_EQ(slices.size(), 2u);
  EXPECT_TRUE(discovery::apply(slices, slice_event(Type::deleted, "a", {})));
  EXPECT_EQ(slices.count("a"), 0u);
  EXPECT_FALSE(discovery::apply(slices, slice_event(Type::deleted, "a", {})));
  EXPECT_FALSE(discovery::apply(slices, slice_event(Type::bookmark, "b", {})));
  EXPECT_FALSE(discovery::apply(slices, slice_event(Type::error, "b", {})));
  EXPECT_EQ(slices.at("b"), std::vector<Endpoint>{endpoint("10.0.0.2")});
}

TEST(Apply, TakesParsedEvents) {
  Slices slices = list(kList).slices;
  EXPECT_TRUE(discovery::apply(
      slices, event(R"({"type":"DELETED","object":{"metadata":{"name":"kubernetes-v6"}}})")));
  EXPECT_EQ(merge(slices),
            (std::vector<Endpoint>{endpoint("10.0.0.11"), endpoint("10.0.0.12", 6443, false)}));
}

TEST(Merge, ListsEachAddressOnceInAddressOrder) {
  const Slices slices{
      {"a", {endpoint("fd00::1"), endpoint("10.0.0.11"), endpoint("10.0.0.9")}},
      {"b", {endpoint("10.0.0.11"), endpoint("10.0.0.9", 8443), endpoint("10.0.0.10")}},
  };
  EXPECT_EQ(merge(slices), (std::vector<Endpoint>{endpoint("10.0.0.9"), endpoint("10.0.0.9", 8443),
                                                  endpoint("10.0.0.10"), endpoint("10.0.0.11"),
                                                  endpoint("fd00::1")}));
}

TEST(Merge, AnAddressIsReadyIfAnySliceSaysItIsReadyAndNotTerminating) {
  const Slices slices{
      {"a",
       {endpoint("10.0.0.1", 6443, false), endpoint("10.0.0.2", 6443, true, true),
        endpoint("10.0.0.3", 6443, false)}},
      {"b",
       {endpoint("10.0.0.1", 6443, true), endpoint("10.0.0.2", 6443, false, true),
        endpoint("10.0.0.3", 6443, true, true)}},
  };
  EXPECT_EQ(merge(slices), (std::vector<Endpoint>{endpoint("10.0.0.1", 6443, true, false),
                                                  endpoint("10.0.0.2", 6443, false, true),
                                                  endpoint("10.0.0.3", 6443, false, false)}));
  EXPECT_TRUE(merge(Slices{}).empty());
}

}  // namespace
}  // namespace apilb::discovery
