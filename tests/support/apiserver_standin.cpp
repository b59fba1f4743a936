// apiserver-standin: a stand-in kube-apiserver for tests and the README demo. HTTPS (or plain HTTP
// with --plain) with the endpoints a load balancer and its health checks touch: GET / answers the
// stand-in's name, /readyz, /livez and /healthz behave like the apiserver's, and /readyz can be
// flipped at run time with PUT /standin/readyz?status=500. Without --cert/--key it makes itself a
// self-signed ECDSA P-256 certificate (SANs from --san) and can write it out for clients to trust.
//
// With --slice-file it also serves the list/watch protocol of discovery.k8s.io/v1 EndpointSlices
// in namespace default from a JSON file the test rewrites atomically, {"resourceVersion": 12,
// "compacted": 10, "slices": [...]}: several stand-ins read the same file, so they agree on the
// slices as masters sharing etcd do. Watches send ADDED/MODIFIED/DELETED diffs when the file's
// resourceVersion rises, BOOKMARKs, a 410 Expired below "compacted", and end after timeoutSeconds;
// POST /standin/drop-watches cuts every open watch mid-chunk (a master dying under its watchers).
//
// Once listening it prints exactly one line, `apiserver-standin NAME listening on HOST:PORT`
// (after `... control on HOST:PORT` when --control is given), so --listen 127.0.0.1:0 works.
// SIGTERM or SIGINT: exits 0 at once.

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <sys/socket.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ip/v6_only.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <nlohmann/json.hpp>

namespace apilb::standin {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
// Keeps the keys in the file's order, so objects come back as the test wrote them.
using Json = nlohmann::ordered_json;

constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable);

constexpr std::string_view kUsage =
    "usage: apiserver-standin --listen HOST:PORT --name NAME [--plain]\n"
    "         [--cert FILE --key FILE | --san LIST] [--write-cert FILE] [--write-key FILE]\n"
    "         [--client-ca FILE] [--no-anonymous] [--readyz-status CODE] [--control HOST:PORT]\n"
    "         [--threads N] [--slice-file FILE] [--bookmark-interval MS] [--token TOKEN]\n"
    "  --listen        address to serve on; port 0 picks one (default 127.0.0.1:0)\n"
    "  --name          answered by GET / and used as the certificate's CN (default standin)\n"
    "  --plain         plain HTTP instead of HTTPS\n"
    "  --greet         with --plain: speak first, \"apiserver-standin NAME\\n\" on every "
    "connection\n"
    "  --cert, --key   serving certificate (chain) and key, PEM; default: a generated one\n"
    "  --san           SANs of the generated certificate, OpenSSL syntax, \"\" for none\n"
    "                  (default IP:127.0.0.1,IP:::1,DNS:localhost)\n"
    "  --write-cert    write the serving certificate (PEM) here: a CA file for clients\n"
    "  --write-key     write the serving key (PEM) here: lets other stand-ins share the "
    "certificate\n"
    "  --client-ca     verify client certificates against this CA (they stay optional)\n"
    "  --no-anonymous  answer 401 to requests without a verified client certificate or the token\n"
    "  --token         a request with \"Authorization: Bearer TOKEN\" is authorised (a wrong "
    "bearer\n"
    "                  token is refused with 401)\n"
    "  --readyz-status initial /readyz status (default 200)\n"
    "  --control       also serve the same endpoints over plain HTTP here (tests flip /readyz)\n"
    "  --threads       event loops (default 1)\n"
    "  --shutdown-delay MS  on SIGTERM, as kube-apiserver's --shutdown-delay-duration: /readyz "
    "fails\n"
    "                  at once, the listener closes MS later, the process exits 500 ms after that\n"
    "  --slice-file    serve EndpointSlices (list and watch) from this JSON file, re-read when it\n"
    "                  changes: {\"resourceVersion\": N, \"compacted\": N, \"slices\": [...]}\n"
    "  --bookmark-interval MS  between BOOKMARK events of watches with allowWatchBookmarks\n"
    "                  (default 1000)\n"
    "endpoints: GET / /readyz[?verbose] /livez /healthz /standin/whoami /standin/stats\n"
    "           /standin/stream?bytes=N; PUT|POST /standin/readyz?status=CODE[&check=NAME];\n"
    "           POST /standin/drop-watches (cuts open watches mid-chunk);\n"
    "           with --slice-file GET /apis/discovery.k8s.io/v1/namespaces/default/endpointslices\n"
    "           ?labelSelector=K=V[&watch=1&resourceVersion=R&allowWatchBookmarks=true\n"
    "           &timeoutSeconds=T]\n";

struct Options {
  std::string listen = "127.0.0.1:0";
  std::string name = "standin";
  bool plain = false;
  bool greet = false;
  std::string cert_file;
  std::string key_file;
  std::string san = "IP:127.0.0.1,IP:::1,DNS:localhost";
  std::string write_cert;
  std::string write_key;
  std::string client_ca;
  bool anonymous = true;
  int readyz_status = 200;
  std::string control;
  int threads = 1;
  int shutdown_delay_ms = 0;  // 0: SIGTERM stops at once
  std::string slice_file;
  int bookmark_interval_ms = 1000;
  std::string token;
};

[[noreturn]] void fail(std::string_view why) {
  std::cerr << "apiserver-standin: " << why << "\n";
  std::exit(2);
}

