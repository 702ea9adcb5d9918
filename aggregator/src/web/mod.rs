//! The web UI, served by the aggregator on the API's port: server-rendered pages (every piece of
//! text from the database HTML-escaped here) with small vanilla scripts for the genealogy graph,
//! the dashboard's polling and the charts. No external assets: CSS and scripts are embedded in
//! the binary (`layout`), so the UI works offline. See docs/ui.md.
//!
//! This file holds the escaping helpers and the unit report's sections, shared by the printable
//! report (`/api/v1/units/{serial}?format=html`, no scripts) and the unit page.

pub mod dashboard;
pub mod data;
pub mod layout;
pub mod pages;
pub mod search;
pub mod signin;

use std::fmt::Write as _;

use crate::trace::{Operation, UnitReport};

/// Escapes text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a path segment or query value (RFC 3986 unreserved characters stay).
pub fn url_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The UI page of an item (`kind`: unit | lot | container | shipment).
pub fn href(kind: &str, id: &str) -> String {
    let base = match kind {
        "lot" => "/ui/lots/",
        "container" => "/ui/containers/",
        "shipment" => "/ui/shipments/",
        _ => "/ui/units/",
    };
    format!("{base}{}", url_escape(id))
}

/// A link to an item's page, its text the escaped id.
pub fn link(kind: &str, id: &str) -> String {
    format!("<a href=\"{}\">{}</a>", href(kind, id), escape(id))
}

/// The UI's routes (mounted by `api::router`, behind the same authentication).
pub fn routes() -> axum::Router<crate::api::AppState> {
    use axum::routing::get;
    axum::Router::new()
        .route(
            signin::SIGN_IN,
            get(signin::sign_in_form).post(signin::sign_in),
        )
        .route(
            signin::SIGN_OUT,
            get(signin::sign_out_form).post(signin::sign_out),
        )
        .route("/", get(pages::search_page))
        .route("/ui", get(pages::search_page))
        .route("/ui/assets/{name}", get(layout::asset))
        .route("/ui/units/{serial}", get(pages::unit_page))
        .route("/ui/lots/{lot}", get(pages::lot_page))
        .route("/ui/lots/{lot}/scope", get(pages::lot_scope))
        .route("/ui/containers/{id}", get(pages::container_page))
        .route("/ui/shipments/{id}", get(pages::shipment_page))
        .route("/ui/operations", get(pages::operations_page))
        .route("/ui/dashboard", get(pages::dashboard_page))
        .route("/ui/spc", get(pages::spc_page))
        .route("/ui/analysis", get(pages::analysis_page))
        .route("/ui/{*rest}", get(pages::unknown_page))
        .route("/api/v1/dashboard", get(dashboard::dashboard))
}

/// Whether the API document lists `path` (features other parts of the aggregator add, such as
/// holds or SPC, appear in the UI once their routes exist).
pub fn has_route(path: &str) -> bool {
    use utoipa::OpenApi as _;
    static PATHS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    PATHS
        .get_or_init(|| {
            crate::api::openapi::ApiDoc::openapi()
                .paths
                .paths
                .keys()
                .cloned()
                .collect()
        })
        .iter()
        .any(|p| p == path)
}

fn o(v: &Option<String>) -> String {
    v.as_deref().map(escape).unwrap_or_else(|| "—".to_owned())
}

fn n(v: Option<f64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "—".to_owned())
}

