// Threadline UI: small behaviours shared by the pages (no library). Each block runs only on
// the page that has its element.
(function () {
  "use strict";
  function esc(s) {
    return String(s == null ? "" : s).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }
  function unitLink(s) { return '<a href="/ui/units/' + encodeURIComponent(s) + '">' + esc(s) + "</a>"; }
  function fmt(v, d) { return v == null ? "—" : (typeof v === "number" ? v.toFixed(d == null ? 1 : d) : esc(v)); }

  document.querySelectorAll("[data-print]").forEach(function (a) {
    a.addEventListener("click", function (ev) { ev.preventDefault(); window.print(); });
  });

  // --- dashboard: poll /api/v1/dashboard every 2 s ---------------------------------
  var dash = document.getElementById("dashboard");
  if (dash) {
    var holdsApi = dash.getAttribute("data-holds") === "true";
    var holds = null;
    var draw = function (d) {
      var h = '<div class="cards">' +
        card("operations", d.operations, "ops-count") +
        card("gateways online", d.gateways_online + " / " + d.gateways.length, "gw-online") +
        card("outbox depth", d.outbox_depth, "outbox") +
        card("ingest lag", d.ingest_lag_seconds == null ? "—" : d.ingest_lag_seconds.toFixed(1) + " s", "lag") +
        card("scan rejects", d.scan_rejects, "rejects") +
        (holds == null ? "" : card("active holds", holds, "holds")) + "</div>";
      if (d.truncated) h += '<p class="warn">More operations in the window than read (200 000); numbers cover the oldest part.</p>';
      if (!d.lines.length) h += '<p id="no-lines">No operations in the window.</p>';
      d.lines.forEach(function (l) {
        h += '<h2>Line ' + esc(l.line) + '</h2><p><b class="line-uph" data-line="' + esc(l.line) + '">' + fmt(l.units_per_hour) +
          "</b> units/hour · " + l.units + " units</p>" +
          '<table class="stations"><tr><th>Station</th><th>Units</th><th>Operations</th><th>First-pass yield</th><th>Reworked</th><th>Failed (last result)</th></tr>';
        l.stations.forEach(function (s) {
          h += "<tr><td>" + esc(s.station) + "</td><td>" + s.units + "</td><td>" + s.operations + "</td><td" +
            (s.first_pass_yield != null && s.first_pass_yield < 0.95 ? ' class="fail"' : "") + ">" +
            (s.first_pass_yield == null ? "—" : (100 * s.first_pass_yield).toFixed(1) + " %") + "</td><td>" + s.reworked +
            "</td><td>" + s.failed + "</td></tr>";
        });
        h += "</table>";
      });
      h += '<h2>Gateways</h2><table id="gateways"><tr><th>Gateway</th><th>Line</th><th>State</th><th>Outbox</th><th>Newest record</th><th>Lag</th></tr>';
      d.gateways.forEach(function (g) {
        h += "<tr><td>" + esc(g.id) + "</td><td>" + esc(g.line) + '</td><td class="' + esc(g.state) + '">' + esc(g.state) +
          "</td><td>" + g.buffer_depth + "</td><td>" + fmt(g.last_record_at) + "</td><td>" +
          (g.lag_seconds == null ? "—" : g.lag_seconds.toFixed(1) + " s") + "</td></tr>";
      });
      h += "</table>";
      dash.innerHTML = h;
      document.getElementById("updated").textContent = d.generated_at;
      document.getElementById("window").textContent = d.window_minutes;
    };
    var card = function (k, v, id) { return '<div class="card"><div class="v" id="' + id + '">' + esc(v) + '</div><div class="k">' + esc(k) + "</div></div>"; };
    var poll = function () {
      var qs = window.location.search || "";
      fetch("/api/v1/dashboard" + qs, { headers: { Accept: "application/json" }, credentials: "same-origin" })
        .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
        .then(draw)
        .catch(function (e) { document.getElementById("updated").textContent = "failed: " + e.message; });
      if (holdsApi) {
        fetch("/api/v1/holds", { credentials: "same-origin" }).then(function (r) { return r.ok ? r.json() : null; }).then(function (j) {
          if (!j) return;
          var list = Array.isArray(j) ? j : (j.holds || []);
          holds = list.filter(function (x) { return !x.released_at && x.state !== "released"; }).length;
        }).catch(function () {});
      }
    };
    poll();
    setInterval(poll, 2000);
  }

  // --- lot page: hold all affected (when the holds API exists) ---------------------
  var bindHold = function () {
    var hold = document.getElementById("hold-all");
    if (hold) {
      hold.addEventListener("click", function () {
        var reason = window.prompt("Reason for the hold of lot " + hold.getAttribute("data-lot") + " and everything it reached:");
        if (!reason) return;
        var by = window.prompt("Your name or badge:") || "";
        fetch("/api/v1/holds", {
          method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ kind: "lot", id: hold.getAttribute("data-lot"), reason: reason, by: by })
        }).then(function (r) {
          return r.text().then(function (t) { document.getElementById("hold-status").textContent = r.ok ? "hold placed" : "refused: " + t; });
        });
      });
    }
  };
  bindHold();

  // --- lot page: the recall scope of a lot that reaches many units, after the page ----
  var scope = document.getElementById("recall-scope");
  if (scope && scope.getAttribute("data-src")) {
    fetch(scope.getAttribute("data-src"), { credentials: "same-origin" })
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.text(); })
      .then(function (h) { scope.innerHTML = h; bindHold(); })
      .catch(function (e) {
        var p = document.getElementById("scope-loading");
        if (p) p.textContent = "The recall scope could not be loaded: " + e.message;
      });
  }

  // --- SPC / parameter chart --------------------------------------------------------
  var chart = document.getElementById("chart"), cd = document.getElementById("chart-data");
  if (chart && cd) {
    var input = JSON.parse(cd.textContent);
    var plot = function (pts, lim) {
      var SVG = "http://www.w3.org/2000/svg";
      var W = chart.clientWidth || 900, H = chart.clientHeight || 400, L = 56, R = 16, T = 16, B = 30;
      var vals = pts.map(function (p) { return p.value; });
      [lim.lsl, lim.usl, lim.ucl, lim.lcl, lim.center].forEach(function (v) { if (v != null) vals.push(v); });
      if (!pts.length) { chart.innerHTML = '<p id="no-points">No numeric values of this parameter at this station.</p>'; return; }
      var lo = Math.min.apply(null, vals), hi = Math.max.apply(null, vals);
      if (hi === lo) { hi += 1; lo -= 1; }
      var pad = (hi - lo) * 0.08; lo -= pad; hi += pad;
      var X = function (i) { return L + (W - L - R) * (pts.length < 2 ? 0.5 : i / (pts.length - 1)); };
      var Y = function (v) { return T + (H - T - B) * (1 - (v - lo) / (hi - lo)); };
      var s = document.createElementNS(SVG, "svg");
      s.setAttribute("viewBox", "0 0 " + W + " " + H);
      var add = function (n, a, text) {
        var e = document.createElementNS(SVG, n);
        Object.keys(a).forEach(function (k) { e.setAttribute(k, a[k]); });
        if (text != null) e.textContent = text;
        s.appendChild(e); return e;
      };
      add("line", { "class": "axis", x1: L, y1: T, x2: L, y2: H - B });
      add("line", { "class": "axis", x1: L, y1: H - B, x2: W - R, y2: H - B });
      for (var t = 0; t <= 4; t++) { var v = lo + (hi - lo) * t / 4; add("text", { x: 4, y: Y(v) + 4 }, v.toPrecision(4)); }
      var hline = function (v, cls, name) {
        if (v == null) return;
        add("line", { "class": cls, x1: L, x2: W - R, y1: Y(v), y2: Y(v) });
        add("text", { x: W - R - 70, y: Y(v) - 3 }, name + " " + (+v).toPrecision(4));
      };
      hline(lim.lsl, "lim", "LSL"); hline(lim.usl, "lim", "USL");
      hline(lim.ucl, "ctl", "UCL"); hline(lim.lcl, "ctl", "LCL"); hline(lim.center, "ctr", "CL");
      add("polyline", { points: pts.map(function (p, i) { return X(i) + "," + Y(p.value); }).join(" ") });
      pts.forEach(function (p, i) {
        var bad = p.bad;
        var c = add("circle", { "class": "pt" + (bad ? " bad" : ""), cx: X(i), cy: Y(p.value), r: bad ? 4 : 3, "data-unit": p.unit });
        var ti = document.createElementNS(SVG, "title");
        ti.textContent = p.unit + " · " + p.completed_at + " · " + p.value + (p.violations && p.violations.length ? " · " + p.violations.join(", ") : "");
        c.appendChild(ti);
        c.addEventListener("click", function () { window.location.href = "/ui/units/" + encodeURIComponent(p.unit); });
      });
      add("text", { x: L, y: H - 8 }, pts[0].completed_at);
      add("text", { x: W - R - 170, y: H - 8 }, pts[pts.length - 1].completed_at);
      chart.innerHTML = ""; chart.appendChild(s);
    };
    var stats = document.getElementById("chart-stats");
    if (chart.getAttribute("data-spc") === "true") {
      var url = "/api/v1/spc?" + input.api_query;
      fetch(url, { credentials: "same-origin" }).then(function (r) {
        return r.json().then(function (j) { if (!r.ok) throw new Error(j.error || ("HTTP " + r.status)); return j; });
      }).then(function (d) {
        var pts = (d.points || []).map(function (p) { return { unit: p.unit, completed_at: p.completed_at, value: p.value, violations: p.violations, bad: p.violations && p.violations.length > 0 }; });
        plot(pts, { lsl: d.lsl, usl: d.usl, ucl: d.ucl, lcl: d.lcl, center: d.center });
        var bad = pts.filter(function (p) { return p.bad; });
        stats.innerHTML = "n " + d.n + (d.chart === "xbar-r" ? " in subgroups of " + d.subgroup : "") + " · mean " + fmt(d.mean, 4) + " · σ within " + fmt(d.sigma_within, 4) +
          " · σ overall " + fmt(d.sigma_overall, 4) + " · <b>Cp " + fmt(d.cp, 2) + " · Cpk " + fmt(d.cpk, 2) + "</b>" +
          " · Pp " + fmt(d.pp, 2) + " · Ppk " + fmt(d.ppk, 2) + ' · <span id="violation-count">' + bad.length + "</span> points violate a rule" + (d.truncated ? " · newest values only" : "");
        var vt = document.getElementById("violations");
        if (vt && bad.length) {
          var h = '<h2>Signals</h2><table id="signals"><tr><th>Unit</th><th>Completed</th><th>Value</th><th>Rules</th></tr>';
          bad.forEach(function (p) {
            h += "<tr><td>" + unitLink(p.unit) + "</td><td>" + esc(p.completed_at) + "</td><td>" + fmt(p.value, 5) + "</td><td>" + p.violations.map(esc).join(", ") + "</td></tr>";
          });
          vt.innerHTML = h + "</table>";
        }
      }).catch(function (e) { stats.textContent = "SPC API failed: " + e.message; });
    } else {
      var pts = input.points.map(function (p) { return { unit: p.unit, completed_at: p.completed_at, value: p.value, bad: !p.in_spec }; });
      var last = input.points[input.points.length - 1] || {};
      plot(pts, { lsl: last.lsl, usl: last.usl });
      var n = pts.length, mean = pts.reduce(function (a, p) { return a + p.value; }, 0) / Math.max(1, n);
      stats.textContent = n + " values · mean " + (n ? mean.toPrecision(5) : "—") + " · " + pts.filter(function (p) { return p.bad; }).length + " out of spec";
    }
  }

  // --- common-cause analysis ------------------------------------------------------
  var af = document.getElementById("analysis-form"), an = document.getElementById("analysis");
  if (af && an) {
    af.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var out = document.getElementById("analysis-result");
      if (an.getAttribute("data-api") !== "true") { out.innerHTML = '<p class="warn">The analysis API is not in this build.</p>'; return; }
      var units = document.getElementById("serials").value.split(/[\s,;]+/).filter(Boolean);
      // A stable URL for the same analysis (paste it into an e-mail).
      if (window.history && units.length <= 200) window.history.replaceState(null, "", "/ui/analysis?units=" + encodeURIComponent(units.join(",")));
      fetch("/api/v1/analysis/common-cause", {
        method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ units: units })
      }).then(function (r) { return r.json().then(function (j) { if (!r.ok) throw new Error(j.error || ("HTTP " + r.status)); return j; }); })
        .then(function (d) {
          var h = '<p id="analysis-summary">' + d.units + " units, population " + d.population + ", " + d.factors_tested + " factors tested" + (d.missing && d.missing.length ? ", unknown: " + d.missing.map(esc).join(", ") : "") + "</p>" +
            '<table id="factors"><tr><th>Kind</th><th>Factor</th><th>Affected</th><th>Population with</th><th>Lift</th><th>p-value</th></tr>';
          (d.factors || []).forEach(function (f) {
            var isLot = f.kind === "lot" || f.kind === "component_lot";
            h += "<tr><td>" + esc(f.kind) + "</td><td>" + (isLot ? '<a href="/ui/lots/' + encodeURIComponent(f.id) + '">' + esc(f.id) + "</a>" : esc(f.id)) +
              "</td><td>" + f.affected + "</td><td>" + f.population_with + "</td><td>" + fmt(f.lift, 2) + "</td><td>" + (f.p_value == null ? "—" : f.p_value.toExponential(2)) + "</td></tr>";
          });
          out.innerHTML = h + "</table>";
        }).catch(function (e) { out.innerHTML = '<p class="error">' + esc(e.message) + "</p>"; });
    });
    var given = new URLSearchParams(window.location.search).get("units");
    if (given) {
      document.getElementById("serials").value = given.split(",").join("\n");
      af.dispatchEvent(new Event("submit", { cancelable: true }));
    }
  }
  window.threadlineUnitLink = unitLink;
})();
