#include "config/duration.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <cstdint>

namespace apilb::config {
namespace {

struct Unit {
  std::string_view suffix;
  std::uint64_t ms;
};
// Largest first: the order a compound duration must be written in, and the order it is printed in.
constexpr std::array<Unit, 4> kUnits{{{"h", 3'600'000}, {"m", 60'000}, {"s", 1'000}, {"ms", 1}}};

}  // namespace

std::optional<Duration> parse_duration(std::string_view text) noexcept {
  if (text == "0") return Duration::zero();
  if (text.empty()) return std::nullopt;
  constexpr auto kMax = static_cast<std::uint64_t>(Duration::max().count());
  std::uint64_t total = 0;
  std::size_t next_unit = 0;  // units must strictly decrease: "1m30s", never "30s1m" or "1s1s"
  while (!text.empty()) {
    std::uint64_t count = 0;  // unsigned: from_chars then refuses a sign
    const auto [digits_end, ec] = std::from_chars(text.data(), text.data() + text.size(), count);
    if (ec != std::errc{}) return std::nullopt;
    text.remove_prefix(static_cast<std::size_t>(digits_end - text.data()));

    const auto suffix = text.substr(0, std::min(text.find_first_of("0123456789"), text.size()));
    const auto unit = std::ranges::find(kUnits, suffix, &Unit::suffix);
    const auto index = static_cast<std::size_t>(unit - kUnits.begin());
    if (unit == kUnits.end() || index < next_unit) return std::nullopt;
    if (count > (kMax - total) / unit->ms) return std::nullopt;
    total += count * unit->ms;
    next_unit = index + 1;
    text.remove_prefix(suffix.size());
  }
  return Duration(static_cast<Duration::rep>(total));
}

std::string format_duration(Duration d) {
  const bool negative = d < Duration::zero();
  // Unsigned magnitude: negating Duration::min() would overflow.
  std::uint64_t left = static_cast<std::uint64_t>(d.count());
  if (negative) left = 0 - left;
  std::string out = negative ? "-" : "";
  if (left == 0) return "0s";
  if (left % 1000 != 0) return out + std::to_string(left) + "ms";
  for (const auto& unit : kUnits) {
    if (left < unit.ms) continue;
    out += std::to_string(left / unit.ms);
    out += unit.suffix;
    left %= unit.ms;
  }
  return out;
}

}  // namespace apilb::config
