/* cgwatch: one profile's flame tree drawn by d3-flamegraph (click a frame to zoom, search, hover for
   details). Used by the dashboard's container page and inlined into the self-contained HTML export.
   Needs the globals d3 (v7) and flamegraph (d3-flame-graph's UMD bundle). */
"use strict";

(function () {
  var KERNEL = /_\[k\]$/;

  function hash(s) {
    var h = 2166136261;
    for (var i = 0; i < s.length; i++) { h ^= s.charCodeAt(i); h = Math.imul(h, 16777619); }
    return (h >>> 0) / 4294967296;
  }

  /* kernel frames in cool blues, user frames keep the renderer's warm hues */
  function color(d, original) {
    if (d.highlight) return "#e600e6";
    if (KERNEL.test(d.data.name)) {
      var v = hash(d.data.name);
      return "rgb(" + Math.round(60 + 50 * v) + "," + Math.round(150 + 60 * v) + "," + Math.round(200 + 55 * v) + ")";
    }
    return original;
  }

  /* Draw `tree` ({name, value, children}) into `box`; its width follows the box. `ui` may hold a search
     <input> (plain text, any case), a reset <button> and a details element. Returns {chart, destroy}. */
  function draw(box, tree, ui) {
    ui = ui || {};
    var width = function () { return Math.max(320, Math.floor(box.getBoundingClientRect().width) || 960); };
    var chart = flamegraph.default()
      .width(width()).cellHeight(18).minFrameSize(1).sort(true).title("")
      .transitionDuration(ui.transition === undefined ? 300 : ui.transition)
      .setColorMapper(color)
      .setSearchMatch(function (d, term) {           // plain text, any case (not a regex that may not parse)
        return !!term && String(d.data.name).toLowerCase().indexOf(term.toLowerCase()) >= 0;
      });
    if (ui.details) chart.setDetailsElement(ui.details);
    d3.select(box).datum(tree).call(chart);
    box.setAttribute("data-frames", String(box.querySelectorAll("svg g.frame").length));

    var onSearch = function () {
      var term = ui.search.value.trim();
      if (term) chart.search(term); else chart.clear();
    };
    var onReset = function () { chart.resetZoom(); };
    var lastWidth = width(), timer = null;
    var onResize = function () {
      clearTimeout(timer);
      timer = setTimeout(function () {
        var w = width();
        if (w !== lastWidth) { lastWidth = w; chart.width(w).update(); }
      }, 150);
    };
    if (ui.search) ui.search.addEventListener("input", onSearch);
    if (ui.reset) ui.reset.addEventListener("click", onReset);
    window.addEventListener("resize", onResize);
    return {
      chart: chart,
      destroy: function () {
        if (ui.search) { ui.search.removeEventListener("input", onSearch); ui.search.value = ""; }
        if (ui.reset) ui.reset.removeEventListener("click", onReset);
        window.removeEventListener("resize", onResize);
        chart.destroy();
      },
    };
  }

  window.cgwatchFlame = { draw: draw };

  /* the HTML export: its data sits in <script type="application/json" id="profile-data"> */
  var data = document.getElementById("profile-data");
  if (data) {
    var start = function () {
      var doc = JSON.parse(data.textContent);
      window.cgwatchFlame.shown = draw(document.getElementById("flame"), doc.tree, {
        search: document.getElementById("search"), reset: document.getElementById("reset"),
        details: document.getElementById("details"), transition: 300 });
    };
    if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start); else start();
  }
})();
