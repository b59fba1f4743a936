// Fuzzes the configuration file parser and the cross-field rules: any text gives a Config or an
// Error naming a place in that text, never an exception, a crash or a Config that breaks its rules.
#include "config/config.hpp"
#include "tests/fuzz/fuzz_support.hpp"

#include <algorithm>

namespace {

using apilb::fuzz::check;
namespace config = apilb::config;

// The most line numbers yaml-cpp can count in `text`: it also breaks lines at \r and, as YAML 1.1
// says, at NEL (\x85) and the Unicode line and paragraph separators (E2 80 A8/A9).
int max_line(std::string_view text) {
  return 1 + static_cast<int>(std::ranges::count_if(text, [](char c) {
           return c == '\n' || c == '\r' || c == '\x85' || c == '\xe2';
         }));
}

void check_error(const config::Error& e, std::string_view text) {
  check(!e.reason.empty(), "an error says why", text);
  check(e.file == "fuzz.yaml", "an error names the file", text);
  check(e.line >= 0 && e.column >= 0, "an error's position is not negative", text);
  check(e.line <= max_line(text), "an error's line is in the text", text);
  check(!e.message().empty(), "an error has a message", text);
}

void check_round_trips(config::Duration d, std::string_view text) {
  const auto again = config::parse_duration(config::format_duration(d));
  check(again && *again == d, "every duration of a parsed config formats and parses back", text);
}

void check_round_trips(const config::Address& a, std::string_view text) {
  const auto again = config::parse_address(a.to_string());
  check(again && *again == a, "every address of a parsed config prints and parses back", text);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text = apilb::fuzz::as_text(data, size);
  auto parsed = config::parse_config(text, "fuzz.yaml");
  if (!parsed) {
    check_error(parsed.error(), text);
    return 0;
  }
  for (const auto& [field, at] : parsed->positions)
    check(at.line >= 1 && at.line <= max_line(text), "every field's position is in the text", text);
  for (config::Duration d :
       {parsed->health.interval, parsed->health.timeout, parsed->upstream.connect_timeout,
        parsed->tcp.keepalive_idle, parsed->tcp.keepalive_interval, parsed->tcp.user_timeout,
        parsed->drain_timeout})
    check_round_trips(d, text);
  for (const auto& a : parsed->targets) check_round_trips(a, text);
  for (const auto& a : parsed->listen)
    check(config::is_ip_literal(a.host), "listen addresses are IP literals", text);
  if (parsed->first_master) check_round_trips(*parsed->first_master, text);
  check(parsed->health.rise >= 1 && parsed->health.fall >= 1, "rise and fall are at least 1", text);
  check(parsed->relay.buffer_size >= 1024 && parsed->relay.buffer_size <= 1024 * 1024,
        "relay.buffer_size is in [1 KiB, 1 MiB]", text);

  auto final = config::finalize(std::move(*parsed), config::Overrides{}, "fuzz.yaml");
  if (!final) {
    check_error(final.error(), text);
    check(!final.error().field.empty(), "a broken rule names its field", text);
    return 0;
  }
  check(!final->listen.empty(), "a final config listens somewhere", text);
  check(!final->targets.empty() || !final->targets_file.empty() || final->first_master.has_value(),
        "a final config has somewhere to send traffic", text);
  check(final->health.timeout <= final->health.interval,
        "a final config's timeout fits its interval", text);
  return 0;
}
