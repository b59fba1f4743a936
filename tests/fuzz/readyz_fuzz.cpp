// Fuzzes the `/readyz?verbose` reason parser: whatever an apiserver (or anything answering on its
// port) sends back, the reason is one line made only of the body's "[-]" lines.
#include "healthcheck/readyz.hpp"
#include "tests/fuzz/fuzz_support.hpp"

#include <algorithm>

namespace {

using apilb::fuzz::check;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view body = apilb::fuzz::as_text(data, size);
  const std::string reason = apilb::healthcheck::failing_checks(body);
  const bool has_failing_line =
      body.starts_with("[-]") || body.find("\n[-]") != std::string_view::npos;
  check(reason.empty() != has_failing_line, "a reason exactly when a line starts with [-]", body);
  check(reason.empty() || reason.starts_with("[-]"), "a reason starts with [-]", body);
  check(reason.find('\n') == std::string::npos, "a reason is one line", body);
  const auto lines = static_cast<std::size_t>(std::ranges::count(body, '\n')) + 1;
  check(reason.size() <= body.size() + 2 * lines,
        "a reason is no longer than the body and its separators", body);
  return 0;
}
