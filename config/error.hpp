#pragma once

#include <boost/system/result.hpp>

#include <string>

namespace apilb::config {

// A user-facing configuration error: where (file:line:col, 1-based; 0 = unknown), which field
// (dotted path: "health.interval", "listen[1]"), and why. `message()` is what the user reads:
//   config.yaml:7:3: health.interval: "2x" is not a duration
struct Error {
  std::string file;
  int line = 0;
  int column = 0;
  std::string field;
  std::string reason;

  std::string message() const;
};

// Lets boost::system::result<T, Error>::value() throw a readable exception.
[[noreturn]] void throw_exception_from_error(const Error& e, const boost::source_location& loc);

template <typename T>
using Result = boost::system::result<T, Error>;

}  // namespace apilb::config
