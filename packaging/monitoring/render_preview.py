#!/usr/bin/env python3
"""A preview of dashboard.json without Grafana: every panel's queries are run against a real
Prometheus (query_range for time series, query for stats), and the panels are drawn as SVG at
their gridPos, rows repeated per instance as Grafana would. The result is one HTML file (no
script, nothing fetched) to screenshot with headless Chromium. It shows what the queries return;
it is not Grafana's rendering (no tooltips, simpler axes and colours).

  render_preview.py --prometheus http://127.0.0.1:9090 --start UNIX --end UNIX --out preview.html
"""
import argparse
import html
import json
import math
import time
import urllib.parse
import urllib.request
from pathlib import Path

COLORS = ["#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9", "#fade2a"]
ROW_PX = 38  # Grafana: 30 px per grid unit plus an 8 px margin


def query(base, path, params):
    url = base + path + "?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=30) as reply:
        doc = json.load(reply)
    if doc["status"] != "success":
        raise RuntimeError(f"{url}: {doc}")
    return doc["data"]["result"]


def legend(fmt, labels):
    out = fmt or "{{__name__}}"
    for k, v in labels.items():
        out = out.replace("{{" + k + "}}", v)
    return out


def fmt(value, unit):
    if value is None or math.isnan(value):
        return "–"
    if unit == "percentunit":
        return f"{value * 100:.1f}%"
    if unit in ("bytes", "Bps"):
        suffix = "/s" if unit == "Bps" else ""
        for u in ("B", "KiB", "MiB", "GiB"):
            if abs(value) < 1024 or u == "GiB":
                return (f"{value:.0f} {u}" if u == "B" else f"{value:.1f} {u}") + suffix
            value /= 1024
    if unit == "s":
        return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"
    suffix = {"cps": " c/s", "ops": " /s"}.get(unit, "")
    if abs(value) >= 1000:
        return f"{value / 1000:.1f}k{suffix}"
    return (f"{value:.0f}" if value == int(value) else f"{value:.2f}") + suffix


def substitute(expr, instance, rate_interval):
    return (expr.replace("$__rate_interval", rate_interval).replace("$job", "apiserver-lb")
            .replace('instance=~"$instance"', f'instance=~"{instance}"'))


def timeseries_svg(panel, series, start, end, width, height):
    unit = panel["fieldConfig"]["defaults"].get("unit", "short")
    bars = panel["fieldConfig"]["defaults"]["custom"].get("drawStyle") == "bars"
    values = [v for _, pts in series for _, v in pts if not math.isnan(v)]
    lo = panel["fieldConfig"]["defaults"].get("min", min(values + [0]))
    hi = panel["fieldConfig"]["defaults"].get("max", max(values + [1e-9]))
    if hi - lo < 1e-6 and "max" not in panel["fieldConfig"]["defaults"]:
        hi = lo + 1  # all zero (or flat): an axis of 0..1 rather than of rounding noise
    hi *= 1.0 if "max" in panel["fieldConfig"]["defaults"] else 1.1
    left, right, top, bottom = 64, 8, 6, 20
    w, h = width - left - right, height - top - bottom
    x = lambda t: left + (t - start) / (end - start) * w
    y = lambda v: top + h - (v - lo) / (hi - lo) * h
    out = [f'<svg width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">']
    for i in range(5):
        v = lo + (hi - lo) * i / 4
        out.append(f'<line x1="{left}" x2="{left + w}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#2c3235"/>')
        out.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{html.escape(fmt(v, unit))}</text>')
    for i in range(5):
        t = start + (end - start) * i / 4
        anchor = "start" if i == 0 else "end" if i == 4 else "middle"
        out.append(f'<text x="{x(t):.1f}" y="{height - 4}" text-anchor="{anchor}">{time.strftime("%H:%M:%S", time.gmtime(t))}</text>')
    for n, (_, pts) in enumerate(series):
        color = COLORS[n % len(COLORS)]
        if bars:
            for t, v in pts:
                if v > 0 and not math.isnan(v):
                    out.append(f'<rect x="{x(t) - 1.5:.1f}" y="{y(v):.1f}" width="3" height="{y(lo) - y(v):.1f}" fill="{color}"/>')
            continue
        path, pen = [], "M"
        prev = None
        for t, v in pts:
            if math.isnan(v) or (prev is not None and t - prev > 10):
                pen = "M"  # a gap: no line across missing data
            if not math.isnan(v):
                path.append(f"{pen}{x(t):.1f},{y(v):.1f}")
                pen = "L"
            prev = t
        out.append(f'<path d="{" ".join(path)}" fill="none" stroke="{color}" stroke-width="1.5"/>')
    out.append("</svg>")
    return "".join(out)


