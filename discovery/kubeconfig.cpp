#include "discovery/kubeconfig.hpp"

#include "config/address.hpp"
#include "config/file.hpp"

#include <openssl/evp.h>
#include <yaml-cpp/depthguard.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

namespace apilb::discovery {
namespace {

namespace fs = std::filesystem;

const char* const kUseInstead =
    "use a client certificate or a token (kubectl config view --raw --minify shows what this "
    "context uses)";

std::string in_quotes(std::string_view text) { return '"' + std::string(text) + '"'; }

// Thrown anywhere below read_kubeconfig() and caught only by load_kubeconfig(), next to yaml-cpp's
// own exceptions.
struct Invalid {
  YAML::Mark mark;
  std::string field;
  std::string reason;
};

// One value of the kubeconfig with its path ("users[0].user.token") and position. Unlike config/'s
// reader it ignores keys it does not know: kubeconfigs carry extensions, preferences and fields
// of newer kubectl versions that discovery has no use for. An absent or null value reads as
// absent, marked at its key (or at its parent when the key is missing).
class Node {
 public:
  Node(YAML::Node node, std::string path, YAML::Mark mark)
      : node_(std::move(node)), path_(std::move(path)), mark_(mark) {}

  [[noreturn]] void fail(std::string reason) const {
    throw Invalid{mark_, path_, std::move(reason)};
  }

  bool present() const { return node_.IsDefined() && !node_.IsNull(); }
  const std::string& path() const { return path_; }

  // The member `key` of this map; iterated rather than looked up, which on a scalar would throw
  // and would not give the key's mark.
  Node operator[](std::string_view key) const {
    std::string path = path_.empty() ? std::string(key) : path_ + '.' + std::string(key);
    if (!present()) return {YAML::Node(), std::move(path), mark_};
    expect(YAML::NodeType::Map);
    for (const auto& entry : node_) {
      if (!entry.first.IsScalar() || entry.first.Scalar() != key) continue;
      const YAML::Mark mark = entry.second.IsNull() ? entry.first.Mark() : entry.second.Mark();
      return {entry.second, std::move(path), mark};
    }
    return {YAML::Node(), std::move(path), mark_};
  }

  // The items of this list; absent is empty.
  std::vector<Node> items() const {
    std::vector<Node> out;
    if (!present()) return out;
    expect(YAML::NodeType::Sequence);
    for (const auto& item : node_) {
      const YAML::Mark mark = item.IsNull() ? mark_ : item.Mark();
      out.emplace_back(item, path_ + '[' + std::to_string(out.size()) + ']', mark);
    }
    return out;
  }

  // A string; absent reads as "".
  std::string text() const {
    if (!present()) return {};
    expect(YAML::NodeType::Scalar);
    return node_.Scalar();
  }

  // `true` or `false`; absent is false.
  bool boolean() const {
    const std::string t = text();
    if (t.empty() || t == "false") return false;
    if (t == "true") return true;
    fail(in_quotes(t) + " is not true or false");
  }

  void expect(YAML::NodeType::value type) const {
    static constexpr auto kind = [](YAML::NodeType::value t) {
      switch (t) {
        case YAML::NodeType::Map:
          return "a map";
        case YAML::NodeType::Sequence:
          return "a list";
        case YAML::NodeType::Scalar:
          return "a single value";
        default:
          return "nothing";
      }
    };
    if (node_.Type() != type)
      fail(std::string("expected ") + kind(type) + ", got " + kind(node_.Type()));
  }

