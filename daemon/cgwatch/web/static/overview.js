/* cgwatch overview: one row per container, sorted and filtered in the browser, updated by `tick` messages. */
"use strict";

(function () {
  var SPARKS = [["cpu.usage_cores", "cpu", "#2563eb"], ["mem.usage_bytes", "mem", "#7c3aed"],
                ["proc.execs", "execs", "#ea580c"], ["cpu.runq_latency_p99_ms", "runq", "#0d9488"]];
  var WINDOW_S = 900, GONE_KEEP_S = 60;
  var tbody = document.querySelector("#overview tbody");
  var filterBox = document.getElementById("filter");
  var rows = new Map();          // id -> row state
  var order = [];                // ids in the DOM, in order
  var sortKey = "name", sortDir = 1;
  var filterText = "";
  var seed = null;               // /api/v1/sparklines, until every row took its share
  var lastTs = 0;
  var stats = window.cgwatchStats = { ticks: 0, firstRenderMs: null, lastRenderMs: null, firstFrameMs: null, rows: 0 };

  function keyOf(d, key) {
    var m = d.m;
    switch (key) {
      case "name": return d.name.toLowerCase();
      case "runtime": return d.runtime;
      case "image": return d.image;
      case "cpu_pct": return m.cpu !== null && m.cpu_limit ? m.cpu / m.cpu_limit : null;
      case "mem_pct": return m.mem !== null && m.mem_limit ? m.mem / m.mem_limit : null;
      case "alerts": return d.alerts.length;
      default: return m[key] === undefined ? null : m[key];
    }
  }

  function compare(a, b) {
    var x = keyOf(a.d, sortKey), y = keyOf(b.d, sortKey);
    if (x === y) return a.d.name < b.d.name ? -1 : a.d.name > b.d.name ? 1 : 0;
    if (x === null) return 1;
    if (y === null) return -1;
    return (x < y ? -1 : 1) * sortDir;
  }

  function matches(d) {
    if (!filterText) return true;
    var terms = filterText.toLowerCase().split(/\s+/);
    for (var i = 0; i < terms.length; i++) {
      var t = terms[i];
      if (!t) continue;
      var eq = t.indexOf("=");
      var labels = d.labels || {};
      if (eq > 0) {
        var k = t.slice(0, eq), v = t.slice(eq + 1), hit = false;
        Object.keys(labels).forEach(function (lk) {
          if (lk.toLowerCase() === k && String(labels[lk]).toLowerCase().indexOf(v) >= 0) hit = true;
        });
        if (!hit) return false;
      } else {
        var hay = (d.name + " " + d.image + " " + d.runtime + " " +
                   Object.keys(labels).map(function (lk) { return lk + "=" + labels[lk]; }).join(" ")).toLowerCase();
        if (hay.indexOf(t) < 0) return false;
      }
    }
    return true;
  }

  function setText(cell, text) {
    if (cell._t !== text) { cell._t = text; cell.textContent = text; }
  }

  function newRow(d) {
    var el = cg.el;
    var link = el("a", { href: "/containers/" + encodeURIComponent(d.id), class: "cname" });
    var labels = el("span", { class: "labels" });
    var r = { id: d.id, d: d, cells: {}, canv: {}, sp: {}, dirty: true, goneAt: 0, alertsKey: "" };
    var c = r.cells;
    c.name = el("td", { class: "name" }, [link, labels]);
    c.link = link; c.labels = labels;
    c.runtime = el("td"); c.image = el("td", { class: "image" });
    c.cpu = el("td", { class: "num" }); c.cpu_pct = el("td", { class: "num pct" });
    c.mem = el("td", { class: "num" }); c.mem_pct = el("td", { class: "num pct" });
    c.execs = el("td", { class: "num" }); c.runq = el("td", { class: "num" });
    c.alerts = el("td", { class: "alerts" });
    SPARKS.forEach(function (s) {
      r.canv[s[0]] = el("td", { class: "spark" });   // the canvas comes when the row is first on screen
      r.sp[s[0]] = { t: [], v: [], sum: 0, cnt: 0 };
    });
    function sparkCell(m) { return r.canv[m]; }
    r.tr = el("tr", { "data-id": d.id }, [c.name, c.runtime, c.image, c.cpu, c.cpu_pct, sparkCell("cpu.usage_cores"),
      c.mem, c.mem_pct, sparkCell("mem.usage_bytes"), c.execs, sparkCell("proc.execs"), c.runq,
      sparkCell("cpu.runq_latency_p99_ms"), c.alerts]);
    if (seed) seedRow(r);
    io.observe(r.tr);
    return r;
  }

  function seedRow(r) {
    var per = seed.containers[r.id];
    if (!per || r.seeded) return;
    r.seeded = true;
    SPARKS.forEach(function (s) {
      var vals = per[s[0]] || [], sp = r.sp[s[0]];
      var first = sp.t.length ? sp.t[0] : Infinity, ts = [], vs = [];
      for (var i = 0; i < vals.length; i++) {
        var t = seed.start + i * seed.step;
        if (t < first && vals[i] !== null) { ts.push(t); vs.push(vals[i]); }
      }
      if (!sp.t.length && ts.length) { sp.sum = vs[vs.length - 1]; sp.cnt = 1; }
      sp.t = ts.concat(sp.t); sp.v = vs.concat(sp.v);
    });
    r.dirty = true;
  }

  function pushSpark(r, ts) {
    var b = Math.floor(ts / 10) * 10, cut = ts - WINDOW_S - 10;
    SPARKS.forEach(function (s) {
      var v = r.d.m[s[1]], sp = r.sp[s[0]];
      if (v === null || v === undefined) return;
      var n = sp.t.length;
      if (n && sp.t[n - 1] === b) { sp.sum += v; sp.cnt += 1; sp.v[n - 1] = sp.sum / sp.cnt; }
      else { sp.t.push(b); sp.v.push(v); sp.sum = v; sp.cnt = 1; }
      while (sp.t.length && sp.t[0] < cut) { sp.t.shift(); sp.v.shift(); }
    });
    r.dirty = true;
  }

  function fill(r) {
    var d = r.d, c = r.cells, m = d.m;
    setText(c.link, d.name);
    var lab = Object.keys(d.labels || {}).slice(0, 3).map(function (k) { return k + "=" + d.labels[k]; }).join(" ");
    setText(c.labels, lab);
    setText(c.runtime, d.runtime);
    setText(c.image, d.image || "–");
    setText(c.cpu, cg.num(m.cpu));
    setText(c.cpu_pct, cg.pct(m.cpu, m.cpu_limit));
    setText(c.mem, cg.bytes(m.mem));
    setText(c.mem_pct, cg.pct(m.mem, m.mem_limit));
    setText(c.execs, cg.num(m.execs));
    setText(c.runq, m.runq === null || m.runq === undefined ? "–" : cg.num(m.runq) + " ms");
    var key = d.alerts.map(function (a) { return a.rule + ":" + a.state; }).join(",");
    if (key !== r.alertsKey) {
      r.alertsKey = key;
      cg.clear(c.alerts);
      d.alerts.forEach(function (a) {
        var b = cg.severityBadge(a.severity, a.rule);
        if (a.state !== "firing") b.classList.add("pending");
        b.title = a.state + " · " + a.severity;
        c.alerts.appendChild(b);
      });
    }
    r.tr.classList.toggle("stale", !!d.stale);
    r.tr.classList.toggle("firing", d.alerts.some(function (a) { return a.state === "firing"; }));
  }

  var DPR = window.devicePixelRatio || 1;
  var FIRST_ROWS = 60, generation = 0;

  function drawRow(r, t0, t1) {
    if (!r.hasCanvas) {
      r.hasCanvas = true;
      SPARKS.forEach(function (s) {
        var c = cg.el("canvas", { class: "spark", "data-w": "96", "data-h": "22",
                                  width: String(Math.round(96 * DPR)), height: String(Math.round(22 * DPR)) });
        r.canv[s[0]].appendChild(c);
        r.canv[s[0]] = c;
      });
    }
    SPARKS.forEach(function (s) { var sp = r.sp[s[0]]; cg.spark(r.canv[s[0]], sp.t, sp.v, t0, t1, s[2]); });
    r.dirty = false;
  }

  /* Sparklines are drawn only for rows on screen (an IntersectionObserver keeps `visible`), so a
     tick costs the same at 50 or 5000 containers; a row scrolled into view draws then. */
  function drawVisible(force) {
    var t1 = lastTs || Date.now() / 1000, t0 = t1 - WINDOW_S;
    rows.forEach(function (r) { if (r.visible && (r.dirty || force)) drawRow(r, t0, t1); });
  }

  var io = new IntersectionObserver(function (entries) {
    var t1 = lastTs || Date.now() / 1000, t0 = t1 - WINDOW_S;
    entries.forEach(function (e) {
      var r = rows.get(e.target.getAttribute("data-id"));
      if (!r) return;
      r.visible = e.isIntersecting;
      if (r.visible && r.dirty) drawRow(r, t0, t1);
    });
  }, { rootMargin: "200px 0px" });

  function layout() {
    var list = [];
    rows.forEach(function (r) { if (matches(r.d)) list.push(r); });
    list.sort(compare);
    var ids = list.map(function (r) { return r.id; });
    var same = ids.length === order.length && ids.every(function (id, i) { return id === order[i]; });
    if (!same) {
      /* The first time, a screenful of rows goes in now and the rest right after the first
         frame: at 500 containers the page shows its top rows without laying out 500 first. */
      var gen = ++generation, now = order.length === 0 && list.length > FIRST_ROWS ? list.slice(0, FIRST_ROWS) : list;
      var frag = document.createDocumentFragment();
      now.forEach(function (r) { frag.appendChild(r.tr); });
      cg.clear(tbody).appendChild(frag);
      if (now !== list) {
        var rest = list.slice(FIRST_ROWS);
        requestAnimationFrame(function () {
          setTimeout(function () {
            if (gen !== generation) return;       // a newer layout already placed every row
            var more = document.createDocumentFragment();
            rest.forEach(function (r) { more.appendChild(r.tr); });
            tbody.appendChild(more);
          }, 0);
        });
      }
      order = ids;
      list.forEach(function (r) { r.dirty = true; });
    }
    document.getElementById("count").textContent =
      list.length === rows.size ? rows.size + " containers" : list.length + " of " + rows.size + " containers";
    document.getElementById("empty").classList.toggle("hidden", rows.size > 0);
  }

  function onTick(data) {
    var t0 = performance.now();
    var now = data.ts, seen = new Set(), firing = 0;
    lastTs = now;
    data.containers.forEach(function (d) {
      seen.add(d.id);
      var r = rows.get(d.id);
      if (!r) { r = newRow(d); rows.set(d.id, r); }
      r.d = d;
      if (r.goneAt) { r.goneAt = 0; r.tr.classList.remove("gone"); }
      pushSpark(r, now);
      fill(r);
      firing += d.alerts.filter(function (a) { return a.state === "firing"; }).length;
    });
    rows.forEach(function (r, id) {
      if (seen.has(id)) return;
      if (!r.goneAt) { r.goneAt = now; r.tr.classList.add("gone"); r.d.stale = true; }
      else if (now - r.goneAt > GONE_KEEP_S) { io.unobserve(r.tr); rows.delete(id); }
    });
    var t1 = performance.now();
    layout();
    var t2 = performance.now();
    drawVisible(false);
    stats.phases = { rows: t1 - t0, layout: t2 - t1, sparks: performance.now() - t2 };
    document.getElementById("summary").textContent =
      data.containers.length + " containers · " + firing + " firing";
    var ms = performance.now() - t0;
    stats.ticks += 1; stats.lastRenderMs = ms; stats.rows = rows.size;
    if (stats.firstRenderMs === null) {
      stats.firstRenderMs = ms;
      requestAnimationFrame(function () { setTimeout(function () { stats.firstFrameMs = performance.now() - t0; }, 0); });
    }
    document.body.setAttribute("data-ticks", String(stats.ticks));
  }

  document.querySelectorAll("th[data-sort]").forEach(function (th) {
    th.addEventListener("click", function () {
      var key = th.getAttribute("data-sort");
      if (key === sortKey) sortDir = -sortDir;
      else { sortKey = key; sortDir = key === "name" || key === "runtime" || key === "image" ? 1 : -1; }
      document.querySelectorAll("th[data-sort]").forEach(function (h) { h.classList.remove("asc", "desc"); });
      th.classList.add(sortDir > 0 ? "asc" : "desc");
      layout();
      drawVisible(false);
    });
  });
  document.querySelector('th[data-sort="name"]').classList.add("asc");

  filterBox.addEventListener("input", function () {
    filterText = filterBox.value.trim();
    layout();
    drawVisible(false);
  });

  window.addEventListener("resize", function () { drawVisible(true); });

  cg.getJSON("/api/v1/sparklines").then(function (body) {
    seed = body;
    rows.forEach(seedRow);
    drawVisible(false);
  }).catch(function () { /* sparklines fill from live ticks instead */ });

  cg.live({ tick: onTick });
})();
