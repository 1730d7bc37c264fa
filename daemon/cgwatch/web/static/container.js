/* cgwatch container page: an hour of every metric (uPlot), the anomaly score against its threshold,
   each judged metric's normal band and anomalous points (series M~low, M~high, M~anomalous),
   event and alert markers, the rules that apply; refreshed while `tick` messages arrive. */
"use strict";

(function () {
  var HOUR = 3600, DEFAULT_FLOOR = 0.6;
  var FIRST = ["anomaly.score", "cpu.usage_cores", "mem.usage_bytes", "proc.execs", "cpu.runq_latency_p99_ms"];
  var LIMITS = { "cpu.usage_cores": "cpu.limit_cores", "mem.usage_bytes": "mem.limit_bytes" };
  var BAND = ["~low", "~high", "~anomalous"];
  var MARK_COLORS = { oom_kill: "#dc2626", exit: "#f97316", exec_storm: "#a855f7", signal: "#be185d",
                      container_start: "#16a34a", container_stop: "#475569" };
  var id = decodeURIComponent(location.pathname.split("/")[2] || "");
  var charts = {};            // metric -> {u, data, limit}
  var marks = [];             // [{ts, color, dash}]
  var threshold = DEFAULT_FLOOR;
  var lastSeen = 0, fetching = false, lastFetch = 0;
  var stats = window.cgwatchStats = { charts: 0, drawn: 0, refreshes: 0 };
  var el = cg.el;

  function fmtFor(metric) { return /_bytes$/.test(metric) ? cg.bytes : function (v) { return cg.num(v); }; }

  function setMarks(detail) {
    marks = detail.events.map(function (e) { return { ts: e.ts, color: MARK_COLORS[e.kind] || "#64748b", dash: false }; })
      .concat(detail.alert_changes.map(function (a) {
        return { ts: a.ts, color: a.state === "firing" ? "#ef4444" : a.state === "resolved" ? "#16a34a" : "#f59e0b", dash: true };
      }));
  }

  function drawMarks(u) {
    var ctx = u.ctx, top = u.bbox.top, h = u.bbox.height, lo = u.scales.x.min, hi = u.scales.x.max;
    ctx.save();
    ctx.lineWidth = 1.5 * (window.devicePixelRatio || 1);
    marks.forEach(function (m) {
      if (m.ts < lo || m.ts > hi) return;
      var x = Math.round(u.valToPos(m.ts, "x", true));
      ctx.strokeStyle = m.color;
      ctx.setLineDash(m.dash ? [4, 3] : []);
      ctx.beginPath(); ctx.moveTo(x, top); ctx.lineTo(x, top + h); ctx.stroke();
    });
    ctx.restore();
    stats.drawn += 1;
  }

  function drawBand(u) {
    var ctx = u.ctx, y = u.valToPos(threshold, "y", true), top = u.bbox.top;
    if (!isFinite(y)) return;
    ctx.save();
    ctx.fillStyle = "rgba(220, 38, 38, 0.08)";
    ctx.fillRect(u.bbox.left, top, u.bbox.width, Math.max(0, y - top));
    ctx.strokeStyle = "rgba(220, 38, 38, 0.8)";
    ctx.setLineDash([6, 4]);
    ctx.beginPath(); ctx.moveTo(u.bbox.left, y); ctx.lineTo(u.bbox.left + u.bbox.width, y); ctx.stroke();
    ctx.restore();
  }

  function makeBox(metric) {
    var box = el("div", { class: "chart" + (metric === "anomaly.score" ? " anomaly" : ""), "data-metric": metric });
    box.appendChild(el("h3", { text: metric }));
    document.getElementById("charts").appendChild(box);
    return box;
  }

  function aligned(xs, points) {
    var byTs = new Map(points.map(function (p) { return [p[0], p[1]]; }));
    return xs.map(function (t) { return byTs.has(t) ? byTs.get(t) : null; });
  }

  /* boxes are all placed first (makeBox), so each chart takes its grid cell's width;
     band: null, or [low points, high points, anomalous points] of the metric's anomaly model */
  function makeChart(box, metric, points, limitPoints, band) {
    var title = box.firstChild;
    var fmt = fmtFor(metric);
    var xs = points.map(function (p) { return p[0]; }), ys = points.map(function (p) { return p[1]; });
    var data = [xs, ys];
    var series = [{}, { label: metric, stroke: metric === "anomaly.score" ? "#b91c1c" : "#2563eb", width: 1.5,
                        fill: metric === "anomaly.score" || band ? null : "rgba(37, 99, 235, 0.08)", value: function (u, v) { return fmt(v); } }];
    var at = {};
    if (limitPoints) {
      at.limit = data.length;
      data.push(aligned(xs, limitPoints));
      series.push({ label: "limit", stroke: "#94a3b8", width: 1, dash: [5, 4], spanGaps: true,
                    value: function (u, v) { return fmt(v); } });
    }
    var bands;
    if (band) {
      at.low = data.length; data.push(aligned(xs, band[0]));
      at.high = data.length; data.push(aligned(xs, band[1]));
      at.anomalous = data.length; data.push(aligned(xs, band[2]));
      series.push({ label: "normal from", stroke: "rgba(22, 163, 74, 0.5)", width: 1, spanGaps: true, value: function (u, v) { return fmt(v); } });
      series.push({ label: "to", stroke: "rgba(22, 163, 74, 0.5)", width: 1, spanGaps: true, value: function (u, v) { return fmt(v); } });
      series.push({ label: "anomalous", stroke: "#dc2626", width: 0, paths: function () { return null; },
                    points: { show: true, size: 7, fill: "#dc2626", stroke: "#dc2626" }, value: function (u, v) { return v == null ? "" : fmt(v); } });
      bands = [{ series: [at.high, at.low], fill: "rgba(22, 163, 74, 0.12)" }];
    }
    var anomaly = metric === "anomaly.score";
    var opts = {
      width: Math.max(300, box.clientWidth - 12), height: anomaly ? 170 : 150,
      series: series,
      // at least a minute wide: a chart with one or two points would otherwise span years
      scales: { x: { time: true, range: function (u, lo, hi) {
                  if (lo == null || hi == null) { var now = Date.now() / 1000; return [now - 60, now]; }
                  return [Math.min(lo, hi - 60), hi]; } }, y: anomaly ? { range: [0, 1] } : { range: function (u, lo, hi) { return [Math.min(0, lo), hi > 0 ? hi * 1.1 : 1]; } } },
      axes: [{ stroke: "#64748b", grid: { stroke: "#f1f5f9" } },
             { stroke: "#64748b", grid: { stroke: "#f1f5f9" }, size: 64, values: function (u, vals) { return vals.map(fmt); } }],
      legend: { show: true, live: true },
      cursor: { drag: { x: false, y: false } },
      hooks: { draw: anomaly ? [drawBand, drawMarks] : [drawMarks] },
    };
    if (bands) opts.bands = bands;
    var u = new uPlot(opts, data, box);
    charts[metric] = { u: u, data: data, at: at, title: title, fmt: fmt };
    if (band) { box.setAttribute("data-band", "1"); box.setAttribute("data-anomalous", String(band[2].length)); }
    setTitle(metric);
    stats.charts += 1;
  }

  function setTitle(metric) {
    var c = charts[metric], ys = c.data[1], v = ys.length ? ys[ys.length - 1] : null;
    var text = metric + "  ·  " + c.fmt(v);
    if (metric === "anomaly.score") text += "  (threshold " + threshold.toFixed(2) + ")";
    c.title.textContent = text;
  }

  function fillInfo(detail) {
    var c = detail.container;
    document.title = "cgwatch · " + c.name;
    document.getElementById("title").textContent = c.name;
    document.getElementById("gone").classList.toggle("hidden", detail.live);
    var info = cg.clear(document.getElementById("info"));
    var labels = Object.keys(c.labels || {}).map(function (k) { return k + "=" + c.labels[k]; }).join(" ");
    [["runtime", c.runtime], ["image", c.image || "–"], ["id", c.id.slice(0, 16)], ["cgroup", c.cgroup],
     ["labels", labels || "–"], ["pod", c.pod], ["last sample", cg.ago(c.last_seen)]].forEach(function (kv) {
      if (kv[1]) info.appendChild(el("div", {}, [el("span", { text: kv[0] }), kv[1]]));
    });
    var active = cg.clear(document.getElementById("active"));
    detail.alerts.forEach(function (a) {
      active.appendChild(el("div", { class: "alert-line" }, [cg.severityBadge(a.severity, a.rule),
        el("span", { class: "state-" + a.state, text: " " + a.state + " " }), a.summary, cg.cardBlock(a.card)]));
    });
    var rules = cg.clear(document.querySelector("#rules tbody"));
    detail.rules.forEach(function (r) {
      if (r.kind === "anomaly" && r.threshold !== null && isFinite(r.threshold)) threshold = r.threshold;
      rules.appendChild(el("tr", {}, [el("td", { text: r.name }), el("td", { text: r.kind }),
        el("td", { class: "wrap", text: r.text }), el("td", {}, [cg.severityBadge(r.severity)]),
        el("td", { class: "num", text: r.for_s ? r.for_s + " s" : "" })]));
    });
    if (!detail.rules.length) rules.appendChild(el("tr", {}, [el("td", { colspan: "5", class: "muted", text: "no rule selects this container" })]));
    var changes = cg.clear(document.querySelector("#changes tbody"));
    detail.alert_changes.slice().reverse().slice(0, 50).forEach(function (a) {
      changes.appendChild(el("tr", {}, [el("td", { text: cg.clock(a.ts) }), el("td", { text: a.rule }),
        el("td", { class: "state-" + a.state, text: a.state }), el("td", { class: "num", text: cg.num(a.value) }),
        el("td", { class: "wrap", text: a.summary })]));
    });
    var evs = cg.clear(document.querySelector("#events tbody"));
    detail.events.slice().reverse().slice(0, 100).forEach(function (e) {
      var f = Object.keys(e.fields).map(function (k) { return k + "=" + e.fields[k]; }).join(" ");
      evs.appendChild(el("tr", {}, [el("td", { text: cg.clock(e.ts) }), el("td", {}, [el("i", { class: "mk mk-" + e.kind }), " " + e.kind]),
        el("td", { class: "wrap", text: f })]));
    });
    if (!detail.events.length) evs.appendChild(el("tr", {}, [el("td", { colspan: "3", class: "muted", text: "no OOM kills, failed exits, fatal signals or exec storms remembered" })]));
    if (!detail.alert_changes.length) changes.appendChild(el("tr", {}, [el("td", { colspan: "5", class: "muted", text: "no alert changes remembered" })]));
    setMarks(detail);
  }

  function order(metrics) {
    var skip = new Set(Object.keys(LIMITS).map(function (k) { return LIMITS[k]; }));
    metrics = metrics.filter(function (m) { return m.indexOf("~") < 0; });   // bands go on their metric's chart
    var first = FIRST.filter(function (m) { return metrics.indexOf(m) >= 0; });
    return first.concat(metrics.filter(function (m) { return first.indexOf(m) < 0 && !skip.has(m); }).sort());
  }

  function series(metric, since) {
    return cg.getJSON("/api/v1/containers/" + encodeURIComponent(id) + "/series?metric=" +
                      encodeURIComponent(metric) + "&since=" + since).then(function (b) { return b.points; });
  }

  function load() {
    cg.getJSON("/api/v1/containers/" + encodeURIComponent(id)).then(function (detail) {
      fillInfo(detail);
      if (detail.profiling) startProfiles();
      lastSeen = detail.container.last_seen || 0;
      var since = Math.floor(detail.now - HOUR);
      var metrics = order(detail.metrics);
      return Promise.all(metrics.map(function (m) {
        var lim = LIMITS[m] && detail.metrics.indexOf(LIMITS[m]) >= 0 ? series(LIMITS[m], since) : Promise.resolve(null);
        var band = detail.metrics.indexOf(m + "~low") >= 0 ? Promise.all(BAND.map(function (b) {
          return detail.metrics.indexOf(m + b) >= 0 ? series(m + b, since) : Promise.resolve([]);
        })) : Promise.resolve(null);
        return Promise.all([series(m, since), lim, band]);
      })).then(function (all) {
        var boxes = metrics.map(makeBox);
        metrics.forEach(function (m, i) { makeChart(boxes[i], m, all[i][0], all[i][1], all[i][2]); });
        // the charts just pushed the profiles down: keep a profile opened by #profile= in view
        if (prof.scroll && prof.flame) document.getElementById("profiles").scrollIntoView({ block: "start" });
        document.body.setAttribute("data-charts", String(metrics.length));
      });
    }).catch(function (err) {
      var p = document.getElementById("error");
      p.textContent = "Cannot show this container: " + err.message;
      p.classList.remove("hidden");
    });
  }

  function refresh() {
    if (fetching || !charts || Date.now() - lastFetch < 2000) return;
    fetching = true; lastFetch = Date.now();
    cg.getJSON("/api/v1/containers/" + encodeURIComponent(id)).then(function (detail) {
      fillInfo(detail);
      var c = detail.container, ts = c.last_seen;
      if (ts && ts > lastSeen) {
        lastSeen = ts;
        Object.keys(charts).forEach(function (m) {
          var ch = charts[m], v = c.metrics[m];
          if (v === undefined) return;
          ch.data[0].push(ts); ch.data[1].push(v);
          if (ch.at.limit) { var lv = c.metrics[LIMITS[m]]; ch.data[ch.at.limit].push(lv === undefined ? null : lv); }
          if (ch.at.low) {   // the band moves slowly: carried until the next load; no new anomalous mark
            [ch.at.low, ch.at.high].forEach(function (k) { var a = ch.data[k]; a.push(a.length ? a[a.length - 1] : null); });
            ch.data[ch.at.anomalous].push(null);
          }
          while (ch.data[0].length && ch.data[0][0] < ts - HOUR) ch.data.forEach(function (a) { a.shift(); });
          ch.u.setData(ch.data);
          setTitle(m);
        });
      } else {
        Object.keys(charts).forEach(function (m) { charts[m].u.redraw(false, false); });
      }
      stats.refreshes += 1;
    }).catch(function () { /* the next tick tries again */ }).then(function () { fetching = false; });
  }

  window.addEventListener("resize", function () {
    Object.keys(charts).forEach(function (m) {
      var box = charts[m].u.root.parentNode;
      charts[m].u.setSize({ width: Math.max(300, box.clientWidth - 12), height: charts[m].u.height });
    });
  });

  /* -- CPU profiles: the list (polled), one opened as a flame graph; #profile=<pid> opens one -- */
  var PROFILE_POLL_MS = window.cgwatchProfilePollMs || 10000;      // tests set it lower
  var prof = { listed: "", open: null, flame: null, scroll: false, started: false };
  stats.profileLists = 0; stats.flames = 0;

  function fetchJSON(url) {
    return fetch(url, { credentials: "same-origin", cache: "no-store" }).then(function (r) {
      return r.json().then(function (body) { return { status: r.status, ok: r.ok, body: body }; });
    });
  }

  function wanted() {
    var m = /^#profile=(.+)$/.exec(location.hash);
    return m ? decodeURIComponent(m[1]) : null;
  }

  function pct(share) { return (100 * share).toFixed(1) + "%"; }

  function seconds(s) { return s >= 10 ? s.toFixed(0) + " s" : s.toFixed(1) + " s"; }

  function profileRow(p) {
    var top = p.top && p.top.length ? p.top[0] : null;
    var when = el("td", {}, [el("a", { href: "#profile=" + encodeURIComponent(p.id), text: cg.clock(p.started) })]);
    if (p.partial) when.appendChild(el("span", { class: "badge partial", title: p.partial, text: "partial" }));
    return el("tr", { "data-id": p.id, class: p.id === prof.open ? "selected" : "" }, [when,
      el("td", { text: p.rule ? "rule " + p.rule : "on demand" }),
      el("td", { class: "num", text: seconds(p.duration_s) }), el("td", { class: "num", text: String(p.samples) }),
      el("td", { class: "wrap", text: top ? top.function : "–" }), el("td", { class: "num", text: top ? pct(top.share) : "" })]);
  }

  function listProfiles() {
    return fetchJSON("/api/v1/containers/" + encodeURIComponent(id) + "/profiles").then(function (r) {
      var section = document.getElementById("profiles"), err = document.getElementById("profiles-error");
      if (r.status === 404) { section.classList.add("hidden"); return; }       // profiling is off
      section.classList.remove("hidden");
      if (!r.ok) throw new Error(r.body.error || "HTTP " + r.status);
      err.classList.add("hidden");
      stats.profileLists += 1;
      var list = r.body.profiles, key = JSON.stringify(list);
      if (key === prof.listed) return;
      prof.listed = key;
      var body = cg.clear(document.querySelector("#profile-list tbody"));
      list.forEach(function (p) { body.appendChild(profileRow(p)); });
      if (!list.length) body.appendChild(el("tr", {}, [el("td", { colspan: "6", class: "muted", text: "no CPU profile of this container yet" })]));
      section.setAttribute("data-profiles", String(list.length));
    }).catch(function (e) {
      var err = document.getElementById("profiles-error");
      err.textContent = "Cannot list CPU profiles: " + e.message;
      err.classList.remove("hidden");
    });
  }

  function openProfile(pid, scroll) {
    if (pid === prof.open) return;
    prof.open = pid;
    Array.prototype.forEach.call(document.querySelectorAll("#profile-list tbody tr"), function (tr) {
      tr.classList.toggle("selected", tr.getAttribute("data-id") === pid);
    });
    var section = document.getElementById("profiles"), box = document.getElementById("profile");
    var err = document.getElementById("profiles-error");
    fetchJSON("/api/v1/profiles/" + encodeURIComponent(pid)).then(function (r) {
      if (pid !== prof.open) return;                                           // another was asked for since
      if (!r.ok) throw new Error(r.body.error || "HTTP " + r.status);
      section.classList.remove("hidden");
      err.classList.add("hidden");
      var p = r.body.profile, base = "/api/v1/profiles/" + encodeURIComponent(pid);
      var bits = [cg.clock(p.started), seconds(p.duration_s), p.hz + " Hz", p.samples + " samples",
                  p.rule ? "rule " + p.rule : "on demand"];
      if (p.lost) bits.push(p.lost + " stacks lost");
      var title = cg.clear(document.getElementById("profile-title"));
      title.appendChild(document.createTextNode("CPU profile · " + bits.join(" · ")));
      if (p.partial) title.appendChild(el("span", { class: "badge partial", title: p.partial, text: "partial: " + p.partial }));
      var top = cg.clear(document.querySelector("#profile-top tbody"));
      r.body.top.forEach(function (t) {
        top.appendChild(el("tr", {}, [el("td", { class: "num", text: pct(t.share) }), el("td", { class: "wrap", text: t.function })]));
      });
      if (!r.body.top.length) top.appendChild(el("tr", {}, [el("td", { colspan: "2", class: "muted", text: "no samples" })]));
      document.getElementById("dl-folded").setAttribute("href", base + "/folded");
      document.getElementById("dl-speedscope").setAttribute("href", base + "/speedscope.json");
      document.getElementById("dl-html").setAttribute("href", base + "/flamegraph.html");
      box.classList.remove("hidden");
      if (prof.flame) prof.flame.destroy();
      var flame = document.getElementById("flame");
      prof.flame = window.cgwatchFlame.draw(flame, r.body.tree, {
        search: document.getElementById("flame-search"), reset: document.getElementById("flame-reset"),
        details: document.getElementById("flame-details") });
      flame.setAttribute("data-profile", pid);
      stats.flames += 1;
      if (scroll) section.scrollIntoView({ block: "start" });
    }).catch(function (e) {
      if (pid !== prof.open) return;
      prof.open = null;
      section.classList.remove("hidden");
      err.textContent = "Cannot show CPU profile " + pid + ": " + e.message;
      err.classList.remove("hidden");
    });
  }

  document.getElementById("profile-list").addEventListener("click", function (ev) {
    var tr = ev.target.closest("tbody tr[data-id]");
    if (!tr || ev.target.closest("a")) return;                                 // links change the hash
    location.hash = "profile=" + encodeURIComponent(tr.getAttribute("data-id"));
  });
  window.addEventListener("hashchange", function () { var pid = wanted(); if (pid) openProfile(pid, false); });

  /* once the container's detail says the daemon keeps profiles (else the section stays hidden) */
  function startProfiles() {
    if (prof.started) return;
    prof.started = true;
    listProfiles().then(function () { var pid = wanted(); if (pid) { prof.scroll = true; openProfile(pid, true); } });
    setInterval(listProfiles, PROFILE_POLL_MS);
  }

  load();
  cg.live({
    tick: function (data) {
      var n = data.containers.length, firing = 0;
      data.containers.forEach(function (d) { firing += d.alerts.filter(function (a) { return a.state === "firing"; }).length; });
      document.getElementById("summary").textContent = n + " containers · " + firing + " firing";
      if (Object.keys(charts).length) refresh();
    },
    alert: function (a) { if (a.container === id) { lastFetch = 0; refresh(); } },
    event: function (e) { if (e.container === id) { lastFetch = 0; refresh(); } },
  });
})();
