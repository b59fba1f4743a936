#pragma once

// Reading a whole file for the parsers (the config, the feed, a kubeconfig), with the errno of
// what failed kept for the error message.

#include <filesystem>
#include <optional>
#include <string>

namespace apilb::config {

// The whole file, or nullopt with `error_number` set to the errno of what failed (a directory
// included: fopen accepts one, the read fails with EISDIR).
std::optional<std::string> read_text(const std::filesystem::path& file, int& error_number);

}  // namespace apilb::config
