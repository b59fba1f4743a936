#include "cli/flags.hpp"

#include <utility>

namespace apilb::cli {

std::optional<std::string_view> Flags::next() {
  while (pos_ < args_.size()) {
    std::string_view arg = args_[pos_++];
    if (!arg.starts_with("-")) {
      if (!collect_) fail("unexpected argument \"" + std::string(arg) + "\"");
      words_.push_back(arg);
      continue;
    }
    inline_value_.reset();
    if (const auto eq = arg.find('='); eq != std::string_view::npos) {
      inline_value_ = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
    }
    flag_ = arg;
    return arg;
  }
  return std::nullopt;
}

std::string_view Flags::value() {
  if (inline_value_) return *std::exchange(inline_value_, std::nullopt);
  if (pos_ >= args_.size()) fail(std::string(flag_) + " needs a value");
  return args_[pos_++];
}

config::Address Flags::target(std::string_view text) {
  std::string why;
  return checked(text, config::parse_address(text, &why), why);
}

config::Address Flags::local(std::string_view text) {
  std::string why;
  return checked(text, config::parse_listen_address(text, &why), why);
}

config::Address Flags::checked(std::string_view text, std::optional<config::Address> a,
                               const std::string& why) const {
  if (!a) fail(std::string(flag_) + ": \"" + std::string(text) + "\": " + why);
  return *a;
}

}  // namespace apilb::cli
