//! The page handlers. Each answers a whole HTML page; unknown ids answer the 404 page.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde_json::json;

use super::layout::{failure, json_block, not_found, page, respond};
use super::{data, escape, has_route, href, link, search, url_escape};
use crate::api::AppState;
use crate::trace::{
    self, Direction, ItemKind, OperationFilter, QueryError, TraceGraph, TraceRequest,
};

type Q = Query<HashMap<String, String>>;

/// How a prefix match is labelled: a suggestion is listed, never jumped to.
const SUGGESTION: &str = "suggestion: id starts with the input";

fn html(body: String) -> Response {
    Html(body).into_response()
}

fn opt(v: &Option<String>) -> String {
    v.as_deref().map(escape).unwrap_or_else(|| "—".to_owned())
}

fn num(v: Option<f64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "—".to_owned())
}

fn param<'a>(q: &'a HashMap<String, String>, k: &str) -> Option<&'a str> {
    q.get(k).map(|s| s.trim()).filter(|s| !s.is_empty())
}

/// `GET /?q=`: the search box; one match goes straight to its page, several are listed.
pub async fn search_page(State(st): State<AppState>, Query(q): Q) -> Response {
    let input = q.get("q").cloned().unwrap_or_default();
    let mut body = String::new();
    let _ = write!(
        body,
        "<h1>Find a unit, lot, container, shipment or work order</h1>\
         <form class=\"search\" action=\"/\" method=\"get\">\
         <input id=\"q\" name=\"q\" value=\"{}\" size=\"60\" autofocus autocomplete=\"off\" \
          placeholder=\"serial, lot, SSCC, shipment, work order, or scan a GS1 barcode / Digital Link\">\
         <button>Search</button></form>\
         <p class=\"hint\">Scanner input is understood as sent: <code>]d2…</code>, <code>]C1…</code>, FNC1/GS separators, \
         <code>(01)…(21)…</code>, <code>https://…/01/…/21/…</code>.</p>",
        escape(&input)
    );
    if !input.trim().is_empty() {
        match find(&st, &input).await {
            Ok(found)
                if found.len() == 1 && found[0].0 != "work_order" && found[0].3 != SUGGESTION =>
            {
                let (kind, id, _, _) = &found[0];
                return Redirect::to(&href(kind, id)).into_response();
            }
            Ok(found) if found.is_empty() => {
                let _ = write!(
                    body,
                    "<p class=\"notfound\" id=\"no-match\">Nothing matches <code>{}</code>.</p>",
                    escape(input.trim())
                );
                return respond(
                    StatusCode::NOT_FOUND,
                    "No match",
                    &(body + &recent(&st).await),
                );
            }
            Ok(found) => {
                body.push_str("<h2>Matches</h2><table id=\"matches\"><tr><th>Kind</th><th>Id</th><th>Part</th><th>Read as</th></tr>");
                for (kind, id, part, how) in &found {
                    let id_html = if *kind == "work_order" {
                        format!(
                            "<a href=\"/ui/operations?work_order={}\">{}</a>",
                            url_escape(id),
                            escape(id)
                        )
                    } else {
                        link(kind, id)
                    };
                    let _ = write!(
                        body,
                        "<tr><td>{}</td><td>{id_html}</td><td>{}</td><td>{}</td></tr>",
                        escape(&kind.replace('_', " ")),
                        opt(part),
                        escape(how)
                    );
                }
                body.push_str("</table>");
                for (kind, id, _, _) in &found {
                    if *kind == "work_order" {
                        body.push_str(&work_order_section(&st, id).await);
                    }
                }
            }
            Err(e) => return failure(e),
        }
    }
    body.push_str(&recent(&st).await);
    body.push_str(super::api_help());
    html(page("Search", &body))
}

/// (kind, id, part, how it was read) of everything the input matches.
async fn find(
    st: &AppState,
    input: &str,
) -> sqlx::Result<Vec<(&'static str, String, Option<String>, String)>> {
    let mut out: Vec<(&'static str, String, Option<String>, String)> = Vec::new();
    let mut seen = HashSet::new();
    let mut push = |out: &mut Vec<_>, kind: &'static str, id: String, part, how: &str| {
        if seen.insert((kind, id.clone())) {
            out.push((kind, id, part, how.to_owned()));
        }
    };
    let cands = search::interpret(input);
    for c in &cands {
        match c.kind {
            Some("work_order") => {
                if let Some(w) = data::work_order(st.reads(), &c.id).await? {
                    push(&mut out, "work_order", w.id, w.part, &c.how);
                }
            }
            Some(k) => {
                let kind = ItemKind::parse(k).unwrap_or(ItemKind::Unit);
                if let Some(h) = data::one(st.reads(), kind, &c.id).await? {
                    push(&mut out, kind.as_str(), h.ext_id, h.part, &c.how);
                }
            }
            None => {
                for h in data::exact(st.reads(), &c.id).await? {
                    let kind = ItemKind::parse(&h.kind).map_or("unit", ItemKind::as_str);
                    push(&mut out, kind, h.ext_id, h.part, &c.how);
                }
                if let Some(w) = data::work_order(st.reads(), &c.id).await? {
                    push(&mut out, "work_order", w.id, w.part, "work order");
                }
            }
        }
    }
    if out.is_empty()
        && let Some(c) = cands.last()
        && c.id.len() >= 3
    {
        for h in data::prefixed(st.reads(), &c.id, 10).await? {
            let kind = ItemKind::parse(&h.kind).map_or("unit", ItemKind::as_str);
            push(&mut out, kind, h.ext_id, h.part, SUGGESTION);
        }
    }
    Ok(out)
}