std::optional<int> to_int(std::string_view text) {
  int value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

Options parse_options(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string_view flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      std::cout << kUsage;
      std::exit(0);
    }
    if (flag == "--plain") {
      options.plain = true;
      continue;
    }
    if (flag == "--greet") {
      options.greet = true;
      continue;
    }
    if (flag == "--no-anonymous") {
      options.anonymous = false;
      continue;
    }
    if (i + 1 >= argc)
      fail(std::string(flag) + " needs a value (or is unknown)\n" + std::string(kUsage));
    const std::string value = argv[++i];
    if (flag == "--listen") {
      options.listen = value;
    } else if (flag == "--name") {
      options.name = value;
    } else if (flag == "--cert") {
      options.cert_file = value;
    } else if (flag == "--key") {
      options.key_file = value;
    } else if (flag == "--san") {
      options.san = value;
    } else if (flag == "--write-cert") {
      options.write_cert = value;
    } else if (flag == "--write-key") {
      options.write_key = value;
    } else if (flag == "--client-ca") {
      options.client_ca = value;
    } else if (flag == "--control") {
      options.control = value;
    } else if (flag == "--readyz-status") {
      const auto status = to_int(value);
      if (!status || *status < 100 || *status > 599)
        fail("--readyz-status: not an HTTP status: " + value);
      options.readyz_status = *status;
    } else if (flag == "--threads") {
      const auto threads = to_int(value);
      if (!threads || *threads < 1 || *threads > 256) fail("--threads: want 1..256, got " + value);
      options.threads = *threads;
    } else if (flag == "--shutdown-delay") {
      const auto delay = to_int(value);
      if (!delay || *delay < 0) fail("--shutdown-delay: want milliseconds, got " + value);
      options.shutdown_delay_ms = *delay;
    } else if (flag == "--slice-file") {
      options.slice_file = value;
    } else if (flag == "--bookmark-interval") {
      const auto interval = to_int(value);
      if (!interval || *interval < 1) fail("--bookmark-interval: want milliseconds, got " + value);
      options.bookmark_interval_ms = *interval;
    } else if (flag == "--token") {
      if (value.empty()) fail("--token: empty");
      options.token = value;
    } else {
      fail("unknown flag " + std::string(flag) + "\n" + std::string(kUsage));
    }
  }
  if (options.cert_file.empty() != options.key_file.empty()) fail("--cert and --key go together");
  return options;
}

// "127.0.0.1:6443", "[::1]:6443"; IP literals only.
tcp::endpoint parse_endpoint(const std::string& text) {
  std::string host;
  std::string port;
  if (text.starts_with('[')) {
    const auto close = text.find("]:");
    if (close == std::string::npos) fail("bad address " + text);
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string::npos) fail("bad address " + text + " (want HOST:PORT)");
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  const auto number = to_int(port);
  if (!number || *number < 0 || *number > 65535) fail("bad port in " + text);
  boost::system::error_code ec;
  const auto address = asio::ip::make_address(host, ec);
  if (ec) fail("not an IP address: " + host);
  return {address, static_cast<std::uint16_t>(*number)};
}

std::string to_string(const tcp::endpoint& endpoint) {
  const std::string host = endpoint.address().to_string();
  return (endpoint.address().is_v6() ? "[" + host + "]" : host) + ":" +
         std::to_string(endpoint.port());
}

// ---- certificates -----------------------------------------------------------------------------

std::string openssl_error() {
  std::string text;
  while (const unsigned long code = ERR_get_error()) {
    char buffer[256];
    ERR_error_string_n(code, buffer, sizeof buffer);
    if (!text.empty()) text += "; ";
    text += buffer;
  }
  return text.empty() ? "unknown OpenSSL error" : text;
}

void check(bool ok, std::string_view what) {
  if (!ok) throw std::runtime_error(std::string(what) + ": " + openssl_error());
}

struct FreeKey {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
struct FreeCert {
  void operator()(X509* cert) const { X509_free(cert); }
};
struct FreeBio {
  void operator()(BIO* bio) const { BIO_free(bio); }
};
using KeyPtr = std::unique_ptr<EVP_PKEY, FreeKey>;
using CertPtr = std::unique_ptr<X509, FreeCert>;
using BioPtr = std::unique_ptr<BIO, FreeBio>;

void add_extension(X509* cert, X509V3_CTX& ctx, int nid, const std::string& value) {
  X509_EXTENSION* extension = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  check(extension != nullptr, "extension " + std::string(OBJ_nid2sn(nid)) + "=" + value);
  const int added = X509_add_ext(cert, extension, -1);
  X509_EXTENSION_free(extension);
  check(added == 1, "X509_add_ext");
}

// Self-signed, valid from an hour ago for a year. CA:TRUE so that clients can use the certificate
// itself as their CA file, as with `openssl req -x509`.
CertPtr make_certificate(EVP_PKEY* key, const std::string& common_name, const std::string& san) {
  CertPtr cert(X509_new());
  check(cert != nullptr, "X509_new");
  check(X509_set_version(cert.get(), X509_VERSION_3) == 1, "X509_set_version");
  {
    std::unique_ptr<BIGNUM, decltype(&BN_free)> serial(BN_new(), BN_free);
    check(serial && BN_rand(serial.get(), 63, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) == 1, "BN_rand");
    check(BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(cert.get())) != nullptr, "serial");
  }
  check(X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600) != nullptr, "notBefore");
  check(X509_gmtime_adj(X509_getm_notAfter(cert.get()), 365L * 24 * 3600) != nullptr, "notAfter");
  check(X509_set_pubkey(cert.get(), key) == 1, "X509_set_pubkey");
  X509_NAME* name = X509_get_subject_name(cert.get());
  check(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                   reinterpret_cast<const unsigned char*>(common_name.c_str()), -1,
                                   -1, 0) == 1,
        "subject CN");
  check(X509_set_issuer_name(cert.get(), name) == 1, "X509_set_issuer_name");

  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, cert.get(), cert.get(), nullptr, nullptr, 0);
  add_extension(cert.get(), ctx, NID_basic_constraints, "critical,CA:TRUE");
  add_extension(cert.get(), ctx, NID_key_usage,
                "critical,digitalSignature,keyEncipherment,keyCertSign");
  add_extension(cert.get(), ctx, NID_ext_key_usage, "serverAuth,clientAuth");
  add_extension(cert.get(), ctx, NID_subject_key_identifier, "hash");
  add_extension(cert.get(), ctx, NID_authority_key_identifier, "keyid:always");
  if (!san.empty()) add_extension(cert.get(), ctx, NID_subject_alt_name, san);
  check(X509_sign(cert.get(), key, EVP_sha256()) > 0, "X509_sign");
  return cert;
}

