# Turns bench/compare.sh's raw measurements into Markdown tables and gnuplot data.
#
# Input (tab-separated): phase round subject metric value
#   phase: t1 | t2 (worker threads) | growth; subject: direct apiserver-lb haproxy haproxy-splice nginx
# Variables:
#   phase=t1|t2   the comparison table of that phase (medians, then paired ratios of apiserver-lb)
#   phase=growth  the idle-memory growth table
#   chart=FILE    also write, for the comparison, each subject's median / HAProxy's median per metric
#                 (0 where a subject has no figure, so that gnuplot always has points)
#                 (two blocks for gnuplot: costs, where lower is better, then rates)
#   growth_chart=FILE  also write the growth data (connections, MiB per subject)
# A ratio is the median over rounds of apiserver-lb / other *in the same round*: the subjects of one
# round ran back to back, so pairing cancels part of the drift of a shared machine.
BEGIN {
  FS = "\t"
  nsubjects = split("direct apiserver-lb haproxy haproxy-splice nginx", subject, " ")
  label["direct"] = "no balancer"
  label["apiserver-lb"] = "apiserver-lb"
  label["haproxy"] = "HAProxy"
  label["haproxy-splice"] = "HAProxy splice"
  label["nginx"] = "nginx stream"
  # key | row label | lower or higher is better | reach: against whom | reach ratio
  nrows = 0
  row("bulk1_gbps", "Bulk, 1 stream: Gbit/s", "high", "haproxy-splice", 1.1)
  row("bulk1_cpugb", "Bulk, 1 stream: CPU-s per GB", "low", "haproxy-splice", 0.8)
  row("bulk8_gbps", "Bulk, 8 streams: Gbit/s", "high", "haproxy-splice", 1.1)
  row("bulk8_cpugb", "Bulk, 8 streams: CPU-s per GB", "low", "haproxy-splice", 0.8)
  row("ka128_rps", "Kept-alive, 128 B: req/s", "high", "haproxy", 1.0)
  row("ka128_p50", "Kept-alive, 128 B: p50 ms", "low", "", 0)
  row("ka128_p99", "Kept-alive, 128 B: p99 ms", "low", "haproxy", 1.0)
  row("ka128_cpuk", "Kept-alive, 128 B: CPU-ms per 1,000 req", "low", "haproxy", 0.85)
  row("ka64k_rps", "Kept-alive, 64 KiB: req/s", "high", "haproxy", 1.0)
  row("ka64k_p50", "Kept-alive, 64 KiB: p50 ms", "low", "", 0)
  row("ka64k_p99", "Kept-alive, 64 KiB: p99 ms", "low", "haproxy", 1.0)
  row("ka64k_cpuk", "Kept-alive, 64 KiB: CPU-ms per 1,000 req", "low", "haproxy", 0.85)
  row("cc_cps", "New connections: conn/s", "high", "haproxy", 1.0)
  row("cc_p50", "New connections: p50 ms", "low", "", 0)
  row("cc_p99", "New connections: p99 ms", "low", "haproxy", 1.0)
  row("cc_cpuk", "New connections: CPU-ms per 1,000 conn", "low", "haproxy", 0.8)
  row("idle_kib", "Idle connections: KiB each", "low", "haproxy", 0.5)
  row("idle_kib_x", "Idle, after one exchange: KiB each", "low", "haproxy", 0.5)
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

# Median over rounds of apiserver-lb / o for metric m; "" when no round has both.
function paired_ratio(o, m,    list, n, r) {
  n = 0
  for (r = 1; r <= maxround; r++)
    if ((r, "apiserver-lb", m) in value && (r, o, m) in value && value[r, o, m] > 0)
      list[++n] = value[r, "apiserver-lb", m] / value[r, o, m]
  return n ? median(list, n) : ""
}

$1 == phase {
  value[$2, $3, $4] = $5
  if ($2 + 0 > maxround) maxround = $2 + 0
  seen[$3] = 1
  if (phase == "growth") { count[$4] = 1 }
}

END {
  if (phase == "growth") { growth(); exit }
  header = "| | "
  rule = "| --- | "
  for (i = 1; i <= nsubjects; i++) if (subject[i] in seen) {
    header = header label[subject[i]] " | "
    rule = rule "---: | "
  }
  for (i = 1; i <= nothers; i++) if (other[i] in seen) {
    header = header "apiserver-lb ÷ " label[other[i]] " | "
    rule = rule "---: | "
  }
  print header "reach |"
  print rule "--- |"
  if (chart != "") print "# metric direct apiserver-lb haproxy haproxy-splice nginx (÷ HAProxy)" > chart
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
    for (i = 1; i <= nothers; i++) if (other[i] in seen) {
      ratio[other[i]] = paired_ratio(other[i], m)
      line = line (ratio[other[i]] == "" ? "—" : sprintf("%.2f×", ratio[other[i]])) " | "
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
