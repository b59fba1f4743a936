// End to end: `apiserver-lb targets ...` as an installer's shell script runs it.
#include "tests/support/process.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace apilb::test {
namespace {

using namespace std::chrono_literals;

constexpr auto kDeadline = 10s;

struct Outcome {
  int exit = -1;       // -1: still running at the deadline
  std::string output;  // stdout and stderr, interleaved
};

Outcome run(std::vector<std::string> args) {
  ChildProcess p(APILB_BINARY, std::move(args));
  const auto code = p.wait_exit(kDeadline);
  return {code.value_or(-1), p.log()};
}

// `apiserver-lb targets ARGS... --file FILE`.
Outcome targets(const std::filesystem::path& file, std::vector<std::string> args) {
  args.insert(args.begin(), "targets");
  args.insert(args.end(), {"--file", file.string()});
  return run(std::move(args));
}

std::string contents(const std::filesystem::path& file) {
  std::ifstream in(file);
  return {std::istreambuf_iterator<char>(in), {}};
}

constexpr std::string_view kHeader =
    "# Targets of apiserver-lb: the kube-apiservers to balance across.\n"
    "# Managed by `apiserver-lb targets` and installers; it is replaced as a whole, atomically.\n"
    "# Entries: ADDR or { address: ADDR, drain: true }; quote IPv6: \"[fd00::1]:6443\".\n";

class TargetsCommand : public ::testing::Test {
 protected:
  // Runs and expects `exit` and exactly `output`.
  void expect(std::vector<std::string> args, int exit, const std::string& output) {
    const Outcome o = targets(file_, args);
    std::string command = "targets";
    for (const auto& a : args) command += ' ' + a;
    EXPECT_EQ(o.exit, exit) << command << '\n' << o.output;
    EXPECT_EQ(o.output, output) << command;
  }
  std::string list() { return targets(file_, {"list"}).output; }