void write_pem(const std::string& path, X509* cert, EVP_PKEY* key) {
  BioPtr bio(BIO_new_file(path.c_str(), "w"));
  check(bio != nullptr, "open " + path);
  if (cert != nullptr) check(PEM_write_bio_X509(bio.get(), cert) == 1, "write " + path);
  if (key != nullptr) {
    check(PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) == 1,
          "write " + path);
  }
}

void configure_tls(ssl::context& tls, const Options& options) {
  SSL_CTX* ctx = tls.native_handle();
  if (!options.cert_file.empty()) {
    tls.use_certificate_chain_file(options.cert_file);
    tls.use_private_key_file(options.key_file, ssl::context::pem);
  } else {
    KeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
    check(key != nullptr, "EVP_PKEY_Q_keygen");
    CertPtr cert = make_certificate(key.get(), options.name, options.san);
    check(SSL_CTX_use_certificate(ctx, cert.get()) == 1, "SSL_CTX_use_certificate");
    check(SSL_CTX_use_PrivateKey(ctx, key.get()) == 1, "SSL_CTX_use_PrivateKey");
  }
  if (!options.write_cert.empty())
    write_pem(options.write_cert, SSL_CTX_get0_certificate(ctx), nullptr);
  if (!options.write_key.empty())
    write_pem(options.write_key, nullptr, SSL_CTX_get0_privatekey(ctx));
  if (!options.client_ca.empty()) {
    tls.load_verify_file(options.client_ca);
    // Optional, as on a kube-apiserver: a client without a certificate is anonymous.
    tls.set_verify_mode(ssl::verify_peer);
  }
}

// ---- EndpointSlices ---------------------------------------------------------------------------

constexpr std::string_view kSlicesPath =
    "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices";

// One state of the slice file: what the masters' etcd holds at resource_version.
struct Snapshot {
  std::int64_t resource_version = 0;
  std::int64_t compacted = 0;
  std::vector<Json> slices;  // each with metadata.resourceVersion filled in
};
using SnapshotPtr = std::shared_ptr<const Snapshot>;

// nullopt (and why) when the text is not a slice file: the caller keeps its last state.
std::optional<Snapshot> parse_slice_file(const std::string& text, std::string& why) {
  Json file = Json::parse(text, nullptr, false);
  if (file.is_discarded() || !file.is_object()) {
    why = "not a JSON object";
    return std::nullopt;
  }
  Snapshot snapshot;
  const auto rv = file.find("resourceVersion");
  if (rv == file.end() || !rv->is_number_integer()) {
    why = "resourceVersion: want an integer";
    return std::nullopt;
  }
  snapshot.resource_version = rv->get<std::int64_t>();
  if (const auto compacted = file.find("compacted"); compacted != file.end()) {
    if (!compacted->is_number_integer()) {
      why = "compacted: want an integer";
      return std::nullopt;
    }
    snapshot.compacted = compacted->get<std::int64_t>();
  }
  const auto slices = file.find("slices");
  if (slices == file.end() || !slices->is_array()) {
    why = "slices: want an array";
    return std::nullopt;
  }
  for (Json& slice : *slices) {
    const auto metadata = slice.is_object() ? slice.find("metadata") : slice.end();
    if (!slice.is_object() || metadata == slice.end() || !metadata->is_object() ||
        !metadata->contains("name") || !(*metadata)["name"].is_string()) {
      why = "slices: each wants metadata.name";
      return std::nullopt;
    }
    if (!metadata->contains("resourceVersion"))
      (*metadata)["resourceVersion"] = std::to_string(snapshot.resource_version);
    snapshot.slices.push_back(std::move(slice));
  }
  return snapshot;
}

// The slice file's states, shared by every loop thread: the file poller (main loop) publishes,
// lists and watches read. It keeps the states it has seen, so that a watch from R diffs against
// the state at R as etcd's history would; a watch from before them all starts from nothing.
class SliceStore {
 public:
  SnapshotPtr current() const {
    std::lock_guard lock(mutex_);
    return history_.back();
  }
  // The latest state at or before `rv`.
  SnapshotPtr at(std::int64_t rv) const {
    static const SnapshotPtr empty = std::make_shared<const Snapshot>();
    std::lock_guard lock(mutex_);
    for (auto it = history_.rbegin(); it != history_.rend(); ++it) {
      if ((*it)->resource_version <= rv) return *it;
    }
    return empty;
  }
  void publish(SnapshotPtr next) {
    std::lock_guard lock(mutex_);
    // A file that went back in time rewrites that part of history.
    std::erase_if(history_, [&](const SnapshotPtr& old) {
      return old->resource_version >= next->resource_version;
    });
    history_.push_back(std::move(next));
    if (history_.size() > kHistory) history_.erase(history_.begin());
  }

 private:
  static constexpr std::size_t kHistory = 1024;
  mutable std::mutex mutex_;
  std::vector<SnapshotPtr> history_{std::make_shared<const Snapshot>()};  // never empty
};

// What stat() says about the file: a rename (the atomic rewrite) changes the inode at least.
struct FileKey {
  dev_t device = 0;
  ino_t inode = 0;
  off_t size = 0;
  std::int64_t mtime_ns = 0;
  bool operator==(const FileKey&) const = default;
};