def render_panel(panel, base, instance, start, end, step, rate_interval, width):
    height = panel["gridPos"]["h"] * ROW_PX - 8
    title = html.escape(panel["title"])
    unit = panel["fieldConfig"]["defaults"].get("unit", "short")
    if panel["type"] == "stat":
        expr = substitute(panel["targets"][0]["expr"], instance, rate_interval)
        result = query(base, "/api/v1/query", {"query": expr, "time": end})
        value = float(result[0]["value"][1]) if result else float("nan")
        color = "#37872d"
        for s in panel["fieldConfig"]["defaults"]["thresholds"]["steps"]:
            if s["value"] is None or (not math.isnan(value) and value >= s["value"]):
                color = {"green": "#37872d", "red": "#c4162a", "orange": "#fa6400"}.get(s["color"], s["color"])
        return (f'<div class="panel stat" style="background:{color};height:{height}px"><div class="title">{title}</div>'
                f'<div class="big">{html.escape(fmt(value, unit))}</div></div>')
    series = []
    for target in panel["targets"]:
        expr = substitute(target["expr"], instance, rate_interval)
        for r in query(base, "/api/v1/query_range", {"query": expr, "start": start, "end": end, "step": step}):
            pts = [(float(t), float(v)) for t, v in r["values"]]
            series.append((legend(target.get("legendFormat"), r["metric"]), pts))
    series.sort(key=lambda s: s[0])
    legend_rows = min(len(series), 4)
    chart_h = height - 28 - legend_rows * 17
    svg = timeseries_svg(panel, series, start, end, width - 16, max(chart_h, 60))
    items = "".join(
        f'<div><i style="background:{COLORS[n % len(COLORS)]}"></i>{html.escape(name)}'
        f'<b>{html.escape(fmt(pts[-1][1] if pts else float("nan"), unit))}</b></div>'
        for n, (name, pts) in enumerate(series[:8]))
    return (f'<div class="panel" style="height:{height}px"><div class="title">{title}</div>{svg}'
            f'<div class="legend">{items or "<div>no data</div>"}</div></div>')


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prometheus", required=True)
    ap.add_argument("--dashboard", default=str(Path(__file__).with_name("dashboard.json")))
    ap.add_argument("--start", type=float, required=True)
    ap.add_argument("--end", type=float, required=True)
    ap.add_argument("--step", default="2")
    ap.add_argument("--rate-interval", default="10s")
    ap.add_argument("--width", type=int, default=1880)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    dash = json.load(open(args.dashboard))
    instances = sorted({r["metric"]["instance"] for r in query(
        args.prometheus, "/api/v1/query", {"query": 'apiserver_lb_ready{job="apiserver-lb"}', "time": args.end})})
    col = args.width / 24
    blocks, y_offset, repeat = [], 0, None
    panels = dash["panels"]

    def place(html_text, grid, y):
        return (f'<div style="position:absolute;left:{grid["x"] * col:.0f}px;top:{y * ROW_PX}px;'
                f'width:{grid["w"] * col - 8:.0f}px">{html_text}</div>')

    # Rows before the repeated one render once (instance = every balancer); the repeated row and
    # the panels under it once per instance, stacked.
    i = 0
    y = 0
    while i < len(panels):
        p = panels[i]
        if p["type"] == "row" and p.get("repeat") == "instance":
            body = []
            i += 1
            while i < len(panels) and panels[i]["type"] != "row":
                body.append(panels[i])
                i += 1
            base_y = p["gridPos"]["y"]
            height = max(q["gridPos"]["y"] + q["gridPos"]["h"] for q in body) - base_y
            for inst in instances:
                blocks.append(place(f'<h2>Balancer {html.escape(inst)}</h2>', {"x": 0, "w": 24}, y))
                for q in body:
                    w = q["gridPos"]["w"] * col - 8
                    blocks.append(place(render_panel(q, args.prometheus, inst, args.start, args.end, args.step,
                                                     args.rate_interval, w), q["gridPos"], y + q["gridPos"]["y"] - base_y))
                y += height
            continue
        if p["type"] == "row":
            blocks.append(place(f'<h2>{html.escape(p["title"])}</h2>', {"x": 0, "w": 24}, y))
            y += 1
        else:
            row_y = y + p["gridPos"]["y"] - (panels[i - 1]["gridPos"]["y"] + 1 if panels[i - 1]["type"] == "row" else 0)
            w = p["gridPos"]["w"] * col - 8
            blocks.append(place(render_panel(p, args.prometheus, ".+", args.start, args.end, args.step,
                                             args.rate_interval, w), p["gridPos"], p["gridPos"]["y"]))
            y = max(y, p["gridPos"]["y"] + p["gridPos"]["h"])
        i += 1
    page = f"""<!doctype html><meta charset="utf-8"><style>
body {{ margin: 0; background: #111217; color: #ccccdc; font: 13px system-ui, sans-serif; }}
header {{ padding: 10px 20px; font-size: 15px; }} header b {{ color: #fff; font-size: 17px; }}
main {{ position: relative; margin: 0 20px; height: {y * ROW_PX}px; }}
h2 {{ font-size: 14px; margin: 10px 0 0; color: #fff; }}
.panel {{ background: #181b1f; border: 1px solid #2c3235; border-radius: 3px; padding: 6px 8px; box-sizing: border-box; overflow: hidden; }}
.title {{ font-weight: 600; color: #fff; margin-bottom: 2px; }}
.stat {{ color: #fff; }} .stat .big {{ font-size: 34px; font-weight: 600; text-align: center; margin-top: 6px; }}
svg text {{ fill: #8e8e8e; font-size: 10px; }}
.legend {{ display: flex; flex-wrap: wrap; gap: 0 14px; font-size: 11px; }}
.legend div {{ white-space: nowrap; }} .legend i {{ display: inline-block; width: 10px; height: 3px; margin: 0 4px 3px 0; }}
.legend b {{ margin-left: 6px; color: #fff; font-weight: 500; }}
</style>
<header><b>apiserver-lb</b> — a preview of packaging/monitoring/dashboard.json: its queries run against
Prometheus {time.strftime("%H:%M", time.gmtime(args.start))}–{time.strftime("%H:%M", time.gmtime(args.end))} UTC,
drawn by render_preview.py (not Grafana)</header>
<main>{"".join(blocks)}</main>"""
    Path(args.out).write_text(page)
    print(f"{args.out}: {len(instances)} balancers, height {y * ROW_PX + 60}px")


if __name__ == "__main__":
    main()
