#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace apilb::config {

using Duration = std::chrono::milliseconds;

// Parses "500ms", "2s", "1m", "1h", "1m30s" into milliseconds; nullopt when malformed or negative.
std::optional<Duration> parse_duration(std::string_view text) noexcept;

// Shortest exact rendering: 1500ms -> "1500ms", 2000ms -> "2s", 60000ms -> "1m".
std::string format_duration(Duration d);

}  // namespace apilb::config