std::optional<FileKey> file_key(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return std::nullopt;
  return FileKey{.device = st.st_dev,
                 .inode = st.st_ino,
                 .size = st.st_size,
                 .mtime_ns = std::int64_t{st.st_mtim.tv_sec} * 1'000'000'000 + st.st_mtim.tv_nsec};
}

void load_slices(const std::string& path, SliceStore& store) {
  std::ifstream in(path);
  if (!in) {
    std::cerr << "apiserver-standin: " << path << ": cannot read, keeping the last slices"
              << std::endl;
    return;
  }
  std::ostringstream text;
  text << in.rdbuf();
  std::string why;
  auto snapshot = parse_slice_file(text.str(), why);
  if (!snapshot) {
    std::cerr << "apiserver-standin: " << path << ": ignored (" << why
              << "), keeping the last slices" << std::endl;
    return;
  }
  store.publish(std::make_shared<const Snapshot>(std::move(*snapshot)));
}

// Polls rather than inotify: the test's rename may replace the directory entry we would watch,
// and 20 ms is far below any interval a test waits for.
asio::awaitable<void> watch_slice_file(std::string path, SliceStore& store,
                                       std::optional<FileKey> seen) {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  for (;;) {
    timer.expires_after(std::chrono::milliseconds(20));
    auto [ec] = co_await timer.async_wait(use_nothrow);
    if (ec) co_return;
    const auto key = file_key(path);
    if (!key || key == seen) continue;
    seen = key;
    load_slices(path, store);
  }
}

// %XX and '+' decoded, as Go's url.ParseQuery does.
std::string url_decode(std::string_view text) {
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '+') {
      out += ' ';
    } else if (text[i] == '%' && i + 2 < text.size()) {
      int value = 0;
      const auto [end, ec] = std::from_chars(text.data() + i + 1, text.data() + i + 3, value, 16);
      if (ec != std::errc() || end != text.data() + i + 3) {
        out += text[i];
        continue;
      }
      out += static_cast<char>(value);
      i += 2;
    } else {
      out += text[i];
    }
  }
  return out;
}

// Equality-based label selectors ("k=v", "k==v", "k!=v", "k", comma-separated), what discovery
// clients send; an empty selector selects everything.
bool selects(std::string_view selector, const Json& slice) {
  const Json* labels = nullptr;
  if (const auto metadata = slice.find("metadata"); metadata != slice.end()) {
    if (const auto found = metadata->find("labels"); found != metadata->end() && found->is_object())
      labels = &*found;
  }
  const auto label = [&](const std::string& key) -> std::optional<std::string> {
    if (labels == nullptr) return std::nullopt;
    const auto found = labels->find(key);
    if (found == labels->end() || !found->is_string()) return std::nullopt;
    return found->get<std::string>();
  };
  while (!selector.empty()) {
    const auto comma = selector.find(',');
    const std::string_view term = selector.substr(0, comma);
    selector = comma == std::string_view::npos ? "" : selector.substr(comma + 1);
    if (term.empty()) continue;
    const auto not_equal = term.find("!=");
    const auto equal = term.find('=');
    if (not_equal != std::string_view::npos) {
      const auto value = label(std::string(term.substr(0, not_equal)));
      if (value && *value == term.substr(not_equal + 2)) return false;
    } else if (equal != std::string_view::npos) {
      const std::size_t skip = term.substr(equal).starts_with("==") ? 2 : 1;
      const auto value = label(std::string(term.substr(0, equal)));
      if (!value || *value != term.substr(equal + skip)) return false;
    } else if (!label(std::string(term))) {
      return false;
    }
  }
  return true;
}

std::vector<const Json*> selected(const Snapshot& snapshot, std::string_view selector) {
  std::vector<const Json*> out;
  for (const Json& slice : snapshot.slices) {
    if (selects(selector, slice)) out.push_back(&slice);
  }
  return out;
}

std::string event(std::string_view type, const Json& object) {
  Json event = Json::object();
  event["type"] = type;
  event["object"] = object;
  return event.dump() + "\n";
}

std::string bookmark_event(std::int64_t resource_version) {
  Json object = Json::object();
  object["kind"] = "EndpointSlice";
  object["apiVersion"] = "discovery.k8s.io/v1";
  object["metadata"] = Json::object();
  object["metadata"]["resourceVersion"] = std::to_string(resource_version);
  return event("BOOKMARK", object);
}

// Unchanged but for the resourceVersion every slice of a rewritten file gets: no event.
bool same_slice(Json a, Json b) {
  a["metadata"].erase("resourceVersion");
  b["metadata"].erase("resourceVersion");
  return a == b;
}

// The watch events that take a client from `before` to `after`, matched by metadata.name.
std::vector<std::string> diff_events(const Snapshot& before, const Snapshot& after,
                                     std::string_view selector) {
  const auto old_slices = selected(before, selector);
  const auto new_slices = selected(after, selector);
  const auto find = [](const std::vector<const Json*>& in, const Json& name) -> const Json* {
    for (const Json* slice : in) {
      if ((*slice)["metadata"]["name"] == name) return slice;
    }
    return nullptr;
  };
  std::vector<std::string> events;
  for (const Json* slice : new_slices) {
    const Json* old = find(old_slices, (*slice)["metadata"]["name"]);
    if (old == nullptr) {
      events.push_back(event("ADDED", *slice));
    } else if (!same_slice(*old, *slice)) {
      events.push_back(event("MODIFIED", *slice));
    }
  }
  for (const Json* old : old_slices) {
    if (find(new_slices, (*old)["metadata"]["name"]) != nullptr) continue;
    Json gone = *old;  // as the API does: the last state, at the deletion's resourceVersion
    gone["metadata"]["resourceVersion"] = std::to_string(after.resource_version);
    events.push_back(event("DELETED", gone));
  }
  return events;
}

Json status_json(int code, std::string_view reason, std::string_view message) {
  Json status = Json::object();
  status["kind"] = "Status";
  status["apiVersion"] = "v1";
  status["metadata"] = Json::object();
  status["status"] = "Failure";
  status["message"] = message;
  status["reason"] = reason;
  status["code"] = code;
  return status;
}

// ---- HTTP -------------------------------------------------------------------------------------

