// `apiserver-lb check-config`: parse and validate (the config and the kubeconfig discovery uses),
// print the first error with file:line:col.
#include "cli/flags.hpp"
#include "config/config.hpp"
#include "control/discovery_source.hpp"

#include <cstdio>
#include <optional>
#include <string>

namespace apilb::cli {

int check_config(std::span<char*> args) {
  Flags flags(args, usage());
  std::optional<std::string> path;
  while (auto f = flags.next()) {
    if (*f == "--config") path = std::string(flags.value());
    else flags.unknown();
  }
  const std::string file = path.value_or(std::string(config::kDefaultConfigPath));
  auto parsed = config::load_config(file);
  if (parsed) parsed = config::finalize(std::move(*parsed), {}, file);
  // The kubeconfig or service account that discovery would use must load as well.
  if (parsed && parsed->discovery.kubernetes)
    if (auto credentials = control::DiscoverySource::credentials(*parsed); !credentials)
      parsed = credentials.error();
  if (!parsed) {
    std::fprintf(stderr, "%s\n", parsed.error().message().c_str());
    return 1;
  }
  std::printf("%s: valid\n", file.c_str());
  return 0;
}

}  // namespace apilb::cli
