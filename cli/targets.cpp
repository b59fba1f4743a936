#include "cli/flags.hpp"
#include "config/config.hpp"
#include "config/feed.hpp"

#include <algorithm>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace apilb::cli {
namespace {

constexpr std::string_view kDefaultTargetsFile = "/etc/apiserver-lb/targets.yaml";

constexpr std::string_view kUsage = R"(usage:
  apiserver-lb targets list                 print the targets, one a line ("ADDR" or "ADDR drain")
  apiserver-lb targets add ADDR             add a target, or stop draining it
  apiserver-lb targets remove ADDR          remove a target (never the last one)
  apiserver-lb targets drain ADDR           send no new connections to a target (maintenance)
  apiserver-lb targets set [ADDR...]        replace the whole list; no address empties it
options, anywhere:
  --file FILE     the targets file to edit
  --config FILE   use the targets_file this config sets
The default file is the targets_file of /etc/apiserver-lb/config.yaml when it sets one, else
/etc/apiserver-lb/targets.yaml. Exit codes: 0 done, 1 refused or failed, 2 usage error.
)";

struct Invocation {
  std::string command;
  std::vector<config::Address> addresses;
  std::optional<std::string> file;
  std::optional<std::string> config;
  bool help = false;
};

Invocation parse(std::span<char*> args) {
  Invocation in;
  Flags flags(args, "", Flags::Words::collect);
  while (auto f = flags.next()) {
    if (*f == "--help" || *f == "-h") {
      in.help = true;
      continue;
    }
    if (*f != "--file" && *f != "--config") flags.fail("targets: unknown flag " + std::string(*f));
    const std::string_view value = flags.value();
    if (value.empty()) flags.fail(std::string(*f) + " needs a value");
    (*f == "--file" ? in.file : in.config) = std::string(value);
  }
  const auto& words = flags.words();
  if (in.help) return in;
  if (words.empty()) flags.fail("targets needs a command: list, add, remove, drain or set");
  in.command = words.front();
  const auto operands = std::span(words).subspan(1);
  const bool one = in.command == "add" || in.command == "remove" || in.command == "drain";
  if (in.command == "list") {
    if (!operands.empty())
      flags.fail("targets list takes no address, got \"" + std::string(operands[0]) + "\"");
  } else if (one) {
    if (operands.size() != 1)
      flags.fail("targets " + in.command + " takes one address, got " +
                 std::to_string(operands.size()));
  } else if (in.command != "set") {
    flags.fail("unknown targets command \"" + in.command +
               "\" (valid: list, add, remove, drain, set)");
  }
  for (const auto text : operands) {
    std::string why;
    const auto parsed = config::parse_address(text, &why);
    if (!parsed) flags.fail("targets " + in.command + ": \"" + std::string(text) + "\": " + why);
    const config::Address a = *parsed;
    if (std::ranges::find(in.addresses, a) != in.addresses.end())
      flags.fail("targets " + in.command + ": " + a.to_string() + " is given twice");
    in.addresses.push_back(a);
  }
  return in;
}

// The feed to edit: --file, else the config's targets_file (see the header).
std::filesystem::path feed_path(const Invocation& in) {
  if (in.file) return *in.file;
  const bool default_config = !in.config;
  const std::string config_file = in.config.value_or(std::string(config::kDefaultConfigPath));
  if (default_config && !std::filesystem::exists(config_file))
    return std::string(kDefaultTargetsFile);
  const auto parsed = config::load_config(config_file);
  if (!parsed) throw Failure{parsed.error().message()};
  if (!parsed->targets_file.empty()) return parsed->targets_file;
  if (default_config) return std::string(kDefaultTargetsFile);
  throw Failure{config_file + " sets no targets_file (name the file with --file)"};
}

int list(const std::filesystem::path& file) {
  const auto loaded = config::load_feed(file);
  if (!loaded) throw Failure{loaded.error().message()};
  if (!*loaded) return 0;  // no file: no targets, which is what the balancer reads too
  for (const auto& [address, drain] : (*loaded)->targets)
    std::printf("%s%s\n", address.to_string().c_str(), drain ? " drain" : "");
  return 0;
}

int edit(const Invocation& in, const std::filesystem::path& file) {
  const std::string path = file.string();
  std::string done;  // what to tell the user once it is written (or found already so)
  const auto missing = [&](const config::Address& a) {
    return config::Error{"", 0, 0, "", a.to_string() + " is not in " + path};
  };

  config::FeedEdit change;
  if (in.command == "set") {
    change = [&](config::Feed& feed) -> config::Result<bool> {
      for (const auto& a : in.addresses) feed.targets.push_back({a, false});
      done = in.addresses.empty() ? "emptied " + path
                                  : "set " + path + " to " + std::to_string(in.addresses.size()) +
                                        (in.addresses.size() == 1 ? " target" : " targets");
      return true;
    };
  } else {
    const config::Address a = in.addresses.front();
    const std::string name = a.to_string();
    change = [&, a, name](config::Feed& feed) -> config::Result<bool> {
      config::FeedEntry* entry = feed.find(a);
      if (in.command == "add") {
        if (!entry) {
          feed.targets.push_back({a, false});
          done = "added " + name + " to " + path;
          return true;
        }
        if (entry->drain) {
          entry->drain = false;
          done = name + " is no longer draining in " + path;
          return true;
        }
        done = name + " is already in " + path;
        return false;
      }
      if (!entry) return missing(a);
      if (in.command == "remove") {
        std::erase_if(feed.targets, [&](const auto& e) { return e.address == a; });
        done = "removed " + name + " from " + path;
        return true;
      }
      done = entry->drain ? name + " is already draining in " + path
                          : "draining " + name + " in " + path;
      return !std::exchange(entry->drain, true);
    };
  }
  const auto mode = in.command == "set" ? config::UpdateMode::replace : config::UpdateMode::edit;
  const auto updated = config::update_feed(file, change, mode);
  if (!updated) throw Failure{updated.error().message()};
  std::printf("%s\n", done.c_str());
  return 0;
}

}  // namespace

int targets(std::span<char*> args) {
  const Invocation in = parse(args);
  if (in.help) {
    std::fputs(kUsage.data(), stdout);
    return 0;
  }
  const std::filesystem::path file = feed_path(in);
  return in.command == "list" ? list(file) : edit(in, file);
}

}  // namespace apilb::cli