// Shared by every loop thread.
struct State {
  std::string name;
  bool anonymous = true;
  bool greet = false;
  std::atomic<int> readyz_status{200};
  std::atomic<std::uint64_t> connections{0};
  std::atomic<std::uint64_t> handshakes{0};
  std::atomic<std::uint64_t> requests{0};
  std::atomic<std::uint64_t> readyz_requests{0};
  std::string token;             // --token; empty: bearer tokens are not looked at
  SliceStore* slices = nullptr;  // null without --slice-file
  std::chrono::milliseconds bookmark_interval{1000};
  std::atomic<std::uint64_t> lists{0};
  std::atomic<std::uint64_t> watches{0};          // started
  std::atomic<std::int64_t> watching{0};          // open now
  std::atomic<std::uint64_t> drop_generation{0};  // POST /standin/drop-watches bumps it
  std::mutex mutex;                               // guards the strings below
  std::string failing_check = "etcd";
  std::string last_sni = "-";
  std::string last_client = "-";
};

// What the TLS layer learnt about the client (plain connections: nothing).
struct Peer {
  bool tls = false;
  std::string common_name;  // of a verified client certificate; empty: anonymous
  std::string sni;
};

std::string readyz_body(State& state, int status, bool verbose) {
  if (status == 200 && !verbose) return "ok";
  std::string failing;
  {
    std::lock_guard lock(state.mutex);
    failing = state.failing_check;
  }
  static constexpr std::string_view kChecks[] = {
      "ping",           "log",           "etcd",
      "etcd-readiness", "informer-sync", "poststarthook/start-apiextensions-informers",
      "shutdown"};
  std::string body;
  bool listed = false;
  for (const auto check : kChecks) {
    if (status != 200 && check == failing) {
      body.append("[-]").append(check).append(" failed: reason withheld\n");
      listed = true;
    } else {
      body.append("[+]").append(check).append(" ok\n");
    }
  }
  if (status != 200 && !listed)
    body.append("[-]").append(failing).append(" failed: reason withheld\n");
  body.append(status == 200 ? "readyz check passed\n" : "readyz check failed\n");
  return body;
}

// A query parameter's value ("" when absent).
std::string query_value(std::string_view query, std::string_view key) {
  while (!query.empty()) {
    const auto amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    const auto eq = pair.find('=');
    if (pair.substr(0, eq) == key)
      return eq == std::string_view::npos ? "" : std::string(pair.substr(eq + 1));
    if (amp == std::string_view::npos) break;
    query.remove_prefix(amp + 1);
  }
  return {};
}

// A bearer token, when --token is set, decides alone (a wrong one is refused, as the apiserver's
// token authenticator does); otherwise the client certificate or anonymous access.
bool authorised(const http::request<http::string_body>& request, const State& state,
                const Peer& peer) {
  const auto header = request[http::field::authorization];
  const std::string_view authorization(header.data(), header.size());
  if (!state.token.empty() && authorization.starts_with("Bearer "))
    return authorization.substr(7) == state.token;
  return !peer.tls || state.anonymous || !peer.common_name.empty();
}

http::response<http::string_body> handle(const http::request<http::string_body>& request,
                                         State& state, const Peer& peer) {
  const std::string_view target(request.target().data(), request.target().size());
  const auto question = target.find('?');
  const std::string_view path = target.substr(0, question);
  const std::string_view query =
      question == std::string_view::npos ? "" : target.substr(question + 1);
  const bool is_get = request.method() == http::verb::get || request.method() == http::verb::head;
  const bool is_put = request.method() == http::verb::put || request.method() == http::verb::post;
  const bool control = path.starts_with("/standin/");
  if (!control) ++state.requests;

  http::response<http::string_body> response;
  response.version(request.version());
  response.keep_alive(request.keep_alive());
  response.set(http::field::content_type, "text/plain; charset=utf-8");
  response.set("X-Standin-Name", state.name);
  const auto reply = [&](auto status, std::string body) {
    response.result(status);
    response.body() = std::move(body);
    response.prepare_payload();
    return response;
  };

  if (!control && !authorised(request, state, peer)) {
    response.set(http::field::content_type, "application/json");
    return reply(http::status::unauthorized,
                 status_json(401, "Unauthorized", "Unauthorized").dump() + "\n");
  }
  if (is_get && path == kSlicesPath && state.slices != nullptr) {
    ++state.lists;
    const SnapshotPtr now = state.slices->current();
    Json list = Json::object();
    list["kind"] = "EndpointSliceList";
    list["apiVersion"] = "discovery.k8s.io/v1";
    list["metadata"] = Json::object();
    list["metadata"]["resourceVersion"] = std::to_string(now->resource_version);
    list["items"] = Json::array();
    const std::string selector = url_decode(query_value(query, "labelSelector"));
    for (const Json* slice : selected(*now, selector)) list["items"].push_back(*slice);
    response.set(http::field::content_type, "application/json");
    return reply(http::status::ok, list.dump() + "\n");
  }
  if (is_put && path == "/standin/drop-watches") {
    const auto open = state.watching.load();
    ++state.drop_generation;
    return reply(http::status::ok, "dropping " + std::to_string(open) + " watches\n");
  }
  if (is_get && path == "/") return reply(http::status::ok, state.name + "\n");
  if (is_get && path == "/readyz") {
    ++state.readyz_requests;
    const int status = state.readyz_status.load();
    const bool verbose =
        query == "verbose" || query.starts_with("verbose&") || query.find("&verbose") != query.npos;
    return reply(static_cast<unsigned>(status), readyz_body(state, status, verbose));
  }
  if (is_get && (path == "/livez" || path == "/healthz")) return reply(http::status::ok, "ok");
  if (is_put && path == "/standin/readyz") {
    const auto status = to_int(query_value(query, "status"));
    if (!status || *status < 100 || *status > 599)
      return reply(http::status::bad_request, "want ?status=CODE\n");
    if (const std::string failing = query_value(query, "check"); !failing.empty()) {
      std::lock_guard lock(state.mutex);
      state.failing_check = failing;
    }
    state.readyz_status = *status;
    return reply(http::status::ok, "readyz status " + std::to_string(*status) + "\n");
  }
  if (is_get && path == "/standin/whoami") {
    return reply(http::status::ok,
                 (peer.common_name.empty() ? "system:anonymous" : peer.common_name) + "\n");
  }
  if (is_get && path == "/standin/stats") {
    std::string body = "connections " + std::to_string(state.connections.load()) + "\nhandshakes " +
                       std::to_string(state.handshakes.load()) + "\nrequests " +
                       std::to_string(state.requests.load()) + "\nreadyz_requests " +
                       std::to_string(state.readyz_requests.load()) + "\nreadyz_status " +
                       std::to_string(state.readyz_status.load()) + "\nlists " +
                       std::to_string(state.lists.load()) + "\nwatches " +
                       std::to_string(state.watches.load()) + "\nwatching " +
                       std::to_string(state.watching.load()) + "\n";
    std::lock_guard lock(state.mutex);
    body += "last_sni " + state.last_sni + "\nlast_client " + state.last_client + "\n";
    return reply(http::status::ok, std::move(body));
  }
  return reply(http::status::not_found, "404 page not found\n");
}

