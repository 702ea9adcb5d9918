// Threadline genealogy graph: layered (Sugiyama-style) layout in plain SVG, no library.
// Data: the page's <script id="graph-data"> (nodes, edges, failed serials). Click a node to
// expand it (its neighbours come from /api/v1/trace/{kind}/{id}, one level each way),
// double-click to open its page, drag to pan, wheel / buttons to zoom.
(function () {
  "use strict";
  var host = document.getElementById("graph");
  var dataEl = document.getElementById("graph-data");
  if (!host || !dataEl) return;
  var data = JSON.parse(dataEl.textContent);
  var SVG = "http://www.w3.org/2000/svg";
  var status = document.getElementById("graph-status");
  var nodes = new Map(); // "kind:id" -> node
  var edges = new Map(); // "pk:p>ck:c" -> edge
  var failed = new Set(data.failed || []);
  var held = new Set(data.held || []);
  var rootKey = key(data.root.kind, data.root.id);
  var MAX_ROW = 16, ROW_H = 74, COL_W = 14, GAP = 18;

  function key(kind, id) { return kind + ":" + id; }
  function pageOf(n) {
    var base = { unit: "/ui/units/", lot: "/ui/lots/", container: "/ui/containers/", shipment: "/ui/shipments/" }[n.kind] || "/ui/units/";
    return base + encodeURIComponent(n.id);
  }
  function merge(g) {
    var added = 0;
    (g.nodes || []).forEach(function (n) {
      var k = key(n.kind, n.id);
      if (!nodes.has(k)) { nodes.set(k, { kind: n.kind, id: n.id, part: n.part, supplier: n.supplier, level: n.level, customer: n.customer, expanded: false }); added++; }
    });
    (g.edges || []).forEach(function (e) {
      var k = key(e.parent_kind, e.parent) + ">" + key(e.child_kind, e.child);
      if (!edges.has(k)) edges.set(k, { p: key(e.parent_kind, e.parent), c: key(e.child_kind, e.child), closed: !!e.closed, relation: e.relation, station: e.station });
    });
    return added;
  }
  merge(data);
  var rootNode = nodes.get(rootKey);
  if (rootNode) rootNode.expanded = true;

  // --- layout ---------------------------------------------------------------
  // 1. break cycles (rework loops): DFS, back edges are ignored for layering;
  // 2. longest-path layering: parents (where it went) above children (what went in);
  // 3. wide layers wrap into rows of MAX_ROW; 4. barycenter ordering sweeps reduce crossings.
  function layout() {
    var keys = Array.from(nodes.keys());
    var out = new Map(), inn = new Map();
    keys.forEach(function (k) { out.set(k, []); inn.set(k, []); });
    var list = Array.from(edges.values()).filter(function (e) { return nodes.has(e.p) && nodes.has(e.c) && e.p !== e.c; });
    list.forEach(function (e) { out.get(e.p).push(e.c); });
    var state = new Map(), dag = [];
    function dfs(k) {
      state.set(k, 1);
      out.get(k).forEach(function (c) {
        var s = state.get(c);
        if (s === 1) return; // back edge: a loop
        dag.push([k, c]);
        if (!s) dfs(c);
      });
      state.set(k, 2);
    }
    keys.forEach(function (k) { if (!state.get(k)) dfs(k); });
    var children = new Map(), parents = new Map();
    keys.forEach(function (k) { children.set(k, []); parents.set(k, []); });
    dag.forEach(function (d) { children.get(d[0]).push(d[1]); parents.get(d[1]).push(d[0]); });
    // Kahn's order, then longest path from the sources.
    var indeg = new Map(), q = [], order = [];
    keys.forEach(function (k) { indeg.set(k, parents.get(k).length); if (!indeg.get(k)) q.push(k); });
    while (q.length) {
      var k = q.shift(); order.push(k);
      children.get(k).forEach(function (c) { indeg.set(c, indeg.get(c) - 1); if (!indeg.get(c)) q.push(c); });
    }
    var layer = new Map();
    order.forEach(function (k) {
      var l = 0;
      parents.get(k).forEach(function (p) { l = Math.max(l, layer.get(p) + 1); });
      layer.set(k, l);
    });
    // Compaction: a source (nothing above it) sits right above its highest child, not in row 0.
    for (var i = order.length - 1; i >= 0; i--) {
      var kk = order[i], ch = children.get(kk);
      if (!parents.get(kk).length && ch.length) {
        var m = Infinity;
        ch.forEach(function (c) { m = Math.min(m, layer.get(c) - 1); });
        layer.set(kk, m);
      }
    }
    var layers = [];
    keys.forEach(function (k) { var l = layer.get(k) || 0; (layers[l] = layers[l] || []).push(k); });
    layers = layers.filter(Boolean);
    // Ordering: barycenter sweeps over neighbours in adjacent layers.
    var pos = new Map();
    function index() { layers.forEach(function (L) { L.forEach(function (k, i) { pos.set(k, i / Math.max(1, L.length - 1)); }); }); }
    index();
    for (var sweep = 0; sweep < 6; sweep++) {
      var down = sweep % 2 === 0;
      for (var li = down ? 1 : layers.length - 2; down ? li < layers.length : li >= 0; li += down ? 1 : -1) {
        var L = layers[li];
        var bc = new Map();
        L.forEach(function (k) {
          var nb = down ? parents.get(k) : children.get(k), s = 0, n = 0;
          nb.forEach(function (x) { if (pos.has(x)) { s += pos.get(x); n++; } });
          bc.set(k, n ? s / n : pos.get(k));
        });
        L.sort(function (a, b) { return bc.get(a) - bc.get(b); });
        L.forEach(function (k, i) { pos.set(k, i / Math.max(1, L.length - 1)); });
      }
    }
    // Coordinates: rows of at most MAX_ROW, centred.
    var coords = new Map(), y = 0, maxW = 0;
    layers.forEach(function (L) {
      for (var s = 0; s < L.length; s += MAX_ROW) {
        var row = L.slice(s, s + MAX_ROW);
        var widths = row.map(function (k) { return width(nodes.get(k)); });
        var total = widths.reduce(function (a, b) { return a + b + GAP; }, -GAP);
        maxW = Math.max(maxW, total);
        var x = -total / 2;
        row.forEach(function (k, i) { coords.set(k, { x: x, y: y, w: widths[i] }); x += widths[i] + GAP; });
        y += ROW_H;
      }
      y += 16;
    });
    return { coords: coords, edges: list, width: maxW, height: y };
  }
  function width(n) { return Math.max(90, n.id.length * 7 + 18); }

  // --- rendering --------------------------------------------------------------
  var svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", "genealogy graph");
  var vp = document.createElementNS(SVG, "g");
  vp.setAttribute("id", "viewport");
  svg.appendChild(vp);
  host.appendChild(svg);
  var view = { x: 0, y: 0, k: 1 };
  function applyView() { vp.setAttribute("transform", "translate(" + view.x + "," + view.y + ") scale(" + view.k + ")"); }
  var last = null;

  function el(name, attrs, parent) {
    var e = document.createElementNS(SVG, name);
    Object.keys(attrs).forEach(function (a) { e.setAttribute(a, attrs[a]); });
    if (parent) parent.appendChild(e);
    return e;
  }
  function render() {
    last = layout();
    while (vp.firstChild) vp.removeChild(vp.firstChild);
    var ge = el("g", { "class": "edges" }, vp), gn = el("g", { "class": "nodes" }, vp);
    last.edges.forEach(function (e) {
      var a = last.coords.get(e.p), b = last.coords.get(e.c);
      if (!a || !b) return;
      var x1 = a.x + a.w / 2, y1 = a.y + 26, x2 = b.x + b.w / 2, y2 = b.y, my = (y1 + y2) / 2;
      var path = el("path", { "class": "edge" + (e.closed ? " closed" : ""), d: "M" + x1 + "," + y1 + " C" + x1 + "," + my + " " + x2 + "," + my + " " + x2 + "," + y2 }, ge);
      var t = el("title", {}, path);
      t.textContent = e.relation + (e.station ? " at " + e.station : "") + (e.closed ? " (closed)" : "");
    });
    nodes.forEach(function (n, k) {
      var c = last.coords.get(k);
      if (!c) return;
      var cls = "node " + n.kind + (k === rootKey ? " root" : "") + (n.kind === "unit" && failed.has(n.id) ? " failed" : "") +
        (held.has(n.id) ? " held" : "") + (n.expanded ? " expanded" : "") + (n.loading ? " loading" : "");
      var g = el("g", { "class": cls, transform: "translate(" + c.x + "," + c.y + ")", "data-kind": n.kind, "data-id": n.id, tabindex: "0" }, gn);
      el("rect", { width: c.w, height: 26, rx: 5 }, g);
      var tx = el("text", { x: c.w / 2, y: 17, "text-anchor": "middle" }, g);
      tx.textContent = n.id;
      var ti = el("title", {}, g);
      ti.textContent = n.kind + " " + n.id + (n.part ? "\npart " + n.part : "") + (n.supplier ? "\nsupplier " + n.supplier : "") +
        (n.level ? "\n" + n.level : "") + (n.customer ? "\ncustomer " + n.customer : "") +
        (failed.has(n.id) ? "\nFAILED operation or check" : "") + (n.expanded ? "" : "\nclick: expand · double-click: open");
    });
    if (status) status.textContent = nodes.size + " nodes, " + last.edges.length + " links" + (data.truncated ? " (initial trace truncated)" : "");
  }
  function fit() {
    if (!last) return;
    var w = host.clientWidth || 800, h = host.clientHeight || 500;
    var k = Math.min(1.2, (w - 40) / Math.max(1, last.width), (h - 40) / Math.max(1, last.height));
    k = Math.max(0.15, k);
    view.k = k; view.x = w / 2; view.y = 20;
    applyView();
  }
  function zoom(f, cx, cy) {
    var w = host.clientWidth, h = host.clientHeight;
    if (cx === undefined) { cx = w / 2; cy = h / 2; }
    var nk = Math.min(4, Math.max(0.1, view.k * f));
    view.x = cx - (cx - view.x) * (nk / view.k);
    view.y = cy - (cy - view.y) * (nk / view.k);
    view.k = nk;
    applyView();
  }

  // --- interaction --------------------------------------------------------------
  var drag = null, moved = false;
  svg.addEventListener("pointerdown", function (ev) {
    drag = { x: ev.clientX, y: ev.clientY, vx: view.x, vy: view.y }; moved = false;
  });
  window.addEventListener("pointermove", function (ev) {
    if (!drag) return;
    var dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
    if (Math.abs(dx) + Math.abs(dy) > 3) { moved = true; svg.classList.add("dragging"); }
    view.x = drag.vx + dx; view.y = drag.vy + dy; applyView();
  });
  window.addEventListener("pointerup", function () { drag = null; svg.classList.remove("dragging"); });
  svg.addEventListener("wheel", function (ev) {
    ev.preventDefault();
    var r = svg.getBoundingClientRect();
    zoom(ev.deltaY < 0 ? 1.15 : 1 / 1.15, ev.clientX - r.left, ev.clientY - r.top);
  }, { passive: false });
  document.querySelectorAll("[data-zoom]").forEach(function (b) {
    b.addEventListener("click", function () {
      var z = b.getAttribute("data-zoom");
      if (z === "fit") fit(); else zoom(z === "in" ? 1.25 : 0.8);
    });
  });
  function nodeOf(ev) {
    var g = ev.target.closest ? ev.target.closest("g.node") : null;
    return g ? nodes.get(key(g.getAttribute("data-kind"), g.getAttribute("data-id"))) : null;
  }
  function expand(n) {
    if (n.expanded || n.loading) return;
    n.loading = true; render_keep();
    var base = "/api/v1/trace/" + n.kind + "/" + encodeURIComponent(n.id) + "?max_depth=1&max_nodes=200&direction=";
    Promise.all(["backward", "forward"].map(function (d) {
      return fetch(base + d, { headers: { Accept: "application/json" }, credentials: "same-origin" }).then(function (r) {
        if (!r.ok) throw new Error("trace " + d + ": HTTP " + r.status);
        return r.json();
      });
    })).then(function (gs) {
      var added = 0;
      gs.forEach(function (g) { added += merge(g); });
      n.loading = false; n.expanded = true;
      render_keep();
      if (status) status.textContent += " · expanded " + n.id + ": +" + added + " nodes";
    }).catch(function (e) {
      n.loading = false; render_keep();
      if (status) status.textContent = "could not expand " + n.id + ": " + e.message;
    });
  }
  function render_keep() { render(); applyView(); }
  svg.addEventListener("click", function (ev) {
    if (moved) return;
    var n = nodeOf(ev);
    if (n) expand(n);
  });
  svg.addEventListener("dblclick", function (ev) {
    var n = nodeOf(ev);
    if (n) window.location.href = pageOf(n);
  });
  svg.addEventListener("keydown", function (ev) {
    var n = nodeOf(ev);
    if (!n) return;
    if (ev.key === "Enter") window.location.href = pageOf(n);
    if (ev.key === " ") { ev.preventDefault(); expand(n); }
  });
  render();
  fit();
  window.addEventListener("beforeprint", fit);
  window.threadlineGraph = { nodes: nodes, edges: edges, expand: function (kind, id) { var n = nodes.get(key(kind, id)); if (n) expand(n); } };
})();