async fn work_order_section(st: &AppState, id: &str) -> String {
    let mut h = String::new();
    let (wo, units) = match (
        data::work_order(st.reads(), id).await,
        data::work_order_units(st.reads(), id, 50).await,
    ) {
        (Ok(Some(w)), Ok(u)) => (w, u),
        _ => return h,
    };
    let _ = write!(
        h,
        "<h2>Work order {}</h2><table><tr><th>Part</th><td>{}</td><th>Quantity</th><td>{}</td><th>Line</th><td>{}</td></tr></table><p>",
        escape(&wo.id),
        opt(&wo.part),
        num(wo.qty),
        opt(&wo.line)
    );
    for u in &units {
        let _ = write!(h, "{} ", link("unit", &u.ext_id));
    }
    if units.len() == 50 {
        h.push_str("… (first 50 units)");
    }
    h.push_str("</p>");
    h
}

async fn recent(st: &AppState) -> String {
    let mut h = String::from("<h2>Recent units</h2>");
    match data::recent_units(st.reads(), 15).await {
        Ok(rows) if rows.is_empty() => h.push_str("<p>No units recorded yet.</p>"),
        Ok(rows) => {
            h.push_str("<table id=\"recent\"><tr><th>Serial</th><th>Part</th><th>Work order</th><th>Line</th></tr>");
            for r in rows {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    link("unit", &r.ext_id),
                    opt(&r.part),
                    opt(&r.work_order),
                    opt(&r.line)
                );
            }
            h.push_str("</table>");
        }
        Err(e) => {
            let _ = write!(h, "<p class=\"error\">{}</p>", escape(&e.to_string()));
        }
    }
    h
}

/// Backward and forward genealogy around one item, `depth` levels each way, as the graph
/// script's data: nodes, edges, the unit serials with a failure.
async fn graph_data(
    st: &AppState,
    kind: ItemKind,
    id: &str,
    depth: u32,
) -> Result<serde_json::Value, QueryError> {
    let mut graphs: Vec<TraceGraph> = Vec::new();
    for dir in [Direction::Backward, Direction::Forward] {
        let mut req = TraceRequest::new(kind, id, dir);
        req.max_depth = depth;
        req.max_nodes = 150;
        graphs.push(trace::trace(st.reads(), &req).await?);
    }
    let mut nodes = Vec::new();
    let mut seen = HashSet::new();
    let mut edges = Vec::new();
    let mut truncated = false;
    for g in &graphs {
        truncated |= g.truncated;
        for n in &g.nodes {
            if seen.insert((n.kind, n.id.clone())) {
                nodes.push(
                    json!({"kind": n.kind, "id": n.id, "part": n.part, "supplier": n.supplier,
                    "level": n.level, "customer": n.customer, "placeholder": n.placeholder}),
                );
            }
        }
        edges.extend(g.edges.iter().map(|e| {
            json!({"parent": e.parent, "parent_kind": e.parent_kind, "child": e.child,
                "child_kind": e.child_kind, "relation": e.relation, "closed": e.closed, "station": e.station})
        }));
    }
    let units: Vec<&str> = graphs
        .iter()
        .flat_map(|g| g.nodes.iter())
        .filter(|n| n.kind == ItemKind::Unit)
        .map(|n| n.id.as_str())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let failed = data::failed_units(st.reads(), &units).await?;
    Ok(json!({
        "root": {"kind": kind, "id": id},
        "nodes": nodes, "edges": edges, "failed": failed, "held": [],
        "truncated": truncated, "depth": depth,
        "holds_api": has_route("/api/v1/holds"),
    }))
}

fn graph_section(data: &serde_json::Value) -> String {
    format!(
        "<section class=\"graph-wrap\"><h2>Genealogy</h2>\
         <p class=\"hint noprint\">Click a node to expand it (its neighbours are fetched from the trace API), double-click to open its page; \
         drag to pan, wheel or the buttons to zoom. Up: where it went (assemblies, containers, shipments); down: what went in.</p>\
         <div class=\"graph-tools noprint\"><button type=\"button\" data-zoom=\"in\">+</button><button type=\"button\" data-zoom=\"out\">−</button>\
         <button type=\"button\" data-zoom=\"fit\">fit</button> <span id=\"graph-status\"></span></div>\
         <div id=\"graph\" class=\"graph\"></div>\
         <p class=\"legend\"><span class=\"lg unit\">unit</span><span class=\"lg lot\">lot</span><span class=\"lg container\">container</span>\
         <span class=\"lg shipment\">shipment</span><span class=\"lg failed\">failed operation / check</span><span class=\"lg held\">on hold</span>\
         <span class=\"lg closed\">- - link closed (disassembled / unpacked)</span></p>{}</section>\
         <script src=\"/ui/assets/graph.js\"></script>",
        json_block("graph-data", data)
    )
}

