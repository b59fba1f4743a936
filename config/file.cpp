#include "config/file.hpp"

#include <cerrno>
#include <cstdio>
#include <memory>

namespace apilb::config {

std::optional<std::string> read_text(const std::filesystem::path& file, int& error_number) {
  struct Close {
    void operator()(std::FILE* f) const noexcept { std::fclose(f); }
  };
  const std::unique_ptr<std::FILE, Close> in(std::fopen(file.c_str(), "rb"));
  if (!in) {
    error_number = errno;
    return std::nullopt;
  }
  std::string text;
  char buffer[8192];
  while (const auto n = std::fread(buffer, 1, sizeof buffer, in.get())) text.append(buffer, n);
  if (std::ferror(in.get())) {  // e.g. EISDIR: fopen accepts a directory
    error_number = errno;
    return std::nullopt;
  }
  return text;
}

}  // namespace apilb::config
