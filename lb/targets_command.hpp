#pragma once

#include <span>

namespace apilb::lb {

// `apiserver-lb targets list|add ADDR|remove ADDR|drain ADDR|set ADDR... [--file FILE]
// [--config FILE]`: reads or edits the target feed for installers and operators. `args` is what
// follows `targets`. Every edit is a locked read-modify-write replaced atomically
// (config::update_feed), so concurrent invocations never lose an update.
// The file: --file, else the targets_file of --config FILE (which must set one), else the
// targets_file of /etc/apiserver-lb/config.yaml if that exists and sets one, else
// /etc/apiserver-lb/targets.yaml.
// Exit codes: 0 done (also "already there"), 1 refused or failed, 2 usage error. Errors are one
// line on stderr; `list` prints one target per line on stdout ("10.0.0.12:6443 drain").
int targets_command(std::span<char*> args);

}  // namespace apilb::lb