fn depth_of(q: &HashMap<String, String>) -> u32 {
    param(q, "depth")
        .and_then(|d| d.parse().ok())
        .unwrap_or(3u32)
        .clamp(1, 10)
}

/// `GET /ui/units/{serial}`.
pub async fn unit_page(
    State(st): State<AppState>,
    ext: Option<axum::Extension<crate::api::epcis::EpcisIds>>,
    Path(serial): Path<String>,
    Query(q): Q,
) -> Response {
    let mut report = match trace::unit_report(st.reads(), &serial).await {
        Ok(r) => r,
        Err(QueryError::NotFound { .. }) => return not_found("unit", &serial),
        Err(e) => return failure(e),
    };
    let ids = crate::api::epcis::ids_of(ext);
    if let Err(e) = trace::supplier::fill_report(st.reads(), &ids, &mut report).await {
        return failure(e);
    }
    let graph = match graph_data(&st, ItemKind::Unit, &serial, depth_of(&q)).await {
        Ok(g) => g,
        Err(e) => return failure(e),
    };
    let failed_ops = report
        .operations
        .iter()
        .filter(|o| o.summary.result != "pass")
        .count();
    let s = escape(&serial);
    let u = url_escape(&serial);
    let now = threadline_shared::time::format(&threadline_shared::time::now());
    let mut body = format!(
        "<h1>Unit <span id=\"unit-serial\">{s}</span></h1>\
         <p class=\"meta\">Report generated {} · {} operations{} · \
         <a href=\"/api/v1/units/{u}?format=csv\">CSV</a> · <a href=\"/api/v1/units/{u}?format=html\">printable report</a> · \
         <a href=\"/api/v1/units/{u}\">JSON</a> · <a href=\"#\" data-print>print</a></p>",
        escape(&now),
        report.operations.len(),
        if failed_ops > 0 {
            format!(" (<span class=\"fail\">{failed_ops} failed</span>)")
        } else {
            String::new()
        }
    );
    if report.placeholder {
        body.push_str("<p class=\"warn\">This serial is known only from trace events of other items (no start record of its own).</p>");
    }
    body.push_str(&graph_section(&graph));
    body.push_str("<section class=\"report\"><h2>Report</h2>");
    body.push_str(&super::report_sections(&report, &link));
    body.push_str(
        "</section><section class=\"signature\"><p>Reviewed by: ______________________________ \
         Date: ______________ Signature: ______________________________</p></section>",
    );
    html(page(&format!("Unit {serial}"), &body))
}

