"""The results table of benchmarks/README.md, from benchmarks/results/*.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS

README = Path(__file__).resolve().parent / "README.md"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def loads(result: dict[str, Any]) -> str:
    """The machine's load average when a run began and ended, when it says."""
    if "load_average" not in result:
        return ""
    before, after = result["load_average"]
    return f"; load average {before:.1f} at its start, {after:.1f} at its end"


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def ok(met: bool) -> str:
    return "met" if met else "**missed**"


def table() -> str:
    lines = ["| benchmark | measured (median of the run) | target | |", "|---|---|---|---|"]
    b1 = load("b1_hot_path")
    if b1:
        for r in b1["results"]:
            lines.append(
                f"| B1 hot path, {r['rows']:,} sessions | Redis store p50 {r['redis_store']['p50_ms']} ms"
                f" / p99 {r['redis_store']['p99_ms']} ms; SQL-only store p50"
                f" {r['sql_store']['p50_ms']} / p99 {r['sql_store']['p99_ms']} ms; floor p50"
                f" {r['floor']['p50_ms']} / p99 {r['floor']['p99_ms']} ms. Redis store"
                f" {r['redis_vs_floor_p50']}x the floor (p99 {r['redis_vs_floor_p99']}x); the SQL-only"
                f" store is {r['sql_vs_redis_p50']}x the Redis store"
                f" | ≤ 1.3x floor | {ok(r['redis_vs_floor_p50'] <= 1.3)} |"
            )
            if "metrics_us" in r:
                share = r["metrics_share_of_redis_p50"]
                lines.append(
                    f"| B1 metrics, {r['rows']:,} sessions | the hooks of one tracked request:"
                    f" {r['metrics_us']['single']} µs in one process,"
                    f" {r['metrics_us']['multiprocess']} µs in multiprocess mode;"
                    f" {share:.1%} of the Redis store's p50"
                    f" | < 5% of the hot path | {ok(share < 0.05)} |"
                )
    b2 = load("b2_end_to_end")
    if b2:
        for r in b2["results"]:
            lines.append(
                f"| B2 end to end, {r['workers']} gunicorn workers, {r['connections']} connections"
                f" | untracked {r['untracked']['rps']} req/s (p99 {r['untracked']['p99_ms']} ms);"
                f" floor {r['floor']['rps']} req/s (p99 {r['floor']['p99_ms']} ms); tracked"
                f" {r['tracked']['rps']} req/s (p99 {r['tracked']['p99_ms']} ms). Tracked"
                f" {r['tracked_vs_untracked_rps']:.0%} of untracked; the floor"
                f" {r['floor_vs_untracked_rps']:.0%}; tracked {r['tracked_vs_floor_rps']:.0%} of"
                f" the floor | ≥ 85% of untracked | {ok(r['tracked_vs_untracked_rps'] >= 0.85)} |"
            )
    b3 = load("b3_reports")
    if b3:
        for scale in b3.get("scales", []):
            for r in scale["results"]:
                lines.append(
                    f"| B3 {scale['scale']} {r['report']}, {r['range']} ({scale['sessions']:,}"
                    f" sessions, {scale['activities']:,} activities) | p50 {r['p50_ms']} ms,"
                    f" p99 {r['p99_ms']} ms | < {r['bound_ms']:g} ms p50 |"
                    f" {ok(r['p50_ms'] < r['bound_ms'])} |"
                )
            for r in scale.get("class_times", []):
                bound_ratio, bound_ms = r.get("bound_ratio", 1.10), r.get("bound_ms")
                met = r["ratio_p50"] <= bound_ratio and (
                    bound_ms is None or r["with_class_times"]["p50_ms"] < bound_ms
                )
                lines.append(
                    f"| B3 {scale['scale']} {r['report']}, {r['range']}, with a term's class"
                    f" times ({r['classes']:,} classes) | p50 {r['with_class_times']['p50_ms']} ms"
                    f" against {r['without']['p50_ms']} ms without, alternating request by"
                    f" request: {r['ratio_p50']:.2f}x | ≤ {bound_ratio:.2f}x without"
                    + ("" if bound_ms is None else f", < {bound_ms:g} ms p50")
                    + f" | {ok(met)} |"
                )
            moved = scale.get("moved_class")
            if moved:
                lines.append(
                    f"| B3 {scale['scale']} a class moved in a term of unit 1: the term's first"
                    f" report after it | summary p50 {moved['summary']['first']['p50_ms']} ms"
                    f" (then {moved['summary']['then']['p50_ms']} ms), timeline by week p50"
                    f" {moved['timeline']['first']['p50_ms']} ms (then"
                    f" {moved['timeline']['then']['p50_ms']} ms), {moved['edits']} moves"
                    + (
                        f"; the class-time rows measured at a load average of"
                        f" {scale['class_times_load'][0]:.1f}, then"
                        f" {scale['class_times_load'][1]:.1f}"
                        if "class_times_load" in scale
                        else ""
                    )
                    + " | measured | — |"
                )
        closing = b3.get("closing_request")
        if closing:
            lines.append(
                "| B3 a request that closes its key's idle session, figures kept vs not |"
                f" p50 {closing['kept']['p50_ms']} ms against {closing['not kept']['p50_ms']} ms:"
                f" {closing['kept_vs_not_p50']:.2f}x | measured (not on B1's path) | — |"
            )
    b4 = load("b4_closing")
    if b4:
        s, lag = b4["sweep"], b4["lag"]
        lines.append(
            f"| B4 sweep, {s['sessions']:,} idle sessions | {s['sessions_per_s']:,} sessions/s"
            f" ({s['seconds']} s) | ≥ 5,000/s | {ok(s['sessions_per_s'] >= 5000)} |"
        )
        backdate = lag.get("max_backdate_s", 0)
        bound = (backdate + lag["sweep_interval_s"]) * 1000
        lines.append(
            f"| B4 closing lag, worker running, {lag['keys']} sessions (TIMEOUT"
            f" {lag['timeout_s']} s, MAX_BACKDATE {backdate:g} s, sweep every"
            f" {lag['sweep_interval_s']} s) | after TIMEOUT:"
            f" p50 {lag['p50_ms']} ms, p99 {lag['p99_ms']} ms, max {lag['max_ms']} ms"
            f" | ≤ TIMEOUT + MAX_BACKDATE + interval (R6) | {ok(lag['max_ms'] <= bound)} |"
        )
    b5 = load("b5_redis_stall")
    if b5:
        waits = "; ".join(
            f"{r['client']}: "
            + (f"more than {r['cap_s']:.0f} s" if r["seconds"] is None else f"{r['seconds']} s")
            for r in b5["results"]
        )
        ours = b5["results"][0]["seconds"]
        lines.append(
            f"| B5 one command to a Redis that never answers | {waits}"
            f" | bounded (tracked request) | {ok(ours is not None and ours < 1)} |"
        )
    b6 = load("b6_import")
    if b6:
        floor = b6.get("copy_floor")
        largest = max(r["rows"] for r in b6["imports"])
        for r in b6["imports"]:
            flat = r["peak_rss_mb"] < 200
            if floor and r["rows"] == largest:
                ratio = r["rows_per_s"] / floor["rows_per_s"]
                measured = f"; {ratio:.2f}x the floor of the same run"
                target, met = "≥ 0.5x the floor, RSS < 200 MB", ok(ratio >= 0.5 and flat)
            else:  # process start-up (about a second) is most of a small import
                measured, target, met = "", "RSS < 200 MB", ok(flat)
            lines.append(
                f"| B6 import, {r['rows']:,} rows of {r['format']} | {r['rows_per_s']:,} rows/s"
                f" end to end ({r['seconds']} s), peak RSS {r['peak_rss_mb']} MB{measured}"
                f" | {target} | {met} |"
            )
        big = load("b6_log_lines")
        if big:
            lines.append(
                f"| B6 import, one OnTrack log of {big['lines']:,} lines"
                f" ({big['bytes'] / 2**30:.1f} GiB, {big['rows']:,} activities) |"
                f" {big['rows_per_s']:,} rows/s ({big['lines'] / big['seconds']:,.0f} lines/s)"
                f" end to end ({big['seconds']} s), peak RSS {big['peak_rss_mb']} MB"
                + loads(big)
                + f" | RSS < 200 MB | {ok(big['peak_rss_mb'] < 200)} |"
            )
        lines.append(
            f"| B6 rebuild of unit 1 under a new timeout | {b6['rebuild_s']} s ({b6['rebuild']})"
            f" | < 10 s | {ok(b6['rebuild_s'] < 10)} |"
        )
        w = b6["whatif"]
        lines.append(
            f"| B6 what-if summary, a 12-week term, `?timeout=600` | p50 {w['p50_ms']} ms,"
            f" p99 {w['p99_ms']} ms | < 100 ms p50 | {ok(w['p50_ms'] < 100)} |"
        )
        if floor:
            lines.append(
                f"| B6 floor: PostgreSQL alone, {floor['rows']:,} formatted activities by one"
                f" COPY (indexes and foreign key, nothing parsed or placed) |"
                f" {floor['rows_per_s']:,} rows/s ({floor['seconds']} s, best of 3)"
                + loads(b6)
                + " | the most one connection takes | reference |"
            )
        rest = b6.get("floor_rest")
        if floor and rest:
            lines.append(b6_floor_rest(b6, floor, rest, largest))
    b7 = load("b7_cluster")
    if b7:
        runs = len(b7["results"])
        for r in b7["results"]:
            run = f", run {r['run']} of {runs}" if "run" in r else ""
            lines.append(
                f"| B7 hot path on a Redis Cluster (3 primaries + 3 replicas), {r['rows']:,}"
                f" sessions{run} | cluster store p50 {r['cluster_store']['p50_ms']} ms / p99"
                f" {r['cluster_store']['p99_ms']} ms; floor (one EVALSHA on the key's node + one"
                f" INSERT) p50 {r['floor']['p50_ms']} / p99 {r['floor']['p99_ms']} ms."
                f" {r['cluster_vs_floor_p50']}x the floor (p99 {r['cluster_vs_floor_p99']}x);"
                f" the same store on one Redis, same rounds: p50"
                f" {r['single_redis_store']['p50_ms']} ms, cluster"
                f" {r['cluster_vs_single_p50']}x it"
                f" | ≤ 1.3x floor | {ok(r['cluster_vs_floor_p50'] <= 1.3)} |"
            )
        if "load" in b7:
            lines.append(many_processes_row(b7["load"]))
    b8 = load("b8_dashboard")
    if b8:
        size = f"{b8['sessions']:,} sessions, {b8['activities']:,} activities"
        page, parts = b8["server"]["page"], b8["server"]
        made_of = ", ".join(f"{name} {parts[name]['p50_ms']}" for name in parts if name != "page")
        lines.append(
            f"| B8 dashboard, {b8['range']} ({size}), server | p50 {page['p50_ms']} ms,"
            f" p99 {page['p99_ms']} ms; the JSON reports it shows, p50 in the same rounds:"
            f" {made_of} ms (load average {b8['load_average'][0]}, then"
            f" {b8['load_average'][1]}) | < 150 ms p50 | {ok(page['p50_ms'] < 150)} |"
        )
        b = b8["browser"]
        lines.append(
            f"| B8 dashboard, {b8['range']}, headless Chromium | load event p50"
            f" {b['load_p50_ms']} ms (max {b['load_max_ms']} ms, {b['n']} loads; the first,"
            f" nothing cached, {b['first_load_ms']} ms), of which the page's request"
            f" {b['server_p50_ms']} ms | < 1 s | {ok(b['load_p50_ms'] < 1000)} |"
        )
    machine = (b1 or b2 or b3 or b4 or {}).get("machine", {})
    lines.append("")
    lines.append(
        f"Machine: {machine.get('cpus')} CPUs (shared), Python {machine.get('python')},"
        f" {machine.get('platform')}; PostgreSQL and Redis on the same machine."
    )
    return "\n".join(lines)


