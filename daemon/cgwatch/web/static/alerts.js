/* cgwatch alerts page: active alerts, recent state changes and silences, refreshed on `alert` messages. */
"use strict";

(function () {
  var el = cg.el, pending = null;
  var stats = window.cgwatchStats = { loads: 0 };

  function rowsOr(tbody, n, cols, text) {
    if (!n) tbody.appendChild(el("tr", {}, [el("td", { colspan: String(cols), class: "muted", text: text })]));
  }

  function containerLink(name, id) {
    return id ? el("a", { href: "/containers/" + encodeURIComponent(id), text: name }) : document.createTextNode(name);
  }

  function load() {
    pending = null;
    Promise.all([cg.getJSON("/api/v1/alerts"), cg.getJSON("/api/v1/alerts/history?limit=200"),
                 cg.getJSON("/api/v1/silences")]).then(function (all) {
      var active = cg.clear(document.querySelector("#active tbody"));
      var alerts = all[0].alerts.slice().sort(function (a, b) {
        return (a.state === b.state ? 0 : a.state === "firing" ? -1 : 1) || b.since - a.since;
      });
      alerts.forEach(function (a) {
        active.appendChild(el("tr", { class: a.state }, [el("td", { text: a.rule }),
          el("td", {}, [containerLink(a.container, a.container_id)]),
          el("td", { class: "state-" + a.state, text: a.state }), el("td", {}, [cg.severityBadge(a.severity)]),
          el("td", { text: cg.ago(a.since) }), el("td", { class: "num", text: cg.num(a.value) }),
          el("td", { class: "wrap" }, [a.summary, cg.cardBlock(a.card)])]));
      });
      rowsOr(active, alerts.length, 7, "nothing firing");
      var hist = cg.clear(document.querySelector("#history tbody"));
      all[1].history.forEach(function (h) {
        hist.appendChild(el("tr", {}, [el("td", { text: cg.clock(h.ts) }), el("td", { text: h.rule }),
          el("td", { text: h.container }), el("td", { class: "state-" + h.state, text: h.state }),
          el("td", {}, [cg.severityBadge(h.severity)])]));
      });
      rowsOr(hist, all[1].history.length, 5, "no alert history yet");
      var sil = cg.clear(document.querySelector("#silences tbody"));
      all[2].silences.forEach(function (s) {
        sil.appendChild(el("tr", {}, [el("td", { text: s.rule || "*" }), el("td", { text: s.container || "*" }),
          el("td", { text: cg.clock(s.ends_at) }), el("td", { class: "wrap", text: s.comment }),
          el("td", { text: s.created_by }), el("td", { class: "muted", text: s.id })]));
      });
      rowsOr(sil, all[2].silences.length, 6, "no silences");
      var firing = alerts.filter(function (a) { return a.state === "firing"; }).length;
      document.getElementById("summary").textContent = firing + " firing · " + (alerts.length - firing) + " pending";
      stats.loads += 1;
      document.body.setAttribute("data-loads", String(stats.loads));
    }).catch(function () { /* shown as stale; the next message retries */ });
  }

  function soon(ms) { if (pending === null) pending = setTimeout(load, ms); }

  load();
  setInterval(function () { soon(0); }, 15000);
  cg.live({ alert: function () { soon(300); }, open: function () { soon(0); } });
})();