/// `GET /ui/lots/{lot}?page=`.
pub async fn lot_page(
    State(st): State<AppState>,
    ext: Option<axum::Extension<crate::api::epcis::EpcisIds>>,
    Path(lot): Path<String>,
    Query(q): Q,
) -> Response {
    let info = match data::lot(st.reads(), &lot).await {
        Ok(Some(l)) => l,
        Ok(None) => return not_found("lot", &lot),
        Err(e) => return failure(e),
    };
    let include_closed = param(&q, "include_closed") == Some("true");
    let cons = match data::consumption(st.reads(), info.id).await {
        Ok(c) => c,
        Err(e) => return failure(e),
    };
    let l = escape(&lot);
    let u = url_escape(&lot);
    let mut b = format!(
        "<h1>Lot <span id=\"lot-id\">{l}</span></h1>\
         <table class=\"summary\"><tr><th>Part</th><td>{}</td></tr><tr><th>Supplier</th><td>{}</td></tr>\
         <tr><th>Supplier batch</th><td>{}</td></tr><tr><th>Received quantity</th><td>{}</td></tr>\
         <tr><th>Received (recorded)</th><td>{}</td></tr><tr><th>First seen on the line</th><td>{}</td></tr></table>",
        opt(&info.part),
        opt(&info.supplier),
        opt(&info.supplier_batch),
        num(info.qty),
        if info.placeholder {
            "— (only named by trace events, no receipt record)".to_owned()
        } else {
            escape(&info.created_at)
        },
        opt(&info.first_seen_at),
    );
    let ids = crate::api::epcis::ids_of(ext);
    match trace::supplier::for_lots(st.reads(), &ids, std::slice::from_ref(&lot)).await {
        Ok(evs) => {
            b.push_str("<h2>Supplier history (EPCIS)</h2>");
            if evs.is_empty() {
                b.push_str(
                    "<p id=\"supplier-events\">No supplier events captured for this lot \
                     (POST /api/v1/epcis/capture).</p>",
                );
            } else {
                b.push_str("<div id=\"supplier-events\">");
                super::supplier_table(&mut b, &evs, &link);
                b.push_str("</div>");
            }
        }
        Err(e) => return failure(e),
    }
    b.push_str("<h2>Consumption</h2><table id=\"consumption\"><tr><th>Station</th><th>Links</th><th>Quantity</th><th>First</th><th>Last</th></tr>");
    for c in &cons {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            opt(&c.station),
            c.n,
            num(c.qty),
            opt(&c.first_at),
            opt(&c.last_at)
        );
    }
    if cons.is_empty() {
        b.push_str("<tr><td colspan=\"5\">not consumed yet</td></tr>");
    }
    b.push_str("</table>");
    // A lot consumed that often reaches too many units to compute its scope before the page
    // answers (a fastener lot in 100,000 units: the recall walk alone takes ~0.4 s): the page
    // answers first, the scope follows from `/ui/lots/{lot}/scope` (app.js).
    let links: i64 = cons.iter().map(|c| c.n.max(0)).sum();
    let later = match param(&q, "scope") {
        Some("later") => true,
        Some("inline") => false,
        _ => links > INLINE_SCOPE_LINKS,
    };
    let pg = param(&q, "page").unwrap_or("1");
    if later {
        let extra = if include_closed {
            "&amp;include_closed=true"
        } else {
            ""
        };
        let _ = write!(
            b,
            "<div id=\"recall-scope\" data-src=\"/ui/lots/{u}/scope?page={}{extra}\">\
             <h2>Recall scope</h2><p id=\"scope-loading\">Computing the recall scope of \
             {links} consumption links…</p><noscript><p><a href=\"/ui/lots/{u}?scope=inline{extra}\">\
             Show it (without scripts)</a></p></noscript></div>",
            url_escape(pg)
        );
        return html(page(&format!("Lot {lot}"), &b));
    }
    let recall = match trace::recall(st.reads(), &lot, include_closed).await {
        Ok(r) => r,
        Err(e) => return failure(e),
    };
    recall_section(&mut b, &lot, &recall, include_closed, pg);
    html(page(&format!("Lot {lot}"), &b))
}

/// Consumption links up to which a lot page computes its recall scope before answering.
const INLINE_SCOPE_LINKS: i64 = 5_000;

/// `GET /ui/lots/{lot}/scope`: the recall scope section of the lot page, as an HTML fragment
/// (loaded by the page for lots that reach many units).
pub async fn lot_scope(
    State(st): State<AppState>,
    Path(lot): Path<String>,
    Query(q): Q,
) -> Response {
    match data::lot(st.reads(), &lot).await {
        Ok(Some(_)) => {}
        Ok(None) => return not_found("lot", &lot),
        Err(e) => return failure(e),
    }
    let include_closed = param(&q, "include_closed") == Some("true");
    let recall = match trace::recall(st.reads(), &lot, include_closed).await {
        Ok(r) => r,
        Err(e) => return failure(e),
    };
    let mut b = String::new();
    recall_section(
        &mut b,
        &lot,
        &recall,
        include_closed,
        param(&q, "page").unwrap_or("1"),
    );
    html(b)
}

