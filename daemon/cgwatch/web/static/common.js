/* cgwatch dashboard: what every page shares (formatting, DOM helpers, the live stream). Plain ES2017. */
"use strict";

var cg = (function () {
  var UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];

  function num(v, digits) {
    if (v === null || v === undefined || !isFinite(v)) return "–";
    var a = Math.abs(v);
    if (a !== 0 && a < 0.01) return v.toPrecision(2);
    if (a >= 1e6) return (v / 1e6).toFixed(1) + "M";
    if (a >= 1e4) return (v / 1e3).toFixed(1) + "k";
    return v.toFixed(digits === undefined ? (a >= 100 ? 0 : a >= 10 ? 1 : 2) : digits);
  }

  function bytes(v) {
    if (v === null || v === undefined || !isFinite(v)) return "–";
    var i = 0;
    while (Math.abs(v) >= 1024 && i < UNITS.length - 1) { v /= 1024; i++; }
    return (i === 0 ? v.toFixed(0) : v.toFixed(v >= 100 ? 0 : 1)) + " " + UNITS[i];
  }

  function pct(v, limit) {
    if (v === null || v === undefined || !limit || !isFinite(limit) || limit <= 0) return "";
    return (100 * v / limit).toFixed(0) + "%";
  }

  function ago(ts) {
    if (!ts) return "–";
    var s = Date.now() / 1000 - ts;
    if (s < 0) s = 0;
    if (s < 90) return s.toFixed(0) + " s ago";
    if (s < 5400) return (s / 60).toFixed(0) + " min ago";
    if (s < 172800) return (s / 3600).toFixed(1) + " h ago";
    return (s / 86400).toFixed(0) + " d ago";
  }

  function clock(ts) {
    if (!ts) return "–";
    var d = new Date(ts * 1000);
    return d.toLocaleString(undefined, { hour12: false });
  }

  /* An alert's root-cause card (docs/alerts.md) as short lines, as the text sinks write it. */
  function cardLines(card) {
    if (!card) return [];
    var out = [], shown = function (m, v) { return /_bytes$/.test(m) ? bytes(v) : num(v); };
    var changed = (card.changed || []).map(function (c) {
      return c.metric + " " + shown(c.metric, c.before) + " \u2192 " + shown(c.metric, c.now) + " (z " + String(Number(Number(c.z).toPrecision(3))) + ")";
    });
    if (changed.length) out.push("changed: " + changed.join("; "));
    var events = (card.events || []).map(function (e) {
      var f = e.fields || {}, keys = Object.keys(f);
      return e.kind + (keys.length ? " (" + keys.map(function (k) { return k + "=" + f[k]; }).join(" ") + ")" : "");
    });
    if (events.length) out.push("events: " + events.join("; "));
    if (card.neighbours) out.push("waited behind: " + card.neighbours);
    if (!out.length && card.missing && card.missing.length) out.push(card.missing.join("; "));
    return out;
  }

  /* the card as a block under an alert's summary (an empty text node without one) */
  function cardBlock(card) {
    var lines = cardLines(card);
    if (!lines.length) return document.createTextNode("");
    return el("div", { class: "card-lines" }, [el("div", { class: "muted", text: "Around the onset" })].concat(
      lines.map(function (l) { return el("div", { text: l }); })));
  }

  /* el("td", {class: "x", title: "t"}, [child or text, ...]) */
  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (k) {
        var v = attrs[k];
        if (v === null || v === undefined || v === false) return;
        if (k === "class") node.className = v;
        else if (k === "text") node.textContent = v;
        else node.setAttribute(k, v);
      });
    }
    (children || []).forEach(function (c) {
      if (c === null || c === undefined) return;
      node.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    });
    return node;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
    return node;
  }

  function getJSON(url) {
    return fetch(url, { credentials: "same-origin", cache: "no-store" }).then(function (r) {
      return r.json().then(function (body) {
        if (!r.ok) throw new Error((body && body.error) || ("HTTP " + r.status));
        return body;
      });
    });
  }

  function severityBadge(sev, text) {
    return el("span", { class: "badge sev-" + (sev || "info"), text: text || sev });
  }

  /* The live stream. handlers: {tick: fn(data), alert: fn(data), event: fn(data), open: fn()}.
     EventSource retries by itself after a dropped connection; when the server refused the stream
     (e.g. it answered 503 while restarting) the browser gives up, so we start a new one. */
  function live(handlers) {
    var badge = document.getElementById("conn");
    var source = null;
    var timer = null;

    function show(down) {
      if (badge) badge.classList.toggle("hidden", !down);
      document.body.classList.toggle("disconnected", down);
    }

    function start() {
      timer = null;
      source = new EventSource("/api/v1/events");
      source.onopen = function () {
        show(false);
        if (handlers.open) handlers.open();
      };
      source.onerror = function () {
        show(true);
        if (source.readyState === EventSource.CLOSED && timer === null) {
          source.close();
          timer = setTimeout(start, 3000);
        }
      };
      ["tick", "alert", "event"].forEach(function (kind) {
        if (!handlers[kind]) return;
        source.addEventListener(kind, function (msg) {
          var data;
          try { data = JSON.parse(msg.data); } catch (e) { return; }
          handlers[kind](data);
        });
      });
    }

    start();
    return { close: function () { if (source) source.close(); if (timer) clearTimeout(timer); } };
  }

  /* A sparkline on a small canvas: points [[t, v], ...] over [t0, t1], y from 0 (or the minimum) to the maximum. */
  function spark(canvas, ts, vs, t0, t1, color) {
    /* the CSS size comes from data-w/data-h (reading clientWidth would force a layout per canvas) */
    var dpr = window.devicePixelRatio || 1;
    var w = +canvas.getAttribute("data-w") || 96, h = +canvas.getAttribute("data-h") || 22;
    if (canvas.width !== Math.round(w * dpr)) { canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr); }
    var ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    var lo = 0, hi = 0, i, n = ts.length;
    for (i = 0; i < n; i++) {
      var v = vs[i];
      if (v === null || !isFinite(v)) continue;
      if (v > hi) hi = v;
      if (v < lo) lo = v;
    }
    if (hi === lo) hi = lo + 1;
    var sx = (w - 2) / (t1 - t0), sy = (h - 3) / (hi - lo);
    ctx.strokeStyle = color || "#3b82f6";
    ctx.lineWidth = 1.25;
    ctx.beginPath();
    var pen = false;
    for (i = 0; i < n; i++) {
      var y = vs[i];
      if (y === null || !isFinite(y) || ts[i] < t0) { pen = false; continue; }
      var px = 1 + (ts[i] - t0) * sx, py = h - 1.5 - (y - lo) * sy;
      if (pen) ctx.lineTo(px, py); else { ctx.moveTo(px, py); pen = true; }
    }
    ctx.stroke();
  }

  return { num: num, bytes: bytes, pct: pct, ago: ago, clock: clock, el: el, clear: clear, getJSON: getJSON,
           cardLines: cardLines, cardBlock: cardBlock,
           severityBadge: severityBadge, live: live, spark: spark };
})();
