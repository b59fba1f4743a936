#include "config/feed.hpp"

#include "config/config.hpp"

#include "tests/support/process.hpp"

#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

namespace apilb::config {
namespace {

Feed parsed(std::string_view yaml) {
  auto result = parse_feed(yaml, "targets.yaml");
  if (!result) {
    ADD_FAILURE() << result.error().message() << "\nin:\n" << yaml;
    return {};
  }
  return *result;
}

std::string parse_error(std::string_view yaml) {
  auto result = parse_feed(yaml, "targets.yaml");
  if (result) {
    ADD_FAILURE() << "parsed, expected an error:\n" << yaml;
    return {};
  }
  return result.error().message();
}

FeedEntry entry(std::string host, std::uint16_t port = 6443, bool drain = false) {
  return {Address{std::move(host), port}, drain};
}

using test::TempDir;

// The directory's entries, sorted.
std::vector<std::string> names(const TempDir& dir) {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(dir.path()))
    out.push_back(e.path().filename().string());
  std::ranges::sort(out);
  return out;
}

std::string contents(const std::filesystem::path& file) {
  std::ifstream in(file);
  return {std::istreambuf_iterator<char>(in), {}};
}

void write(const std::filesystem::path& file, std::string_view text) {
  std::ofstream(file) << text;
}

// ---- Parsing ----

TEST(ParseFeed, ReadsTheProductExample) {
  const Feed feed = parsed(R"(
targets:
  - 10.0.0.11:6443                 # a plain entry
  - { address: 10.0.0.12:6443, drain: true }
)");
  EXPECT_EQ(feed.targets,
            (std::vector<FeedEntry>{entry("10.0.0.11"), entry("10.0.0.12", 6443, true)}));
  EXPECT_TRUE(feed.explicit_list);
}

TEST(ParseFeed, ReadsEveryAddressFormAndFillsInThePort) {
  const Feed feed = parsed(R"(
targets:
  - 10.0.0.11
  - 10.0.0.12:443
  - "[::1]:6443"
  - "[fd00::13]"
  - master-1.example
  - { address: master-2.example:6444 }
  - address: 10.0.0.14
    drain: false
)");
  EXPECT_EQ(feed.targets,
            (std::vector<FeedEntry>{entry("10.0.0.11"), entry("10.0.0.12", 443), entry("::1"),
                                    entry("fd00::13"), entry("master-1.example"),
                                    entry("master-2.example", 6444), entry("10.0.0.14")}));
}

TEST(ParseFeed, ReadsAnEmptyFileAsAnEmptyListThatWasNotWrittenOnPurpose) {
  for (const std::string_view yaml :
       {"", "# nothing yet\n", "---\n", "targets:\n", "targets: ~\n"}) {
    SCOPED_TRACE(yaml);
    const Feed feed = parsed(yaml);
    EXPECT_TRUE(feed.targets.empty());
    EXPECT_FALSE(feed.explicit_list);
  }
  const Feed feed = parsed("targets: []\n");
  EXPECT_TRUE(feed.targets.empty());
  EXPECT_TRUE(feed.explicit_list);
}

TEST(ParseFeed, NamesTheLineAndFieldOfEveryMistake) {
  const std::vector<std::pair<std::string, std::string>> cases{
      {"targets:\n  - 10.0.0.11\n  - 10.0.0.300\n",
       "targets.yaml:3:5: targets[1]: \"10.0.0.300\": \"10.0.0.300\" is not a valid IPv4 address"},
      {"targets:\n  - 10.0.0.11:99999\n",
       "targets.yaml:2:5: targets[0]: \"10.0.0.11:99999\": port 99999 is out of range"},
      {"targets:\n  - 10.0.0.11\n  - 10.0.0.11:6443\n",
       "targets.yaml:3:5: targets[1]: \"10.0.0.11:6443\" is already listed as targets[0]"},
      {"targets:\n  - 10.0.0.11\n  - { address: 10.0.0.11, drain: true }\n",
       "targets.yaml:3:5: targets[1]: \"10.0.0.11:6443\" is already listed as targets[0]"},
      {"targets:\n  - { address: 10.0.0.11, drain: yes }\n",
       "targets.yaml:2:34: targets[0].drain: \"yes\" is not true or false"},
      {"targets:\n  - { address: 10.0.0.11, weight: 2 }\n",
       "targets.yaml:2:27: targets[0]: unknown key \"weight\" (valid: address, drain)"},
      {"targets:\n  - { drain: true }\n", "targets.yaml:2:5: targets[0]: missing address"},
      {"targets:\n  - { address: }\n", "targets.yaml:2:7: targets[0].address: missing value"},
      {"targets:\n  - [10.0.0.11]\n",
       "targets.yaml:2:5: targets[0]: expected a single value, got a list"},
      {"targets: 10.0.0.11\n", "targets.yaml:1:10: targets: expected a list, got a single value"},
      {"target:\n  - 10.0.0.11\n", "targets.yaml:1:1: unknown key \"target\" (valid: targets)"},
      {"targets: []\ntargets: []\n", "targets.yaml:2:1: duplicate key \"targets\""},
      {"- 10.0.0.11\n", "targets.yaml:1:1: expected a map, got a list"},
      {"garbage\n", "targets.yaml:1:1: expected a map, got a single value"},
      {"targets:\n  - { address: 10.0.0.11\n",
       "targets.yaml:3:1: invalid YAML: end of map flow not found"},
  };
  for (const auto& [yaml, message] : cases) {
    SCOPED_TRACE(yaml);
    EXPECT_EQ(parse_error(yaml), message);
  }
}

// ---- Rendering ----

TEST(RenderFeed, WritesPlainEntriesAsScalarsAndDrainedOnesAsMaps) {
  Feed feed;
  feed.targets = {entry("10.0.0.11"), entry("10.0.0.12", 6443, true), entry("::1", 443),
                  entry("fd00::2", 6443, true), entry("master-1.example")};
  EXPECT_EQ(render_feed(feed),
            "# Targets of apiserver-lb: the kube-apiservers to balance across.\n"
            "# Managed by `apiserver-lb targets` and installers; it is replaced as a whole, "
            "atomically.\n"
            "# Entries: ADDR or { address: ADDR, drain: true }; quote IPv6: \"[fd00::1]:6443\".\n"
            "targets:\n"
            "  - 10.0.0.11:6443\n"
            "  - { address: 10.0.0.12:6443, drain: true }\n"
            "  - \"[::1]:443\"\n"
            "  - { address: \"[fd00::2]:6443\", drain: true }\n"
            "  - master-1.example:6443\n");
  EXPECT_EQ(parsed(render_feed(feed)).targets, feed.targets);
}

TEST(RenderFeed, WritesAnEmptyListExplicitly) {
  const std::string text = render_feed(Feed{});
  EXPECT_TRUE(text.ends_with("\ntargets: []\n")) << text;
  const Feed back = parsed(text);
  EXPECT_TRUE(back.targets.empty());
  EXPECT_TRUE(back.explicit_list);
}

// ---- Files ----

TEST(LoadFeed, TellsAMissingFileFromAnInvalidOne) {
  TempDir dir;
  const auto missing = load_feed(dir / "targets.yaml");
  ASSERT_TRUE(missing) << missing.error().message();
  EXPECT_EQ(*missing, std::nullopt);

  write(dir / "targets.yaml", "targets:\n  - 10.0.0.11\n");
  const auto valid = load_feed(dir / "targets.yaml");
  ASSERT_TRUE(valid && *valid);
  EXPECT_EQ((*valid)->targets, std::vector<FeedEntry>{entry("10.0.0.11")});

  write(dir / "targets.yaml", "targets:\n  - 10.0.0.\n");
  const auto invalid = load_feed(dir / "targets.yaml");
  ASSERT_FALSE(invalid);
  EXPECT_EQ(invalid.error().message(), (dir / "targets.yaml").string() +
                                           ":2:5: targets[0]: \"10.0.0.\": \"10.0.0.\" is not a "
                                           "valid IPv4 address");

  const auto unreadable = load_feed(dir / "");  // a directory
  ASSERT_FALSE(unreadable);
  EXPECT_EQ(unreadable.error().line, 0);
  EXPECT_NE(unreadable.error().message().find("cannot read: Is a directory"), std::string::npos)
      << unreadable.error().message();
}

TEST(WriteFeedAtomically, ReplacesTheFileAndLeavesNoTemporaryFile) {
  TempDir dir;
  const auto file = dir / "targets.yaml";
  write(file, "old\n");
  ::chmod(file.c_str(), 0640);
  Feed feed;
  feed.targets = {entry("10.0.0.11"), entry("10.0.0.12", 6443, true)};
  ASSERT_TRUE(write_feed_atomically(file, feed));
  EXPECT_EQ(contents(file), render_feed(feed));
  EXPECT_EQ(names(dir), std::vector<std::string>{"targets.yaml"});
  struct stat st {};
  ASSERT_EQ(::stat(file.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0640u);  // the replaced file's mode is kept
}

TEST(WriteFeedAtomically, NamesThePathWhenItCannotWrite) {
  TempDir dir;
  const auto file = dir / "missing-dir" / "targets.yaml";
  const auto result = write_feed_atomically(file, Feed{});
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().message(), file.string() + ".tmp." + std::to_string(::getpid()) +
                                          ": cannot create: No such file or directory");
}

FeedEdit add(std::string host) {
  return [host](Feed& feed) -> Result<bool> {
    if (feed.find(Address{host, 6443})) return false;
    feed.targets.push_back(entry(host));
    return true;
  };
}

TEST(UpdateFeed, CreatesTheFileAndWritesOnlyWhenSomethingChanged) {
  TempDir dir;
  const auto file = dir / "targets.yaml";
  EXPECT_EQ(update_feed(file, add("10.0.0.11")).value(), true);
  EXPECT_EQ(update_feed(file, add("10.0.0.11")).value(), false);
  EXPECT_EQ(update_feed(file, add("10.0.0.12")).value(), true);
  EXPECT_EQ(load_feed(file).value()->targets,
            (std::vector<FeedEntry>{entry("10.0.0.11"), entry("10.0.0.12")}));
  EXPECT_EQ(names(dir), (std::vector<std::string>{"targets.yaml", "targets.yaml.lock"}));
}

TEST(UpdateFeed, PassesOnTheEditsOwnRefusal) {
  TempDir dir;
  const auto file = dir / "targets.yaml";
  const auto result = update_feed(file, [](Feed&) -> Result<bool> {
    return Error{"", 0, 0, "", "no thanks"};
  });
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().message(), "no thanks");
  EXPECT_FALSE(std::filesystem::exists(file));
}

