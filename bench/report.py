"""The benchmark report: ``results.json``, ``report.md`` (tables) and ``overhead.png`` (plots)."""

from __future__ import annotations

import datetime
import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import redis_target

COLORS = {"direct": "#4d4d4d", "direct-xcore": "#a0a0a0", "proxy": "#1f77b4", "litellm": "#d62728"}
FLAT_MB = 4.0
NOISY = 0.10
TARGETS = {
    "added_p50_c1": 0.5, "added_p99_c1": 2.0, "proxy_max_rps": 2000.0, "ttfb_overhead_p50": 0.5,
    "rss_mb": 80.0, "growth_mb": FLAT_MB,
}


def fmt(value: Any, digits: int = 3) -> str:
    """A number for a table (``n/a`` for missing or NaN)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, int):
        return f"{value:,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def _by(rows: Sequence[dict[str, Any]], key: str) -> dict[Any, dict[str, Any]]:
    return {r[key]: r for r in rows}


def _added(row: dict[str, Any], base: dict[str, Any] | None, pct: str, field: str = "latency_ms") -> float | None:
    if base is None:
        return None
    if field == "latency_ms":
        return row[field][pct] - base[field][pct]
    return row["stream"][field][pct] - base["stream"][field][pct]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def headline(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The figures the issue sets targets for, with the target and whether it is met."""
    t = results["targets"]
    direct, proxy = t.get("direct"), t.get("proxy")
    if not direct or not proxy:
        return []
    out: list[dict[str, Any]] = []
    paired = results.get("paired")
    how = f" (median of {paired['rounds']} paired rounds)" if paired else ""
    dc, pc = _by(direct["closed"], "concurrency"), _by(proxy["closed"], "concurrency")
    if 1 in dc and 1 in pc:
        for pct, key, label in (("p50", "added_p50_c1", "added latency at concurrency 1, p50 (ms)"),
                                ("p99", "added_p99_c1", "added latency at concurrency 1, p99 (ms)")):
            v = statistics.median(paired["json"][f"added_{pct}"]) if paired else _added(pc[1], dc[1], pct)
            out.append({"figure": label + how, "target": f"<= {TARGETS[key]:g}", "value": v, "met": v <= TARGETS[key]})
    v = proxy["max_rps"]
    out.append({"figure": "throughput through the proxy on one core, non-streaming (req/s)",
                "target": f">= {TARGETS['proxy_max_rps']:,.0f}", "value": v, "met": v >= TARGETS["proxy_max_rps"]})
    out += _controls_headline(t.get("proxy-controls"), paired)
    out += redis_target.headline(results)
    ds, ps = _by(direct["stream"], "concurrency"), _by(proxy["stream"], "concurrency")
    if 1 in ds and 1 in ps:
        v = statistics.median(paired["stream"]["added_p50"]) if paired else _added(ps[1], ds[1], "p50", "ttfb_ms")
        out.append({"figure": "streaming TTFB overhead at concurrency 1, p50 (ms)" + how,
                    "target": f"<= {TARGETS['ttfb_overhead_p50']:g}", "value": v, "met": v <= TARGETS["ttfb_overhead_p50"]})
    expected = results["settings"]["chunks"] + 2
    events = [r["stream"]["events_per_stream"] for r in proxy["stream"]]
    multi = sum(r["stream"]["multi_event_chunks"] for r in proxy["stream"])
    bad = sum(r["stream"]["bad_streams"] for r in proxy["stream"])
    out.append({"figure": "chunks relayed one for one (events per stream; HTTP chunks with > 1 event; bad streams)",
                "target": f"{expected}; 0; 0", "value": f"{min(events):g}..{max(events):g}; {multi}; {bad}",
                "met": all(e == expected for e in events) and multi == 0 and bad == 0})
    mem = proxy.get("memory")
    if mem:
        last, prev = mem["points"][-1], mem["points"][-2]
        out.append({"figure": f"RSS after {last['requests']:,} requests (MB)", "target": f"< {TARGETS['rss_mb']:g}",
                    "value": last["rss_mb"], "met": last["rss_mb"] < TARGETS["rss_mb"]})
        out.append({"figure": f"RSS growth from {prev['requests']:,} to {last['requests']:,} requests (MB)",
                    "target": f"flat (<= {FLAT_MB:g})", "value": mem["growth_mb"], "met": mem["growth_mb"] <= FLAT_MB})
    return out