  TempDir dir_;
  std::filesystem::path file_ = dir_ / "targets.yaml";
  std::string f_ = file_.string();
};

TEST_F(TargetsCommand, AddsListsAndRemovesTargets) {
  expect({"add", "10.0.0.11"}, 0, "added 10.0.0.11:6443 to " + f_ + "\n");
  expect({"add", "10.0.0.12:6443"}, 0, "added 10.0.0.12:6443 to " + f_ + "\n");
  expect({"add", "[fd00::13]"}, 0, "added [fd00::13]:6443 to " + f_ + "\n");
  expect({"add", "master-4.example:443"}, 0, "added master-4.example:443 to " + f_ + "\n");
  // The same target written another way is the same target, and adding it again is no error.
  expect({"add", "10.0.0.11:6443"}, 0, "10.0.0.11:6443 is already in " + f_ + "\n");
  expect({"list"}, 0, "10.0.0.11:6443\n10.0.0.12:6443\n[fd00::13]:6443\nmaster-4.example:443\n");
  EXPECT_EQ(contents(file_), std::string(kHeader) +
                                 "targets:\n"
                                 "  - 10.0.0.11:6443\n"
                                 "  - 10.0.0.12:6443\n"
                                 "  - \"[fd00::13]:6443\"\n"
                                 "  - master-4.example:443\n");

  expect({"remove", "10.0.0.12"}, 0, "removed 10.0.0.12:6443 from " + f_ + "\n");
  expect({"remove", "10.0.0.9:6443"}, 1, "apiserver-lb: 10.0.0.9:6443 is not in " + f_ + "\n");
  expect({"list"}, 0, "10.0.0.11:6443\n[fd00::13]:6443\nmaster-4.example:443\n");
}

TEST_F(TargetsCommand, DrainMarksATargetAndAddClearsIt) {
  expect({"add", "10.0.0.11"}, 0, "added 10.0.0.11:6443 to " + f_ + "\n");
  expect({"add", "10.0.0.12"}, 0, "added 10.0.0.12:6443 to " + f_ + "\n");
  expect({"drain", "10.0.0.12"}, 0, "draining 10.0.0.12:6443 in " + f_ + "\n");
  expect({"drain", "10.0.0.12:6443"}, 0, "10.0.0.12:6443 is already draining in " + f_ + "\n");
  expect({"list"}, 0, "10.0.0.11:6443\n10.0.0.12:6443 drain\n");
  EXPECT_EQ(contents(file_), std::string(kHeader) +
                                 "targets:\n"
                                 "  - 10.0.0.11:6443\n"
                                 "  - { address: 10.0.0.12:6443, drain: true }\n");
  expect({"drain", "10.0.0.9"}, 1, "apiserver-lb: 10.0.0.9:6443 is not in " + f_ + "\n");

  expect({"add", "10.0.0.12"}, 0, "10.0.0.12:6443 is no longer draining in " + f_ + "\n");
  expect({"list"}, 0, "10.0.0.11:6443\n10.0.0.12:6443\n");
}

TEST_F(TargetsCommand, RefusesToRemoveTheLastTarget) {
  expect({"add", "10.0.0.11"}, 0, "added 10.0.0.11:6443 to " + f_ + "\n");
  expect({"remove", "10.0.0.11"}, 1,
         "apiserver-lb: " + f_ +
             ": refusing to remove the last target (`apiserver-lb targets set` with no address "
             "empties the list on purpose)\n");
  expect({"list"}, 0, "10.0.0.11:6443\n");
}

TEST_F(TargetsCommand, SetReplacesTheListAndEmptiesItOnlyWhenAskedTo) {
  expect({"add", "10.0.0.11"}, 0, "added 10.0.0.11:6443 to " + f_ + "\n");
  expect({"drain", "10.0.0.11"}, 0, "draining 10.0.0.11:6443 in " + f_ + "\n");
  expect({"set", "10.0.0.12", "10.0.0.11:6443"}, 0, "set " + f_ + " to 2 targets\n");
  expect({"list"}, 0, "10.0.0.12:6443\n10.0.0.11:6443\n");  // as given, none draining
  expect({"set", "10.0.0.13"}, 0, "set " + f_ + " to 1 target\n");
  expect({"list"}, 0, "10.0.0.13:6443\n");
  expect({"set"}, 0, "emptied " + f_ + "\n");
  expect({"list"}, 0, "");
  EXPECT_EQ(contents(file_), std::string(kHeader) + "targets: []\n");
}

TEST_F(TargetsCommand, ListsNothingForAMissingFile) {
  expect({"list"}, 0, "");
  EXPECT_FALSE(std::filesystem::exists(file_));
}

TEST_F(TargetsCommand, RejectsBadUsageWithExitCodeTwo) {
  expect({"add", "10.0.0.300"}, 2,
         "apiserver-lb: targets add: \"10.0.0.300\": \"10.0.0.300\" is not a valid IPv4 address\n");
  expect({"add", "10.0.0.1:70000"}, 2,
         "apiserver-lb: targets add: \"10.0.0.1:70000\": port 70000 is out of range\n");
  expect({"remove", "fd00::1"}, 2,
         "apiserver-lb: targets remove: \"fd00::1\": an IPv6 address must be in brackets, as in "
         "[fd00::1]:6443\n");
  expect({"add"}, 2, "apiserver-lb: targets add takes one address, got 0\n");
  expect({"drain", "10.0.0.1", "10.0.0.2"}, 2,
         "apiserver-lb: targets drain takes one address, got 2\n");
  expect({"list", "10.0.0.1"}, 2,
         "apiserver-lb: targets list takes no address, got \"10.0.0.1\"\n");
  expect({"set", "10.0.0.1", "10.0.0.1:6443"}, 2,
         "apiserver-lb: targets set: 10.0.0.1:6443 is given twice\n");
  expect({"frob"}, 2,
         "apiserver-lb: unknown targets command \"frob\" (valid: list, add, remove, drain, set)\n");
  expect({}, 2, "apiserver-lb: targets needs a command: list, add, remove, drain or set\n");
  expect({"list", "--force"}, 2, "apiserver-lb: targets: unknown flag --force\n");
  EXPECT_EQ(run({"targets", "list", "--file"}).output, "apiserver-lb: --file needs a value\n");
  EXPECT_FALSE(std::filesystem::exists(file_));
}

TEST_F(TargetsCommand, RefusesToEditAFileItCannotParseAndLeavesItAlone) {
  const std::string garbage = "targets:\n  - 10.0.0.11\n  - { address: 10.0.0.12, drain: maybe }\n";
  dir_.write("targets.yaml", garbage);
  const std::string why = f_ + ":3:34: targets[1].drain: \"maybe\" is not true or false";
  expect({"add", "10.0.0.13"}, 1,
         "apiserver-lb: " + why +
             " (nothing changed: fix the file, or replace it with `apiserver-lb targets set`)\n");
  expect({"list"}, 1, "apiserver-lb: " + why + "\n");
  EXPECT_EQ(contents(file_), garbage);

  // A half-written file is as bad as garbage: nothing is ever read as "no targets".
  dir_.write("targets.yaml", "targets:\n  - 10.0.0.11\n  - { address: 10.0.");
  const Outcome truncated = targets(file_, {"remove", "10.0.0.11"});
  EXPECT_EQ(truncated.exit, 1) << truncated.output;
  EXPECT_TRUE(truncated.output.starts_with("apiserver-lb: " + f_ + ":")) << truncated.output;

  // `set` does not depend on what was there, so it may replace it.
  expect({"set", "10.0.0.13"}, 0, "set " + f_ + " to 1 target\n");
  expect({"list"}, 0, "10.0.0.13:6443\n");
}

TEST_F(TargetsCommand, WritesMessagesToStderrAndOnlyTheListToStdout) {
  const auto shell = [&](const std::string& args) {
    ChildProcess p("/bin/sh", {"-c", std::string(APILB_BINARY) + " targets " + args + " --file '" +
                                         f_ + "' 2>/dev/null"});
    const auto code = p.wait_exit(kDeadline);
    return Outcome{code.value_or(-1), p.log()};
  };
  EXPECT_EQ(shell("add 10.0.0.11").output, "added 10.0.0.11:6443 to " + f_ + "\n");
  EXPECT_EQ(shell("list").output, "10.0.0.11:6443\n");
  const Outcome refused = shell("remove 10.0.0.9");
  EXPECT_EQ(refused.exit, 1);
  EXPECT_EQ(refused.output, "");
  const Outcome bad = shell("add nope_");
  EXPECT_EQ(bad.exit, 2);
  EXPECT_EQ(bad.output, "");
}

TEST_F(TargetsCommand, EditsTheTargetsFileTheConfigNames) {
  const auto with_feed = dir_.write("config.yaml", "targets_file: " + f_ + "\n");
  const auto without = dir_.write("plain.yaml", "targets: [10.0.0.1]\n");
  EXPECT_EQ(run({"targets", "add", "10.0.0.11", "--config", with_feed.string()}).output,
            "added 10.0.0.11:6443 to " + f_ + "\n");
  expect({"list"}, 0, "10.0.0.11:6443\n");

  const Outcome refused = run({"targets", "list", "--config=" + without.string()});
  EXPECT_EQ(refused.exit, 1);
  EXPECT_EQ(refused.output, "apiserver-lb: " + without.string() +
                                " sets no targets_file (name the file with --file)\n");
  const Outcome broken =
      run({"targets", "list", "--config", dir_.write("broken.yaml", "targets_file: [\n").string()});
  EXPECT_EQ(broken.exit, 1);
  EXPECT_TRUE(broken.output.starts_with("apiserver-lb: " + (dir_ / "broken.yaml").string() + ":"))
      << broken.output;
}

TEST_F(TargetsCommand, LosesNoUpdateFromFiftyConcurrentAdds) {
  constexpr int kWriters = 50;
  std::vector<std::unique_ptr<ChildProcess>> writers;
  std::set<std::string> expected;
  for (int i = 0; i < kWriters; ++i) {
    const std::string address = "10.0." + std::to_string(i / 10) + '.' + std::to_string(i + 1);
    expected.insert(address + ":6443");
    writers.push_back(std::make_unique<ChildProcess>(
        APILB_BINARY, std::vector<std::string>{"targets", "add", address, "--file", f_}));
  }
  for (auto& w : writers) EXPECT_EQ(w->wait_exit(kDeadline), 0) << w->log();

  const Outcome listed = targets(file_, {"list"});
  ASSERT_EQ(listed.exit, 0) << listed.output;
  std::set<std::string> got;
  std::istringstream lines(listed.output);
  for (std::string line; std::getline(lines, line);) got.insert(line);
  EXPECT_EQ(got, expected);
  // Nothing left behind but the feed and its lock file.
  std::set<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir_.path()))
    names.insert(e.path().filename().string());
  EXPECT_EQ(names, (std::set<std::string>{"targets.yaml", "targets.yaml.lock"}));
}

}  // namespace
}  // namespace apilb::test