// GET /standin/stream?bytes=N: N bytes of body, written as fast as the client reads them, from
// one shared block: a long download (a big list, a busy watch) that costs the stand-in no memory
// (bench/soak.sh's long streams; the client paces it, e.g. curl --limit-rate). False when the
// connection failed.
template <class Stream>
asio::awaitable<bool> stream_bytes(Stream& stream, std::uint64_t bytes, bool keep_alive) {
  static const std::string block(64 * 1024, 'w');
  const std::string head =
      "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: " +
      std::to_string(bytes) + (keep_alive ? "\r\n\r\n" : "\r\nConnection: close\r\n\r\n");
  auto [head_ec, head_written] =
      co_await asio::async_write(stream, asio::buffer(head), use_nothrow);
  if (head_ec) co_return false;
  while (bytes > 0) {
    const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(bytes, block.size()));
    auto [ec, written] =
        co_await asio::async_write(stream, asio::buffer(block.data(), n), use_nothrow);
    if (ec) co_return false;
    bytes -= n;
  }
  co_return keep_alive;
}

// A watch of the slices as parsed from its query: ?watch=1&resourceVersion=R&...
struct WatchRequest {
  std::string selector;
  std::int64_t resource_version = 0;  // 0 or absent: from nothing (every slice ADDED)
  bool bookmarks = false;
  std::optional<std::chrono::seconds> timeout;
  bool keep_alive = true;
  unsigned version = 11;
};

std::optional<WatchRequest> watch_request(const http::request<http::string_body>& request,
                                          std::string_view query) {
  const std::string watch = query_value(query, "watch");
  if (watch != "1" && watch != "true" && watch != "True" && watch != "t") return std::nullopt;
  WatchRequest out;
  out.selector = url_decode(query_value(query, "labelSelector"));
  out.resource_version = std::atoll(query_value(query, "resourceVersion").c_str());
  out.bookmarks = query_value(query, "allowWatchBookmarks") == "true";
  if (const auto seconds = to_int(query_value(query, "timeoutSeconds")); seconds && *seconds > 0)
    out.timeout = std::chrono::seconds(*seconds);
  out.keep_alive = request.keep_alive();
  out.version = request.version();
  return out;
}

template <class Stream>
asio::awaitable<bool> write_chunk(Stream& stream, const std::string& text) {
  const auto chunk = http::make_chunk(asio::buffer(text));
  auto [ec, n] = co_await asio::async_write(stream, chunk, use_nothrow);
  co_return !ec;
}

template <class Stream>
asio::awaitable<bool> write_last_chunk(Stream& stream, bool keep_alive) {
  const auto last = http::make_chunk_last();
  auto [ec, n] = co_await asio::async_write(stream, last, use_nothrow);
  co_return !ec && keep_alive;
}

