// Fuzzes the target feed parser, which reads a file that installers write and may leave half
// written: any text gives a Feed or an Error, and a Feed renders to text that reads back the same.
#include "config/feed.hpp"
#include "tests/fuzz/fuzz_support.hpp"

namespace {

using apilb::fuzz::check;
namespace config = apilb::config;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text = apilb::fuzz::as_text(data, size);
  const auto feed = config::parse_feed(text, "targets.yaml");
  if (!feed) {
    check(!feed.error().reason.empty(), "an error says why", text);
    check(feed.error().line >= 0 && feed.error().column >= 0, "an error's position is not negative",
          text);
    return 0;
  }
  check(feed->targets.empty() || feed->explicit_list, "targets come only from an explicit list",
        text);
  for (std::size_t i = 0; i < feed->targets.size(); ++i) {
    check(feed->find(feed->targets[i].address) == &feed->targets[i], "no address is listed twice",
          text);
    const auto again = config::parse_address(feed->targets[i].address.to_string());
    check(again && *again == feed->targets[i].address, "every address prints and parses back",
          text);
  }
  const std::string rendered = config::render_feed(*feed);
  const auto reread = config::parse_feed(rendered, "rendered.yaml");
  check(reread.has_value(), "a rendered feed parses", text);
  check(reread->targets == feed->targets, "a rendered feed reads back to the same entries", text);
  check(reread->explicit_list, "a rendered feed always has an explicit list", text);
  return 0;
}