TEST(UpdateFeed, RefusesToLeaveNoTargetUnlessReplacing) {
  TempDir dir;
  const auto file = dir / "targets.yaml";
  ASSERT_TRUE(update_feed(file, add("10.0.0.11")));
  const std::string before = contents(file);
  const auto clear = [](Feed& feed) -> Result<bool> {
    feed.targets.clear();
    return true;
  };
  const auto refused = update_feed(file, clear);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().message(),
            file.string() +
                ": refusing to remove the last target (`apiserver-lb targets set` with no address "
                "empties the list on purpose)");
  EXPECT_EQ(contents(file), before);

  EXPECT_EQ(update_feed(file, clear, UpdateMode::replace).value(), true);
  const auto emptied = load_feed(file).value();
  ASSERT_TRUE(emptied);
  EXPECT_TRUE(emptied->targets.empty());
  EXPECT_TRUE(emptied->explicit_list);
}

TEST(UpdateFeed, RefusesToOverwriteAFileItCannotParseUnlessReplacing) {
  TempDir dir;
  const auto file = dir / "targets.yaml";
  write(file, "targets:\n  - 10.0.0.11\n  - not an address\n");
  const auto refused = update_feed(file, add("10.0.0.12"));
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().message(),
            file.string() +
                ":3:5: targets[1]: \"not an address\": \"not an address\" is not a valid host name "
                "(nothing changed: fix the file, or replace it with `apiserver-lb targets set`)");
  EXPECT_EQ(contents(file), "targets:\n  - 10.0.0.11\n  - not an address\n");

  const auto replaced = update_feed(
      file,
      [](Feed& feed) -> Result<bool> {
        EXPECT_TRUE(feed.targets.empty());  // the broken file is not read
        feed.targets = {entry("10.0.0.13")};
        return true;
      },
      UpdateMode::replace);
  EXPECT_EQ(replaced.value(), true);
  EXPECT_EQ(load_feed(file).value()->targets, std::vector<FeedEntry>{entry("10.0.0.13")});
}

