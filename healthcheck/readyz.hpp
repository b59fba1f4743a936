#pragma once

// Reading kube-apiserver's `/readyz?verbose` answer. Pure text handling with no Asio, OpenSSL or
// coroutine in sight, so the fuzzers (tests/fuzz, built with clang) compile it on its own.

#include <string>
#include <string_view>

namespace apilb::healthcheck {

// The failing checks of a `/readyz?verbose` body, joined: "[-]etcd failed: reason withheld".
// Empty when the body has no "[-]" line. Pure; fuzzed.
std::string failing_checks(std::string_view verbose_body);

}  // namespace apilb::healthcheck