fn val(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "—".to_owned(),
        serde_json::Value::String(s) => escape(s),
        serde_json::Value::Number(n) => n
            .as_f64()
            .map(|f| f.to_string())
            .unwrap_or_else(|| n.to_string()),
        other => escape(&other.to_string()),
    }
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em;color:#111}table{border-collapse:collapse;margin:.5em 0 1.5em}\
td,th{border:1px solid #999;padding:.2em .5em;text-align:left;vertical-align:top}th{background:#eee}\
.fail,.oos{color:#b00;font-weight:bold}h1{margin-bottom:.2em}@media print{body{margin:0}}";

/// ` class="…"` for a row or cell that needs one ("" for none).
fn class(name: Option<&str>) -> String {
    name.map(|n| format!(" class=\"{n}\"")).unwrap_or_default()
}

/// Appends a table: one header row, then each row with its class attribute (see [`class`]).
/// Cells are HTML already — every caller escapes its text with [`escape`], [`o`] or [`val`].
fn table<const N: usize>(
    h: &mut String,
    head: [&str; N],
    rows: impl IntoIterator<Item = (String, [String; N])>,
) {
    h.push_str("<table><tr>");
    for th in head {
        let _ = write!(h, "<th>{th}</th>");
    }
    h.push_str("</tr>");
    for (cls, cells) in rows {
        let _ = write!(h, "<tr{cls}>");
        for td in cells {
            let _ = write!(h, "<td>{td}</td>");
        }
        h.push_str("</tr>");
    }
    h.push_str("</table>");
}

/// The unit report as a self-contained HTML page.
pub fn unit_report(r: &UnitReport, generated_at: &str) -> String {
    let s = escape(&r.serial);
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Unit {s}</title><style>{STYLE}</style></head><body>\
         <h1>Unit {s}</h1><p>Generated {} by Threadline.</p>{}</body></html>\n",
        escape(generated_at),
        report_sections(r, &|_, id| escape(id)),
    )
}

/// The report's sections (summary table, materials, components, operations, quality checks).
/// `link(kind, id)` renders a raw id as HTML (escaping it) — plain text in the printable report,
/// a link in the UI.
pub fn report_sections(r: &UnitReport, link: &dyn Fn(&str, &str) -> String) -> String {
    let mut h = String::new();
    // `write!` into a String cannot fail; the results are ignored deliberately.
    let _ = write!(
        h,
        "<table class=\"summary\"><tr><th>Serial</th><td>{}</td></tr><tr><th>Part</th><td>{}</td></tr><tr><th>Work order</th><td>{}</td></tr><tr><th>Line</th><td>{}</td></tr>",
        escape(&r.serial),
        o(&r.part),
        o(&r.work_order),
        o(&r.line)
    );
    let containers: Vec<String> = r
        .containers
        .iter()
        .map(|c| format!("{} ({})", link("container", &c.id), o(&c.level)))
        .collect();
    let _ = write!(
        h,
        "<tr><th>Containers</th><td>{}</td></tr>",
        if containers.is_empty() {
            "—".to_owned()
        } else {
            containers.join(" → ")
        }
    );
    match &r.shipment {
        Some(sh) => {
            let _ = write!(
                h,
                "<tr><th>Shipment</th><td>{} to {} at {}</td></tr>",
                link("shipment", &sh.id),
                o(&sh.customer),
                o(&sh.shipped_at)
            );
        }
        None => h.push_str("<tr><th>Shipment</th><td>not shipped</td></tr>"),
    }
    h.push_str("</table>");

    h.push_str("<h2>Materials</h2>");
    let direct = r.materials.iter().map(|m| {
        let removed = if m.closed { " (removed)" } else { "" };
        let lot = format!("{}{removed}", link("lot", &m.lot));
        (
            lot,
            &m.part,
            &m.supplier,
            m.qty,
            &m.station,
            "direct".to_owned(),
        )
    });
    let via = r.component_materials.iter().map(|m| {
        let lot = link("lot", &m.lot);
        (
            lot,
            &m.part,
            &m.supplier,
            m.qty,
            &m.station,
            link("unit", &m.via),
        )
    });
    table(
        &mut h,
        ["Lot", "Part", "Supplier", "Qty", "Station", "Via"],
        direct
            .chain(via)
            .map(|(lot, part, supplier, qty, station, via)| {
                (
                    String::new(),
                    [lot, o(part), o(supplier), n(qty), o(station), via],
                )
            }),
    );

    h.push_str("<h2>Components</h2>");
    table(
        &mut h,
        ["Serial", "Part", "Station", "Assembled", "Removed"],
        r.components.iter().map(|c| {
            let cells = [
                link("unit", &c.serial),
                o(&c.part),
                o(&c.station),
                escape(&c.assembled_at),
                o(&c.removed_at),
            ];
            (String::new(), cells)
        }),
    );

    h.push_str("<h2>Operations</h2>");
    for op in &r.operations {
        operation(&mut h, op);
    }

    h.push_str("<h2>Quality checks</h2>");
    table(
        &mut h,
        [
            "Characteristic",
            "Value",
            "Unit",
            "LSL",
            "USL",
            "Result",
            "Station",
            "Operator",
            "Checked",
        ],
        r.quality_checks.iter().map(|q| {
            let cls = class((q.result != "pass").then_some("fail"));
            let cells = [
                escape(&q.characteristic),
                val(&q.value),
                o(&q.unit),
                n(q.lsl),
                n(q.usl),
                escape(&q.result),
                o(&q.station),
                o(&q.operator),
                escape(&q.checked_at),
            ];
            (cls, cells)
        }),
    );

    if !r.supplier_history.is_empty() {
        h.push_str(
            "<h2>Supplier history (EPCIS)</h2><p class=\"hint\">Events from suppliers' EPCIS \
             documents that name a lot in this unit (captured with POST /api/v1/epcis/capture).</p>",
        );
        supplier_table(&mut h, &r.supplier_history, link);
    }
    h
}

/// The suppliers' events of lots (unit report, lot page), one row each, oldest first.
pub fn supplier_table(
    h: &mut String,
    evs: &[crate::trace::SupplierEvent],
    link: &dyn Fn(&str, &str) -> String,
) {
    let _ = write!(h, "<table class=\"supplier-events\"><tr>");
    for th in [
        "Time",
        "Lot",
        "Event",
        "Action",
        "Business step",
        "Disposition",
        "Read point",
        "Supplier",
        "Matched",
        "Event ID",
    ] {
        let _ = write!(h, "<th>{th}</th>");
    }
    h.push_str("</tr>");
    for e in evs {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} ({})</td><td><code>{}</code></td></tr>",
            escape(&e.event_time),
            link("lot", &e.lot),
            escape(&e.event_type),
            o(&e.action),
            o(&e.biz_step),
            o(&e.disposition),
            o(&e.read_point.clone().or_else(|| e.biz_location.clone())),
            o(&e.source),
            escape(&e.matched),
            escape(&e.matched_by),
            escape(&e.event_id),
        );
    }
    h.push_str("</table>");
}

