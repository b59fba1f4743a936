#include "healthcheck/readyz.hpp"

namespace apilb::healthcheck {

std::string failing_checks(std::string_view verbose_body) {
  std::string checks;
  while (!verbose_body.empty()) {
    const auto newline = verbose_body.find('\n');
    std::string_view line = verbose_body.substr(0, newline);
    verbose_body.remove_prefix(newline == std::string_view::npos ? verbose_body.size()
                                                                 : newline + 1);
    if (line.ends_with('\r')) line.remove_suffix(1);
    if (!line.starts_with("[-]")) continue;
    if (!checks.empty()) checks += "; ";
    checks += line;
  }
  return checks;
}

}  // namespace apilb::healthcheck