def _controls_headline(controls: dict[str, Any] | None, paired: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Issue 13's figures: what keys, limits, budgets and prices add to the plain proxy (paired), and their throughput."""
    if not controls:
        return []
    out: list[dict[str, Any]] = []
    if paired and "controls" in paired:
        v = statistics.median(paired["controls"]["json"]["added_p50"])
        out.append({"figure": f"gateway controls on: added latency over the plain proxy, p50 (ms) (median of "
                              f"{paired['rounds']} paired rounds)", "target": "<= 0.1", "value": v, "met": v <= 0.1})
    v = controls["max_rps"]
    out.append({"figure": "throughput with the gateway controls on, one core, non-streaming (req/s)",
                "target": ">= 6,000", "value": v, "met": v >= 6000})
    return out


def markdown(results: dict[str, Any]) -> str:
    """The whole report as Markdown."""
    env, s, t = results["environment"], results["settings"], results["targets"]
    direct = t.get("direct")
    lines = [
        "# Proxy overhead benchmark",
        "",
        (f"- command: `{env['command']}` ({env['mode']} run, {results.get('duration_s', 0):.0f} s, "
        f"{datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}, commit {env.get('commit') or 'n/a'})"),
        (f"- machine: {env['cpu'] or 'unknown CPU'}, {env['cores']} cores; Python {env['python']}; "
        f"uvloop {'on' if env['uvloop'] else 'not installed'}"),
        f"- pinning: {env['pinning']}",
        (f"- load generator: {env['engine']} for the fixed-concurrency non-streaming phases; the built-in Python "
        "generator for fixed rates, streams and memory"),
        (f"- upstream: `bench/upstream.py` (aiohttp); streams of {s['chunks']} content chunks + finish + [DONE] "
        f"= {s['chunks'] + 2} events, {s['gap_ms']:g} ms apart; {s['duration']:g} s per phase"),
    ]
    if env.get("litellm"):
        lines.append(f"- LiteLLM {env['litellm']} proxy (one worker, same two upstream deployments), pinned like the proxy")
    lines += ["", ("Added latency = the gateway's percentile minus the direct percentile at the same load. "
              "CPU per request = the gateway process's CPU time (/proc/<pid>/stat) over the phase / requests served. "
              "\"Other CPU\" = what the benchmark cores spent on anything else during the phase (other processes, "
              "interrupts), gateway core / load cores, from /proc/stat: noise to watch on a shared machine."), ""]

    head = headline(results)
    if head:
        lines += ["## Against the targets", ""]
        lines += _table(["figure", "target", "measured", "met"],
                        [[h["figure"], h["target"], h["value"] if isinstance(h["value"], str) else fmt(h["value"]),
                          _met(h["met"])] for h in head])
        xcore = t.get("direct-xcore")
        if xcore and "proxy" in t and direct:
            x1 = _by(xcore["closed"], "concurrency").get(1)
            d1, p1 = _by(direct["closed"], "concurrency").get(1), _by(t["proxy"]["closed"], "concurrency").get(1)
            if x1 and d1 and p1:
                lines += ["", ("The proxy's path crosses cores four times a request (client, proxy, upstream, proxy, "
                          "client) and the direct one never (client and upstream share the load core). With the "
                          "upstream moved to the gateway's core and no proxy at all (`direct-xcore`), crossing costs "
                          f"{fmt(_added(x1, d1, 'p50'))} ms at p50 and {fmt(_added(x1, d1, 'p99'))} ms at p99 on this "
                          "machine. Measured against that cross-core direct path, the proxy adds "
                          f"{fmt(_added(p1, x1, 'p50'))} ms (p50) and {fmt(_added(p1, x1, 'p99'))} ms (p99) at "
                          "concurrency 1.")]
        if "litellm" in t and "proxy" in t and direct:
            p, l_ = t["proxy"], t["litellm"]
            dc, pc, lc = (_by(x["closed"], "concurrency") for x in (direct, p, l_))
            if 1 in pc and 1 in lc:
                pa, la = _added(pc[1], dc[1], "p50"), _added(lc[1], dc[1], "p50")
                lines += ["", (f"Measured against LiteLLM on the same machine and pinning: added latency at "
                          f"concurrency 1 (p50) {fmt(pa)} ms vs {fmt(la)} ms "
                          f"({fmt(la / pa if pa and pa > 0 else math.nan, 1)}x); maximum throughput "
                          f"{fmt(p['max_rps'])} vs {fmt(l_['max_rps'])} req/s "
                          f"({fmt(p['max_rps'] / l_['max_rps'] if l_['max_rps'] else math.nan, 1)}x).")]
        lines.append("")
    lines += _paired(results)
    lines += redis_target.markdown(results)

    lines += ["## Non-streaming, fixed concurrency (closed loop)", ""]
    rows = []
    base = _by(direct["closed"], "concurrency") if direct else {}
    for name, target in t.items():
        for r in target["closed"]:
            lat, b = r["latency_ms"], base.get(r["concurrency"]) if name != "direct" else None
            rows.append([name, str(r["concurrency"]), fmt(r["rps"]), fmt(lat["p50"]), fmt(lat["p90"]), fmt(lat["p99"]),
                         fmt(lat["max"]), fmt(_added(r, b, "p50")), fmt(_added(r, b, "p99")),
                         fmt(r.get("gateway_cpu_us_per_req"), 1), _pct(r.get("gateway_core_busy")),
                         _pct(r.get("load_core_busy")), _noise(r), str(r["errors"])])
    lines += _table(["target", "concurrency", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "added p50 ms",
                     "added p99 ms", "gateway CPU µs/req", "gateway core busy", "load core busy", "other CPU",
                     "errors"], rows)

    lines += ["", "## Non-streaming, fixed rate (open loop)", ""]
    rows = []
    base = _by(direct["rates"], "rate") if direct else {}
    for name, target in t.items():
        for r in target["rates"]:
            lat, b = r["latency_ms"], base.get(r["rate"]) if name != "direct" else None
            rows.append([name, str(r["rate"]), fmt(r["rps"]), fmt(lat["p50"]), fmt(lat["p90"]), fmt(lat["p99"]),
                         fmt(lat["max"]), fmt(_added(r, b, "p50")), fmt(_added(r, b, "p99")),
                         fmt(r.get("gateway_cpu_us_per_req"), 1), _pct(r.get("gateway_core_busy")), _noise(r),
                         str(r["errors"])])
    lines += _table(["target", "rate req/s", "achieved req/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "added p50 ms",
                     "added p99 ms", "gateway CPU µs/req", "gateway core busy", "other CPU", "errors"], rows)
    skipped = [f"{name}: {why}" for name, target in t.items() for why in target.get("skipped", ())]
    if skipped:
        lines += ["", "Skipped: " + "; ".join(skipped) + "."]

    lines += ["", f"## Streaming ({s['chunks'] + 2} events, {s['gap_ms']:g} ms apart)", ""]
    rows = []
    base = _by(direct["stream"], "concurrency") if direct else {}
    base_nogap = _by(direct.get("stream_nogap", []), "concurrency") if direct else {}
    for name, target in t.items():
        for r in [*target["stream"], *target.get("stream_nogap", [])]:
            nogap = r.get("gap_ms") == 0.0
            st, b = r["stream"], (base_nogap if nogap else base).get(r["concurrency"]) if name != "direct" else None
            rows.append([name, f"{r['concurrency']}{', no gap' if nogap else ''}", fmt(r["rps"]), fmt(st["ttfb_ms"]["p50"]), fmt(st["ttfb_ms"]["p99"]),
                         fmt(_added(r, b, "p50", "ttfb_ms")), fmt(st["inter_chunk_ms"]["p50"]),
                         fmt(st["inter_chunk_ms"]["p99"]), fmt(_added(r, b, "p50", "inter_chunk_ms")),
                         fmt(_added(r, b, "p99", "inter_chunk_ms")), fmt(st["events_per_stream"], 2),
                         str(st["multi_event_chunks"]), str(st["coalesced_events"]), str(st["bad_streams"]),
                         fmt(r.get("gateway_cpu_us_per_req"), 1), _noise(r), str(r["errors"])])
    lines += _table(["target", "concurrency", "streams/s", "TTFB p50 ms", "TTFB p99 ms", "TTFB overhead p50 ms",
                     "inter-chunk p50 ms", "inter-chunk p99 ms", "inter-chunk overhead p50 ms",
                     "inter-chunk overhead p99 ms", "events/stream", "HTTP chunks with > 1 event",
                     "events read together", "bad streams", "gateway CPU µs/stream", "other CPU", "errors"], rows)
    lines += ["", ("\"no gap\": the same stream with its events back to back (model `bench-model-nogap`). "
              "TTFB is the time to the first SSE event. \"HTTP chunks with > 1 event\" counts chunks of the "
              "chunked response that carried several events (a relay that coalesces); \"events read together\" counts "
              "events that reached the client in the same read as the one before (also a loaded client's doing).")]

    gateways = [(n, x) for n, x in t.items() if x.get("memory")]
    if gateways:
        lines += ["", "## Memory", ""]
        rows = []
        for name, target in gateways:
            mem = target["memory"]
            pts = mem["points"]
            rows.append([name, *[f"{fmt(p['rss_mb'], 1)} MB ({p['requests']:,})" for p in pts],
                         fmt(mem["growth_mb"], 1), fmt(target["final_memory"]["rss_mb"], 1),
                         fmt(target["final_memory"]["peak_rss_mb"], 1), fmt(mem["rps"]),
                         fmt(mem["gateway_cpu_us_per_req"], 1), str(mem["errors"])])
        width = max(len(x["memory"]["points"]) for _, x in gateways)
        lines += _table(["gateway", "fresh", *[f"RSS after mark {i}" for i in range(1, width)],
                         "growth over the last mark MB", "RSS at the end MB", "peak RSS (VmHWM) MB",
                         "req/s (3 JSON : 1 stream, c=64)", "CPU µs/req", "errors"], rows)
        lines += ["", "RSS (VmRSS) of the whole gateway process tree; \"at the end\" is after every phase of the run."]

    lines += ["", "## The load generator's own ceiling", ""]
    if direct:
        py = direct.get("python_generator") or next((r for r in direct["closed"] if r["concurrency"] ==
                                                      max(x["concurrency"] for x in direct["closed"])), None)
        lines.append(f"Direct to the upstream, the whole load side (upstream + generator, on the load cores) reaches "
                     f"{fmt(direct['max_rps'])} req/s with {env['engine']}"
                     + (f" and {fmt(py['rps'])} req/s with the Python generator at concurrency {py['concurrency']} "
                        f"(load cores {_pct(py['load_core_busy'])} busy)" if py else "")
                     + ". A gateway whose throughput stays well below that, with its own core near 100% busy, is "
                     "the bottleneck, not the load side.")
    noisy = [f"{name} {kind} {r.get('concurrency', r.get('rate'))}: {_noise(r)}"
             for name, target in t.items() for kind in ("closed", "rates", "stream") for r in target[kind]
             if _noise_value(r) > NOISY]
    notes = list(results.get("notes") or [])
    if noisy:
        notes.append(f"other work used more than {NOISY:.0%} of a benchmark core during: " + "; ".join(noisy)
                     + ". Those figures are pessimistic: rerun on a quiet machine.")
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def _paired(results: dict[str, Any]) -> list[str]:
    """The paired rounds: direct and proxy alternating at concurrency 1, a few seconds each."""
    paired = results.get("paired")
    if not paired:
        return []
    j, st = paired["json"], paired["stream"]
    lines = [f"## Paired rounds (concurrency 1, direct and proxy alternating, {paired['seconds']:g} s each)", "",
             ("Each round measures the direct path and the proxy within seconds of each other (the order "
              "alternates), with the Python generator for both; a figure is the proxy's minus the direct one's "
              "in the same round. The targets table uses the median over the rounds: the phases below measure "
              "direct and proxy minutes apart, and this machine's speed drifts by more than the proxy's "
              "overhead in that time."), ""]
    rows = [[str(i + 1), fmt(j["added_p50"][i]), fmt(j["added_p99"][i]), fmt(st["added_p50"][i]),
             fmt(st["added_p99"][i])] for i in range(paired["rounds"])]
    rows.append(["median", *(f"**{fmt(statistics.median(v))}**" for v in
                             (j["added_p50"], j["added_p99"], st["added_p50"], st["added_p99"]))])
    lines += _table(["round", "added latency p50 ms", "added latency p99 ms", "TTFB overhead p50 ms",
                     "TTFB overhead p99 ms"], rows)
    controls = paired.get("controls")
    if controls:
        cj, cs = controls["json"], controls["stream"]
        lines += ["", ("With the gateway controls on (`proxy-controls`: a client key with rpm, tpm and max_parallel, "
                       "a key and a global budget, prices, spend in SQLite), in the same rounds, minus the plain "
                       "proxy: JSON p50 " + fmt(statistics.median(cj["added_p50"])) + " ms, p99 "
                       + fmt(statistics.median(cj["added_p99"])) + " ms; stream TTFB p50 "
                       + fmt(statistics.median(cs["added_p50"])) + " ms (medians over the rounds).")]
    return [*lines, ""]


def _met(met: bool | None) -> str:
    """The "met" column: yes, **no**, or skipped (None: not measured)."""
    return "skipped" if met is None else "yes" if met else "**no**"


def _noise_value(row: dict[str, Any]) -> float:
    """The largest share of a benchmark core that other work used during the phase."""
    values = [row.get(k) for k in ("foreign_gateway_core", "foreign_load_cores", "foreign_all_cores")]
    return max((v for v in values if v is not None), default=0.0)


def _noise(row: dict[str, Any]) -> str:
    """Other CPU during the phase, as "gateway core / load cores" shares."""
    if "foreign_gateway_core" in row:
        return f"{_pct(row['foreign_gateway_core'])} / {_pct(row['foreign_load_cores'])}"
    return _pct(row.get("foreign_all_cores"))


def _pct(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value * 100:.0f}%"


def _bars(ax: Any, slot: int, slots: int, ys: Sequence[float], digits: int, **style: Any) -> None:
    """One series of a grouped bar chart: bar ``slot`` of ``slots`` beside each x position, its value on top."""
    width = 0.8 / max(1, slots)
    xs = [i + (slot - (slots - 1) / 2) * width for i in range(len(ys))]
    bars = ax.bar(xs, ys, width, **style)
    ax.bar_label(bars, [fmt(y, digits) for y in ys], fontsize=7, padding=1)


def _overhead(ax: Any, t: dict[str, Any], gateways: Sequence[str], phase: str,
              series: Sequence[tuple[str, str, str]]) -> None:
    """Gateway minus direct per concurrency of ``phase``: a pair of bars (``series``: label, field, pct) per gateway."""
    direct = t.get("direct")
    if direct:
        base = _by(direct[phase], "concurrency")
        cs = [r["concurrency"] for r in direct[phase]]
        for gi, name in enumerate(gateways):
            rows = _by(t[name][phase], "concurrency")
            for si, (label, field, pct) in enumerate(series):
                ys = [_added(rows[c], base[c], pct, field) if c in rows else math.nan for c in cs]
                _bars(ax, len(series) * gi + si, len(series) * len(gateways), ys, 2, color=COLORS.get(name),
                      alpha=1.0 if si == 0 else 0.5, label=f"{name} {label}")
        ax.set_xticks(range(len(cs)), [str(c) for c in cs])
        ax.axhline(0, color="black", linewidth=0.5)
        if "litellm" in gateways:
            ax.set_yscale("symlog", linthresh=1.0)
    ax.set_ylabel("gateway minus direct (ms)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")


def plot(results: dict[str, Any], path: Path) -> bool:
    """Six panels: latency, added latency, throughput, streaming overhead, memory, CPU per request."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    t = results["targets"]
    gateways = [n for n in t if not n.startswith("direct")]
    fig, axes = plt.subplots(2, 3, figsize=(17, 9.5))
    fig.suptitle(f"Proxy overhead ({results['environment']['mode']} run; {results['environment']['pinning']})",
                 fontsize=11)

    ax = axes[0][0]
    for name, target in t.items():
        cs = [r["concurrency"] for r in target["closed"]]
        ax.plot(range(len(cs)), [r["latency_ms"]["p50"] for r in target["closed"]], "o-", color=COLORS.get(name),
                label=f"{name} p50")
        ax.plot(range(len(cs)), [r["latency_ms"]["p99"] for r in target["closed"]], "s--", color=COLORS.get(name),
                alpha=0.7, label=f"{name} p99")
        ax.set_xticks(range(len(cs)), [str(c) for c in cs])
    ax.set_yscale("log")
    ax.set_xlabel("concurrency")
    ax.set_ylabel("latency (ms, log)")
    ax.set_title("Non-streaming latency")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")

    _overhead(axes[0][1], t, gateways, "closed", (("p50", "latency_ms", "p50"), ("p99", "latency_ms", "p99")))
    axes[0][1].set_xlabel("concurrency")
    axes[0][1].set_title("Added latency (non-streaming)")

    ax = axes[0][2]
    names = [n for n in t if n != "direct-xcore"]
    cs = [r["concurrency"] for r in next(iter(t.values()))["closed"]]
    for ni, name in enumerate(names):
        rows = _by(t[name]["closed"], "concurrency")
        ys = [rows[c]["rps"] if c in rows else math.nan for c in cs]
        _bars(ax, ni, len(names), ys, 0, color=COLORS.get(name), label=name)
    ax.axhline(TARGETS["proxy_max_rps"], color=COLORS["proxy"], linestyle=":", linewidth=1, label="proxy target")
    ax.set_xticks(range(len(cs)), [str(c) for c in cs])
    ax.set_xlabel("concurrency")
    ax.set_ylabel("requests per second")
    ax.set_title("Throughput, gateway on one core (non-streaming)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")

    _overhead(axes[1][0], t, gateways, "stream", (("TTFB p50", "ttfb_ms", "p50"), ("inter-chunk p50", "inter_chunk_ms", "p50")))
    axes[1][0].set_xlabel("concurrent streams")
    axes[1][0].set_title("Streaming overhead: time to first event, gap between events")

    ax = axes[1][1]
    for name in gateways:
        mem = t[name].get("memory")
        if mem:
            pts = mem["points"]
            ax.plot([p["requests"] for p in pts], [p["rss_mb"] for p in pts], "o-", color=COLORS.get(name), label=name)
            for p in pts:
                ax.annotate(f"{p['rss_mb']:.1f}", (p["requests"], p["rss_mb"]), fontsize=7,
                            textcoords="offset points", xytext=(0, 5), ha="center")
    ax.axhline(TARGETS["rss_mb"], color=COLORS["proxy"], linestyle=":", linewidth=1, label="proxy target")
    if "litellm" in gateways:
        ax.set_yscale("log")
    else:
        ax.set_ylim(bottom=0)
    ax.set_xlabel("requests served")
    ax.set_ylabel("RSS (MB)" + (", log" if "litellm" in gateways else ""))
    ax.set_title("Memory")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)

    ax = axes[1][2]
    labels = []
    for name in gateways:
        rows = t[name]["closed"]
        if rows:
            labels.append(name)
    if labels:
        kinds = [("non-streaming, c=1", lambda x: x["closed"][0]), ("non-streaming, max c", lambda x: x["closed"][-1]),
                 ("stream, c=1", lambda x: x["stream"][0] if x["stream"] else None)]
        for li, name in enumerate(labels):
            ys = []
            for _, pick in kinds:
                row = pick(t[name])
                ys.append(row.get("gateway_cpu_us_per_req", math.nan) if row else math.nan)
            _bars(ax, li, len(labels), ys, 0, color=COLORS.get(name), label=name)
        ax.set_xticks(range(len(kinds)), [k for k, _ in kinds], fontsize=8)
        if "litellm" in labels:
            ax.set_yscale("log")
    ax.set_ylabel("gateway CPU µs per request" + (", log" if "litellm" in gateways else ""))
    ax.set_title("CPU time per request")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_report(results: dict[str, Any], out: Path) -> list[Path]:
    """Write results.json, report.md and (with matplotlib) overhead.png into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "results.json", out / "report.md"]
    paths[0].write_text(json.dumps(results, indent=2, allow_nan=True) + "\n")
    paths[1].write_text(markdown(results))
    if plot(results, out / "overhead.png"):
        paths.append(out / "overhead.png")
    return paths