 private:
  YAML::Node node_;
  std::string path_;
  YAML::Mark mark_;
};

bool is_blank(std::string_view text) {
  return text.find_first_not_of(" \t\r\n") == std::string_view::npos;
}

// Standard base64 with padding, as kubectl writes the -data fields; line breaks and spaces are
// skipped, as Go's decoder skips them. EVP_DecodeBlock neither skips them nor drops the bytes
// the padding stands for, hence the checks around it.
std::optional<std::string> decode_base64(std::string_view text) {
  std::string clean;
  for (const char c : text)
    if (c != ' ' && c != '\t' && c != '\r' && c != '\n') clean += c;
  if (clean.empty() || clean.size() % 4 != 0 || clean.size() > INT_MAX) return std::nullopt;
  const std::size_t padding = clean.ends_with("==") ? 2 : clean.ends_with('=') ? 1 : 0;
  const auto is_alphabet = [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '/';
  };
  if (!std::all_of(clean.begin(), clean.end() - static_cast<std::ptrdiff_t>(padding), is_alphabet))
    return std::nullopt;
  std::string out(clean.size() / 4 * 3, '\0');
  const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(clean.data()),
                                static_cast<int>(clean.size()));
  if (n < 0 || static_cast<std::size_t>(n) < padding) return std::nullopt;
  out.resize(static_cast<std::size_t>(n) - padding);
  return out;
}

enum class Pem { certificate, key };

// What is wrong with `text` as PEM of `kind`, said to follow "this is" ("not a PEM certificate
// ..."), or nullopt when it looks right. Only the shape: the TLS context parses it at connect,
// but a wrong file is worth reporting at load.
std::optional<std::string> pem_problem(std::string_view text, Pem kind) {
  const bool certificate = text.find("-----BEGIN CERTIFICATE-----") != text.npos;
  const bool key =
      text.find("-----BEGIN ") != text.npos && text.find("PRIVATE KEY-----") != text.npos;
  if (kind == Pem::certificate) {
    if (certificate) return std::nullopt;
    if (key) return "a private key, not a certificate";
    return "not a PEM certificate (no \"-----BEGIN CERTIFICATE-----\" line)";
  }
  if (text.find("-----BEGIN ENCRYPTED PRIVATE KEY-----") != text.npos ||
      text.find("Proc-Type: 4,ENCRYPTED") != text.npos)
    return "an encrypted private key, whose passphrase discovery cannot ask for (openssl pkey "
           "-in KEY -out PLAIN writes it unencrypted)";
  if (key) return std::nullopt;
  if (certificate) return "a certificate, not a private key";
  return "not a PEM private key (no \"-----BEGIN ... PRIVATE KEY-----\" line)";
}

// A file a field names: relative to the kubeconfig's directory, as kubectl resolves it.
fs::path resolve(const fs::path& dir, const std::string& name) {
  const fs::path path(name);
  return path.is_relative() ? dir / path : path;
}

std::string read_named_file(const Node& field, const fs::path& path) {
  int error_number = 0;
  auto text = config::read_text(path, error_number);
  if (!text) field.fail("cannot read " + path.string() + ": " + std::strerror(error_number));
  return std::move(*text);
}

// `key`-data (base64, which wins, as in kubectl) or the file `key` names: PEM text, or "" when
// neither is set.
std::string read_pem(const Node& parent, std::string_view key, Pem kind, const fs::path& dir) {
  const Node data = parent[std::string(key) + "-data"];
  if (const std::string encoded = data.text(); !encoded.empty()) {
    auto decoded = decode_base64(encoded);
    if (!decoded) {
      if (encoded.find("-----BEGIN") != std::string::npos)
        data.fail(
            "not base64: this is the PEM text itself; put it here base64-encoded (base64 "
            "-w0 FILE) or name its file in " +
            std::string(key));
      data.fail("not base64");
    }
    if (const auto problem = pem_problem(*decoded, kind)) data.fail("decoded, this is " + *problem);
    return std::move(*decoded);
  }
  const Node file = parent[key];
  const std::string name = file.text();
  if (name.empty()) return {};
  const fs::path path = resolve(dir, name);
  std::string text = read_named_file(file, path);
  if (const auto problem = pem_problem(text, kind)) file.fail(path.string() + " is " + *problem);
  return text;
}

// The item of `list` whose name is `name`; `referrer` is the field that named it.
Node find_named(const Node& list, const std::string& name, const Node& referrer,
                std::string_view what) {
  std::string defined;
  for (const Node& item : list.items()) {
    const std::string item_name = item["name"].text();
    if (item_name == name) return item;
    if (!item_name.empty()) defined += (defined.empty() ? "" : ", ") + item_name;
  }
  referrer.fail(std::string(what) + ' ' + in_quotes(name) + " is not defined in " + list.path() +
                (defined.empty() ? " (it has none)" : " (defined: " + defined + ")"));
}

// The host the apiserver's certificate must cover: "https://[fd00::1]:6443/prefix" -> "fd00::1".
// A server without a scheme is https, as kubectl reads it.
std::string server_host(const Node& server) {
  const std::string text = server.text();
  if (text.empty()) server.fail("missing: the cluster names no server");
  std::string_view rest = text;
  if (const auto scheme = rest.find("://"); scheme != std::string_view::npos) {
    std::string name(rest.substr(0, scheme));
    std::ranges::transform(name, name.begin(), [](unsigned char c) { return std::tolower(c); });
    if (name != "https")
      server.fail(in_quotes(text) +
                  ": discovery speaks TLS only: name the apiserver's https:// URL");
    rest.remove_prefix(scheme + 3);
  }
  rest = rest.substr(0, rest.find_first_of("/?#"));
  std::string why;
  const auto address = config::parse_address(rest, &why, 443);
  if (!address) server.fail(in_quotes(text) + ": " + why);
  return address->host;
}

Credentials read_kubeconfig(const YAML::Node& document, const fs::path& file) {
  const fs::path dir = file.parent_path();
  const Node root(document, "", document.Mark());
  if (!root.present()) root.fail("the kubeconfig is empty");
  root.expect(YAML::NodeType::Map);

  const Node current = root["current-context"];
  const std::string context_name = current.text();
  if (context_name.empty())
    current.fail("missing: no context is current (kubectl config use-context NAME sets one)");
  const Node context_entry = find_named(root["contexts"], context_name, current, "context");
  const Node context = context_entry["context"];
  if (!context.present()) context.fail("missing");
  const Node cluster_ref = context["cluster"];
  const Node user_ref = context["user"];
  const std::string cluster_name = cluster_ref.text();
  const std::string user_name = user_ref.text();
  if (cluster_name.empty()) cluster_ref.fail("missing: the context names no cluster");
  if (user_name.empty())
    user_ref.fail("missing: the context names no user, and discovery needs credentials: " +
                  std::string(kUseInstead));

  Credentials out;
  out.source = file.string();

  const Node cluster =
      find_named(root["clusters"], cluster_name, cluster_ref, "cluster")["cluster"];
  if (!cluster.present()) cluster.fail("missing");
  cluster.expect(YAML::NodeType::Map);
  out.server_name = server_host(cluster["server"]);
  if (const std::string name = cluster["tls-server-name"].text(); !name.empty())
    out.server_name = name;
  if (const Node insecure = cluster["insecure-skip-tls-verify"]; insecure.boolean())
    insecure.fail(
        "not supported: discovery always verifies the apiserver's certificate; set "
        "certificate-authority or certificate-authority-data instead");
  out.ca_pem = read_pem(cluster, "certificate-authority", Pem::certificate, dir);
  if (out.ca_pem.empty())
    cluster.fail(
        "no certificate authority: set certificate-authority or certificate-authority-data "
        "(discovery verifies the apiserver against it, never against the system's CAs)");

  const Node user = find_named(root["users"], user_name, user_ref, "user")["user"];
  if (user.present()) user.expect(YAML::NodeType::Map);
  if (const Node exec = user["exec"]; exec.present())
    exec.fail(std::string("exec credential plugins are not supported: ") + kUseInstead);
  if (const Node provider = user["auth-provider"]; provider.present())
    provider.fail(std::string("auth-provider plugins are not supported: ") + kUseInstead);
  for (const char* key : {"username", "password"})
    if (const Node basic = user[key]; basic.present())
      basic.fail(std::string("basic authentication (username and password) is not supported: ") +
                 kUseInstead);

  out.cert_pem = read_pem(user, "client-certificate", Pem::certificate, dir);
  out.key_pem = read_pem(user, "client-key", Pem::key, dir);
  if (out.cert_pem.empty() != out.key_pem.empty()) {
    const bool has_cert = !out.cert_pem.empty();
    const std::string_view given_key = has_cert ? "client-certificate" : "client-key";
    const Node data = user[std::string(given_key) + "-data"];
    const Node given = data.present() ? data : user[given_key];
    given.fail(has_cert ? "a client certificate without its key: set client-key or client-key-data"
                        : "a client key without its certificate: set client-certificate or "
                          "client-certificate-data");
  }

  out.token = user["token"].text();
  if (const Node token_file = user["tokenFile"]; !token_file.text().empty()) {
    const fs::path path = resolve(dir, token_file.text());
    if (is_blank(read_named_file(token_file, path))) token_file.fail(path.string() + " is empty");
    out.token_file = path.string();
    out.token.clear();  // client-go: the file's token takes precedence over `token`
  }
  if (out.cert_pem.empty() && out.token.empty() && out.token_file.empty())
    user.fail(
        "no credentials: set client-certificate and client-key (or their -data), token or "
        "tokenFile");
  return out;
}

config::Error io_error(const fs::path& path, std::string reason) {
  return config::Error{path.string(), 0, 0, "", std::move(reason)};
}

}  // namespace

