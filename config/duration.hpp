#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace apilb::config {

using Duration = std::chrono::milliseconds;

// Parses "500ms", "2s", "1m", "1h", "1m30s" into milliseconds; nullopt when malformed or negative.
// Units go from largest to smallest, each at most once; a bare "0" needs none. No fractions.
std::optional<Duration> parse_duration(std::string_view text) noexcept;

// Exact rendering that parse_duration reads back: whole seconds split into h/m/s (2000ms -> "2s",
// 60000ms -> "1m", 90000ms -> "1m30s"), anything else in milliseconds (1500ms -> "1500ms"), 0 ->
// "0s".
std::string format_duration(Duration d);

}  // namespace apilb::config
