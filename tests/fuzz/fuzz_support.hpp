#pragma once

// Shared by the fuzz targets: the input as a string_view, and a check that aborts (so libFuzzer
// saves the input as a crash) when a property of the code under test does not hold.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

namespace apilb::fuzz {

inline std::string_view as_text(const std::uint8_t* data, std::size_t size) noexcept {
  return {reinterpret_cast<const char*>(data), size};
}

// Not assert(): it must hold in every build type, and the message says which property broke.
[[noreturn]] inline void broken(const char* what, std::string_view input) {
  std::fprintf(stderr, "property broken: %s\ninput (%zu bytes): %.*s\n", what, input.size(),
               static_cast<int>(input.size() > 512 ? 512 : input.size()), input.data());
  std::abort();
}

inline void check(bool holds, const char* what, std::string_view input) {
  if (!holds) broken(what, input);
}

}  // namespace apilb::fuzz