TEST(UpdateFeed, LosesNoUpdateFromConcurrentWriters) {
  TempDir dir;
  const auto file = dir / "targets.yaml";
  constexpr int kWriters = 16;
  std::vector<std::thread> writers;
  for (int i = 0; i < kWriters; ++i)
    writers.emplace_back(
        [&, i] { EXPECT_TRUE(update_feed(file, add("10.0.1." + std::to_string(i + 1)))); });
  for (auto& w : writers) w.join();
  const auto feed = load_feed(file).value();
  ASSERT_TRUE(feed);
  EXPECT_EQ(feed->targets.size(), static_cast<std::size_t>(kWriters));
  EXPECT_EQ(names(dir), (std::vector<std::string>{"targets.yaml", "targets.yaml.lock"}));
}

// As for the config file (see ParseConfig.RefusesDeeplyNestedYaml...): a feed is written by other
// programs, and a runaway one must not crash the balancer that watches it.
TEST(ParseFeed, RefusesDeeplyNestedYamlWithAnErrorInsteadOfOverflowingTheStack) {
  for (const std::string& yaml :
       {"targets: " + std::string(100000, '['), "targets:\n  - " + std::string(50000, '{')}) {
    const auto result = parse_feed(yaml, "targets.yaml");
    ASSERT_FALSE(result) << yaml.substr(0, 40);
    EXPECT_TRUE(result.error().message().starts_with("targets.yaml:")) << result.error().message();
    EXPECT_NE(result.error().message().find(": invalid YAML: nested too deeply ("),
              std::string::npos)
        << result.error().message();
  }
}

