/* cgwatch report: draws the charts of a self-contained report page with uPlot.
   Data: the JSON in <script id="data">; x is seconds from data.t0. No network. */
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("data").textContent);
  var PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563"];
  var byName = {};
  data.containers.forEach(function (c) { byName[c.name] = c; });

  function bytes(v) {
    var units = ["B", "KiB", "MiB", "GiB", "TiB"], i = 0;
    while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return (i ? v.toFixed(v < 10 ? 2 : v < 100 ? 1 : 0) : v.toFixed(0)) + units[i];
  }
  function formatter(unit) {
    if (unit === "bytes") return bytes;
    if (unit === "bytes/s") return function (v) { return bytes(v) + "/s"; };
    return function (v) { return v == null ? "" : +v.toPrecision(4) + ""; };
  }
  function absolute(xs) { return xs.map(function (x) { return x + data.t0; }); }

  function plot(el, title, unit, tables, labels) {
    var f = formatter(unit);
    var joined = tables.length === 1 ? tables[0] : uPlot.join(tables);
    var series = [{}];
    labels.forEach(function (l, i) {
      series.push({label: l.label, stroke: l.color, width: l.faint ? 1 : 1.5, dash: l.faint ? [4, 3] : undefined,
                   value: function (u, v) { return v == null ? "–" : f(v); }});
    });
    var width = Math.max(280, Math.min(el.clientWidth || 460, 560));
    var opts = {
      title: title + (unit ? " (" + unit + ")" : ""), width: width, height: 170, series: series,
      tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"); },
      scales: {x: {time: true}},
      axes: [{}, {size: 64, values: function (u, splits) { return splits.map(f); }}],
      legend: {live: true}
    };
    return new uPlot(opts, joined, el);
  }

  function containerCharts(details) {
    if (details.dataset.drawn) return;
    details.dataset.drawn = "1";
    var c = byName[details.dataset.container];
    var box = details.querySelector(".charts");
    Object.keys(c.series).forEach(function (m, i) {
      var s = c.series[m], x = absolute(s.x), el = document.createElement("div");
      el.className = "chart";
      box.appendChild(el);
      var table = [x, s.y], labels = [{label: s.hi ? "mean" : m, color: PALETTE[i % PALETTE.length]}];
      if (s.hi) { table.push(s.hi); labels.push({label: "max", color: PALETTE[i % PALETTE.length], faint: true}); }
      plot(el, m, s.unit, [table], labels);
    });
  }

  function offenderCharts() {
    document.querySelectorAll("[data-offender]").forEach(function (el) {
      var o = data.offenders[+el.dataset.offender], tables = [], labels = [], unit = "";
      o.containers.forEach(function (name, i) {
        o.metrics.forEach(function (m, j) {
          var s = byName[name].series[m];
          if (!s) return;
          unit = s.unit;
          tables.push([absolute(s.x), s.y]);
          labels.push({label: name + (o.metrics.length > 1 ? " " + m.split(".")[1] : ""),
                       color: PALETTE[i % PALETTE.length], faint: j > 0});
        });
      });
      if (tables.length) plot(el, o.title + " — top " + o.containers.length, unit, tables, labels);
    });
  }

  offenderCharts();
  document.querySelectorAll("details.container").forEach(function (d) {
    if (d.open) containerCharts(d);
    d.addEventListener("toggle", function () { if (d.open) containerCharts(d); });
  });
})();
