# Turns bench/compare.sh's raw measurements into Markdown tables and gnuplot data.
#
# Input (tab-separated): phase round subject metric value
#   phase: t1 | t2 | tN (worker threads) | growth; subject: direct apiserver-lb (relay.engine
#   uring) apiserver-lb-epoll haproxy haproxy-splice nginx
# Variables:
#   phase=t1|tN   the comparison table of that phase (medians, then paired ratios of each
#                 apiserver-lb engine)
#   phase=scaling each apiserver-lb engine's and HAProxy's CPU figures at N workers ÷ at 1 worker
#   phase=growth  the idle-memory growth table
#   chart=FILE    also write, for the comparison, each subject's median / HAProxy's median per metric
#                 (0 where a subject has no figure, so that gnuplot always has points)
#                 (two blocks for gnuplot: costs, where lower is better, then rates)
#   growth_chart=FILE  also write the growth data (connections, MiB per subject)
# A ratio is the median over rounds of apiserver-lb / other *in the same round*: the subjects of one
# round ran back to back, so pairing cancels part of the drift of a shared machine.
BEGIN {
  FS = "\t"
  nsubjects = split("direct apiserver-lb apiserver-lb-epoll haproxy haproxy-splice nginx", subject, " ")
  nmine = split("apiserver-lb apiserver-lb-epoll", mine, " ")
  label["direct"] = "no balancer"
  label["apiserver-lb"] = "apiserver-lb uring"
  label["apiserver-lb-epoll"] = "apiserver-lb epoll"
  short["apiserver-lb"] = "uring"
  short["apiserver-lb-epoll"] = "epoll"
  label["haproxy"] = "HAProxy"
  label["haproxy-splice"] = "HAProxy splice"
  label["nginx"] = "nginx stream"
  # key | row label | lower or higher is better | reach (issue 19): against whom | reach ratio
  nrows = 0
  row("bulk1_gbps", "Bulk, 1 stream: Gbit/s", "high", "haproxy-splice", 1.0)
  row("bulk1_cpugb", "Bulk, 1 stream: CPU-s per GB", "low", "haproxy-splice", 0.5)
  row("bulk8_gbps", "Bulk, 8 streams: Gbit/s", "high", "haproxy-splice", 1.0)
  row("bulk8_cpugb", "Bulk, 8 streams: CPU-s per GB", "low", "haproxy-splice", 0.5)
  row("ka128_rps", "Kept-alive, 128 B: req/s", "high", "haproxy", 1.0)
  row("ka128_p50", "Kept-alive, 128 B: p50 ms", "low", "haproxy", 1.0)
  row("ka128_p99", "Kept-alive, 128 B: p99 ms", "low", "haproxy", 1.0)
  row("ka128_cpuk", "Kept-alive, 128 B: CPU-ms per 1,000 req", "low", "haproxy", 0.75)
  row("ka64k_rps", "Kept-alive, 64 KiB: req/s", "high", "haproxy", 1.0)
  row("ka64k_p50", "Kept-alive, 64 KiB: p50 ms", "low", "haproxy", 1.0)
  row("ka64k_p99", "Kept-alive, 64 KiB: p99 ms", "low", "haproxy", 1.0)
  row("ka64k_cpuk", "Kept-alive, 64 KiB: CPU-ms per 1,000 req", "low", "haproxy", 0.75)
  row("cc_cps", "New connections: conn/s", "high", "haproxy", 1.0)
  row("cc_p50", "New connections: p50 ms", "low", "haproxy", 1.0)
  row("cc_p99", "New connections: p99 ms", "low", "haproxy", 1.0)
  row("cc_cpuk", "New connections: CPU-ms per 1,000 conn", "low", "haproxy", 0.75)
  row("idle_kib", "Idle connections: KiB each", "low", "haproxy", 0.2)
  row("idle_kib_x", "Idle, after one exchange: KiB each", "low", "haproxy", 0.2)
  nothers = split("haproxy haproxy-splice nginx", other, " ")
}

function row(key, text, better, against, ratio) {
  rows[++nrows] = key
  rowlabel[key] = text
  rowbetter[key] = better
  rowagainst[key] = against
  rowratio[key] = ratio
}

