// Fuzzes duration parsing ("500ms", "1m30s") and its inverse: every parsed duration is not
// negative and formats to text that parses back to it; every non-negative duration formats to text
// that parses back.
#include "config/duration.hpp"
#include "tests/fuzz/fuzz_support.hpp"

#include <cstring>

namespace {

using apilb::fuzz::check;
namespace config = apilb::config;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text = apilb::fuzz::as_text(data, size);
  if (const auto d = config::parse_duration(text)) {
    check(d->count() >= 0, "a parsed duration is not negative", text);
    const auto again = config::parse_duration(config::format_duration(*d));
    check(again && *again == *d, "a parsed duration formats and parses back", text);
  }
  // The same bytes as a count of milliseconds, for format_duration's side.
  if (size >= sizeof(config::Duration::rep)) {
    config::Duration::rep ms = 0;
    std::memcpy(&ms, data, sizeof ms);
    const std::string formatted = config::format_duration(config::Duration(ms));
    check(!formatted.empty(), "a duration formats to something", text);
    if (ms >= 0) {
      const auto again = config::parse_duration(formatted);
      check(again && again->count() == ms, "a non-negative duration formats and parses back", text);
    } else {
      check(formatted.front() == '-' && !config::parse_duration(formatted),
            "a negative duration stays refused", text);
    }
  }
  return 0;
}
