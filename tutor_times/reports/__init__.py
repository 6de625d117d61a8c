"""The read models: sessions, the R10 merge, the summary, tasks, the timeline, class times and
the what-if report, each over the stored sessions and figures."""
