#pragma once

namespace apilb::cli {

// The `apiserver-lb` command line (PRODUCT.md's interface contract). Returns the exit code:
// 0 success, 1 a failed check or a failed run, 2 a usage error.
int run_cli(int argc, char** argv);

}  // namespace apilb::cli
