// `apiserver-lb upgrade`: asks the running process to start the binary again (the one now
// installed) and hand it its listening sockets; waits for the outcome.
#include "cli/flags.hpp"
#include "config/config.hpp"
#include "control/handoff.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>

namespace apilb::cli {
namespace {

constexpr std::string_view kUsage =
    "usage: apiserver-lb upgrade [--config FILE] [--socket PATH] [--binary PATH]\n"
    "  --socket PATH  the running process's upgrade socket (default: the config's upgrade.socket)\n"
    "  --binary PATH  start this binary instead of the one the running process was started from\n"
    "exit 0: the new process serves and the old one drains; 1: nothing changed (why on stderr)\n";

}  // namespace

int upgrade(std::span<char*> args) {
  Flags flags(args, kUsage);
  std::optional<std::string> config_file, socket, binary;
  while (auto f = flags.next()) {
    if (*f == "--config") config_file = std::string(flags.value());
    else if (*f == "--socket") socket = std::string(flags.value());
    else if (*f == "--binary") binary = std::string(flags.value());
    else flags.unknown();
  }
  config::Upgrade settings;
  if (!socket) {
    const std::string file = config_file.value_or(std::string(config::kDefaultConfigPath));
    if (config_file || ::access(file.c_str(), R_OK) == 0) {
      auto parsed = config::load_config(file);
      if (!parsed) throw Failure{parsed.error().message()};
      settings = parsed->upgrade;
    }
    socket = settings.socket_path();
  }
  const int fd = control::connect_to(*socket);
  if (fd < 0)
    throw Failure{"cannot reach a running apiserver-lb at " + *socket + ": " +
                  std::strerror(errno)};
  if (!control::send_message(fd, "upgrade\n" + binary.value_or(""))) {
    ::close(fd);
    throw Failure{*socket + ": " + std::strerror(errno)};
  }
  // The running process answers within its upgrade.timeout; allow for it and a little more.
  const auto reply = control::receive_message(fd, settings.timeout + std::chrono::seconds(30));
  ::close(fd);
  if (!reply)
    throw Failure{"no answer from " + *socket + ": " +
                  (errno ? std::strerror(errno) : "it closed the connection")};
  if (reply->text.starts_with("ok ")) {
    std::printf("upgraded: pid %s serves now; the previous process drains its connections\n",
                reply->text.substr(3).c_str());
    return 0;
  }
  std::fprintf(
      stderr, "apiserver-lb upgrade: %s; the running process keeps serving\n",
      reply->text.starts_with("failed ") ? reply->text.substr(7).c_str() : reply->text.c_str());
  return 1;
}

}  // namespace apilb::cli