/// One operation: its head, its parameters against their limits, its environment.
fn operation(h: &mut String, op: &Operation) {
    let s = &op.summary;
    let defect = s
        .defect_code
        .as_deref()
        .map(|d| format!(" ({})", escape(d)))
        .unwrap_or_default();
    let _ = write!(
        h,
        "<h3>{} — {}</h3><table><tr><th>Equipment</th><td>{}</td><th>Operator</th><td>{}</td><th>Recipe</th><td>{}</td></tr>\
         <tr><th>Started</th><td>{}</td><th>Completed</th><td>{}</td><th>Result</th><td{}>{}{defect}</td></tr></table>",
        escape(&s.station),
        escape(&s.operation),
        o(&s.equipment),
        o(&s.operator),
        o(&s.recipe),
        o(&s.started_at),
        escape(&s.completed_at),
        class((s.result != "pass").then_some("fail")),
        escape(&s.result),
    );
    if !op.parameters.is_empty() {
        table(
            h,
            ["Parameter", "Value", "Unit", "LSL", "USL", "In spec"],
            op.parameters.iter().map(|p| {
                let in_spec = if p.in_spec { "yes" } else { "NO" };
                let cells = [
                    escape(&p.name),
                    val(&p.value),
                    o(&p.unit),
                    n(p.lsl),
                    n(p.usl),
                    in_spec.to_owned(),
                ];
                (class((!p.in_spec).then_some("oos")), cells)
            }),
        );
    }
    if !op.environment.is_empty() {
        table(
            h,
            ["Environment", "Value", "Unit"],
            op.environment
                .iter()
                .map(|e| (String::new(), [escape(&e.name), val(&e.value), o(&e.unit)])),
        );
    }
}

/// `GET /`: a start page for a person who opens the aggregator in a browser — what is here and
/// how to ask it, with a form for the unit report (the API itself is JSON).
pub fn api_help() -> &'static str {
    r#"<h2>API</h2>
<ul>
<li><code>GET /api/v1/units/{serial}</code> — the trace report (<code>?format=html</code>, <code>?format=csv</code>)</li>
<li><code>GET /api/v1/trace/{kind}/{id}?direction=backward|forward</code> — genealogy (kind: unit, lot, container, shipment)</li>
<li><code>GET /api/v1/lots/{lot}/recall</code> — recall scope: units, containers, shipments, customers (<code>?format=csv</code>)</li>
<li><code>GET /api/v1/operations?station=&amp;equipment=&amp;operator=&amp;lot=&amp;from=&amp;to=&amp;parameter=&amp;out_of_spec=true</code> — internal trace</li>
<li><a href="/api/v1/gateways">/api/v1/gateways</a> — gateways, online state, buffer depth</li>
<li><a href="/api/v1/events?limit=50">/api/v1/events</a> — the raw event log, paged</li>
<li><a href="/api/v1/audit/verify">/api/v1/audit/verify</a> — recompute the hash chains</li>
<li><a href="/healthz">/healthz</a>, <a href="/metrics">/metrics</a>, <a href="/api/openapi.json">/api/openapi.json</a></li>
</ul>"#
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_markup() {
        assert_eq!(
            super::escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