def many_processes_row(r: dict[str, Any]) -> str:
    """B7's load of many processes: throughput, latency, and whether anything was lost."""
    exact = (
        r["non_2xx"] == 0
        and r["lost"] == 0
        and r["duplicates"] == 0
        and r["keys_with_two_open"] == 0
        and r["sessions_match_reference"]
    )
    return (
        f"| B7 many processes on the {r['redis']}: {r['instances']} app instances of"
        f" {r['processes_per_instance']} gunicorn processes, {r['workers']} workers,"
        f" {r['tutors']:,} tutors over {r['units']} units, {r['clients']} clients, {r['seconds']} s"
        f" | {r['rps']} tracked req/s, p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms;"
        f" {r['requests']:,} requests, {r['non_2xx']} not 2xx, {r['lost']} lost,"
        f" {r['duplicates']} duplicates, {r['keys_with_two_open']} keys with two open sessions;"
        f" {r['sessions']:,} sessions, all closed {r['all_closed_after_s']} s after the load,"
        f" {'equal to' if r['sessions_match_reference'] else '**not** equal to'} the reference"
        f" sessionizer's | 0 duplicates, 0 lost, sessions as the reference | {ok(exact)} |"
    )


def b6_floor_rest(
    b6: dict[str, Any], floor: dict[str, Any], rest: dict[str, Any], largest: int
) -> str:
    """B6's row of what else an import cannot skip: the sessions' COPY and the start-up,
    added to the activities' COPY, against the larger imports' times."""
    copied, started = rest["sessions_copy"], rest["start_up"]["seconds"]
    total = floor["seconds"] + copied["seconds"] + started
    ratios = ", ".join(
        f"{r['format']} {r['seconds']} s, {r['seconds'] / total:.2f}x that"
        for r in b6["imports"]
        if r["rows"] == largest
    )
    return (
        f"| B6 floor, the rest: the {copied['sessions']:,} sessions of the larger log's import"
        " by one COPY (indexes, foreign keys, roll-up and tally triggers), and the command's"
        f" start-up (best of 3 each) | sessions {copied['seconds']} s, start-up {started} s;"
        f" with the activities' COPY {total:.2f} s on one core, where 0.5x the floor's rate takes"
        f" {2 * floor['seconds']:.2f} s. The larger imports: {ratios}"
        " | what an import of this schema writes, at the least | reference |"
    )


def write_readme() -> None:
    text = README.read_text()
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    README.write_text(f"{head}{BEGIN}\n{table()}\n{END}{tail}")


if __name__ == "__main__":
    write_readme()
