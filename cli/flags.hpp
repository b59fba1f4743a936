#pragma once

// Argument parsing shared by every subcommand: `--flag value`, `--flag=value`, and (for those that
// take them) plain words.

#include "config/address.hpp"

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace apilb::cli {

// A usage error: exit code 2. The dispatcher prints "apiserver-lb: <message>" and then `usage`
// (the subcommand's own help; empty for none).
struct UsageError {
  std::string message;
  std::string_view usage;
};

// A failure that is not the user's wording: exit code 1, one line on stderr.
struct Failure {
  std::string message;
};

// Walks the arguments of one subcommand. Anything starting with "-" is a flag; other arguments
// are words, collected into words() when `words` allows them and a UsageError otherwise.
class Flags {
 public:
  enum class Words { refuse, collect };
  explicit Flags(std::span<char*> args, std::string_view usage, Words words = Words::refuse)
      : args_(args), usage_(usage), collect_(words == Words::collect) {}

  // The next flag name, or nullopt at the end.
  std::optional<std::string_view> next();
  // The flag's value: after "=" or the next argument.
  std::string_view value();
  // A target: a name or an IP, port 6443 unless given.
  config::Address target() { return target(value()); }
  config::Address target(std::string_view text);
  // A local address to bind: an IP literal and a port.
  config::Address local(std::string_view text);

  const std::vector<std::string_view>& words() const noexcept { return words_; }
  [[noreturn]] void fail(std::string message) const {
    throw UsageError{std::move(message), usage_};
  }
  [[noreturn]] void unknown() const { fail("unknown flag " + std::string(flag_)); }

 private:
  config::Address checked(std::string_view text, std::optional<config::Address> a,
                          const std::string& why) const;

  std::span<char*> args_;
  std::string_view usage_;
  bool collect_;
  std::size_t pos_ = 0;
  std::string_view flag_;
  std::optional<std::string_view> inline_value_;
  std::vector<std::string_view> words_;
};

// The usage of the whole command (cli.cpp), for the subcommands that print it with their errors.
std::string_view usage();

// The subcommands (one file each), with the arguments that follow the subcommand's name. Each
// returns its exit code or throws UsageError / Failure.
int run(std::span<char*> args);
int check_config(std::span<char*> args);
int targets(std::span<char*> args);
int status(std::span<char*> args);
int check_san(std::span<char*> args);
int upgrade(std::span<char*> args);

}  // namespace apilb::cli