config::Result<Credentials> load_kubeconfig(const fs::path& file) {
  int error_number = 0;
  const auto text = config::read_text(file, error_number);
  if (!text) return io_error(file, std::string("cannot read: ") + std::strerror(error_number));
  const auto error = [&](const YAML::Mark& mark, std::string field, std::string reason) {
    const bool known = !mark.is_null();  // yaml-cpp counts from 0; errors, as config/'s, from 1
    return config::Error{file.string(), known ? mark.line + 1 : 0, known ? mark.column + 1 : 0,
                         std::move(field), std::move(reason)};
  };
  try {
    return read_kubeconfig(YAML::Load(*text), file);
  } catch (const Invalid& e) {
    return error(e.mark, e.field, e.reason);
  } catch (const YAML::DeepRecursion& e) {  // its own message says "bad file"
    return error(e.mark, "",
                 "invalid YAML: nested too deeply (" + std::to_string(e.depth()) + " levels)");
  } catch (const YAML::Exception& e) {
    return error(e.mark, "", "invalid YAML: " + e.msg);
  }
}

config::Result<Credentials> load_in_cluster(const fs::path& dir) {
  static const std::string kNotMounted =
      " (not in a pod, or the pod does not mount its service account token: "
      "automountServiceAccountToken)";
  const auto read = [&](const fs::path& path) -> config::Result<std::string> {
    int error_number = 0;
    auto text = config::read_text(path, error_number);
    if (!text)
      return io_error(path, std::string("cannot read: ") + std::strerror(error_number) +
                                (error_number == ENOENT ? kNotMounted : ""));
    // Spelled out: a string is also convertible to the Error of a result<string, Error>.
    return config::Result<std::string>(boost::system::in_place_value, std::move(*text));
  };
  Credentials out;
  out.source = dir.string();
  out.server_name = "kubernetes.default.svc";
  const fs::path ca = dir / "ca.crt";
  auto ca_pem = read(ca);
  if (!ca_pem) return ca_pem.error();
  if (const auto problem = pem_problem(*ca_pem, Pem::certificate))
    return io_error(ca, "this is " + *problem);
  out.ca_pem = std::move(*ca_pem);
  const fs::path token = dir / "token";
  auto token_text = read(token);
  if (!token_text) return token_text.error();
  if (is_blank(*token_text)) return io_error(token, "the token is empty");
  out.token_file = token.string();
  return out;
}

}  // namespace apilb::discovery
