//! The web UI in a real browser: headless Chromium driven by chromedriver over plain WebDriver
//! HTTP (reqwest), against the aggregator's router served on a real port over a generated plant
//! (SQLite, fresh per run).
//!
//! Chromium / chromedriver come from Debian (`apt-get install chromium chromium-driver`;
//! `scripts/test` installs them); missing, the test is skipped loudly, or fails under CI=true.
//! `THREADLINE_UI_SCREENSHOTS=1` writes the screenshots used by docs/ui.md into docs/ui/.
//!
//! The plant: lines L1 and L2; units UT-0000…UT-0039 (UT-n on line L(n%2+1)), each consuming
//! lot LOT-A (n < 20) or LOT-B and a sub-assembly SA-n that consumed lot LOT-S; every 5th unit
//! failed its leak test once and was reworked; cases of 10 (CASE-0…3), two pallets, shipments
//! SH-1 (pallet 1, to ACME) and SH-2 (pallet 2, to Globex).

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use threadline_aggregator::api::{AppState, auth::Tokens, router};
use threadline_aggregator::config::Scope;
use threadline_aggregator::store::Db;
use threadline_shared::testing::{free_port, skip_or_fail};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
const UNITS: usize = 40;

fn ts(min: usize) -> String {
    format!("2026-01-01T{:02}:{:02}:00.000000Z", 8 + min / 60, min % 60)
}

/// SQL for the generated plant described in the module doc.
fn plant() -> Vec<String> {
    let mut items = vec![
        "(1, 'lot', 'LOT-A', 'P-6202', FALSE, 'SKF', NULL, NULL, NULL, NULL)".to_owned(),
        "(2, 'lot', 'LOT-B', 'P-6202', FALSE, 'NSK', NULL, NULL, NULL, NULL)".to_owned(),
        "(3, 'lot', 'LOT-S', 'M6-SCREW', FALSE, 'Wuerth <GmbH>', NULL, NULL, NULL, NULL)"
            .to_owned(),
    ];
    let mut edges = Vec::new();
    let mut ops = Vec::new();
    let mut e = 0;
    let mut edge =
        |edges: &mut Vec<String>, p: usize, c: usize, rel: &str, st: &str, at: String| {
            e += 1;
            edges.push(format!("({e}, {p}, {c}, '{rel}', 1, '{st}', '{at}')"));
        };
    let mut op = 0;
    for n in 0..UNITS {
        let unit = 100 + n;
        let sub = 200 + n;
        let line = n % 2 + 1;
        items.push(format!(
            "({unit}, 'unit', 'UT-{n:04}', 'FG-1', FALSE, NULL, 'WO-{line}', 'L{line}', NULL, NULL)"
        ));
        items.push(format!(
            "({sub}, 'unit', 'SA-{n:04}', 'SA-1', FALSE, NULL, 'WO-S', 'L{line}', NULL, NULL)"
        ));
        edge(&mut edges, sub, 3, "consumed", "ST05", ts(n));
        edge(
            &mut edges,
            unit,
            if n < 20 { 1 } else { 2 },
            "consumed",
            "ST10",
            ts(n + 1),
        );
        edge(&mut edges, unit, sub, "assembled", "ST20", ts(n + 2));
        let mut push_op = |ops: &mut Vec<String>, station: &str, result: &str, at: String| {
            op += 1;
            ops.push(format!(
                "({op}, {unit}, '{station}', '{station} op', 'EQ-{station}', 'OP7', '{at}', '{result}', 'gw-L{line}')"
            ));
        };
        push_op(&mut ops, "ST10", "pass", ts(n + 1));
        if n % 5 == 0 {
            push_op(&mut ops, "ST30", "fail", ts(n + 3));
        }
        push_op(&mut ops, "ST30", "pass", ts(n + 4));
    }
    for c in 0..UNITS / 10 {
        let id = 300 + c;
        items.push(format!(
            "({id}, 'container', 'CASE-{c}', NULL, FALSE, NULL, NULL, NULL, 'case', NULL)"
        ));
        for n in c * 10..c * 10 + 10 {
            edge(&mut edges, id, 100 + n, "packed", "PK1", ts(n + 10));
        }
        edge(
            &mut edges,
            310 + c / 2,
            id,
            "packed",
            "PK2",
            ts(c * 10 + 30),
        );
    }
    for p in 0..2 {
        items.push(format!(
            "({}, 'container', 'PAL-{p}', NULL, FALSE, NULL, NULL, NULL, 'pallet', NULL)",
            310 + p
        ));
        let customer = ["ACME", "Globex"][p];
        items.push(format!(
            "({}, 'shipment', 'SH-{}', NULL, FALSE, NULL, NULL, NULL, NULL, '{customer}')",
            320 + p,
            p + 1
        ));
        edge(&mut edges, 320 + p, 310 + p, "shipped", "SHIP", ts(100 + p));
    }
    vec![
        format!(
            "INSERT INTO items (id, kind, ext_id, part, placeholder, supplier, work_order, line, level, customer) VALUES {}",
            items.join(", ")
        ),
        format!(
            "INSERT INTO edges (id, parent_id, child_id, relation, qty, station, valid_from) VALUES {}",
            edges.join(", ")
        ),
        format!(
            "INSERT INTO operations (id, unit_id, station, operation, equipment, operator, completed_at, result, gateway) VALUES {}",
            ops.join(", ")
        ),
        "INSERT INTO operation_parameters (operation_id, name, value_num, unit, lsl, usl, in_spec) \
         SELECT id, 'leak.rate', 0.1 + (id % 7) * 0.05, 'mbar/s', NULL, 0.35, (id % 7) * 0.05 < 0.25 FROM operations WHERE station = 'ST30'"
            .to_owned(),
    ]
}