// --- accept_feed: what the balancer takes from a targets_file it has just read -------------------

using Verdict = FeedDecision::Verdict;

Config feed_config(std::vector<Address> targets = {}, std::optional<Address> first_master = {}) {
  Config c;
  c.targets_file = "/etc/apiserver-lb/targets.yaml";
  c.targets = std::move(targets);
  c.first_master = std::move(first_master);
  return c;
}

Result<std::optional<Feed>> file_with(std::string_view yaml) { return std::optional(parsed(yaml)); }
Result<std::optional<Feed>> no_file() { return std::optional<Feed>(); }

TEST(AcceptFeed, TakesAValidFileAtStartAndAChangedOneLater) {
  const Feed current = parsed("targets: [10.0.0.11]");
  const auto at_start = accept_feed({}, file_with("targets: [10.0.0.11]"), feed_config(), true);
  EXPECT_EQ(at_start.verdict, Verdict::take);
  EXPECT_EQ(at_start.next.targets, current.targets);
  const auto changed =
      accept_feed(current, file_with("targets: [10.0.0.11, 10.0.0.12]"), feed_config(), false);
  EXPECT_EQ(changed.verdict, Verdict::take);
  EXPECT_EQ(changed.next.targets.size(), 2u);
}

TEST(AcceptFeed, SameTargetsAfterStartChangeNothing) {
  const Feed current = parsed("targets: [10.0.0.11]");
  EXPECT_EQ(accept_feed(current, file_with("targets:\n  - 10.0.0.11:6443\n"), feed_config(), false)
                .verdict,
            Verdict::unchanged);
  // At start the same list is still taken: nothing was applied yet.
  EXPECT_EQ(accept_feed(current, file_with("targets: [10.0.0.11]"), feed_config(), true).verdict,
            Verdict::take);
}

TEST(AcceptFeed, RefusesAFileThatDoesNotParseNamingWhere) {
  const Feed current = parsed("targets: [10.0.0.11]");
  const Result<std::optional<Feed>> broken =
      parse_feed("targets: [10.0.0.11:99999]", "/etc/apiserver-lb/targets.yaml");
  const auto d = accept_feed(current, broken, feed_config(), false);
  EXPECT_EQ(d.verdict, Verdict::refuse);
  EXPECT_NE(d.why.find("/etc/apiserver-lb/targets.yaml:1:"), std::string::npos) << d.why;
}

TEST(AcceptFeed, RefusesAnEmptyFileUnlessItSaysSoOnPurpose) {
  const Feed current = parsed("targets: [10.0.0.11]");
  const auto half_written = accept_feed(current, file_with(""), feed_config(), false);
  EXPECT_EQ(half_written.verdict, Verdict::refuse);
  EXPECT_EQ(half_written.why,
            "/etc/apiserver-lb/targets.yaml is empty (write `targets: []` to empty it on purpose)");
  // Refused even with static targets beside it: an empty file is what a crashed writer leaves.
  EXPECT_EQ(accept_feed(current, file_with(""), feed_config({{"10.0.0.1", 6443}}), false).verdict,
            Verdict::refuse);
  const auto on_purpose = accept_feed(current, file_with("targets: []"), feed_config(), false);
  EXPECT_EQ(on_purpose.verdict, Verdict::take);
  EXPECT_TRUE(on_purpose.next.targets.empty());
}

TEST(AcceptFeed, RefusesAVanishedFileOnlyWhenNothingElseWouldServe) {
  const Feed current = parsed("targets: [10.0.0.11]");
  const auto alone = accept_feed(current, no_file(), feed_config(), false);
  EXPECT_EQ(alone.verdict, Verdict::refuse);
  EXPECT_EQ(alone.why, "/etc/apiserver-lb/targets.yaml is gone and no other target is configured");
  // With static targets or first_master to fall back on, a removed file empties the feed's part.
  EXPECT_EQ(accept_feed(current, no_file(), feed_config({{"10.0.0.1", 6443}}), false).verdict,
            Verdict::take);
  EXPECT_EQ(
      accept_feed(current, no_file(), feed_config({}, Address{"10.0.0.1", 6443}), false).verdict,
      Verdict::take);
  // No feed before and none now: nothing to keep.
  EXPECT_EQ(accept_feed({}, no_file(), feed_config(), true).verdict, Verdict::take);
}

}  // namespace
}  // namespace apilb::config
