// Run history charts (uPlot): throughput and duration per run, and per-day totals.
// The numbers come from the panel's JSON endpoint; the page shows the same numbers as tables.
(function () {
  "use strict";

  const GB = 1e9;
  const COLORS = { mbps: "#2563eb", minutes: "#d97706", read: "#059669", runs: "#6b7280" };

  function say(panel, message) {
    const note = document.createElement("p");
    note.className = "small text-danger";
    note.setAttribute("role", "alert");
    note.textContent = message;
    panel.prepend(note);
  }

  function fit(chart, box) {
    const observer = new ResizeObserver(function () {
      chart.setSize({ width: box.clientWidth, height: chart.height });
    });
    observer.observe(box);
  }

  function runsChart(box, data, compact) {
    const oneJob = data.job !== null;
    const noLine = function () { return null; };  // several jobs interleave: points only
    const runs = data.runs;
    const options = {
      width: box.clientWidth,
      height: compact ? 160 : 220,
      scales: { x: { time: true }, mbps: { range: function (u, min, max) { return [0, Math.max(1, max)]; } },
                minutes: { range: function (u, min, max) { return [0, Math.max(1, max)]; } } },
      series: [
        { label: "Started" },
        { label: "MB/s", scale: "mbps", stroke: COLORS.mbps, width: 2, points: { show: true, size: 6 },
          paths: oneJob ? undefined : noLine },
        { label: "Duration (min)", scale: "minutes", stroke: COLORS.minutes, width: 2, dash: [4, 4],
          points: { show: true, size: 5 }, paths: oneJob ? undefined : noLine },
      ],
      axes: [
        {},
        { scale: "mbps", label: "MB/s", stroke: COLORS.mbps },
        { scale: "minutes", label: "min", side: 1, stroke: COLORS.minutes, grid: { show: false } },
      ],
    };
    const columns = [
      runs.map(function (r) { return r.start; }),
      runs.map(function (r) { return r.mbps; }),
      runs.map(function (r) { return Math.round(r.duration_s / 6) / 10; }),
    ];
    fit(new uPlot(options, columns, box), box);
  }

  function dailyChart(box, data) {
    const days = data.daily;
    const options = {
      width: box.clientWidth,
      height: 200,
      // half a day either side, so the first and last bars are whole
      scales: { x: { time: true, range: function (u, min, max) { return [min - 43200, max + 43200]; } }, gb: { range: function (u, min, max) { return [0, Math.max(1, max)]; } },
                runs: { range: function (u, min, max) { return [0, Math.max(1, max)]; } } },
      series: [
        { label: "Day" },
        { label: "GB read", scale: "gb", stroke: COLORS.read, fill: COLORS.read + "55",
          paths: uPlot.paths.bars({ size: [0.6, 40] }), points: { show: false } },
        { label: "Runs", scale: "runs", stroke: COLORS.runs, width: 2, points: { show: true, size: 5 } },
      ],
      axes: [
        {},
        { scale: "gb", label: "GB", stroke: COLORS.read },
        { scale: "runs", label: "runs", side: 1, stroke: COLORS.runs, grid: { show: false } },
      ],
    };
    const columns = [
      days.map(function (d) { return new Date(d.day + "T00:00:00").getTime() / 1000; }),
      days.map(function (d) { return Math.round(d.bytes_read / GB * 100) / 100; }),
      days.map(function (d) { return d.runs; }),
    ];
    fit(new uPlot(options, columns, box), box);
  }

  function draw(panel) {
    if (panel.dataset.drawn || !window.uPlot || !panel.querySelector("[data-chart]")) return;
    panel.dataset.drawn = "1";
    fetch(panel.dataset.historyUrl, { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then(function (response) {
        return response.json().then(function (body) {
          if (!response.ok) throw new Error(body.error || "The history could not be loaded (" + response.status + ").");
          return body;
        });
      })
      .then(function (data) {
        const runs = panel.querySelector("[data-chart=runs]");
        const daily = panel.querySelector("[data-chart=daily]");
        if (runs) runsChart(runs, data, panel.dataset.compact === "1");
        if (daily) dailyChart(daily, data);
      })
      .catch(function (error) {
        say(panel, error.message + " The table below still has the numbers.");
      });
  }

  function drawIn(root) {
    if (root.matches && root.matches("[data-history-url]")) draw(root);
    if (root.querySelectorAll) root.querySelectorAll("[data-history-url]").forEach(draw);
  }

  document.addEventListener("DOMContentLoaded", function () { drawIn(document); });
  document.addEventListener("htmx:load", function (event) { drawIn(event.target); });
})();
