//! CSV renderings (RFC 4180: comma, CRLF, quotes doubled; fields quoted only when needed).
//!
//! Unit report layout — one row per operation parameter (an operation without parameters gets
//! one row with empty parameter columns), every row repeating the unit and operation columns so
//! a spreadsheet filter works on any of them:
//! `serial,part,work_order,line,station,operation,equipment,operator,recipe,started_at,completed_at,result,defect_code,parameter,value,unit,lsl,usl,in_spec`.
//! Materials, components, containers and the shipment are in the JSON and HTML forms.
//!
//! Recall layout — one row per item: `kind,id,customer` with kind unit | container | shipment |
//! customer.

use super::recall::Encoder as _;
use super::{Recall, UnitReport};

/// A cell a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, tab or CR first; a customer
/// named `=HYPERLINK(…)`), prefixed with `'` so it shows as text. Deliberate deviation: a plain
/// number (`-0.5`, `+3`, `-1e-3` — anything Rust parses as `f64`) stays a number, since
/// measured values and limits must stay numeric in the sheet and a number runs nothing.
fn neutralised(v: &str) -> std::borrow::Cow<'_, str> {
    let risky = v.starts_with(['=', '+', '-', '@', '\t', '\r']);
    if risky && v.parse::<f64>().is_err() {
        std::borrow::Cow::Owned(format!("'{v}"))
    } else {
        std::borrow::Cow::Borrowed(v)
    }
}

fn field(out: &mut String, v: &str) {
    let v = &*neutralised(v);
    if v.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&v.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(v);
    }
}

fn row(out: &mut String, fields: &[&str]) {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        field(out, f);
    }
    out.push_str("\r\n");
}

fn num(v: Option<f64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

fn json_scalar(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        // Same rendering as the limits (230, not 230.0).
        serde_json::Value::Number(n) => n
            .as_f64()
            .map(|f| f.to_string())
            .unwrap_or_else(|| n.to_string()),
        other => other.to_string(),
    }
}

pub const UNIT_REPORT_HEADER: &[&str] = &[
    "serial",
    "part",
    "work_order",
    "line",
    "station",
    "operation",
    "equipment",
    "operator",
    "recipe",
    "started_at",
    "completed_at",
    "result",
    "defect_code",
    "parameter",
    "value",
    "unit",
    "lsl",
    "usl",
    "in_spec",
];

pub fn unit_report(r: &UnitReport) -> String {
    let mut out = String::new();
    row(&mut out, UNIT_REPORT_HEADER);
    let o = |v: &Option<String>| v.clone().unwrap_or_default();
    for op in &r.operations {
        let s = &op.summary;
        let head = [
            r.serial.clone(),
            o(&r.part),
            o(&r.work_order),
            o(&r.line),
            s.station.clone(),
            s.operation.clone(),
            o(&s.equipment),
            o(&s.operator),
            o(&s.recipe),
            o(&s.started_at),
            s.completed_at.clone(),
            s.result.clone(),
            o(&s.defect_code),
        ];
        let params: Vec<[String; 6]> = if op.parameters.is_empty() {
            vec![Default::default()]
        } else {
            op.parameters
                .iter()
                .map(|p| {
                    [
                        p.name.clone(),
                        json_scalar(&p.value),
                        o(&p.unit),
                        num(p.lsl),
                        num(p.usl),
                        p.in_spec.to_string(),
                    ]
                })
                .collect()
        };
        for p in &params {
            let fields: Vec<&str> = head.iter().chain(p.iter()).map(String::as_str).collect();
            row(&mut out, &fields);
        }
    }
    out
}

pub fn recall(r: &Recall) -> String {
    let mut out = String::new();
    let mut enc = RecallCsv::default();
    for u in &r.units {
        enc.line(&mut out, &["unit", u, ""]);
    }
    for c in &r.containers {
        enc.line(&mut out, &["container", c, ""]);
    }
    for s in &r.shipments {
        enc.line(
            &mut out,
            &["shipment", &s.id, s.customer.as_deref().unwrap_or("")],
        );
    }
    for c in &r.customers {
        enc.line(&mut out, &["customer", c, c]);
    }
    enc.finish(&mut out);
    out
}

/// The recall CSV written row by row (the streamed answer of the API; [`recall`] for a whole
/// [`Recall`] in memory writes the same bytes).
#[derive(Debug, Default)]
pub struct RecallCsv {
    header_written: bool,
}

impl RecallCsv {
    fn line(&mut self, out: &mut String, fields: &[&str]) {
        if !self.header_written {
            row(out, &["kind", "id", "customer"]);
            self.header_written = true;
        }
        row(out, fields);
    }
}

impl super::recall::Encoder for RecallCsv {
    fn row(&mut self, out: &mut String, r: &super::recall::RecallRow) {
        use super::recall::Section;
        match r.section() {
            Some(Section::Units) => self.line(out, &["unit", &r.id, ""]),
            Some(Section::Containers) => self.line(out, &["container", &r.id, ""]),
            Some(Section::Shipments) => self.line(
                out,
                &["shipment", &r.id, r.customer.as_deref().unwrap_or("")],
            ),
            Some(Section::Customers) => self.line(out, &["customer", &r.id, &r.id]),
            None => {}
        }
    }

    fn finish(&mut self, out: &mut String) {
        if !self.header_written {
            row(out, &["kind", "id", "customer"]);
            self.header_written = true;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn formula_cells_are_neutralised_numbers_kept() {
        let mut out = String::new();
        super::row(
            &mut out,
            &[
                "=HYPERLINK(\"http://x\")",
                "+1+1",
                "-2+3",
                "@SUM(A1)",
                "\tx",
                "\rx",
                "-0.5",
                "+3",
                "a=b",
            ],
        );
        assert_eq!(
            out,
            "\"'=HYPERLINK(\"\"http://x\"\")\",'+1+1,'-2+3,'@SUM(A1),'\tx,\"'\rx\",-0.5,+3,a=b\r\n"
        );
    }

    #[test]
    fn quotes_only_when_needed() {
        let mut s = String::new();
        super::row(&mut s, &["a", "b,c", "say \"hi\"", "x\ny"]);
        assert_eq!(s, "a,\"b,c\",\"say \"\"hi\"\"\",\"x\ny\"\r\n");
    }
}