# Median of list[1..n] (sorts it in place; insertion sort: a handful of values).
function median(list, n,    i, j, x) {
  for (i = 2; i <= n; i++) {
    x = list[i]
    for (j = i - 1; j >= 1 && list[j] > x; j--) list[j + 1] = list[j]
    list[j + 1] = x
  }
  if (n % 2) return list[(n + 1) / 2]
  return (list[n / 2] + list[n / 2 + 1]) / 2
}

function fmt(x) {
  if (x == "") return "—"
  if (x >= 100) return sprintf("%.0f", x)
  if (x >= 10) return sprintf("%.1f", x)
  if (x >= 1) return sprintf("%.2f", x)
  return sprintf("%.3f", x)
}

function median_of(s, m,    list, n, r) {
  n = 0
  for (r = 1; r <= maxround; r++)
    if ((r, s, m) in value) list[++n] = value[r, s, m]
  return n ? median(list, n) : ""
}

# Median over rounds of me / o for metric m; "" when no round has both.
function paired_ratio(me, o, m,    list, n, r) {
  n = 0
  for (r = 1; r <= maxround; r++)
    if ((r, me, m) in value && (r, o, m) in value && value[r, o, m] > 0)
      list[++n] = value[r, me, m] / value[r, o, m]
  return n ? median(list, n) : ""
}

# phase=scaling: every worker count's medians, keyed by phase.
phase == "scaling" && $1 ~ /^t[0-9]+$/ {
  all[$1, $3, $4, $2] = $5
  if ($2 + 0 > rounds_of[$1]) rounds_of[$1] = $2 + 0
  workers_seen[substr($1, 2) + 0] = 1
  next
}

$1 == phase {
  value[$2, $3, $4] = $5
  if ($2 + 0 > maxround) maxround = $2 + 0
  seen[$3] = 1
  if (phase == "growth") { count[$4] = 1 }
}

END {
  if (phase == "growth") { growth(); exit }
  if (phase == "scaling") { scaling(); exit }
  header = "| | "
  rule = "| --- | "
  for (i = 1; i <= nsubjects; i++) if (subject[i] in seen) {
    header = header label[subject[i]] " | "
    rule = rule "---: | "
  }
  for (j = 1; j <= nmine; j++) if (mine[j] in seen)
    for (i = 1; i <= nothers; i++) if (other[i] in seen) {
      header = header short[mine[j]] " ÷ " label[other[i]] " | "
      rule = rule "---: | "
    }
  print header "reach (uring) |"
  print rule "--- |"
  if (chart != "") print "# metric direct apiserver-lb apiserver-lb-epoll haproxy haproxy-splice nginx (÷ HAProxy)" > chart
  for (k = 1; k <= nrows; k++) {
    m = rows[k]
    line = "| " rowlabel[m] " | "
    any = 0
    for (i = 1; i <= nsubjects; i++) if (subject[i] in seen) {
      med[subject[i]] = median_of(subject[i], m)
      if (med[subject[i]] != "") any = 1
      line = line fmt(med[subject[i]]) " | "
    }
    if (!any) continue
    for (j = 1; j <= nmine; j++) if (mine[j] in seen)
      for (i = 1; i <= nothers; i++) if (other[i] in seen) {
        x = paired_ratio(mine[j], other[i], m)
        if (j == 1) ratio[other[i]] = x
        line = line (x == "" ? "—" : sprintf("%.2f×", x)) " | "
      }
    reach = ""
    o = rowagainst[m]
    if (o != "" && (o in seen) && ratio[o] != "") {
      ok = rowbetter[m] == "high" ? ratio[o] >= rowratio[m] : ratio[o] <= rowratio[m]
      reach = sprintf("%s %s %.2f× %s", ok ? "✅" : "❌", rowbetter[m] == "high" ? "≥" : "≤",
                      rowratio[m], label[o])
    }
    print line reach " |"
    if (chart != "" && med["haproxy"] > 0) {
      kind = rowbetter[m] == "high" ? "rates" : "costs"
      if (m ~ /_p50$/) continue
      out = sprintf("\"%s\"", rowlabel[m])
      for (i = 1; i <= nsubjects; i++)
        out = out " " (med[subject[i]] == "" ? "0" : sprintf("%.4f", med[subject[i]] / med["haproxy"]))
      block[kind] = block[kind] out "\n"
    }
  }
  if (chart != "") {
    printf "%s", block["costs"] > chart
    printf "\n\n# rates\n%s", block["rates"] > chart
  }
}

