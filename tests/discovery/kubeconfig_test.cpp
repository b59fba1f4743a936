#include "discovery/kubeconfig.hpp"

#include "tests/support/process.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <string_view>

namespace apilb::discovery {
namespace {

using test::TempDir;

// Only the shape is checked at load, so PEM-looking text is enough.
constexpr std::string_view kCa =
    "-----BEGIN CERTIFICATE-----\nMIIBdzCCAR2gAwIBAgIUY2E=\n-----END CERTIFICATE-----\n";
constexpr std::string_view kCert =
    "-----BEGIN CERTIFICATE-----\nMIIBeDCCAR6gAwIBAgIUYWRtaW4=\n-----END CERTIFICATE-----\n";
constexpr std::string_view kKey =
    "-----BEGIN EC PRIVATE "
    "KEY-----\nMHcCAQEEIIrYSSNQFaA2Hwf1duRSxKtLYX5CB04fSeQ6tF1aY/PuoAoGCCqGSM49\n"
    "-----END EC PRIVATE KEY-----\n";

// RFC 4648 base64 with padding, written out here so that the test does not share the decoder's
// library.
std::string base64(std::string_view bytes) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  for (std::size_t i = 0; i < bytes.size(); i += 3) {
    const std::size_t n = std::min<std::size_t>(3, bytes.size() - i);
    unsigned v = 0;
    for (std::size_t j = 0; j < 3; ++j)
      v = (v << 8) | (j < n ? static_cast<unsigned char>(bytes[i + j]) : 0u);
    for (std::size_t j = 0; j < 4; ++j) out += j <= n ? kAlphabet[(v >> (18 - 6 * j)) & 63] : '=';
  }
  return out;
}

std::string indent(std::string_view block) {
  std::string out;
  std::size_t start = 0;
  while (start < block.size()) {
    const auto end = block.find('\n', start);
    const auto line = block.substr(start, end == block.npos ? block.npos : end - start);
    out += "    " + std::string(line) + '\n';
    if (end == block.npos) break;
    start = end + 1;
  }
  return out;
}

// The users come before the clusters, so that the user block always starts at line 12; the
// cluster block starts at line 12 + (lines of the user block) + 3.
std::string kubeconfig(std::string_view user, std::string_view cluster) {
  return "current-context: admin@kubernetes\n"
         "contexts:\n"
         "- name: other\n"
         "  context: {cluster: other, user: other}\n"
         "- name: admin@kubernetes\n"
         "  context:\n"
         "    cluster: kubernetes\n"
         "    user: kubernetes-admin\n"
         "users:\n"
         "- name: kubernetes-admin\n"
         "  user:\n" +
         indent(user) +
         "clusters:\n"
         "- name: kubernetes\n"
         "  cluster:\n" +
         indent(cluster);
}

const std::string kCluster =
    "server: https://10.0.0.10:6443\ncertificate-authority-data: " + base64(kCa);
const std::string kUser =
    "client-certificate-data: " + base64(kCert) + "\nclient-key-data: " + base64(kKey);

std::string replaced(std::string text, std::string_view from, std::string_view to) {
  const auto at = text.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  if (at != std::string::npos) text.replace(at, from.size(), to);
  return text;
}

Credentials loaded(const std::filesystem::path& file) {
  auto result = load_kubeconfig(file);
  if (!result) {
    ADD_FAILURE() << result.error().message();
    return {};
  }
  return *result;
}

std::string load_error(const std::filesystem::path& file) {
  auto result = load_kubeconfig(file);
  if (result) {
    ADD_FAILURE() << "loaded, expected an error: " << file;
    return {};
  }
  return result.error().message();
}

// ---- What it reads ----

TEST(LoadKubeconfig, ReadsTheCurrentContextsDataFields) {
  TempDir dir;
  const auto file = dir.write("admin.conf", kubeconfig(kUser, kCluster));
  const Credentials c = loaded(file);
  EXPECT_EQ(c.source, file.string());
  EXPECT_EQ(c.server_name, "10.0.0.10");
  EXPECT_EQ(c.ca_pem, kCa);
  EXPECT_EQ(c.cert_pem, kCert);
  EXPECT_EQ(c.key_pem, kKey);
  EXPECT_EQ(c.token, "");
  EXPECT_EQ(c.token_file, "");
}

TEST(LoadKubeconfig, DecodesDataWithLineBreaksAndEveryPadding) {
  TempDir dir;
  // Three lengths of CA text: 0, 1 and 2 padding characters.
  for (const std::string& ca :
       {std::string(kCa), std::string(kCa) + "x", std::string(kCa) + "xy"}) {
    std::string encoded = base64(ca);
    encoded.insert(20, "\n      ");  // a folded plain scalar: YAML turns the break into a space
    const auto file = dir.write("admin.conf", kubeconfig("token: abc",
                                                         "server: https://k:6443\n"
                                                         "certificate-authority-data: " +
                                                             encoded));
    EXPECT_EQ(loaded(file).ca_pem, ca) << encoded;
  }
}

TEST(LoadKubeconfig, ReadsFilesRelativeToItsDirectoryAndAbsolutePaths) {
  TempDir dir;
  std::filesystem::create_directory(dir / "pki");
  dir.write("pki/ca.crt", kCa);
  dir.write("pki/admin.crt", kCert);
  const auto key = dir.write("pki/admin.key", kKey);
  const auto file =
      dir.write("admin.conf",
                kubeconfig("client-certificate: pki/admin.crt\nclient-key: " + key.string(),
                           "server: https://10.0.0.10:6443\ncertificate-authority: pki/ca.crt"));
  const Credentials c = loaded(file);
  EXPECT_EQ(c.ca_pem, kCa);
  EXPECT_EQ(c.cert_pem, kCert);
  EXPECT_EQ(c.key_pem, kKey);
}

TEST(LoadKubeconfig, PrefersDataToTheFileAsKubectlDoes) {
  TempDir dir;
  const auto file = dir.write(
      "admin.conf", kubeconfig(kUser, kCluster + "\ncertificate-authority: does-not-exist.crt"));
  EXPECT_EQ(loaded(file).ca_pem, kCa);
}

TEST(LoadKubeconfig, ReadsAToken) {
  TempDir dir;
  const auto file = dir.write("admin.conf", kubeconfig("token: abc.def", kCluster));
  const Credentials c = loaded(file);
  EXPECT_EQ(c.token, "abc.def");
  EXPECT_EQ(c.token_file, "");
  EXPECT_EQ(c.cert_pem, "");
}

TEST(LoadKubeconfig, ReadsATokenFileRelativeToItsDirectoryWhichWinsOverAToken) {
  TempDir dir;
  dir.write("sa-token", "eyJhbGciOiJSUzI1NiJ9.e30.c2ln\n");
  const auto file =
      dir.write("admin.conf", kubeconfig("tokenFile: sa-token\ntoken: stale", kCluster));
  const Credentials c = loaded(file);
  EXPECT_EQ(c.token_file, (dir / "sa-token").string());
  EXPECT_EQ(c.token, "");  // client-go: the file's token takes precedence
}

TEST(LoadKubeconfig, KeepsAClientCertificateAndATokenTogether) {
  TempDir dir;
  const auto file = dir.write("admin.conf", kubeconfig(kUser + "\ntoken: abc", kCluster));
  const Credentials c = loaded(file);
  EXPECT_EQ(c.cert_pem, kCert);
  EXPECT_EQ(c.token, "abc");
}

TEST(LoadKubeconfig, TakesTheServerNameFromTlsServerName) {
  TempDir dir;
  const auto file = dir.write(
      "admin.conf", kubeconfig(kUser, kCluster + "\ntls-server-name: kubernetes.default.svc"));
  EXPECT_EQ(loaded(file).server_name, "kubernetes.default.svc");
}

TEST(LoadKubeconfig, TakesTheServerNameFromTheServersHost) {
  TempDir dir;
  for (const auto& [server, host] : std::initializer_list<std::pair<std::string, std::string>>{
           {"https://10.0.0.10:6443", "10.0.0.10"},
           {"https://10.0.0.10", "10.0.0.10"},
           {"https://[fd00::10]:6443", "fd00::10"},
           {"https://[fd00::10]", "fd00::10"},
           {"https://api.example.com:6443/prefix?x=1", "api.example.com"},
           {"https://api.example.com", "api.example.com"},
           {"HTTPS://api.example.com/", "api.example.com"},
           {"api.example.com:6443", "api.example.com"},  // no scheme: https, as kubectl reads it
       }) {
    const auto file = dir.write(
        "admin.conf", kubeconfig(kUser, "server: \"" + server +
                                            "\"\ncertificate-authority-data: " + base64(kCa)));
    EXPECT_EQ(loaded(file).server_name, host) << server;
  }
}

TEST(LoadKubeconfig, PicksTheCurrentContextAmongSeveral) {
  TempDir dir;
  // The other context's user exists too, and would be refused (an exec plugin).
  const std::string text = replaced(
      kubeconfig(kUser, kCluster) + "- name: other\n  cluster: {server: https://192.0.2.1:6443, " +
          "certificate-authority-data: " + base64(kCa) + "}\n",
      "users:\n", "users:\n- name: other\n  user: {exec: {command: aws}}\n");
  EXPECT_EQ(loaded(dir.write("admin.conf", text)).server_name, "10.0.0.10");
  const std::string other =
      replaced(text, "current-context: admin@kubernetes", "current-context: other");
  EXPECT_NE(load_error(dir.write("other.conf", other))
                .find(":11:16: users[0].user.exec: exec credential plugins are not supported"),
            std::string::npos);
}

// ---- What it refuses, and where ----

// "FILE:" + the rest.
std::string at(const std::filesystem::path& file, std::string_view rest) {
  return file.string() + ':' + std::string(rest);
}

TEST(LoadKubeconfig, RefusesAnExecPlugin) {
  TempDir dir;
  const auto file =
      dir.write("admin.conf", kubeconfig("exec:\n  apiVersion: client.authentication.k8s.io/v1\n"
                                         "  command: aws\n  args: [eks, get-token]",
                                         kCluster));
  EXPECT_EQ(load_error(file),
            at(file,
               "13:7: users[0].user.exec: exec credential plugins are not supported: use a "
               "client certificate or a token (kubectl config view --raw --minify shows "
               "what this context uses)"));
}

TEST(LoadKubeconfig, RefusesAnAuthProvider) {
  TempDir dir;
  const auto file = dir.write("admin.conf", kubeconfig("auth-provider: {name: oidc}", kCluster));
  EXPECT_EQ(load_error(file),
            at(file,
               "12:20: users[0].user.auth-provider: auth-provider plugins are not "
               "supported: use a client certificate or a token (kubectl config view --raw "
               "--minify shows what this context uses)"));
}

TEST(LoadKubeconfig, RefusesUsernameAndPassword) {
  TempDir dir;
  const auto file =
      dir.write("admin.conf", kubeconfig("username: admin\npassword: secret", kCluster));
  EXPECT_EQ(load_error(file),
            at(file,
               "12:15: users[0].user.username: basic authentication (username and "
               "password) is not supported: use a client certificate or a token (kubectl "
               "config view --raw --minify shows what this context uses)"));
  const auto password = dir.write("password.conf", kubeconfig("password: secret", kCluster));
  EXPECT_NE(load_error(password).find(":12:15: users[0].user.password: basic authentication"),
            std::string::npos);
}

TEST(LoadKubeconfig, RefusesAContextClusterOrUserThatIsNotDefined) {
  TempDir dir;
  const std::string text = kubeconfig(kUser, kCluster);
  const auto context = dir.write(
      "context.conf", replaced(text, "current-context: admin@kubernetes", "current-context: prod"));
  EXPECT_EQ(load_error(context),
            at(context,
               "1:18: current-context: context \"prod\" is not defined in contexts "
               "(defined: other, admin@kubernetes)"));
  const auto cluster =
      dir.write("cluster.conf", replaced(text, "    cluster: kubernetes", "    cluster: prod"));
  EXPECT_EQ(load_error(cluster),
            at(cluster,
               "7:14: contexts[1].context.cluster: cluster \"prod\" is not defined in "
               "clusters (defined: kubernetes)"));
  const auto user =
      dir.write("user.conf", replaced(text, "    user: kubernetes-admin", "    user: prod"));
  EXPECT_EQ(load_error(user), at(user,
                                 "8:11: contexts[1].context.user: user \"prod\" is not "
                                 "defined in users (defined: kubernetes-admin)"));
  const auto none = dir.write(
      "none.conf", replaced(text, "current-context: admin@kubernetes\n", "kind: Config\n"));
  EXPECT_EQ(load_error(none),
            at(none,
               "1:1: current-context: missing: no context is current (kubectl config "
               "use-context NAME sets one)"));
}

TEST(LoadKubeconfig, RefusesInsecureSkipTlsVerify) {
  TempDir dir;
  const auto file = dir.write("admin.conf", kubeconfig("token: abc",
                                                       "server: https://10.0.0.10:6443\n"
                                                       "insecure-skip-tls-verify: true"));
  EXPECT_EQ(load_error(file),
            at(file,
               "17:31: clusters[0].cluster.insecure-skip-tls-verify: not supported: "
               "discovery always verifies the apiserver's certificate; set "
               "certificate-authority or certificate-authority-data instead"));
  const auto off =
      dir.write("off.conf", kubeconfig("token: abc", kCluster + "\ninsecure-skip-tls-verify: "
                                                                "false"));
  EXPECT_EQ(loaded(off).ca_pem, kCa);
}

TEST(LoadKubeconfig, RefusesAClusterWithoutCertificateAuthority) {
  TempDir dir;
  const auto file =
      dir.write("admin.conf", kubeconfig("token: abc", "server: https://10.0.0.10:6443"));
  EXPECT_EQ(load_error(file),
            at(file,
               "16:5: clusters[0].cluster: no certificate authority: set "
               "certificate-authority or certificate-authority-data (discovery verifies "
               "the apiserver against it, never against the system's CAs)"));
}

TEST(LoadKubeconfig, RefusesAUserWithoutCredentials) {
  TempDir dir;
  const auto file = dir.write("admin.conf", kubeconfig("as: system:admin", kCluster));
  EXPECT_EQ(load_error(file), at(file,
                                 "12:5: users[0].user: no credentials: set "
                                 "client-certificate and client-key (or their -data), "
                                 "token or tokenFile"));
  const auto empty =
      dir.write("empty.conf", replaced(kubeconfig("", kCluster), "  user:\n", "  user: {}\n"));
  EXPECT_NE(load_error(empty).find(":11:9: users[0].user: no credentials"), std::string::npos);
}

TEST(LoadKubeconfig, RefusesACertificateWithoutItsKey) {
  TempDir dir;
  const auto file =
      dir.write("admin.conf", kubeconfig("client-certificate-data: " + base64(kCert), kCluster));
  EXPECT_EQ(load_error(file),
            at(file,
               "12:30: users[0].user.client-certificate-data: a client certificate "
               "without its key: set client-key or client-key-data"));
}

TEST(LoadKubeconfig, RefusesDataThatIsNotBase64) {
  TempDir dir;
  const auto file = dir.write("admin.conf", kubeconfig("client-certificate-data: " + base64(kCert) +
                                                           "\nclient-key-data: bm90*YjY0YTE",
                                                       kCluster));
  EXPECT_EQ(load_error(file), at(file, "13:22: users[0].user.client-key-data: not base64"));
  const auto unpadded =
      dir.write("unpadded.conf", kubeconfig("client-certificate-data: " + base64(kCert) +
                                                "\nclient-key-data: " + base64(kKey).substr(0, 10),
                                            kCluster));
  EXPECT_EQ(load_error(unpadded), at(unpadded, "13:22: users[0].user.client-key-data: not base64"));
  const auto pem = dir.write(
      "pem.conf", kubeconfig(kUser,
                             "server: https://10.0.0.10:6443\n"
                             "certificate-authority-data: \"-----BEGIN CERTIFICATE-----\""));
  EXPECT_NE(load_error(pem).find("clusters[0].cluster.certificate-authority-data: not base64: "
                                 "this is the PEM text itself"),
            std::string::npos);
}

TEST(LoadKubeconfig, RefusesTextThatIsNotTheRightPem) {
  TempDir dir;
  dir.write("ca.crt", "not a certificate\n");
  dir.write("admin.crt", kCert);
  const auto file = dir.write(
      "admin.conf",
      kubeconfig("client-certificate: admin.crt\nclient-key: admin.crt",
                 "server: https://10.0.0.10:6443\ncertificate-authority-data: " + base64(kKey)));
  EXPECT_EQ(load_error(file),
            at(file,
               "18:33: clusters[0].cluster.certificate-authority-data: decoded, this is a "
               "private key, not a certificate"));
  const auto swapped = dir.write(
      "swapped.conf", kubeconfig("client-certificate: admin.crt\nclient-key: admin.crt", kCluster));
  EXPECT_EQ(load_error(swapped),
            at(swapped, "13:17: users[0].user.client-key: " + (dir / "admin.crt").string() +
                            " is a certificate, not a private key"));
  const auto garbage = dir.write("garbage.conf", kubeconfig(kUser,
                                                            "server: https://10.0.0.10:6443\n"
                                                            "certificate-authority: ca.crt"));
  EXPECT_EQ(
      load_error(garbage),
      at(garbage, "18:28: clusters[0].cluster.certificate-authority: " + (dir / "ca.crt").string() +
                      " is not a PEM certificate (no \"-----BEGIN CERTIFICATE-----\" line)"));
}

TEST(LoadKubeconfig, RefusesAnEncryptedKey) {
  TempDir dir;
  const auto file = dir.write(
      "admin.conf",
      kubeconfig("client-certificate-data: " + base64(kCert) + "\nclient-key-data: " +
                     base64("-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED "
                            "PRIVATE KEY-----\n"),
                 kCluster));
  EXPECT_NE(load_error(file).find("users[0].user.client-key-data: decoded, this is an encrypted "
                                  "private key"),
            std::string::npos);
}

TEST(LoadKubeconfig, NamesTheFieldAndThePathOfAFileItCannotRead) {
  TempDir dir;
  const auto file = dir.write("admin.conf", kubeconfig("tokenFile: missing-token", kCluster));
  EXPECT_EQ(load_error(file),
            at(file, "12:16: users[0].user.tokenFile: cannot read " +
                         (dir / "missing-token").string() + ": No such file or directory"));
  dir.write("blank-token", " \n");
  const auto blank = dir.write("blank.conf", kubeconfig("tokenFile: blank-token", kCluster));
  EXPECT_EQ(
      load_error(blank),
      at(blank, "12:16: users[0].user.tokenFile: " + (dir / "blank-token").string() + " is empty"));
  const auto ca = dir.write("ca.conf", kubeconfig(kUser,
                                                  "server: https://10.0.0.10:6443\n"
                                                  "certificate-authority: /nonexistent/ca"));
  EXPECT_NE(load_error(ca).find("clusters[0].cluster.certificate-authority: cannot read "
                                "/nonexistent/ca: No such file or directory"),
            std::string::npos);
}

TEST(LoadKubeconfig, RefusesAServerThatIsNotHttpsOrHasNoHost) {
  TempDir dir;
  const auto http = dir.write("http.conf", kubeconfig("token: abc",
                                                      "server: http://10.0.0.10:8080\n"
                                                      "certificate-authority-data: " +
                                                          base64(kCa)));
  EXPECT_EQ(load_error(http), at(http,
                                 "16:13: clusters[0].cluster.server: "
                                 "\"http://10.0.0.10:8080\": discovery speaks TLS only: "
                                 "name the apiserver's https:// URL"));
  const auto bad = dir.write(
      "bad.conf", kubeconfig("token: abc",
                             "server: https://:6443\ncertificate-authority-data: " + base64(kCa)));
  EXPECT_EQ(load_error(bad),
            at(bad, "16:13: clusters[0].cluster.server: \"https://:6443\": missing host"));
  const auto missing = dir.write(
      "missing.conf", kubeconfig("token: abc", "certificate-authority-data: " + base64(kCa)));
  EXPECT_EQ(load_error(missing),
            at(missing, "16:5: clusters[0].cluster.server: missing: the cluster names no server"));
}

TEST(LoadKubeconfig, ReportsAFileItCannotReadOrParse) {
  TempDir dir;
  const auto missing = dir / "missing.conf";
  EXPECT_EQ(load_error(missing), missing.string() + ": cannot read: No such file or directory");
  const auto invalid = dir.write("invalid.conf", "current-context: [admin\n");
  EXPECT_TRUE(load_error(invalid).starts_with(invalid.string() + ":2:1: invalid YAML: "))
      << load_error(invalid);
  const auto empty = dir.write("empty.conf", "");
  EXPECT_EQ(load_error(empty), empty.string() + ": the kubeconfig is empty");
  const auto list = dir.write("list.conf", "- a\n");
  EXPECT_EQ(load_error(list), list.string() + ":1:1: expected a map, got a list");
  const auto wrong_type = dir.write("wrong.conf", "current-context: admin\ncontexts: {a: b}\n");
  EXPECT_EQ(load_error(wrong_type),
            wrong_type.string() + ":2:11: contexts: expected a list, got a map");
}

TEST(LoadKubeconfig, SurvivesDeeplyNestedYaml) {
  TempDir dir;
  const auto file =
      dir.write("deep.conf", "users: " + std::string(5000, '[') + std::string(5000, ']') + "\n");
  EXPECT_NE(load_error(file).find("invalid YAML: nested too deeply"), std::string::npos)
      << load_error(file);
}

// ---- In a pod ----

TEST(LoadInCluster, ReadsTheServiceAccountFiles) {
  TempDir dir;
  dir.write("ca.crt", kCa);
  dir.write("token", "eyJhbGciOiJSUzI1NiJ9.e30.c2ln");
  dir.write("namespace", "kube-system");
  auto result = load_in_cluster(dir.path());
  ASSERT_TRUE(result) << result.error().message();
  EXPECT_EQ(result->source, dir.path().string());
  EXPECT_EQ(result->server_name, "kubernetes.default.svc");
  EXPECT_EQ(result->ca_pem, kCa);
  EXPECT_EQ(result->token_file, (dir / "token").string());
  EXPECT_EQ(result->token, "");
  EXPECT_EQ(result->cert_pem, "");
}

TEST(LoadInCluster, RefusesAMissingOrWrongCaAndAMissingOrEmptyToken) {
  TempDir dir;
  auto result = load_in_cluster(dir.path());
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().message(),
            (dir / "ca.crt").string() +
                ": cannot read: No such file or directory (not in a pod, or the pod does not "
                "mount its service account token: automountServiceAccountToken)");

  dir.write("ca.crt", "junk");
  result = load_in_cluster(dir.path());
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().message(),
            (dir / "ca.crt").string() +
                ": this is not a PEM certificate (no \"-----BEGIN CERTIFICATE-----\" line)");

  dir.write("ca.crt", kCa);
  result = load_in_cluster(dir.path());
  ASSERT_FALSE(result);
  EXPECT_TRUE(result.error().message().starts_with((dir / "token").string() +
                                                   ": cannot read: No such file or directory"))
      << result.error().message();

  dir.write("token", "\n");
  result = load_in_cluster(dir.path());
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().message(), (dir / "token").string() + ": the token is empty");
}

}  // namespace
}  // namespace apilb::discovery