async fn exec(db: &Db, sql: &str) {
    match db {
        Db::Postgres(p) => sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(p)
            .await
            .map(|_| ()),
        Db::Sqlite(p) => sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(p)
            .await
            .map(|_| ()),
    }
    .unwrap_or_else(|e| panic!("plant statement failed: {e}\n{sql}"));
}

/// chromedriver on a free port, killed on drop.
struct Driver {
    child: Child,
    base: String,
    http: reqwest::Client,
    session: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    async fn start() -> Driver {
        let port = free_port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = http.get(format!("{base}/status")).send().await
                && let Ok(v) = r.json::<Value>().await
                && v["value"]["ready"] == true
            {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver not ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut d = Driver {
            child,
            base,
            http,
            session: String::new(),
        };
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1100"]},
            "goog:loggingPrefs": {"browser": "ALL"}
        }}});
        let v = d.call("POST", "/session", Some(caps)).await;
        d.session = v["sessionId"].as_str().expect("session id").to_owned();
        d
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let req = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body.unwrap_or(json!({}))),
        };
        let r = req.send().await.expect("webdriver request");
        let status = r.status();
        let v: Value = r.json().await.expect("webdriver json");
        assert!(
            status.is_success(),
            "webdriver {method} {path}: {status} {v}"
        );
        v["value"].clone()
    }

    async fn s(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.call(method, &format!("/session/{}{path}", self.session), body)
            .await
    }

    async fn goto(&self, url: &str) {
        self.s("POST", "/url", Some(json!({"url": url}))).await;
    }

    async fn url(&self) -> String {
        self.s("GET", "/url", None)
            .await
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    async fn js(&self, script: &str) -> Value {
        self.s(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    async fn find(&self, css: &str) -> String {
        let v = self
            .s(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        match v["element-6066-11e4-a52e-4f735466cecf"].as_str() {
            Some(id) => id.to_owned(),
            None => {
                let body = self
                    .js("return location.href + '\\n' + document.body.innerText")
                    .await;
                panic!("no element {css}: {v}; page: {body}")
            }
        }
    }

    async fn text(&self, css: &str) -> String {
        let e = self.find(css).await;
        self.s("GET", &format!("/element/{e}/text"), None)
            .await
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    /// Polls `script` (returning a JSON value) until `ok` holds, up to `secs`.
    async fn wait_for(&self, script: &str, secs: u64, ok: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let v = self.js(script).await;
            if ok(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {script}: last {v}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Browser console entries since the last call; panics on any error (SEVERE).
    async fn assert_no_console_errors(&self, page: &str) {
        let logs = self
            .s("POST", "/se/log", Some(json!({"type": "browser"})))
            .await;
        let errors: Vec<&Value> = logs
            .as_array()
            .map(|a| a.iter().filter(|l| l["level"] == "SEVERE").collect())
            .unwrap_or_default();
        assert!(errors.is_empty(), "console errors on {page}: {errors:?}");
    }

    async fn screenshot(&self, name: &str) {
        if std::env::var("THREADLINE_UI_SCREENSHOTS").is_err() {
            return;
        }
        let b64 = self.s("GET", "/screenshot", None).await;
        let png = base64_decode(b64.as_str().expect("screenshot"));
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/ui");
        std::fs::create_dir_all(&dir).expect("docs/ui");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("write screenshot");
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let bytes: Vec<u8> = s
        .bytes()
        .filter(|&c| c != b'=' && !c.is_ascii_whitespace())
        .collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, &c)| {
            acc | (u32::from(val(c)) << (18 - 6 * i))
        });
        out.push((n >> 16) as u8);
        if chunk.len() > 2 {
            out.push((n >> 8) as u8);
        }
        if chunk.len() > 3 {
            out.push(n as u8);
        }
    }
    out
}

fn enc(s: &str) -> String {
    threadline_aggregator::web::url_escape(s)
}

/// The generated plant in a fresh SQLite file, served by the real router on a free port:
/// (its directory, the database, the base URL). `None` (skipped loudly, or a failure under
/// CI=true) without chromium and chromedriver.
async fn serve_plant(tokens: Tokens) -> Option<(tempfile::TempDir, Db, String)> {
    if !std::path::Path::new(CHROMEDRIVER).exists() || !std::path::Path::new(CHROMIUM).exists() {
        skip_or_fail(
            "chromium / chromedriver not installed (apt-get install chromium chromium-driver)",
        );
        return None;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::connect(
        &format!("sqlite://{}", dir.path().join("ui.db").display()),
        2,
    )
    .await
    .expect("sqlite");
    for sql in plant() {
        exec(&db, &sql).await;
    }
    let app = router(AppState::new(
        db.clone(),
        Arc::new(Default::default()),
        Arc::new(tokens),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Some((dir, db, base))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_ui_in_headless_chromium() {
    let Some((_dir, db, base)) = serve_plant(Tokens::default()).await else {
        return;
    };
    let http = reqwest::Client::new();
    let api = |path: String| {
        let http = http.clone();
        let base = base.clone();
        async move {
            let r = http.get(format!("{base}{path}")).send().await.expect("api");
            assert!(r.status().is_success(), "{path}: {}", r.status());
            r.json::<Value>().await.expect("json")
        }
    };

    let d = Driver::start().await;

    // 1. Search: a raw scan with symbology identifier and GS separator lands on the unit page.
    let scan = "]d20109506000134352\u{1d}21UT-0003";
    d.goto(&format!("{base}/?q={}", enc(scan))).await;
    assert!(
        d.url().await.ends_with("/ui/units/UT-0003"),
        "landed on {}",
        d.url().await
    );
    assert_eq!(d.text("#unit-serial").await, "UT-0003");
    d.assert_no_console_errors("unit page").await;
    // Typed into the box in human-readable form, submitted with Enter.
    d.goto(&format!("{base}/")).await;
    let q = d.find("#q").await;
    d.s(
        "POST",
        &format!("/element/{q}/value"),
        Some(json!({"text": "(01)09506000134352(21)UT-0004\u{E007}"})),
    )
    .await;
    d.wait_for("return location.pathname", 5, |v| v == "/ui/units/UT-0004")
        .await;
    // A lot id that is also... ambiguous input lists the matches: "UT-000" matches UT-0000…9.
    d.goto(&format!("{base}/?q=UT-000")).await;
    let n = d
        .js("return document.querySelectorAll('#matches tr').length")
        .await;
    assert_eq!(n, json!(11), "10 matches + header");
    d.screenshot("search").await;
    d.assert_no_console_errors("search").await;

    // 2. Graph at depth 1: exactly the nodes of the trace API one level each way.
    d.goto(&format!("{base}/ui/units/UT-0005?depth=1")).await;
    let shown: BTreeSet<String> = d
        .js("return Array.from(document.querySelectorAll('#graph g.node')).map(g => g.getAttribute('data-kind') + ':' + g.querySelector('text').textContent)")
        .await
        .as_array()
        .expect("nodes")
        .iter()
        .map(|v| v.as_str().unwrap_or("").to_owned())
        .collect();
    let mut expected = BTreeSet::new();
    for dir in ["backward", "forward"] {
        let g = api(format!(
            "/api/v1/trace/unit/UT-0005?direction={dir}&max_depth=1"
        ))
        .await;
        for n in g["nodes"].as_array().expect("nodes") {
            expected.insert(format!(
                "{}:{}",
                n["kind"].as_str().unwrap(),
                n["id"].as_str().unwrap()
            ));
        }
    }
    assert_eq!(shown, expected);
    assert!(
        shown.contains("unit:SA-0005")
            && shown.contains("lot:LOT-A")
            && shown.contains("container:CASE-0")
    );
    assert!(!shown.contains("lot:LOT-S"), "LOT-S is two levels down");
    // UT-0005 failed its leak test once: highlighted.
    let failed = d
        .js("return document.querySelector('#graph g.node.root').classList.contains('failed')")
        .await;
    assert_eq!(failed, json!(true));

    // 3. Clicking the sub-assembly expands it: its lot LOT-S appears.
    let sa = d.find("#graph g.node[data-id='SA-0005']").await;
    d.s("POST", &format!("/element/{sa}/click"), None).await;
    d.wait_for(
        "return !!document.querySelector(\"#graph g.node[data-id='LOT-S']\")",
        5,
        |v| v == true,
    )
    .await;
    d.screenshot("unit").await;
    d.assert_no_console_errors("unit graph").await;

    // 4. Lot page counts equal the recall API's.
    let recall = api("/api/v1/lots/LOT-A/recall".to_owned()).await;
    d.goto(&format!("{base}/ui/lots/LOT-A")).await;
    for k in ["units", "containers", "shipments", "customers"] {
        let shown = d.text(&format!("#count-{k}")).await;
        assert_eq!(shown, recall["counts"][k].to_string(), "{k}");
    }
    assert_eq!(recall["counts"]["units"], json!(20));
    d.screenshot("lot").await;
    d.assert_no_console_errors("lot").await;
    // The same page with the scope loaded after it (what a lot in 100,000 units gets): the
    // counts arrive from /ui/lots/{lot}/scope and equal the API's.
    d.goto(&format!("{base}/ui/lots/LOT-A?scope=later")).await;
    for k in ["units", "containers", "shipments", "customers"] {
        let want = recall["counts"][k].to_string();
        d.wait_for(
            &format!(
                "const e = document.getElementById('count-{k}'); return e ? e.textContent : null"
            ),
            5,
            |v| v.as_str() == Some(want.as_str()),
        )
        .await;
    }
    d.wait_for("return document.getElementById('units') !== null", 5, |v| {
        v == true
    })
    .await;
    d.assert_no_console_errors("lot, scope after the page")
        .await;

    // 5. Dashboard: new operations show up without reload.
    d.goto(&format!("{base}/ui/dashboard?window_minutes=10"))
        .await;
    let before = d
        .wait_for(
            "const e = document.getElementById('ops-count'); return e ? e.textContent : null",
            5,
            |v| v.is_string(),
        )
        .await;
    assert_eq!(before, json!("0"));
    let now = threadline_shared::time::format(&threadline_shared::time::now());
    exec(&db, &format!(
        "INSERT INTO operations (unit_id, station, operation, completed_at, result, gateway) VALUES \
         (101, 'ST30', 'ST30 op', '{now}', 'pass', 'gw-L2'), (102, 'ST30', 'ST30 op', '{now}', 'fail', 'gw-L1')"
    )).await;
    let t0 = Instant::now();
    d.wait_for(
        "return document.getElementById('ops-count').textContent",
        6,
        |v| v == "2",
    )
    .await;
    assert!(t0.elapsed() <= Duration::from_secs(6));
    d.screenshot("dashboard").await;
    d.assert_no_console_errors("dashboard").await;

    // 6. Containers, shipments, operations, SPC, analysis render without console errors.
    d.goto(&format!("{base}/ui/shipments/SH-1")).await;
    assert_eq!(d.text("#customer").await, "ACME");
    // The 20 units packed in its pallet's two cases; their sub-assemblies are on their pages.
    assert_eq!(d.text("#unit-count").await, "20");
    for (prefix, listed) in [("UT-", 20), ("SA-", 0)] {
        assert_eq!(
            d.js(&format!(
                "return document.querySelectorAll('main a[href^=\"/ui/units/{prefix}\"]').length"
            ))
            .await,
            json!(listed),
            "{prefix} units listed on the shipment page"
        );
    }
    d.goto(&format!("{base}/ui/containers/CASE-1")).await;
    assert_eq!(d.text("#unit-count").await, "10");
    d.assert_no_console_errors("containers").await;
    d.goto(&format!("{base}/ui/operations?station=ST30&result=fail"))
        .await;
    let rows = d
        .js("return document.querySelectorAll('#ops tr').length - 1")
        .await;
    assert_eq!(
        rows,
        json!(UNITS / 5 + 1),
        "8 failed leak tests + the new one"
    );
    d.screenshot("operations").await;
    d.goto(&format!("{base}/ui/spc?station=ST30&parameter=leak.rate"))
        .await;
    let pts = d
        .wait_for(
            "return document.querySelectorAll('#chart circle').length",
            5,
            |v| v.as_u64().unwrap_or(0) > 0,
        )
        .await;
    assert_eq!(pts, json!(UNITS + UNITS / 5));
    // The control chart: spec and control limits drawn, the points the API flags marked (as
    // many as it says), Cp/Cpk shown, a click on a point opens its unit.
    let spc = api("/api/v1/spc?station=ST30&parameter=leak.rate".to_owned()).await;
    let lines = d
        .js("return Array.from(document.querySelectorAll('#chart line')).map(l => l.getAttribute('class'))")
        .await;
    for cls in ["lim", "ctl", "ctr"] {
        assert!(
            lines.as_array().is_some_and(|a| a.iter().any(|c| c == cls)),
            "no {cls} line in {lines}"
        );
    }
    let marked = d
        .js("return document.querySelectorAll('#chart circle.bad').length")
        .await;
    assert_eq!(marked, spc["violating_points"], "{spc}");
    assert!(d.text("#chart-stats").await.contains("Cpk"));
    let first = spc["points"][0]["unit"].as_str().expect("unit").to_owned();
    d.js("document.querySelector('#chart circle').dispatchEvent(new MouseEvent('click', {bubbles: true})); return 1")
        .await;
    d.wait_for("return location.pathname", 5, |v| {
        v.as_str() == Some(&format!("/ui/units/{first}"))
    })
    .await;
    // Common-cause analysis from a stable URL: the page analyses ?units= on load.
    d.goto(&format!(
        "{base}/ui/analysis?units=UT-0000,UT-0005,UT-0010,UT-0015"
    ))
    .await;
    let rows = d
        .wait_for(
            "return document.querySelectorAll('#factors tr').length",
            5,
            |v| v.as_u64().unwrap_or(0) > 1,
        )
        .await;
    assert!(rows.as_u64().unwrap_or(0) > 1);
    // UT-0000…0015 all consumed LOT-A (20 of 40 units): it is among the factors.
    assert!(d.text("#factors").await.contains("LOT-A"));
    d.screenshot("analysis").await;
    d.assert_no_console_errors("operations, spc, analysis")
        .await;

    // 7. Unknown ids: a 404 page that says so.
    d.goto(&format!("{base}/ui/units/NO-SUCH-UNIT")).await;
    assert!(d.text(".notfound").await.contains("NO-SUCH-UNIT"));
    let r = http
        .get(format!("{base}/ui/lots/NOPE"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 404);
    let r = http
        .get(format!("{base}/ui/lots/NOPE/scope"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 404);
    let scope = http
        .get(format!("{base}/ui/lots/LOT-A/scope"))
        .send()
        .await
        .expect("get");
    assert_eq!(scope.status(), 200);
    let fragment = scope.text().await.expect("body");
    assert!(
        fragment.starts_with("<h2>Recall scope") && !fragment.contains("<html"),
        "{fragment}"
    );
    d.s("DELETE", "", None).await;
}

/// With `[[http.token]]` configured, a browser that opens a page gets the sign-in form; a wrong
/// token is refused, the right one lands on the page it asked for with a session cookie that
/// scripts cannot read (`HttpOnly`), the page's own API calls work on that cookie, and signing
/// out ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_with_a_token_in_headless_chromium() {
    let tokens = Tokens::from_pairs(&[("quality", "read-secret-7", Scope::Read)]);
    let Some((_dir, _db, base)) = serve_plant(tokens).await else {
        return;
    };
    let d = Driver::start().await;

    // A page without a session: the sign-in form, in place of the page.
    d.goto(&format!("{base}/ui/units/UT-0003")).await;
    d.find("form.signin input#token").await;
    assert!(
        d.js("return document.body.innerText")
            .await
            .as_str()
            .unwrap_or("")
            .contains("Sign in"),
        "sign-in form expected"
    );
    // A wrong token: refused, still no cookie.
    let submit = |token: &'static str| {
        format!(
            "document.querySelector('#token').value = '{token}'; \
             document.querySelector('form.signin').submit(); return 1"
        )
    };
    d.js(&submit("not-the-token")).await;
    d.wait_for(
        "return document.querySelector('.error') ? document.querySelector('.error').innerText : ''",
        5,
        |v| v.as_str().is_some_and(|s| s.contains("not accepted")),
    )
    .await;
    // The right token: back on the unit's page, the report and the graph there.
    d.find("input#token").await;
    d.js(&submit("read-secret-7")).await;
    d.wait_for("return location.pathname", 5, |v| {
        v.as_str() == Some("/ui/units/UT-0003")
    })
    .await;
    d.wait_for(
        "return Array.from(document.querySelectorAll('svg text')).map(t => t.textContent).includes('LOT-A')",
        10,
        |v| v == &json!(true),
    )
    .await;
    // The 401s of the form (and of the wrong token) are in the console log; start afresh.
    d.s("POST", "/se/log", Some(json!({"type": "browser"})))
        .await;
    // The session cookie is HttpOnly: invisible to scripts on the page.
    let cookies = d.js("return document.cookie").await;
    assert!(
        !cookies.as_str().unwrap_or("").contains("tl_session"),
        "session cookie readable by scripts: {cookies}"
    );
    let cookie = d.s("GET", "/cookie/tl_session", None).await;
    assert_eq!(cookie["httpOnly"], true, "{cookie}");
    assert_eq!(cookie["sameSite"], "Strict", "{cookie}");
    // The page's API calls ride on the cookie (the dashboard polls /api/v1/dashboard).
    d.goto(&format!("{base}/ui/dashboard")).await;
    let status = d
        .js("return fetch('/api/v1/dashboard').then(r => r.status)")
        .await;
    assert_eq!(status, json!(200));
    d.assert_no_console_errors("signed-in unit page and dashboard")
        .await;
    // Sign out: the session ends, pages ask for the token again.
    d.goto(&format!("{base}/ui/sign-out")).await;
    d.js("document.querySelector('#sign-out').click(); return 1")
        .await;
    d.wait_for("return location.pathname", 5, |v| {
        v.as_str() != Some("/ui/sign-out")
    })
    .await;
    d.goto(&format!("{base}/ui/dashboard")).await;
    d.find("form.signin input#token").await;
    let status = d
        .js("return fetch('/api/v1/dashboard').then(r => r.status)")
        .await;
    assert_eq!(status, json!(401));
    d.s("DELETE", "", None).await;
}