/// The lot page's recall scope: counts, links, customers, shipments, containers, units paged.
fn recall_section(
    b: &mut String,
    lot: &str,
    recall: &trace::Recall,
    include_closed: bool,
    page_param: &str,
) {
    let l = escape(lot);
    let u = url_escape(lot);
    let c = &recall.counts;
    let _ = write!(
        b,
        "<h2>Recall scope{}</h2><p class=\"counts\">\
         <span class=\"count\"><b id=\"count-units\">{}</b> units</span>\
         <span class=\"count\"><b id=\"count-containers\">{}</b> containers</span>\
         <span class=\"count\"><b id=\"count-shipments\">{}</b> shipments</span>\
         <span class=\"count\"><b id=\"count-customers\">{}</b> customers</span></p>\
         <p><a id=\"recall-csv\" href=\"/api/v1/lots/{u}/recall?format=csv{}\">Download CSV</a> · \
         <a href=\"/api/v1/lots/{u}/recall{}\">JSON</a> · {} · <a href=\"/ui/operations?lot={u}\">operations on these units</a></p>",
        if include_closed {
            " (including removed links)"
        } else {
            ""
        },
        c.units,
        c.containers,
        c.shipments,
        c.customers,
        if include_closed {
            "&amp;include_closed=true"
        } else {
            ""
        },
        if include_closed {
            "?include_closed=true"
        } else {
            ""
        },
        if include_closed {
            format!("<a href=\"/ui/lots/{u}\">current links only</a>")
        } else {
            format!(
                "<a href=\"/ui/lots/{u}?include_closed=true\">include disassembled / unpacked</a>"
            )
        },
    );
    if has_route("/api/v1/holds") {
        let _ = write!(
            b,
            "<p class=\"noprint\"><button type=\"button\" id=\"hold-all\" data-lot=\"{l}\">Hold all affected</button> \
             <span id=\"hold-status\"></span></p>"
        );
    }
    b.push_str("<h3>Customers</h3><p id=\"customers\">");
    for cu in &recall.customers {
        let _ = write!(b, "<span class=\"tag\">{}</span> ", escape(cu));
    }
    if recall.customers.is_empty() {
        b.push_str("none");
    }
    b.push_str(
        "</p><h3>Shipments</h3><table id=\"shipments\"><tr><th>Shipment</th><th>Customer</th></tr>",
    );
    for s in recall.shipments.iter().take(200) {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td></tr>",
            link("shipment", &s.id),
            opt(&s.customer)
        );
    }
    b.push_str("</table>");
    if recall.shipments.len() > 200 {
        let _ = write!(
            b,
            "<p>… and {} more (CSV has all).</p>",
            recall.shipments.len() - 200
        );
    }
    b.push_str("<h3>Containers</h3><p id=\"containers\">");
    for ct in recall.containers.iter().take(300) {
        let _ = write!(b, "{} ", link("container", ct));
    }
    if recall.containers.len() > 300 {
        let _ = write!(
            b,
            "… and {} more (CSV has all).",
            recall.containers.len() - 300
        );
    }
    b.push_str("</p>");
    const PAGE: usize = 100;
    let pages = recall.units.len().div_ceil(PAGE).max(1);
    let pg = Some(page_param)
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(1)
        .clamp(1, pages);
    let _ = write!(
        b,
        "<h3>Units (page {pg} of {pages})</h3><ol id=\"units\" start=\"{}\">",
        (pg - 1) * PAGE + 1
    );
    for s in recall.units.iter().skip((pg - 1) * PAGE).take(PAGE) {
        let _ = write!(b, "<li>{}</li>", link("unit", s));
    }
    b.push_str("</ol><p class=\"pager\">");
    let extra = if include_closed {
        "&amp;include_closed=true"
    } else {
        ""
    };
    if pg > 1 {
        let _ = write!(
            b,
            "<a href=\"/ui/lots/{u}?page={}{extra}\">← previous</a> ",
            pg - 1
        );
    }
    if pg < pages {
        let _ = write!(
            b,
            "<a id=\"next-page\" href=\"/ui/lots/{u}?page={}{extra}\">next →</a>",
            pg + 1
        );
    }
    b.push_str("</p>");
}