// The client closed (a clean FIN or a reset): the watch never reads, so it peeks. Bytes the
// client sent (a TLS close_notify) are left for the next write to fail on.
bool peer_gone(int fd) {
  char byte = 0;
  const ssize_t n = ::recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

// Keeps State::watching right on every way out of a watch.
struct Watching {
  explicit Watching(State& state) : state_(state) { ++state_.watching; }
  Watching(const Watching&) = delete;
  Watching& operator=(const Watching&) = delete;
  ~Watching() { --state_.watching; }
  State& state_;
};

// One watch stream, one event per chunk, until timeoutSeconds, the client leaves, or
// drop-watches. True when the connection goes on (keep-alive after a clean end). It polls the
// store every 20 ms like the file poller: simpler than waking watchers across loop threads.
template <class Stream>
asio::awaitable<bool> serve_watch(Stream& stream, const WatchRequest& watch, State& state) {
  ++state.requests;
  ++state.watches;
  const Watching counted(state);
  const std::uint64_t drop_generation = state.drop_generation.load();
  SliceStore& store = *state.slices;

  http::response<http::empty_body> head{http::status::ok, watch.version};
  head.set(http::field::content_type, "application/json");
  head.set("X-Standin-Name", state.name);
  head.keep_alive(watch.keep_alive);
  head.chunked(true);
  http::response_serializer<http::empty_body> serializer{head};
  auto [head_ec, head_written] = co_await http::async_write_header(stream, serializer, use_nothrow);
  if (head_ec) co_return false;

  SnapshotPtr sent = store.current();
  if (watch.resource_version != 0 && watch.resource_version < sent->compacted) {
    const std::string message =
        "too old resource version: " + std::to_string(watch.resource_version) + " (" +
        std::to_string(sent->compacted) + ")";
    const std::string expired = event("ERROR", status_json(410, "Expired", message));
    const bool written = co_await write_chunk(stream, expired);
    if (!written) co_return false;
    co_return co_await write_last_chunk(stream, watch.keep_alive);
  }
  if (watch.resource_version <= sent->resource_version) sent = store.at(watch.resource_version);
  std::int64_t sent_rv = watch.resource_version;

  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  const auto deadline = watch.timeout ? start + *watch.timeout : clock::time_point::max();
  auto next_bookmark = start + state.bookmark_interval;
  const int fd = beast::get_lowest_layer(stream).socket().native_handle();
  asio::steady_timer tick(co_await asio::this_coro::executor);
  for (;;) {
    const SnapshotPtr current = store.current();
    if (current->resource_version > sent_rv) {
      for (const std::string& change : diff_events(*sent, *current, watch.selector)) {
        const bool written = co_await write_chunk(stream, change);
        if (!written) co_return false;
      }
      sent = current;
      sent_rv = current->resource_version;
    }
    if (state.drop_generation.load() != drop_generation) {
      // Half an event, then the socket closed under it: no last chunk, no close_notify.
      const std::string whole = bookmark_event(sent_rv);
      std::ostringstream partial;
      partial << std::hex << whole.size() << "\r\n" << whole.substr(0, whole.size() / 2);
      const std::string cut = partial.str();
      [[maybe_unused]] auto [cut_ec, cut_written] =
          co_await asio::async_write(stream, asio::buffer(cut), use_nothrow);
      boost::system::error_code ignored;
      beast::get_lowest_layer(stream).socket().close(ignored);
      co_return false;
    }
    const auto now = clock::now();
    if (now >= deadline) co_return co_await write_last_chunk(stream, watch.keep_alive);
    if (watch.bookmarks && now >= next_bookmark) {
      const std::string bookmark = bookmark_event(sent_rv);
      const bool written = co_await write_chunk(stream, bookmark);
      if (!written) co_return false;
      next_bookmark = now + state.bookmark_interval;
    }
    if (peer_gone(fd)) co_return false;
    auto wake = std::min(now + std::chrono::milliseconds(20), deadline);
    if (watch.bookmarks) wake = std::min(wake, next_bookmark);
    tick.expires_at(wake);
    auto [tick_ec] = co_await tick.async_wait(use_nothrow);
    if (tick_ec) co_return false;
  }
}

template <class Stream>
asio::awaitable<void> serve_http(Stream& stream, State& state, const Peer& peer) {
  beast::flat_buffer buffer;
  for (;;) {
    http::request<http::string_body> request;
    auto [read_ec, read] = co_await http::async_read(stream, buffer, request, use_nothrow);
    if (read_ec) co_return;  // EOF, reset, garbage: the client is gone or not speaking HTTP
    const std::string_view target(request.target().data(), request.target().size());
    if (request.method() == http::verb::get && target.starts_with("/standin/stream?")) {
      const auto bytes = to_int(query_value(target.substr(target.find('?') + 1), "bytes"));
      if (bytes && *bytes >= 0) {
        const bool keep_alive = request.keep_alive();
        const bool more =
            co_await stream_bytes(stream, static_cast<std::uint64_t>(*bytes), keep_alive);
        if (!more) co_return;
        continue;
      }
    }
    const auto question = target.find('?');
    if (request.method() == http::verb::get && state.slices != nullptr &&
        target.substr(0, question) == kSlicesPath && question != std::string_view::npos &&
        authorised(request, state, peer)) {
      if (const auto watch = watch_request(request, target.substr(question + 1))) {
        const WatchRequest& named = *watch;
        const bool more = co_await serve_watch(stream, named, state);
        if (!more) co_return;
        continue;
      }
    }
    auto response = handle(request, state, peer);
    const bool keep_alive = response.keep_alive();
    auto [write_ec, written] = co_await http::async_write(stream, response, use_nothrow);
    if (write_ec || !keep_alive) co_return;
  }
}

asio::awaitable<void> serve_plain(tcp::socket socket, State& state) {
  beast::tcp_stream stream(std::move(socket));
  if (state.greet) {
    const std::string greeting = "apiserver-standin " + state.name + "\n";
    auto [ec, n] = co_await asio::async_write(stream, asio::buffer(greeting), use_nothrow);
    if (ec) co_return;
  }
  const Peer
      anonymous;  // named: GCC 12 mishandles non-trivial temporaries in a co_await expression
  co_await serve_http(stream, state, anonymous);
  boost::system::error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
}

std::string peer_common_name(SSL* ssl) {
  X509* cert = SSL_get0_peer_certificate(ssl);
  if (cert == nullptr || SSL_get_verify_result(ssl) != X509_V_OK) return {};
  char buffer[256] = {};
  if (X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, buffer,
                                sizeof buffer) < 0)
    return {};
  return buffer;
}

asio::awaitable<void> serve_tls(tcp::socket socket, ssl::context& tls, State& state) {
  beast::ssl_stream<beast::tcp_stream> stream(std::move(socket), tls);
  beast::get_lowest_layer(stream).expires_after(std::chrono::seconds(10));
  auto [handshake_ec] = co_await stream.async_handshake(ssl::stream_base::server, use_nothrow);
  if (handshake_ec) co_return;
  beast::get_lowest_layer(stream).expires_never();  // watches idle for long: no idle timeout
  ++state.handshakes;
  Peer peer{.tls = true, .common_name = peer_common_name(stream.native_handle()), .sni = {}};
  if (const char* sni = SSL_get_servername(stream.native_handle(), TLSEXT_NAMETYPE_host_name))
    peer.sni = sni;
  {
    std::lock_guard lock(state.mutex);
    state.last_sni = peer.sni.empty() ? "-" : peer.sni;
    state.last_client = peer.common_name.empty() ? "-" : peer.common_name;
  }
  co_await serve_http(stream, state, peer);
  beast::get_lowest_layer(stream).expires_after(std::chrono::seconds(2));
  co_await stream.async_shutdown(use_nothrow);
}