# Rows: idle connections; columns: each balancer's RSS growth, MiB, and KiB per connection.
function growth(    i, n, c, s, line, rule, list, nc, kib, chartline) {
  nc = 0
  for (c in count) list[++nc] = c + 0
  median(list, nc)
  line = "| idle connections | "
  rule = "| ---: | "
  for (i = 2; i <= nsubjects; i++) if (subject[i] in seen) {
    line = line label[subject[i]] " | "
    rule = rule "---: | "
  }
  print line
  print rule
  if (growth_chart != "") {
    line = "connections"
    for (i = 2; i <= nsubjects; i++) if (subject[i] in seen) line = line " \"" label[subject[i]] "\""
    print line > growth_chart
  }
  for (n = 1; n <= nc; n++) {
    c = list[n]
    line = "| " c " | "
    chartline = c
    for (i = 2; i <= nsubjects; i++) {
      s = subject[i]
      if (!(s in seen)) continue
      kib = median_of(s, c)
      line = line (kib == "" ? "—" : sprintf("%.1f MiB (%.2f KiB each)", kib * c / 1024, kib)) " | "
      chartline = chartline " " (kib == "" ? "0" : sprintf("%.3f", kib * c / 1024))
    }
    print line
    if (growth_chart != "") print chartline > growth_chart
  }
}

# Rows: the CPU and rate figures; columns: per subject, the median at each further worker count ÷
# the median at 1 worker (the scaling of that subject's cost per request).
function scaling(    keys, nk, k, m, i, s, n, line, rule, counts, nc, c, a, b, list, ln, r, label2, ok) {
  nk = split("ka128_cpuk cc_cpuk bulk8_cpugb ka128_rps cc_cps", keys, " ")
  nc = 0
  for (c in workers_seen) if (c + 0 > 1) counts[++nc] = c + 0
  median(counts, nc)
  line = "| figure | "
  rule = "| --- | "
  for (i = 2; i <= nsubjects; i++) {
    s = subject[i]
    if (s == "haproxy-splice" || s == "nginx") continue
    for (n = 1; n <= nc; n++) {
      line = line label[s] " " counts[n] "w ÷ 1w | "
      rule = rule "---: | "
    }
  }
  print line "reach (uring, issue 19) |"
  print rule "--- |"
  for (k = 1; k <= nk; k++) {
    m = keys[k]
    line = "| " rowlabel[m] " | "
    for (i = 2; i <= nsubjects; i++) {
      s = subject[i]
      if (s == "haproxy-splice" || s == "nginx") continue
      for (n = 1; n <= nc; n++) {
        a = phase_median("t1", s, m)
        b = phase_median("t" counts[n], s, m)
        line = line ((a == "" || b == "" || a == 0) ? "—" : sprintf("%.2f", b / a)) " | "
      }
    }
    # CPU per unit of work at N workers within 10 % of 1 worker's (rates have no reach here).
    r = ""
    if (m ~ /cpu/) {
      a = phase_median("t1", "apiserver-lb", m)
      ok = a != ""
      for (n = 1; n <= nc && ok; n++) {
        b = phase_median("t" counts[n], "apiserver-lb", m)
        ok = b != "" && a > 0 && b / a <= 1.10
      }
      r = (ok ? "✅" : "❌") " ≤ 1.10"
    }
    print line r " |"
  }
}

function phase_median(p, s, m,    list, n, r) {
  n = 0
  for (r = 1; r <= rounds_of[p]; r++)
    if ((p, s, m, r) in all) list[++n] = all[p, s, m, r]
  return n ? median(list, n) : ""
}