/// Item → its direct children (kind, id, link closed).
type Children<'a> = HashMap<(ItemKind, &'a str), Vec<(ItemKind, &'a str, bool)>>;

/// Renders the tree below `root` from a backward trace: nested lists, each node once.
fn nested(g: &TraceGraph) -> String {
    let mut children: Children = HashMap::new();
    for e in &g.edges {
        children
            .entry((e.parent_kind, e.parent.as_str()))
            .or_default()
            .push((e.child_kind, e.child.as_str(), e.closed));
    }
    let parts: HashMap<(ItemKind, &str), Option<&str>> = g
        .nodes
        .iter()
        .map(|n| {
            (
                (n.kind, n.id.as_str()),
                n.part.as_deref().or(n.level.as_deref()),
            )
        })
        .collect();
    fn walk<'a>(
        h: &mut String,
        at: (ItemKind, &'a str),
        children: &Children<'a>,
        parts: &HashMap<(ItemKind, &'a str), Option<&'a str>>,
        seen: &mut HashSet<(ItemKind, &'a str)>,
    ) {
        let Some(kids) = children.get(&at) else {
            return;
        };
        h.push_str("<ul class=\"tree\">");
        for &(k, id, closed) in kids {
            let part = parts
                .get(&(k, id))
                .copied()
                .flatten()
                .map(escape)
                .unwrap_or_default();
            let _ = write!(
                h,
                "<li class=\"{}{}\"><span class=\"kind\">{}</span> {} <span class=\"part\">{part}</span>{}",
                k.as_str(),
                if closed { " closed" } else { "" },
                k.as_str(),
                link(k.as_str(), id),
                if closed { " <em>(removed)</em>" } else { "" }
            );
            if seen.insert((k, id)) {
                walk(h, (k, id), children, parts, seen);
            }
            h.push_str("</li>");
        }
        h.push_str("</ul>");
    }
    let mut h = String::new();
    let mut seen = HashSet::new();
    let root = (g.root.kind, g.root.id.as_str());
    seen.insert(root);
    walk(&mut h, root, &children, &parts, &mut seen);
    if h.is_empty() {
        h.push_str("<p>empty</p>");
    }
    if g.truncated {
        h.push_str(
            "<p class=\"warn\">Truncated: more levels or nodes exist (see the trace API).</p>",
        );
    }
    h
}

async fn holder_page(st: &AppState, kind: ItemKind, id: &str) -> Response {
    let facts = match data::facts(st.reads(), kind, id).await {
        Ok(Some(f)) => f,
        Ok(None) => return not_found(kind.as_str(), id),
        Err(e) => return failure(e),
    };
    // Contents down to the units packed: each unit's own components are on its page (a
    // shipment's 1,600 units with theirs would be 8,000 nodes and a page of megabytes).
    let mut back = TraceRequest::new(kind, id, Direction::Backward);
    back.max_depth = 6;
    back.max_nodes = 2000;
    back.expand_units = false;
    let mut fwd = TraceRequest::new(kind, id, Direction::Forward);
    fwd.max_depth = 4;
    fwd.max_nodes = 50;
    let (b, f) = match (
        trace::trace(st.reads(), &back).await,
        trace::trace(st.reads(), &fwd).await,
    ) {
        (Ok(b), Ok(f)) => (b, f),
        (Err(e), _) | (_, Err(e)) => return failure(e),
    };
    let title = if kind == ItemKind::Container {
        "Container"
    } else {
        "Shipment"
    };
    let units = b
        .nodes
        .iter()
        .filter(|n| n.kind == ItemKind::Unit && n.depth > 0)
        .count();
    let mut h = format!(
        "<h1>{title} <span id=\"item-id\">{}</span></h1><table class=\"summary\">",
        escape(id)
    );
    if kind == ItemKind::Container {
        let _ = write!(h, "<tr><th>Level</th><td>{}</td></tr>", opt(&facts.level));
    } else {
        let _ = write!(
            h,
            "<tr><th>Customer</th><td id=\"customer\">{}</td></tr><tr><th>Shipped</th><td>{}</td></tr>",
            opt(&facts.customer),
            opt(&facts.shipped_at)
        );
    }
    let _ = write!(
        h,
        "<tr><th>Units packed (every container level)</th><td id=\"unit-count\">{units}{}</td></tr>",
        if b.truncated { "+" } else { "" }
    );
    if facts.placeholder {
        h.push_str("<tr><th>Note</th><td>only named by trace events (no master data)</td></tr>");
    }
    h.push_str("</table>");
    let outer: Vec<String> = f
        .nodes
        .iter()
        .filter(|n| n.depth > 0)
        .map(|n| {
            let cust = n
                .customer
                .as_deref()
                .map(|c| format!(" to {}", escape(c)))
                .unwrap_or_default();
            format!("{} {}{cust}", n.kind.as_str(), link(n.kind.as_str(), &n.id))
        })
        .collect();
    if !outer.is_empty() {
        let _ = write!(
            h,
            "<h2>Inside / shipped as</h2><p id=\"outer\">{}</p>",
            outer.join(" → ")
        );
    }
    h.push_str("<h2>Contents</h2>");
    h.push_str(&nested(&b));
    let _ = write!(
        h,
        "<p><a href=\"/api/v1/trace/{}/{}?direction=backward\">trace JSON</a></p>",
        kind.as_str(),
        url_escape(id)
    );
    html(page(&format!("{title} {id}"), &h))
}

/// `GET /ui/containers/{id}`.
pub async fn container_page(State(st): State<AppState>, Path(id): Path<String>) -> Response {
    holder_page(&st, ItemKind::Container, &id).await
}

/// `GET /ui/shipments/{id}`.
pub async fn shipment_page(State(st): State<AppState>, Path(id): Path<String>) -> Response {
    holder_page(&st, ItemKind::Shipment, &id).await
}

/// `GET /ui/operations?…`: the internal trace explorer (the filters of `/api/v1/operations`).
pub async fn operations_page(State(st): State<AppState>, Query(q): Q) -> Response {
    let fields = [
        ("station", "Station"),
        ("equipment", "Equipment"),
        ("operator", "Operator"),
        ("lot", "Lot"),
        ("parameter", "Parameter"),
        ("from", "From (RFC 3339)"),
        ("to", "To"),
    ];
    let mut b = String::from(
        "<h1>Operations</h1><form class=\"filters\" method=\"get\" action=\"/ui/operations\">",
    );
    for (k, label) in fields {
        let _ = write!(
            b,
            "<label>{label} <input name=\"{k}\" value=\"{}\"></label>",
            escape(param(&q, k).unwrap_or(""))
        );
    }
    let result = param(&q, "result").unwrap_or("");
    let _ = write!(
        b,
        "<label>Result <select name=\"result\"><option value=\"\">any</option>\
         <option{}>pass</option><option{}>fail</option></select></label>\
         <label><input type=\"checkbox\" name=\"out_of_spec\" value=\"true\"{}> out of spec</label>\
         <label>Rows <input name=\"limit\" size=\"4\" value=\"{}\"></label> <button>Apply</button></form>",
        if result == "pass" { " selected" } else { "" },
        if result == "fail" { " selected" } else { "" },
        if param(&q, "out_of_spec") == Some("true") {
            " checked"
        } else {
            ""
        },
        escape(param(&q, "limit").unwrap_or("100")),
    );
    let mut bad = Vec::new();
    let time = |k: &str, bad: &mut Vec<String>| {
        param(&q, k).and_then(|v| match threadline_shared::time::parse(v) {
            Ok(t) => Some(t),
            Err(_) => {
                bad.push(format!("{k}: {v:?} is not an RFC 3339 time"));
                None
            }
        })
    };
    let from = time("from", &mut bad);
    let to = time("to", &mut bad);
    let limit = match param(&q, "limit").map(str::parse::<u32>) {
        None => 100,
        Some(Ok(n)) if (1..=1000).contains(&n) => n,
        Some(_) => {
            bad.push("limit: expected 1 to 1000".to_owned());
            100
        }
    };
    let after_id = match param(&q, "after_id").map(str::parse::<i64>) {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => {
            bad.push("after_id: expected an integer".to_owned());
            None
        }
    };
    if let Some(r) = param(&q, "result")
        && r != "pass"
        && r != "fail"
    {
        bad.push("result: expected pass or fail".to_owned());
    }
    for k in q.keys() {
        if ![
            "station",
            "equipment",
            "operator",
            "lot",
            "parameter",
            "from",
            "to",
            "result",
            "out_of_spec",
            "limit",
            "after_id",
            "work_order",
        ]
        .contains(&k.as_str())
        {
            bad.push(format!("unknown filter {k:?}"));
        }
    }
    if param(&q, "work_order").is_some() {
        bad.push("work_order: not a filter of the operations API; search the work order on the start page".to_owned());
    }
    if !bad.is_empty() {
        let _ = write!(
            b,
            "<p class=\"error\" id=\"filter-error\">{}</p>",
            escape(&bad.join("; "))
        );
        return respond(StatusCode::BAD_REQUEST, "Operations", &b);
    }
    let f = OperationFilter {
        station: param(&q, "station").map(str::to_owned),
        equipment: param(&q, "equipment").map(str::to_owned),
        operator: param(&q, "operator").map(str::to_owned),
        lot: param(&q, "lot").map(str::to_owned),
        from,
        to,
        result: param(&q, "result").map(str::to_owned),
        parameter: param(&q, "parameter").map(str::to_owned),
        out_of_spec: param(&q, "out_of_spec").map(|v| v == "true"),
        limit,
        after_id,
    };
    let pg = match trace::operations(st.reads(), &f).await {
        Ok(p) => p,
        Err(e) => return failure(e),
    };
    b.push_str("<table id=\"ops\"><tr><th>Unit</th><th>Part</th><th>Station</th><th>Operation</th><th>Equipment</th><th>Operator</th><th>Completed</th><th>Result</th><th>Out of spec</th></tr>");
    for r in &pg.operations {
        let o = &r.operation;
        let _ = write!(
            b,
            "<tr{}><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}{}</td><td>{}</td></tr>",
            if o.result != "pass" {
                " class=\"fail\""
            } else {
                ""
            },
            link("unit", &r.serial),
            opt(&r.part),
            escape(&o.station),
            escape(&o.operation),
            opt(&o.equipment),
            opt(&o.operator),
            escape(&o.completed_at),
            escape(&o.result),
            o.defect_code
                .as_deref()
                .map(|d| format!(" ({})", escape(d)))
                .unwrap_or_default(),
            if o.out_of_spec { "yes" } else { "" },
        );
    }
    b.push_str("</table>");
    if pg.operations.is_empty() {
        b.push_str("<p id=\"no-ops\">No operations match.</p>");
    }
    if let Some(next) = pg.next_after_id {
        let mut qs: Vec<String> = q
            .iter()
            .filter(|(k, v)| k.as_str() != "after_id" && !v.is_empty())
            .map(|(k, v)| format!("{}={}", url_escape(k), url_escape(v)))
            .collect();
        qs.sort();
        qs.push(format!("after_id={next}"));
        let _ = write!(
            b,
            "<p class=\"pager\"><a id=\"next-page\" href=\"/ui/operations?{}\">next page →</a></p>",
            escape(&qs.join("&"))
        );
    }
    html(page("Operations", &b))
}

/// `GET /ui/dashboard`: filled and refreshed by `app.js` from `/api/v1/dashboard`.
pub async fn dashboard_page() -> Response {
    let b = format!(
        "<h1>Dashboard</h1><p class=\"meta\">Last <span id=\"window\">60</span> minutes · updated <span id=\"updated\">…</span> \
         (every 2 s, from <a href=\"/api/v1/dashboard\">/api/v1/dashboard</a>)</p>\
         <div id=\"dashboard\" data-holds=\"{}\"><p>Loading…</p></div>",
        has_route("/api/v1/holds")
    );
    html(page("Dashboard", &b))
}

/// `GET /ui/spc?station=&parameter=&chart=&subgroup=&from=&to=`: the control chart, drawn by
/// `app.js` from `/api/v1/spc` with the same parameters (a plain parameter-over-time chart of
/// the newest 500 values when this build has no SPC API).
pub async fn spc_page(State(st): State<AppState>, Query(q): Q) -> Response {
    let station = param(&q, "station").unwrap_or("").to_owned();
    let parameter = param(&q, "parameter").unwrap_or("").to_owned();
    let chart = param(&q, "chart").unwrap_or("imr").to_owned();
    let subgroup = param(&q, "subgroup").unwrap_or("5").to_owned();
    let from = param(&q, "from").unwrap_or("").to_owned();
    let to = param(&q, "to").unwrap_or("").to_owned();
    let (stations, params) = data::recent_names(st.reads()).await.unwrap_or_default();
    let mut b =
        String::from("<h1>SPC</h1><form class=\"filters\" method=\"get\" action=\"/ui/spc\">");
    let _ = write!(
        b,
        "<label>Station <input name=\"station\" list=\"stations\" value=\"{}\"></label>\
         <label>Parameter <input name=\"parameter\" list=\"params\" value=\"{}\"></label>\
         <label>Chart <select name=\"chart\"><option value=\"imr\"{}>I-MR</option><option value=\"xbar-r\"{}>X̄-R</option></select></label>\
         <label>Subgroup <input name=\"subgroup\" size=\"2\" value=\"{}\"></label>\
         <label>From <input name=\"from\" value=\"{}\"></label><label>To <input name=\"to\" value=\"{}\"></label> <button>Chart</button></form>",
        escape(&station),
        escape(&parameter),
        if chart == "imr" { " selected" } else { "" },
        if chart == "xbar-r" { " selected" } else { "" },
        escape(&subgroup),
        escape(&from),
        escape(&to),
    );
    for (id, list) in [("stations", &stations), ("params", &params)] {
        let _ = write!(b, "<datalist id=\"{id}\">");
        for v in list {
            let _ = write!(b, "<option value=\"{}\">", escape(v));
        }
        b.push_str("</datalist>");
    }
    let spc_api = has_route("/api/v1/spc");
    if station.is_empty() || parameter.is_empty() {
        b.push_str("<p>Pick a station and a parameter.</p>");
        return html(page("SPC", &b));
    }
    // With the SPC API the browser asks it; without, the newest values are embedded here.
    let points = if spc_api {
        Vec::new()
    } else {
        match data::parameter_points(st.reads(), &station, &parameter, 500).await {
            Ok(p) => p,
            Err(e) => return failure(e),
        }
    };
    if !spc_api {
        b.push_str("<p class=\"warn\" id=\"spc-note\">Plain parameter-over-time chart of the newest 500 values with their spec limits. \
                    Control limits, rule violations and Cp/Cpk come with the analytics API (<code>/api/v1/spc</code>), not in this build.</p>");
    }
    let mut api_query = format!(
        "station={}&parameter={}&chart={}",
        url_escape(&station),
        url_escape(&parameter),
        url_escape(&chart)
    );
    if chart == "xbar-r" {
        api_query.push_str(&format!("&subgroup={}", url_escape(&subgroup)));
    }
    for (k, v) in [("from", &from), ("to", &to)] {
        if !v.is_empty() {
            api_query.push_str(&format!("&{k}={}", url_escape(v)));
        }
    }
    let _ = write!(
        b,
        "<div id=\"chart\" class=\"chart\" data-spc=\"{spc_api}\"></div><p id=\"chart-stats\"></p>\
         <div id=\"violations\"></div>\
         <p class=\"meta\">Rules: we1 a point beyond 3σ · we2 2 of 3 beyond 2σ, one side · we3 4 of 5 beyond 1σ, one side · \
         we4 8 in a row on one side · n5 6 in a row rising or falling · n6 14 alternating up and down · \
         n7 15 in a row within 1σ · n8 8 in a row beyond 1σ on both sides (docs/analysis.md). Click a point to open its unit.</p>{}",
        json_block(
            "chart-data",
            &json!({"station": station, "parameter": parameter, "api_query": api_query, "points": points})
        )
    );
    html(page(&format!("SPC {station} {parameter}"), &b))
}

/// `GET /ui/analysis`: common-cause analysis over pasted serials.
pub async fn analysis_page() -> Response {
    let api = has_route("/api/v1/analysis/common-cause");
    let mut b = String::from(
        "<h1>Common-cause analysis</h1><p>Paste the serials of the failed or returned units (one per line, or separated by commas or spaces). \
         The factors they share more often than the population are ranked by p-value.</p>\
         <form id=\"analysis-form\"><textarea id=\"serials\" rows=\"8\" cols=\"60\"></textarea><br>\
         <button>Analyse</button></form><div id=\"analysis-result\"></div>",
    );
    if !api {
        b.push_str("<p class=\"warn\" id=\"analysis-note\">The analysis API (<code>POST /api/v1/analysis/common-cause</code>) is not in this build; \
                    this page starts working when it is.</p>");
    }
    let _ = write!(b, "<div id=\"analysis\" data-api=\"{api}\"></div>");
    html(page("Analysis", &b))
}

/// Any other `/ui/…` path.
pub async fn unknown_page(Path(rest): Path<String>) -> Response {
    not_found("page", &format!("/ui/{rest}"))
}