void crash_on_exception(std::exception_ptr e) {
  if (!e) return;
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& error) {
    std::cerr << "apiserver-standin: bug: exception escaped a coroutine: " << error.what()
              << std::endl;
  }
  std::abort();
}

// Accepts on `acceptor` (on loops[0]) and hands connections round robin to the loops; each
// connection then lives on its loop alone, so nothing needs a strand.
asio::awaitable<void> accept_loop(tcp::acceptor& acceptor,
                                  std::vector<std::unique_ptr<asio::io_context>>& loops,
                                  ssl::context* tls, State& state, bool count) {
  for (std::size_t next = 0;; ++next) {
    asio::io_context& loop = *loops[next % loops.size()];
    auto [ec, socket] = co_await acceptor.async_accept(loop, use_nothrow);
    if (ec == asio::error::operation_aborted) co_return;
    if (ec) {  // EMFILE and friends: back off rather than spin
      asio::steady_timer pause(acceptor.get_executor(), std::chrono::milliseconds(50));
      co_await pause.async_wait(use_nothrow);
      continue;
    }
    if (count) ++state.connections;
    if (tls != nullptr) {
      asio::co_spawn(loop, serve_tls(std::move(socket), *tls, state), crash_on_exception);
    } else {
      asio::co_spawn(loop, serve_plain(std::move(socket), state), crash_on_exception);
    }
  }
}

tcp::acceptor open_acceptor(asio::io_context& loop, const tcp::endpoint& endpoint) {
  tcp::acceptor acceptor(loop);
  acceptor.open(endpoint.protocol());
  acceptor.set_option(tcp::acceptor::reuse_address(true));
  if (endpoint.address().is_v6()) acceptor.set_option(asio::ip::v6_only(true));
  acceptor.bind(endpoint);
  acceptor.listen();
  return acceptor;
}

int run(const Options& options) {
  State state;
  state.name = options.name;
  state.anonymous = options.anonymous;
  state.greet = options.greet;
  state.readyz_status = options.readyz_status;
  state.token = options.token;
  state.bookmark_interval = std::chrono::milliseconds(options.bookmark_interval_ms);

  std::optional<ssl::context> tls;
  if (!options.plain) {
    tls.emplace(ssl::context::tls_server);
    tls->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                     ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
    configure_tls(*tls, options);
  }

  std::vector<std::unique_ptr<asio::io_context>> loops;
  for (int i = 0; i < options.threads; ++i) loops.push_back(std::make_unique<asio::io_context>(1));
  asio::io_context& main_loop = *loops.front();

  std::optional<SliceStore> slices;
  if (!options.slice_file.empty()) {
    slices.emplace();
    state.slices = &*slices;
    const std::optional<FileKey> seen = file_key(options.slice_file);
    if (seen) {
      load_slices(options.slice_file, *slices);
    } else {
      std::cerr << "apiserver-standin: " << options.slice_file
                << ": not there (yet): no slices at resourceVersion 0" << std::endl;
    }
    asio::co_spawn(main_loop, watch_slice_file(options.slice_file, *slices, seen),
                   crash_on_exception);
  }

  std::optional<tcp::acceptor> control;
  if (!options.control.empty()) {
    control.emplace(open_acceptor(main_loop, parse_endpoint(options.control)));
    asio::co_spawn(main_loop, accept_loop(*control, loops, nullptr, state, false),
                   crash_on_exception);
  }
  tcp::acceptor acceptor = open_acceptor(main_loop, parse_endpoint(options.listen));
  asio::co_spawn(main_loop, accept_loop(acceptor, loops, tls ? &*tls : nullptr, state, true),
                 crash_on_exception);

  // SIGTERM: stop, or shut down as a kube-apiserver does: /readyz red first, the listener closed
  // after the delay (load balancers have drained it by then), in-flight requests finished after.
  asio::signal_set signals(main_loop, SIGTERM, SIGINT);
  asio::steady_timer delay(main_loop);
  auto stop_all = [&] {
    for (auto& loop : loops) loop->stop();
  };
  signals.async_wait([&](const boost::system::error_code& ec, int) {
    if (ec) return;
    if (options.shutdown_delay_ms == 0) return stop_all();
    {
      const std::lock_guard lock(state.mutex);
      state.failing_check = "shutdown";
    }
    state.readyz_status = 500;
    std::cout << "apiserver-standin " << options.name
              << " shutting down: /readyz fails, the listener closes in "
              << options.shutdown_delay_ms << " ms" << std::endl;
    delay.expires_after(std::chrono::milliseconds(options.shutdown_delay_ms));
    delay.async_wait([&](const boost::system::error_code&) {
      boost::system::error_code ignored;
      acceptor.close(ignored);
      std::cout << "apiserver-standin " << options.name << " listener closed" << std::endl;
      delay.expires_after(std::chrono::milliseconds(500));
      delay.async_wait([&](const boost::system::error_code&) { stop_all(); });
    });
  });

  if (control) {
    std::cout << "apiserver-standin " << options.name << " control on "
              << to_string(control->local_endpoint()) << "\n";
  }
  std::cout << "apiserver-standin " << options.name << " listening on "
            << to_string(acceptor.local_endpoint()) << std::endl;

  std::vector<std::thread> threads;
  for (std::size_t i = 1; i < loops.size(); ++i) {
    threads.emplace_back([&loop = *loops[i]] {
      auto idle = asio::make_work_guard(loop);
      loop.run();
    });
  }
  main_loop.run();
  for (auto& thread : threads) thread.join();
  return 0;
}

}  // namespace
}  // namespace apilb::standin

int main(int argc, char** argv) {
  const auto options = apilb::standin::parse_options(argc, argv);
  try {
    return apilb::standin::run(options);
  } catch (const std::exception& error) {
    std::cerr << "apiserver-standin: " << error.what() << std::endl;
    return 1;
  }
}
