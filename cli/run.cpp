// `apiserver-lb run`: load and finalize the configuration, then hand it to the controller.
#include "cli/flags.hpp"
#include "config/config.hpp"
#include "control/controller.hpp"
#include "control/logging.hpp"

#include <spdlog/spdlog.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <optional>
#include <string>

namespace apilb::cli {
namespace {

// The file named by --config must exist; the default one is used only when it does.
config::Result<config::Config> load(const std::optional<std::string>& path) {
  if (path) return config::load_config(*path);
  if (std::filesystem::exists(config::kDefaultConfigPath))
    return config::load_config(std::string(config::kDefaultConfigPath));
  return config::Config{};
}

// What an upgrade starts again: this binary's path (as installed now, so a package upgrade's new
// binary) with the same arguments.
control::Launch launch(std::span<char*> args) {
  control::Launch l;
  std::error_code ec;
  l.executable = std::filesystem::read_symlink("/proc/self/exe", ec).string();
  l.arguments.emplace_back("run");
  for (char* a : args) l.arguments.emplace_back(a);
  return l;
}

}  // namespace

int run(std::span<char*> args) {
  Flags flags(args, usage());
  std::optional<std::string> path;
  config::Overrides overrides;
  while (auto f = flags.next()) {
    if (*f == "--config") {
      path = std::string(flags.value());
    } else if (*f == "--listen") {
      overrides.listen.push_back(flags.local(flags.value()));
    } else if (*f == "--target") {
      overrides.targets.push_back(flags.target());
    } else if (*f == "--first-master") {
      overrides.first_master = flags.target();
    } else if (*f == "--admin") {
      // An empty value disables the admin server.
      const std::string_view v = flags.value();
      overrides.admin =
          v.empty() ? std::optional<config::Address>{} : std::optional(flags.local(v));
    } else if (*f == "--log-level") {
      const std::string_view v = flags.value();
      overrides.log_level = config::parse_log_level(v);
      if (!overrides.log_level)
        flags.fail("--log-level: \"" + std::string(v) + "\" is not a level");
    } else {
      flags.unknown();
    }
  }
  const std::string file = path.value_or(std::string(config::kDefaultConfigPath));
  // SIGHUP reads the same file with the same flags again.
  auto read = [path, overrides, file] {
    auto parsed = load(path);
    if (parsed) parsed = config::finalize(std::move(*parsed), overrides, file);
    return parsed;
  };
  // Started by `apiserver-lb upgrade`: take the running process's sockets over. Its children
  // (the next upgrade) must not see the variable.
  std::optional<std::string> takeover_from;
  if (const char* from = std::getenv(control::kTakeoverVariable)) {
    takeover_from = from;
    ::unsetenv(control::kTakeoverVariable);
  }
  auto parsed = read();
  if (!parsed) {
    std::fprintf(stderr, "apiserver-lb: %s\n", parsed.error().message().c_str());
    if (takeover_from) control::Takeover::report_failure(*takeover_from, parsed.error().message());
    return 1;
  }
  control::setup_logging(parsed->log);
  std::optional<control::Takeover> takeover;
  try {
    if (takeover_from) takeover.emplace(*takeover_from);
    control::Controller controller(std::move(*parsed), read,
                                   {launch(args), takeover ? &*takeover : nullptr});
    return controller.run();
  } catch (const std::exception& e) {
    spdlog::critical("cannot start: {}", e.what());
    if (takeover) takeover->failed(e.what());
    else if (takeover_from) control::Takeover::report_failure(*takeover_from, e.what());
    return 1;
  }
}

}  // namespace apilb::cli
